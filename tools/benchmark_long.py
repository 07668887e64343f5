#!/usr/bin/env python
"""Benchmark of inference on long recordings: peak memory and real-time factor, windows vs whole file.

Not a test: it prints figures, which are recorded in docs/benchmarks.md. It builds, offline, an
export folder of wav2vec2-base's size (random weights from ``transformers.Wav2Vec2Config()``
defaults: 7 CNN layers, 12 x 768 Transformer, 94 M parameters; speed and memory do not depend on
the weights), writes synthetic recordings, and scores each in a fresh process so that the peak
resident set size (RSS) is that of one job. RTF = processing time / audio time, both by the wall
clock and by the process's CPU time (user + system), which other jobs on a shared machine barely
change:

* ``model only``: loading the export, no audio (the floor under every other row);
* ``short``: an 8 s file (one window), scored 3 times after a warm-up;
* ``windows``: a 10-minute file through ``EmotionRecognizer.predict_file`` (streamed from disk,
  8 s windows, the family's default hop) and, with ``--hop``, a 2-minute file with that hop;
* ``whole file``: a 60 s file read and scored in one forward pass (what inference did before
  windows), to show how memory grows with the length when nothing is windowed.

    tools/venv/bin/python tools/benchmark_long.py --work "$(mktemp -d)" [--threads 2] [--hop 4]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SR = 16000


def build_export(work: Path) -> Path:
    """A wav2vec2-base-sized W2V2-MTL (with CTC head) exported through serkit's own export path."""
    import torch
    from transformers import Wav2Vec2Config

    from serkit.training import expdir
    from serkit.training.checkpoints import SafeCheckpointer
    from serkit.serving.export import export_model
    from serkit.model import SERModel, W2V2Network

    classes, tokens = ["ang", "hap", "sad", "neu"], ["<blank>"] + [f"T{i}" for i in range(24)]
    torch.manual_seed(0)
    network = W2V2Network.from_encoder_config(Wav2Vec2Config().to_dict(), n_emotions=len(classes))
    model = SERModel(network, n_tokens=len(tokens))
    fold = work / "fold01"
    fold.mkdir(parents=True, exist_ok=True)
    expdir.write_model_config(fold, {
        "family": "w2v2_mtl", "network": network.config_dict(), "feature": {"kind": "waveform", "sample_rate": SR},
        "input_dims": None, "n_emotions": len(classes), "n_tokens": len(tokens), "ctc_targets": "emophone",
        "options": {"mtl_lambda": 0.1}, "classes": classes, "tokens": tokens, "sample_rate": SR})
    SafeCheckpointer(fold / expdir.SAVE_DIR, {"model": model}).save_checkpoint(meta={"UA": 0.5, "epoch": 1})
    return export_model(fold, work / "export")


def write_recording(path: Path, seconds: float) -> Path:
    """Speech-like synthetic audio (a gliding harmonic tone in noise), 16 kHz 16-bit, written in blocks."""
    import soundfile

    rng = np.random.default_rng(0)
    with soundfile.SoundFile(str(path), "w", samplerate=SR, channels=1, subtype="PCM_16") as handle:
        for start in range(0, int(seconds * SR), 10 * SR):
            t = (start + np.arange(min(10 * SR, int(seconds * SR) - start))) / SR
            f0 = 150 + 50 * np.sin(2 * np.pi * 0.3 * t)
            tone = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 6))
            handle.write((0.1 * tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32))
    return path


def measure(mode: str, export: str, audio: str, threads: int, hop: float | None) -> dict:
    """Run in a fresh process: score ``audio`` as ``mode`` says; report seconds and peak RSS."""
    import torch

    from serkit.data.audio import audio_info, read_audio
    from serkit.serving.inference import EmotionRecognizer

    torch.set_num_threads(threads)
    recognizer = EmotionRecognizer.from_export(export, hop_s=hop)
    duration = audio_info(audio).duration if audio else 0.0
    repeats = 3 if mode == "short" else 1
    if mode == "short":
        recognizer.predict_file(audio)  # warm-up
    start, cpu_start = time.perf_counter(), cpu_seconds()
    for _ in range(repeats if audio else 0):
        if mode == "whole":
            recognizer.predict_batch([read_audio(audio)[0]])
        else:
            recognizer.predict_file(audio)
    elapsed, cpu = (time.perf_counter() - start) / repeats, (cpu_seconds() - cpu_start) / repeats
    return {"mode": mode, "audio_s": duration, "seconds": elapsed, "rtf": elapsed / duration if duration else None,
            "cpu_rtf": cpu / duration if duration else None,
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "window_s": recognizer.window / SR, "hop_s": recognizer.hop / SR}


def cpu_seconds() -> float:
    """User + system CPU time of this process: unlike wall time, barely changed by other jobs' load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(mode: str, export: Path, audio: Path | None, threads: int, hop: float | None) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--export", str(export), "--audio", str(audio or ""),
               "--threads", str(threads)] + (["--hop", str(hop)] if hop else [])
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"benchmark_long: {mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("bench_long"), help="folder for the export and audio")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long recording")
    parser.add_argument("--hop", type=float, default=None, help="also measure windows with this hop (seconds)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--export", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--audio", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.export, args.audio or None, args.threads, args.hop)))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    export = args.work / "export"
    if not (export / "model.pt").is_file():
        build_export(args.work)
    short = write_recording(args.work / "short_8s.wav", 8.0)
    whole = write_recording(args.work / "whole_60s.wav", 60.0)
    long = write_recording(args.work / f"long_{args.minutes:g}min.wav", 60 * args.minutes)
    print(f"# {cpu_name()}, {args.threads} torch threads, python {platform.python_version()}, "
          f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| run | audio (s) | window / hop (s) | wall time (s) | RTF (wall) | RTF (CPU time) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|", flush=True)
    runs = [("model only", None, None), ("short", short, None), ("windows", long, None), ("whole", whole, None)]
    if args.hop:  # the cost of overlapping windows, on a shorter file (it scales with the length)
        runs.append(("windows", write_recording(args.work / "overlap_2min.wav", 120.0), args.hop))
    for mode, audio, hop in runs:  # one row as soon as it is measured
        r = run_child(mode, export, audio, args.threads, hop)
        rtf, cpu_rtf = ("", "") if r["rtf"] is None else (f"{r['rtf']:.3f}", f"{r['cpu_rtf']:.3f}")
        windows = f"{r['window_s']:g} / {r['hop_s']:g}" if mode in ("windows", "short") else "whole file"
        print(f"| {mode} | {r['audio_s']:.0f} | {windows if r['audio_s'] else ''} | {r['seconds']:.1f} | {rtf} "
              f"| {cpu_rtf} | {r['peak_rss_MB']:.0f} |", flush=True)
    print(f"# load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    sys.exit(main())
