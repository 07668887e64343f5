#!/usr/bin/env python
"""A frozen-encoder (ssl_probe) epoch from the feature cache against a W2V2-MTL fine-tuning epoch.

Not a test: it prints the figure issue 10 asks for (a cached epoch at least 20x faster than a
fine-tuning epoch), for docs/benchmarks.md. Both epochs train on the same synthetic utterances
(IEMOCAP-like durations, written as WAV files), in the same duration-bucketed batches, through
serkit's own data path: the probe reads each utterance's float16 layers from the cache
(:class:`serkit.dataio.FeatureCache`, filled once beforehand: the extraction time is reported too),
W2V2-MTL reads the audio and runs the encoder forward and backward. Each epoch is forward +
backward + Adam step over every batch, after one warm-up batch.

    tools/venv/bin/python tools/benchmark_probe.py                    # the mini recipe's tiny encoder
    tools/venv/bin/python tools/benchmark_probe.py --base --utts 16   # wav2vec2-base's architecture
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

REPO = Path(__file__).resolve().parents[1]


def write_utterances(durations: list[float], folder: Path, seed: int, n_classes: int = 4) -> list:
    """Noise WAVs of the given durations as :class:`serkit.dataio.Utterance` records (labels cycle)."""
    from serkit.dataio import Utterance

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    utterances = []
    for index, seconds in enumerate(durations):
        path = folder / f"u{index:04d}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        utterances.append(Utterance(f"u{index:04d}", str(path), index % n_classes, (), float(seconds)))
    return utterances


def _loader(dataset, batch_size: int, seed: int):
    from torch.utils.data import DataLoader

    from serkit.dataio import DurationBucketBatchSampler, collate_batch

    sampler = DurationBucketBatchSampler(dataset.durations, batch_size, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch)


def epoch_seconds(model: torch.nn.Module, loader) -> float:
    """Wall time of one training epoch over ``loader`` (after one untimed warm-up batch)."""
    from serkit.model import mtl_loss

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step(batch) -> None:
        inputs, lengths = batch.sig
        loss, _, _ = mtl_loss(model(inputs, lengths), batch.emo, None, None, lam=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(next(iter(loader)))
    start = time.perf_counter()
    for batch in loader:
        step(batch)
    return time.perf_counter() - start


def cached_vs_finetune(encoder_source: str, durations: list[float], workdir: Path, batch_size: int = 8,
                       seed: int = 0) -> dict:
    """Seconds of one ssl_probe epoch from the cache and of one W2V2-MTL fine-tuning epoch, and their ratio."""
    from serkit.dataio import EmotionDataset, FeatureCache
    from serkit.model.ser_model import SERModel
    from serkit.model.ssl_probe import SSLProbeFamily
    from serkit.model.w2v2_mtl import W2V2Network
    from serkit.features import FeatureSpec

    torch.manual_seed(seed)
    utterances = write_utterances(durations, workdir / "wav", seed)
    spec = FeatureSpec.from_dict(SSLProbeFamily().feature({"sample_rate": 16000, "encoder_source": encoder_source}))
    cache = FeatureCache(workdir / "dump", spec.to_dict())
    cached = EmotionDataset(utterances, feature=spec, cache=cache, with_tokens=False)
    start = time.perf_counter()
    for index in range(len(cached)):  # what the first epoch (or a prepared dump/) does once
        cached.inputs(index)
    extraction = time.perf_counter() - start
    probe = SERModel(SSLProbeFamily().build_network({"dropout": 0.1}, 4, spec.frame_shape))
    probe_s = epoch_seconds(probe, _loader(cached, batch_size, seed))

    finetune = SERModel(W2V2Network.from_pretrained(encoder_source, n_emotions=4, freeze_feature_encoder=True))
    waveforms = EmotionDataset(utterances, with_tokens=False)
    finetune_s = epoch_seconds(finetune, _loader(waveforms, batch_size, seed))
    return {"utterances": len(durations), "audio_s": round(sum(durations), 1), "batch_size": batch_size,
            "cache_fill_s": round(extraction, 3), "probe_epoch_s": round(probe_s, 4),
            "finetune_epoch_s": round(finetune_s, 3), "speedup": round(finetune_s / probe_s, 1),
            "cache_mb": round(sum(p.stat().st_size for p in cache.dir.glob("*.pt")) / 2**20, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utts", type=int, default=48, help="utterances in the epoch")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--base", action="store_true", help="wav2vec2-base's architecture (random weights)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tools"))
    from benchmark import iemocap_like_durations
    from serkit.model.tiny_w2v2 import build_tiny_w2v2

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.base:
            from transformers import Wav2Vec2Config, Wav2Vec2Model

            source = workdir / "encoder"
            Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(source)
        else:
            source = build_tiny_w2v2(workdir / "encoder")
        result = cached_vs_finetune(str(source), iemocap_like_durations(args.utts, args.seed), workdir,
                                    args.batch_size, args.seed)
    result.update(encoder="wav2vec2-base (random)" if args.base else "tiny (mini recipe)",
                  threads=torch.get_num_threads())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
