"""Tests of serkit's batches (serkit.data.dataio.DurationBucketBatchSampler): duration buckets within a
budget of padded seconds, their padding on IEMOCAP-like durations, their shares under DDP, and the
resume check on the budget (serkit.training.train)."""
from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch

from serkit.bin.train import load_hparams
from serkit.training.checkpoints import SafeCheckpointer
from serkit.bench.paired import iemocap_like_durations
from serkit.data.dataio import DurationBucketBatchSampler, padded_fraction
from serkit.training.train import TrainError, register_resume_state, shared_sampler

REPO = Path(__file__).resolve().parents[1]


def default_batching(family: str) -> tuple[int, float | None]:
    """(batch_size, batch_seconds) of conf/<family>.yaml as shipped."""
    hparams = load_hparams(str(REPO / "conf" / f"{family}.yaml"),
                           {"data_dir": "-", "fold_dir": "-", "output_folder": "-"})
    return int(hparams["batch_size"]), hparams["batch_seconds"]


def epoch_batches(sampler: DurationBucketBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def padded_seconds(durations, batch) -> float:
    return len(batch) * max(durations[i] for i in batch)


# ----------------------------------------------------------------------------- one process


def test_padded_fraction_counts_padding_over_padded_area():
    # batch [1 s, 2 s] pads to 2 x 2 s, batch [3 s, 4 s] to 2 x 4 s: 10 s real in 12 s padded
    assert padded_fraction([1.0, 2.0, 3.0, 4.0], [[0, 1], [2, 3]]) == pytest.approx(1 / 6)
    assert padded_fraction([2.0, 2.0], [[0, 1]]) == 0.0


def test_bucketing_pads_far_less_than_random_batching():
    rng = random.Random(7)
    durations = [rng.uniform(0.5, 15.0) for _ in range(400)]
    bucketed = list(DurationBucketBatchSampler(durations, batch_size=16, seed=0))
    order = list(range(len(durations)))
    rng.shuffle(order)
    random_batches = [order[start:start + 16] for start in range(0, len(order), 16)]
    assert padded_fraction(durations, bucketed) < 0.1 * padded_fraction(durations, random_batches)


def test_batches_respect_the_budget_and_the_utterance_cap_and_cover_each_utterance_once():
    durations = iemocap_like_durations(800, seed=3)
    sampler = DurationBucketBatchSampler(durations, batch_size=16, batch_seconds=60.0, seed=1)
    for epoch in (1, 2, 3):
        batches = epoch_batches(sampler, epoch)
        assert sorted(i for batch in batches for i in batch) == list(range(len(durations)))
        assert all(len(batch) <= 16 and padded_seconds(durations, batch) <= 60.0 for batch in batches)
        assert max(map(len, batches)) == 16  # short utterances still fill the utterance cap
        below_cap = [padded_seconds(durations, batch) for batch in batches if len(batch) < 16]
        assert sum(seconds <= 30.0 for seconds in below_cap) <= 2  # the budget binds (but the first, the last)
    # without a budget, batches are counted in utterances only: 16 x 20 s would pass
    counted = DurationBucketBatchSampler(durations, batch_size=16, seed=1).batches()
    assert max(padded_seconds(durations, batch) for batch in counted) > 200.0


def test_an_utterance_longer_than_the_budget_gets_a_batch_of_its_own(caplog):
    durations = [1.0 + 0.1 * i for i in range(20)] + [25.0, 31.0]  # indices 20 and 21 exceed 10 s
    with caplog.at_level(logging.WARNING, logger="serkit.data.dataio"):
        sampler = DurationBucketBatchSampler(durations, batch_size=8, batch_seconds=10.0, seed=0)
    assert [record.getMessage() for record in caplog.records] == [
        "2 of 22 utterance(s) are longer than batch_seconds=10 s: each gets a batch of its own, over the budget "
        "(kept, not dropped)"]
    for epoch in (1, 2):
        batches = epoch_batches(sampler, epoch)
        assert [20] in batches and [21] in batches
        assert sorted(i for batch in batches for i in batch) == list(range(22))
        assert all(padded_seconds(durations, batch) <= 10.0 for batch in batches if batch not in ([20], [21]))


def test_batches_are_a_function_of_seed_and_epoch_only():
    durations = iemocap_like_durations(800, seed=4)

    def draw(seed: int, epoch: int) -> list[list[int]]:
        return epoch_batches(DurationBucketBatchSampler(durations, 16, batch_seconds=60.0, seed=seed), epoch)

    assert draw(seed=5, epoch=2) == draw(seed=5, epoch=2)  # a new sampler (a resumed run) replays them
    assert draw(seed=5, epoch=2) != draw(seed=5, epoch=3)
    assert draw(seed=5, epoch=2) != draw(seed=6, epoch=2)
    assert draw(seed=5, epoch=3) != draw(seed=6, epoch=2)  # not seed + epoch
    sampler = DurationBucketBatchSampler(durations, 16, batch_seconds=60.0, seed=5)
    first = epoch_batches(sampler, 2)
    epoch_batches(sampler, 3)
    assert epoch_batches(sampler, 2) == first


@pytest.mark.parametrize("batch_seconds", [None, 60.0])
def test_batch_membership_changes_from_epoch_to_epoch(batch_seconds):
    """Not only the order: most batches hold another group of utterances in the next epoch."""
    durations = iemocap_like_durations(4400, seed=0)
    sampler = DurationBucketBatchSampler(durations, 16, batch_seconds=batch_seconds, seed=1986)
    members = [{frozenset(batch) for batch in epoch_batches(sampler, epoch)} for epoch in (1, 2, 3)]
    for before, after in zip(members, members[1:]):
        assert len(before & after) < 0.2 * len(before)


@pytest.mark.parametrize("n_utterances", [4400, 800])  # an IEMOCAP LOSO training fold; tools/benchmark.py's set
def test_padding_is_at_most_two_percent_on_iemocap_like_durations(n_utterances):
    batch_size, batch_seconds = default_batching("w2v2_mtl")
    for seed in (0, 1, 2):
        durations = iemocap_like_durations(n_utterances, seed)
        sampler = DurationBucketBatchSampler(durations, batch_size, batch_seconds=batch_seconds, seed=seed)
        for epoch in (1, 2, 3):
            assert padded_fraction(durations, epoch_batches(sampler, epoch)) <= 0.02


@pytest.mark.parametrize("family", ["w2v2_mtl", "tim_net", "sta_crnn"])
def test_every_family_default_bounds_padded_audio_and_pads_little_on_a_loso_fold(family):
    batch_size, batch_seconds = default_batching(family)
    assert batch_seconds is not None and batch_seconds > 0
    durations = iemocap_like_durations(4400, seed=0)
    batches = epoch_batches(DurationBucketBatchSampler(durations, batch_size, batch_seconds=batch_seconds), 1)
    assert max(padded_seconds(durations, batch) for batch in batches) <= batch_seconds  # all under 20 s here
    assert padded_fraction(durations, batches) <= 0.02


def test_unshuffled_batches_are_cut_in_increasing_duration_without_any_draw():
    durations = [3.0, 1.0, 2.0, 5.0, 4.0, 9.0]
    assert list(DurationBucketBatchSampler(durations, batch_size=2, shuffle=False)) == [[1, 2], [0, 4], [3, 5]]
    # a budget of 8 s: 3 x 3 s does not fit, 2 x 4 s just does, 2 x 5 s not; 9 s alone
    assert list(DurationBucketBatchSampler(durations, batch_size=4, batch_seconds=8.0, shuffle=False)) == \
        [[1, 2], [0, 4], [3], [5]]


@pytest.mark.parametrize("options", [
    {"batch_size": 16, "batch_seconds": 60.0},
    {"batch_size": 16},
    {"batch_size": 5, "batch_seconds": 12.0, "num_replicas": 3, "rank": 1},
    {"batch_size": 16, "batch_seconds": 60.0, "shuffle": False},
])
def test_len_is_the_number_of_batches_yielded_in_every_epoch(options):
    durations = iemocap_like_durations(300, seed=5)
    sampler = DurationBucketBatchSampler(durations, seed=2, **options)
    for epoch in range(8):
        sampler.set_epoch(epoch)
        assert len(sampler) == len(list(sampler))


def test_len_follows_the_epoch():
    """The random first cut changes the number of batches: 300 in 16s is 19 or 20 batches."""
    sampler = DurationBucketBatchSampler(iemocap_like_durations(300, seed=5), 16, seed=2)
    lengths = []
    for epoch in range(8):
        sampler.set_epoch(epoch)
        lengths.append(len(sampler))
    assert set(lengths) == {19, 20}


def test_sampler_rejects_a_zero_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        DurationBucketBatchSampler([1.0], batch_size=0)


@pytest.mark.parametrize("value", [0, -5.0, math.nan, math.inf, True, "60"])
def test_a_hostile_budget_is_refused_naming_the_option(value):
    with pytest.raises(ValueError, match=r"batch_seconds must be a positive number of seconds .* --batch_seconds"):
        DurationBucketBatchSampler([1.0, 2.0], batch_size=2, batch_seconds=value)
    hparams = {"batch_size": 2, "batch_seconds": value, "seed": 1, "fold_dir": "folds/fold01"}
    with pytest.raises(TrainError, match="batch_seconds must be"):
        shared_sampler(SimpleNamespace(durations=[1.0, 2.0]), sb.Stage.TRAIN, hparams, shuffle=True)


def test_the_trainer_builds_batches_with_the_configured_budget():
    hparams = {"batch_size": 4, "batch_seconds": 5.0, "seed": 1, "fold_dir": "folds/fold01"}
    sampler = shared_sampler(SimpleNamespace(durations=[1.0, 2.0, 2.5, 4.0]), sb.Stage.TRAIN, hparams, shuffle=False)
    assert sampler.batches() == [[0, 1], [2], [3]]
    del hparams["batch_seconds"]  # a config without the option counts utterances only
    sampler = shared_sampler(SimpleNamespace(durations=[1.0, 2.0, 2.5, 4.0]), sb.Stage.TRAIN, hparams, shuffle=False)
    assert sampler.batch_seconds is None and sampler.batches() == [[0, 1, 2, 3]]


# ----------------------------------------------------------------------------- several processes (DDP)


def test_ddp_shares_cover_every_global_batch_of_at_least_one_utterance_per_process():
    rng = random.Random(3)
    durations = [rng.uniform(0.5, 20.0) for _ in range(97)]
    shards = [DurationBucketBatchSampler(durations, 8, batch_seconds=30.0, seed=11, num_replicas=3, rank=rank)
              for rank in range(3)]
    for epoch in (1, 2):
        shares = [epoch_batches(shard, epoch) for shard in shards]
        global_batches = shards[0].batches()
        assert all(shard.batches() == global_batches for shard in shards)
        assert all(len(share) == len(global_batches) == len(shard) for share, shard in zip(shares, shards))
        assert sorted(i for batch in global_batches for i in batch) == list(range(97))
        for step, batch in enumerate(global_batches):
            assert len(batch) >= 3
            assert [share[step] for share in shares] == [batch[rank::3] for rank in range(3)]  # strided, complete
        over_budget = [batch for batch in global_batches if padded_seconds(durations, batch) > 30.0]
        assert over_budget  # 3 x an utterance over 10 s exceeds 30 s: one utterance per process, no fewer
        assert sum(len(batch) > 3 for batch in over_budget) <= 1  # the longest batch may take a short tail


def test_ddp_keeps_the_one_process_batches_but_a_too_small_last_one():
    durations = iemocap_like_durations(400, seed=8)
    for epoch in range(1, 7):
        one = epoch_batches(DurationBucketBatchSampler(durations, 16, batch_seconds=60.0, seed=3), epoch)
        two = DurationBucketBatchSampler(durations, 16, batch_seconds=60.0, seed=3, num_replicas=2, rank=0)
        two.set_epoch(epoch)
        assert len({frozenset(batch) for batch in two.batches()} - {frozenset(batch) for batch in one}) <= 1


# ----------------------------------------------------------------------------- resume


def checkpointer_with(folder: Path, sampler: DurationBucketBatchSampler) -> SafeCheckpointer:
    checkpointer = SafeCheckpointer(folder, recoverables={"model": torch.nn.Linear(2, 2)})
    register_resume_state(checkpointer, sampler, torch.Generator().manual_seed(0))
    return checkpointer


def test_resuming_with_another_budget_is_refused(tmp_path):
    durations = [1.0 + 0.1 * i for i in range(40)]
    checkpointer_with(tmp_path, DurationBucketBatchSampler(durations, 8, batch_seconds=60.0)).save_checkpoint()
    assert checkpointer_with(tmp_path, DurationBucketBatchSampler(durations, 8, batch_seconds=60.0)) \
        .recover_if_possible() is not None
    for other in (45.0, None):
        with pytest.raises(TrainError, match=rf"other batches \(batch_seconds 60.0 -> {other}\).*original settings"):
            checkpointer_with(tmp_path, DurationBucketBatchSampler(durations, 8, batch_seconds=other)) \
                .recover_if_possible()
