"""Tiny, randomly initialised SSL encoders of each type, saved like pretrained checkpoints.

Real checkpoints need a download, which CI and offline machines cannot do. Each folder has the layout
of the ``save_pretrained`` output of the hub checkpoint it stands for (config.json, model.safetensors,
preprocessor_config.json) and the same geometry: for the waveform encoders 7 CNN layers with the
standard kernels and strides (one frame per 20 ms at 16 kHz), for Whisper the whole encoder-decoder
(as on the hub: serkit keeps the encoder) with the 80-band log-Mel front end and the 1500-position
table. So the whole loading and training path runs for real — only the weights are random and the
widths small enough for seconds-per-epoch training on two CPU cores. The types differ in depth
(:data:`TINY_LAYERS`), so a test can tell a layer count read from the model from one assumed.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (Data2VecAudioConfig, HubertConfig, PretrainedConfig, Wav2Vec2Config,
                          Wav2Vec2FeatureExtractor, WavLMConfig, WhisperConfig, WhisperFeatureExtractor, WhisperModel)

from serkit.errors import SerkitError
from serkit.features.encoder import ENCODER_TYPES

logger = logging.getLogger(__name__)

MARKER = "serkit_tiny_w2v2.json"  # written last: its presence means the folder is complete
TINY_LAYERS = {"wav2vec2": 3, "hubert": 2, "wavlm": 4, "data2vec-audio": 3, "whisper": 2}
# What the base checkpoints' feature extractors say (wavlm-base-plus feeds the raw waveform).
_NORMALISED = {"wav2vec2": True, "hubert": True, "wavlm": False, "data2vec-audio": True}
_WAVEFORM_CNN = dict(conv_dim=(48,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                     conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False)
_SMALL = dict(hidden_size=64, num_attention_heads=2, intermediate_size=192, hidden_dropout=0.1,
              attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.1,
              layerdrop=0.0, vocab_size=32,
              mask_time_prob=0.05)  # like a pretraining config: masking present (serkit's loader turns it off)


class TinyEncoderError(SerkitError):
    """The output folder exists but is not the tiny encoder that was asked for."""


def tiny_w2v2_config() -> Wav2Vec2Config:
    """Architecture of the tiny wav2vec 2.0: wav2vec2-base's shape, scaled down."""
    return tiny_encoder_config("wav2vec2")


def tiny_encoder_config(encoder_type: str) -> PretrainedConfig:
    """Architecture of the tiny encoder of ``encoder_type``: its base model's shape, scaled down."""
    layers = TINY_LAYERS[_checked(encoder_type)]
    if encoder_type == "whisper":
        # Token ids inside the tiny vocabulary (the real ones index a 51865-token table).
        return WhisperConfig(num_mel_bins=80, d_model=64, encoder_layers=layers, encoder_attention_heads=2,
                             encoder_ffn_dim=192, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                             vocab_size=64, max_target_positions=16, max_source_positions=1500, dropout=0.1,
                             pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                             suppress_tokens=None, begin_suppress_tokens=None)
    if encoder_type == "data2vec-audio":  # layer norm in every CNN layer, 5 positional convolutions (its design)
        cnn = {**_WAVEFORM_CNN, "conv_bias": True}
        cnn.pop("feat_extract_norm"), cnn.pop("do_stable_layer_norm")
        return Data2VecAudioConfig(**cnn, **_SMALL, num_hidden_layers=layers, num_conv_pos_embedding_groups=4)
    config_class = {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig}[encoder_type]
    return config_class(**_WAVEFORM_CNN, **_SMALL, num_hidden_layers=layers, num_conv_pos_embeddings=32,
                        num_conv_pos_embedding_groups=4)


def _checked(encoder_type: str) -> str:
    if encoder_type not in ENCODER_TYPES:
        raise TinyEncoderError(f"no tiny encoder of type {encoder_type!r}; choose one of {', '.join(ENCODER_TYPES)}")
    return encoder_type


def _save(tmp: Path, encoder_type: str) -> int:
    """Write the tiny model and its feature extractor to ``tmp``; return its parameter count."""
    config = tiny_encoder_config(encoder_type)
    if encoder_type == "whisper":
        model = WhisperModel(config)
        extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    else:
        model = ENCODER_TYPES[encoder_type][1](config)
        # What the base checkpoints ship: 16 kHz mono input, no attention mask (GroupNorm CNN).
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                             do_normalize=_NORMALISED[encoder_type], return_attention_mask=False)
    model.save_pretrained(tmp)
    extractor.save_pretrained(tmp)
    return sum(p.numel() for p in model.parameters())


def build_tiny_w2v2(out_dir: str | Path, seed: int = 0, encoder_type: str = "wav2vec2") -> Path:
    """Write the tiny encoder of ``encoder_type`` to ``out_dir`` (or do nothing if it is already there)
    and return its path.

    The folder is assembled in a temporary sibling and renamed into place, so an interrupted build
    never leaves a half-written folder that a rerun would mistake for a finished one.
    """
    out_dir = Path(out_dir)
    marker = out_dir / MARKER
    wanted = {"seed": seed, "type": _checked(encoder_type)}
    if marker.is_file():
        try:
            built = json.loads(marker.read_text(encoding="utf-8"))
            built = {"seed": built.get("seed"), "type": built.get("type", "wav2vec2")}
        except (ValueError, AttributeError) as error:
            raise TinyEncoderError(f"{marker}: unreadable ({error}); remove {out_dir} and rebuild") from None
        if built != wanted:
            held = (f"a tiny {built['type']} encoder, not {encoder_type}" if built["type"] != encoder_type else
                    f"a tiny encoder built with seed {built['seed']}, not {seed}")
            raise TinyEncoderError(f"{out_dir}: already holds {held}; remove the folder or choose another --out")
        logger.info("tiny %s encoder already in %s (seed %d): nothing to do", encoder_type, out_dir, seed)
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TinyEncoderError(f"{out_dir}: exists and is not a tiny encoder built by serkit (no {MARKER}); "
                               f"remove it or choose another --out")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
            torch.manual_seed(seed)
            n_params = _save(tmp, encoder_type)
        (tmp / MARKER).write_text(json.dumps({**wanted, "parameters": n_params,
                                              "note": "random weights, for tests and smoke runs only"},
                                             indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp (and some writers) make files private; this is an ordinary folder
        for path in tmp.iterdir():
            path.chmod(0o644)
        os.replace(tmp, out_dir)  # atomic; replaces out_dir only if it is an empty folder (checked above)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote tiny %s encoder (%d parameters, seed %d) to %s", encoder_type, n_params, seed, out_dir)
    return out_dir
