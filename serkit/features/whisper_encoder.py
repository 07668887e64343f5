"""Whisper's encoder as an SSL encoder: its log-Mel front end and a forward pass that is not padded to 30 s.

transformers' ``WhisperEncoder.forward`` insists on 3000 Mel frames (30 s, the length Whisper was
trained on); an emotional utterance of 3 s would cost ten times its compute, and the frames of
silence it adds would enter every pooled statistic. serkit runs the same modules on the true length
instead:

* the log-Mel spectrogram is Whisper's own (``WhisperFeatureExtractor``'s Mel filters, window and
  scaling: ``log10``, floored 8 below the utterance's maximum, ``(x + 4) / 4``), computed per utterance
  on its real samples only;
* the two convolutions run on the batch, with the first one's output zeroed past each utterance's
  Mel frames, so the second sees the zeros it would see alone (padding invariance);
* the sinusoidal position table is sliced to the frames present (``embed_positions.weight[:F]``):
  frame ``t`` gets position ``t`` exactly as in a 30 s input, so nothing is re-learned; inputs longer
  than the table (30 s) are refused;
* the Transformer layers get an attention mask that hides the padded frames (Whisper itself never
  needs one, always seeing 30 s), then the final LayerNorm.

LayerDrop (the config's ``encoder_layerdrop``) skips whole layers while training, as transformers does.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import torch
from torch import Tensor, nn
from transformers import WhisperFeatureExtractor

from serkit.errors import SerkitError

MEL_KEYS = ("feature_size", "sampling_rate", "hop_length", "n_fft")


class WhisperInputError(SerkitError):
    """Audio Whisper's encoder cannot take without padding to 30 s (too long for its position table)."""


def front_end_settings(extractor: dict[str, Any], n_mels: int) -> dict[str, Any]:
    """The log-Mel settings serkit records from a checkpoint's feature extractor (defaults: Whisper's,
    with ``n_mels`` bands, when the checkpoint has no preprocessor_config.json)."""
    defaults = WhisperFeatureExtractor(feature_size=int(n_mels)).to_dict()
    settings = {key: int(extractor.get(key, defaults[key])) for key in MEL_KEYS}
    return {"kind": "log_mel", **settings}


@lru_cache(maxsize=4)
def _mel_filters(feature_size: int, sampling_rate: int, hop_length: int, n_fft: int) -> Tensor:
    """Whisper's Mel filter bank [n_fft // 2 + 1, feature_size], float32."""
    extractor = WhisperFeatureExtractor(feature_size=feature_size, sampling_rate=sampling_rate,
                                        hop_length=hop_length, n_fft=n_fft)
    return torch.as_tensor(extractor.mel_filters, dtype=torch.float32)


def log_mel(waveform: Tensor, settings: dict[str, Any]) -> Tensor:
    """Whisper's log-Mel spectrogram [n_mels, frames] of one waveform [T] (frames = T // hop_length)."""
    n_fft, hop = settings["n_fft"], settings["hop_length"]
    wav = waveform.float()
    stft = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft, device=wav.device), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    filters = _mel_filters(*(settings[key] for key in MEL_KEYS)).to(wav.device)
    mel = torch.clamp(filters.T @ power, min=1e-10).log10()
    mel = torch.maximum(mel, mel.max() - 8.0)
    return (mel + 4.0) / 4.0


def min_samples(settings: dict[str, Any]) -> int:
    """Fewest samples for one frame: one hop, and more than half a window (the STFT's reflect padding)."""
    return max(int(settings["hop_length"]), int(settings["n_fft"]) // 2 + 1)


def _conv_len(conv: nn.Conv1d, length: Tensor) -> Tensor:
    return (length + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1


def samples_per_frame(encoder) -> int:
    return int(encoder.config.serkit_input["hop_length"]) * encoder.conv1.stride[0] * encoder.conv2.stride[0]


def frame_lens(encoder, n_samples: Tensor) -> Tensor:
    """Encoder frames [B] for ``n_samples`` [B] (0 below :func:`min_samples`)."""
    settings = encoder.config.serkit_input
    mel = torch.div(n_samples, settings["hop_length"], rounding_mode="floor").long()
    frames = _conv_len(encoder.conv2, _conv_len(encoder.conv1, mel))
    return torch.where(n_samples >= min_samples(settings), frames, torch.zeros_like(frames))


def _mel_batch(encoder, wavs: Tensor, n_samples: Tensor) -> tuple[Tensor, Tensor]:
    """Log-Mel [B, n_mels, M] of each utterance on its true length, zero-padded, and Mel frames [B]."""
    settings = encoder.config.serkit_input
    with torch.no_grad():
        mels = [log_mel(wavs[i, :n], settings) for i, n in enumerate(n_samples.tolist())]
    lens = torch.tensor([m.shape[1] for m in mels], device=wavs.device)
    batch = wavs.new_zeros(len(mels), mels[0].shape[0], int(lens.max()), dtype=torch.float32)
    for i, mel in enumerate(mels):
        batch[i, :, :mel.shape[1]] = mel
    return batch, lens


def run_layers(encoder, wavs: Tensor, n_samples: Tensor, on_state: Callable[[int, Tensor], None]) -> Tensor:
    """Run the encoder on a padded batch ``wavs`` [B, T]; ``on_state(i, H_i)`` gets each hidden state in
    order (a layer LayerDrop skipped sends none). Returns the frame counts [B] (see the module docstring)."""
    mel, mel_lens = _mel_batch(encoder, wavs, n_samples)
    dtype = encoder.conv1.weight.dtype
    x = nn.functional.gelu(encoder.conv1(mel.to(dtype)))
    x = x * (torch.arange(x.shape[2], device=x.device) < mel_lens.unsqueeze(1)).unsqueeze(1).to(x.dtype)
    x = nn.functional.gelu(encoder.conv2(x)).transpose(1, 2)  # [B, F, D]
    lens = _conv_len(encoder.conv2, _conv_len(encoder.conv1, mel_lens))
    table = encoder.embed_positions.weight
    if x.shape[1] > table.shape[0]:
        raise WhisperInputError(f"{int(n_samples.max())} samples give {x.shape[1]} frames, more than Whisper's "
                                f"{table.shape[0]} positions (30 s); crop training audio (max_duration) or score "
                                "long recordings in windows")
    hidden = nn.functional.dropout(x + table[:x.shape[1]].to(x.dtype), p=encoder.dropout, training=encoder.training)
    keep = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lens.unsqueeze(1)  # [B, F]
    mask = torch.zeros(keep.shape, dtype=hidden.dtype, device=x.device).masked_fill(~keep, torch.finfo(hidden.dtype).min)
    mask = mask[:, None, None, :]  # [B, 1, 1, F]: every query ignores the padded keys
    on_state(0, hidden)
    for index, layer in enumerate(encoder.layers, start=1):
        if encoder.training and encoder.layerdrop > 0.0 and float(torch.rand([])) < encoder.layerdrop:
            continue
        out = layer(hidden, attention_mask=mask.expand(-1, -1, hidden.shape[1], -1))
        hidden = out[0] if isinstance(out, tuple) else out
        if index < len(encoder.layers):
            on_state(index, hidden)
    on_state(len(encoder.layers), encoder.layer_norm(hidden))
    return lens
