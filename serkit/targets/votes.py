"""Annotator-vote proportions as soft labels (``utt2votes``), learnt with a soft-label cross-entropy.

Corpora that ship each rater's label (IEMOCAP's evaluator lines, MSP-Podcast's ``labels_detailed.csv``,
CREMA-D's ``tabulatedVotes.csv``) get ``utt2votes`` from their prep:
``<utt> <class>:<count> ...`` over the data directory's ``classes`` (votes for codes the class map
drops are not counted; an utterance no vote of which maps to a class has an empty value). The
proportions say how ambiguous an utterance is, which a single majority label hides.

``vote_weight: w`` (> 0) adds ``w * L_VT``: the cross-entropy between the vote proportions and the
emotion posteriors, averaged over the utterances that have votes. Utterances without a majority (IEMOCAP's ``xxx``) are not in the data directory but in its
``ambiguous/`` folder (:data:`serkit.data.datadir.AMBIGUOUS_DIR`, with their own ``utt2votes``):
``use_ambiguous: True`` adds those of the training speakers to the training set, where this loss is
all they teach (the emotion cross-entropy skips them); they never enter validation or test. Test scoring stays on the majority
labels (``utt2emo``); the reference proportions go into ``test_predictions.tsv`` (``ref_votes``) and
the scores gain ``rater_agreement``: the mean share of an utterance's votes that the predicted class
received (how often a random rater would agree with the model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from serkit.data import inventory
from serkit.data.votes import FILE, parse_votes
from serkit.targets.base import Target, read_values

COLUMN = "ref_votes"


class VotesTarget(Target):
    name = "votes"
    part = "VT"
    weight_option = "vote_weight"
    learns_unlabelled = True
    fold_means = ("rater_agreement",)
    results_columns = (("rater agr.", "rater_agreement"),)
    results_explanation = ("rater agr. = mean share of an utterance's annotator votes that the predicted class "
                           "received (utterances with votes).")

    @classmethod
    def from_config(cls, hparams: dict) -> "VotesTarget | None":
        target = cls(hparams)
        return target if target.active else None

    def __init__(self, hparams: dict):
        super().__init__(hparams)
        self.classes: list[str] = []

    def files(self) -> tuple[str, ...]:
        return (FILE, inventory.CLASSES_FILE)

    def prepare(self) -> None:
        self.classes = inventory.read_classes(Path(self.hparams["data_dir"]) / inventory.CLASSES_FILE)

    def read(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, Any]:
        values = read_values(data_dir, FILE, utt_ids, "vote_weight > 0 needs the annotators' votes: use a corpus "
                                                      "whose prep writes them (IEMOCAP, MSP-Podcast or CREMA-D "
                                                      "with their rater files) or set vote_weight 0")
        return {utt: tuple(parse_votes(values[utt], self.classes, f"{Path(data_dir) / FILE}: utterance {utt}"))
                for utt in utt_ids}

    def fields(self, value: tuple[int, ...]) -> dict[str, Any]:
        counts = torch.tensor(value, dtype=torch.float32)
        total = counts.sum()
        return {"votes": counts / total if total > 0 else counts}

    def describe_values(self, values: dict[str, Any]) -> str:
        return f", {sum(not any(v) for v in values.values())} without votes"

    def loss(self, out, batch) -> torch.Tensor:
        proportions = batch.votes.to(out.emo_logits.device)
        voted = proportions.sum(dim=-1) > 0
        per_utt = -(proportions * F.log_softmax(out.emo_logits.float(), dim=-1)).sum(dim=-1)
        return (per_utt * voted).sum() / voted.sum().clamp_min(1)

    def keep(self, out, batch) -> dict[str, list]:
        return {"votes": batch.votes.cpu().tolist()}

    def columns(self, kept: dict[str, list]) -> dict[str, list[str]]:
        return {COLUMN: [" ".join(f"{label}:{share:.4g}" for label, share in zip(self.classes, row) if share)
                         for row in kept["votes"]]}

    @staticmethod
    def score(preds, model_facts: dict) -> dict[str, Any]:
        if COLUMN not in preds.extras:
            return {}
        agreement = []
        for value, hyp in zip(preds.extras[COLUMN], preds.hyps):
            shares = dict(item.split(":") for item in value.split())
            if shares:
                agreement.append(float(shares.get(preds.classes[hyp], 0.0)))
        return {"rater_agreement": sum(agreement) / len(agreement) if agreement else None}

    @staticmethod
    def reports(summary: dict) -> bool:
        return summary["pooled"].get("rater_agreement") is not None
