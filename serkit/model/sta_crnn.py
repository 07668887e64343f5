"""STA-CRNN: spatio-temporal attention CRNN over 3-channel log-Mel (log-Mel, delta, delta-delta).

From the paper (seed 004; serkit's docs/papers digest, section 2):

* input: log-Mel + first + second deltas as 3 channels, in fixed 300-frame pieces: a shorter
  utterance (or the last piece of a longer one) is zero-padded, a longer one is split;
* CNN: 6 conv layers (1-2: 128 channels, 3-6: 256), kernel 5x3, each followed by ReLU, dropout and
  batch norm (in that order, as the paper lists them), and 2 max-pool layers of 2x4;
* spatial attention after conv 6: channel-wise mean and max maps concatenated -> 7x7 conv -> sigmoid
  -> multiplies the feature map (the paper found position 6 best of 1..7);
* BiLSTM over time, temporal attention pooling ``u_t = softmax_t(W h_t)``, ``u = sum_t u_t h_t``, a
  linear layer and softmax.

What the paper leaves open, and our choices ("ours:"):

* ours: kernel 5x3 and pooling 2x4 are (time x frequency), and the two pools follow conv 1 and conv 2
  (the paper states the pool size right after the two 128-channel layers). Both as in ACRNN (Chen et
  al. 2018), the 3-D log-Mel CRNN that STA-CRNN extends: same 128/256 channels, 5x3 kernels, 2x4
  pooling and 300-frame segments. Pooling early also keeps the four 256-channel layers cheap.
* ours: "same" zero padding in every conv, so only the pools change the map size: a 300-frame piece of
  64 Mel bands becomes 75 x 4 after the CNN.
* ours: dropout 0.1 after each conv (the rate is not given; six dropout layers compound) and one
  BiLSTM layer of 128 units per direction (as ACRNN), no bias in the attention score ``W h_t``
  (a bias cancels in the softmax).
* ours: in the last piece of an utterance the temporal attention and the BiLSTM (packed sequences)
  cover the real frames only; the CNN sees the zero padding as in the paper. So an utterance's result
  never depends on its batch neighbours or on how its batch was padded -- in eval mode; in training,
  batch-norm statistics are shared by all pieces of the batch, as in any batch-normalised network.
* ours: the utterance decision averages the pieces' posteriors (the paper does not say how pieces are
  combined): ``emo_logits = log(mean_k softmax(piece_logits_k))``, so ``softmax(emo_logits)`` is that
  average and cross-entropy on ``emo_logits`` trains the utterance decision itself.

``frame_features`` are the BiLSTM outputs of an utterance's pieces concatenated in time (time reduced
by the pools, 4x by default), with ``frame_lens`` counting the frames that cover real input.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from serkit.model.common import ModelInputError, check_frame_lens, length_mask
from serkit.model.family import FeatureNetworkFamily
from serkit.model.ser_model import NetworkOutput


class SpatialAttention(nn.Module):
    """``x * sigmoid(conv_kxk([mean_c x; max_c x]))``: one weight per time-frequency cell, shared by channels."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention_map(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, 1, H, W] weights in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention_map(x)


class TemporalAttentionPooling(nn.Module):
    """``u = sum_t softmax_t(W h_t) h_t`` over the real frames of each sequence."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``h`` [N, T, D], ``mask`` [N, T] -> pooled [N, D] and the weights [N, T] (0 on padding)."""
        scores = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.bmm(weights.unsqueeze(1), h).squeeze(1), weights


def _conv_layer(in_channels: int, out_channels: int, kernel_size: Sequence[int], dropout: float) -> nn.Sequential:
    padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, tuple(kernel_size), padding=padding), nn.ReLU(),
                         nn.Dropout(dropout), nn.BatchNorm2d(out_channels))


class STACRNN(nn.Module):
    """STA-CRNN over [B, T, 3, n_mels] 3-D log-Mel frames; see the module docstring."""

    def __init__(self, n_mels: int, n_classes: int, piece_frames: int = 300,
                 channels: Sequence[int] = (128, 128, 256, 256, 256, 256), kernel_size: Sequence[int] = (5, 3),
                 pool_size: Sequence[int] = (2, 4), pool_after: Sequence[int] = (1, 2), dropout: float = 0.1,
                 lstm_hidden: int = 128, attention_kernel: int = 7) -> None:
        super().__init__()
        self.n_mels, self.n_classes, self.piece_frames = n_mels, n_classes, piece_frames
        self.channels, self.kernel_size = tuple(channels), tuple(kernel_size)
        self.pool_size, self.pool_after = tuple(pool_size), tuple(pool_after)
        self.dropout, self.lstm_hidden, self.attention_kernel = dropout, lstm_hidden, attention_kernel
        layers, previous = [], 3
        for index, width in enumerate(self.channels, start=1):
            layers.append(_conv_layer(previous, width, self.kernel_size, dropout))
            if index in self.pool_after:
                layers.append(nn.MaxPool2d(self.pool_size))
            previous = width
        self.cnn = nn.Sequential(*layers)
        if not set(self.pool_after) <= set(range(1, len(self.channels) + 1)):
            raise ValueError(f"STA-CRNN: pool_after {list(self.pool_after)} must name conv layers 1..{len(self.channels)}")
        steps, bands = piece_frames, n_mels
        for _ in self.pool_after:
            steps, bands = steps // self.pool_size[0], bands // self.pool_size[1]
        if steps < 1 or bands < 1:
            raise ValueError(f"STA-CRNN: {len(self.pool_after)} pools of {self.pool_size} leave no time steps or "
                             f"bands from {piece_frames} frames x {n_mels} Mel bands; use more bands or fewer pools")
        self.spatial_attention = SpatialAttention(attention_kernel)
        self.lstm = nn.LSTM(previous * bands, lstm_hidden, batch_first=True, bidirectional=True)
        self.temporal_attention = TemporalAttentionPooling(2 * lstm_hidden)
        self.classifier = nn.Linear(2 * lstm_hidden, n_classes)

    @property
    def frame_dim(self) -> int:
        """Size D of each frame of ``frame_features``."""
        return 2 * self.lstm_hidden

    @property
    def time_reduction(self) -> int:
        """Input frames per output frame of the CNN."""
        return self.pool_size[0] ** len(self.pool_after)

    def config_dict(self) -> dict[str, Any]:
        """Plain-data constructor arguments: ``STACRNN(**model.config_dict())`` rebuilds it."""
        return {"n_mels": self.n_mels, "n_classes": self.n_classes, "piece_frames": self.piece_frames,
                "channels": list(self.channels), "kernel_size": list(self.kernel_size),
                "pool_size": list(self.pool_size), "pool_after": list(self.pool_after), "dropout": self.dropout,
                "lstm_hidden": self.lstm_hidden, "attention_kernel": self.attention_kernel}

    def forward(self, feats: Tensor, frame_lens: Tensor) -> NetworkOutput:
        """``feats`` [B, T, 3, n_mels] float, ``frame_lens`` [B] int64 real frames (padding at the end)."""
        self._check(feats, frame_lens)
        pieces, piece_lens, owner, n_pieces = self._split(feats, frame_lens)
        states, state_lens = self._encode(pieces, piece_lens)
        mask = length_mask(state_lens, states.shape[1])
        pooled, _ = self.temporal_attention(states, mask)
        piece_log_probs = F.log_softmax(self.classifier(pooled), dim=-1)  # [N, C]
        emo_logits = self._average_posteriors(piece_log_probs, owner, n_pieces)
        frames, frame_lens_out = self._concatenate(states, state_lens, owner, n_pieces)
        return NetworkOutput(emo_logits=emo_logits, frame_features=frames, frame_lens=frame_lens_out)

    def _split(self, feats: Tensor, frame_lens: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All utterances' pieces as one batch [N, 3, P, M] (utterance-major, in time order), their real
        frame counts [N], the utterance each belongs to [N], and pieces per utterance [B]."""
        size = self.piece_frames
        n_pieces = (frame_lens + size - 1) // size
        most = int(n_pieces.max())
        total = most * size
        feats = F.pad(feats[:, :total], (0, 0, 0, 0, 0, max(0, total - feats.shape[1])))
        feats = feats * length_mask(frame_lens, total)[:, :, None, None].to(feats.dtype)  # zero-pad, as the paper
        exists = torch.arange(most, device=feats.device).unsqueeze(0) < n_pieces.unsqueeze(1)  # [B, most]
        starts = torch.arange(most, device=feats.device) * size
        piece_lens = (frame_lens.unsqueeze(1) - starts).clamp(0, size)[exists]
        owner = torch.arange(len(frame_lens), device=feats.device).unsqueeze(1).expand_as(exists)[exists]
        pieces = feats.view(len(frame_lens), most, size, 3, self.n_mels)[exists]  # [N, P, 3, M]
        return pieces.permute(0, 2, 1, 3), piece_lens, owner, n_pieces

    def _encode(self, pieces: Tensor, piece_lens: Tensor) -> tuple[Tensor, Tensor]:
        """CNN + spatial attention + BiLSTM: [N, 3, P, M] -> states [N, T', 2H] and real steps [N]."""
        maps = self.spatial_attention(self.cnn(pieces))  # [N, C, T', F']
        sequence = maps.permute(0, 2, 1, 3).flatten(2)  # [N, T', C * F']
        steps = sequence.shape[1]
        step_lens = ((piece_lens + self.time_reduction - 1) // self.time_reduction).clamp(max=steps)
        packed = pack_padded_sequence(sequence, step_lens.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=steps)
        return states, step_lens

    @staticmethod
    def _average_posteriors(piece_log_probs: Tensor, owner: Tensor, n_pieces: Tensor) -> Tensor:
        """log of the mean piece posterior per utterance, [N, C] -> [B, C]."""
        batch, most = len(n_pieces), int(n_pieces.max())
        slots = torch.arange(len(owner), device=owner.device) - torch.repeat_interleave(
            torch.cumsum(n_pieces, 0) - n_pieces, n_pieces)  # index of each piece within its utterance
        table = piece_log_probs.new_full((batch, most, piece_log_probs.shape[1]), float("-inf"))
        table = table.index_put((owner, slots), piece_log_probs)
        return torch.logsumexp(table, dim=1) - torch.log(n_pieces.to(table.dtype)).unsqueeze(1)

    @staticmethod
    def _concatenate(states: Tensor, state_lens: Tensor, owner: Tensor, n_pieces: Tensor) -> tuple[Tensor, Tensor]:
        """Each utterance's piece states back to back: [N, T', D] -> [B, most * T', D] and real frames [B].

        Only an utterance's last piece can be partial, so its real frames form one prefix."""
        batch, most = len(n_pieces), int(n_pieces.max())
        steps, dim = states.shape[1], states.shape[2]
        exists = torch.arange(most, device=states.device).unsqueeze(0) < n_pieces.unsqueeze(1)
        frames = states.new_zeros(batch, most, steps, dim)
        frames[exists] = states
        lens = torch.zeros(batch, dtype=torch.long, device=states.device).index_add(0, owner, state_lens)
        return frames.view(batch, most * steps, dim), lens

    def _check(self, feats: Tensor, frame_lens: Tensor) -> None:
        if feats.dim() != 4 or feats.shape[2:] != (3, self.n_mels):
            raise ModelInputError(f"STA-CRNN expects features [batch, frames, 3, {self.n_mels}], got "
                                  f"{tuple(feats.shape)}; check the feature spec (log_mel_deltas, n_mels) "
                                  "against the model config")
        check_frame_lens(frame_lens, feats.shape[0], feats.shape[1])


class STACRNNFamily(FeatureNetworkFamily):
    """STA-CRNN (seed 004) over log-Mel with deltas in 300-frame pieces; ``mtl_lambda`` adds the CTC head
    over the BiLSTM outputs of the pieces, joined in time.

    Padding invariance holds in eval mode (the contract's claim); in training, batch-norm statistics
    are shared by the pieces of the batch, as in any batch-normalised network (module docstring).
    """

    name = "sta_crnn"
    options = ("mtl_lambda",)
    network_class = STACRNN
    input_size_argument = "n_mels"
