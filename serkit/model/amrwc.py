"""AMRWC: an attention masked ResNet and wav2vec 2.0, fused by cross-attention (Li & Zhang 2024; docs/models.md).

The SSL branch takes any encoder of :data:`serkit.features.encoder.ENCODER_TYPES` (``encoder_source``, and
``encoder_type`` where its config.json does not say); the paper's is wav2vec 2.0, whose name the parts keep.

Two inputs (the multi-input contract of :class:`~serkit.model.family.ModelFamily`): the waveform and its
log-Mel spectrogram with deltas (3 channels, an image for the ResNet).

* **Speech regions (MADD).** Each spectrogram frame's maximum amplitude difference, the largest minus
  the smallest sample in a window centred on the frame; a frame is speech when it reaches
  ``madd_ratio`` times the utterance's largest (a ratio, so the input's scale does not matter).
* **AM-ResNet.** A ResNet over the spectrogram whose residual blocks are masked: each normalisation
  (:class:`MaskedBatchNorm2d`) takes its statistics over speech frames only and sets every silent or
  padded frame to zero, after every block too, so silence and padding never reach the features.
  The mask follows the strides in time. A convolution + sigmoid gives an attention weight map
  multiplied onto the last block's features (``E' = E * sigmoid(conv(E))``), which are then averaged
  over frequency: one vector a frame.
* **wav2vec 2.0.** The encoder's last hidden states (:mod:`serkit.features.encoder`; Whisper's through
  :func:`serkit.features.whisper_encoder.run_layers`, on the true length).
* **Adaptive averaging.** Both sequences are averaged in time to ``n_steps`` steps over each
  utterance's own frames (``adaptive_avg_pool1d`` per utterance), so the padding changes nothing.
* **Cross-attention both ways**, ``softmax(Q_w K_a^T / sqrt d) V_a`` and ``softmax(Q_a K_w^T / sqrt d) V_w``,
  each followed by a residual feed-forward layer and LayerNorm (``LN(F + FFN(F))``); the two are
  concatenated, averaged over the steps and classified by one linear layer.

Trained on hard labels, or also on the annotators' vote proportions (``vote_weight``, the paper's
"proportion" labels) with the ambiguous utterances switchable (``use_ambiguous``; serkit.targets.votes).
In eval mode the output does not depend on the batch's padding (tests/test_amrwc.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from serkit.features import whisper_encoder
from serkit.features.encoder import (check_sample_rate, config_from_dict, encoder_from_config, fixed_prefixes,
                                     frame_lens, front_end_prefixes, hidden_size, is_whisper, load_encoder,
                                     min_samples, transformer_output, waveform_input)
from serkit.model.common import ModelInputError, length_mask
from serkit.model.family import ModelFamily
from serkit.model.ser_model import NetworkOutput, SERModel
from serkit.model.w2v2_mtl import checked_cnn_mode, masked_group_norm_cnn, per_utterance_cnn


# ----------------------------------------------------------------------------- speech regions
def madd_mask(wavs: Tensor, n_samples: Tensor, n_frames: Tensor, n_steps: int, hop: int, window: int,
              ratio: float) -> Tensor:
    """Speech frames [B, n_steps] (bool) of padded waveforms [B, T] on the spectrogram's centred frames.

    A frame's maximum amplitude difference (MAD) is the largest minus the smallest sample of the
    ``window`` samples centred on it (zeros past the ends, as the spectrogram's framing); speech where
    it reaches ``ratio`` times the utterance's largest MAD. Frames past ``n_frames`` are never speech.
    """
    half = window // 2
    padded = F.pad(wavs.float(), (half, window - half))
    frames = padded.unfold(1, window, hop)[:, :n_steps]  # [B, <=n_steps, window]
    mad = frames.amax(dim=-1) - frames.amin(dim=-1)
    mad = F.pad(mad, (0, n_steps - mad.shape[1]))
    real = length_mask(n_frames, n_steps)
    mad = torch.where(real, mad, torch.zeros((), device=mad.device))
    largest = mad.amax(dim=1, keepdim=True)
    return real & (mad >= ratio * largest)


# ----------------------------------------------------------------------------- AM-ResNet
class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over [B, C, T, M] whose statistics cover the frames where ``mask`` [B, 1, T, 1] is 1 only,
    and whose output is zero elsewhere (silence and padding stay zero, whatever the batch holds)."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        if self.training:
            count = (mask.sum() * x.shape[-1]).clamp_min(1)
            mean = (x * mask).sum(dim=(0, 2, 3)) / count
            var = (((x - mean.view(1, -1, 1, 1)) * mask) ** 2).sum(dim=(0, 2, 3)) / count
            with torch.no_grad():
                self.num_batches_tracked += 1
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        normed = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        return (normed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)) * mask


def strided(mask: Tensor, lens: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """The mask [B, 1, T, 1] and frame counts [B] after a 3-wide convolution of ``stride`` in time
    (padding 1): a frame is kept where its window holds a kept frame and it lies inside the utterance."""
    if stride == 1:
        return mask, lens
    pooled = F.max_pool2d(mask, kernel_size=(3, 1), stride=(stride, 1), padding=(1, 0))
    lens = (lens - 1) // stride + 1
    return pooled * length_mask(lens, pooled.shape[2]).view(mask.shape[0], 1, -1, 1).to(mask.dtype), lens


class MaskedResBlock(nn.Module):
    """A basic residual block (two 3x3 convolutions) with masked normalisation; its output is zero outside the mask."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = MaskedBatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = MaskedBatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.shortcut_norm = MaskedBatchNorm2d(out_channels)

    def forward(self, x: Tensor, mask: Tensor, lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mask, lens = strided(mask, lens, self.stride)
        out = F.relu(self.norm1(self.conv1(x), mask))
        out = self.norm2(self.conv2(out), mask)
        skip = x if self.shortcut is None else self.shortcut_norm(self.shortcut(x), mask)
        return F.relu(out + skip) * mask, mask, lens


class AMResNet(nn.Module):
    """Masked ResNet + attention weight map over [B, T, 3, n_mels]: a vector a (strided) frame, [B, T', C]."""

    def __init__(self, channels: Sequence[int], blocks_per_stage: int, attention_kernel: int):
        super().__init__()
        self.stem = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        self.stem_norm = MaskedBatchNorm2d(channels[0])
        blocks, previous = [], channels[0]
        for stage, width in enumerate(channels):
            for index in range(blocks_per_stage):
                blocks.append(MaskedResBlock(previous, width, 2 if stage > 0 and index == 0 else 1))
                previous = width
        self.blocks = nn.ModuleList(blocks)
        self.attention = nn.Conv2d(previous, 1, attention_kernel, padding=attention_kernel // 2)
        self.out_dim = previous

    def forward(self, spec: Tensor, speech: Tensor, n_frames: Tensor) -> tuple[Tensor, Tensor]:
        x = spec.permute(0, 2, 1, 3)  # [B, 3, T, M]
        mask = speech.to(x.dtype).view(x.shape[0], 1, -1, 1)
        x = F.relu(self.stem_norm(self.stem(x), mask))
        lens = n_frames
        for block in self.blocks:
            x, mask, lens = block(x, mask, lens)
        x = x * torch.sigmoid(self.attention(x)) * mask  # the attention weight map
        return x.mean(dim=3).transpose(1, 2), lens  # [B, T', C]


# ----------------------------------------------------------------------------- fusion
def adaptive_average(x: Tensor, lens: Tensor, n_steps: int) -> Tensor:
    """[B, T, D] -> [B, n_steps, D]: ``adaptive_avg_pool1d`` of each utterance over its own ``lens`` frames."""
    steps = torch.arange(n_steps, device=x.device).view(1, -1, 1)
    lens = lens.to(x.device).view(-1, 1, 1)
    start = steps * lens // n_steps
    end = ((steps + 1) * lens + n_steps - 1) // n_steps
    frames = torch.arange(x.shape[1], device=x.device).view(1, 1, -1)
    weights = ((frames >= start) & (frames < end)).to(x.dtype)
    return weights @ x / weights.sum(dim=-1, keepdim=True)


class CrossAttention(nn.Module):
    """``LN(F + FFN(F))`` with ``F = softmax(Q K^T / sqrt d) V``: queries from one branch, keys and values
    from the other."""

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        attended, _ = self.attention(query, context, context, need_weights=False)
        return self.norm(attended + self.ffn(attended))


# ----------------------------------------------------------------------------- the network
class AMRWCNetwork(nn.Module):
    """AM-ResNet + wav2vec 2.0 + cross-attention (module docstring); ``forward([wavs, spec], [n_samples, n_frames])``."""

    def __init__(self, encoder: PreTrainedModel, n_classes: int, hop: int, madd_window: int, madd_ratio: float = 0.05,
                 channels: Sequence[int] = (64, 128, 256, 512), blocks_per_stage: int = 2, attention_kernel: int = 3,
                 n_steps: int = 32, d_model: int = 256, n_heads: int = 1, ffn_dim: int = 512, dropout: float = 0.1,
                 freeze_feature_encoder: bool = True, cnn_mode: str = "auto"):
        super().__init__()
        if n_classes < 2:
            raise ModelInputError(f"n_classes must be at least 2, got {n_classes}")
        self.cnn_mode = checked_cnn_mode(cnn_mode)  # a run-time choice (same features either way), not configuration
        self.settings = {"n_classes": int(n_classes), "hop": int(hop), "madd_window": int(madd_window),
                         "madd_ratio": float(madd_ratio), "channels": [int(c) for c in channels],
                         "blocks_per_stage": int(blocks_per_stage), "attention_kernel": int(attention_kernel),
                         "n_steps": int(n_steps), "d_model": int(d_model), "n_heads": int(n_heads),
                         "ffn_dim": int(ffn_dim), "dropout": float(dropout),
                         "freeze_feature_encoder": bool(freeze_feature_encoder)}
        self.encoder = encoder
        self.set_encoder_frozen(False)  # holds the front end still if asked (see _trainable)
        if freeze_feature_encoder and hasattr(encoder, "freeze_feature_encoder"):
            encoder.freeze_feature_encoder()  # also stops transformers asking for its input's gradient
        self.resnet = AMResNet(channels, blocks_per_stage, attention_kernel)
        self.project_audio = nn.Linear(self.resnet.out_dim, d_model)
        self.project_w2v2 = nn.Linear(hidden_size(encoder), d_model)
        self.audio_to_w2v2 = CrossAttention(d_model, n_heads, ffn_dim, dropout)  # F_{a->w}: wav2vec 2.0 queries
        self.w2v2_to_audio = CrossAttention(d_model, n_heads, ffn_dim, dropout)  # F_{w->a}: AM-ResNet queries
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * d_model, n_classes)
        self.frame_dim = 2 * d_model

    def config_dict(self) -> dict[str, Any]:
        return {"encoder_config": self.encoder.config.to_dict(), **self.settings}

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder's trainable parameters (its front end left out while frozen for good), also while held still."""
        return [p for name, p in self.encoder.named_parameters() if self._trainable(name)]

    def _trainable(self, name: str) -> bool:
        """Not a front end held for good, nor a part the encoder never trains (Whisper's positions)."""
        held = self.settings["freeze_feature_encoder"] and name.startswith(front_end_prefixes(self.encoder))
        return not held and not name.startswith(fixed_prefixes(self.encoder))

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Hold the encoder still (or release it; a frozen front end stays frozen), e.g. for the first steps."""
        for name, param in self.encoder.named_parameters():
            param.requires_grad = not frozen and self._trainable(name)

    def head_parameters(self) -> list[nn.Parameter]:
        encoder = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    def forward(self, inputs: Sequence[Tensor], lengths: Sequence[Tensor]) -> NetworkOutput:
        (wavs, spec), (n_samples, n_frames) = inputs, lengths
        if wavs.dim() != 2 or spec.dim() != 4:
            raise ModelInputError(f"AMRWC takes a waveform batch [B, T] and a spectrogram batch [B, F, 3, M], got "
                                  f"{tuple(wavs.shape)} and {tuple(spec.shape)}")
        s = self.settings
        speech = madd_mask(wavs, n_samples, n_frames, spec.shape[1], s["hop"], s["madd_window"], s["madd_ratio"])
        audio, audio_lens = self.resnet(spec, speech, n_frames)
        w2v2, w2v2_lens = self._last_layer(wavs, n_samples)
        audio = self.project_audio(adaptive_average(audio, audio_lens, s["n_steps"]))
        w2v2 = self.project_w2v2(adaptive_average(w2v2, w2v2_lens, s["n_steps"]))
        fused = torch.cat([self.audio_to_w2v2(w2v2, audio), self.w2v2_to_audio(audio, w2v2)], dim=-1)
        logits = self.classifier(self.dropout(fused.mean(dim=1)))
        steps = torch.full_like(n_frames, s["n_steps"])
        return NetworkOutput(emo_logits=logits, frame_features=fused, frame_lens=steps)

    def _last_layer(self, wavs: Tensor, n_samples: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's last hidden states [B, F, D] and real frame counts, independent of the padding."""
        lens = frame_lens(self.encoder, n_samples)
        if n_samples.device.type == "cpu" and bool(torch.any(lens < 1)):
            raise ModelInputError(f"an utterance of the batch has {int(n_samples.min())} samples, fewer than the "
                                  f"{min_samples(self.encoder.config)} the encoder needs for one frame")
        if is_whisper(self.encoder):
            last: dict[str, Tensor] = {}  # each state replaces the one before: only H_N is kept
            whisper_encoder.run_layers(self.encoder, wavs, n_samples, lambda _index, state: last.update(state=state))
            return last["state"], lens
        wavs = waveform_input(self.encoder, wavs, n_samples)
        grad = torch.is_grad_enabled() and not self.settings["freeze_feature_encoder"]
        with torch.set_grad_enabled(grad):
            cnn = self.encoder.feature_extractor
            # data2vec-audio has no feat_extract_norm: a LayerNorm in every CNN layer, per frame.
            if getattr(self.encoder.config, "feat_extract_norm", "layer") != "group":
                features = cnn(wavs)
            elif self.cnn_mode == "batched" or (self.cnn_mode == "auto" and wavs.device.type != "cpu"):
                features = masked_group_norm_cnn(cnn, wavs, n_samples)
            else:
                features = per_utterance_cnn(cnn, wavs, n_samples)
        features = features.transpose(1, 2)
        return transformer_output(self.encoder, features, length_mask(lens, features.shape[1])), lens


# ----------------------------------------------------------------------------- the family
class AMRWCFamily(ModelFamily):
    """AMRWC (Li & Zhang 2024): AM-ResNet over log-Mel + wav2vec 2.0's last layer, cross-attention fusion.

    Two parameter groups, each with its own optimizer: ``encoder`` (the pretrained SSL encoder, its
    CNN left out while frozen) and ``heads`` (AM-ResNet, cross-attention and classifier, all new).
    """

    name = "amrwc"
    # The paper's rows: soft labels or not, ambiguous utterances or not (``run.sh --grid``); both are
    # recorded with each fold (model_config.json's options).
    options = ("vote_weight", "use_ambiguous")

    def tag(self, hparams: dict) -> str:
        """``votes<w>`` (0: hard labels only); ``use_ambiguous`` is named ``amb`` by the shared switches."""
        return f"votes{float(hparams['vote_weight']):g}"

    def inputs(self, hparams: dict) -> list[dict[str, Any]]:
        rate = int(hparams["sample_rate"])
        return [{"kind": "waveform", "sample_rate": rate, "params": {}},
                {"kind": "log_mel_deltas", "sample_rate": rate, "params": dict(hparams["spectrogram"])}]

    def build_network(self, hparams: dict, n_classes: int, input_dims) -> AMRWCNetwork:
        encoder = load_encoder(hparams["encoder_source"], hparams.get("encoder_type"))
        check_sample_rate(encoder, int(hparams["sample_rate"]), hparams["encoder_source"])
        return AMRWCNetwork(encoder, n_classes, **self._framing(hparams), **dict(hparams.get("network") or {}),
                            freeze_feature_encoder=bool(hparams["freeze_feature_encoder"]),
                            cnn_mode=hparams.get("cnn_mode", "auto"))

    @staticmethod
    def _framing(hparams: dict) -> dict[str, int]:
        """The spectrogram's hop and the MADD window, in samples (the window: the spectrogram's)."""
        spectrogram, rate = dict(hparams["spectrogram"]), int(hparams["sample_rate"])
        return {"hop": max(1, round(float(spectrogram["hop_ms"]) * rate / 1000)),
                "madd_window": max(1, round(float(spectrogram["win_ms"]) * rate / 1000))}

    def network_config(self, network: AMRWCNetwork) -> dict[str, Any]:
        return network.config_dict()

    def network_from_config(self, config: dict[str, Any]) -> AMRWCNetwork:
        config = dict(config)
        return AMRWCNetwork(encoder_from_config(config.pop("encoder_config")), **config)

    def min_input_frames(self, network_config: dict[str, Any]) -> int:
        """Samples the encoder needs for one frame (400 = 25 ms at 16 kHz for the wav2vec 2.0 CNN)."""
        return min_samples(config_from_dict(dict(network_config["encoder_config"])))

    def param_groups(self, model: SERModel) -> dict[str, list[nn.Parameter]]:
        return {"encoder": model.network.encoder_parameters(), "heads": model.network.head_parameters()}

    def set_frozen(self, model: SERModel, group: str, frozen: bool) -> None:
        if group != "encoder":
            super().set_frozen(model, group, frozen)
        model.network.set_encoder_frozen(frozen)

