"""tools/benchmark.py --paired: serkit's W2V2-MTL step against the plain SpeechBrain baseline.

One real paired run with the tiny encoder (1 timed step each, batch 2, three peak-RSS child
processes): the report has every figure docs/benchmarks.md describes, and every model really
trained (their trainable parameters moved; the frozen CNN did not count as trainable). The strong
baseline (SpeechBrain's own precision option, duration-sorted batches) is also checked by a fast test.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from serkit.bench.baseline import BaselineNetwork
from serkit.bench import paired
from serkit.bench.paired import Plan, serkit_batch_seconds
from serkit.training.precision import resolve_precision

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "benchmark.py"


def load_script():
    spec = importlib.util.spec_from_file_location("serkit_tools_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e  # tools/benchmark.py's whole paired run: both models train, in child processes too
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_paired_mode_reports_every_figure_and_trains_both_models(capsys):
    threads = torch.get_num_threads()
    try:
        assert load_script().main(["--paired", "--encoder", "tiny", "--steps", "1", "--batch-size", "2",
                                   "--precision", "auto", "--max-seconds", "3", "--probe-utts", "6", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for row in ("same_batches", "duration_batches", "strongest_baseline"):
        figures = report[row]
        assert len(figures["ratios"]) == 1
        assert figures["ratio_min"] <= figures["ratio_median"] <= figures["ratio_max"]
        assert figures["serkit_audio_s_per_s"] > 0 and figures["baseline_audio_s_per_s"] > 0
    # the ratio is the throughputs' ratio (one step: the aggregate and the pair coincide)
    same = report["same_batches"]
    assert math.isclose(same["ratio_median"], same["serkit_audio_s_per_s"] / same["baseline_audio_s_per_s"],
                        rel_tol=1e-6)
    # serkit's side and the strong baseline go through the trainer's precision choice; the recipe trains fp32
    auto = resolve_precision("auto", "cpu").name
    assert report["precision"] == {"baseline": "fp32", "baseline_strong": auto, "serkit": auto}
    assert 0 <= report["padding"]["buckets"] < 1 and 0 <= report["padding"]["random"] < 1
    assert all(report["peak_memory_MB"][side] > 100 for side in paired.SIDES)
    assert all(report["inference_rtf"][side] > 0 for side in paired.SIDES)
    assert len(report["memory_batch"]) == 2 and max(report["memory_batch"]) <= 3.0
    # the frozen-encoder probe: cache filled once, then an epoch of the head only, faster than fine-tuning
    probe = report["probe"]
    assert probe["utterances"] == 6 and probe["cache_MB"] > 0 and probe["cache_fill_s"] > 0
    assert 0 < probe["probe_epoch_s"] < probe["finetune_epoch_s"]
    assert math.isclose(probe["speedup"], probe["finetune_epoch_s"] / probe["probe_epoch_s"])
    # padding over a whole fold's worth of IEMOCAP-like durations, batch 2
    assert report["fold_padding"]["utterances"] == 4400
    assert report["fold_padding"]["buckets"] < report["fold_padding"]["random"]
    for side in paired.SIDES:
        trained = report["trained"][side]
        assert trained["update_norm"] > 0
        assert trained["changed_tensors"] >= trained["trainable_tensors"] - 1  # at most the rarely used mask embedding


def test_duration_buckets_pad_less_than_the_baselines_random_batches():
    budget = serkit_batch_seconds()
    plan = Plan.draw(steps=20, batch_size=16, seed=0, batch_seconds=budget)
    assert budget is not None and all(len(batch) * max(plan.seconds(batch)) <= budget for batch in plan.buckets)
    assert sorted(i for batch in plan.buckets for i in batch) == list(range(len(plan.durations)))
    assert sorted(i for batch in plan.random for i in batch) == list(range(len(plan.durations)))
    from serkit.data.dataio import padded_fraction
    assert padded_fraction(plan.durations, plan.buckets) < 0.5 * padded_fraction(plan.durations, plan.random)
    cropped = Plan.draw(steps=20, batch_size=16, seed=0, max_seconds=6.0)
    assert max(cropped.durations) == 6.0
    assert [min(d, 6.0) for d in plan.durations] == cropped.durations
    with pytest.raises(ValueError, match="max_seconds"):
        Plan.draw(steps=1, batch_size=2, seed=0, max_seconds=0.0)


def test_sorted_batches_are_speechbrains_ascending_sort_in_batches_of_the_batch_size():
    plan = Plan.draw(steps=20, batch_size=16, seed=0)
    assert sorted(i for batch in plan.sorted for i in batch) == list(range(len(plan.durations)))
    assert all(len(batch) == 16 for batch in plan.sorted)
    # consecutive runs of the duration order: no batch overlaps another's duration range
    ranges = sorted((min(plan.seconds(batch)), max(plan.seconds(batch))) for batch in plan.sorted)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))
    assert [min(plan.seconds(batch)) for batch in plan.sorted] != [low for low, _ in ranges]  # visited shuffled
    from serkit.data.dataio import padded_fraction
    assert padded_fraction(plan.durations, plan.sorted) < 0.25 * padded_fraction(plan.durations, plan.random)


def test_strong_baseline_trains_in_speechbrains_precision_on_sorted_batches(tmp_path):
    """A paired run (no child processes) with the tiny encoder: the strong baseline's Brain trains in the
    precision asked for while the plain baseline stays fp32, and its row compares serkit's duration
    batches with its sorted ones."""
    folder = paired.save_encoder("tiny", tmp_path / "encoder")
    plan = Plan.draw(steps=1, batch_size=2, seed=0, max_seconds=2.0, batch_seconds=serkit_batch_seconds())
    report = paired.paired_run(folder, plan, "bf16", "cpu", seed=0)
    assert report["precision"] == {"baseline": "fp32", "baseline_strong": "bf16", "serkit": "bf16"}
    row = report["strongest_baseline"]
    assert report["batches"]["sorted"] == 1 and 0 <= report["padding"]["sorted"] < 1
    assert len(row["ratios"]) == 1  # the rounds both sides trained; serkit's further buckets are unpaired
    assert row["serkit_audio_s_per_s"] > 0 and row["baseline_audio_s_per_s"] > 0
    assert row["serkit_audio_s_per_s"] == report["duration_batches"]["serkit_audio_s_per_s"]  # the same serkit epoch
    trained = report["trained"]["baseline_strong"]
    assert trained["update_norm"] > 0 and trained["changed_tensors"] >= trained["trainable_tensors"] - 1


def test_baseline_calls_the_encoder_as_speechbrains_wrapper_does(tmp_path):
    """The baseline's encoder output is bit-for-bit that of SpeechBrain's own wav2vec 2.0 wrapper
    (padding mask from the relative lengths, layer norms over the padded rows, the IEMOCAP recipe's
    ``output_norm``), on a padded batch."""
    from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
    from serkit.features.encoder import load_encoder
    from serkit.model.tiny_w2v2 import build_tiny_w2v2

    folder = build_tiny_w2v2(tmp_path / "encoder")
    wrapper = Wav2Vec2(source=str(folder), save_path=str(tmp_path / "hf"), freeze_feature_extractor=True,
                       output_norm=True).eval()
    network = BaselineNetwork(load_encoder(str(folder)), n_emotions=4).eval()
    assert not any(p.requires_grad for p in network.encoder.feature_extractor.parameters())
    wavs = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    wavs[1, 8000:] = 0.0
    lengths = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        expected = wrapper(wavs, lengths)
        assert torch.allclose(network.encode(wavs, lengths), expected, atol=1e-6)
        unmasked = network.encoder(torch.nn.functional.layer_norm(wavs, wavs.shape[1:])).last_hidden_state
        unmasked = torch.nn.functional.layer_norm(unmasked, unmasked.shape[1:])
        assert not torch.allclose(unmasked, expected, atol=1e-3)  # the mask matters: a call without it differs
        log_probs = network(wavs, lengths)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2))


@pytest.mark.e2e  # builds and trains each model; the two-input families take seconds a step on 2 cores
@pytest.mark.parametrize("name", ["amrwc", "multilevel", "tim_net"])
def test_every_family_row_trains_and_infers(name):
    """tools/benchmark.py's per-family row (``--model NAME``), in this process: a timed training step and
    an inference, every input the family declares built (AMRWC: waveform + log-Mel with deltas)."""
    script = load_script()
    assert name in script.MODELS
    rows = []

    class Queue:
        put = staticmethod(rows.append)

    script.run_model(name, steps=1, batch_size=2, device="cpu", seed=0, queue=Queue())
    row = rows[0]
    assert row["model"] == name and row["params_M"] > 0
    assert row["train_utts_per_s"] > 0 and row["train_audio_s_per_s"] > row["train_utts_per_s"] * 0.5
    assert row["inference_rtf"] > 0 and row["feature_rtf"] > 0
    assert 0 <= row["padded_fraction_bucketed"] < row["padded_fraction_random"]
