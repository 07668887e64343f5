"""The self-supervised speech encoder behind every SSL branch: which ones serkit loads, how, and what
each one needs as input.

Five types, named as transformers names them (``model_type`` in a checkpoint's config.json):
``wav2vec2``, ``hubert``, ``wavlm``, ``data2vec-audio`` and ``whisper`` (the encoder half only). The first
four share one layout (a CNN over the waveform, a projection, a Transformer; transformers'
``*Model`` classes); Whisper's encoder reads a log-Mel spectrogram instead
(:mod:`serkit.features.whisper_encoder`). A config chooses one with ``encoder_source`` (hub id or a
``save_pretrained`` folder) and, only where that checkpoint's config.json does not say, ``encoder_type``.

Everything a caller needs is read from the loaded model, never assumed: the number of hidden states
(:func:`n_states`), their width, the frame rate (:func:`frame_rate`), the fewest samples that give one
frame (:func:`min_samples`) and the input normalisation. The last comes from the checkpoint's
feature-extractor file (preprocessor_config.json: ``do_normalize`` for the waveform encoders, the
Mel settings for Whisper) and is stored on the model's config as ``serkit_input``, so an export or a
checkpoint rebuilt from the config alone feeds the encoder exactly what it was trained on.

serkit fine-tunes the plain encoder: no quantiser (the pretraining-only part), and no time or
feature masking while fine-tuning, so the loaders force ``mask_time_prob = mask_feature_prob = 0``.
Dropout and LayerDrop come from the checkpoint's config unless the caller overrides them (e.g.
``layerdrop=0.05``; Whisper's is ``encoder_layerdrop``).

Machines without internet are the normal case for serkit users, so a checkpoint that cannot be found
raises :class:`EncoderNotFoundError` with the ways to provide one instead of a hub traceback.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import (AutoConfig, AutoFeatureExtractor, Data2VecAudioConfig, Data2VecAudioModel, HubertConfig,
                          HubertModel, PretrainedConfig, PreTrainedModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig,
                          WavLMModel, WhisperConfig, WhisperModel)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from serkit.errors import Refused, SerkitError, load_error_text
from serkit.features import whisper_encoder

logger = logging.getLogger(__name__)

# model_type -> (config class, model class). Whisper's entry is its encoder; loading a whole
# Whisper checkpoint keeps only that half (see load_encoder).
ENCODER_TYPES: dict[str, tuple[type, type]] = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
    "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel),
    "whisper": (WhisperConfig, WhisperEncoder),
}

# Settings the recipe fixes whatever the checkpoint says (paper: no time masking in fine-tuning).
_FINETUNE_SETTINGS = {"mask_time_prob": 0.0, "mask_feature_prob": 0.0}
INPUT_KEY = "serkit_input"  # the config attribute that records the encoder's input (module docstring)


class EncoderNotFoundError(SerkitError):
    """The pretrained encoder's files could not be found (offline, not cached, or a wrong folder)."""


class EncoderConfigError(SerkitError):
    """An encoder configuration serkit cannot use (unknown type or override, masking, adapter...)."""


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
            f"there with `AutoModel.from_pretrained(...)` and `.save_pretrained(DIR)` (and the same for "
            f"`AutoFeatureExtractor`), copy DIR to this machine and point the config's `encoder_source` at "
            f"DIR. For tests and smoke runs, `python -m serkit.bin.make_tiny_w2v2 --out DIR [--type T]` "
            f"builds a small random encoder offline.")


def check_type(encoder_type: str, where: str) -> str:
    """``encoder_type`` if serkit knows it, else a clear error listing the known ones."""
    if encoder_type not in ENCODER_TYPES:
        raise EncoderConfigError(f"{where}: encoder type {encoder_type!r} is not supported; use one of "
                                 f"{', '.join(ENCODER_TYPES)} (set `encoder_type` when config.json does not say)")
    return encoder_type


def _typed_config(config: PretrainedConfig, encoder_type: str | None, source: str) -> PretrainedConfig:
    """``config`` as the config class of ``encoder_type`` (default: its own ``model_type``)."""
    wanted = check_type(encoder_type or getattr(config, "model_type", ""), f"encoder {source}")
    config_class = ENCODER_TYPES[wanted][0]
    if isinstance(config, config_class):
        return config
    logger.info("encoder %s: config.json says model_type %r; read as %s (encoder_type)", source,
                getattr(config, "model_type", None), wanted)
    return config_class.from_dict(config.to_dict())


def _apply_overrides(config: PretrainedConfig, overrides: dict[str, Any], source: str) -> PretrainedConfig:
    """Apply the caller's overrides and serkit's fixed fine-tuning settings to ``config``."""
    for key, value in overrides.items():
        if key in _FINETUNE_SETTINGS and value != _FINETUNE_SETTINGS[key]:
            raise EncoderConfigError(
                f"encoder {source}: override {key}={value!r} is not supported: the W2V2-MTL recipe "
                f"fine-tunes without SpecAugment masking (the forward pass never masks); remove it")
        if not hasattr(config, key):
            raise EncoderConfigError(
                f"encoder {source}: unknown {type(config).__name__} setting {key!r} in the overrides; check the "
                f"spelling against transformers' {type(config).__name__} (e.g. layerdrop, hidden_dropout)")
        setattr(config, key, value)
    for key, value in _FINETUNE_SETTINGS.items():
        setattr(config, key, value)
    config.apply_spec_augment = False
    if getattr(config, "add_adapter", False):
        raise EncoderConfigError(
            f"encoder {source}: add_adapter=True changes the frame rate and is not supported by "
            f"serkit's SSL models; use a checkpoint without an adapter")
    return config


def _read_input(config: PretrainedConfig, location: str, local_only: bool, source: str) -> dict[str, Any]:
    """What the encoder expects as input, from the checkpoint's feature extractor (module docstring).

    A folder without preprocessor_config.json (e.g. only ``Model.save_pretrained`` was run) falls back
    to transformers' defaults for the type, with a warning: wav2vec 2.0's normalised waveform, Whisper's
    log-Mel of ``num_mel_bins`` bands.
    """
    if isinstance(getattr(config, INPUT_KEY, None), dict):
        return dict(getattr(config, INPUT_KEY))
    try:
        extractor = AutoFeatureExtractor.from_pretrained(location, local_files_only=local_only).to_dict()
    except (OSError, ValueError) as error:
        logger.warning("encoder %s: no feature-extractor settings (preprocessor_config.json: %s); using "
                       "transformers' defaults for %s — save the feature extractor with the model to be sure",
                       source, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                       config.model_type)
        extractor = {}
    if config.model_type == "whisper":
        return whisper_encoder.front_end_settings(extractor, config.num_mel_bins)
    return {"kind": "waveform", "sampling_rate": int(extractor.get("sampling_rate", 16000)),
            "do_normalize": bool(extractor.get("do_normalize", True))}


def load_encoder(source: str, encoder_type: str | None = None, **config_overrides: Any) -> PreTrainedModel:
    """Load a pretrained encoder from a hub id or a ``save_pretrained`` folder.

    ``encoder_type`` (one of :data:`ENCODER_TYPES`) is needed only when config.json's ``model_type``
    is missing or wrong. ``config_overrides`` replace config values before the weights are loaded
    (dropouts, ``layerdrop``...). With ``HF_HUB_OFFLINE=1`` only the local cache is consulted.
    Weights come back as float32 whatever the checkpoint's dtype, so mixed precision is left to
    ``torch.autocast``.
    """
    source = str(source)
    if encoder_type in (None, "", "auto"):
        encoder_type = None
    is_dir = Path(source).expanduser().is_dir()
    if not is_dir and _looks_like_path(source):
        raise EncoderNotFoundError(f"encoder {source}: no such folder. {_how_to_provide(source)}")
    location = str(Path(source).expanduser()) if is_dir else source
    local_only = is_dir or hub_offline()
    try:
        if encoder_type is None:
            config = AutoConfig.from_pretrained(location, local_files_only=local_only)
        else:
            config = ENCODER_TYPES[check_type(encoder_type, f"encoder {source}")][0].from_pretrained(
                location, local_files_only=local_only)
        config = _apply_overrides(_typed_config(config, encoder_type, source), config_overrides, source)
        setattr(config, INPUT_KEY, _read_input(config, location, local_only, source))
        model, info = _from_pretrained(config, location, local_only)
    except EncoderConfigError:
        raise
    except (OSError, ValueError) as error:  # transformers reports missing files/repos as OSError
        if is_dir and encoder_type is None and (Path(location) / "config.json").is_file():
            raise EncoderConfigError(f"encoder {source}: its config.json names no model type transformers knows "
                                     f"({str(error).strip().splitlines()[0]}); set `encoder_type` to one of "
                                     f"{', '.join(ENCODER_TYPES)}") from None
        where = ("the folder has no loadable encoder checkpoint (config.json + model.safetensors "
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
    _refuse_missing(info, source)
    logger.info("loaded %s encoder %s: %d hidden states of width %d, %g frames/s, input %s", config.model_type,
                source, n_states(model), hidden_size(model), frame_rate(model), getattr(config, INPUT_KEY))
    return model.float()


def _from_pretrained(config: PretrainedConfig, location: str, local_only: bool):
    """The model and transformers' loading info. A whole Whisper checkpoint (encoder and decoder, as the
    hub has them) is loaded as ``WhisperModel`` and only its encoder kept; a saved encoder directly."""
    kwargs = {"config": config, "local_files_only": local_only, "output_loading_info": True}
    if config.model_type == "whisper" and "WhisperEncoder" not in (config.architectures or ()):
        whole, info = WhisperModel.from_pretrained(location, **kwargs)
        info = {key: [k for k in _names(value) if k.startswith("encoder.")]
                for key, value in info.items() if key in ("missing_keys", "mismatched_keys")}
        return whole.get_encoder(), info
    return ENCODER_TYPES[config.model_type][1].from_pretrained(location, **kwargs)


def _names(keys) -> list[str]:
    return [item if isinstance(item, str) else item[0] for item in keys]


def _refuse_missing(info: dict, source: str) -> None:
    """transformers would silently initialise missing weights at random: a "pretrained" encoder that is not."""
    missing = sorted(_names(info.get("missing_keys", ()))) + sorted(_names(info.get("mismatched_keys", ())))
    if missing:
        raise EncoderConfigError(
            f"encoder {source}: the checkpoint lacks or mis-shapes {len(missing)} encoder weights "
            f"({', '.join(map(str, missing[:3]))}{' ...' if len(missing) > 3 else ''}); it is not a complete "
            f"checkpoint for its config.json — re-download or re-save it")


def encoder_from_config(config_dict: dict[str, Any]) -> PreTrainedModel:
    """A randomly initialised encoder shaped by a ``config.to_dict()`` dict (any :data:`ENCODER_TYPES`).

    Used to rebuild an exported or checkpointed network without downloading anything: the real
    weights are loaded afterwards with ``load_state_dict``. A dict without ``serkit_input`` (written
    before serkit read the feature extractor) means wav2vec 2.0's normalised waveform, as then.
    """
    if not isinstance(config_dict, dict):
        raise EncoderConfigError(f"encoder config must be a dict (the encoder config's to_dict()), "
                                 f"got {type(config_dict).__name__}")
    config = config_from_dict(config_dict)
    return ENCODER_TYPES[config.model_type][1](config).float()


def config_from_dict(config_dict: dict[str, Any]) -> PretrainedConfig:
    """The encoder config of an ``encoder_config`` dict, with serkit's fine-tuning settings and its input."""
    encoder_type = check_type(str(config_dict.get("model_type", "wav2vec2")), "encoder config")
    config_class = ENCODER_TYPES[encoder_type][0]
    try:
        config = config_class.from_dict(dict(config_dict))
    except (TypeError, ValueError) as error:
        raise EncoderConfigError(f"encoder config is not a valid {config_class.__name__} ({error}); it should be "
                                 f"the `encoder_config` written by serkit's training stage") from None
    config = _apply_overrides(config, {}, "config")
    if not isinstance(getattr(config, INPUT_KEY, None), dict):
        setattr(config, INPUT_KEY, whisper_encoder.front_end_settings({}, config.num_mel_bins)
                if encoder_type == "whisper" else {"kind": "waveform", "sampling_rate": 16000, "do_normalize": True})
    return config


# ----------------------------------------------------------------------------- geometry, read from the model
def encoder_type(encoder: PreTrainedModel) -> str:
    """The encoder's type (a key of :data:`ENCODER_TYPES`)."""
    return encoder.config.model_type


def is_whisper(encoder: PreTrainedModel) -> bool:
    return encoder_type(encoder) == "whisper"


def input_settings(encoder: PreTrainedModel) -> dict[str, Any]:
    """The encoder's input (``serkit_input``: kind, sampling rate, normalisation or Mel settings)."""
    return dict(getattr(encoder.config, INPUT_KEY))


def n_layers(encoder: PreTrainedModel) -> int:
    """Transformer layers in the loaded model (counted, not read from a default)."""
    return len(encoder.layers if is_whisper(encoder) else encoder.encoder.layers)


def n_states(encoder: PreTrainedModel) -> int:
    """``L``: the hidden states ``H_0 .. H_N`` the layer fusion weighs (Transformer layers + 1)."""
    return n_layers(encoder) + 1


def hidden_size(encoder: PreTrainedModel) -> int:
    """``D``: the width of every hidden state."""
    return int(encoder.config.d_model if is_whisper(encoder) else encoder.config.hidden_size)


def samples_per_frame(encoder: PreTrainedModel) -> int:
    """Input samples between two output frames (320 = 20 ms at 16 kHz for every base model)."""
    if is_whisper(encoder):
        return whisper_encoder.samples_per_frame(encoder)
    return math.prod(int(layer.conv.stride[0]) for layer in encoder.feature_extractor.conv_layers)


def frame_rate(encoder: PreTrainedModel) -> float:
    """Output frames per second of audio."""
    return input_settings(encoder)["sampling_rate"] / samples_per_frame(encoder)


def min_samples(config: PretrainedConfig) -> int:
    """The fewest input samples that give one frame (400 = 25 ms at 16 kHz for the wav2vec 2.0 CNN), from
    the encoder's config (``encoder.config``: what its modules were built from)."""
    if config.model_type == "whisper":
        return whisper_encoder.min_samples(getattr(config, INPUT_KEY))
    field = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        field = (field - 1) * int(stride) + int(kernel)
    return field


def frame_lens(encoder: PreTrainedModel, n_samples: Tensor) -> Tensor:
    """Frames [B] (long) the encoder gives for ``n_samples`` [B] samples (0 when fewer than :func:`min_samples`)."""
    if is_whisper(encoder):
        return whisper_encoder.frame_lens(encoder, n_samples)
    return encoder._get_feat_extract_output_lengths(n_samples).long()


def front_end_prefixes(encoder: PreTrainedModel) -> tuple[str, ...]:
    """Parameter-name prefixes of the front end that ``freeze_feature_encoder`` holds still: the CNN over
    the waveform, or Whisper's two convolutions over the log-Mel (its positions are never trained)."""
    return ("conv1.", "conv2.") if is_whisper(encoder) else ("feature_extractor.",)


def fixed_prefixes(encoder: PreTrainedModel) -> tuple[str, ...]:
    """Parameter-name prefixes the encoder never trains (Whisper's sinusoidal position table)."""
    return ("embed_positions.",) if is_whisper(encoder) else ()


def check_sample_rate(encoder: PreTrainedModel, sample_rate: int, source: str) -> None:
    """Refuse audio at another rate than the encoder's feature extractor expects (it would shift every frame)."""
    expected = input_settings(encoder)["sampling_rate"]
    if int(sample_rate) != expected:
        raise EncoderConfigError(f"encoder {source}: it takes {expected} Hz audio, the config's sample_rate is "
                                 f"{sample_rate}; set sample_rate: {expected} (the data loader resamples)")


def describe(encoder: PreTrainedModel) -> dict[str, Any]:
    """The facts docs/models.md tabulates, read from a loaded encoder."""
    return {"type": encoder_type(encoder), "layers": n_layers(encoder), "hidden_size": hidden_size(encoder),
            "frame_rate": frame_rate(encoder), "min_samples": min_samples(encoder.config),
            "parameters": sum(p.numel() for p in encoder.parameters()), "input": input_settings(encoder)}


# ----------------------------------------------------------------------------- input and all hidden states
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


def waveform_input(encoder: PreTrainedModel, wavs: Tensor, n_samples: Tensor) -> Tensor:
    """A waveform encoder's input [B, T] in float32: normalised per utterance if its feature extractor
    normalises (``do_normalize``), else the raw samples; padding 0 either way."""
    if input_settings(encoder).get("do_normalize", True):
        return normalise_waveforms(wavs, n_samples)
    mask = torch.arange(wavs.shape[1], device=wavs.device).unsqueeze(0) < n_samples.unsqueeze(1)
    return torch.where(mask, wavs.float(), torch.zeros((), device=wavs.device))


def project_features(encoder: PreTrainedModel, features: Tensor) -> Tensor:
    """The Transformer's input [B, F, D] from CNN features [B, F, C]: HuBERT's projection returns a
    tensor where the other waveform encoders return a tuple."""
    projected = encoder.feature_projection(features)
    return projected[0] if isinstance(projected, tuple) else projected


@contextlib.contextmanager
def padding_free_positions(encoder: PreTrainedModel, frame_mask: Tensor):
    """While active, data2vec-audio's positional embedding (a stack of padded convolutions) has each
    convolution's output zeroed past the real frames of ``frame_mask`` [B, F], so the next one sees the
    zeros it would see on the utterance alone; the other encoders' single convolution needs nothing."""
    keep = frame_mask.unsqueeze(1)  # [B, 1, F]
    handles = [layer.register_forward_hook(lambda _m, _i, out: out * keep.to(out.dtype))
               for layer in getattr(encoder.encoder.pos_conv_embed, "layers", ())]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def transformer_output(encoder: PreTrainedModel, features: Tensor, frame_mask: Tensor) -> Tensor:
    """A waveform encoder's last hidden state [B, F, D] from its CNN features [B, F, C], padding-invariant:
    the Transformer gets ``frame_mask`` [B, F] as its attention mask (see :func:`padding_free_positions`)."""
    hidden = project_features(encoder, features)
    with padding_free_positions(encoder, frame_mask):
        return encoder.encoder(hidden, attention_mask=frame_mask)[0]


def hidden_states(encoder: PreTrainedModel, waveform: Tensor) -> list[Tensor]:
    """``H_0 .. H_N`` [1, frames, D] of one mono waveform [T] at its true length, as the encoder is (its
    train/eval mode and grad setting are the caller's).

    ``H_N`` is the encoder's final output: for pre-LN models it includes the final LayerNorm, which
    transformers leaves out of ``hidden_states[N]``.
    """
    n_samples = torch.tensor([waveform.shape[0]], device=waveform.device)
    if is_whisper(encoder):
        states: list[Tensor] = []
        whisper_encoder.run_layers(encoder, waveform.unsqueeze(0), n_samples,
                                   lambda index, state: states.append(state))
        return states
    out = encoder(waveform_input(encoder, waveform.unsqueeze(0), n_samples), output_hidden_states=True)
    return [*out.hidden_states[:-1], out.last_hidden_state]

