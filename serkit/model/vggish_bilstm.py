"""VGGish + BiLSTM + attention over 0.96-s log-Mel segments, with class-balanced training segments
(seed paper 002; docs/papers digest, section 6).

From the paper:

* 16 kHz audio, log-Mel with a 25 ms Hann window and a 10 ms hop, 64 bands, cut into segments of 96
  frames (0.96 s); a shorter utterance is zero-padded to one segment;
* VGGish (Hershey et al. 2017, the AudioSet model): six 3x3 convolutions (64, 128, 256, 256, 512, 512
  channels, ReLU) with 2x2 max-pools after conv 1, 2, 4 and 6, then fully connected layers of 4096,
  4096 and 128 units (ReLU): a 128-d embedding per segment. Initialised from AudioSet and fine-tuned
  on the segments, each labelled with its utterance's emotion (first phase);
* then a BiLSTM over the utterance's sequence of segment embeddings, attention pooling
  ``u = sum_k softmax_k(w h_k) h_k`` and a softmax classifier (second phase);
* data balancing: fewer segments for the frequent classes, overlapping ones for the rare
  (:mod:`serkit.data.segments`, ``balance: True``; the training fold's counts decide).

The network scores an utterance as its consecutive 96-frame segments (:mod:`serkit.model.pieces`);
in training with balancing, the data layer hands it the chosen segments back to back, so it cuts
exactly those.

What the paper leaves open or serkit changes ("ours:"):

* ours: the two phases run in the shared training loop, switched after ``segment_steps`` training
  batches (the count is kept in the network's state, so checkpoints, resume and exports agree on the phase).
  Phase 1 trains VGGish and a segment classifier; the utterance decision is the mean of its
  segments' posteriors, and the loss is that decision's cross-entropy (the shared trainer's loss)
  rather than a sum over segments. Phase 2 holds VGGish still (no gradient: the optimizer skips it)
  and trains the BiLSTM, the attention and the classifier on the utterance decision. Checkpoints are
  selected on validation UA over both phases (set ``segment_steps`` below the run's steps).
* ours: the input is the ``log_mel_deltas`` feature's log-Mel channel, ``log(mel + 1e-6)`` over the
  full band with CMVN from the fold's training data; the released VGGish front end used
  ``log(mel + 0.01)`` over 125-7500 Hz, no normalisation, and a PCA after the embedding (not used).
* ours: one BiLSTM layer of 128 units a direction, no bias in the attention score (as STA-CRNN).
* pretrained weights: ``pretrained`` names a local file or ``HUB_ID:FILE`` holding the torchvggish
  layout (``features.*``, ``embeddings.*``); by default (null) VGGish is trained from scratch, which
  runs everywhere. docs/models.md says how to get and convert the AudioSet weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from serkit.errors import SerkitError
from serkit.features.encoder import hub_offline
from serkit.model.common import ModelInputError, check_frame_lens, length_mask
from serkit.model.family import FeatureNetworkFamily
from serkit.model.pieces import average_posteriors, per_utterance, split_pieces
from serkit.model.ser_model import NetworkOutput
from serkit.model.sta_crnn import TemporalAttentionPooling

HOW_TO_PROVIDE = ("To provide the AudioSet weights: on a machine with internet download torchvggish's "
                  "vggish-10086976.pth (docs/models.md, 'VGGish + BiLSTM'), copy it here and set `pretrained` to "
                  "its path, or upload it to a Hugging Face repo and set `pretrained: OWNER/NAME:FILE`; "
                  "`pretrained: null` trains VGGish from scratch.")


class PretrainedWeightsError(SerkitError):
    """Pretrained weights that cannot be found or do not fit the network (the message says how to provide them)."""


class VGGish(nn.Module):
    """VGGish over [N, frames, n_mels] segments -> [N, embedding[-1]]; module names as torchvggish's."""

    def __init__(self, n_mels: int, segment_frames: int, channels: Sequence[int], pool_after: Sequence[int],
                 embedding: Sequence[int]) -> None:
        super().__init__()
        layers, previous = [], 1
        for index, width in enumerate(channels, start=1):
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(inplace=True)]
            if index in pool_after:
                layers.append(nn.MaxPool2d(2, 2))
            previous = width
        self.features = nn.Sequential(*layers)
        steps, bands = segment_frames >> len(pool_after), n_mels >> len(pool_after)
        if steps < 1 or bands < 1:
            raise ValueError(f"VGGish: {len(pool_after)} pools leave nothing of {segment_frames} frames x {n_mels} bands")
        dense, width = [], previous * steps * bands
        for size in embedding:
            dense += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        self.embeddings = nn.Sequential(*dense)

    def forward(self, segments: Tensor) -> Tensor:
        maps = self.features(segments.unsqueeze(1))  # [N, C, T', F']
        return self.embeddings(maps.permute(0, 2, 3, 1).flatten(1))  # time, band, channel: the released order


class VGGishBiLSTM(nn.Module):
    """VGGish per segment, then a BiLSTM with attention pooling over the utterance; see the module docstring."""

    def __init__(self, n_mels: int, n_classes: int, segment_frames: int = 96,
                 channels: Sequence[int] = (64, 128, 256, 256, 512, 512), pool_after: Sequence[int] = (1, 2, 4, 6),
                 embedding: Sequence[int] = (4096, 4096, 128), lstm_hidden: int = 128, segment_steps: int = 0) -> None:
        super().__init__()
        self.n_mels, self.n_classes, self.segment_frames = int(n_mels), int(n_classes), int(segment_frames)
        self.channels, self.pool_after, self.embedding = tuple(channels), tuple(pool_after), tuple(embedding)
        self.lstm_hidden, self.segment_steps = int(lstm_hidden), int(segment_steps)
        self.vggish = VGGish(self.n_mels, self.segment_frames, self.channels, self.pool_after, self.embedding)
        self.segment_classifier = nn.Linear(self.embedding[-1], self.n_classes)
        self.lstm = nn.LSTM(self.embedding[-1], self.lstm_hidden, batch_first=True, bidirectional=True)
        self.attention = TemporalAttentionPooling(2 * self.lstm_hidden)
        self.classifier = nn.Linear(2 * self.lstm_hidden, self.n_classes)
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))

    @property
    def frame_dim(self) -> int:
        """Size D of each frame of ``frame_features``: the BiLSTM state of a segment."""
        return 2 * self.lstm_hidden

    @property
    def phase(self) -> int:
        """1 while VGGish is fine-tuned on segments, 2 once the utterance-level BiLSTM trains."""
        return 1 if int(self.trained_steps) < self.segment_steps else 2

    def config_dict(self) -> dict[str, Any]:
        """Plain-data constructor arguments: ``VGGishBiLSTM(**model.config_dict())`` rebuilds it."""
        return {"n_mels": self.n_mels, "n_classes": self.n_classes, "segment_frames": self.segment_frames,
                "channels": list(self.channels), "pool_after": list(self.pool_after),
                "embedding": list(self.embedding), "lstm_hidden": self.lstm_hidden, "segment_steps": self.segment_steps}

    def forward(self, feats: Tensor, frame_lens: Tensor) -> NetworkOutput:
        """``feats`` [B, T, 3, n_mels] (log_mel_deltas; channel 0 is used), ``frame_lens`` [B] real frames."""
        self._check(feats, frame_lens)
        phase = self.phase
        if self.training:
            self.trained_steps += 1
        segments = split_pieces(feats[:, :, 0], frame_lens, self.segment_frames)
        with torch.set_grad_enabled(torch.is_grad_enabled() and phase == 1):
            embeddings = self.vggish(segments.frames)  # [N, E]
        sequence = per_utterance(embeddings, segments)  # [B, most, E]
        packed = pack_padded_sequence(sequence, segments.counts.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=sequence.shape[1])
        if phase == 1:
            emo_logits = average_posteriors(self.segment_classifier(embeddings), segments)
        else:
            pooled, _ = self.attention(states, length_mask(segments.counts, states.shape[1]))
            emo_logits = self.classifier(pooled)
        return NetworkOutput(emo_logits=emo_logits, frame_features=states, frame_lens=segments.counts)

    def load_pretrained(self, source: str) -> None:
        """VGGish's weights from a local file or ``HUB_ID:FILE`` (torchvggish layout; see the module docstring)."""
        state = _read_weights(source)
        mine = self.vggish.state_dict()
        wanted = {key: value for key, value in state.items() if key in mine}
        wrong = [key for key, value in wanted.items() if value.shape != mine[key].shape]
        if len(wanted) != len(mine) or wrong:
            raise PretrainedWeightsError(
                f"pretrained VGGish {source}: {len(wanted)} of {len(mine)} tensors found, shapes differing for "
                f"{wrong[:3]}; the weights fit the paper's network only (channels 64,128,256,256,512,512, "
                f"embedding 4096,4096,128, 96 frames x 64 bands). {HOW_TO_PROVIDE}")
        self.vggish.load_state_dict(wanted)

    def _check(self, feats: Tensor, frame_lens: Tensor) -> None:
        if feats.dim() != 4 or feats.shape[3] != self.n_mels:
            raise ModelInputError(f"VGGish expects log_mel_deltas features [batch, frames, 3, {self.n_mels}], got "
                                  f"{tuple(feats.shape)}; check the feature spec (n_mels) against the model config")
        check_frame_lens(frame_lens, feats.shape[0], feats.shape[1])


def _read_weights(source: str) -> dict[str, Tensor]:
    """A state dict from a local .pth/.pt/.safetensors file or ``HUB_ID:FILE`` on the Hugging Face hub."""
    path = Path(source).expanduser()
    if not path.is_file():
        if ":" not in source or source.startswith(("/", ".", "~")):
            raise PretrainedWeightsError(f"pretrained VGGish {source}: no such file. {HOW_TO_PROVIDE}")
        repo, filename = source.split(":", 1)
        from huggingface_hub import hf_hub_download
        try:
            path = Path(hf_hub_download(repo, filename, local_files_only=hub_offline()))
        except Exception as error:  # the hub client raises many kinds (offline, missing repo or file, network)
            where = "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if hub_offline() else \
                "could not be fetched from the Hugging Face hub"
            raise PretrainedWeightsError(f"pretrained VGGish {source}: {where} ({type(error).__name__}). "
                                         f"{HOW_TO_PROVIDE}") from None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated file or one holding pickled code
        raise PretrainedWeightsError(f"pretrained VGGish {path}: not a plain state dict ({type(error).__name__}: "
                                     f"{str(error).splitlines()[0] if str(error) else ''}). {HOW_TO_PROVIDE}") from None


class VGGishBiLSTMFamily(FeatureNetworkFamily):
    """VGGish + BiLSTM + attention (seed 002) over 0.96-s log-Mel segments; ``balance`` trains on
    class-balanced segments (:mod:`serkit.data.segments`), ``pretrained`` loads AudioSet VGGish weights."""

    name = "vggish_bilstm"
    options = ("balance", "pretrained")
    network_class = VGGishBiLSTM
    input_size_argument = "n_mels"

    def build_network(self, hparams: dict, n_classes: int, input_dims: tuple[int, ...]) -> VGGishBiLSTM:
        network = super().build_network(hparams, n_classes, input_dims)
        if hparams.get("pretrained"):
            network.load_pretrained(str(hparams["pretrained"]))
        return network

    def tag(self, hparams: dict) -> str:
        """``balanced`` or ``unbalanced``, plus ``audioset`` with pretrained weights."""
        parts = ["balanced" if hparams.get("balance") else "unbalanced"]
        return "_".join(parts + (["audioset"] if hparams.get("pretrained") else []))
