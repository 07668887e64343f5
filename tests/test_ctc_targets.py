"""Character / BPE CTC targets (stage 1) and a CTC head trained on them (Cai et al. 2021's variant)."""
from __future__ import annotations

import pytest
from tiny_corpus import noisy_tones, write_map, write_tiny_corpus

from serkit.scoring import scoring
from serkit.training import expdir
from serkit.bin import make_ctc_targets as cli
from serkit.bin.train import load_hparams
from serkit.labels.ctc_targets import CTCTargetError, char_units, make_ctc_targets, normalise_words
from serkit.data.datadir import read_list, read_map
from serkit.training.train import train_fold
from test_families import CONF, RUN_OPTS, TINY

TEXTS = ["Excuse me. [LAUGHTER]", "It's 20 past two", "no", "[GARBAGE]"]


def test_char_units_mark_word_boundaries_and_normalise_like_the_g2p():
    assert normalise_words(TEXTS[1], "en") == ["it's", "twenty", "past", "two"]
    assert char_units(["hi", "yo"]) == ["h", "i", "|", "y", "o"]
    assert normalise_words("[lachen] Der Lappen, äh!", "de") == ["der", "lappen", "äh"]


def corpus_with_text(root):
    paths = write_tiny_corpus(root, 16, seconds=lambda i: 0.6 + 0.1 * (i % 4), waveform=noisy_tones(220, 180),
                              splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)})
    utts = list(read_map(paths["data"] / "utt2emo"))
    write_map(paths["data"] / "text", {utt: TEXTS[i % 4] for i, utt in enumerate(utts)})
    return paths


def test_char_and_bpe_targets_write_units_and_inventories(tmp_path):
    paths = corpus_with_text(tmp_path)
    counts = make_ctc_targets(paths["data"], tmp_path / "lang_char", "char")
    assert counts["empty"] == 4  # the [GARBAGE]-only transcripts: emotion task only
    utt2char = read_map(paths["data"] / "utt2char")
    assert utt2char["spk0-u00"] == "e x c u s e | m e"
    tokens = [line.split()[0] for line in read_list(tmp_path / "lang_char" / "tokens.txt")]
    assert tokens[0] == "<blank>" and "|" in tokens and set("excusemitwnyoap'") <= set(tokens)

    assert cli.main(["--targets", "bpe", "--data", str(paths["data"]), "--lang", str(tmp_path / "lang_bpe"),
                     "--bpe_units", "30"]) == 0
    utt2bpe = read_map(paths["data"] / "utt2bpe")
    pieces = utt2bpe["spk0-u01"].split()
    assert "".join(pieces).replace("\u2581", " ").strip() == "it's twenty past two"
    assert (tmp_path / "lang_bpe" / "bpe.model").is_file()
    inventory = {line.split()[0] for line in read_list(tmp_path / "lang_bpe" / "tokens.txt")}
    assert set(pieces) <= inventory


def test_targets_need_transcripts(tmp_path):
    paths = write_tiny_corpus(tmp_path, 4, seconds=lambda i: 0.5, waveform=noisy_tones(200, 100),
                              splits={"train": range(0, 4)})
    with pytest.raises(Exception, match="text: not found.*mtl_lambda 0"):
        make_ctc_targets(paths["data"], tmp_path / "lang_char", "char")
    with pytest.raises(CTCTargetError, match="unknown CTC target kind"):
        make_ctc_targets(paths["data"], tmp_path / "lang_x", "words")


def test_character_ctc_head_trains_and_is_scored_without_suffix_accuracy(tmp_path):
    paths = corpus_with_text(tmp_path)
    make_ctc_targets(paths["data"], tmp_path / "lang_char", "char")
    out = tmp_path / "exp" / "loso" / "fold01"
    hparams = load_hparams(str(CONF / "tim_net.yaml"), {
        "data_dir": str(paths["data"]), "fold_dir": str(paths["fold"]), "output_folder": str(out),
        "lang_dir": str(tmp_path / "lang_char"), "feature_cache": str(tmp_path / "dump"), "seed": 3,
        **TINY["tim_net"], "number_of_epochs": 1, "mtl_lambda": 0.3, "ctc_targets": "char"})
    scores = train_fold(hparams, RUN_OPTS)
    assert scores["PER"] is not None
    assert expdir.read_model_config(out)["ctc_targets"] == "char"
    summary = scoring.score_experiment(out.parent)
    assert summary["pooled"]["PER"] is not None and summary["pooled"]["suffix_acc"] is None
