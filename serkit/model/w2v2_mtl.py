"""W2V2-MTL: wav2vec 2.0 fine-tuned for emotion classification with an emotion-phoneme CTC task.

The network (Li et al. 2024; docs/models.md):

* wav2vec 2.0 encoder -> the ``L = num_hidden_layers + 1`` representations ``H_0 .. H_N``;
* layer fusion ``H_X = sum_i softmax(w)_i H_i`` with ``w`` a learnable vector initialised to zeros
  (so training starts from the plain average);
* emotion head: mean of ``H_X`` over the real frames -> linear -> logits (cross-entropy);
* phoneme head: the shared CTC head (:mod:`serkit.model.ctc_head`) over every frame of ``H_X``,
  added by :class:`~serkit.model.ser_model.SERModel` when ``mtl_lambda > 0``. Total loss
  ``L = CE + lambda * CTC``.

What ``H_0 .. H_N`` are, in Hugging Face terms: ``H_0`` is the input of the first Transformer layer,
i.e. the projected CNN features plus the convolutional positional embedding, after the encoder's
input LayerNorm (post-LN models such as wav2vec2-base) and dropout — the tensor HF reports as
``hidden_states[0]``. ``H_i`` is the output of Transformer layer ``i``; ``H_N`` is the encoder's
``last_hidden_state`` (for pre-LN "stable layer norm" models that includes the final LayerNorm).
When LayerDrop skips layer ``i`` during training, ``H_i = H_{i-1}`` (the skip is an identity), so the
fusion always sees exactly ``L`` tensors.

Padding never changes a result: every utterance is normalised over its own samples; when the CNN's
first layer uses GroupNorm over time (wav2vec2-base) it runs per utterance on the true length (on a
CPU) or batched with that GroupNorm's statistics over each utterance's real frames only (on a GPU,
see :data:`CNN_MODES`); the Transformer gets an attention mask, pooling covers real frames only and
CTC gets per-utterance frame counts.

The fusion is a running weighted sum built as the layers run (no stack of all ``L`` representations),
and given lengths checked on the CPU the training step reads no value back from the device
(tests/test_model.py runs it on the ``meta`` device to prove it).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from serkit.errors import SerkitError
from serkit.features.encoder import encoder_from_config, load_encoder, normalise_waveforms
from serkit.model.common import ModelInputError, length_mask, masked_mean
from serkit.model.family import ModelFamily
from serkit.model.ser_model import NetworkOutput, SERModel

logger = logging.getLogger(__name__)


class W2V2Network(nn.Module):
    """wav2vec 2.0 with layer fusion and an utterance-level emotion head; ``H_X`` per frame for a CTC head."""

    def __init__(self, encoder: Wav2Vec2Model, n_emotions: int, freeze_feature_encoder: bool = True,
                 cnn_mode: str = "auto"):
        super().__init__()
        if n_emotions < 2:
            raise ModelInputError(f"n_emotions must be at least 2, got {n_emotions}")
        self.cnn_mode = checked_cnn_mode(cnn_mode)  # a run-time choice (same features either way), not part of the config
        config = encoder.config
        self.encoder = encoder
        self.n_emotions = int(n_emotions)
        self.frame_dim = int(config.hidden_size)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self._encoder_frozen = False
        # w in the paper: zeros, so softmax(w) starts as the uniform average of the L representations.
        self.fusion_weights = nn.Parameter(torch.zeros(config.num_hidden_layers + 1))
        # final_dropout is the config's dropout "before the task heads" (as in Wav2Vec2ForCTC).
        self.head_dropout = nn.Dropout(config.final_dropout)
        self.emotion_head = nn.Linear(config.hidden_size, self.n_emotions)
        if self.freeze_feature_encoder:
            encoder.freeze_feature_encoder()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, source: str, n_emotions: int, freeze_feature_encoder: bool = True,
                        **config_overrides: Any) -> "W2V2Network":
        """Pretrained encoder (hub id or folder, see :func:`load_encoder`) + freshly initialised heads.

        Extra keyword arguments override the encoder's config (e.g. ``layerdrop=0.05``).
        """
        encoder = load_encoder(source, **config_overrides)
        return cls(encoder, n_emotions, freeze_feature_encoder=freeze_feature_encoder)

    @classmethod
    def from_encoder_config(cls, config_dict: dict[str, Any], n_emotions: int,
                            freeze_feature_encoder: bool = True) -> "W2V2Network":
        """Randomly initialised network of the right shape, to be filled with ``load_state_dict``."""
        return cls(encoder_from_config(config_dict), n_emotions, freeze_feature_encoder=freeze_feature_encoder)

    def config_dict(self) -> dict[str, Any]:
        """The plain data :meth:`from_encoder_config` needs (the network part of ``model_config.json``)."""
        return {"encoder_config": self.encoder.config.to_dict(), "n_emotions": self.n_emotions,
                "freeze_feature_encoder": self.freeze_feature_encoder}

    @property
    def num_layers(self) -> int:
        """L: the number of fused representations (Transformer layers + 1)."""
        return self.fusion_weights.numel()

    # ----------------------------------------------------------------------- parameters/freezing
    def _is_cnn(self, name: str) -> bool:
        return name.startswith("feature_extractor.")

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Encoder parameters that may be trained (the CNN is left out when it is frozen for good).

        Returned even while :meth:`set_encoder_frozen` holds them, so an optimizer built at the start
        covers them once they are released.
        """
        return [p for name, p in self.encoder.named_parameters()
                if not (self.freeze_feature_encoder and self._is_cnn(name))]

    def head_parameters(self) -> list[nn.Parameter]:
        """New parameters (fusion weights and the emotion head): they usually get a larger learning rate."""
        return [self.fusion_weights, *self.emotion_head.parameters()]

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (or release) the whole encoder, e.g. to train only the heads for the first N steps.

        Releasing keeps the CNN feature encoder frozen if the model was built with
        ``freeze_feature_encoder=True``.
        """
        self._encoder_frozen = bool(frozen)
        for name, param in self.encoder.named_parameters():
            param.requires_grad = not frozen and not (self.freeze_feature_encoder and self._is_cnn(name))

    # ------------------------------------------------------------------------------- forward
    def forward(self, wavs: Tensor, n_samples: Tensor) -> NetworkOutput:
        """Score a padded batch ``wavs`` [B, T] whose utterances have ``n_samples`` [B] real samples."""
        if wavs.dim() != 2:
            raise ModelInputError(f"wavs must be a [batch, samples] tensor of mono audio, got shape "
                                  f"{tuple(wavs.shape)}")
        # Normalised in float32, then given to the CNN in the encoder's own dtype (e.g. after .half()).
        wavs = normalise_waveforms(wavs, n_samples).to(self.fusion_weights.dtype)
        layer_weights = torch.softmax(self.fusion_weights.float(), dim=0)
        fusion_grad = torch.is_grad_enabled()  # the fusion weights learn even while the encoder is frozen
        with torch.set_grad_enabled(fusion_grad and not self._encoder_frozen):
            features, frame_lens = self._cnn_features(wavs, n_samples)
            hidden, _ = self.encoder.feature_projection(features)
            frame_mask = length_mask(frame_lens, hidden.shape[1])
            fused = self._fused_layers(hidden, frame_mask, layer_weights, fusion_grad)
        fused = self.head_dropout(fused)

        pooled = masked_mean(fused, frame_lens)
        return NetworkOutput(emo_logits=self.emotion_head(pooled), frame_features=fused, frame_lens=frame_lens,
                             fold_extras={"layer_weights": layer_weights})

    def _cnn_features(self, wavs: Tensor, n_samples: Tensor) -> tuple[Tensor, Tensor]:
        """CNN features [B, F, C] and real frame counts [B], independent of the padding.

        ``F`` is the frame count of the padded length (the longest utterance's when the batch is padded
        to it), so no frame count has to be read back from the device; frames past an utterance's
        own count are masked everywhere downstream. The length check reads ``n_samples`` only when it
        is already on the CPU (the trainer checks lengths there before moving a batch to a GPU).
        """
        frame_lens = self.encoder._get_feat_extract_output_lengths(n_samples).long()
        if n_samples.device.type == "cpu" and bool(torch.any(frame_lens < 1)):
            row = int(torch.argmin(frame_lens))
            raise ModelInputError(
                f"utterance {row} of the batch has {int(n_samples[row])} samples, fewer than the "
                f"{receptive_field(self.encoder.config)} the wav2vec 2.0 CNN needs for one frame "
                f"(25 ms at 16 kHz for base models); drop such utterances from the data (filter utt2dur)")
        grad = torch.is_grad_enabled() and not self.freeze_feature_encoder
        with torch.set_grad_enabled(grad):
            if self.encoder.config.feat_extract_norm != "group":
                # Per-frame normalisation only: frames inside the true length never see the padding.
                features = self.encoder.feature_extractor(wavs)
            elif self._cnn_mode(wavs) == "batched":
                features = masked_group_norm_cnn(self.encoder.feature_extractor, wavs, n_samples)
            else:
                features = per_utterance_cnn(self.encoder.feature_extractor, wavs, n_samples)
        return features.transpose(1, 2), frame_lens

    def _cnn_mode(self, wavs: Tensor) -> str:
        """``batched`` or ``per_utterance`` for a GroupNorm CNN (see :data:`CNN_MODES`)."""
        if self.cnn_mode != "auto":
            return self.cnn_mode
        return "per_utterance" if wavs.device.type == "cpu" else "batched"

    def _fused_layers(self, hidden: Tensor, frame_mask: Tensor, layer_weights: Tensor, grad: bool) -> Tensor:
        """``H_X = sum_i layer_weights[i] H_i`` from one pass of the Transformer (see the module docstring).

        A running weighted sum kept by forward hooks: no stack of all ``L`` representations is built
        (it held ``L`` more [B, F, D] tensors, and their gradients, than the encoder itself needs).
        A layer that LayerDrop skipped contributes its weight times the previous representation.
        The sum is built with autograd on when ``grad`` is, also inside a frozen encoder's no-grad pass.
        """
        transformer = self.encoder.encoder
        n_layers = len(transformer.layers)
        running = _RunningSum(layer_weights)

        def recorder(index: int):
            def hook(_module, _inputs, output):
                with torch.set_grad_enabled(grad):
                    running.add(index, output[0] if isinstance(output, tuple) else output)
            return hook

        # Temporary hooks: the dropout closing the input block yields H_0, each layer its H_i; H_N is
        # the encoder's output itself (it includes the final LayerNorm of pre-LN models).
        handles = [transformer.dropout.register_forward_hook(recorder(0))]
        handles += [layer.register_forward_hook(recorder(i + 1)) for i, layer in enumerate(transformer.layers[:-1])]
        try:
            last = transformer(hidden, attention_mask=frame_mask)[0]
        finally:
            for handle in handles:
                handle.remove()
        if running.next_index == 0:
            raise SerkitError("the installed transformers' Wav2Vec2 encoder no longer applies `dropout` to "
                              "the Transformer input; serkit cannot locate H_0 — report this with your "
                              "transformers version")
        with torch.set_grad_enabled(grad):
            running.add(n_layers, last)
        return running.total


class _RunningSum:
    """``sum_i w[i] H_i`` accumulated as the ``H_i`` arrive in order; indices that never arrive (layers
    LayerDrop skipped) repeat the representation before them."""

    def __init__(self, weights: Tensor):
        self.weights = weights
        self.total: Tensor | None = None
        self.previous: Tensor | None = None
        self.next_index = 0

    def add(self, index: int, state: Tensor) -> None:
        weights = self.weights.to(state.dtype)
        if index > self.next_index:  # skipped layers: H_i = H_{i-1}
            self._accumulate(weights[self.next_index:index].sum() * self.previous)
        self._accumulate(weights[index] * state)
        self.previous, self.next_index = state, index + 1

    def _accumulate(self, term: Tensor) -> None:
        self.total = term if self.total is None else self.total + term


# ----------------------------------------------------------------------------------- helpers
CNN_MODES = ("auto", "batched", "per_utterance")
"""How a CNN whose first layer uses GroupNorm over time (wav2vec2-base) meets padding: ``per_utterance``
runs each utterance alone on its true length (skips the padding's compute: the faster path on a CPU);
``batched`` runs one call on the whole batch with that GroupNorm's statistics taken over each utterance's
real frames only (one large kernel per layer and no host sync: the faster path on a GPU); ``auto`` picks
per device. Both give the same features (tests/test_model.py)."""


def checked_cnn_mode(mode) -> str:
    """``mode`` if it is one of :data:`CNN_MODES`, else a clear error."""
    if mode not in CNN_MODES:
        raise ModelInputError(f"cnn_mode must be one of {', '.join(CNN_MODES)}, got {mode!r}")
    return mode


def per_utterance_cnn(cnn: nn.Module, wavs: Tensor, n_samples: Tensor) -> Tensor:
    """The CNN's output [B, C, F] with each utterance run alone on its true length (zero-padded after)."""
    n_frames = int(conv_output_length(cnn, wavs.shape[1]))
    rows = [cnn(wavs[i:i + 1, :n])[0] for i, n in enumerate(n_samples.tolist())]
    out = wavs.new_zeros(len(rows), rows[0].shape[0], n_frames, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, :, :row.shape[1]] = row
    return out


def masked_group_norm_cnn(cnn: nn.Module, wavs: Tensor, n_samples: Tensor) -> Tensor:
    """The CNN's output [B, C, F] in one batched call; the first layer's GroupNorm uses real frames only.

    Every later layer is a plain (valid) convolution, so a frame inside an utterance's true length
    sees only that utterance's real samples: normalising the first layer over the real frames is all it
    takes to give each utterance exactly the features it gets alone.
    """
    first, *rest = cnn.conv_layers
    x = first.conv(wavs.unsqueeze(1))  # [B, C, T0]
    lens = conv_output_length(first.conv, n_samples)
    x = first.activation(masked_group_norm(x, lens, first.layer_norm))
    for layer in rest:
        x = layer(x)
    return x


def masked_group_norm(x: Tensor, lens: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm(x)`` [B, C, T] with each utterance's statistics over its first ``lens[b]`` frames only."""
    batch, channels, frames = x.shape
    groups = norm.num_groups
    xg = x.float().reshape(batch, groups, channels // groups, frames)
    keep = length_mask(lens, frames).view(batch, 1, 1, frames)
    count = (lens * (channels // groups)).to(xg.dtype).view(batch, 1, 1, 1)
    mean = torch.where(keep, xg, 0.0).sum(dim=(2, 3), keepdim=True) / count
    centred = xg - mean
    var = torch.where(keep, centred.square(), 0.0).sum(dim=(2, 3), keepdim=True) / count
    normed = (centred * torch.rsqrt(var + norm.eps)).reshape(batch, channels, frames)
    if norm.affine:
        normed = normed * norm.weight.float().view(1, -1, 1) + norm.bias.float().view(1, -1, 1)
    return normed


def conv_output_length(module: nn.Module, n_samples):
    """Output frames of a valid 1-D convolution (or of a stack of them: an HF feature encoder)."""
    convs = [layer.conv for layer in module.conv_layers] if hasattr(module, "conv_layers") else [module]
    length = n_samples
    for conv in convs:
        length = (length - conv.kernel_size[0]) // conv.stride[0] + 1
    return length


def receptive_field(config) -> int:
    """Samples the CNN needs to emit one frame (400 for the standard 7-layer wav2vec 2.0 CNN)."""
    field = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        field = (field - 1) * stride + kernel
    return field


# ----------------------------------------------------------------------------------- the family
class W2V2MTLFamily(ModelFamily):
    """W2V2-MTL (Li et al. 2024): a pretrained wav2vec 2.0 fine-tuned with layer fusion; ``mtl_lambda``
    switches on the emotion-phoneme CTC head over the fused frames.

    Two parameter groups: ``encoder`` (the pretrained Transformer, and the CNN unless frozen) and
    ``heads`` (fusion weights, emotion head and the CTC head), each with its own optimizer, so each gets
    its own learning rate and gradient clipping; the encoder can be held still for the first steps.
    """

    name = "w2v2_mtl"
    options = ("mtl_lambda",)
    normalise_input = False  # the network normalises each waveform itself (as wav2vec 2.0 expects)

    def feature(self, hparams: dict) -> dict[str, Any]:
        return {"kind": "waveform", "sample_rate": int(hparams["sample_rate"])}

    def build_network(self, hparams: dict, n_classes: int, input_dims: tuple[int, ...]) -> W2V2Network:
        network = W2V2Network.from_pretrained(hparams["encoder_source"], n_emotions=n_classes,
                                              freeze_feature_encoder=bool(hparams["freeze_feature_encoder"]))
        network.cnn_mode = checked_cnn_mode(hparams.get("cnn_mode", "auto"))
        return network

    def network_config(self, network: W2V2Network) -> dict[str, Any]:
        return network.config_dict()

    def network_from_config(self, config: dict[str, Any]) -> W2V2Network:
        return W2V2Network.from_encoder_config(config["encoder_config"], n_emotions=int(config["n_emotions"]),
                                               freeze_feature_encoder=bool(config.get("freeze_feature_encoder", True)))

    def min_input_frames(self, network_config: dict[str, Any]) -> int:
        """Samples the CNN needs for one frame (400 = 25 ms at 16 kHz for base models)."""
        return receptive_field(Wav2Vec2Config.from_dict(dict(network_config["encoder_config"])))

    def param_groups(self, model: SERModel) -> dict[str, list[nn.Parameter]]:
        return {"encoder": list(model.network.encoder_parameters()), "heads": list(model.network.head_parameters())}

    def set_frozen(self, model: SERModel, group: str, frozen: bool) -> None:
        if group != "encoder":
            super().set_frozen(model, group, frozen)
        model.network.set_encoder_frozen(frozen)
