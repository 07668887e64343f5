"""The network every family trains behind: the family's network, an optional input normaliser and an
optional CTC head, with one output type and one objective.

A family supplies only its network (``forward(inputs, lengths) -> NetworkOutput``). This wrapper adds
what is the same for every family, so no family writes it again:

- relative -> absolute lengths (SpeechBrain batches carry relative ones);
- input normalisation with statistics of the fold's *training* set only (:class:`InputNorm`, one per
  input), kept as buffers so checkpoints and exports carry them;
- the emotion-phoneme (or character) CTC head over the network's frame features (:mod:`.ctc_head`);
- the hooks of further targets (:mod:`serkit.targets`): an *input prior* (e.g. the speaker's gender as
  a one-hot vector) that enters the emotion classifier, and *utterance heads* (e.g. a gender
  classifier) over the mean-pooled frame features;
- the objective ``L = CE + lambda * CTC`` (:func:`mtl_loss`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from serkit.model.common import ModelInputError, absolute_lengths, length_mask, masked_mean
from serkit.model.ctc_head import CTCHead, phoneme_ctc_loss


@dataclass
class NetworkOutput:
    """What a family's network returns for a padded batch."""

    emo_logits: Tensor  # [B, E] emotion logits
    frame_features: Optional[Tensor] = None  # [B, F, D] per-frame representation (for a CTC head)
    frame_lens: Optional[Tensor] = None  # [B] int64 real frames per utterance
    fold_extras: dict[str, Tensor] = field(default_factory=dict)  # per-fold vectors, e.g. layer_weights [L]
    # what the family's own loss (ModelFamily.loss) reads besides the emotion logits, e.g. auxiliary
    # logits [B, E] or the embedding a centre loss pulls together; carried through SERModel untouched
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class SEROutput:
    """What :class:`SERModel` returns: the network's output plus the CTC head's log-probabilities."""

    emo_logits: Tensor  # [B, E]
    phn_log_probs: Optional[Tensor]  # [B, F, V] float32 log-softmax, blank = 0; None without a CTC head
    frame_lens: Optional[Tensor]  # [B]
    fold_extras: dict[str, Tensor] = field(default_factory=dict)
    utterance_logits: dict[str, Tensor] = field(default_factory=dict)  # [B, K] per utterance head, by name
    extras: dict[str, Tensor] = field(default_factory=dict)  # the network's NetworkOutput.extras

    @property
    def layer_weights(self) -> Optional[Tensor]:
        """Learned layer weights of a layer-fusing network (W2V2-MTL), else None."""
        return self.fold_extras.get("layer_weights")


class InputNorm(nn.Module):
    """Per-dimension mean/std normalisation of features; padding stays 0.

    The statistics are set once from the fold's training utterances (:meth:`set_stats`), never from
    validation or test data, and are buffers: saved with every checkpoint and export.
    """

    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(tuple(dims)))
        self.register_buffer("std", torch.ones(tuple(dims)))

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ModelInputError(f"feature statistics of shape {tuple(mean.shape)} do not fit features of "
                                  f"shape {tuple(self.mean.shape)}")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-5))

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        mask = length_mask(lengths, feats.shape[1]).view(*feats.shape[:2], *([1] * (feats.dim() - 2)))
        return torch.where(mask, (feats - self.mean) / self.std, torch.zeros((), device=feats.device))


def one_or_all(items: Sequence[Any]) -> Any:
    """What a family's network is given: the item itself for a family with one input, else all of them.

    A one-input network keeps the plain signature ``forward(inputs, lengths)``; a network with
    several inputs takes lists, in the order its family declares the inputs.
    """
    return items[0] if len(items) == 1 else list(items)


class SERModel(nn.Module):
    """A family's network + optional :class:`InputNorm` per input, :class:`CTCHead`, input prior and
    utterance heads.

    ``input_dims`` lists each input's dimensions after time (None: the family does not normalise).
    ``prior_size`` > 0: ``forward`` takes a ``prior`` [B, prior_size] (e.g. a one-hot gender) that
    enters the emotion logits through a linear map (``n_classes`` outputs, no bias). For a family
    whose emotion classifier is one linear layer over the pooled utterance embedding (W2V2-MTL,
    TIM-Net, the SSL probe) this is exactly concatenating the prior to that embedding before the
    classifier: ``W [e; p] = W_e e + W_p p``. ``utterance_heads`` maps a name to a class count: one
    linear classifier each over the mean of the network's frame features (``out.utterance_logits``).
    """

    def __init__(self, network: nn.Module, n_tokens: int = 0, input_dims: Sequence[Sequence[int]] | None = None,
                 n_classes: int = 0, prior_size: int = 0, utterance_heads: dict[str, int] | None = None):
        super().__init__()
        self.network = network
        self.input_norm = nn.ModuleList(InputNorm(dims) for dims in input_dims) if input_dims is not None else None
        self.register_load_state_dict_pre_hook(_one_input_norm_keys)
        self.ctc_head = None
        if n_tokens:
            self.ctc_head = CTCHead(self._frame_dim("the CTC head; set mtl_lambda to 0 for this family"), n_tokens)
        self.prior = None
        if prior_size:
            if not n_classes:
                raise ModelInputError("an input prior needs the number of emotion classes (n_classes)")
            self.prior = nn.Linear(prior_size, n_classes, bias=False)
        self.utterance_heads = nn.ModuleDict({
            name: nn.Linear(self._frame_dim(f"the {name} head"), size) for name, size in (utterance_heads or {}).items()})

    def _frame_dim(self, what: str) -> int:
        frame_dim = getattr(self.network, "frame_dim", None)
        if not frame_dim:
            raise ModelInputError(f"{type(self.network).__name__} has no frame-level outputs, so it cannot carry {what}")
        return frame_dim

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters of the heads this wrapper adds for auxiliary targets (the family's groups leave them out)."""
        heads = [self.ctc_head, self.prior, self.utterance_heads]
        return [p for head in heads if head is not None for p in head.parameters()]

    @property
    def has_ctc_head(self) -> bool:
        return self.ctc_head is not None

    def forward(self, inputs: Tensor | Sequence[Tensor], relative_lengths: Tensor | Sequence[Tensor],
                lengths: Tensor | Sequence[Tensor] | None = None, prior: Tensor | None = None) -> SEROutput:
        """Score a padded batch ``inputs`` [B, T, ...] with relative lengths [B] in (0, 1]; for a family
        with several inputs, lists of both (one padded batch per input).

        ``lengths``: the absolute lengths, when the caller already converted and checked them on the
        CPU (the trainer does, before moving a batch to a GPU, so no value is read back from the device).
        ``prior``: the input prior [B, prior_size] of a model built with one.
        """
        if (prior is None) != (self.prior is None):
            raise ModelInputError("this model was built with an input prior, so every batch needs one (prior=...)"
                                  if prior is None else "this model has no input prior, so it cannot take one")
        inputs, relative_lengths = as_list(inputs), as_list(relative_lengths)
        if lengths is None:
            lengths = [absolute_lengths(x, relative) for x, relative in zip(inputs, relative_lengths)]
        lengths = as_list(lengths)
        if self.input_norm is not None:
            inputs = [norm(x, n) for norm, x, n in zip(self.input_norm, inputs, lengths)]
        out = self.network(one_or_all(inputs), one_or_all(lengths))
        phn_log_probs = None
        if self.ctc_head is not None:
            phn_log_probs = self.ctc_head(out.frame_features)
        emo_logits = out.emo_logits if self.prior is None else out.emo_logits + self.prior(prior.to(out.emo_logits.dtype))
        utterance_logits = {}
        if len(self.utterance_heads):
            pooled = masked_mean(out.frame_features, out.frame_lens)
            utterance_logits = {name: head(pooled) for name, head in self.utterance_heads.items()}
        return SEROutput(emo_logits=emo_logits, phn_log_probs=phn_log_probs, frame_lens=out.frame_lens,
                         fold_extras=dict(out.fold_extras), utterance_logits=utterance_logits,
                         extras=dict(out.extras))


def as_list(items: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """One tensor (a one-input batch) or a sequence of them, as a list."""
    return [items] if isinstance(items, Tensor) else list(items)


def upgrade_state_dict(state_dict: dict, prefix: str = "") -> dict:
    """``state_dict`` with the statistics of a single :class:`InputNorm` (``input_norm.mean``/``.std``, as
    checkpoints and exports of models with a model config ``feature`` hold them) moved to the first input's
    normaliser (``input_norm.0.*``); changed in place and returned."""
    for name in ("mean", "std"):
        if f"{prefix}input_norm.{name}" in state_dict:
            state_dict[f"{prefix}input_norm.0.{name}"] = state_dict.pop(f"{prefix}input_norm.{name}")
    return state_dict


def _one_input_norm_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    upgrade_state_dict(state_dict, prefix)


def mtl_loss(out: SEROutput, emo_targets: Tensor, tokens: Optional[Tensor], token_lens: Optional[Tensor],
             lam: float, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(L, L_ER, L_PR)`` with ``L = CE + lam * CTC`` (Li et al. 2024).

    ``lam == 0`` computes no CTC at all (``tokens`` may then be None) and returns ``L_PR`` as a 0
    tensor. ``token_lens`` may be integer counts or SpeechBrain relative lengths (floating point).
    """
    if lam < 0:
        raise ModelInputError(f"lambda (the CTC weight) must be >= 0, got {lam}")
    l_er = F.cross_entropy(out.emo_logits.float(), emo_targets.long(), label_smoothing=label_smoothing)
    if lam == 0:
        return l_er, l_er, torch.zeros((), device=l_er.device)
    if out.phn_log_probs is None:
        raise ModelInputError(f"lambda = {lam} needs the CTC head, but the model was built without one; "
                              "set lambda to 0 or build the model with its token inventory")
    if tokens is None or token_lens is None:
        raise ModelInputError(f"lambda = {lam} needs the CTC targets (utt2phn) of the batch")
    l_pr = phoneme_ctc_loss(out.phn_log_probs, out.frame_lens, tokens, token_lens)
    return l_er + lam * l_pr, l_er, l_pr
