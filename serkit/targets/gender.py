"""The speaker's gender (``utt2gender``: ``f`` or ``m``), as an input prior and as an auxiliary task.

Two uses, each switched on by its own config option (without either, the target is not used):

- ``gender_prior: True``: the one-hot gender enters the emotion classifier, i.e. it is concatenated to
  the pooled utterance embedding before the (linear) emotion classifier (:class:`serkit.model.SERModel`'s
  input prior). The gender must then be known for every utterance, in testing too;
- ``gender_weight: w`` (> 0): a gender classifier over the pooled frame features, trained with
  cross-entropy weighted by ``w`` (loss part ``GR``); its reference and decoded gender go into
  ``test_predictions.tsv`` (``ref_gender``, ``hyp_gender``) and its WA/UA into the scores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from serkit.datadir import DataDirError
from serkit.metrics import classification_scores
from serkit.targets.base import Target, read_values

GENDERS = ("f", "m")
COLUMNS = ("ref_gender", "hyp_gender")


class GenderTarget(Target):
    name = "gender"
    part = "GR"
    weight_option = "gender_weight"
    fold_means = ("gender_WA", "gender_UA")
    results_columns = (("gender WA", "gender_WA"), ("gender UA", "gender_UA"))
    results_explanation = "gender WA / UA: the auxiliary gender classifier's accuracy and mean per-gender recall."

    @classmethod
    def from_config(cls, hparams: dict) -> "GenderTarget | None":
        target = cls(hparams)
        return target if target.active else None

    @property
    def prior(self) -> bool:
        return bool(self.hparams.get("gender_prior", False))

    @property
    def active(self) -> bool:
        return self.prior or self.weight > 0

    def files(self) -> tuple[str, ...]:
        return ("utt2gender",)

    def read(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, Any]:
        genders = read_values(data_dir, "utt2gender", utt_ids, "the gender target (gender_prior or gender_weight) "
                                                               "needs it: use a corpus whose prep writes it")
        unknown = sorted({genders[utt] for utt in utt_ids} - set(GENDERS))
        if unknown:
            raise DataDirError(f"{Path(data_dir) / 'utt2gender'}: gender(s) {', '.join(unknown)} are not "
                               f"{' or '.join(GENDERS)}; fix the corpus prep (stage 0)")
        return {utt: GENDERS.index(genders[utt]) for utt in utt_ids}

    def fields(self, value: int) -> dict[str, Any]:
        return {"gender": value}

    def head_sizes(self) -> dict[str, Any]:
        sizes: dict[str, Any] = {}
        if self.prior:
            sizes["prior_size"] = len(GENDERS)
        if self.weight > 0:
            sizes["utterance_heads"] = {self.name: len(GENDERS)}
        return sizes

    def model_inputs(self, batch) -> dict[str, torch.Tensor]:
        if not self.prior:
            return {}
        return {"prior": F.one_hot(batch.gender.long(), len(GENDERS)).float()}

    def loss(self, out, batch) -> torch.Tensor:
        return F.cross_entropy(out.utterance_logits[self.name].float(), batch.gender.long())

    def keep(self, out, batch) -> dict[str, list]:
        if self.weight == 0:
            return {}
        return {"refs": [int(g) for g in batch.gender],
                "hyps": out.utterance_logits[self.name].argmax(dim=-1).cpu().tolist()}

    def columns(self, kept: dict[str, list]) -> dict[str, list[str]]:
        if not kept:
            return {}
        return {"ref_gender": [GENDERS[g] for g in kept["refs"]], "hyp_gender": [GENDERS[g] for g in kept["hyps"]]}

    def epoch_scores(self, kept: dict[str, list]) -> dict[str, float | None]:
        if not kept:
            return {}
        scores = classification_scores(kept["refs"], kept["hyps"], len(GENDERS))
        return {"gender_WA": scores["WA"], "gender_UA": scores["UA"]}

    @staticmethod
    def score(preds, model_facts: dict) -> dict[str, Any]:
        if not all(column in preds.extras for column in COLUMNS):
            return {}
        refs, hyps = ([GENDERS.index(g) for g in preds.extras[column]] for column in COLUMNS)
        scores = classification_scores(refs, hyps, len(GENDERS))
        return {"gender_WA": scores["WA"], "gender_UA": scores["UA"]}

    @staticmethod
    def reports(summary: dict) -> bool:
        return summary["pooled"].get("gender_UA") is not None
