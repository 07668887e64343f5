"""W2V2-MTL: a self-supervised encoder fine-tuned for emotion classification with an emotion-phoneme CTC task.

The network (Li et al. 2024, with wav2vec 2.0; docs/models.md). The encoder is any of
:data:`serkit.features.encoder.ENCODER_TYPES` (wav2vec 2.0, HuBERT, WavLM, data2vec-audio, Whisper's
encoder), chosen by the config's ``encoder_source`` (and ``encoder_type`` where its config.json does
not say); the family keeps its paper's name.

* encoder -> the ``L = Transformer layers + 1`` representations ``H_0 .. H_N``;
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
fusion always sees exactly ``L`` tensors. HuBERT, WavLM and data2vec-audio have wav2vec 2.0's layout
(CNN, projection, Transformer) and run through the same code; Whisper's encoder runs through
:func:`serkit.features.whisper_encoder.run_layers` (log-Mel front end, no padding to 30 s), and
``freeze_feature_encoder`` then holds its two input convolutions still.

Padding never changes a result: every utterance is normalised over its own samples (when its
feature extractor normalises: ``do_normalize``); when the CNN's
first layer uses GroupNorm over time (wav2vec2-base) it runs per utterance on the true length (on a
CPU) or batched with that GroupNorm's statistics over each utterance's real frames only (on a GPU,
see :data:`CNN_MODES`); the Transformer gets an attention mask, pooling covers real frames only and
CTC gets per-utterance frame counts.

The fusion is a running weighted sum built as the layers run (no stack of all ``L`` representations),
and given lengths checked on the CPU the training step reads no value back from the device
(tests/test_model.py runs it on the ``meta`` device to prove it). Whisper's encoder is the exception:
its log-Mel is computed per utterance on its true length, which reads the lengths once per batch.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from serkit.errors import SerkitError
from serkit.features import whisper_encoder
from serkit.features.encoder import (check_sample_rate, config_from_dict, encoder_from_config, fixed_prefixes,
                                     frame_lens, front_end_prefixes, hidden_size, is_whisper, load_encoder,
                                     min_samples, n_states, padding_free_positions, project_features,
                                     waveform_input)
from serkit.model.common import ModelInputError, length_mask, masked_mean
from serkit.model.family import ModelFamily
from serkit.model.ser_model import NetworkOutput, SERModel

logger = logging.getLogger(__name__)


class W2V2Network(nn.Module):
    """An SSL encoder with layer fusion and an utterance-level emotion head; ``H_X`` per frame for a CTC head."""

    def __init__(self, encoder: PreTrainedModel, n_emotions: int, freeze_feature_encoder: bool = True,
                 cnn_mode: str = "auto"):
        super().__init__()
        if n_emotions < 2:
            raise ModelInputError(f"n_emotions must be at least 2, got {n_emotions}")
        self.cnn_mode = checked_cnn_mode(cnn_mode)  # a run-time choice (same features either way), not part of the config
        config = encoder.config
        self.encoder = encoder
        self.n_emotions = int(n_emotions)
        self.frame_dim = hidden_size(encoder)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self._encoder_frozen = False
        # w in the paper: zeros, so softmax(w) starts as the uniform average of the L representations.
        self.fusion_weights = nn.Parameter(torch.zeros(n_states(encoder)))
        # final_dropout is the config's dropout "before the task heads" (as in Wav2Vec2ForCTC); Whisper's
        # config has none, so its own `dropout` is used.
        self.head_dropout = nn.Dropout(getattr(config, "final_dropout", getattr(config, "dropout", 0.0)))
        self.emotion_head = nn.Linear(self.frame_dim, self.n_emotions)
        self.set_encoder_frozen(False)  # holds the front end still if asked (see _trainable)
        if self.freeze_feature_encoder:
            if hasattr(encoder, "freeze_feature_encoder"):
                encoder.freeze_feature_encoder()  # also stops transformers asking for its input's gradient

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, source: str, n_emotions: int, freeze_feature_encoder: bool = True,
                        encoder_type: str | None = None, **config_overrides: Any) -> "W2V2Network":
        """Pretrained encoder (hub id or folder, see :func:`load_encoder`) + freshly initialised heads.

        Extra keyword arguments override the encoder's config (e.g. ``layerdrop=0.05``).
        """
        encoder = load_encoder(source, encoder_type, **config_overrides)
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
        return name.startswith(front_end_prefixes(self.encoder))

    def _trainable(self, name: str) -> bool:
        """Whether fine-tuning may train this encoder parameter: not a held front end, nor one the
        encoder never trains (Whisper's sinusoidal positions)."""
        held = self.freeze_feature_encoder and self._is_cnn(name)
        return not held and not name.startswith(fixed_prefixes(self.encoder))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Encoder parameters that may be trained (the CNN is left out when it is frozen for good).

        Returned even while :meth:`set_encoder_frozen` holds them, so an optimizer built at the start
        covers them once they are released.
        """
        return [p for name, p in self.encoder.named_parameters() if self._trainable(name)]

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
            param.requires_grad = not frozen and self._trainable(name)

    # ------------------------------------------------------------------------------- forward
    def forward(self, wavs: Tensor, n_samples: Tensor) -> NetworkOutput:
        """Score a padded batch ``wavs`` [B, T] whose utterances have ``n_samples`` [B] real samples."""
        if wavs.dim() != 2:
            raise ModelInputError(f"wavs must be a [batch, samples] tensor of mono audio, got shape "
                                  f"{tuple(wavs.shape)}")
        layer_weights = torch.softmax(self.fusion_weights.float(), dim=0)
        fusion_grad = torch.is_grad_enabled()  # the fusion weights learn even while the encoder is frozen
        lens = self._frame_lens(n_samples)
        with torch.set_grad_enabled(fusion_grad and not self._encoder_frozen):
            if is_whisper(self.encoder):
                fused = self._whisper_fused(wavs, n_samples, layer_weights, fusion_grad)
            else:
                # Normalised in float32, then given to the CNN in the encoder's own dtype (e.g. after .half()).
                wavs = waveform_input(self.encoder, wavs, n_samples).to(self.fusion_weights.dtype)
                features = self._cnn_features(wavs, n_samples)
                hidden = project_features(self.encoder, features)
                fused = self._fused_layers(hidden, length_mask(lens, hidden.shape[1]), layer_weights, fusion_grad)
        fused = self.head_dropout(fused)

        pooled = masked_mean(fused, lens)
        return NetworkOutput(emo_logits=self.emotion_head(pooled), frame_features=fused, frame_lens=lens,
                             fold_extras={"layer_weights": layer_weights})

    def _frame_lens(self, n_samples: Tensor) -> Tensor:
        """Real frames [B]; the length check reads ``n_samples`` only when it is already on the CPU (the
        trainer checks lengths there before moving a batch to a GPU)."""
        lens = frame_lens(self.encoder, n_samples)
        if n_samples.device.type == "cpu" and bool(torch.any(lens < 1)):
            row = int(torch.argmin(lens))
            raise ModelInputError(
                f"utterance {row} of the batch has {int(n_samples[row])} samples, fewer than the "
                f"{min_samples(self.encoder.config)} the encoder needs for one frame "
                f"(25 ms at 16 kHz for the wav2vec 2.0 CNN); drop such utterances from the data (filter utt2dur)")
        return lens

    def _whisper_fused(self, wavs: Tensor, n_samples: Tensor, layer_weights: Tensor, grad: bool) -> Tensor:
        """``H_X`` of Whisper's encoder (the running sum of :meth:`_fused_layers`, fed by its own pass)."""
        running = _RunningSum(layer_weights)

        def on_state(index: int, state: Tensor) -> None:
            with torch.set_grad_enabled(grad):
                running.add(index, state)

        whisper_encoder.run_layers(self.encoder, wavs.to(self.fusion_weights.dtype), n_samples, on_state)
        return running.total

    def _cnn_features(self, wavs: Tensor, n_samples: Tensor) -> Tensor:
        """CNN features [B, F, C], independent of the padding.

        ``F`` is the frame count of the padded length (the longest utterance's when the batch is padded
        to it), so no frame count has to be read back from the device; frames past an utterance's
        own count are masked everywhere downstream.
        """
        grad = torch.is_grad_enabled() and not self.freeze_feature_encoder
        with torch.set_grad_enabled(grad):
            # data2vec-audio has no feat_extract_norm: a LayerNorm in every CNN layer, per frame.
            if getattr(self.encoder.config, "feat_extract_norm", "layer") != "group":
                # Per-frame normalisation only: frames inside the true length never see the padding.
                features = self.encoder.feature_extractor(wavs)
            elif self._cnn_mode(wavs) == "batched":
                features = masked_group_norm_cnn(self.encoder.feature_extractor, wavs, n_samples)
            else:
                features = per_utterance_cnn(self.encoder.feature_extractor, wavs, n_samples)
        return features.transpose(1, 2)

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
            with padding_free_positions(self.encoder, frame_mask):
                last = transformer(hidden, attention_mask=frame_mask)[0]
        finally:
            for handle in handles:
                handle.remove()
        if running.next_index == 0:
            raise SerkitError("the installed transformers' encoder no longer applies `dropout` to "
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
    """Samples the encoder needs to emit one frame (400 for the standard 7-layer wav2vec 2.0 CNN); any
    encoder type's config (:func:`serkit.features.encoder.min_samples`)."""
    return min_samples(config)


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
                                              freeze_feature_encoder=bool(hparams["freeze_feature_encoder"]),
                                              encoder_type=hparams.get("encoder_type"))
        check_sample_rate(network.encoder, int(hparams["sample_rate"]), hparams["encoder_source"])
        network.cnn_mode = checked_cnn_mode(hparams.get("cnn_mode", "auto"))
        return network

    def network_config(self, network: W2V2Network) -> dict[str, Any]:
        return network.config_dict()

    def network_from_config(self, config: dict[str, Any]) -> W2V2Network:
        return W2V2Network.from_encoder_config(config["encoder_config"], n_emotions=int(config["n_emotions"]),
                                               freeze_feature_encoder=bool(config.get("freeze_feature_encoder", True)))

    def min_input_frames(self, network_config: dict[str, Any]) -> int:
        """Samples the encoder needs for one frame (400 = 25 ms at 16 kHz for the wav2vec 2.0 CNN)."""
        return min_samples(config_from_dict(dict(network_config["encoder_config"])))

    def param_groups(self, model: SERModel) -> dict[str, list[nn.Parameter]]:
        return {"encoder": list(model.network.encoder_parameters()), "heads": list(model.network.head_parameters())}

    def set_frozen(self, model: SERModel, group: str, frozen: bool) -> None:
        if group != "encoder":
            super().set_frozen(model, group, frozen)
        model.network.set_encoder_frozen(frozen)
