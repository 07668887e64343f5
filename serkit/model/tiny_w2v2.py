"""A tiny, randomly initialised wav2vec 2.0 saved like a pretrained checkpoint.

Real checkpoints need a download, which CI and offline machines cannot do. This folder has the same
layout as ``save_pretrained`` output of ``facebook/wav2vec2-base`` (config.json, model.safetensors,
preprocessor_config.json) and the same frame rate (7 CNN layers, standard kernels and strides: one
frame per 20 ms at 16 kHz, GroupNorm in the first CNN layer), so the whole loading and training path
runs for real — only the weights are random and the widths are small enough for seconds-per-epoch
training on two CPU cores.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

MARKER = "serkit_tiny_w2v2.json"  # written last: its presence means the folder is complete


class TinyEncoderError(SerkitError):
    """The output folder exists but is not the tiny encoder that was asked for."""


def tiny_w2v2_config() -> Wav2Vec2Config:
    """Architecture of the tiny encoder: wav2vec2-base's shape, scaled down."""
    return Wav2Vec2Config(
        conv_dim=(48,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        feat_extract_norm="group",
        conv_bias=False,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=192,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=False,
        # Like a pretraining config: masking settings present (serkit's loader turns them off).
        mask_time_prob=0.05,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.1,
        layerdrop=0.0,
        vocab_size=32,
    )


def build_tiny_w2v2(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny encoder to ``out_dir`` (or do nothing if it is already there) and return its path.

    The folder is assembled in a temporary sibling and renamed into place, so an interrupted build
    never leaves a half-written folder that a rerun would mistake for a finished one.
    """
    out_dir = Path(out_dir)
    marker = out_dir / MARKER
    if marker.is_file():
        try:
            built_with = json.loads(marker.read_text(encoding="utf-8")).get("seed")
        except (ValueError, AttributeError) as error:
            raise TinyEncoderError(f"{marker}: unreadable ({error}); remove {out_dir} and rebuild") from None
        if built_with != seed:
            raise TinyEncoderError(f"{out_dir}: already holds a tiny encoder built with seed {built_with}, "
                                   f"not {seed}; remove the folder or choose another --out")
        logger.info("tiny wav2vec 2.0 already in %s (seed %d): nothing to do", out_dir, seed)
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TinyEncoderError(f"{out_dir}: exists and is not a tiny encoder built by serkit (no {MARKER}); "
                               f"remove it or choose another --out")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
            torch.manual_seed(seed)
            model = Wav2Vec2Model(tiny_w2v2_config())
        model.save_pretrained(tmp)
        # What wav2vec2-base ships: normalised 16 kHz mono input, no attention mask (GroupNorm CNN).
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=False).save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        (tmp / MARKER).write_text(json.dumps({"seed": seed, "parameters": n_params,
                                              "note": "random weights, for tests and smoke runs only"},
                                             indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp (and some writers) make files private; this is an ordinary folder
        for path in tmp.iterdir():
            path.chmod(0o644)
        os.replace(tmp, out_dir)  # atomic; replaces out_dir only if it is an empty folder (checked above)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote tiny wav2vec 2.0 (%d parameters, seed %d) to %s", n_params, seed, out_dir)
    return out_dir
