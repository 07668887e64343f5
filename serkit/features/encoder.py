"""The wav2vec 2.0 encoder: loading it, pretrained (hub id or local folder) or randomly initialised,
and the waveform normalisation its CNN expects.

It sits below the model families: the ``ssl_layers`` feature kind computes a frozen encoder's hidden
states with it, and W2V2-MTL fine-tunes one, both on the same normalised input.

serkit fine-tunes a plain ``transformers.Wav2Vec2Model``: it has no quantiser (the pretraining-only
part of wav2vec 2.0), and the W2V2-MTL recipe uses no time or feature masking while fine-tuning, so
the loaders force ``mask_time_prob = mask_feature_prob = 0``. Dropout and LayerDrop come from the
checkpoint's config unless the caller overrides them (e.g. ``layerdrop=0.05``).

Machines without internet are the normal case for serkit users, so a checkpoint that cannot be found
raises :class:`EncoderNotFoundError` with the ways to provide one instead of a hub traceback.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import Wav2Vec2Config, Wav2Vec2Model

from serkit.errors import Refused, SerkitError, load_error_text

logger = logging.getLogger(__name__)

# Settings the recipe fixes whatever the checkpoint says (paper: no time masking in fine-tuning).
_FINETUNE_SETTINGS = {"mask_time_prob": 0.0, "mask_feature_prob": 0.0}


class EncoderNotFoundError(SerkitError):
    """The pretrained encoder's files could not be found (offline, not cached, or a wrong folder)."""


class EncoderConfigError(SerkitError):
    """An encoder configuration serkit cannot use (unknown override, masking, adapter...)."""


class EncoderRefused(EncoderNotFoundError, Refused):
    """The encoder's weights hold pickled code (or other than plain tensors) and were not loaded."""


def hub_offline() -> bool:
    """Whether the user asked for no network access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``).

    Read at call time, not import time, so setting the variable in a running process still works.
    """
    return any(os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(source: str) -> bool:
    """A source that can only mean a folder (absolute, ``./``, ``~``, more than one ``/``, or a first
    component that is a local folder).

    A hub id is ``name`` or ``owner/name``, so anything else is a local path and must not be
    looked up on the hub (which would turn a typo into a confusing network error).
    """
    if source.startswith(("/", ".", "~")) or source.count("/") > 1:
        return True
    # `db/tiny_w2v2`: shaped like a hub id, but `db` is a local folder, so it names a missing folder.
    return "/" in source and Path(source.split("/")[0]).is_dir()


def _how_to_provide(source: str) -> str:
    name = "facebook/wav2vec2-base" if _looks_like_path(source) else source
    return (f"To provide the weights: on a machine with internet run "
            f"`huggingface-cli download {name}` (or `hf download {name}`) "
            f"(it fills the Hugging Face cache; copy that cache and set HF_HOME to it here), or load it "
            f"there with `Wav2Vec2Model.from_pretrained(...)` and `.save_pretrained(DIR)`, copy DIR to this "
            f"machine and point the config's `encoder_source` at DIR. For tests and smoke runs, "
            f"`python -m serkit.bin.make_tiny_w2v2 --out DIR` builds a small random encoder offline.")


def _apply_overrides(config: Wav2Vec2Config, overrides: dict[str, Any], source: str) -> Wav2Vec2Config:
    """Apply the caller's overrides and serkit's fixed fine-tuning settings to ``config``."""
    for key, value in overrides.items():
        if key in _FINETUNE_SETTINGS and value != _FINETUNE_SETTINGS[key]:
            raise EncoderConfigError(
                f"encoder {source}: override {key}={value!r} is not supported: the W2V2-MTL recipe "
                f"fine-tunes without SpecAugment masking (the forward pass never masks); remove it")
        if not hasattr(config, key):
            raise EncoderConfigError(
                f"encoder {source}: unknown Wav2Vec2Config setting {key!r} in the overrides; check the "
                f"spelling against transformers' Wav2Vec2Config (e.g. layerdrop, hidden_dropout)")
        setattr(config, key, value)
    for key, value in _FINETUNE_SETTINGS.items():
        setattr(config, key, value)
    config.apply_spec_augment = False
    if getattr(config, "add_adapter", False):
        raise EncoderConfigError(
            f"encoder {source}: add_adapter=True changes the frame rate and is not supported by "
            f"serkit's W2V2-MTL model; use a checkpoint without an adapter")
    return config


def load_encoder(source: str, **config_overrides: Any) -> Wav2Vec2Model:
    """Load a pretrained wav2vec 2.0 encoder from a hub id or a ``save_pretrained`` folder.

    ``config_overrides`` replace config values before the weights are loaded (dropouts,
    ``layerdrop``...). With ``HF_HUB_OFFLINE=1`` only the local cache is consulted. Weights come back
    as float32 whatever the checkpoint's dtype, so mixed precision is left to ``torch.autocast``.
    """
    source = str(source)
    is_dir = Path(source).expanduser().is_dir()
    if not is_dir and _looks_like_path(source):
        raise EncoderNotFoundError(f"encoder {source}: no such folder. {_how_to_provide(source)}")
    location = str(Path(source).expanduser()) if is_dir else source
    local_only = is_dir or hub_offline()
    try:
        config = Wav2Vec2Config.from_pretrained(location, local_files_only=local_only)
        config = _apply_overrides(config, config_overrides, source)
        model, info = Wav2Vec2Model.from_pretrained(location, config=config, local_files_only=local_only,
                                                    output_loading_info=True)
    except (OSError, ValueError) as error:  # transformers reports missing files/repos as OSError
        where = ("the folder has no loadable wav2vec 2.0 checkpoint (config.json + model.safetensors "
                 "or pytorch_model.bin)" if is_dir else
                 "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if hub_offline() else
                 "it could not be fetched from the Hugging Face hub nor found in the cache (set "
                 "HF_HUB_OFFLINE=1 to skip the network attempts)")
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EncoderNotFoundError(
            f"encoder {source}: {where} ({first_line}). {_how_to_provide(source)}") from None
    except pickle.UnpicklingError as error:  # a pytorch_model.bin that names Python code: torch refused it
        raise EncoderRefused(f"encoder {source}: its weights file was refused: {load_error_text(error)}. Use a "
                             "checkpoint from a source you trust, preferably model.safetensors") from None
    except RuntimeError as error:  # e.g. weight shapes that do not match config.json
        raise EncoderConfigError(f"encoder {source}: its weights do not fit its config.json "
                                 f"({str(error).strip().splitlines()[0]}); re-download or re-save the "
                                 f"checkpoint") from None
    mismatched = [item if isinstance(item, str) else item[0] for item in info.get("mismatched_keys", ())]
    missing = sorted(info.get("missing_keys", ())) + sorted(mismatched)
    if missing:
        # transformers would silently initialise these at random: a "pretrained" encoder that is not.
        raise EncoderConfigError(
            f"encoder {source}: the checkpoint lacks or mis-shapes {len(missing)} encoder weights "
            f"({', '.join(map(str, missing[:3]))}{' ...' if len(missing) > 3 else ''}); it is not a complete "
            f"wav2vec 2.0 checkpoint for its config.json — re-download or re-save it")
    logger.info("loaded encoder %s: %d Transformer layers, hidden size %d, feat_extract_norm=%s, "
                "layerdrop=%s", source, config.num_hidden_layers, config.hidden_size,
                config.feat_extract_norm, config.layerdrop)
    return model.float()


def encoder_from_config(config_dict: dict[str, Any]) -> Wav2Vec2Model:
    """A randomly initialised encoder shaped by a ``Wav2Vec2Config.to_dict()`` dict.

    Used to rebuild an exported or checkpointed network without downloading anything: the real
    weights are loaded afterwards with ``load_state_dict``.
    """
    if not isinstance(config_dict, dict):
        raise EncoderConfigError(f"encoder config must be a dict (Wav2Vec2Config.to_dict()), "
                                 f"got {type(config_dict).__name__}")
    try:
        config = Wav2Vec2Config.from_dict(dict(config_dict))
    except (TypeError, ValueError) as error:
        raise EncoderConfigError(f"encoder config is not a valid Wav2Vec2Config ({error}); it should be "
                                 f"the `encoder_config` written by serkit's training stage") from None
    config = _apply_overrides(config, {}, "config")
    return Wav2Vec2Model(config).float()


def normalise_waveforms(wavs: Tensor, n_samples: Tensor, eps: float = 1e-7) -> Tensor:
    """Zero mean, unit variance per utterance over its real samples; padding set to 0.

    Matches ``Wav2Vec2FeatureExtractor(do_normalize=True)``, the input the wav2vec2-base family's
    feature extractor produces, but computed on the true length so padding cannot shift it.
    """
    mask = torch.arange(wavs.shape[1], device=wavs.device).unsqueeze(0) < n_samples.unsqueeze(1)
    x = torch.where(mask, wavs.float(), torch.zeros((), device=wavs.device))
    count = n_samples.to(x.dtype).unsqueeze(1)
    mean = x.sum(dim=1, keepdim=True) / count
    centred = torch.where(mask, x - mean, torch.zeros((), device=wavs.device))
    var = centred.pow(2).sum(dim=1, keepdim=True) / count
    return centred / torch.sqrt(var + eps)
