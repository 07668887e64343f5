#!/usr/bin/env python
"""Benchmark of the W2V2-MTL model: training throughput, padding, peak memory, inference speed.

Not a test: it prints figures, which are recorded in docs/benchmarks.md. For each architecture it
trains on synthetic utterances whose durations follow IEMOCAP's (log-normal, mean about 4.5 s,
clipped to 0.6-20 s), batched with serkit's duration buckets, and reports
  * training throughput in utterances/s and audio-seconds/s (forward + backward + Adam step) on the
    buckets of median duration,
  * the padded-frame fraction of bucketed batches next to random batches,
  * peak memory (CPU: the process' maximum resident set size; GPU: torch's peak allocation),
  * the inference real-time factor (compute time / audio time, batch 1, 10 s utterances).
Each architecture runs in its own process so that peak memory is its own.

    tools/venv/bin/python tools/benchmark.py                      # both architectures, CPU
    tools/venv/bin/python tools/benchmark.py --arch base --steps 3 --device cuda
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import resource
import sys
import time

import numpy as np
import torch

ARCHS = ("tiny", "base")


def iemocap_like_durations(n: int, seed: int) -> list[float]:
    """Durations shaped like IEMOCAP's 4-class set (mean about 4.5 s, long right tail)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=1.3, sigma=0.6, size=n), 0.6, 20.0).tolist()


def build_model(arch: str):
    """A randomly initialised W2V2-MTL of the named architecture (no download needed)."""
    from transformers import Wav2Vec2Config

    from serkit.model import W2V2MultiTask
    from serkit.model.tiny_w2v2 import tiny_w2v2_config

    # Wav2Vec2Config() defaults are wav2vec2-base's architecture (7 CNN layers, 12 x 768 Transformer).
    config = tiny_w2v2_config() if arch == "tiny" else Wav2Vec2Config()
    return W2V2MultiTask.from_encoder_config(config.to_dict(), n_emotions=4, n_tokens=25)


def make_batch(durations: list[float], sample_rate: int = 16000):
    """Random waveforms padded to the longest, SpeechBrain-style relative lengths, random targets."""
    lengths = [int(d * sample_rate) for d in durations]
    wavs = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):
        wavs[row, :length] = 0.1 * torch.randn(length)
    wav_lens = torch.tensor(lengths, dtype=torch.float) / max(lengths)
    emotions = torch.randint(0, 4, (len(lengths),))
    token_lens = torch.tensor([max(1, int(d * 8)) for d in durations])  # ~8 phones a second
    tokens = torch.randint(1, 25, (len(lengths), int(token_lens.max())))
    return wavs, wav_lens, emotions, tokens, token_lens


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_arch(arch: str, steps: int, batch_size: int, device: str, seed: int, queue) -> None:
    """Measure one architecture; put a dict of figures on ``queue``."""
    from serkit.dataio import DurationBucketBatchSampler, padded_fraction
    from serkit.model import mtl_loss

    torch.manual_seed(seed)
    model = build_model(arch).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-5, weight_decay=1e-5)
    durations = iemocap_like_durations(50 * batch_size, seed)
    sampler = DurationBucketBatchSampler(durations, batch_size, shuffle=True, seed=seed)
    bucketed = list(sampler)
    shuffled = list(range(len(durations)))
    random.Random(seed).shuffle(shuffled)
    random_batches = [shuffled[i:i + batch_size] for i in range(0, len(shuffled), batch_size)]

    # Time the buckets of median length: representative, and the same whatever the shuffled order
    # (the longest buckets, 16 x ~20 s, need far more memory than a 24 GB CPU machine has for base).
    by_length = sorted(bucketed, key=lambda batch: max(durations[i] for i in batch))
    middle = len(by_length) // 2 - (steps + 1) // 2
    timed = by_length[middle: middle + steps + 1]

    model.train()
    n_utts = audio_seconds = elapsed = 0.0
    for step, batch in enumerate(timed):
        batch_durations = [durations[i] for i in batch]
        wavs, wav_lens, emotions, tokens, token_lens = (t.to(device) for t in make_batch(batch_durations))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(wavs, wav_lens)
        loss, _, _ = mtl_loss(out, emotions, tokens, token_lens, lam=0.1)
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
    wav = 0.1 * torch.randn(1, 16000 * 10, device=device)
    with torch.no_grad():
        model(wav, torch.ones(1, device=device))  # warm-up
        start = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            model(wav, torch.ones(1, device=device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rtf = (time.perf_counter() - start) / (10.0 * repeats)

    queue.put({
        "arch": arch,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_utts_per_s": n_utts / elapsed,
        "train_audio_s_per_s": audio_seconds / elapsed,
        "padded_fraction_bucketed": padded_fraction(durations, bucketed),
        "padded_fraction_random": padded_fraction(durations, random_batches),
        "peak_memory_MB": peak_memory_mb(device),
        "inference_rtf": rtf,
        "steps": steps,
        "batch_size": batch_size,
    })


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=ARCHS + ("all",), default="all")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=16, help="16 is the paper's batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object per architecture")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# torch {torch.__version__}, device {args.device} ({device_name}), {args.threads} threads, "
          f"batch {args.batch_size}, {args.steps} timed steps", flush=True)
    context = multiprocessing.get_context("spawn")
    rows = []
    for arch in ARCHS if args.arch == "all" else (args.arch,):
        queue = context.Queue()
        process = context.Process(target=run_arch, args=(arch, args.steps, args.batch_size, args.device,
                                                         args.seed, queue))
        process.start()
        process.join()
        if process.exitcode != 0:
            print(f"benchmark: {arch} failed (exit code {process.exitcode})", file=sys.stderr)
            return 1
        rows.append(queue.get())
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print("| arch | params (M) | train utt/s | train audio-s/s | padded (bucketed) | padded (random) "
          "| peak memory (MB) | inference RTF |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['params_M']:.1f} | {r['train_utts_per_s']:.2f} | {r['train_audio_s_per_s']:.1f} "
              f"| {r['padded_fraction_bucketed']:.3f} | {r['padded_fraction_random']:.3f} "
              f"| {r['peak_memory_MB']:.0f} | {r['inference_rtf']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
