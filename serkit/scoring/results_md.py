"""A recipe's ``RESULTS.md``: one section per scored experiment, plus comparison tables.

Each section sits between ``<!-- serkit:begin KEY -->`` and ``<!-- serkit:end KEY -->`` markers.
Re-scoring an experiment replaces its own section and leaves every other section, and any text
written by hand outside the markers, untouched. A section records what is needed to trust or
rerun the figures: environment, git commit, config, command, protocol, tables and figure links.
All figures are percentages with one decimal.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

from serkit.scoring import comparison, stats
from serkit.atomic import atomic_write_text
from serkit.errors import SerkitError
# The environment block's facts have one owner, shared with the fold directories' provenance.json.
from serkit.training.provenance import environment_info, git_state
from serkit.targets import target_classes

logger = logging.getLogger(__name__)

PROTOCOLS = {
    "loso": "leave-one-speaker-out: each fold tests one speaker; the other speaker of the same "
            "session is the validation set (checkpoint selection never sees the test speaker)",
    "loso_session": "leave-one-session-out: each fold tests one session (both its speakers)",
    "random": "random speaker-dependent 80/10/10 utterance split (one fold; only for comparison "
              "with published speaker-dependent numbers)",
}

HEADER = ("# Results\n\n"
          "Written by `python -m serkit.bin.score` and `python -m serkit.bin.compare`. Each section between "
          "`serkit:begin`/`serkit:end` markers is replaced when re-scored; text outside them is kept.\n\n"
          "WA = accuracy (correct / total); UA = mean per-class recall; figures in %.\n")

EXPLANATION = (
    "WA = accuracy; UA = mean per-class recall; macro-F1 over classes present; "
    "*mean ± std* averages the per-fold figures (sample std over folds); "
    "*pooled* scores all folds' predictions together.")
SIGNIFICANT = "*"  # the mark of a row significantly different from the comparison's reference row


class ResultsError(SerkitError):
    """RESULTS.md cannot be updated safely (e.g. a section's markers are broken)."""


# --------------------------------------------------------------------------------------------
# Formatting helpers


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal; '–' when undefined."""
    return "–" if value is None else f"{100 * value:.1f}"


def pct_pm(mean: float | None, std: float | None) -> str:
    """'mean ± std' in percent; only the mean when the spread is undefined (one fold)."""
    return pct(mean) if std is None else f"{pct(mean)} ± {pct(std)}"


def pct_ci(value: float | None, interval: Sequence[float] | None) -> str:
    """A percentage followed by its confidence interval, ``83.3 [70.0, 95.0]``; the value alone without one."""
    return pct(value) if interval is None else f"{pct(value)} [{pct(interval[0])}, {pct(interval[1])}]"


def ci_note(summary: dict) -> str | None:
    """How the pooled figures' intervals were drawn (``summary.json``'s ``bootstrap``), or None without them."""
    info = summary.get("bootstrap")
    if not info or summary["pooled"].get("UA_ci") is None:
        return None
    return (f"*pooled* WA and UA carry a {100 * info['level']:.0f} % confidence interval [low, high]: percentile "
            f"bootstrap over the {info['n_units']} test speakers ({info['n_resamples']} resamples of speakers "
            f"with replacement, each pooling its speakers' utterances; seed {info['seed']}), since utterances "
            "of one speaker are not independent.")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table, first column left-aligned, the rest right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Experiment sections


def experiment_key(summary: dict) -> str:
    """The section key of an experiment: ``<tag>/<protocol>``."""
    return f"{summary['tag']}/{summary['protocol']}"


def base_columns() -> list[tuple[str, str]]:
    """(heading, summary key) of the primary target's figures (WA, UA, macro-F1), shown for every experiment."""
    return list(target_classes()[0].results_columns)


def reporting_targets(summaries: Sequence[dict]) -> list:
    """The auxiliary targets (:mod:`serkit.targets`) whose figures any of ``summaries`` carries."""
    return [target for target in target_classes()[1:] if any(target.reports(s) for s in summaries)]


def score_columns(summaries: Sequence[dict]) -> list[tuple[str, str]]:
    """(heading, summary key) of the figures to show: WA, UA, macro-F1, plus each reporting target's."""
    return base_columns() + [column for target in reporting_targets(summaries)
                                 for column in target.results_columns]


def count_columns(summary: dict) -> list[tuple[str, str]]:
    """(heading, summary key) of the counts shown after the figures (e.g. the CTC target's *no tok*)."""
    return [column for target in reporting_targets([summary]) for column in target.results_counts]


def absent_classes(summary: dict, fold: str) -> list[str]:
    """Classes the fold's test set does not hold (empty reference rows): its UA averages the others."""
    confusion = summary["folds"][fold]["confusion"]
    return [c for c, row in zip(summary["classes"], confusion) if not sum(row)]


def _fold_label(summary: dict, fold: str) -> str:
    absent = absent_classes(summary, fold) if fold in summary["folds"] else []
    n = len(summary["classes"])
    return fold + (f" (UA over {n - len(absent)} of {n} classes: test lacks {', '.join(absent)})" if absent else "")


def fold_table(summary: dict) -> str:
    """Per-fold WA/UA/macro-F1 (+ the auxiliary targets' figures and counts, e.g. PER/suffix-acc/no tok
    with a CTC head), missing folds, mean ± std and pooled rows."""
    columns, counts = score_columns([summary]), count_columns(summary)
    header = ["fold", "utts", *(heading for heading, _ in columns), *(heading for heading, _ in counts)]
    rows = []
    for name in summary["expected_folds"]:
        fold = summary["folds"].get(name)
        if fold is None:
            rows.append([name, "missing"] + [""] * (len(header) - 2))
            continue
        rows.append([_fold_label(summary, name), fold["n_utts"], *(pct(fold[key]) for _, key in columns),
                     *(_count(fold[key]) for _, key in counts)])
    mean, std, pooled = summary["mean"], summary["std"], summary["pooled"]
    n_folds = len(summary["folds"])
    rows.append([f"**mean ± std ({n_folds} folds)**", "", *(pct_pm(mean[key], std[key]) for _, key in columns),
                 *([""] * len(counts))])
    rows.append([f"**pooled ({n_folds} folds)**", pooled["n_utts"],
                 *(pct_ci(pooled[key], pooled.get(f"{key}_ci")) for _, key in columns),
                 *(_count(pooled[key]) for _, key in counts)])
    table = markdown_table(header, rows)
    if summary["missing_folds"]:
        table += (f"\n\n**Partial experiment**, missing folds: {', '.join(summary['missing_folds'])}; "
                  "the mean and pooled rows cover the other folds only.")
    return table


def _count(value: int | None) -> str:
    return "–" if value is None else str(value)


def recall_table(summary: dict) -> str:
    """Per-class recall per fold, mean ± std and pooled."""
    classes = summary["classes"]
    rows = [[name, *(pct(fold["recall"][c]) for c in classes)] for name, fold in summary["folds"].items()]
    rows.append(["**mean ± std**", *(pct_pm(summary["mean"]["recall"][c], summary["std"]["recall"][c])
                                    for c in classes)])
    rows.append(["**pooled**", *(pct(summary["pooled"]["recall"][c]) for c in classes)])
    return markdown_table(["recall", *classes], rows)


def confusion_table(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Counts with the row percentage in brackets; rows = reference, columns = hypothesis."""
    rows = []
    for label, row in zip(classes, confusion):
        total = sum(row)
        cells = [f"{n} ({100 * n / total:.1f})" if total else str(n) for n in row]
        rows.append([f"**{label}**", *cells, str(total)])
    return markdown_table(["ref \\ hyp", *classes, "total"], rows)


def layer_weights_table(summary: dict) -> str | None:
    """Learned layer weights (%) per fold and their mean; None for models without layer fusion."""
    weights = summary["layer_weights"]
    if not weights["per_fold"]:
        return None
    n_layers = len(weights["mean"])
    rows = [[name, *(pct(w) for w in values)] for name, values in weights["per_fold"].items()]
    rows.append(["**mean**", *(pct(w) for w in weights["mean"])])
    return markdown_table(["layer", *(str(i) for i in range(n_layers))], rows)


def experiment_section(
    summary: dict,
    results_path: str | Path,
    config: str | Path | None = None,
    overrides: str | None = None,
    command: str | None = None,
    scored_with: str | None = None,
    environment: dict[str, str] | None = None,
    commit: str | None = None,
) -> str:
    """The markdown of one experiment's section (without its markers).

    ``command`` is the training command (from the recipe), ``scored_with`` the scoring command.
    ``environment`` and ``commit`` default to this machine's and this checkout's; tests pass them.
    """
    results_dir = Path(os.path.abspath(results_path)).parent
    command, scored_with = (portable_text(text, results_dir) if text else text for text in (command, scored_with))
    if overrides and not Path(overrides).is_file():
        overrides = portable_text(overrides, results_dir)
    environment = environment if environment is not None else environment_info()
    commit = commit if commit is not None else git_state(results_dir, ignore=results_path)
    scores_dir = Path(summary["exp_dir"]) / "scores"
    model = summary.get("model", {})

    parts = [f"## {summary['tag']} / {summary['protocol']}", ""]
    status = "complete" if summary["complete"] else f"PARTIAL, missing {', '.join(summary['missing_folds'])}"
    parts.append(f"Scored {summary['scored_at']}; {len(summary['folds'])} of {len(summary['expected_folds'])} "
                 f"folds ({status}); classes {', '.join(summary['classes'])}; model {model_description(model)}.")
    parts += ["", "**Protocol**: " + protocol_description(summary["protocol"], summary.get("protocol_info")), ""]
    parts += [f"**Warning**: {line}" for line in (summary.get("protocol_info") or {}).get("data_warnings", [])]
    parts += [""] if (summary.get("protocol_info") or {}).get("data_warnings") else []
    if model.get("precision"):  # networks trained by SERBrain; closed-form fits (eGeMAPS + SVM) have none
        parts += ["**Precision**: " + precision_description(model["precision"]), ""]
    parts += ["**Environment** (scoring machine)", "", "```"]
    parts += [f"{key:<13}{value}" for key, value in environment.items()]
    parts += [f"{'git commit':<13}{commit}", "```", ""]
    parts += ["**Command**: " + (f"`{command}`" if command else "not recorded (pass --command)"), ""]
    if scored_with:
        parts += [f"**Scored with**: `{scored_with}`", ""]
    parts += _config_block(config, overrides, results_dir)
    explanation = EXPLANATION + "".join(" " + target.results_explanation for target in reporting_targets([summary]))
    explanation += (" " + ci_note(summary)) if ci_note(summary) else ""
    parts += ["### Scores (%)", "", explanation, "", fold_table(summary), ""]
    parts += ["### Per-class recall (%)", "", recall_table(summary), ""]
    parts += ["### Pooled confusion matrix", "", "Counts (row %); rows = reference, columns = hypothesis.", "",
              confusion_table(summary["pooled"]["confusion"], summary["classes"]), ""]
    weights = layer_weights_table(summary)
    if weights is not None:
        parts += ["### Learned layer weights (%)", "",
                  "Layer 0 = CNN features entering the Transformer; uniform start = "
                  f"{100 / len(summary['layer_weights']['mean']):.1f}.", "", weights, ""]
    parts += ["### Figures", ""] + _figure_links(summary, scores_dir, results_dir) + [""]
    return "\n".join(parts)


def model_description(model: dict) -> str:
    """``tim_net`` or ``w2v2_mtl (mtl_lambda = 0.1, CTC targets emophone)`` from a summary's model facts."""
    details = [f"{name} = {value}" for name, value in (model.get("options") or {}).items()]
    for target in target_classes():
        details += target.describe(model)
    if model.get("ensemble"):
        details.append(f"mean posterior of {len(model['ensemble']['of'])} seeds")
    name = f"`{model.get('family', 'unknown')}`"
    return name + (f" ({', '.join(details)})" if details else "")


def precision_description(precision: dict) -> str:
    """The arithmetic the folds were trained and evaluated in (``model_config.json``'s ``precision``)."""
    if len(precision) == 1:
        return next(iter(precision)) + "."
    return "; ".join(f"{text} (folds {', '.join(folds)})" for text, folds in precision.items()) + "."


def protocol_description(protocol: str, info: dict | None = None) -> str:
    """A sentence describing the folds: stage 2's own description of the folds it built
    (``protocol.json``) when there is one, else the protocol's generic description; speaker-dependent
    protocols are labelled as such in bold."""
    text = (info or {}).get("description") or PROTOCOLS.get(protocol)
    sentence = f"`{protocol}`: {text.rstrip('.')}." if text else f"`{protocol}` (no description known to serkit)."
    if (info or {}).get("speaker_dependent") or (info is None and protocol == "random"):
        sentence = "**speaker-dependent** " + sentence
    return sentence


def _config_block(config: str | Path | None, overrides: str | None, results_dir: Path) -> list[str]:
    """The config file's path and contents (folded), and the overrides."""
    if config is None:
        lines = ["**Config**: not recorded (pass --config)"]
    else:
        path = Path(config)
        if not path.is_file():
            raise ResultsError(f"{path}: config file not found (fix the --config path)")
        lines = [f"**Config**: `{_relative(path, results_dir)}`", "", "<details><summary>config contents</summary>",
                 "", "```yaml", path.read_text(encoding="utf-8").rstrip("\n"), "```", "", "</details>"]
    if overrides and Path(overrides).is_file():
        # A recipe's override file (conf/train.yaml): show it like the config it changes.
        path = Path(overrides)
        lines += ["", f"**Overrides**: `{_relative(path, results_dir)}`", "", "```yaml",
                  path.read_text(encoding="utf-8").rstrip("\n"), "```", ""]
    else:
        lines += ["", "**Overrides**: " + (f"`{overrides}`" if overrides else "none"), ""]
    return lines


#: An absolute POSIX path in a command line: a '/' that starts a word or follows '=' (``--data=/x``),
#: not one inside a relative path, a URL or ``$VAR/x``.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~$:/}-])/[^\s'\"`|<>;:,()]+")


def portable_text(text: str, recipe_dir: str | Path) -> str:
    """``text`` (a command line) with no path of the machine it ran on, for RESULTS.md.

    RESULTS.md is committed and read elsewhere, so a path there must mean the same on any checkout:
    a path inside the recipe, or inside the checkout that holds it, becomes relative to the recipe
    (``exp/...``, ``../../conf/w2v2_mtl.yaml``). Any other absolute path (a corpus passed by hand
    rather than through ``db.sh``, whose variable ``ser.sh`` writes as ``$IEMOCAP``) keeps only its
    last component, as ``<...>/IEMOCAP_full_release``, and a warning says so.
    """
    recipe_dir = Path(os.path.abspath(recipe_dir))
    # (recipe, anchor) for each spelling of the recipe: through symlinks, or resolved (``pwd -P``)
    anchors = [(recipe, anchor) for recipe in (recipe_dir, recipe_dir.resolve())
               for anchor in [recipe] + [parent for parent in recipe.parents if (parent / ".git").exists()][:1]]

    def replace(match: re.Match) -> str:
        path = Path(match.group(0))
        for recipe, anchor in anchors:
            if path == anchor or anchor in path.parents:
                return Path(os.path.relpath(path, recipe)).as_posix()
        logger.warning("%s: outside the recipe and its checkout; RESULTS.md records it as <...>/%s "
                       "(name a corpus through db.sh to record its variable)", path, path.name)
        return f"<...>/{path.name}"

    return ABSOLUTE_PATH.sub(replace, text)


def _figure_links(summary: dict, scores_dir: Path, results_dir: Path) -> list[str]:
    files = summary.get("files", {})
    titles = {"confusion_pooled": "pooled confusion matrix", "layer_weights": "layer weights",
              "learning_curves": "learning curves"}
    links = []
    for role in ["confusion_pooled", "layer_weights", "learning_curves"] + [f"confusion_{n}" for n in summary["folds"]]:
        if role in files:
            title = titles.get(role, role.replace("_", " "))
            links.append(f"- [{title}]({_relative(scores_dir / files[role], results_dir)})")
    links.append(f"- [summary.json]({_relative(scores_dir / 'summary.json', results_dir)})")
    return links


def _relative(path: Path, start: Path) -> str:
    """A link target relative to RESULTS.md (absolute only across drives), with '/' separators.

    Symlinks are kept as they are: a link through exp/ must not name the disk exp/ points to.
    """
    try:
        return Path(os.path.relpath(os.path.abspath(path), start)).as_posix()
    except ValueError:
        return Path(os.path.abspath(path)).as_posix()


# --------------------------------------------------------------------------------------------
# Comparison tables (e.g. the lambda ablation)


def comparison_order(summaries: Sequence[dict]) -> list[dict]:
    """Families in the order first given; within a family, by increasing option values (e.g. lambda)."""
    families = list(dict.fromkeys(s.get("model", {}).get("family") for s in summaries))

    def key(item: tuple[int, dict]):
        index, summary = item
        model = summary.get("model", {})
        values = [v for v in (model.get("options") or {}).values() if isinstance(v, (int, float))]
        return families.index(model.get("family")), values, index

    return [summary for _, summary in sorted(enumerate(summaries), key=key)]


def comparison_table(summaries: Sequence[dict], n_resamples: int = stats.N_RESAMPLES) -> str:
    """One row per experiment (its seeds merged): model, folds, mean ± std and pooled WA/UA/macro-F1
    (+ token scores), the pooled UA's confidence interval and its paired test against the reference row."""
    return _comparison(summaries, n_resamples)[0]


def _comparison(summaries: Sequence[dict], n_resamples: int) -> tuple[str, str, list[dict]]:
    """The comparison table, the legend of its figures, interval and significance marks, and one point
    per row for :func:`serkit.scoring.plots.plot_comparison`."""
    columns = score_columns(summaries)
    rows = comparison.group_seeds(comparison_order(summaries))
    tests = comparison.reference_tests(rows, n_resamples)
    reference = comparison.reference_index(rows)
    header = ["experiment", "model", "folds", *(f"{heading} mean ± std" for heading, _ in columns),
              *(f"pooled {heading}" for heading, _ in base_columns()), "pooled UA 95 % CI",
              f"UA vs {rows[reference].tag}"]
    lines, points = [], []
    for index, row in enumerate(rows):
        s = row.first
        folds = f"{len(s['folds'])}/{len(s['expected_folds'])}"
        if s["missing_folds"]:
            folds += " (partial)"
        dependent = (s.get("protocol_info") or {}).get("speaker_dependent")
        interval = row.ua_ci(n_resamples)
        lines.append([f"{row.tag} / {s['protocol']}" + (" (**speaker-dependent**)" if dependent else ""),
                      model_description(s.get("model", {})), folds,
                      *(pct_pm(*row.figure("mean", key)) for _, key in columns),
                      *(pct_pm(*row.figure("pooled", key)) for _, key in base_columns()),
                      f"[{pct(interval[0])}, {pct(interval[1])}]" if interval else "–",
                      "reference" if index == reference else _test_cell(tests[index])])
        points.append({"label": f"{row.tag} / {s['protocol']}", "ua": 100 * row.figure("pooled", "UA")[0],
                       "interval": [100 * v for v in interval] if interval else None,
                       "folds": [100 * run["folds"][name]["UA"] for run in row.runs for name in run["folds"]],
                       "reference": index == reference,
                       "mark": SIGNIFICANT if tests[index] and tests[index]["significant"] else ""})
    return markdown_table(header, lines), _comparison_legend(rows, tests, n_resamples), points


def _test_cell(test: dict | None) -> str:
    """``+12.3 (p 0.004, Holm 0.012) *``: the pooled-UA difference in points, its p-values and the mark."""
    if test is None:
        return "–"
    return (f"{100 * test['diff']:+.1f} (p {test['p']:.3f}, Holm {test['p_holm']:.3f})"
            + (f" {SIGNIFICANT}" if test["significant"] else ""))


def _comparison_legend(rows: Sequence, tests: Sequence[dict | None], n_resamples: int) -> str:
    several = [row.tag for row in rows if len(row.runs) > 1]
    tested = sum(test is not None for test in tests)
    reference = rows[comparison.reference_index(rows)].tag
    parts = ["Figures in %; *mean ± std* over folds (sample std), *pooled* over all folds' predictions."]
    if several:
        parts.append(f"Rows with several seeds ({', '.join(several)}) show, for every figure, the mean ± std "
                     "over seeds of each seed's figure (its fold mean, its pooled figure); each seed's own "
                     "section has its per-fold figures, and the interval and test use the seed-averaged "
                     "confusion matrices of each speaker.")
    parts.append("*pooled UA 95 % CI*: percentile bootstrap over the test speakers (utterances of one speaker "
                 "are not independent), drawn when each run was scored (for seed groups: here, "
                 f"{n_resamples} resamples); – where a run was scored without its data directory (no speakers).")
    parts.append(f"*UA vs {reference}*: pooled-UA difference from the reference row in points; p from a paired "
                 f"permutation test that swaps whole speakers' predictions between the two systems ({n_resamples} "
                 f"resamples, exact when there are few speakers), Holm-adjusted over the {tested} row(s) tested; "
                 f"`{SIGNIFICANT}` marks a difference significant at p < 0.05 after Holm's correction; – where no "
                 "paired test is possible (no per-speaker figures, or other test utterances than the reference's).")
    return " ".join(parts)


def per_fold_comparison(summaries: Sequence[dict]) -> str:
    """UA of every fold (rows) for every experiment (columns), then mean and pooled."""
    ordered = comparison_order(summaries)
    folds = list(dict.fromkeys(name for s in ordered for name in s["expected_folds"]))
    rows = [[_fold_label(ordered[0], name) if name in ordered[0]["folds"] else name,
             *(pct(s["folds"][name]["UA"]) if name in s["folds"] else "missing" for s in ordered)] for name in folds]
    rows.append(["**mean**", *(pct(s["mean"]["UA"]) for s in ordered)])
    rows.append(["**pooled**", *(pct(s["pooled"]["UA"]) for s in ordered)])
    return markdown_table(["UA per fold", *(s["tag"] for s in ordered)], rows)


def comparison_section(title: str, summaries: Sequence[dict], n_resamples: int = stats.N_RESAMPLES,
                       figure: tuple[Path, str] | None = None) -> str:
    """The markdown of a comparison section (without its markers). ``figure`` = (the PNG to draw, its
    link relative to RESULTS.md): the section then shows the rows' pooled UA with intervals as a picture."""
    protocols = sorted({s["protocol"] for s in summaries})
    parts = [f"## Comparison: {title}", ""]
    if len(protocols) > 1:
        parts += [f"**Warning**: the experiments use different protocols ({', '.join(protocols)}); "
                  "their figures are not directly comparable.", ""]
    table, legend, points = _comparison(summaries, n_resamples)
    parts += [legend, "", table, ""]
    if figure is not None:
        from serkit.scoring import plots  # matplotlib only where a picture is drawn
        path, link = figure
        plots.plot_comparison(path, points, chance=100.0 / len(summaries[0]["classes"]), title=title)
        parts += [f"![{title}: pooled UA with 95 % intervals and each fold's UA]({link})", ""]
    parts += [per_fold_comparison(summaries), ""]
    return "\n".join(parts)


def comparison_key(title: str) -> str:
    """The section key of a comparison: ``compare:<title as a slug>``."""
    return "compare:" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "untitled")


# --------------------------------------------------------------------------------------------
# Updating the file


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- serkit:begin {key} -->", f"<!-- serkit:end {key} -->"


def replace_section(text: str, key: str, section: str, where: str = "RESULTS.md") -> str:
    """``text`` with the section ``key`` replaced by ``section``, or appended if new."""
    begin, end = _markers(key)
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    n_begin, n_end = text.count(begin), text.count(end)
    if n_begin == 0 and n_end == 0:
        return text.rstrip("\n") + "\n\n" + block if text.strip() else block
    if n_begin != 1 or n_end != 1 or text.index(begin) > text.index(end):
        raise ResultsError(
            f"{where}: the markers of section {key!r} are broken ({n_begin} begin, {n_end} end); "
            f"fix them by hand so that '{begin}' is followed by exactly one '{end}'")
    start = text.index(begin)
    stop = text.index(end) + len(end)
    if text[stop:stop + 1] == "\n":
        stop += 1
    return text[:start] + block + text[stop:]


def update_results(results_path: str | Path, key: str, section: str) -> None:
    """Write ``section`` as section ``key`` of RESULTS.md (created if absent), atomically."""
    path = Path(results_path)
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    new_text = replace_section(text, key, section, where=str(path))
    atomic_write_text(path, new_text)
    logger.info("%s: wrote section %s", path, key)
