"""The speaker's gender (``utt2gender``: ``f`` or ``m``), as an input prior and as an auxiliary task.

Two uses, each switched on by its own config option (without either, the target is not used):

- ``gender_prior: True``: the one-hot gender enters the emotion classifier, i.e. it is concatenated to
  the pooled utterance embedding before the (linear) emotion classifier (:class:`serkit.model.SERModel`'s
  input prior). The gender must then be known for every utterance, in testing too;
- ``gender_weight: w`` (> 0): a gender classifier over the pooled frame features, trained with
  cross-entropy weighted by ``w`` (loss part ``GR``); its reference and decoded gender go into
  ``test_predictions.tsv`` (``ref_gender``, ``hyp_gender``) and its WA/UA into the scores.

Served: the prior is the gender the user gives (``serkit-infer --gender f|m``, or
``EmotionRecognizer.from_export(..., given={"gender": "f"})``) or, for a model that also has the gender
head, the head's prediction: the model then runs twice, first with a zero prior (the head does not
read it) and then with the predicted gender (in a recording scored in windows, each window's own).
The output names the gender and where it came from (``gender: f (given)`` / ``(predicted)``; a
windowed recording's predicted gender is that of its duration-weighted mean head posterior).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from serkit.data.datadir import DataDirError
from serkit.scoring.metrics import classification_scores
from serkit.targets.base import Target, TargetError, read_values

GENDERS = ("f", "m")
COLUMNS = ("ref_gender", "hyp_gender")


class GenderTarget(Target):
    name = "gender"
    part = "GR"
    weight_option = "gender_weight"
    fold_means = ("gender_WA", "gender_UA")
    results_columns = (("gender WA", "gender_WA"), ("gender UA", "gender_UA"))
    results_explanation = "gender WA / UA: the auxiliary gender classifier's accuracy and mean per-gender recall."
    given_choices = GENDERS
    given_help = ("the speakers' gender, for a model trained with it as an input (gender_prior); default: the "
                  "prediction of the model's gender head")
    given: str | None = None  # the user's value at inference

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

    # ---- serving
    @classmethod
    def served(cls, config: dict, given: str | None = None) -> "GenderTarget | None":
        """A model with the gender prior (``prior_size``: the gender is the only input prior) or head."""
        head = cls.name in (config.get("utterance_heads") or {})
        if not (config.get("prior_size") or head):
            return None
        # only whether the weight is positive matters here: it says the model has the head
        target = cls({"gender_prior": bool(config.get("prior_size")), cls.weight_option: 1.0 if head else 0.0})
        target.given = given
        return target

    @property
    def has_output(self) -> bool:
        return True

    def check_serving(self) -> None:
        if self.prior and self.weight == 0 and self.given is None:
            raise TargetError("this model takes the speaker's gender as an input (trained with gender_prior) and has "
                              "no gender head to predict it: give it with serkit-infer --gender f|m (Python: "
                              "EmotionRecognizer.from_export(..., given={'gender': 'f'}))")

    @property
    def second_pass(self) -> bool:
        return self.prior and self.given is None

    def serving_inputs(self, size: int, out=None) -> dict[str, torch.Tensor]:
        if not self.prior:
            return {}
        if self.given is not None:
            index = torch.full((size,), GENDERS.index(self.given))
        elif out is None:
            return {"prior": torch.zeros(size, len(GENDERS))}  # the first pass: the head does not read it
        else:
            index = out.utterance_logits[self.name].argmax(dim=-1)
        return {"prior": F.one_hot(index.long(), len(GENDERS)).float()}

    def output_piece(self, out, row: int) -> torch.Tensor | None:
        """The gender head's posteriors of the utterance (None without the head)."""
        if self.weight == 0:
            return None
        return torch.softmax(out.utterance_logits[self.name][row].float(), dim=-1).cpu()

    def combine(self, pieces: list[tuple[int, int, torch.Tensor]]) -> torch.Tensor:
        """The duration-weighted mean of the windows' posteriors."""
        return sum(probs.double() * (end - start) for start, end, probs in pieces) / sum(
            end - start for start, end, _ in pieces)

    def decode(self, piece: torch.Tensor | None) -> str:
        return self.given if self.given is not None else GENDERS[int(piece.argmax())]

    @property
    def source(self) -> str:
        return "given" if self.given is not None else "predicted"

    def output_text(self, value: str) -> str:
        return f"gender: {value} ({self.source})"

    def output_json(self, value: str | None) -> dict[str, Any]:
        return {"gender": value, "gender_source": self.source}
