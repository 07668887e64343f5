"""Figures that say how sure they are: speaker-bootstrap intervals, paired tests, seed rows.

The experiments are built here with known predictions: which speakers a system gets right is chosen,
so the expected behaviour (an interval around the point figure, a real difference found, an
identical pair not) follows from the construction, not from the code under test.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from serkit.data import datadir
from serkit.scoring import comparison, ensemble, metrics, plots, results_md, scoring, stats
from serkit.training import expdir

CLASSES = ["ang", "hap", "sad", "neu"]


# --------------------------------------------------------------------------------------------
# stats


def test_vectorised_wa_ua_match_the_metrics_definitions():
    cms = np.random.default_rng(1).integers(0, 6, size=(20, 4, 4))
    cms[3, 2] = 0  # a class absent from the references: UA averages over the classes present
    wa, ua = stats.wa_ua(cms)
    assert wa == pytest.approx([metrics.weighted_accuracy(cm) for cm in cms])
    assert ua == pytest.approx([metrics.unweighted_accuracy(cm) for cm in cms])


def speaker_matrices(accuracies, per_class=3, n_classes=4):
    """[S, C, C]: speaker s gets round(accuracy * per_class) utterances of each class right, the rest
    mistaken for the next class."""
    cms = np.zeros((len(accuracies), n_classes, n_classes), dtype=int)
    for s, accuracy in enumerate(accuracies):
        right = round(accuracy * per_class)
        for c in range(n_classes):
            cms[s, c, c] = right
            cms[s, c, (c + 1) % n_classes] = per_class - right
    return cms


def test_bootstrap_interval_holds_the_point_figure_and_narrows_with_more_speakers():
    accuracies = [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 1]
    few = speaker_matrices(accuracies)
    many = speaker_matrices(accuracies * 6)  # the same spread over six times the speakers
    _, ua = stats.wa_ua(few.sum(axis=0))
    ci_few, ci_many = stats.bootstrap_ci(few), stats.bootstrap_ci(many)
    for ci in (ci_few, ci_many):
        assert ci["UA"][0] < ua < ci["UA"][1] and ci["WA"][0] < ua < ci["WA"][1]
    assert ci_many["UA"][1] - ci_many["UA"][0] < 0.6 * (ci_few["UA"][1] - ci_few["UA"][0])
    assert stats.bootstrap_ci(few) == ci_few  # fixed seed: the same interval on every re-score
    assert stats.bootstrap_ci(few[:1]) is None  # one speaker: no between-speaker spread to resample


def test_paired_test_finds_a_real_difference_and_not_a_chance_one():
    good = speaker_matrices([1, 1, 2 / 3, 1, 1, 2 / 3, 1, 1, 1, 2 / 3, 1, 1])
    poor = speaker_matrices([1 / 3, 2 / 3, 1 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3, 0])
    real = stats.paired_test(good, poor)
    assert real["diff"] > 0.4 and real["p"] < 0.01
    assert stats.paired_test(poor, good)["diff"] == pytest.approx(-real["diff"])
    assert stats.paired_test(good, good) == {"diff": 0.0, "p": 1.0}
    # equally good systems that err on different speakers: the difference is chance
    mixed_a = speaker_matrices([1, 1 / 3] * 6)
    mixed_b = speaker_matrices([1 / 3, 1] * 5 + [1, 1 / 3])
    chance = stats.paired_test(mixed_a, mixed_b)
    assert chance["diff"] == pytest.approx(0.0) and chance["p"] > 0.5


def test_holm_adjustment():
    # sorted 0.01, 0.03, 0.04 scaled by 3, 2, 1: 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == pytest.approx([0.02])  # one test: nothing to correct


def test_unknown_speakers_are_one_unit_per_utterance():
    units = stats.speaker_units(["a-1", "a-2", "unknown-1", "unknown-2"],
                                {"a-1": "a", "a-2": "a", "unknown-1": "unknown", "unknown-2": "unknown"})
    assert units[0] == units[1] == "a" and units[2] != units[3]
    with pytest.raises(KeyError, match="no speaker"):
        stats.speaker_units(["b-1"], {})


# --------------------------------------------------------------------------------------------
# Scoring and the comparison table, on experiments written to disk

SPEAKERS = [f"s{n:02d}" for n in range(1, 13)]  # 12 speakers, 4 folds of 3


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """The PNGs take seconds each and are tested in test_scoring.py; here only the figures matter."""
    monkeypatch.setattr(scoring, "write_score_files", lambda scores_dir, summary: {})


def write_data(root: Path) -> Path:
    data = root / "data" / "all"
    datadir.write_map(data / "utt2spk", {f"{s}-{c}{i}": s for s in SPEAKERS for c in CLASSES for i in range(3)})
    return data


def write_experiment(root: Path, tag: str, accuracies, family="tim_net", confidence=0.7) -> Path:
    """exp/<tag>/loso with 4 folds of 3 speakers; speaker n gets accuracies[n] of each class right
    (the rest predicted as the next class), with ``confidence`` on the predicted class."""
    exp = root / "exp" / tag / "loso"
    for fold in range(4):
        utts, refs, probs = [], [], []
        for s in range(3 * fold, 3 * fold + 3):
            right = round(accuracies[s] * 3)
            for c, label in enumerate(CLASSES):
                for i in range(3):
                    hyp = c if i < right else (c + 1) % 4
                    p = np.full(4, (1 - confidence) / 3)
                    p[hyp] = confidence
                    utts.append(f"{SPEAKERS[s]}-{label}{i}")
                    refs.append(c)
                    probs.append(p.tolist())
        fold_dir = exp / f"fold{fold + 1:02d}"
        fold_dir.mkdir(parents=True)
        expdir.write_predictions(fold_dir / expdir.PREDICTIONS_FILE, utts, refs, probs, CLASSES)
        (fold_dir / "model_config.json").write_text(json.dumps({"family": family, "classes": CLASSES}))
    return exp


FLOOR = [1 / 3, 2 / 3, 1 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3, 0]
STRONG = [1, 1, 2 / 3, 1, 1, 2 / 3, 1, 1, 1, 2 / 3, 1, 1]


def test_scores_carry_the_speaker_bootstrap_interval(tmp_path):
    data = write_data(tmp_path)
    summary = scoring.score_experiment(write_experiment(tmp_path, "floor", FLOOR), data_dir=data)
    pooled = summary["pooled"]
    assert pooled["UA_ci"][0] < pooled["UA"] < pooled["UA_ci"][1]
    assert pooled["WA_ci"][0] < pooled["WA"] < pooled["WA_ci"][1]
    assert summary["bootstrap"]["n_units"] == 12 and summary["bootstrap"]["n_resamples"] == 1000
    # the per-speaker matrices add up to the pooled one
    assert np.sum(list(summary["speaker_confusion"].values()), axis=0).tolist() == pooled["confusion"]
    on_disk = json.loads((tmp_path / "exp/floor/loso/scores/summary.json").read_text())
    assert on_disk["pooled"]["UA_ci"] == pooled["UA_ci"]
    text = results_md.experiment_section(summary, tmp_path / "RESULTS.md", environment={"python": "3"}, commit="abc")
    expected = f"{100 * pooled['UA']:.1f} [{100 * pooled['UA_ci'][0]:.1f}, {100 * pooled['UA_ci'][1]:.1f}]"
    assert expected in text and "bootstrap over the 12 test speakers" in text
    # without the data directory: the point figures only
    plain = scoring.score_experiment(tmp_path / "exp/floor/loso")
    assert plain["pooled"]["UA_ci"] is None and plain["speaker_confusion"] is None
    assert plain["pooled"]["UA"] == pooled["UA"]


def test_comparison_marks_rows_significantly_different_from_the_floor(tmp_path, monkeypatch):
    data = write_data(tmp_path)
    summaries = [scoring.score_experiment(write_experiment(tmp_path, tag, accuracies, family), data_dir=data)
                 for tag, accuracies, family in (("strong", STRONG, "tim_net"), ("same", FLOOR, "sta_crnn"),
                                                 ("floor", FLOOR, "egemaps_svm"))]
    section = results_md.comparison_section("t", summaries)
    rows = {line.split(" | ")[0][2:]: line for line in section.splitlines() if " / loso" in line}
    assert rows["floor / loso"].endswith("| reference |")  # the floor is the reference though given last
    strong, same = (rows[name].rstrip(" |").split(" | ") for name in ("strong / loso", "same / loso"))
    assert strong[-1].endswith(" *") and strong[-1].startswith("+")
    assert not same[-1].endswith("*") and same[-1].startswith("+0.0")
    assert "UA vs floor" in section and "Holm-adjusted over the 2 row(s) tested" in section
    # the section's picture gets the same figures: pooled UA inside its interval, the folds, the marks
    drawn = {}
    monkeypatch.setattr(plots, "plot_comparison", lambda path, points, chance, title: drawn.update(
        points={p["label"]: p for p in points}, chance=chance))
    pictured = results_md.comparison_section("t", summaries, figure=(tmp_path / "t.png", "figures/t.png"))
    assert "![t: pooled UA with 95 % intervals and each fold's UA](figures/t.png)" in pictured
    points = drawn["points"]
    assert drawn["chance"] == 25.0 and points["floor / loso"]["reference"] and not points["strong / loso"]["reference"]
    assert points["strong / loso"]["mark"] == "*" and points["same / loso"]["mark"] == ""
    for summary in summaries:
        point = points[f"{summary['tag']} / loso"]
        assert point["ua"] == pytest.approx(100 * summary["pooled"]["UA"])
        assert point["interval"][0] <= point["ua"] <= point["interval"][1] and len(point["folds"]) == 4
    # another test set (one speaker fewer) is not paired with the floor
    partial = dict(summaries[0], tag="other", test_digest="x")
    assert comparison.reference_tests(comparison.group_seeds([summaries[2], partial]))[1] is None


def test_seeds_are_one_row_with_mean_and_std_over_seeds(tmp_path):
    data = write_data(tmp_path)
    seed2 = [1 / 3] * 6 + STRONG[6:]
    summaries = [scoring.score_experiment(write_experiment(tmp_path, tag, accuracies), data_dir=data)
                 for tag, accuracies in (("net_seed1", STRONG), ("net_seed2", seed2))]
    rows = comparison.group_seeds(summaries)
    assert len(rows) == 1 and rows[0].tag == "net_seed1,2"
    uas = [s["pooled"]["UA"] for s in summaries]
    assert rows[0].figure("pooled", "UA") == pytest.approx((np.mean(uas), np.std(uas, ddof=1)))
    table = results_md.comparison_table(summaries)
    assert f"{100 * np.mean(uas):.1f} ± {100 * np.std(uas, ddof=1):.1f}" in table
    low, high = rows[0].ua_ci()
    assert low < np.mean(uas) < high


# --------------------------------------------------------------------------------------------
# Several seeds: the plan and the ensemble

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_seeds_plan_one_experiment_per_seed_next_to_each_other(tmp_path, capsys):
    from serkit.bin import plan_experiments
    from serkit.training.experiments import PlanError, plan

    experiments = plan(["tim_net", "egemaps_svm"], [], "8class", [1, 2, 3], str(CONF), str(tmp_path))
    assert [e.tag for e in experiments] == ["tim_net_8class_seed1", "tim_net_8class_seed2", "tim_net_8class_seed3",
                                            "egemaps_svm_8class_seed1", "egemaps_svm_8class_seed2",
                                            "egemaps_svm_8class_seed3"]
    assert [e.tag for e in plan(["tim_net"], [], "8class", 7, str(CONF), str(tmp_path))] == ["tim_net_8class_seed7"]
    with pytest.raises(PlanError, match="each seed once"):
        plan(["tim_net"], [], "8class", [1, 1], str(CONF), str(tmp_path))
    argv = ["--models", "tim_net", "--class_map", "4class", "--seed", "1", "--conf_dir", str(CONF),
            "--recipe_conf_dir", str(tmp_path)]
    assert plan_experiments.main(argv + ["--seeds", "2 5"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == [
        "tim_net_4class_seed2", "tim_net_4class_seed5"]
    assert plan_experiments.main(argv + ["--seeds", "1 x"]) == 2
    assert "'x' is not a whole number" in capsys.readouterr().err


def test_seed_ensemble_is_the_mean_posterior_scored_as_its_own_row(tmp_path):
    from serkit.bin import ensemble as ensemble_cli

    data = write_data(tmp_path)
    seed2 = [1 / 3] * 6 + STRONG[6:]
    # seed 1 sure of its answers (0.9), seed 2 hesitant (0.4): where they disagree, seed 1 wins the mean
    dirs = [write_experiment(tmp_path, "net_seed1", STRONG, confidence=0.9),
            write_experiment(tmp_path, "net_seed2", seed2, confidence=0.4),
            write_experiment(tmp_path, "floor_seed1", FLOOR, family="egemaps_svm")]
    groups = ensemble.ensemble_groups(dirs)
    out = tmp_path / "exp" / "net_ens_seed1-2" / "loso"
    assert groups == {out: dirs[:2]}  # the floor has one seed: nothing to ensemble
    assert ensemble_cli.main([str(d) for d in dirs]) == 0
    for fold in ("fold01", "fold04"):
        runs = [expdir.read_predictions(d / fold / expdir.PREDICTIONS_FILE) for d in (*dirs[:2], out)]
        assert np.array(runs[2].probs) == pytest.approx(np.mean([runs[0].probs, runs[1].probs], axis=0), abs=1e-6)
        assert runs[2].hyps == runs[0].hyps  # seed 1's confident answers decide
    summaries = [scoring.score_experiment(d, data_dir=data) for d in (*dirs, out)]
    assert summaries[3]["pooled"]["UA"] == pytest.approx(summaries[0]["pooled"]["UA"])
    table = results_md.comparison_table(summaries)
    assert "| net_seed1,2 / loso | `tim_net` |" in table
    assert "| net_ens_seed1-2 / loso | `tim_net` (mean posterior of 2 seeds) |" in table


def test_seeds_tested_on_other_utterances_are_not_ensembled(tmp_path):
    a = write_experiment(tmp_path, "net_seed1", STRONG)
    b = write_experiment(tmp_path, "net_seed2", STRONG)
    path = b / "fold01" / expdir.PREDICTIONS_FILE
    path.write_text(path.read_text().replace("s01-ang0", "s01-ang9"))
    with pytest.raises(ensemble.EnsembleError, match="differ in classes, test utterances or labels"):
        ensemble.write_ensemble([a, b], tmp_path / "exp" / "net_ens_seed1-2" / "loso")


def test_score_cli_takes_the_data_directory_and_the_number_of_resamples(tmp_path, capsys):
    from serkit.bin import score as score_cli

    data = write_data(tmp_path)
    exp = write_experiment(tmp_path, "floor", FLOOR)
    argv = ["--exp", str(exp), "--results", str(tmp_path / "RESULTS.md"), "--data", str(data), "--n_resamples", "200"]
    assert score_cli.main(argv) == 0
    summary = scoring.load_summary(exp)
    assert summary["bootstrap"]["n_resamples"] == 200
    low, high = (f"{100 * v:.1f}" for v in summary["pooled"]["UA_ci"])
    assert f"[{low}, {high}]" in capsys.readouterr().out
