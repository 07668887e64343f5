#!/usr/bin/env python
"""Benchmark of every model family: training throughput, padding, peak memory, inference speed.

Not a test: it prints figures, which are recorded in docs/benchmarks.md. For each architecture it
trains on synthetic utterances whose durations follow IEMOCAP's (log-normal, mean about 4.5 s,
clipped to 0.6-20 s), batched with serkit's duration buckets, and reports (for a family trained in
closed form, eGeMAPS + SVM, the fit time instead of steps)
  * training throughput in utterances/s and audio-seconds/s (forward + backward + Adam step) on the
    buckets of median duration,
  * the padded-frame fraction of bucketed batches next to random batches,
  * peak memory (CPU: the process' maximum resident set size; GPU: torch's peak allocation),
  * the inference real-time factor (compute time / audio time, batch 1, 10 s utterances), features
    included; for spectral families also the feature extraction alone (features are cached on disk
    in training, so the training figures time the network only).
Each model runs in its own process so that peak memory is its own. Models: the shared configs
(conf/<family>.yaml, the papers' sizes) of every registered family; ``w2v2_mtl`` with the tiny
encoder of the mini recipe and W2V2-MTL on each base-sized encoder (random weights): ``w2v2_mtl-base``
(wav2vec2-base), ``w2v2_mtl-hubert-base``, ``-wavlm-base``, ``-data2vec-base``, ``-whisper-base``.

    tools/venv/bin/python tools/benchmark.py                      # every family, CPU
    tools/venv/bin/python tools/benchmark.py --model w2v2_mtl-base --steps 3 --device cuda

``--paired`` times serkit's W2V2-MTL training step (SERBrain.fit_batch) against the plain
SpeechBrain wav2vec 2.0 recipe (serkit.bench.baseline) in one process, alternating steps on the
same batches, and against the baseline at its strongest setting (SpeechBrain's own bf16 where the
CPU has bf16 units, duration-sorted batches); it reports the median paired throughput ratio with its
range, padding, peak RSS (one child process per model) and inference RTF (docs/benchmarks.md):

    tools/venv/bin/python tools/benchmark.py --paired --encoder base --steps 4 --precision auto
    tools/venv/bin/python tools/benchmark.py --paired --encoder tiny --steps 2 --json   # seconds
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's serkit, also when the script is run from elsewhere
from serkit.bench.paired import iemocap_like_durations, peak_memory_mb  # noqa: E402  (after the path)
# W2V2-MTL on each base-sized encoder type (random weights): ``w2v2_mtl-base`` is wav2vec2-base.
BASE_ENCODERS = {"w2v2_mtl-base": "wav2vec2", "w2v2_mtl-hubert-base": "hubert", "w2v2_mtl-wavlm-base": "wavlm",
                 "w2v2_mtl-data2vec-base": "data2vec-audio", "w2v2_mtl-whisper-base": "whisper"}
MODELS = ("w2v2_mtl", *BASE_ENCODERS, "tim_net", "sta_crnn", "egemaps_svm", "nlinear", "dlinear", "vggish_bilstm",
          "multilevel", "amrwc")
ENCODER_FAMILIES = ("w2v2_mtl", "multilevel", "amrwc")  # their configs name a wav2vec 2.0 encoder_source


def save_base_encoder(encoder_type: str, folder: Path) -> None:
    """A randomly initialised base-sized encoder of ``encoder_type`` and its feature extractor in ``folder``:
    transformers' default configs are the base models' shapes; Whisper's is set to whisper-base's."""
    from transformers import Wav2Vec2FeatureExtractor, WhisperConfig, WhisperFeatureExtractor

    from serkit.features.encoder import ENCODER_TYPES

    config_class, model_class = ENCODER_TYPES[encoder_type]
    if encoder_type == "whisper":
        config = WhisperConfig(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048)
        extractor = WhisperFeatureExtractor()
    else:
        config, extractor = config_class(), Wav2Vec2FeatureExtractor()
    model_class(config).save_pretrained(folder)
    extractor.save_pretrained(folder)


def build(name: str):
    """(family, SERModel or None, feature spec (None: the waveform) of each input) of a model name, randomly
    initialised offline."""
    from serkit.bin.train import load_hparams
    from serkit.model import get_family
    from serkit.model.build import build_model, feature_spec
    from serkit.model.tiny_w2v2 import build_tiny_w2v2

    family_name = name.split("-")[0]
    overrides = {"data_dir": "-", "fold_dir": "-", "output_folder": "-"}
    if family_name in ENCODER_FAMILIES:
        # a base-sized encoder's architecture (BASE_ENCODERS) or the mini recipe's tiny encoder
        folder = Path(tempfile.mkdtemp()) / "encoder"
        if name in BASE_ENCODERS:
            save_base_encoder(BASE_ENCODERS[name], folder)
        else:
            build_tiny_w2v2(folder)
        overrides["encoder_source"] = str(folder)
    hparams = load_hparams(str(REPO / "conf" / f"{family_name}.yaml"), overrides)
    family = get_family(family_name)
    specs = [feature_spec(feature) for feature in family.inputs(hparams)]
    if family.trainer != "brain":
        return family, hparams, None, specs
    dims = [() if spec is None else spec.frame_shape for spec in specs]
    n_tokens = 25 if float(hparams.get("mtl_lambda", 0)) > 0 else 0
    return family, hparams, build_model(family, hparams, 4, n_tokens, dims), specs


def make_batch(durations: list[float], specs, sample_rate: int = 16000):
    """Random model inputs (waveforms, or their features: one padded batch per spec) padded to the longest,
    SpeechBrain-style relative lengths, random targets."""
    waves = [0.1 * torch.randn(int(d * sample_rate)) for d in durations]
    wavs, wav_lens = [], []
    for spec in specs:
        inputs = waves if spec is None else [spec.compute(x, sample_rate).float() for x in waves]
        lengths = [x.shape[0] for x in inputs]
        batch = torch.zeros(len(lengths), max(lengths), *inputs[0].shape[1:])
        for row, x in enumerate(inputs):
            batch[row, :x.shape[0]] = x
        wavs.append(batch)
        wav_lens.append(torch.tensor(lengths, dtype=torch.float) / max(lengths))
    emotions = torch.randint(0, 4, (len(lengths),))
    token_lens = torch.tensor([max(1, int(d * 8)) for d in durations])  # ~8 phones a second
    tokens = torch.randint(1, 25, (len(lengths), int(token_lens.max())))
    return wavs, wav_lens, emotions, tokens, token_lens


def run_model(name: str, steps: int, batch_size: int, device: str, seed: int, queue) -> None:
    """Measure one model; put a dict of figures on ``queue``."""
    from serkit.data.dataio import DurationBucketBatchSampler, padded_fraction
    from serkit.model import mtl_loss

    torch.manual_seed(seed)
    family, hparams, model, specs = build(name)
    spec = specs[0]  # a closed-form family's one input
    durations = iemocap_like_durations(50 * batch_size, seed)
    sampler = DurationBucketBatchSampler(durations, batch_size, shuffle=True, seed=seed)
    bucketed = list(sampler)
    shuffled = list(range(len(durations)))
    random.Random(seed).shuffle(shuffled)
    random_batches = [shuffled[i:i + batch_size] for i in range(0, len(shuffled), batch_size)]
    row = {"model": name, "padded_fraction_bucketed": padded_fraction(durations, bucketed),
           "padded_fraction_random": padded_fraction(durations, random_batches), "steps": steps,
           "batch_size": batch_size}
    wav = 0.1 * torch.randn(16000 * 10)
    if any(kind is not None for kind in specs):
        start = time.perf_counter()
        for kind in specs:
            if kind is not None:
                kind.compute(wav, 16000)
        row["feature_rtf"] = (time.perf_counter() - start) / 10.0
    if model is None:  # closed-form family: fit on functionals of 8 utterances a class, then predict
        from serkit.model.egemaps import fit_floor
        x = np.stack([spec.compute(0.1 * torch.randn(16000 * 3), 16000)[0].numpy() for _ in range(32)])
        y = np.arange(32) % 4
        start = time.perf_counter()
        fitted = fit_floor(x, y, x, y, 4, classifier=str(hparams["classifier"]))
        row["fit_s_32_utts"] = time.perf_counter() - start
        start = time.perf_counter()
        fitted.predict_proba(spec.compute(wav, 16000).numpy())
        row.update(params_M=0.0, inference_rtf=(time.perf_counter() - start) / 10.0 + row["feature_rtf"],
                   peak_memory_MB=peak_memory_mb(device))
        queue.put(row)
        return
    model = model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-5, weight_decay=1e-5)
    # Time the buckets of median length: representative, and the same whatever the shuffled order
    # (the longest buckets, 16 x ~20 s, need far more memory than a 24 GB CPU machine has for base).
    by_length = sorted(bucketed, key=lambda batch: max(durations[i] for i in batch))
    middle = len(by_length) // 2 - (steps + 1) // 2
    timed = by_length[middle: middle + steps + 1]
    model.train()
    n_utts = audio_seconds = elapsed = 0.0
    lam = 0.1 if model.ctc_head is not None else 0.0
    for step, batch in enumerate(timed):
        batch_durations = [durations[i] for i in batch]
        wavs, wav_lens, emotions, tokens, token_lens = make_batch(batch_durations, specs)
        wavs, wav_lens = [x.to(device) for x in wavs], [x.to(device) for x in wav_lens]
        emotions, tokens, token_lens = emotions.to(device), tokens.to(device), token_lens.to(device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(wavs, wav_lens)
        loss, _, _ = mtl_loss(out, emotions, tokens, token_lens, lam=lam)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step > 0:  # step 0 is warm-up (allocations, kernel selection)
            elapsed += time.perf_counter() - start
            n_utts += len(batch)
            audio_seconds += sum(batch_durations)
    model.eval()
    with torch.no_grad():
        def infer():
            inputs = [wav if kind is None else kind.compute(wav, 16000).float() for kind in specs]
            model([x.unsqueeze(0).to(device) for x in inputs], [torch.ones(1, device=device) for _ in inputs])
        infer()  # warm-up
        start = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            infer()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rtf = (time.perf_counter() - start) / (10.0 * repeats)
    row.update(params_M=sum(p.numel() for p in model.parameters()) / 1e6, train_utts_per_s=n_utts / elapsed,
               train_audio_s_per_s=audio_seconds / elapsed, peak_memory_MB=peak_memory_mb(device), inference_rtf=rtf)
    queue.put(row)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS + ("all",), default="all")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=16, help="16 is the paper's batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object per architecture")
    parser.add_argument("--paired", action="store_true",
                        help="serkit's W2V2-MTL step against the plain SpeechBrain baseline, side by side")
    parser.add_argument("--encoder", choices=("base", "tiny"), default="base",
                        help="--paired: wav2vec2-base's architecture or the mini recipe's tiny encoder")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="--paired: serkit's training precision, resolved by its trainer; also the strong baseline's "
                             "(the plain baseline: fp32)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="--paired: crop longer utterances to this many seconds (both sides), e.g. for "
                             "wav2vec2-base's random batches on a CPU machine")
    parser.add_argument("--probe-utts", type=int, default=32,
                        help="--paired: utterances of the frozen-encoder probe's cached epoch and of the "
                             "W2V2-MTL fine-tuning epoch it is compared with (0: skip)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.paired:
        return paired_main(args)

    print(f"# torch {torch.__version__}, device {device_description(args.device)}, {args.threads} threads, "
          f"batch {args.batch_size}, {args.steps} timed steps", flush=True)
    context = multiprocessing.get_context("spawn")
    rows = []
    for name in MODELS if args.model == "all" else (args.model,):
        queue = context.Queue()
        process = context.Process(target=run_model, args=(name, args.steps, args.batch_size, args.device,
                                                          args.seed, queue))
        process.start()
        process.join()
        if process.exitcode != 0:
            print(f"benchmark: {name} failed (exit code {process.exitcode})", file=sys.stderr)
            return 1
        rows.append(queue.get())
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print("| model | params (M) | train utt/s | train audio-s/s | padded (bucketed) | padded (random) "
          "| peak memory (MB) | inference RTF | feature RTF |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        train = (f"{r['train_utts_per_s']:.2f} | {r['train_audio_s_per_s']:.1f}" if "train_utts_per_s" in r
                 else f"fit {r['fit_s_32_utts']:.2f} s (32 utts) | –")
        feature = f"{r['feature_rtf']:.4f}" if "feature_rtf" in r else "–"
        print(f"| {r['model']} | {r['params_M']:.2f} | {train} | {r['padded_fraction_bucketed']:.3f} "
              f"| {r['padded_fraction_random']:.3f} | {r['peak_memory_MB']:.0f} | {r['inference_rtf']:.4f} | {feature} |")
    return 0


def device_description(device: str) -> str:
    """``cpu (its model name)`` or ``cuda (the GPU's name)``, for the report's header."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name()})"
    from serkit.training.provenance import cpu_name
    return f"{device} ({cpu_name()})"


def paired_main(args) -> int:
    """``--paired``: peak-memory children first (so the paired run's memory is not held meanwhile), then the run."""
    from serkit.bench import paired

    try:
        plan = paired.Plan.draw(args.steps, args.batch_size, args.seed, args.max_seconds,
                                paired.serkit_batch_seconds())
    except ValueError as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="serkit_bench_") as work:
        folder = paired.save_encoder(args.encoder, Path(work) / "encoder")
        memory = {}
        for side in paired.SIDES:
            memory[side] = peak_memory_in_child(side, folder, plan.memory_batch(), args)
            if memory[side] is None:
                return 1
        result = paired.paired_run(folder, plan, args.precision, args.device, args.seed)
        if args.probe_utts > 0:
            from serkit.bench.probe import cached_vs_finetune
            durations = [min(d, args.max_seconds or d) for d in paired.iemocap_like_durations(args.probe_utts,
                                                                                             args.seed + 2)]
            result["probe"] = cached_vs_finetune(folder, durations, Path(work) / "probe", args.precision,
                                                 args.device, args.seed)
    result["fold_padding"] = paired.fold_padding(args.batch_size, paired.serkit_batch_seconds(), args.seed)
    result.update(peak_memory_MB=memory, memory_batch=plan.memory_batch(), device=device_description(args.device),
                  encoder=args.encoder, batch_size=args.batch_size, steps=args.steps, max_seconds=args.max_seconds,
                  threads=args.threads, torch=torch.__version__, load_average=os.getloadavg()[0])
    if args.json:
        print(json.dumps(result))
    else:
        print_paired(result)
    return 0


def peak_memory_in_child(side: str, folder: Path, batch_seconds: list[float], args) -> float | None:
    """Peak memory (MB) of ``side`` trained in a fresh process; None (reported) if that process failed."""
    from serkit.bench.paired import peak_memory_child

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its ru_maxrss is this model's alone
    queue = context.Queue()
    process = context.Process(
        target=peak_memory_child, args=(side, str(folder), batch_seconds, args.precision, args.device, args.threads,
                                        args.seed, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        print(f"benchmark: the {side} peak-memory process failed (exit code {process.exitcode}; out of memory? "
              "try a smaller --batch-size or --max-seconds)", file=sys.stderr)
        return None
    return queue.get()


def print_paired(r: dict) -> None:
    print(f"# paired on {r['device']}: encoder {r['encoder']} ({r['params_M']['serkit']:.1f} M parameters in serkit's model, "
          f"{r['params_M']['baseline']:.1f} M in the baseline), batch {r['batch_size']}, {r['steps']} timed steps "
          f"({r['batches']['buckets']} duration buckets), utterances cropped to {r['max_seconds'] or 20} s, "
          f"{r['threads']} threads, torch {r['torch']}, load average {r['load_average']:.2f}; precision "
          f"serkit {r['precision']['serkit']}, baseline {r['precision']['baseline']}, strong baseline "
          f"{r['precision']['baseline_strong']} ({r['batches']['sorted']} duration-sorted batches)")
    print("| row | serkit / baseline (median) | range | serkit audio-s/s | baseline audio-s/s | padded serkit "
          "| padded baseline |")
    print("|---|---|---|---|---|---|---|")
    for name, padding, baseline_padding in (("same_batches", "random", "random"),
                                            ("duration_batches", "buckets", "random"),
                                            ("strongest_baseline", "buckets", "sorted")):
        row = r[name]
        print(f"| {name} | {row['ratio_median']:.2f}x | {row['ratio_min']:.2f}-{row['ratio_max']:.2f} "
              f"| {row['serkit_audio_s_per_s']:.2f} | {row['baseline_audio_s_per_s']:.2f} "
              f"| {r['padding'][padding]:.3f} | {r['padding'][baseline_padding]:.3f} |")
    kind = "GPU peak allocation" if r["device"].startswith("cuda") else "peak RSS"
    print(f"{kind} (MB, batch of {len(r['memory_batch'])}, longest {max(r['memory_batch']):.1f} s): "
          f"serkit {r['peak_memory_MB']['serkit']:.0f}, baseline {r['peak_memory_MB']['baseline']:.0f}, strong baseline "
          f"{r['peak_memory_MB']['baseline_strong']:.0f}; inference RTF (10 s, batch 1): serkit "
          f"{r['inference_rtf']['serkit']:.4f}, baseline {r['inference_rtf']['baseline']:.4f}, strong baseline "
          f"{r['inference_rtf']['baseline_strong']:.4f}")
    fold = r["fold_padding"]
    print(f"padding on {fold['utterances']} IEMOCAP-like utterances (a LOSO training fold, uncropped), batch "
          f"{r['batch_size']}: serkit's duration batches {100 * fold['buckets']:.2f} %, duration-sorted batches "
          f"{100 * fold['sorted']:.2f} %, random batches {100 * fold['random']:.1f} %")
    if "probe" in r:
        p = r["probe"]
        print(f"frozen-encoder probe ({p['utterances']} utterances, {p['audio_s']:.0f} s of audio): cache filled once "
              f"in {p['cache_fill_s']:.1f} s ({p['cache_MB']:.1f} MB fp16); one epoch from the cache "
              f"{p['probe_epoch_s']:.3f} s ({p['precision']['probe']}) against one W2V2-MTL fine-tuning epoch "
              f"{p['finetune_epoch_s']:.1f} s ({p['precision']['finetune']}): {p['speedup']:.0f}x faster")


if __name__ == "__main__":
    sys.exit(main())
