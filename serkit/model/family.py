"""The model-family contract: what every SER model declares, so that no other layer names a family.

Data loading, the training loop, scoring, RESULTS.md, export, ``serkit-infer`` and the recipe stages
work with any :class:`ModelFamily`; a family lives in one module next to its network and is found by
name through :mod:`serkit.model.registry`. A family declares:

- the **inputs** it consumes (:meth:`ModelFamily.inputs`, usually the one :meth:`ModelFamily.feature`:
  waveform, log-Mel with deltas, MFCC, eGeMAPS functionals ...), which the data layer computes and
  caches (:mod:`serkit.features`); a network with one input is called ``forward(inputs, lengths)``,
  one with several gets lists of both, in the order :meth:`ModelFamily.inputs` gives;
- whether its inputs are **normalised**, each with its own training statistics (:attr:`normalise_input`);
- its **network** (:meth:`build_network` for training, :meth:`network_config` /
  :meth:`network_from_config` for export: plain data in, same network out);
- its **parameter groups** (:meth:`param_groups`: e.g. a pretrained encoder and new heads, each with
  its own optimizer and learning rate);
- its **loss** and the named parts it logs (:meth:`loss`; by default the configured targets' weighted
  sum, :mod:`serkit.targets`, e.g. ``CE + mtl_lambda * CTC``);
- its **options** that name an experiment (:attr:`options`, e.g. ``mtl_lambda``; none for a family
  that has no such knob);
- the **windows** inference cuts long recordings into (:attr:`inference_window_s`, :attr:`inference_hop_s`);
- how it is **trained** (:attr:`trainer`: ``"brain"``, the shared SpeechBrain loop, or ``"fit"``, a
  closed-form fit such as an SVM, through :meth:`fit`). Either way the trainer, not the family,
  writes the fold directory, so every family's fold has the same files, checkpoint format included.

Per-utterance extras (decoded CTC tokens) and per-fold extras (learned layer weights) come out of the
shared :class:`~serkit.model.ser_model.SERModel`, and scoring computes their scores (PER, suffix
accuracy, layer-weight plots) whenever the files carry them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from serkit.model.ser_model import SERModel


@dataclass
class FitResult:
    """What a closed-form fit (:meth:`ModelFamily.fit`) gives the trainer to write into the fold directory.

    ``valid`` holds the held-out figures that rank the model (``valid_UA``, ``valid_WA`` as a
    neural checkpoint's; None where a figure does not exist); ``details`` go into the history
    record beside them (e.g. the chosen hyper-parameters); ``test_probs`` are the test set's
    posteriors [utterances, classes] in the order of ``data.test``.
    """

    model: SERModel
    valid: dict[str, Any]
    test_probs: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)


class ModelFamily:
    """Base class of a model family; subclasses set the class attributes and the network methods."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    trainer: ClassVar[str] = "brain"
    normalise_input: ClassVar[bool] = True
    padding_invariant: ClassVar[bool] = True  # in eval mode, batch padding never changes an output (tested)
    # Inference on long recordings (serkit.serving.inference): windows of this many seconds, every
    # ``inference_hop_s`` seconds (None: the window length, i.e. no overlap, so a long file costs what
    # its short pieces cost). 8 s covers nearly every IEMOCAP utterance, so typical clips stay whole.
    inference_window_s: ClassVar[float] = 8.0
    inference_hop_s: ClassVar[float | None] = None

    # ---- input
    def inputs(self, hparams: dict) -> list[dict[str, Any]]:
        """Each input as plain data for a :class:`serkit.features.FeatureKind` (``kind``, ``sample_rate``,
        ``params``), in the order the network takes them; by default the one :meth:`feature`."""
        return [self.feature(hparams)]

    def feature(self, hparams: dict) -> dict[str, Any]:
        """The input of a one-input family (see :meth:`inputs`)."""
        raise NotImplementedError

    # ---- network
    def build_network(self, hparams: dict, n_classes: int, input_dims) -> nn.Module:
        """A network for training (may load pretrained weights); ``input_dims`` = the input's dimensions
        after time (for several inputs, a list of them)."""
        raise NotImplementedError

    def network_config(self, network: nn.Module) -> dict[str, Any]:
        """Plain data from which :meth:`network_from_config` rebuilds the same network (random weights)."""
        raise NotImplementedError

    def network_from_config(self, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def min_input_frames(self, network_config: dict[str, Any]) -> int:
        """The shortest input (in feature frames or samples) the network can score."""
        return 1

    # ---- optimisation
    def param_groups(self, model: SERModel) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups, each trained by the optimizer of the same name in the config.

        Only the family's network: the trainer adds the heads of auxiliary targets
        (:meth:`SERModel.head_parameters`) to the last group. Default: one group ``model``.
        """
        return {"model": list(model.network.parameters())}

    def loss(self, out, batch, targets):
        """``(total, {part: value})`` of a batch; by default the configured targets' weighted sum
        (:meth:`serkit.targets.TargetSet.loss`: e.g. ``CE + mtl_lambda * CTC`` with parts ``ER`` and ``PR``)."""
        return targets.loss(out, batch)

    def set_frozen(self, model: SERModel, group: str, frozen: bool) -> None:
        """Hold a parameter group still (e.g. the encoder for the first steps); families that allow it."""
        raise NotImplementedError(f"family {self.name} cannot freeze parameter group {group!r}")

    # ---- closed-form families
    def fit(self, hparams: dict, data) -> FitResult:
        """Fit on train, select on validation, predict test without the SpeechBrain loop (``trainer="fit"``)."""
        raise NotImplementedError

    # ---- the experiment's name
    def tag(self, hparams: dict) -> str:
        """The options part of an experiment name, e.g. ``lambda0.1`` (empty without options)."""
        return "_".join(f"{_short(option)}{hparams[option]}" for option in self.options)


def _short(option: str) -> str:
    return {"mtl_lambda": "lambda"}.get(option, option)


class FeatureNetworkFamily(ModelFamily):
    """A family whose network is rebuilt from its own plain keyword arguments, ``Network(**config)``.

    The config's ``feature`` mapping (``kind`` + ``params``) names the input, its ``network`` mapping
    the constructor arguments the recipe may change; the input size and class count come from the
    data. The network must offer ``config_dict()`` and, for the CTC head, ``frame_dim``.
    """

    network_class: ClassVar[type]
    input_size_argument: ClassVar[str]  # the constructor argument that takes the feature dimension

    def feature(self, hparams: dict) -> dict[str, Any]:
        feature = dict(hparams["feature"])
        return {"kind": feature["kind"], "sample_rate": int(hparams["sample_rate"]),
                "params": dict(feature.get("params") or {})}

    def build_network(self, hparams: dict, n_classes: int, input_dims: tuple[int, ...]) -> nn.Module:
        arguments = dict(hparams.get("network") or {})
        arguments.update({self.input_size_argument: int(input_dims[-1]), "n_classes": int(n_classes)})
        return self.network_class(**arguments)

    def network_config(self, network: nn.Module) -> dict[str, Any]:
        return network.config_dict()

    def network_from_config(self, config: dict[str, Any]) -> nn.Module:
        return self.network_class(**config)
