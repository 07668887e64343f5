"""Multi-level SER: wav2vec 2.0, spectrogram-AlexNet and MFCC-BiLSTM levels fused by attention, with
the gender prior (MF), one auxiliary classifier per level (MTL) and a centre loss (CR) as options
(seed paper 000; docs/models.md).

The three levels of one (3-s) segment:

* ``x'_w``: wav2vec 2.0 (:class:`~serkit.model.w2v2_mtl.W2V2Network`: the encoder's layers fused,
  mean over the real frames), dimension ``D``;
* ``x'_s = f_s(AlexNet(spectrogram))``: the log-Mel spectrogram with its deltas as a 3-channel image
  through :class:`AlexNet` (torchvision's layers, so its ImageNet weights load), then a linear map to ``D/2``;
* ``x'_m = f_m(BiLSTM(MFCC))``: the BiLSTM's last forward and first backward states, a linear map to ``D/2``.

Fusion (the paper's eq. 5): ``x = softmax([x'_m; x'_s]) * x'_w`` (element-wise), then dropout and a
linear emotion classifier. ours: the attention weights are multiplied by ``D`` (they average 1, not
``1/D``), so ``x`` keeps the scale of ``x'_w``: the same fusion up to a constant, but without it the
classifier and the centre loss see vectors ``D`` times smaller and learn that much slower. MF concatenates the gender one-hot to ``x`` before that classifier:
:mod:`serkit.targets.gender`'s input prior does exactly that for a linear classifier (``gender_prior``),
and its head (``gender_weight``) predicts the gender from ``x`` at inference. MTL adds a classifier per
level, ``L_MTL = level_weight * sum_i CE_i`` (``level_weight`` = the paper's equal ``w_i``; 0: none built).
CR adds ``centre_weight * L_c`` on ``x`` (:mod:`serkit.model.centre_loss`, centres moved by ``centre_alpha``).

Every level ignores batch padding: wav2vec 2.0 as W2V2-MTL does, the BiLSTM through packed sequences and
AlexNet run on each utterance's own frames (zero-padded to its smallest input, :data:`ALEXNET_MIN_SIZE`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from serkit.errors import SerkitError
from serkit.features.encoder import check_sample_rate, hub_offline
from serkit.model.centre_loss import Centres, centre_loss
from serkit.model.common import masked_mean
from serkit.model.family import ModelFamily
from serkit.model.ser_model import NetworkOutput, SERModel
from serkit.model.w2v2_mtl import W2V2MTLFamily, W2V2Network, checked_cnn_mode

LEVELS = ("w2v2", "spec", "mfcc")
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)  # torchvision's AlexNet
ALEXNET_HIDDEN = 4096
ALEXNET_MIN_SIZE = 63  # the smallest height and width the three max-pools leave one pixel of
# torchvision's ImageNet weights of AlexNet (the "imagenet" source): fetched once into torch's hub cache
ALEXNET_IMAGENET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


class AlexNetWeightsError(SerkitError):
    """AlexNet's pretrained weights could not be found or do not fit the network."""


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al. 2012) as torchvision builds it, under torchvision's parameter names
    (``features.N``, ``classifier.N``), so its state dict loads; the 1000-class ImageNet layer
    (``classifier.6``) is left out: the network ends in its ``hidden``-d penultimate layer."""

    def __init__(self, channels: tuple[int, ...] = ALEXNET_CHANNELS, hidden: int = ALEXNET_HIDDEN,
                 dropout: float = 0.5):
        super().__init__()
        c1, c2, c3, c4, c5 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(c5 * 36, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.out_dim = int(hidden)

    def forward(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] (H, W >= :data:`ALEXNET_MIN_SIZE`) -> [B, hidden]."""
        return self.classifier(torch.flatten(self.avgpool(self.features(images)), 1))


def load_alexnet_weights(network: AlexNet, source: str) -> None:
    """Fill ``network`` with pretrained weights: ``source`` is a local torchvision-format state dict
    (``.pth``) or ``imagenet`` (torchvision's ImageNet weights, from torch's hub cache or downloaded
    there; with ``HF_HUB_OFFLINE=1`` only the cache is read)."""
    how = ("To provide them: on a machine with internet run `python -c \"import torch; "
           f"torch.hub.load_state_dict_from_url('{ALEXNET_IMAGENET_URL}')\"` (it fills torch's hub cache, "
           "$TORCH_HOME/hub/checkpoints; copy that file here) and point `alexnet_weights` at the file, or set "
           "`alexnet_weights: null` to train AlexNet from scratch (docs/models.md, \"Multi-level\")")
    if source == "imagenet":
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(ALEXNET_IMAGENET_URL).name
        if not cached.is_file() and hub_offline():
            raise AlexNetWeightsError(f"AlexNet weights 'imagenet': not in torch's hub cache ({cached}) and "
                                      f"HF_HUB_OFFLINE is set. {how}")
        try:
            state = torch.hub.load_state_dict_from_url(ALEXNET_IMAGENET_URL, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as error:
            raise AlexNetWeightsError(f"AlexNet weights 'imagenet' could not be fetched ({error}). {how}") from None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise AlexNetWeightsError(f"AlexNet weights {source}: no such file. {how}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickled code is refused by weights_only, a broken file by the unpickler
            raise AlexNetWeightsError(f"AlexNet weights {source}: not a plain state dict ({error}). {how}") from None
    state = {name: tensor for name, tensor in dict(state).items() if not name.startswith("classifier.6.")}
    own = network.state_dict()
    wrong = sorted(set(own) ^ set(state)) or [name for name in own if own[name].shape != state[name].shape]
    if wrong:
        raise AlexNetWeightsError(f"AlexNet weights {source}: parameters {', '.join(wrong[:4])} do not fit torchvision's "
                                  f"AlexNet with channels {list(ALEXNET_CHANNELS)} and hidden {ALEXNET_HIDDEN} (the "
                                  f"config's alexnet settings must be torchvision's to load them). {how}")
    network.load_state_dict(state)


class MultiLevelNetwork(nn.Module):
    """The three levels, the attention fusion, the emotion classifier and the options' extra parts."""

    def __init__(self, w2v2: W2V2Network, n_mels: int, n_mfcc: int, n_classes: int,
                 alexnet_channels: tuple[int, ...] = ALEXNET_CHANNELS, alexnet_hidden: int = ALEXNET_HIDDEN,
                 lstm_hidden: int = 256, dropout: float = 0.5, level_heads: bool = False, centres: bool = False):
        super().__init__()
        self.w2v2 = w2v2
        dim = w2v2.frame_dim
        if dim % 2:
            raise SerkitError(f"the multi-level fusion splits the wav2vec 2.0 dimension in two halves; {dim} is odd")
        self.n_mels, self.n_mfcc, self.n_classes = int(n_mels), int(n_mfcc), int(n_classes)
        self.alexnet = AlexNet(tuple(alexnet_channels), alexnet_hidden, dropout)
        self.spec_proj = nn.Linear(self.alexnet.out_dim, dim // 2)  # f_s
        self.lstm = nn.LSTM(self.n_mfcc, int(lstm_hidden), batch_first=True, bidirectional=True)
        self.mfcc_proj = nn.Linear(2 * int(lstm_hidden), dim // 2)  # f_m
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, self.n_classes)
        self.level_heads = nn.ModuleDict({"spec": nn.Linear(dim // 2, self.n_classes),
                                          "mfcc": nn.Linear(dim // 2, self.n_classes)}) if level_heads else None
        self.centres = Centres(self.n_classes, dim) if centres else None
        self.frame_dim = dim  # the fused vector, one "frame" per utterance, for an utterance head (gender)
        self.settings = {"n_mels": self.n_mels, "n_mfcc": self.n_mfcc, "n_classes": self.n_classes,
                         "alexnet_channels": [int(c) for c in alexnet_channels], "alexnet_hidden": int(alexnet_hidden),
                         "lstm_hidden": int(lstm_hidden), "dropout": float(dropout), "level_heads": bool(level_heads),
                         "centres": bool(centres)}

    def config_dict(self) -> dict[str, Any]:
        return {**self.w2v2.config_dict(), **self.settings}

    def forward(self, inputs: list[Tensor], lengths: list[Tensor]) -> NetworkOutput:
        """Waveforms [B, T], log-Mel with deltas [B, F, 3, n_mels] and MFCCs [B, F', n_mfcc], with lengths."""
        (wavs, spec, mfcc), (n_samples, spec_lens, mfcc_lens) = inputs, lengths
        w2v2 = self.w2v2(wavs, n_samples)
        x_w = masked_mean(w2v2.frame_features, w2v2.frame_lens)
        x_s = self.spec_proj(self._alexnet(spec, spec_lens))
        x_m = self.mfcc_proj(self._bilstm(mfcc, mfcc_lens))
        attention = torch.softmax(torch.cat([x_m, x_s], dim=-1), dim=-1)  # eq. 5, times D (see the module doc)
        fused = self.dropout(attention * attention.shape[-1] * x_w)
        extras: dict[str, Tensor] = {"embedding": fused}
        if self.level_heads is not None:
            extras.update(w2v2_logits=w2v2.emo_logits, spec_logits=self.level_heads["spec"](x_s),
                          mfcc_logits=self.level_heads["mfcc"](x_m))
        if self.centres is not None:
            extras["centres"] = self.centres(fused)
        ones = torch.ones(fused.shape[0], dtype=torch.long, device=fused.device)
        return NetworkOutput(emo_logits=self.classifier(fused), frame_features=fused.unsqueeze(1), frame_lens=ones,
                             fold_extras=w2v2.fold_extras, extras=extras)

    def _alexnet(self, spec: Tensor, lens: Tensor) -> Tensor:
        """AlexNet on each utterance's own frames (as a [3, n_mels, frames] image), so padding changes nothing."""
        rows = []
        for row, n in enumerate(lens.tolist()):
            image = spec[row, :max(int(n), 1)].permute(1, 2, 0)  # [3, n_mels, frames]
            pad_h, pad_w = max(0, ALEXNET_MIN_SIZE - image.shape[1]), max(0, ALEXNET_MIN_SIZE - image.shape[2])
            rows.append(self.alexnet(F.pad(image, (0, pad_w, 0, pad_h)).unsqueeze(0)))
        return torch.cat(rows)

    def _bilstm(self, mfcc: Tensor, lens: Tensor) -> Tensor:
        """The last forward state and the first backward state of the real frames, [B, 2 * lstm_hidden]."""
        packed = nn.utils.rnn.pack_padded_sequence(mfcc, lens.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # [2, B, H]: forward's last, backward's first
        return torch.cat([hidden[0], hidden[1]], dim=-1)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``encoder`` (wav2vec 2.0's trainable encoder), ``centres`` (if any: their own SGD), ``model`` (the rest)."""
        encoder = self.w2v2.encoder_parameters()
        centres = list(self.centres.parameters()) if self.centres is not None else []
        taken = {id(p) for p in encoder + centres} | {id(p) for p in self.w2v2.encoder.parameters()}
        groups = {"encoder": encoder}
        if centres:
            groups["centres"] = centres
        groups["model"] = [p for p in self.parameters() if id(p) not in taken]
        return groups


class MultiLevelFamily(ModelFamily):
    """The multi-level model; its options name the ablation row (``base``, ``MF``, ``MTL``, ``CR`` and their
    combinations, e.g. ``MF-MTL``): ``run.sh --grid`` runs the paper's eight rows from one command."""

    name = "multilevel"
    # the ablation's three, and the AlexNet weights, so every result and experiment name says which were used
    options = ("gender_prior", "level_weight", "centre_weight", "alexnet_weights")
    inference_window_s = 3.0  # the paper's 3-s segments

    def inputs(self, hparams: dict) -> list[dict[str, Any]]:
        rate = int(hparams["sample_rate"])
        return [{"kind": "waveform", "sample_rate": rate, "params": {}},
                {"kind": "log_mel_deltas", "sample_rate": rate, "params": dict(hparams["spectrogram"])},
                {"kind": "mfcc", "sample_rate": rate, "params": dict(hparams["mfcc"])}]

    def build_network(self, hparams: dict, n_classes: int, input_dims) -> MultiLevelNetwork:
        w2v2 = W2V2Network.from_pretrained(hparams["encoder_source"], n_emotions=n_classes,
                                           freeze_feature_encoder=bool(hparams["freeze_feature_encoder"]),
                                           encoder_type=hparams.get("encoder_type"))
        check_sample_rate(w2v2.encoder, int(hparams["sample_rate"]), hparams["encoder_source"])
        w2v2.cnn_mode = checked_cnn_mode(hparams.get("cnn_mode", "auto"))
        (_, (_, n_mels), (n_mfcc,)) = input_dims
        network_settings = dict(hparams["network"])
        network = MultiLevelNetwork(w2v2, n_mels, n_mfcc, n_classes, level_heads=float(hparams["level_weight"]) > 0,
                                    centres=float(hparams["centre_weight"]) > 0, **network_settings)
        if hparams.get("alexnet_weights"):
            load_alexnet_weights(network.alexnet, str(hparams["alexnet_weights"]))
        return network

    def network_config(self, network: MultiLevelNetwork) -> dict[str, Any]:
        return network.config_dict()

    def network_from_config(self, config: dict[str, Any]) -> MultiLevelNetwork:
        config = dict(config)
        w2v2 = W2V2Network.from_encoder_config(config.pop("encoder_config"), n_emotions=int(config.pop("n_emotions")),
                                               freeze_feature_encoder=bool(config.pop("freeze_feature_encoder")))
        return MultiLevelNetwork(w2v2, **config)

    def min_input_frames(self, network_config: dict[str, Any]) -> int:
        return W2V2MTLFamily().min_input_frames(network_config)

    def param_groups(self, model: SERModel) -> dict[str, list[nn.Parameter]]:
        return model.network.param_groups()

    def set_frozen(self, model: SERModel, group: str, frozen: bool) -> None:
        if group != "encoder":
            super().set_frozen(model, group, frozen)
        model.network.w2v2.set_encoder_frozen(frozen)

    def loss(self, out, batch, targets):
        """The targets' loss (emotion, and gender with ``gender_weight``) + ``level_weight * sum_i CE_i``
        (parts ``L_w2v2``, ``L_spec``, ``L_mfcc``) + ``centre_weight * L_c`` (part ``CR``)."""
        total, parts = targets.loss(out, batch)
        hparams = targets.primary.hparams  # the config the targets were made from
        labels = batch.emo.long()
        if "w2v2_logits" in out.extras:
            weight = float(hparams["level_weight"])
            for level in LEVELS:
                parts[f"L_{level}"] = F.cross_entropy(out.extras[f"{level}_logits"].float(), labels)
                total = total + weight * parts[f"L_{level}"]
        if "centres" in out.extras:
            parts["CR"], step = centre_loss(out.extras["embedding"], out.extras["centres"], labels)
            total = total + float(hparams["centre_weight"]) * parts["CR"] + step
        return total, parts

    def tag(self, hparams: dict) -> str:
        """The ablation row: ``MF`` (gender prior), ``MTL<w>`` (level heads), ``CR<w>`` (centre loss), or ``base``;
        then ``alexnet-<weights>`` when AlexNet starts from pretrained weights (``imagenet`` or a file's stem)."""
        parts = (["MF"] if hparams.get("gender_prior") else []) \
            + ([f"MTL{hparams['level_weight']}"] if float(hparams.get("level_weight") or 0) > 0 else []) \
            + ([f"CR{hparams['centre_weight']}"] if float(hparams.get("centre_weight") or 0) > 0 else [])
        weights = hparams.get("alexnet_weights")
        return "-".join(parts or ["base"]) + (f"_alexnet-{Path(str(weights)).stem}" if weights else "")
