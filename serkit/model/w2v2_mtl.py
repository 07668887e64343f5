"""W2V2-MTL: wav2vec 2.0 fine-tuned for emotion classification with an emotion-phoneme CTC task.

The network (see docs in /work/shared/papers.md, section 1):

* wav2vec 2.0 encoder -> the ``L = num_hidden_layers + 1`` representations ``H_0 .. H_N``;
* layer fusion ``H_X = sum_i softmax(w)_i H_i`` with ``w`` a learnable vector initialised to zeros
  (so training starts from the plain average);
* emotion head: mean of ``H_X`` over the real frames -> linear -> logits (cross-entropy);
* phoneme head: linear over every frame of ``H_X`` -> log-softmax over the blank + emotion-phoneme
  tokens (CTC). Total loss ``L = CE + lambda * CTC`` (:func:`mtl_loss`).

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
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from transformers import Wav2Vec2Model

from serkit.errors import SerkitError
from serkit.model.encoder import encoder_from_config, load_encoder

logger = logging.getLogger(__name__)

BLANK = 0  # CTC blank index, as in data/lang/tokens.txt


class ModelInputError(SerkitError):
    """Inputs the model cannot process (bad shapes or lengths, out-of-range targets...)."""


@dataclass
class MTLOutput:
    """What :meth:`W2V2MultiTask.forward` returns (see the field comments for shapes)."""

    emo_logits: Tensor  # [B, E] emotion logits
    phn_log_probs: Optional[Tensor]  # [B, F, V] float32 log-softmax, blank = 0; None without phoneme head
    frame_lens: Tensor  # [B] int64 number of real frames per utterance
    layer_weights: Tensor  # [L] softmax of the fusion weights


class W2V2MultiTask(nn.Module):
    """wav2vec 2.0 with layer fusion, an utterance-level emotion head and a frame-level CTC head."""

    def __init__(self, encoder: Wav2Vec2Model, n_emotions: int, n_tokens: int,
                 phoneme_head: bool = True, freeze_feature_encoder: bool = True):
        super().__init__()
        if n_emotions < 2:
            raise ModelInputError(f"n_emotions must be at least 2, got {n_emotions}")
        if phoneme_head and n_tokens < 2:
            raise ModelInputError(f"n_tokens counts the CTC blank plus the emotion-phoneme tokens, so it "
                                  f"must be at least 2; got {n_tokens} (see data/lang/tokens.txt)")
        config = encoder.config
        self.encoder = encoder
        self.n_emotions = int(n_emotions)
        self.n_tokens = int(n_tokens)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self._encoder_frozen = False
        # w in the paper: zeros, so softmax(w) starts as the uniform average of the L representations.
        self.fusion_weights = nn.Parameter(torch.zeros(config.num_hidden_layers + 1))
        # final_dropout is the config's dropout "before the task heads" (as in Wav2Vec2ForCTC).
        self.head_dropout = nn.Dropout(config.final_dropout)
        self.emotion_head = nn.Linear(config.hidden_size, self.n_emotions)
        self.phn_head = nn.Linear(config.hidden_size, self.n_tokens) if phoneme_head else None
        if self.freeze_feature_encoder:
            encoder.freeze_feature_encoder()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, source: str, n_emotions: int, n_tokens: int, phoneme_head: bool = True,
                        freeze_feature_encoder: bool = True, **config_overrides: Any) -> "W2V2MultiTask":
        """Pretrained encoder (hub id or folder, see :func:`load_encoder`) + freshly initialised heads.

        Extra keyword arguments override the encoder's config (e.g. ``layerdrop=0.05``).
        """
        encoder = load_encoder(source, **config_overrides)
        return cls(encoder, n_emotions, n_tokens, phoneme_head=phoneme_head,
                   freeze_feature_encoder=freeze_feature_encoder)

    @classmethod
    def from_encoder_config(cls, config_dict: dict[str, Any], n_emotions: int, n_tokens: int,
                            phoneme_head: bool = True, freeze_feature_encoder: bool = True) -> "W2V2MultiTask":
        """Randomly initialised network of the right shape, to be filled with ``load_state_dict``."""
        return cls(encoder_from_config(config_dict), n_emotions, n_tokens, phoneme_head=phoneme_head,
                   freeze_feature_encoder=freeze_feature_encoder)

    def config_dict(self) -> dict[str, Any]:
        """The plain data :meth:`from_encoder_config` needs (the model part of ``model_config.json``)."""
        return {"encoder_config": self.encoder.config.to_dict(), "n_emotions": self.n_emotions,
                "n_tokens": self.n_tokens, "phoneme_head": self.has_phoneme_head}

    @property
    def has_phoneme_head(self) -> bool:
        return self.phn_head is not None

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
        """New parameters (fusion weights and the two heads): they usually get a larger learning rate."""
        params = [self.fusion_weights, *self.emotion_head.parameters()]
        if self.phn_head is not None:
            params.extend(self.phn_head.parameters())
        return params

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (or release) the whole encoder, e.g. to train only the heads for the first N steps.

        Releasing keeps the CNN feature encoder frozen if the model was built with
        ``freeze_feature_encoder=True``.
        """
        self._encoder_frozen = bool(frozen)
        for name, param in self.encoder.named_parameters():
            param.requires_grad = not frozen and not (self.freeze_feature_encoder and self._is_cnn(name))

    # ------------------------------------------------------------------------------- forward
    def forward(self, wavs: Tensor, wav_lens: Tensor) -> MTLOutput:
        """Score a padded batch ``wavs`` [B, T] with relative lengths ``wav_lens`` [B] in (0, 1]."""
        n_samples = self._absolute_lengths(wavs, wav_lens)
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
        emo_logits = self.emotion_head(pooled)
        phn_log_probs = None
        if self.phn_head is not None:
            phn_log_probs = F.log_softmax(self.phn_head(fused).float(), dim=-1)
        return MTLOutput(emo_logits=emo_logits, phn_log_probs=phn_log_probs, frame_lens=frame_lens,
                         layer_weights=layer_weights)

    def _absolute_lengths(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        """Sample counts from SpeechBrain's relative lengths (fraction of the padded length T)."""
        if wavs.dim() != 2:
            raise ModelInputError(f"wavs must be a [batch, samples] tensor of mono audio, got shape "
                                  f"{tuple(wavs.shape)}")
        batch, total = wavs.shape
        wav_lens = torch.as_tensor(wav_lens, device=wavs.device)
        if wav_lens.shape != (batch,):
            raise ModelInputError(f"wav_lens must have shape [{batch}] (one relative length per utterance), "
                                  f"got {tuple(wav_lens.shape)}")
        if not bool(torch.all((wav_lens > 0) & (wav_lens <= 1 + 1e-6))):
            raise ModelInputError(f"wav_lens must be relative lengths in (0, 1] (SpeechBrain convention: "
                                  f"length / padded length), got {wav_lens.tolist()}")
        return torch.round(wav_lens.double() * total).long().clamp(1, total)

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
def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean [B, max_len] mask, True on the first ``lengths[b]`` positions of row b."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


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
    if bool(torch.any((lens < 0) | (lens > max_len))):
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
    targets = tokens[valid].long()
    vocab = log_probs.shape[-1]
    if targets.numel() and bool(torch.any((targets <= BLANK) | (targets >= vocab))):
        raise ModelInputError(f"CTC targets must be token indices 1..{vocab - 1} (0 is the blank); got values "
                              f"{sorted(set(targets.tolist()) - set(range(1, vocab)))[:5]}: tokens and model "
                              f"disagree (check data/lang/tokens.txt and n_tokens)")
    repeats = ((tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]).sum(dim=1)
    too_short = (lens + repeats) > frame_lens.to(lens.device)
    if bool(torch.any(too_short)):
        logger.warning("%d of %d utterances have more emotion-phoneme tokens than frames (CTC cannot align "
                       "them); their CTC loss is set to 0", int(too_short.sum()), len(lens))
    per_utt = F.ctc_loss(log_probs.float().transpose(0, 1), targets, frame_lens, lens, blank=BLANK,
                         reduction="none", zero_infinity=True)
    labelled = lens > 0
    if not bool(labelled.any()):
        return per_utt.sum() * 0.0  # keeps the graph and device; nothing to learn from
    return (per_utt[labelled] / lens[labelled].to(per_utt.dtype)).mean()


def mtl_loss(out: MTLOutput, emo_targets: Tensor, tokens: Optional[Tensor], token_lens: Optional[Tensor],
             lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(L, L_ER, L_PR)`` with ``L = CE + lam * CTC``.

    ``lam == 0`` computes no CTC at all (``tokens`` may then be None) and returns ``L_PR`` as a 0
    tensor. ``token_lens`` may be integer counts or SpeechBrain relative lengths (floating point).
    """
    if lam < 0:
        raise ModelInputError(f"lambda (the CTC weight) must be >= 0, got {lam}")
    l_er = F.cross_entropy(out.emo_logits.float(), emo_targets.long())
    if lam == 0:
        return l_er, l_er, torch.zeros((), device=l_er.device)
    if out.phn_log_probs is None:
        raise ModelInputError(f"lambda = {lam} needs the phoneme head, but the model was built with "
                              f"phoneme_head=False; set lambda to 0 or enable the phoneme head")
    if tokens is None or token_lens is None:
        raise ModelInputError(f"lambda = {lam} needs the emotion-phoneme tokens (utt2phn) of the batch")
    l_pr = phoneme_ctc_loss(out.phn_log_probs, out.frame_lens, tokens, token_lens)
    return l_er + lam * l_pr, l_er, l_pr


def ctc_greedy_decode(phn_log_probs: Tensor, frame_lens: Tensor) -> list[list[int]]:
    """Best-path decoding: per-frame argmax over the real frames, collapse repeats, drop blanks."""
    best = phn_log_probs.argmax(dim=-1).cpu()
    sequences = []
    for row, n_frames in zip(best, frame_lens.tolist()):
        collapsed = torch.unique_consecutive(row[:int(n_frames)]).tolist()
        sequences.append([token for token in collapsed if token != BLANK])
    return sequences
