"""Tests of serkit.data.dataio: fold loading and its checks, datasets and padded batches (the duration-bucketed
batch sampler: tests/test_batching.py)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tiny_corpus import CLASSES, TOKENS, noisy_tones, write_tiny_corpus

from serkit.data.datadir import DataDirError
from serkit.data.dataio import EmotionDataset, check_class_coverage, collate_batch, load_fold_data, read_tokens
from serkit.features import make_feature
from serkit.targets import TargetSet


def make_tiny_corpus(root: Path, rates: dict[str, int] | None = None) -> dict[str, Path]:
    """8 utterances of 2 speakers (tones + noise, 0.5-1.25 s), a data dir, a lang dir and one fold
    (train: spk0, valid: spk1-u04/u05, test: spk1-u06/u07).

    ``spk0-u00`` has no phones (empty utt2phn value). ``rates`` maps utterance ids to a sample
    rate other than 16 kHz for their wav file.
    """
    return write_tiny_corpus(root, 8, seconds=lambda i: 0.5 + 0.25 * (i % 4), waveform=noisy_tones(220, 110),
                             splits={"train": range(0, 4), "valid": range(4, 6), "test": range(6, 8)},
                             phoneless={0}, rates=rates)


def with_ctc(paths: dict[str, Path]) -> TargetSet:
    """The emotion and emotion-phoneme CTC targets of the tiny corpus (a model with a CTC head)."""
    return TargetSet.from_config({"data_dir": paths["data"], "lang_dir": paths["lang"], "mtl_lambda": 0.1})


def emotion_only(paths: dict[str, Path]) -> TargetSet:
    """The emotion target alone (a model without a CTC head: no tokens read)."""
    return TargetSet.from_config({"data_dir": paths["data"], "mtl_lambda": 0})


def replace_in_file(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


# ----------------------------------------------------------------------------- loading a fold


def test_fold_items_hold_audio_labels_and_tokens(tmp_path):
    paths = make_tiny_corpus(tmp_path, rates={"spk0-u01": 22050})
    data = load_fold_data(paths["data"], paths["fold"], with_ctc(paths))
    assert [len(data.train), len(data.valid), len(data.test)] == [4, 2, 2]
    assert data.classes == CLASSES and data.targets.inventories()["tokens"] == TOKENS

    items = {data.train[i]["id"]: data.train[i] for i in range(len(data.train))}
    assert items["spk0-u00"]["sig"].shape == (8000,)  # 0.5 s at 16 kHz
    assert items["spk0-u01"]["sig"].shape == (12000,)  # 0.75 s resampled from 22.05 kHz
    assert items["spk0-u02"]["emo"] == CLASSES.index("sad")
    assert items["spk0-u02"]["tokens"].tolist() == [TOKENS.index(t) for t in ("F2", "V2", "L2", "VS2")]
    assert items["spk0-u00"]["tokens"].tolist() == [] and items["spk0-u00"]["token_len"] == 0
    assert data.train.durations == [0.5, 0.75, 1.0, 1.25]


def test_collate_pads_audio_with_relative_lengths_and_tokens_with_absolute_lengths(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    data = load_fold_data(paths["data"], paths["fold"], with_ctc(paths))
    batch = data.train.collate([data.train[0], data.train[3]])  # 0.5 s without phones, 1.25 s with 4
    wavs, lens = batch.sig
    assert wavs.shape == (2, 20000)
    assert lens.tolist() == pytest.approx([0.4, 1.0])
    assert torch.all(wavs[0, 8000:] == 0)
    assert batch.tokens.data.shape == (2, 4) and batch.tokens.data[0].tolist() == [0, 0, 0, 0]
    assert batch.token_len.tolist() == [0, 4]
    assert batch.emo.tolist() == [0, 3] and batch.id == ["spk0-u00", "spk0-u03"]


def test_collate_handles_a_batch_in_which_no_utterance_has_phones(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    data = load_fold_data(paths["data"], paths["fold"], with_ctc(paths))
    batch = data.train.collate([data.train[0], data.train[0]])
    assert batch.tokens.data.shape == (2, 1) and batch.token_len.tolist() == [0, 0]


def test_max_duration_crops_training_audio_only(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    data = load_fold_data(paths["data"], paths["fold"], with_ctc(paths), max_duration=0.6)
    assert data.train.n_cropped == 3
    assert data.train.durations == [0.5, 0.6, 0.6, 0.6]
    assert max(data.train[i]["sig"].shape[0] for i in range(4)) == 9600
    assert data.valid[1]["sig"].shape[0] == 12000  # 0.75 s: valid and test are never cropped


def test_phones_are_optional_only_when_not_required(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    (paths["data"] / "utt2phn").unlink()
    with pytest.raises(DataDirError, match="utt2phn.*lambda"):
        load_fold_data(paths["data"], paths["fold"], with_ctc(paths))
    data = load_fold_data(paths["data"], paths["fold"], emotion_only(paths))
    assert "tokens" not in data.targets.inventories()
    items = [data.train[i] for i in range(len(data.train))]
    assert all(set(item) == {"id", "sig", "emo"} for item in items)  # no CTC head: no tokens loaded
    batch = data.train.collate(items[:2])
    assert batch.sig.data.shape[0] == 2 and not hasattr(batch, "tokens")


# ----------------------------------------------------------------------------- bad input


def test_a_class_missing_from_training_or_validation_is_refused_naming_it_and_the_counts(tmp_path, caplog):
    """The tiny fold's valid set (spk1-u04/u05) holds only ang and hap; drop sad from train as well."""
    paths = make_tiny_corpus(tmp_path)
    data = load_fold_data(paths["data"], paths["fold"], with_ctc(paths))
    with pytest.raises(DataDirError) as refused:
        check_class_coverage(data, paths["fold"])
    assert f"{paths['fold']}: 'valid' has no utterance of sad, neu (ang 1, hap 1, sad 0, neu 0)" in str(refused.value)
    assert "allow_missing_classes: True" in str(refused.value)
    (paths["fold"] / "train").write_text("spk0-u00\nspk0-u01\nspk0-u03\n")
    data = load_fold_data(paths["data"], paths["fold"], with_ctc(paths))
    with caplog.at_level(logging.WARNING, logger="serkit.data.dataio"):
        check_class_coverage(data, paths["fold"], allow_missing=True)
    assert "'train' has no utterance of sad (ang 1, hap 1, sad 0, neu 1); 'valid' has no utterance of sad, neu" \
        in caplog.text and "training anyway" in caplog.text


def test_fold_naming_an_unknown_utterance_is_an_error(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    with open(paths["fold"] / "test", "a", encoding="utf-8") as handle:
        handle.write("spk9-u99\n")
    with pytest.raises(DataDirError, match=r"wav\.scp.*spk9-u99.*stage 2"):
        load_fold_data(paths["data"], paths["fold"], with_ctc(paths))


def test_missing_audio_file_is_an_error_before_training(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    (tmp_path / "wav" / "spk1-u05.wav").unlink()
    with pytest.raises(DataDirError, match=r"wav\.scp: 1 audio file.*spk1-u05"):
        load_fold_data(paths["data"], paths["fold"], with_ctc(paths))


def test_utterance_in_train_and_test_is_an_error(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    with open(paths["fold"] / "train", "a", encoding="utf-8") as handle:
        handle.write("spk1-u07\n")  # a test utterance
    with pytest.raises(DataDirError, match="both 'train' and 'test'.*spk1-u07"):
        load_fold_data(paths["data"], paths["fold"], with_ctc(paths))


def test_label_outside_the_classes_is_an_error(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    replace_in_file(paths["data"] / "utt2emo", "spk0-u01 hap", "spk0-u01 exc")
    with pytest.raises(DataDirError, match="spk0-u01.*'exc'.*classes"):
        load_fold_data(paths["data"], paths["fold"], with_ctc(paths))


def test_token_outside_the_inventory_is_an_error(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    replace_in_file(paths["data"] / "utt2phn", "spk0-u01 F1", "spk0-u01 Q1")
    with pytest.raises(DataDirError, match="utt2phn.*spk0-u01.*Q1"):
        load_fold_data(paths["data"], paths["fold"], with_ctc(paths))


@pytest.mark.parametrize("text, problem", [
    ("S0 0\n<blank> 1\n", "<blank>"),
    ("<blank> 0\nS0 2\n", "expected '<token> 1'"),
    ("<blank> 0\nS0 1\nS0 2\n", "duplicate token"),
])
def test_malformed_token_inventory_is_an_error(tmp_path, text, problem):
    (tmp_path / "tokens.txt").write_text(text, encoding="utf-8")
    with pytest.raises(DataDirError, match=problem):
        read_tokens(tmp_path)


def test_dataset_rejects_a_non_positive_crop_length():
    with pytest.raises(ValueError, match="max_duration"):
        EmotionDataset([], max_duration=0)


# ----------------------------------------------------------------------------- feature cache (dump/)


def test_feature_cache_computes_once_and_recomputes_corrupt_or_changed_entries(tmp_path, caplog):
    import soundfile

    from serkit.data.dataio import FeatureCache
    wav = tmp_path / "spk1_a.wav"
    soundfile.write(wav, [0.1, -0.2, 0.3] * 100, 16000, subtype="PCM_16")
    calls = []

    def compute():
        calls.append(1)
        return torch.full((2, 3), float(len(calls)))

    feature = make_feature("mfcc", params={"n_mfcc": 3})
    first = FeatureCache(tmp_path / "dump", feature).get("spk1_a", wav, compute)
    again = FeatureCache(tmp_path / "dump", feature).get("spk1_a", wav, compute)  # another fold, another process
    assert len(calls) == 1 and torch.equal(again, first)
    other = FeatureCache(tmp_path / "dump", make_feature("mfcc", params={"n_mfcc": 4}))
    assert other.dir != FeatureCache(tmp_path / "dump", feature).dir  # another spec never reads these entries

    cache = FeatureCache(tmp_path / "dump", feature)
    cache.entry("spk1_a").write_bytes(b"not a torch file")  # e.g. a crash from an older writer
    with caplog.at_level("WARNING"):
        assert torch.equal(cache.get("spk1_a", wav, compute), torch.full((2, 3), 2.0))
    assert "unreadable cached features" in caplog.text and len(calls) == 2
    assert cache.get("spk1_a", wav, compute) is not None and len(calls) == 2 and cache.hits == 1

    soundfile.write(wav, [0.3, -0.1] * 200, 16000, subtype="PCM_16")  # a re-recorded file
    assert torch.equal(cache.get("spk1_a", wav, compute), torch.full((2, 3), 3.0))
    assert "stale" in caplog.text and cache.computed == 2
    assert not list(cache.dir.glob("*.tmp"))  # no leftover temporary files
    with pytest.raises(DataDirError, match="cannot name a cache file"):
        cache.get("../escape", wav, compute)


def test_spectral_features_are_loaded_per_utterance_and_cached(tmp_path):
    paths = make_tiny_corpus(tmp_path)
    spec = make_feature("mfcc", params={"n_mfcc": 13, "n_mels": 40})
    data = load_fold_data(paths["data"], paths["fold"], emotion_only(paths), features=[spec],
                          cache_dir=tmp_path / "dump")
    item = data.train[0]
    assert item["sig"].shape[1:] == (13,) and item["sig"].shape[0] == spec.n_frames(int(16000 * data.train.durations[0]))
    (cache,) = data.train.caches
    assert cache.computed == 1
    assert torch.equal(data.train[0]["sig"], item["sig"]) and cache.hits == 1


def test_feature_cache_entries_written_by_concurrent_jobs_stay_whole(tmp_path):
    """Fold jobs run in parallel and fill the same cache: each writes its own temporary file."""
    import multiprocessing

    import soundfile
    wav = tmp_path / "spk1_a.wav"
    soundfile.write(wav, [0.1, -0.2, 0.3] * 100, 16000, subtype="PCM_16")
    context = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
    processes = [context.Process(target=_fill_cache, args=(tmp_path, wav)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    from serkit.data.dataio import FeatureCache
    cache = FeatureCache(tmp_path / "dump", make_feature("mfcc"))
    assert torch.equal(cache.get("spk1_a", wav, lambda: None), torch.ones(2000, 40))
    assert not list(cache.dir.glob("*.tmp"))


def _fill_cache(root, wav):
    from serkit.data.dataio import FeatureCache
    for _ in range(20):
        cache = FeatureCache(root / "dump", make_feature("mfcc"))
        cache.entry("spk1_a").unlink(missing_ok=True)
        cache.get("spk1_a", wav, lambda: torch.ones(2000, 40))
