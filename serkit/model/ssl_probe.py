"""SSL probe: a layer-weighted linear probe over the hidden states of a *frozen* SSL encoder (wav2vec 2.0,
HuBERT, WavLM, data2vec-audio or Whisper's encoder: :data:`serkit.features.encoder.ENCODER_TYPES`).

The s3prl/EmoBox protocol (Yang et al. 2021, SUPERB; Ma et al. 2024, EmoBox): the pretrained encoder is
not trained, only a softmax-weighted sum of its ``L = N + 1`` hidden states, mean-pooled over the real
frames and classified by a linear layer. The network is W2V2-MTL's head (:mod:`serkit.model.w2v2_mtl`)
without the encoder:

* input: ``H_0 .. H_N`` per frame, the ``ssl_layers`` feature (:mod:`serkit.features.ssl_layers`), computed once
  per utterance and read from the feature cache, so an epoch costs only this head;
* fusion ``H_X = sum_i softmax(w)_i H_i`` with ``w`` initialised to zeros (the plain average first);
* dropout, then the mean of ``H_X`` over the real frames -> linear -> emotion logits;
* ``H_X`` per frame for the shared CTC head when ``mtl_lambda > 0``.

With the same encoder, fusion weights and emotion head, a W2V2-MTL network whose encoder is frozen
gives the same posteriors (up to the float16 of the cached layers; tested), so a probe is exactly
"W2V2-MTL with the encoder held still", trained in a fraction of the time (docs/models.md).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from serkit.features import make_feature
from serkit.model.common import ModelInputError, masked_mean
from serkit.model.family import ModelFamily
from serkit.model.ser_model import NetworkOutput


class SSLProbeNetwork(nn.Module):
    """Softmax layer weights -> dropout -> masked mean over frames -> linear, over [B, F, L, D] layers."""

    def __init__(self, n_layers: int, hidden_size: int, n_emotions: int, dropout: float = 0.1):
        super().__init__()
        if n_emotions < 2:
            raise ModelInputError(f"n_emotions must be at least 2, got {n_emotions}")
        self.n_layers, self.frame_dim, self.n_emotions = int(n_layers), int(hidden_size), int(n_emotions)
        self.dropout_p = float(dropout)
        self.fusion_weights = nn.Parameter(torch.zeros(self.n_layers))  # zeros: start from the average
        self.dropout = nn.Dropout(self.dropout_p)
        self.emotion_head = nn.Linear(self.frame_dim, self.n_emotions)

    def config_dict(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "hidden_size": self.frame_dim, "n_emotions": self.n_emotions,
                "dropout": self.dropout_p}

    def forward(self, layers: Tensor, frame_lens: Tensor) -> NetworkOutput:
        """Score padded hidden states ``layers`` [B, F, L, D] (any float dtype) with ``frame_lens`` [B] real frames."""
        if layers.dim() != 4 or tuple(layers.shape[2:]) != (self.n_layers, self.frame_dim):
            raise ModelInputError(f"expected ssl_layers [batch, frames, {self.n_layers}, {self.frame_dim}], got "
                                  f"{tuple(layers.shape)}; the cache holds another encoder's layers (check the "
                                  "feature spec's source)")
        layer_weights = torch.softmax(self.fusion_weights.float(), dim=0)
        fused = torch.einsum("l,bfld->bfd", layer_weights, layers.float())
        fused = self.dropout(fused)
        pooled = masked_mean(fused, frame_lens)
        return NetworkOutput(emo_logits=self.emotion_head(pooled), frame_features=fused, frame_lens=frame_lens,
                             fold_extras={"layer_weights": layer_weights})


class SSLProbeFamily(ModelFamily):
    """The frozen-encoder probe: input ``ssl_layers`` of ``encoder_source``, trained head only.

    One parameter group, ``model`` (fusion weights and the emotion head; the CTC head joins it). The
    layers are not normalised with training statistics: the weights act on the encoder's own outputs,
    as in s3prl, so the probe equals W2V2-MTL's head on a frozen encoder.
    """

    name = "ssl_probe"
    options = ("mtl_lambda",)
    normalise_input = False

    def feature(self, hparams: dict) -> dict[str, Any]:
        """The bound spec (absolute source, weights digest): model_config.json and exports record the encoder."""
        params = {"source": str(hparams["encoder_source"]), "encoder_type": hparams.get("encoder_type")}
        return make_feature("ssl_layers", int(hparams["sample_rate"]), params).to_dict()

    def build_network(self, hparams: dict, n_classes: int, input_dims: tuple[int, ...]) -> SSLProbeNetwork:
        if len(input_dims) != 2:
            raise ModelInputError(f"ssl_probe needs [frames, L, D] inputs (the ssl_layers feature), got frames of "
                                  f"shape {input_dims}")
        return SSLProbeNetwork(input_dims[0], input_dims[1], n_classes, dropout=float(hparams.get("dropout", 0.1)))

    def network_config(self, network: SSLProbeNetwork) -> dict[str, Any]:
        return network.config_dict()

    def network_from_config(self, config: dict[str, Any]) -> SSLProbeNetwork:
        return SSLProbeNetwork(**config)
