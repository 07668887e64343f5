"""Building a :class:`SERModel` for any family: for training (from hparams) and from plain data (export).

The plain-data model config (``model_config.json`` in a fold, ``config.json`` in an export) is the
only thing export and inference need to rebuild the network, whatever the family:
``{"family", "network", "inputs", "input_dims", "n_emotions", "n_tokens", "ctc_targets", "options",
"classes", "tokens", "sample_rate"}``; ``inputs`` lists the family's feature specs in the order its
network takes them, ``input_dims`` each one's dimensions after time (null: not normalised). A config
with one ``feature`` mapping (and that input's ``input_dims``) is read as the one-input case.
"""
from __future__ import annotations

from typing import Any, Sequence

from serkit.errors import SerkitError
from serkit.features import FeatureKind, feature_from_dict
from serkit.model.family import ModelFamily
from serkit.model.registry import get_family
from serkit.model.ser_model import SERModel, one_or_all

REQUIRED_CONFIG_KEYS = ("family", "network", "n_emotions", "n_tokens", "classes", "tokens", "sample_rate")


class ModelConfigError(SerkitError):
    """A model config (model_config.json / an export's config.json) that cannot rebuild a network."""


def build_model(family: ModelFamily, hparams: dict, n_classes: int, n_tokens: int = 0,
                input_dims: Sequence[Sequence[int]] = ((),), prior_size: int = 0,
                utterance_heads: dict[str, int] | None = None) -> SERModel:
    """The network for training: ``input_dims`` for each input; ``n_tokens > 0`` adds the CTC head
    (needs ``mtl_lambda > 0``); ``prior_size`` an input prior and ``utterance_heads`` utterance
    classifiers (:class:`SERModel`)."""
    input_dims = [tuple(dims) for dims in input_dims]
    network = family.build_network(hparams, n_classes, one_or_all(input_dims))
    return SERModel(network, n_tokens=n_tokens, input_dims=input_dims if family.normalise_input else None,
                    n_classes=n_classes, prior_size=prior_size, utterance_heads=utterance_heads)


def model_config(family: ModelFamily, model: SERModel, hparams: dict, inputs: Sequence[dict],
                 input_dims: Sequence[Sequence[int]], classes: Sequence[str], tokens: Sequence[str] = ()) -> dict[str, Any]:
    """Plain data that rebuilds ``model`` (with random weights) through :func:`model_from_config`."""
    n_tokens = model.ctc_head.linear.out_features if model.ctc_head is not None else 0
    return {
        "family": family.name,
        "network": family.network_config(model.network),
        "inputs": [dict(feature) for feature in inputs],
        "input_dims": [list(dims) for dims in input_dims] if model.input_norm is not None else None,
        "n_emotions": len(classes),
        "n_tokens": n_tokens,
        "ctc_targets": hparams.get("ctc_targets", "emophone") if n_tokens else None,
        "options": {option: hparams[option] for option in family.options},
        "classes": list(classes),
        "tokens": list(tokens) if n_tokens else [],
        "sample_rate": int(inputs[0].get("sample_rate", hparams.get("sample_rate", 16000))),
        "normalisation": hparams.get("normalisation") or "global",  # speaker: per-speaker CMVN (serkit.features.speaker_norm)
        **_target_hooks(model),
    }


def _target_hooks(model: SERModel) -> dict[str, Any]:
    """The input prior's size and the utterance heads, recorded only when the model has them."""
    hooks: dict[str, Any] = {}
    if model.prior is not None:
        hooks["prior_size"] = model.prior.in_features
    if len(model.utterance_heads):
        hooks["utterance_heads"] = {name: head.out_features for name, head in model.utterance_heads.items()}
    return hooks


def check_model_config(config: dict[str, Any], source: str) -> None:
    """Raise :class:`ModelConfigError` naming ``source`` if ``config`` cannot rebuild a model."""
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if "inputs" not in config and "feature" not in config:
        missing.append("inputs")
    if missing:
        raise ModelConfigError(f"{source}: missing key(s) {', '.join(missing)} (see docs/formats.md); it was "
                               "written by an older serkit or edited by hand: re-train or re-export")
    if len(config["classes"]) != int(config["n_emotions"]):
        raise ModelConfigError(f"{source}: {len(config['classes'])} classes listed but n_emotions is "
                               f"{config['n_emotions']}")
    if int(config["n_tokens"]) and len(config["tokens"]) != int(config["n_tokens"]):
        raise ModelConfigError(f"{source}: {len(config['tokens'])} tokens listed but n_tokens is {config['n_tokens']}")


def model_from_config(config: dict[str, Any], source: str = "model config") -> SERModel:
    """A randomly initialised :class:`SERModel` shaped by ``config``, to be filled by ``load_state_dict``."""
    check_model_config(config, source)
    family = get_family(config["family"])
    network = family.network_from_config(config["network"])
    return SERModel(network, n_tokens=int(config["n_tokens"]), input_dims=config_input_dims(config),
                    n_classes=int(config["n_emotions"]), prior_size=int(config.get("prior_size", 0)),
                    utterance_heads=config.get("utterance_heads"))


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with an ``inputs`` list: a config with one ``feature`` mapping (and that input's
    ``input_dims``) is the one-input case. Returns a new dict; ``config`` is left as it is."""
    if "inputs" in config or "feature" not in config:
        return dict(config)
    upgraded = {key: value for key, value in config.items() if key != "feature"}
    upgraded["inputs"] = [config["feature"]]
    upgraded["input_dims"] = [config["input_dims"]] if config.get("input_dims") else None
    return upgraded


def config_inputs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The feature spec of each input a model config names, in the order its network takes them."""
    return [dict(feature) for feature in upgrade_config(config)["inputs"]]


def config_input_dims(config: dict[str, Any]) -> list[tuple[int, ...]] | None:
    """Each input's dimensions after time, or None for a model that does not normalise its inputs."""
    dims = upgrade_config(config).get("input_dims")
    return None if dims is None else [tuple(d) for d in dims]


def input_features(config: dict[str, Any]) -> list[FeatureKind]:
    """The feature kinds that compute a model config's inputs."""
    return [feature_from_dict(feature) for feature in config_inputs(config)]


def feature_spec(feature: dict[str, Any]) -> FeatureKind | None:
    """The feature kind (:class:`serkit.features.FeatureKind`) for a feature dict; None for waveforms."""
    if feature["kind"] == "waveform":
        return None
    return feature_from_dict(feature)


def min_input_frames(config: dict[str, Any]) -> int:
    """The shortest input the rebuilt model can score (samples for waveform families, else frames)."""
    return get_family(config["family"]).min_input_frames(config["network"])
