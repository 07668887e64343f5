"""Paired timing of serkit's W2V2-MTL training step against the plain SpeechBrain baseline.

Two Brains share one process, one randomly initialised encoder (the same weights loaded twice) and
the same synthetic utterances; each training step is ``Brain.fit_batch`` (forward, backward,
clipping, optimizer step), i.e. what a run executes per batch. Steps alternate between the models
(the order rotates every step) so that both see the same machine load; each pair gives a ratio, and
the median with its min-max range is robust to a busy neighbour. Three rows:

* ``same_batches``: both models train the same random batches (the baseline recipe's batching);
* ``duration_batches``: serkit trains its own :class:`~serkit.data.dataio.DurationBucketBatchSampler`
  batches (the config's ``batch_size`` cap and ``batch_seconds`` budget, so possibly more, smaller
  batches), the baseline random batches of ``batch_size``, both over the same utterance set (one
  epoch each); throughput is compared in audio-seconds per second;
* ``strongest_baseline``: serkit's duration batches against a second baseline Brain at the strongest
  setting a SpeechBrain user would choose: SpeechBrain's ``precision`` run option resolved as
  serkit's ``--precision`` is (bf16 where the CPU or GPU has bf16 units) and duration-sorted batches
  of ``batch_size`` (the recipes' ``sorting: ascending``, see :func:`sorted_batches`), so that the
  speed-up is not bf16 and buckets against fp32 and random batches.

Peak memory needs a fresh process per model (``ru_maxrss`` never decreases), see :func:`peak_memory_child`.
serkit's side is built as ``serkit.training.train.train_fold`` builds it (conf/w2v2_mtl.yaml through
``serkit.bin.train.load_hparams``, ``build_model``, ``precision_run_opts``, ``SERBrain``), minus
the data directory. docs/benchmarks.md describes the output.
"""
from __future__ import annotations

import random
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from serkit.data import inventory
from serkit.data.dataio import DurationBucketBatchSampler, check_batch_seconds, collate_batch, padded_fraction

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf" / "w2v2_mtl.yaml"
SAMPLE_RATE = 16000
N_EMOTIONS = 4
N_TOKENS = 25  # CTC tokens of serkit's head (mtl_lambda > 0), about an emotion-phoneme inventory's size
INFERENCE_SECONDS = 10.0


def iemocap_like_durations(n: int, seed: int) -> list[float]:
    """Durations shaped like IEMOCAP's 4-class set (mean about 4.5 s, long right tail)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=1.3, sigma=0.6, size=n), 0.6, 20.0).tolist()


# ----------------------------------------------------------------------------- models


def save_encoder(kind: str, folder: Path) -> Path:
    """Write a randomly initialised encoder: ``base`` (``Wav2Vec2Config()``, wav2vec2-base's shape) or ``tiny``."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from serkit.model.tiny_w2v2 import build_tiny_w2v2

    if kind == "tiny":
        return build_tiny_w2v2(folder)
    if kind != "base":
        raise ValueError(f"encoder must be 'base' or 'tiny', got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)  # wav2vec2-base's input: the normalised waveform
    return folder


def serkit_hparams(encoder_dir: Path, conf: Path = CONF) -> dict:
    """``conf`` (default conf/w2v2_mtl.yaml) as a recipe loads it, on ``encoder_dir``, with placeholder data paths."""
    from serkit.bin.train import load_hparams

    output = encoder_dir.parent / "serkit_output"  # never written: no checkpointer, no stage ends
    return load_hparams(str(conf), {"encoder_source": str(encoder_dir), "data_dir": "-", "fold_dir": "-",
                                    "output_folder": str(output)})


def serkit_batch_seconds() -> float | None:
    """The padded-seconds budget per batch serkit's recipes train with (conf/w2v2_mtl.yaml)."""
    return check_batch_seconds(serkit_hparams(Path("-") / "encoder").get("batch_seconds"))


def bench_targets(hparams: dict, n_tokens: int):
    """The emotion and CTC targets of ``hparams`` with made-up inventories (there is no data directory)."""
    from serkit.targets import TargetSet, target_class

    emotion, ctc = target_class("emotion")(hparams), target_class("ctc")(hparams)
    emotion.classes = [f"emo{i}" for i in range(N_EMOTIONS)]
    ctc.tokens = inventory.with_blank(f"t{i}" for i in range(1, n_tokens)) if n_tokens else []
    return TargetSet([emotion, ctc])


def serkit_brain(encoder_dir: Path, precision: str, device: str = "cpu", conf: Path = CONF,
                 n_tokens: int = N_TOKENS, input_dims: tuple[int, ...] = ()):
    """serkit's SERBrain for ``conf``'s family as ``train_fold`` builds it (no data directory, no checkpoints)."""
    from serkit.model import get_family
    from serkit.model.build import build_model
    from serkit.training.train import SERBrain, precision_run_opts

    hparams = serkit_hparams(encoder_dir, conf)
    family = get_family(hparams["model"])
    model = build_model(family, hparams, N_EMOTIONS, n_tokens, [input_dims])
    run_opts, _ = precision_run_opts(hparams, {"device": device, "precision": precision})
    brain = SERBrain(modules={"model": model}, hparams=hparams, run_opts=run_opts, checkpointer=None,
                     family=family, targets=bench_targets(hparams, n_tokens))
    brain.on_fit_start()  # what Brain.fit does first: makes the optimizers
    brain.modules.train()
    return brain


SIDES = ("baseline", "baseline_strong", "serkit")


def build_side(side: str, encoder_dir: Path, precision: str, device: str):
    """The Brain of ``side`` (one of :data:`SIDES`) on the encoder saved in ``encoder_dir``: ``baseline``
    trains fp32 as the recipe ships, ``baseline_strong`` in ``precision`` resolved as serkit's trainer
    resolves it (SpeechBrain's own ``precision`` run option)."""
    if side == "serkit":
        return serkit_brain(encoder_dir, precision, device)
    if side not in SIDES:
        raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    from serkit.bench.baseline import baseline_brain
    from serkit.features.encoder import load_encoder
    from serkit.training.precision import resolve_precision
    baseline_precision = resolve_precision(precision, device).name if side == "baseline_strong" else "fp32"
    return baseline_brain(load_encoder(str(encoder_dir)), N_EMOTIONS, device, baseline_precision)


# ----------------------------------------------------------------------------- batches and steps


def make_batch(durations: list[float], seed: int):
    """A padded batch (serkit's collate_batch) of random waveforms, emotions and CTC tokens, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for index, duration in enumerate(durations):
        n_tokens = max(1, int(duration * 8))  # about 8 phones a second
        items.append({"id": f"utt{index}", "sig": 0.1 * torch.randn(int(duration * SAMPLE_RATE), generator=generator),
                      "emo": int(torch.randint(0, N_EMOTIONS, (), generator=generator)),
                      "tokens": torch.randint(1, N_TOKENS, (n_tokens,), generator=generator), "token_len": n_tokens})
    return collate_batch(items, sequences=("tokens",))


def timed_step(brain, batch, seed: int) -> float:
    """Wall seconds of one ``fit_batch``; ``seed`` fixes dropout/LayerDrop draws so paired steps match."""
    torch.manual_seed(seed)
    synchronize(brain.device)
    start = time.perf_counter()
    loss = brain.fit_batch(batch)
    synchronize(brain.device)
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise RuntimeError(f"{type(brain).__name__}: non-finite training loss {float(loss)} in the benchmark")
    return elapsed


def synchronize(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """The baseline recipe's batching: a shuffled order cut into batches."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def sorted_batches(durations: list[float], batch_size: int, seed: int) -> list[list[int]]:
    """A SpeechBrain recipe's ``sorting: ascending``: the dataset sorted by duration with SpeechBrain's
    ``DynamicItemDataset.filtered_sorted`` and cut into consecutive batches of ``batch_size``. The batches
    are then visited in a seeded random order (what ``DynamicBatchSampler``'s ``batch_ordering: random``
    does): the same work, but short and long batches spread over the timed rounds as serkit's do."""
    from speechbrain.dataio.dataset import DynamicItemDataset

    dataset = DynamicItemDataset({str(i): {"duration": d} for i, d in enumerate(durations)})
    order = [int(key) for key in dataset.filtered_sorted(sort_key="duration").data_ids]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


@dataclass
class Plan:
    """The utterance set and its three batchings; round ``k`` trains ``random[k]``, ``buckets[k]`` and
    ``sorted[k]``."""

    durations: list[float]
    random: list[list[int]]
    buckets: list[list[int]]
    sorted: list[list[int]]
    warmup: list[float]

    @classmethod
    def draw(cls, steps: int, batch_size: int, seed: int, max_seconds: float | None = None,
             batch_seconds: float | None = None) -> "Plan":
        """``steps`` random batches' worth of utterances, and serkit's buckets of them (at most
        ``batch_size`` utterances and ``batch_seconds`` of padded audio each). ``max_seconds`` crops
        longer utterances (as a recipe's ``max_duration`` does), so that wav2vec2-base's random
        batches fit a CPU machine's memory."""
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps and batch size must be at least 1, got {steps} and {batch_size}")
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")

        def draw(n: int, draw_seed: int) -> list[float]:
            return [min(d, max_seconds or d) for d in iemocap_like_durations(n, draw_seed)]
        durations = draw(steps * batch_size, seed)
        buckets = list(DurationBucketBatchSampler(durations, batch_size, batch_seconds=batch_seconds, shuffle=True,
                                                  seed=seed))
        return cls(durations, random_batches(len(durations), batch_size, seed), buckets,
                   sorted_batches(durations, batch_size, seed), draw(batch_size, seed + 1))

    def audio(self, batch: list[int]) -> float:
        return sum(self.durations[i] for i in batch)

    def seconds(self, batch: list[int]) -> list[float]:
        return [self.durations[i] for i in batch]

    def memory_batch(self) -> list[float]:
        """The durations of the random batch with the longest utterance: peak memory's worst timed case."""
        return self.seconds(max(self.random, key=lambda batch: max(self.seconds(batch))))


# ----------------------------------------------------------------------------- measurements


def trainable_snapshot(brain) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    return [(p, p.detach().clone()) for p in brain.modules.parameters() if p.requires_grad]


def training_evidence(snapshot) -> dict:
    """How many trainable tensors moved since ``snapshot`` and the norm of the whole update."""
    changed = sum(int(not torch.equal(p.detach(), before)) for p, before in snapshot)
    norm = sum(float((p.detach().float() - before.float()).pow(2).sum()) for p, before in snapshot) ** 0.5
    return {"changed_tensors": changed, "trainable_tensors": len(snapshot), "update_norm": norm}


def throughput_row(serkit_audio: list[float], serkit_times: list[float], baseline_audio: list[float],
                   baseline_times: list[float]) -> dict:
    """Paired ratios of audio-seconds per second (serkit over baseline, one per round: median, min, max)
    and each side's total audio over its total time."""
    ratios = [(a_s / t_s) / (a_b / t_b) for a_s, t_s, a_b, t_b in  # zip: the paired rounds only
              zip(serkit_audio, serkit_times, baseline_audio, baseline_times)]
    return {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratios": ratios, "serkit_audio_s_per_s": sum(serkit_audio) / sum(serkit_times),
            "baseline_audio_s_per_s": sum(baseline_audio) / sum(baseline_times)}


def inference_rtf(brain, wav: torch.Tensor, repeats: int = 3) -> float:
    """Compute time / audio time of the eval-mode network on one utterance (batch 1), after a warm-up."""
    model = brain.modules.model
    model.eval()
    x = wav.unsqueeze(0).to(brain.device)
    lengths = torch.ones(1, device=brain.device)
    with torch.no_grad(), brain.evaluation_ctx:
        model(x, lengths)
        synchronize(brain.device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x, lengths)
        synchronize(brain.device)
    model.train()
    return (time.perf_counter() - start) / (repeats * wav.shape[0] / SAMPLE_RATE)


def paired_run(encoder_dir: Path, plan: Plan, precision: str, device: str, seed: int) -> dict:
    """Alternate baseline / serkit (same batches) / serkit (its buckets) / the strong baseline (sorted
    batches) over ``plan``'s rounds in this process.

    Round ``k`` trains what exists of ``random[k]`` (baseline and serkit), ``buckets[k]`` (serkit) and
    ``sorted[k]`` (the strong baseline); the buckets may outnumber the others (a seconds budget), and
    their last rounds are then unpaired.
    """
    brains = {side: build_side(side, encoder_dir, precision, device) for side in SIDES}
    snapshots = {side: trainable_snapshot(brain) for side, brain in brains.items()}
    warmup = make_batch(plan.warmup, seed + 1)
    for brain in brains.values():  # not timed: allocations, kernel selection
        timed_step(brain, warmup, seed)
    runs = [("baseline", "baseline", plan.random), ("serkit", "serkit", plan.random),
            ("serkit_buckets", "serkit", plan.buckets), ("baseline_strong", "baseline_strong", plan.sorted)]
    times = {name: [] for name, _, _ in runs}
    for k in range(max(len(batches) for _, _, batches in runs)):
        for name, side, batches in runs[k % len(runs):] + runs[:k % len(runs)]:  # rotate who goes first
            if k < len(batches):
                batch = make_batch(plan.seconds(batches[k]), seed + 100 + k)
                times[name].append(timed_step(brains[side], batch, seed + 1000 + k))
    random_audio = [plan.audio(b) for b in plan.random]
    bucket_audio = [plan.audio(b) for b in plan.buckets]
    sorted_audio = [plan.audio(b) for b in plan.sorted]
    same = throughput_row(random_audio, times["serkit"], random_audio, times["baseline"])
    buckets = throughput_row(bucket_audio, times["serkit_buckets"], random_audio, times["baseline"])
    strongest = throughput_row(bucket_audio, times["serkit_buckets"], sorted_audio, times["baseline_strong"])
    wav = 0.1 * torch.randn(int(INFERENCE_SECONDS * SAMPLE_RATE), generator=torch.Generator().manual_seed(seed))
    return {
        "same_batches": same,
        "duration_batches": buckets,
        "strongest_baseline": strongest,
        "padding": {"random": padded_fraction(plan.durations, plan.random),
                    "buckets": padded_fraction(plan.durations, plan.buckets),
                    "sorted": padded_fraction(plan.durations, plan.sorted)},
        "batches": {"random": len(plan.random), "buckets": len(plan.buckets), "sorted": len(plan.sorted)},
        "audio_seconds": sum(random_audio),
        "inference_rtf": {side: inference_rtf(brain, wav) for side, brain in brains.items()},
        "precision": {side: brain.precision for side, brain in brains.items()},
        "params_M": {side: sum(p.numel() for p in brain.modules.parameters()) / 1e6 for side, brain in brains.items()},
        "trained": {side: training_evidence(snapshot) for side, snapshot in snapshots.items()},
    }


def fold_padding(batch_size: int, batch_seconds: float | None, seed: int, n: int = 4400) -> dict:
    """Padding of serkit's batches and of random batches on an IEMOCAP LOSO training fold's worth of
    IEMOCAP-like durations (no crop): the figure the timed rounds are too few to show."""
    durations = iemocap_like_durations(n, seed)
    buckets = list(DurationBucketBatchSampler(durations, batch_size, batch_seconds=batch_seconds, shuffle=True,
                                              seed=seed))
    return {"utterances": n, "buckets": padded_fraction(durations, buckets),
            "random": padded_fraction(durations, random_batches(n, batch_size, seed)),
            "sorted": padded_fraction(durations, sorted_batches(durations, batch_size, seed))}


def peak_memory_mb(device: str) -> float:
    """The process's peak memory so far: resident set size on CPU, torch's peak allocation on a GPU."""
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_memory_child(side: str, encoder_dir: str, durations: list[float], precision: str, device: str,
                      threads: int, seed: int, queue) -> None:
    """In a fresh process: build ``side``, train a warm-up and one step on a batch of ``durations``;
    put its peak memory (MB) on ``queue``."""
    torch.set_num_threads(threads)
    brain = build_side(side, Path(encoder_dir), precision, device)
    batch = make_batch(durations, seed)
    for step in range(2):
        timed_step(brain, batch, seed + step)
    queue.put(peak_memory_mb(device))
