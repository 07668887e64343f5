"""The target contract: what a training target declares, so that no generic layer names one.

SER trains the emotion classes and, optionally, auxiliary targets (a CTC head over emotion-phonemes,
characters or BPE units ...). Each target lives in one module of :mod:`serkit.targets` and is found
by name through :data:`serkit.targets.TARGETS`. Like SpeechBrain's dynamic items (``@takes`` /
``@provides``), a target says what it takes and what it provides, and the generic layers only wire
those declarations together:

- the **data-directory files** it reads (:meth:`Target.files`) and the ones stage 1 makes for it
  (:attr:`Target.stage1_files`): what a config needs from stage 1 (:meth:`Target.stage1_need`), how
  stage 1 makes it (:meth:`Target.make_stage1`, under the recipe's ``--lang`` directory) and the
  training options that point at it (:meth:`Target.stage1_options`, e.g. ``lang_dir``);
- its per-utterance **value** read from those files, checked before training (:meth:`Target.read`);
- its **batch fields** (:meth:`Target.fields`) and which of them are variable-length sequences,
  padded with 0 to the batch's longest and carried with absolute lengths (:attr:`Target.sequences`);
- its **head** size for :func:`serkit.model.build.build_model` (:meth:`Target.head_sizes`: a CTC head,
  an input prior, an utterance head ...), the inputs it feeds the model besides the audio
  (:meth:`Target.model_inputs`, e.g. a one-hot prior) and the inventory the exported model records
  (:meth:`Target.inventories`);
- its **loss part**: the name logged in history.jsonl (:attr:`Target.part`) and the config option
  that weights it (:attr:`Target.weight_option`; a weight of 0 makes the target inactive: no file is
  read, no head is built, no loss computed, and its scores are null);
- its **decoded per-utterance outputs**: the columns it adds to ``test_predictions.tsv``
  (:meth:`Target.keep`, :meth:`Target.columns`);
- the **scores** of a training epoch (:meth:`Target.epoch_scores`, logged and kept in checkpoints)
  and of a scored experiment (:meth:`Target.score`, read from the prediction files only), with the
  summary keys averaged over folds (:attr:`Target.fold_means`) and the RESULTS.md columns
  (:attr:`Target.results_columns`);
- how it is **served** (:mod:`serkit.serving.export`, :mod:`serkit.serving.inference`, ``serkit-infer``), from an
  exported model's config alone (:meth:`Target.served`): the files it adds to the export folder
  (:attr:`Target.export_files`, :meth:`Target.write_export`, checked on load by
  :meth:`Target.check_export`), the inputs it gives the model at inference (:meth:`Target.serving_inputs`),
  and how it decodes one utterance's output (:meth:`Target.output_piece`; a recording scored in windows
  :meth:`Target.combine` s its windows' pieces first, then :meth:`Target.decode`), shown by
  :meth:`Target.output_text` / :meth:`Target.output_json`. A user may give a target's value instead
  (:attr:`Target.given_choices`, ``serkit-infer --<name>``).

The emotion target (:mod:`serkit.targets.emotion`) is the *primary* one: its validation UA selects
checkpoints, and its ``ref``/``hyp``/posterior columns make the core of the predictions file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

from torch import Tensor

from serkit.data.datadir import DataDirError, read_map
from serkit.errors import SerkitError

MAX_LISTED = 5  # how many offending ids an error message shows


class TargetError(SerkitError):
    """A configured target cannot be trained or scored as asked."""


class Target:
    """Base class of a target; subclasses set the class attributes and override what they use."""

    name: ClassVar[str] = ""
    part: ClassVar[str] = ""  # the loss part's name in logs and history.jsonl (e.g. "ER", "PR")
    weight_option: ClassVar[str | None] = None  # the config option weighting the part; None = weight 1
    sequences: ClassVar[tuple[str, ...]] = ()  # batch fields padded as sequences with absolute lengths
    stage1_files: ClassVar[tuple[str, ...]] = ()  # data-dir files stage 1 (may) make for this target
    stage1_title: ClassVar[str] = ""  # what stage 1's log calls them (empty: stage 1 makes nothing)
    stage1_skipped: ClassVar[str] = ""  # why stage 1 makes nothing when no planned config needs them
    fold_means: ClassVar[tuple[str, ...]] = ()  # summary keys averaged over folds (mean +- std)
    results_columns: ClassVar[tuple[tuple[str, str], ...]] = ()  # (RESULTS.md heading, summary key)
    results_counts: ClassVar[tuple[tuple[str, str], ...]] = ()  # (heading, key) of counts after the figures
    results_explanation: ClassVar[str] = ""  # what RESULTS.md says about the target's columns
    model_facts: ClassVar[tuple[str, ...]] = ()  # model_config.json keys a scored summary keeps
    export_files: ClassVar[tuple[str, ...]] = ()  # files a served target writes into every export folder
    given_choices: ClassVar[tuple[str, ...]] = ()  # values a user may give at inference (serkit-infer --<name>)
    given_help: ClassVar[str] = ""  # what serkit-infer --<name> says about the value
    show_option: ClassVar[tuple[str, str] | None] = None  # (flag, help) that shows the output; None: always shown
    prediction_alias: ClassVar[str | None] = None  # an attribute of inference.Prediction giving the output
    # Whether the target teaches the model from an utterance without a class (the data directory's
    # ambiguous ones, serkit.data.datadir.AMBIGUOUS_DIR): training on those needs one such active target.
    learns_unlabelled: ClassVar[bool] = False

    def __init__(self, hparams: dict):
        self.hparams = hparams

    # ---- configuration
    @classmethod
    def from_config(cls, hparams: dict) -> "Target | None":
        """The target as ``hparams`` configures it, or None when the config does not use it at all."""
        return cls(hparams)

    @property
    def weight(self) -> float:
        """The weight of the loss part (the config's :attr:`weight_option`, 1 without one)."""
        if self.weight_option is None:
            return 1.0
        weight = float(self.hparams.get(self.weight_option, 0.0) or 0.0)
        if weight < 0:
            raise TargetError(f"{self.weight_option} must be >= 0, got {weight}")
        return weight

    @property
    def active(self) -> bool:
        """Whether the target is trained (a positive weight): only then its files are read."""
        return self.weight > 0

    def check_family(self, family) -> None:
        """Raise :class:`TargetError` when ``family`` (a :class:`serkit.model.family.ModelFamily`) cannot
        train this target as configured (e.g. a head it has no outputs for)."""

    # ---- stage 1 (asked by the recipe's planner, before any config is built)
    @classmethod
    def stage1_need(cls, settings: dict) -> str | None:
        """What stage 1 must make for a config with these top-level ``settings`` (e.g. a kind of
        tokens), or None when the config needs nothing from stage 1."""
        return None

    @classmethod
    def make_stage1(cls, need: str, data_dir: Path, lang: Path, options: dict[str, Any]) -> str:
        """Make ``need``'s files from ``data_dir`` (its inventory under ``lang``); the summary line
        for the log. ``options`` are the recipe's stage-1 options (e.g. ``bpe_units``)."""
        raise NotImplementedError(f"target {cls.name} has no stage 1")

    @classmethod
    def stage1_options(cls, need: str, lang: Path) -> dict[str, str]:
        """The training options that point a config at what stage 1 made for ``need``."""
        return {}

    # ---- data
    def files(self) -> tuple[str, ...]:
        """The data-directory files an active target reads."""
        return ()

    def prepare(self) -> None:
        """Read what the target needs besides per-utterance values (e.g. a token inventory), once."""

    def read(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, Any]:
        """Each utterance's value, read from :meth:`files` and checked (errors name the file and fix)."""
        return {}

    def read_unlabelled(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, Any]:
        """:meth:`read` for utterances without a class (``ambiguous/``); a class-based target overrides it
        with a value its loss ignores."""
        return self.read(data_dir, utt_ids)

    def fields(self, value: Any) -> dict[str, Any]:
        """The batch fields of one utterance's value."""
        return {}

    def describe_values(self, values: dict[str, Any]) -> str:
        """What the log adds about one split's values (e.g. how many utterances have none)."""
        return ""

    # ---- model
    def head_sizes(self) -> dict[str, Any]:
        """Keyword arguments of :func:`serkit.model.build.build_model` sizing this target's head
        (``utterance_heads`` is a mapping, merged with other targets')."""
        return {}

    def model_inputs(self, batch) -> dict[str, Tensor]:
        """Keyword arguments of :meth:`serkit.model.SERModel.forward` from a batch (e.g. ``prior``)."""
        return {}

    def inventories(self) -> dict[str, list[str]]:
        """Keyword arguments of :func:`serkit.model.build.model_config`: the labels the head indexes."""
        return {}

    def loss(self, out, batch) -> Tensor:
        """The unweighted loss part of a batch (asked only with a positive weight)."""
        raise NotImplementedError

    def read_back(self) -> None:
        """Read (and log) what the loss left on the device, once per stage or every few steps."""

    # ---- outputs and scores
    def keep(self, out, batch) -> dict[str, list]:
        """Per-utterance outputs of a batch to keep (outside training), by name."""
        return {}

    def columns(self, kept: dict[str, list]) -> dict[str, list[str]]:
        """Extra ``test_predictions.tsv`` columns (one string per utterance) from all kept outputs."""
        return {}

    def epoch_scores(self, kept: dict[str, list]) -> dict[str, float | None]:
        """The target's scores of a validation or test pass (null when inactive), e.g. ``{"PER": 0.4}``."""
        return {}

    @staticmethod
    def score(preds, model_facts: dict) -> dict[str, Any]:
        """The target's figures for a set of predictions read from files (a fold, or all folds pooled)."""
        return {}

    @staticmethod
    def reports(summary: dict) -> bool:
        """Whether a scored summary carries this target's figures (then RESULTS.md shows its columns)."""
        return False

    @staticmethod
    def describe(model_facts: dict) -> list[str]:
        """What RESULTS.md says about the target in a model's description, e.g. ``CTC targets char``."""
        return []

    # ---- serving (export folders and inference), from an exported model's config
    @classmethod
    def served(cls, config: dict, given: str | None = None) -> "Target | None":
        """The target as the exported model's ``config`` records it, or None when the model has no part
        of it; ``given`` is the user's value for it (one of :attr:`given_choices`). Raise
        :class:`TargetError` when the model cannot be served as asked (e.g. an input nobody gives)."""
        return None

    @property
    def has_output(self) -> bool:
        """Whether the served model has an output for the target (a head), or only its export files."""
        return True

    def check_serving(self) -> None:
        """Raise :class:`TargetError` when inference cannot run as asked (e.g. an input nobody gives)."""

    def write_export(self, out_dir: Path) -> None:
        """Write :attr:`export_files` into the export folder ``out_dir``."""

    def check_export(self, export_dir: Path) -> None:
        """Raise :class:`TargetError` naming the file when :attr:`export_files` disagree with the config."""

    @property
    def second_pass(self) -> bool:
        """Whether the model runs twice: the target feeds the model its own prediction of the first pass."""
        return False

    def serving_inputs(self, size: int, out=None) -> dict[str, Tensor]:
        """Keyword inputs of :meth:`serkit.model.SERModel.forward` for ``size`` utterances at inference;
        with :attr:`second_pass`, asked again with the first pass's output ``out``."""
        return {}

    def output_piece(self, out, row: int) -> Any:
        """Row ``row``'s part of a model output, to decode (None: the model has no output for the target)."""
        return None

    def combine(self, pieces: list[tuple[int, int, Any]]) -> Any:
        """One recording's piece from its windows' ``(start sample, end sample, piece)``, in time order."""
        return pieces[0][2]

    def decode(self, piece: Any) -> Any:
        """The decoded per-utterance value (what ``Prediction.outputs`` holds), None without a piece."""
        return None

    def output_text(self, value: Any) -> str:
        """The value in ``serkit-infer``'s text line."""
        return f"{self.name}={value}"

    def output_json(self, value: Any) -> dict[str, Any]:
        """The value's fields in ``serkit-infer --json`` objects (None: not shown)."""
        return {self.name: value}


def read_values(data_dir: Path, name: str, utt_ids: Sequence[str], why: str) -> dict[str, str]:
    """``name``'s values for ``utt_ids``; a missing file or utterance is an error saying ``why`` it is needed."""
    path = Path(data_dir) / name
    if not path.is_file():
        raise DataDirError(f"{path}: not found; {why}")
    values = read_map(path)
    missing = [utt for utt in utt_ids if utt not in values]
    if missing:
        raise DataDirError(f"{path}: {len(missing)} utterance(s) of the fold are missing ({few(missing)}); the fold "
                           "lists do not match the data directory: re-create the folds (stage 2) after changing "
                           "the data directory")
    return values


def few(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")
