"""tools/benchmark.py --paired: serkit's W2V2-MTL step against the plain SpeechBrain baseline.

One real paired run with the tiny encoder (1 timed step each, batch 2, two peak-RSS child
processes): the report has every figure docs/benchmarks.md describes, and both models really
trained (their trainable parameters moved; the frozen CNN did not count as trainable).
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from serkit.bench.baseline import BaselineNetwork
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
    for row in ("same_batches", "duration_batches"):
        figures = report[row]
        assert len(figures["ratios"]) == 1
        assert figures["ratio_min"] <= figures["ratio_median"] <= figures["ratio_max"]
        assert figures["serkit_audio_s_per_s"] > 0 and figures["baseline_audio_s_per_s"] > 0
    # the ratio is the throughputs' ratio (one step: the aggregate and the pair coincide)
    same = report["same_batches"]
    assert math.isclose(same["ratio_median"], same["serkit_audio_s_per_s"] / same["baseline_audio_s_per_s"],
                        rel_tol=1e-6)
    # serkit's side goes through its trainer's precision choice; the baseline recipe trains fp32
    assert report["precision"] == {"baseline": "fp32", "serkit": resolve_precision("auto", "cpu").name}
    assert 0 <= report["padding"]["buckets"] < 1 and 0 <= report["padding"]["random"] < 1
    assert all(report["peak_memory_MB"][side] > 100 for side in ("baseline", "serkit"))
    assert all(report["inference_rtf"][side] > 0 for side in ("baseline", "serkit"))
    assert len(report["memory_batch"]) == 2 and max(report["memory_batch"]) <= 3.0
    # the frozen-encoder probe: cache filled once, then an epoch of the head only, faster than fine-tuning
    probe = report["probe"]
    assert probe["utterances"] == 6 and probe["cache_MB"] > 0 and probe["cache_fill_s"] > 0
    assert 0 < probe["probe_epoch_s"] < probe["finetune_epoch_s"]
    assert math.isclose(probe["speedup"], probe["finetune_epoch_s"] / probe["probe_epoch_s"])
    # padding over a whole fold's worth of IEMOCAP-like durations, batch 2
    assert report["fold_padding"]["utterances"] == 4400
    assert report["fold_padding"]["buckets"] < report["fold_padding"]["random"]
    for side in ("baseline", "serkit"):
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
