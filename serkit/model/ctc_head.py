"""The emotion-phoneme CTC objective as a head any family with frame-level outputs can switch on.

Li et al. (2024) train wav2vec 2.0 with ``L = L_ER + lambda * L_PR``, where ``L_PR`` is a CTC loss over
emotion-phoneme tokens (six phone classes, each suffixed with the utterance's emotion). Nothing in that
objective is specific to wav2vec 2.0: any network that emits a representation per frame can carry the
same head, so serkit offers it to every family through ``mtl_lambda`` (e.g. TIM-Net + emotion-phoneme
CTC). The targets are a choice of stage 1 (``ctc_targets``): emotion-phoneme tokens (the default),
or characters / sentencepiece units of the transcript (the character-CTC auxiliary task of Cai et al.
2021). The CTC blank's index is the token inventories' (:data:`serkit.data.inventory.BLANK_ID`).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from serkit.data.inventory import BLANK_ID
from serkit.model.common import ModelInputError, length_mask

logger = logging.getLogger(__name__)


class CTCHead(nn.Module):
    """One linear layer per frame -> log-softmax over the blank + the tokens (float32)."""

    def __init__(self, frame_dim: int, n_tokens: int):
        super().__init__()
        if n_tokens < 2:
            raise ModelInputError(f"n_tokens counts the CTC blank plus the tokens, so it must be at least 2; "
                                  f"got {n_tokens} (see data/lang/tokens.txt)")
        self.linear = nn.Linear(frame_dim, n_tokens)

    def forward(self, frames: Tensor) -> Tensor:
        return F.log_softmax(self.linear(frames).float(), dim=-1)


def _absolute_token_lens(tokens: Tensor, token_lens: Tensor) -> Tensor:
    """Token counts: integer ``token_lens`` are counts, floating ones SpeechBrain relative lengths."""
    if tokens.dim() != 2 or token_lens.shape != (tokens.shape[0],):
        raise ModelInputError(f"tokens must be [batch, max_tokens] with token_lens [batch]; got "
                              f"{tuple(tokens.shape)} and {tuple(token_lens.shape)}")
    max_len = tokens.shape[1]
    if token_lens.is_floating_point():
        lens = torch.round(token_lens.double() * max_len).long()
    else:
        lens = token_lens.long()
    if on_host(lens) and bool(torch.any((lens < 0) | (lens > max_len))):
        raise ModelInputError(f"token lengths {lens.tolist()} do not fit a padded token batch of width {max_len}")
    return lens


def phoneme_ctc_loss(log_probs: Tensor, frame_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> Tensor:
    """CTC loss of each utterance divided by its number of tokens, averaged over utterances.

    This is ``torch.nn.CTCLoss``'s (and SpeechBrain's) default ``mean`` reduction: a per-token loss,
    on the same scale as the cross-entropy whatever the utterance length, so ``lambda`` weighs the
    two tasks as the paper's ablation assumes (the paper does not state its reduction; ours).

    Utterances without tokens (a transcript that gave no phones) take no part: they stay in the
    emotion task only. Otherwise their all-blank target would be trained with a loss summed over
    every frame (nothing to divide by), tens of times larger than a labelled utterance's. A batch with
    no tokens at all has ``L_PR = 0``. An utterance with more tokens (plus repeats, which need a blank
    between them) than frames has no CTC alignment: its loss is set to 0 by ``zero_infinity`` and the
    number of such utterances is logged.
    """
    lens = _absolute_token_lens(tokens, token_lens.to(tokens.device))
    valid = length_mask(lens, tokens.shape[1])
    vocab = log_probs.shape[-1]
    if on_host(tokens):  # on a GPU this would stall the device; the data layer checks tokens against tokens.txt
        targets = tokens[valid]
        if targets.numel() and bool(torch.any((targets == BLANK_ID) | (targets < 0) | (targets >= vocab))):
            allowed = set(range(vocab)) - {BLANK_ID}
            raise ModelInputError(f"CTC targets must be token indices 0..{vocab - 1} other than the blank ({BLANK_ID}); "
                                  f"got values {sorted(set(targets.tolist()) - allowed)[:5]}: tokens and model "
                                  f"disagree (check data/lang/tokens.txt and n_tokens)")
    repeats = ((tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]).sum(dim=1)
    UNALIGNABLE.add(((lens + repeats) > frame_lens.to(lens.device)).sum(), len(lens))
    # Padded [B, S] targets (padding past each length is ignored): no data-dependent shapes, no host sync.
    padded = torch.where(valid, tokens.long(), torch.ones_like(tokens, dtype=torch.long))
    per_utt = F.ctc_loss(log_probs.float().transpose(0, 1), padded, frame_lens, lens, blank=BLANK_ID,
                         reduction="none", zero_infinity=True)
    labelled = (lens > 0).to(per_utt.dtype)
    # Mean over labelled utterances; a batch without any has L_PR = 0 (and keeps the graph and device).
    per_token = per_utt / lens.clamp(min=1).to(per_utt.dtype)
    return (per_token * labelled).sum() / labelled.sum().clamp(min=1.0)


def on_host(tensor: Tensor) -> bool:
    """True for a CPU tensor, whose values can be read without waiting for a device."""
    return tensor.device.type == "cpu"


class DeferredCount:
    """A count kept on the tensors' device and logged when read: a warning without a host sync per step.

    On a CPU the count is logged at once; on a GPU it is summed on the device and logged when the
    trainer reads its values back anyway (every ``sync_every`` steps and at the end of an epoch, see
    :class:`serkit.training.train.SERBrain`), so the message comes then, with the total since the last one.
    """

    def __init__(self, message: str):
        self.message = message
        self.count: Tensor | None = None
        self.total = 0

    def add(self, count: Tensor, out_of: int) -> None:
        self.count = count if self.count is None else self.count + count
        self.total += out_of
        if on_host(count):
            self.flush()

    def flush(self) -> None:
        if self.count is not None and int(self.count):
            logger.warning(self.message, int(self.count), self.total)
        self.count, self.total = None, 0


UNALIGNABLE = DeferredCount("%d of %d utterances have more emotion-phoneme tokens than frames (CTC cannot align "
                            "them); their CTC loss is set to 0")


def ctc_greedy_decode(phn_log_probs: Tensor, frame_lens: Tensor) -> list[list[int]]:
    """Best-path decoding: per-frame argmax over the real frames, collapse repeats, drop blanks."""
    best = phn_log_probs.argmax(dim=-1).cpu()
    sequences = []
    for row, n_frames in zip(best, frame_lens.tolist()):
        collapsed = torch.unique_consecutive(row[:int(n_frames)]).tolist()
        sequences.append([token for token in collapsed if token != BLANK_ID])
    return sequences
