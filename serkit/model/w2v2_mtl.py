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

Padding never changes a result: every utterance is normalised over its own samples, the CNN is run
per utterance on its true length when its first layer uses GroupNorm over time (wav2vec2-base), the
Transformer gets an attention mask, pooling covers real frames only and CTC gets per-utterance frame
counts.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from transformers import Wav2Vec2Config, Wav2Vec2Model

from serkit.errors import SerkitError
from serkit.model.common import ModelInputError, length_mask
from serkit.model.encoder import encoder_from_config, load_encoder
from serkit.model.family import ModelFamily
from serkit.model.ser_model import NetworkOutput, SERModel

logger = logging.getLogger(__name__)


class W2V2Network(nn.Module):
    """wav2vec 2.0 with layer fusion and an utterance-level emotion head; ``H_X`` per frame for a CTC head."""

    def __init__(self, encoder: Wav2Vec2Model, n_emotions: int, freeze_feature_encoder: bool = True):
        super().__init__()
        if n_emotions < 2:
            raise ModelInputError(f"n_emotions must be at least 2, got {n_emotions}")
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
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._encoder_frozen):
            features, frame_lens = self._cnn_features(wavs, n_samples)
            hidden, _ = self.encoder.feature_projection(features)
            frame_mask = length_mask(frame_lens, hidden.shape[1])
            states = self._transformer_states(hidden, frame_mask)

        layer_weights = torch.softmax(self.fusion_weights.float(), dim=0)
        fused = torch.einsum("l,lbfd->bfd", layer_weights.to(states[0].dtype), torch.stack(states))
        fused = self.head_dropout(fused)

        # Mean over real frames only; torch.where (not a product) so padded garbage cannot leak in.
        keep = frame_mask.unsqueeze(-1)
        pooled = torch.where(keep, fused, torch.zeros_like(fused)).sum(dim=1)
        pooled = pooled / frame_lens.to(pooled.dtype).unsqueeze(-1)
        return NetworkOutput(emo_logits=self.emotion_head(pooled), frame_features=fused, frame_lens=frame_lens,
                             fold_extras={"layer_weights": layer_weights})

    def _cnn_features(self, wavs: Tensor, n_samples: Tensor) -> tuple[Tensor, Tensor]:
        """CNN features [B, F, C] and real frame counts [B], independent of the padding."""
        frame_lens = self.encoder._get_feat_extract_output_lengths(n_samples).long()
        if bool(torch.any(frame_lens < 1)):
            row = int(torch.argmin(frame_lens))
            raise ModelInputError(
                f"utterance {row} of the batch has {int(n_samples[row])} samples, fewer than the "
                f"{receptive_field(self.encoder.config)} the wav2vec 2.0 CNN needs for one frame "
                f"(25 ms at 16 kHz for base models); drop such utterances from the data (filter utt2dur)")
        n_frames = int(frame_lens.max())
        cnn = self.encoder.feature_extractor
        grad = torch.is_grad_enabled() and not self.freeze_feature_encoder
        with torch.set_grad_enabled(grad):
            ragged = bool(torch.any(n_samples != wavs.shape[1]))
            if self.encoder.config.feat_extract_norm == "group" and ragged:
                # GroupNorm over time would mix zero padding into the statistics: one utterance at a time.
                rows = [cnn(wavs[i:i + 1, :n]).transpose(1, 2)[0] for i, n in enumerate(n_samples.tolist())]
                features = pad_sequence(rows, batch_first=True)
            else:
                # Per-frame normalisation only: frames inside the true length never see the padding.
                features = cnn(wavs).transpose(1, 2)
        return features[:, :n_frames], frame_lens

    def _transformer_states(self, hidden: Tensor, frame_mask: Tensor) -> list[Tensor]:
        """``[H_0, ..., H_N]`` from one pass of the Transformer (see the module docstring)."""
        transformer = self.encoder.encoder
        captured: dict[int, Tensor] = {}

        def recorder(index: int):
            def hook(_module, _inputs, output):
                captured[index] = output[0] if isinstance(output, tuple) else output
            return hook

        # Temporary hooks: the dropout closing the input block yields H_0, each layer its H_i.
        handles = [transformer.dropout.register_forward_hook(recorder(0))]
        handles += [layer.register_forward_hook(recorder(i + 1)) for i, layer in enumerate(transformer.layers)]
        try:
            last = transformer(hidden, attention_mask=frame_mask)[0]
        finally:
            for handle in handles:
                handle.remove()
        if 0 not in captured:
            raise SerkitError("the installed transformers' Wav2Vec2 encoder no longer applies `dropout` to "
                              "the Transformer input; serkit cannot locate H_0 — report this with your "
                              "transformers version")
        states = [captured[0]]
        for i in range(1, len(transformer.layers) + 1):
            states.append(captured.get(i, states[-1]))  # LayerDrop skipped layer i: identity
        states[-1] = last
        return states


# ----------------------------------------------------------------------------------- helpers
def normalise_waveforms(wavs: Tensor, n_samples: Tensor, eps: float = 1e-7) -> Tensor:
    """Zero mean, unit variance per utterance over its real samples; padding set to 0.

    Matches ``Wav2Vec2FeatureExtractor(do_normalize=True)``, the input the wav2vec2-base family's
    feature extractor produces, but computed on the true length so padding cannot shift it.
    """
    mask = length_mask(n_samples, wavs.shape[1])
    x = torch.where(mask, wavs.float(), torch.zeros((), device=wavs.device))
    count = n_samples.to(x.dtype).unsqueeze(1)
    mean = x.sum(dim=1, keepdim=True) / count
    centred = torch.where(mask, x - mean, torch.zeros((), device=wavs.device))
    var = centred.pow(2).sum(dim=1, keepdim=True) / count
    return centred / torch.sqrt(var + eps)


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
        return W2V2Network.from_pretrained(hparams["encoder_source"], n_emotions=n_classes,
                                           freeze_feature_encoder=bool(hparams["freeze_feature_encoder"]))

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
