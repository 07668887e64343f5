"""A frozen-encoder probe epoch read from the feature cache, against a W2V2-MTL fine-tuning epoch.

The s3prl/EmoBox protocol trains only a head over a frozen encoder (serkit's ``ssl_probe`` family):
its input, every hidden state of the encoder, is the same in every epoch, so serkit computes it once
per utterance into the feature cache (float16) and an epoch costs only the head. This measures that
claim as users run it: the same synthetic utterances (IEMOCAP-like durations, written as WAV files)
go through serkit's data path (:class:`~serkit.data.dataio.EmotionDataset`, the config's duration
batches) into serkit's trainer (``SERBrain.fit_batch``, in the precision the trainer picks); the
probe reads the cache, filled once beforehand (that time is reported too), W2V2-MTL reads the audio
and runs its encoder forward and backward. Each epoch is timed after one untimed warm-up batch.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader

from serkit.bench.paired import (CONF, N_EMOTIONS, N_TOKENS, SAMPLE_RATE, bench_targets, serkit_brain, serkit_hparams,
                                 synchronize)
from serkit.data.dataio import DurationBucketBatchSampler, EmotionDataset, FeatureCache, Utterance, check_batch_seconds

PROBE_CONF = CONF.parent / "ssl_probe.yaml"


def write_utterances(durations: list[float], folder: Path, seed: int) -> list[Utterance]:
    """Noise WAVs of ``durations`` as utterances with cycling labels and ~8 random CTC tokens a second."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    utterances = []
    for index, seconds in enumerate(durations):
        path = folder / f"u{index:04d}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32), SAMPLE_RATE)
        tokens = tuple(int(t) for t in rng.integers(1, N_TOKENS, max(1, int(seconds * 8))))
        utterances.append(Utterance(f"u{index:04d}", str(path), {"emotion": index % N_EMOTIONS, "ctc": tokens},
                                    float(seconds)))
    return utterances


def epoch_seconds(brain, dataset: EmotionDataset, seed: int) -> float:
    """Wall time of one training epoch of ``brain`` over ``dataset`` in its config's batches (warm-up untimed)."""
    hparams = brain.hparams
    sampler = DurationBucketBatchSampler(dataset.durations, int(hparams.batch_size),
                                         batch_seconds=check_batch_seconds(getattr(hparams, "batch_seconds", None)),
                                         shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate)
    brain.fit_batch(next(iter(loader)))
    synchronize(brain.device)
    start = time.perf_counter()
    for batch in loader:
        brain.fit_batch(batch)
    synchronize(brain.device)
    return time.perf_counter() - start


def cached_vs_finetune(encoder_dir: Path, durations: list[float], workdir: Path, precision: str = "auto",
                       device: str = "cpu", seed: int = 0) -> dict:
    """Seconds of one ssl_probe epoch from the cache and of one W2V2-MTL fine-tuning epoch on the same audio."""
    from serkit.model import get_family
    from serkit.model.build import feature_spec

    torch.manual_seed(seed)
    utterances = write_utterances(durations, workdir / "wav", seed)
    hparams = serkit_hparams(encoder_dir, PROBE_CONF)
    spec = feature_spec(get_family(hparams["model"]).feature(hparams))
    cache = FeatureCache(workdir / "dump", spec)
    cached = EmotionDataset(utterances, features=[spec], caches=[cache], targets=bench_targets(hparams, 0))
    start = time.perf_counter()
    for index in range(len(cached)):  # what the first epoch (or any earlier fold) does once
        cached.inputs(index)
    fill = time.perf_counter() - start
    probe = serkit_brain(encoder_dir, precision, device, conf=PROBE_CONF, n_tokens=0, input_dims=spec.frame_shape)
    probe_s = epoch_seconds(probe, cached, seed)
    finetune = serkit_brain(encoder_dir, precision, device)
    finetune_s = epoch_seconds(finetune, EmotionDataset(utterances, targets=finetune.targets), seed)
    return {"utterances": len(durations), "audio_s": sum(durations), "cache_fill_s": fill, "probe_epoch_s": probe_s,
            "finetune_epoch_s": finetune_s, "speedup": finetune_s / probe_s,
            "cache_MB": sum(p.stat().st_size for p in cache.dir.glob("*.pt")) / 2**20,
            "precision": {"probe": probe.precision, "finetune": finetune.precision}}
