"""The emotion target: one class per utterance (``utt2emo``, indexed by ``classes``), cross-entropy.

The primary target of every SER model: the family's network outputs its logits, its validation UA
selects checkpoints, and its reference, hypothesis and posteriors are the core columns of
``test_predictions.tsv`` (:mod:`serkit.training.expdir`). ``label_smoothing`` in the config smooths the
cross-entropy, as TIM-Net's authors train. Ambiguous utterances (no class, ``use_ambiguous``) get
:data:`NO_CLASS` and add nothing to it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from serkit.data import inventory
from serkit.data.datadir import DataDirError
from serkit.scoring.metrics import classification_scores
from serkit.targets.base import Target, read_values


#: The class index of an utterance without one (an ambiguous utterance, trained by soft targets only):
#: the cross-entropy leaves it out.
NO_CLASS = -100


class EmotionTarget(Target):
    name = "emotion"
    part = "ER"
    fold_means = ("WA", "UA", "macro_F1")
    results_columns = (("WA", "WA"), ("UA", "UA"), ("macro-F1", "macro_F1"))

    def __init__(self, hparams: dict):
        super().__init__(hparams)
        self.classes: list[str] = []

    def files(self) -> tuple[str, ...]:
        return ("utt2emo", inventory.CLASSES_FILE)

    def prepare(self) -> None:
        self.classes = inventory.read_classes(Path(self.hparams["data_dir"]) / inventory.CLASSES_FILE)

    def read(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, Any]:
        labels = read_values(data_dir, "utt2emo", utt_ids, "re-run data preparation (stage 0)")
        index = {label: number for number, label in enumerate(self.classes)}
        for utt in utt_ids:
            if labels[utt] not in index:
                raise DataDirError(f"{Path(data_dir) / 'utt2emo'}: utterance {utt} has label {labels[utt]!r}, which is "
                                   f"not in {Path(data_dir) / inventory.CLASSES_FILE} ({', '.join(self.classes)}); fix the class map "
                                   "and re-run stage 0")
        return {utt: index[labels[utt]] for utt in utt_ids}

    def read_unlabelled(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, Any]:
        return {utt: NO_CLASS for utt in utt_ids}

    def fields(self, value: int) -> dict[str, Any]:
        return {"emo": value}

    def head_sizes(self) -> dict[str, int]:
        return {"n_classes": len(self.classes)}

    def inventories(self) -> dict[str, list[str]]:
        return {"classes": list(self.classes)}

    def loss(self, out, batch) -> torch.Tensor:
        smoothing = float(self.hparams.get("label_smoothing", 0.0))
        labels = batch.emo.long()
        if not self.hparams.get("use_ambiguous"):  # every utterance has a class: the plain mean
            return F.cross_entropy(out.emo_logits.float(), labels, label_smoothing=smoothing)
        summed = F.cross_entropy(out.emo_logits.float(), labels, label_smoothing=smoothing, ignore_index=NO_CLASS,
                                 reduction="sum")
        return summed / (labels != NO_CLASS).sum().clamp_min(1)  # a batch of ambiguous utterances only: 0

    def keep(self, out, batch) -> dict[str, list]:
        return {"refs": [int(e) for e in batch.emo],
                "probs": torch.softmax(out.emo_logits.float(), dim=-1).cpu().tolist()}

    def epoch_scores(self, kept: dict[str, list]) -> dict[str, float]:
        hyps = [int(np.argmax(p)) for p in kept["probs"]]
        scores = classification_scores(kept["refs"], hyps, len(self.classes))
        return {"WA": scores["WA"], "UA": scores["UA"]}

    @staticmethod
    def score(preds, model_facts: dict) -> dict[str, Any]:
        scores = classification_scores(preds.refs, preds.hyps, len(preds.classes))
        return {
            "n_utts": len(preds.utts),
            "WA": scores["WA"],
            "UA": scores["UA"],
            "macro_F1": scores["macro_F1"],
            "recall": {label: _finite_or_none(r) for label, r in zip(preds.classes, scores["recall"])},
            "support": {label: int(n) for label, n in zip(preds.classes, scores["confusion"].sum(axis=1))},
            "confusion": scores["confusion"].tolist(),
        }


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a recall undefined for lack of support becomes None."""
    return None if value is None or math.isnan(value) else float(value)
