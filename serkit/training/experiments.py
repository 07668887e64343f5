"""Which experiments a recipe's stages 3-5 run: one per family (and per CTC weight where it has one).

``run.sh --models "w2v2_mtl tim_net egemaps_svm" --lambdas "0 0.1"`` becomes a list of experiments,
each with a self-describing name (Kaldi/ESPnet convention), the shared config of its family
(``conf/<family>.yaml``), the recipe's override file for that family (``conf/<family>.yaml`` in the
recipe, if any) and the command-line overrides. The shell loops over the list; the decisions live
here, tested:

- the name carries only the options the family has: ``lambda<L>`` for a family that can carry the
  CTC head, and only when its weight is set (the user's ``--lambdas``, or a non-zero config default);
  never for eGeMAPS + SVM;
- ``--lambdas`` applies to families with a CTC head option and is ignored by others;
- ``--ctc_targets "emophone char"`` runs each CTC experiment once per target kind (Li et al.'s
  emotion-phonemes against Cai et al.'s characters), the kind in the name unless it is the default
  ``emophone``;
- ``--precision fp32|bf16|fp16|auto`` trains every network in that arithmetic instead of its config's
  (:mod:`serkit.training.precision`), named in the experiment (``..._fp32_seed1``) so runs in two precisions
  sit side by side; families fitted in closed form (eGeMAPS + SVM) ignore it;
- the generalisation switches (docs/models.md) are named when not at their default: ``spknorm``
  (``normalisation: speaker``), ``patience<N>``, ``avg<N>`` (``average_nbest``), ``aug`` (``augment``), ``amb``
  (``use_ambiguous``: training adds the utterances without a rater majority);
- stage 1 makes only what the experiments' targets need (:func:`serkit.targets.registry.stage1_needs`:
  e.g. the CTC tokens of the kinds they train on, none without a CTC head);
- ``--grid "gender_prior=False,True centre_weight=0,0.01"`` runs every combination of the values of a
  family's own options (:attr:`serkit.model.family.ModelFamily.options` other than ``mtl_lambda``, which
  ``--lambdas`` sweeps) as one experiment each, e.g. an ablation's rows; families without the option
  ignore it. A family with such options is always named by them (:meth:`~serkit.model.family.ModelFamily.tag`,
  from the config's values where the grid gives none), so rows of an ablation never share folds;
- ``--encoders "facebook/wav2vec2-base microsoft/wavlm-base-plus"`` runs every family with an SSL
  encoder (a config with ``encoder_source``) once per encoder, named by its short name
  (:func:`encoder_name`: ``wavlm-base-plus``); families without one run once;
- ``--seeds "1 2 3"`` runs every experiment once per seed (``..._seed1``, ``..._seed2``, ...), the
  runs of one experiment next to each other; stage 4 merges them into one row (mean ± std over
  seeds) and scores their ensemble. The seed changes training only: the folds keep ``--seed``'s.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import ruamel.yaml

from serkit.errors import SerkitError
from serkit.model.registry import UnknownFamilyError, get_family
from serkit.training.precision import PRECISIONS
from serkit.safe_yaml import NAME, load_plain_mapping, refuse_python_tags, typed_value
from serkit.targets.registry import stage1_needs


class PlanError(SerkitError):
    """The recipe's model/lambda options cannot be turned into experiments."""


@dataclass(frozen=True)
class Experiment:
    """One experiment of a recipe: its name, configs and command-line overrides."""

    tag: str
    family: str
    config: str
    overrides_file: str | None
    args: tuple[str, ...] = field(default_factory=tuple)
    ctc_targets: str | None = None  # the CTC head's kind of tokens (None: no CTC head)
    stage1: tuple[tuple[str, str], ...] = ()  # what stage 1 must make for it: (target, need) pairs


def read_config_values(config: str, overrides: str | None = None) -> dict:
    """Top-level values of a HyperPyYAML config, updated with an overrides file's (which wins).

    The config's HyperPyYAML tags are kept, not built; a ``!!python/...`` tag is refused. The
    overrides file must be a mapping of plain values (:func:`serkit.safe_yaml.load_plain_mapping`),
    so a list or a tag there stops the plan, naming the file, before any stage runs.
    """
    try:
        text = Path(config).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{config}: config file not found") from None
    refuse_python_tags(text, config)
    try:
        values = ruamel.yaml.YAML().load(text) or {}
    except ruamel.yaml.YAMLError as error:
        raise PlanError(f"{config}: not valid YAML ({error})") from None
    if not isinstance(values, dict):
        raise PlanError(f"{config}: a config must be a mapping of 'name: value' lines")
    values = dict(values)
    if overrides is not None:
        values.update(load_plain_mapping(overrides, "overrides file"))
    return values


def plan(models: Sequence[str], lambdas: Sequence[str], class_map: str, seed: int | Sequence[int], conf_dir: str,
         recipe_conf_dir: str, overrides_file: str | None = None, ctc_targets: Sequence[str] = (),
         precision: str | None = None, grid: Sequence[str] = (), encoders: Sequence[str] = ()) -> list[Experiment]:
    """The experiments of ``models`` x (the ``grid``'s combinations of the family's options) x (``encoders``
    where the family has an SSL encoder) x (``lambdas`` x ``ctc_targets`` where the family has the CTC
    option) x seeds (``seed``: one seed or several)."""
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not seeds or len(set(seeds)) != len(seeds):
        raise PlanError(f"--seeds: give each seed once, got {seeds}")
    if not models:
        raise PlanError("no model given: pass --model NAME or --models \"NAME ...\"")
    if precision and precision not in PRECISIONS:
        raise PlanError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    grid_values = parse_grid(grid)
    encoder_parts = _encoder_parts(encoders)
    experiments = []
    for name in models:
        try:
            family = get_family(name)
        except UnknownFamilyError as error:
            raise PlanError(str(error)) from None
        config = str(Path(conf_dir) / f"{name}.yaml")
        recipe_file = Path(recipe_conf_dir) / f"{name}.yaml"
        overrides = overrides_file or (str(recipe_file) if recipe_file.is_file() else None)
        for option_values in option_combinations(family.options, grid_values):
            values = {**read_config_values(config, overrides),
                      **{option: typed_value(text) for option, text in option_values.items()}}
            option_args = tuple(word for option, text in option_values.items() for word in (f"--{option}", text))
            named = [option for option in family.options if option != "mtl_lambda"]
            option_part = [family.tag(values)] if named else []
            for source, short in (encoder_parts if "encoder_source" in values else [(None, None)]):
                parts = [name] + ([Path(overrides_file).stem] if overrides_file else []) + [Path(class_map).stem]
                parts += [short] if short else []
                encoder_args = ("--encoder_source", source) if source else ()
                experiments += _experiments(name, family, config, overrides, parts, values, lambdas, ctc_targets,
                                            precision, seeds, option_part, encoder_args + option_args)
    return experiments


def _experiments(name, family, config, overrides, parts, values, lambdas, ctc_targets, precision, seeds, option_part,
                 option_args) -> list[Experiment]:
    """One family's experiments for one combination of its options (``values``: its config's, updated) and
    one encoder (or none): its lambdas x CTC targets x seeds, named ``parts`` + what varies."""
    experiments = []
    has_ctc = "mtl_lambda" in family.options
    default = float(values.get("mtl_lambda", 0) or 0)
    weights = list(lambdas) if (has_ctc and lambdas) else [None]
    for weight in weights:
        lam = default if weight is None else _weight(weight)
        named = has_ctc and (weight is not None or default > 0)
        lambda_part = [f"lambda{weight if weight is not None else _number(default)}"] if named else []
        args = option_args + (("--mtl_lambda", str(weight)) if weight is not None else ())
        configured = str(values.get("ctc_targets", "emophone"))
        for targets in (list(ctc_targets) or [configured]) if lam > 0 else [None]:
            kind_part = [targets] if targets not in (None, "emophone") else []
            trained = bool(precision) and family.trainer == "brain"
            precision_part = [precision] if trained else []
            extra = ("--ctc_targets", targets) if targets is not None and targets != configured else ()
            extra += ("--precision", precision) if trained else ()
            needs = stage1_needs(dict(values, mtl_lambda=lam if targets else 0, ctc_targets=targets or configured))
            for run_seed in seeds:
                tag = "_".join(parts + option_part + lambda_part + kind_part + switch_parts(values, family.trainer)
                               + precision_part + [f"seed{run_seed}"])
                experiments.append(Experiment(tag, name, config, overrides, args + extra, targets, needs))
    return experiments


def encoder_name(source: str) -> str:
    """The short name of an encoder in an experiment's name: the last part of its hub id or folder
    (``microsoft/wavlm-base-plus`` -> ``wavlm-base-plus``, ``db/tiny_hubert`` -> ``tiny-hubert``), with
    ``_`` (the separator of name parts) and any other character a folder name should not hold as ``-``."""
    last = Path(str(source).rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9.-]+", "-", last).strip("-")


def _encoder_parts(encoders: Sequence[str]) -> list[tuple[str, str]]:
    """``(source, short name)`` of each ``--encoders`` entry, or one ``(None, None)`` for the configs' own."""
    if not encoders:
        return [(None, None)]
    parts = [(source, encoder_name(source)) for source in encoders]
    names = [short for _, short in parts]
    if "" in names or len(set(names)) != len(names):
        raise PlanError(f"--encoders: every encoder needs its own short name in the experiment names, got "
                        f"{dict(parts)}; give each once, from folders with different names")
    return parts


def parse_grid(grid: Sequence[str]) -> dict[str, list[str]]:
    """``["name=v1,v2", ...]`` as ``{name: [v1, v2]}``, checked (names are hyperparameter names)."""
    values: dict[str, list[str]] = {}
    for item in grid:
        name, _, texts = str(item).partition("=")
        choices = [text for text in texts.split(",") if text]
        if not NAME.match(name) or not choices or name in values:
            raise PlanError(f"--grid: {item!r} is not 'option=value1,value2,...' (each option once)")
        if name == "mtl_lambda":
            raise PlanError("--grid: sweep mtl_lambda with --lambdas")
        values[name] = choices
    return values


def option_combinations(options: Sequence[str], grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the gridded values of ``options`` (one empty one when the grid names none)."""
    names = [option for option in grid if option in options]
    return [dict(zip(names, texts)) for texts in itertools.product(*(grid[name] for name in names))]


def switch_parts(values: dict, trainer: str) -> list[str]:
    """Name parts of the generalisation switches set away from their defaults (docs/models.md), wherever
    they are set (shared config, the recipe's conf/<family>.yaml, --train_overrides), so that a run with a
    switch never takes the finished folds of a run without it. Families fitted in closed form have no
    epochs: only ``normalisation`` acts on them."""
    parts = []
    if str(values.get("normalisation") or "global") == "speaker":
        parts.append("spknorm")
    if values.get("use_ambiguous"):
        parts.append("amb")
    if trainer == "brain":
        if values.get("patience") is not None:
            parts.append(f"patience{values['patience']}")
        if values.get("average_nbest") not in (None, 1):
            parts.append(f"avg{values['average_nbest']}")
        if values.get("augment"):
            parts.append("aug")
    return parts


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PlanError(f"--lambdas: {text!r} is not a number") from None
    if not value >= 0:
        raise PlanError(f"--lambdas: {text!r} must be >= 0")
    return value


def _number(value: float) -> str:
    return f"{value:g}"
