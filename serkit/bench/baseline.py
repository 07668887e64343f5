"""The plain baseline serkit's W2V2-MTL step is timed against: the common SpeechBrain recipe shape.

This is what the SpeechBrain IEMOCAP wav2vec 2.0 emotion recipe trains (Ravanelli et al. 2021;
Baevski et al. 2020's encoder), written out so that it runs offline on a randomly initialised
encoder:

* the waveform is layer-normalised over the padded batch row and given to Hugging Face's
  ``Wav2Vec2Model`` with the padding mask made from the relative lengths, exactly as SpeechBrain's
  ``speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2.extract_features`` calls it (its
  ``make_padding_masks`` is used here), CNN feature encoder frozen;
* the last hidden state only (no layer fusion), layer-normalised over each padded row as the
  recipe's ``output_norm: True`` asks, averaged over the real frames (SpeechBrain's
  ``StatisticsPooling`` without std), a bias-free linear layer, log-softmax;
* NLL loss, Adam, in a plain :class:`speechbrain.core.Brain` (its ``fit_batch``: gradient
  clipping and the optimizer step), fp32 as the recipe ships or in the ``precision`` a SpeechBrain
  user may pass (``bf16``: SpeechBrain's own autocast). The recipe gives the encoder and the output layer one Adam
  each (learning rates 1e-5 and 1e-4); one Adam over both does the same work per step (Adam's cost
  is per parameter), so the baseline keeps a single optimizer.

It is a measuring stick only: no checkpoints, no validation, no CTC head, not a serkit family.
"""
from __future__ import annotations

import speechbrain as sb
import torch
from speechbrain.integrations.huggingface.huggingface import make_padding_masks
from speechbrain.nnet.activations import Softmax
from speechbrain.nnet.linear import Linear
from speechbrain.nnet.losses import nll_loss
from speechbrain.nnet.pooling import StatisticsPooling
from torch import nn
from torch.nn import functional as F
from transformers import Wav2Vec2Model

BASELINE_LR = 1e-4  # the recipe's learning rate of its output layer; speed does not depend on it


class BaselineNetwork(nn.Module):
    """wav2vec 2.0's last layer (layer-normalised) -> mean over real frames -> linear -> log-probabilities."""

    def __init__(self, encoder: Wav2Vec2Model, n_emotions: int):
        super().__init__()
        self.encoder = encoder
        for param in encoder.feature_extractor.parameters():  # as SpeechBrain's freeze_feature_extractor
            param.requires_grad = False
        self.pool = StatisticsPooling(return_std=False)
        self.output = Linear(input_size=encoder.config.hidden_size, n_neurons=n_emotions, bias=False)
        self.log_softmax = Softmax(apply_log=True)

    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The last hidden state, as SpeechBrain's wav2vec 2.0 wrapper computes it with ``output_norm``."""
        mask = make_padding_masks(wavs, wav_len=lengths)
        wavs = F.layer_norm(wavs, wavs.shape[1:])
        hidden = self.encoder(wavs, attention_mask=mask).last_hidden_state
        return F.layer_norm(hidden, hidden.shape[1:])

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.encode(wavs, lengths)
        pooled = self.pool(hidden, lengths).view(hidden.shape[0], -1)
        return self.log_softmax(self.output(pooled))


class BaselineBrain(sb.Brain):
    """SpeechBrain's Brain with the recipe's forward and NLL objective; batches as serkit's collate_batch."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, lengths = batch.sig
        return self.modules.model(wavs, lengths)

    def compute_objectives(self, predictions, batch, stage):
        return nll_loss(predictions, batch.emo.to(self.device))


def baseline_brain(encoder: Wav2Vec2Model, n_emotions: int, device: str = "cpu",
                   precision: str = "fp32") -> BaselineBrain:
    """A baseline Brain ready for ``fit_batch`` (optimizer made, modules in training mode), training in
    SpeechBrain's run option ``precision`` and evaluating in fp32 (SpeechBrain's default)."""
    network = BaselineNetwork(encoder, n_emotions)
    brain = BaselineBrain(modules={"model": network},
                          opt_class=lambda params: torch.optim.Adam(params, lr=BASELINE_LR),
                          run_opts={"device": device, "precision": precision, "eval_precision": "fp32"})
    brain.on_fit_start()  # what Brain.fit does first: makes the optimizer
    brain.modules.train()
    return brain
