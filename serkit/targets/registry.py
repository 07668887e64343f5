"""The targets serkit knows, by name: one line per target, and the set a config trains.

Targets are imported on first use. The first entry is the primary target (emotion); the others are
auxiliary: each decides from the config whether it is used (:meth:`Target.from_config`) and whether
it is trained (a positive weight, :attr:`Target.active`). The generic layers (data loading, the
trainer, scoring, RESULTS.md) loop over :class:`TargetSet` or :func:`target_classes`, export and
inference over :func:`served_targets`, and name none.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

from serkit.targets.base import Target, TargetError

TARGETS = {
    "emotion": "serkit.targets.emotion:EmotionTarget",
    "ctc": "serkit.targets.ctc:CTCTarget",
    "gender": "serkit.targets.gender:GenderTarget",
    "votes": "serkit.targets.votes:VotesTarget",
}


def target_class(name: str) -> type[Target]:
    """The target class registered as ``name``."""
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    module_name, class_name = TARGETS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def target_classes() -> list[type[Target]]:
    """Every registered target class, the primary one first."""
    return [target_class(name) for name in TARGETS]


def stage1_files() -> tuple[str, ...]:
    """The data-directory files stage 1 makes for any target (stale once stage 0 runs again)."""
    return tuple(name for cls in target_classes() for name in cls.stage1_files)


def served_targets(config: dict, given: dict[str, str] | None = None) -> list[Target]:
    """The targets an exported model's ``config`` serves besides the primary one (:meth:`Target.served`),
    each with the user's value of ``given`` (target name -> value)."""
    given = dict(given or {})
    for name, value in given.items():
        choices = target_class(name).given_choices
        if value not in choices:
            raise TargetError(f"{name}: {value!r} cannot be given; "
                              + (f"give one of {', '.join(choices)}" if choices else "it is never an input"))
    served = [cls.served(config, given.get(cls.name)) for cls in target_classes()[1:]]
    return [target for target in served if target is not None]


def prediction_aliases() -> dict[str, str]:
    """Attribute name of ``Prediction`` -> the target whose output it gives (:attr:`Target.prediction_alias`)."""
    return {cls.prediction_alias: cls.name for cls in target_classes() if cls.prediction_alias}


def stage1_needs(settings: dict) -> tuple[tuple[str, str], ...]:
    """What stage 1 must make for a config with these top-level settings: ``(target, need)`` pairs."""
    needs = ((cls.name, cls.stage1_need(settings)) for cls in target_classes())
    return tuple((name, need) for name, need in needs if need is not None)


def stage1_options(needs: Sequence[tuple[str, str]], lang: str | Path) -> dict[str, str]:
    """The training options that point a config at what stage 1 made for its ``needs``."""
    return {key: value for name, need in needs for key, value in target_class(name).stage1_options(need, Path(lang)).items()}


class TargetSet:
    """The targets one config trains (see the module docstring), asked together by the generic layers."""

    def __init__(self, targets: Sequence[Target]):
        self.targets = list(targets)
        self.primary = self.targets[0]
        self.active = [target for target in self.targets if target.active]

    @classmethod
    def from_config(cls, hparams: dict) -> "TargetSet":
        """The targets ``hparams`` uses, with their inventories read (``data_dir``, ``lang_dir`` ...)."""
        targets = [target for target in (c.from_config(hparams) for c in target_classes()) if target is not None]
        for target in targets:
            if target.active:
                target.prepare()
        return cls(targets)

    def check_family(self, family) -> None:
        """Refuse a target the model family cannot train (:meth:`Target.check_family`)."""
        for target in self.targets:
            target.check_family(family)

    # ---- data
    @property
    def sequences(self) -> tuple[str, ...]:
        return tuple(field for target in self.active for field in target.sequences)

    def read(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Every active target's value of each utterance: ``{utt: {target: value}}``."""
        values = {target.name: target.read(Path(data_dir), utt_ids) for target in self.active}
        return {utt: {name: per_utt[utt] for name, per_utt in values.items()} for utt in utt_ids}

    def read_unlabelled(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """:meth:`read` for utterances without a class (:meth:`Target.read_unlabelled`); refused unless an
        active target learns from them (:attr:`Target.learns_unlabelled`), since nothing else would."""
        if not any(target.learns_unlabelled for target in self.active):
            options = [f"{c.weight_option} > 0" for c in target_classes() if c.learns_unlabelled and c.weight_option]
            raise TargetError(f"{Path(data_dir)}: utterances without a class (use_ambiguous: True) teach only a target "
                              f"that learns from them; set {' or '.join(options) or 'such a target'}, or "
                              "use_ambiguous: False")
        values = {target.name: target.read_unlabelled(Path(data_dir), utt_ids) for target in self.active}
        return {utt: {name: per_utt[utt] for name, per_utt in values.items()} for utt in utt_ids}

    def fields(self, labels: dict[str, Any]) -> dict[str, Any]:
        """One utterance's batch fields, from its values."""
        fields: dict[str, Any] = {}
        for target in self.active:
            fields.update(target.fields(labels[target.name]))
        return fields

    def describe(self, labels: Sequence[dict[str, Any]]) -> str:
        """What the log adds about one split's values."""
        return "".join(target.describe_values({index: values[target.name] for index, values in enumerate(labels)})
                       for target in self.active)

    # ---- model
    def head_sizes(self) -> dict[str, Any]:
        sizes: dict[str, Any] = {}
        for target in self.active:
            for key, size in target.head_sizes().items():
                sizes[key] = {**sizes[key], **size} if isinstance(size, dict) and key in sizes else size
        return sizes

    def model_inputs(self, batch) -> dict[str, Any]:
        return {key: value for target in self.active for key, value in target.model_inputs(batch).items()}

    def inventories(self) -> dict[str, list[str]]:
        return {key: names for target in self.active for key, names in target.inventories().items()}

    def loss(self, out, batch):
        """``(total, {part: value})``: the primary part plus each active target's weighted part (a target
        used only as an input, weight 0, has none)."""
        total, parts = None, {}
        for target in self.active:
            if target.weight == 0:
                continue
            part = target.loss(out, batch)
            parts[target.part] = part
            weighted = part if target.weight_option is None else target.weight * part
            total = weighted if total is None else total + weighted
        return total, parts

    def read_back(self) -> None:
        for target in self.active:
            target.read_back()

    # ---- outputs and scores
    def keep(self, out, batch) -> dict[str, dict[str, list]]:
        return {target.name: target.keep(out, batch) for target in self.active}

    def columns(self, kept: dict[str, dict[str, list]]) -> dict[str, list[str]]:
        columns: dict[str, list[str]] = {}
        for target in self.targets:
            columns.update(target.columns(kept.get(target.name, {})))
        return columns

    def epoch_scores(self, kept: dict[str, dict[str, list]]) -> dict[str, float | None]:
        scores: dict[str, float | None] = {}
        for target in self.targets:
            scores.update(target.epoch_scores(kept.get(target.name, {})))
        return scores
