"""Tests of the espeak-ng synthesiser and the synthetic mini IEMOCAP generator.

The corpus is checked with small parsers written here from the IEMOCAP format description, not with
the generator's own code, so a format slip in the generator shows up as a failure.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile

from serkit.bin import make_mini_iemocap as cli
from serkit.synth.espeak import EspeakError, Prosody, SynthRequest, get_engine, synthesize_isolated
from serkit.synth.mini_iemocap import MiniIemocapError, make_mini_iemocap, read_manifest

TINY = dict(utts_per_speaker=4, others_per_speaker=2, dialogs_per_session=2, jobs=2, progress=False)
FOUR = {"neu", "hap", "exc", "ang", "sad"}
WORDS = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness", "ang": "Anger",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "dis": "Disgust", "oth": "Other",
}
CONSENSUS = re.compile(
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\S+)\t([a-z]{3})\t\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$"
)
CATEGORICAL = re.compile(r"^C-(E\d|F1|M1):\t((?:[A-Za-z]+; )*[A-Za-z]+;)\t\((.*)\)$")
ATTRIBUTE = re.compile(r"^A-(E\d|F1|M1):\tval (\d); act (\d); dom  (\d);\t\((.*)\)$")
TURN_LINE = re.compile(r"^(Ses0\d[FM]_\S+_([FM])(\d{3}|XX\d)) \[(\d{3}\.\d{4})-(\d{3}\.\d{4})\]: (.+)$")
ODD_LINE = re.compile(r"^[FM]: \S.*$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A tiny corpus (60 sentence wavs), generated once for the module."""
    out = tmp_path_factory.mktemp("mini")
    root = make_mini_iemocap(out, seed=1, **TINY)
    assert root == out / "IEMOCAP_full_release"
    return root


def parse_emo_evaluation(path: Path) -> dict[str, dict]:
    """utt -> {code, start, end, vad, categorical: [[words]], attribute: [(v, a, d)]}."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("%"), f"{path}: first line must be the % header"
    assert lines[-1] == "", f"{path}: must end with a newline"
    blocks = [block for block in "\n".join(lines[1:]).split("\n\n") if block.strip()]
    parsed = {}
    for block in blocks:
        first, *votes = block.strip("\n").split("\n")
        match = CONSENSUS.match(first)
        assert match, f"{path}: bad consensus line {first!r}"
        start, end, utt, code, v, a, d = match.groups()
        entry = {"code": code, "start": float(start), "end": float(end), "vad": (float(v), float(a), float(d)),
                 "categorical": [], "attribute": [], "self": []}
        for line in votes:
            if (cat := CATEGORICAL.match(line)):
                words = [w.strip() for w in cat.group(2).split(";") if w.strip()]
                (entry["self"] if cat.group(1) in ("F1", "M1") else entry["categorical"]).append(words)
            elif (att := ATTRIBUTE.match(line)):
                entry["attribute"].append(tuple(int(x) for x in att.group(2, 3, 4)))
            else:
                pytest.fail(f"{path}: bad evaluator line {line!r}")
        parsed[utt] = entry
    return parsed


def parse_transcription(path: Path) -> tuple[list[tuple[str, str, float, float, str]], list[str]]:
    """([(utt, gender, start, end, text)] in file order, [odd lines])."""
    turns, odd = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if (match := TURN_LINE.match(line)):
            utt, gender, _, start, end, text = match.groups()
            turns.append((utt, gender, float(start), float(end), text))
        else:
            assert ODD_LINE.match(line), f"{path}: unexpected line {line!r}"
            odd.append(line)
    return turns, odd


def dialogs_of(root: Path) -> dict[str, Path]:
    """dialog name -> session dir, from the EmoEvaluation files (junk and sub-folders skipped)."""
    found = {}
    for session in sorted(root.glob("Session*")):
        for path in (session / "dialog" / "EmoEvaluation").glob("Ses*.txt"):
            found[path.stem] = session
    return found


# ------------------------------------------------------------------------------------------ espeak


def rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))


def test_prosody_parameters_change_loudness_and_length():
    engine = get_engine()
    text = "We are moving to the coast in June."
    quiet = engine.synthesize(SynthRequest(text, "en-us+f2", Prosody(volume=50)))
    loud = engine.synthesize(SynthRequest(text, "en-us+f2", Prosody(volume=150)))
    slow = engine.synthesize(SynthRequest(text, "en-us+f2", Prosody(rate=120, word_gap=3)))
    fast = engine.synthesize(SynthRequest(text, "en-us+f2", Prosody(rate=230)))
    assert quiet.dtype == np.int16 and engine.sample_rate == 22050
    assert rms(loud) > 2.0 * rms(quiet)
    assert slow.size > 1.5 * fast.size
    assert 0.8 < fast.size / engine.sample_rate < 3.0


def test_espeak_errors_name_the_problem():
    engine = get_engine()
    with pytest.raises(EspeakError, match="no voice 'xx-nonexistent'"):
        engine.synthesize(SynthRequest("Hello.", "xx-nonexistent"))
    with pytest.raises(EspeakError, match="empty text"):
        engine.synthesize(SynthRequest("   ", "en-us+m1"))
    with pytest.raises(EspeakError, match="rate=20"):
        Prosody(rate=20)


def test_isolated_batches_are_reproducible():
    batch = [SynthRequest("I told you 20 times.", "en-us+m3", Prosody(pitch=70), seed=5),
             SynthRequest("Okay.", "en-us+f5", seed=6)]
    results = dict(synthesize_isolated([batch, batch, batch[::-1]], jobs=2))
    assert set(results) == {0, 1, 2}
    for first, second in zip(results[0], results[1]):
        assert np.array_equal(first, second)
    assert results[0][0].size != results[0][1].size  # different texts really were synthesised


# ---------------------------------------------------------------------------------------- layout


def test_layout_and_dialog_names(corpus):
    sessions = sorted(path.name for path in corpus.iterdir())
    assert sessions == [f"Session{i}" for i in range(1, 6)]
    dialogs = dialogs_of(corpus)
    assert len(dialogs) == 10
    for name in ("Ses03M_impro05a", "Ses03M_impro05b", "Ses05M_script01_1b", "Ses01F_impro01", "Ses01M_script01_1"):
        assert name in dialogs
    for name, session in dialogs.items():
        assert session.name == f"Session{int(name[3:5])}"
        assert (session / "dialog" / "transcriptions" / f"{name}.txt").is_file()
        assert (session / "dialog" / "wav" / f"{name}.wav").is_file()
        assert (session / "sentences" / "wav" / name).is_dir()
    for session in corpus.glob("Session*"):
        for sub in ("Categorical", "Attribute", "Self-evaluation"):
            assert any((session / "dialog" / "EmoEvaluation" / sub).iterdir()), f"{session}: empty {sub}/"
    junk = list(corpus.rglob("._*"))
    assert len(junk) >= 5
    assert all(not path.read_bytes().startswith(b"RIFF") for path in junk)


def test_emo_evaluation_blocks_are_consistent(corpus):
    codes = Counter()
    for name, session in dialogs_of(corpus).items():
        blocks = parse_emo_evaluation(session / "dialog" / "EmoEvaluation" / f"{name}.txt")
        assert blocks, name
        starts = [entry["start"] for entry in blocks.values()]
        assert starts == sorted(starts), f"{name}: blocks not in time order"
        for utt, entry in blocks.items():
            codes[entry["code"]] += 1
            assert utt.startswith(name + "_") and re.fullmatch(r"[FM]\d{3}", utt[len(name) + 1:])
            votes = Counter(word for words in entry["categorical"] for word in words)
            assert len(entry["categorical"]) >= 3 and entry["attribute"]
            if entry["code"] == "xxx":
                assert max(votes.values()) == 1, f"{utt}: xxx but a label has a majority"
            else:
                word = WORDS[entry["code"]]
                assert votes[word] >= 2 and all(n < votes[word] for w, n in votes.items() if w != word), utt
            for own in entry["self"]:
                assert entry["code"] == "xxx" or own[0] == WORDS[entry["code"]]
            mean = np.mean(np.array(entry["attribute"], dtype=float), axis=0)
            assert np.allclose(mean, entry["vad"], atol=1e-4), f"{utt}: [V, A, D] is not the mean of the A- lines"
    assert FOUR <= set(codes) and {"fru", "xxx"} <= set(codes)


def test_transcriptions_xx_turns_odd_lines_and_tags(corpus):
    n_odd = n_xx = n_tags = 0
    for name, session in dialogs_of(corpus).items():
        turns, odd = parse_transcription(session / "dialog" / "transcriptions" / f"{name}.txt")
        blocks = parse_emo_evaluation(session / "dialog" / "EmoEvaluation" / f"{name}.txt")
        n_odd += len(odd)
        assert [t[2] for t in turns] == sorted(t[2] for t in turns)
        assert {t[1] for t in turns} == {"F", "M"}, f"{name}: both actors speak in every dialog"
        assert turns[0][1] == name[5], f"{name}: the first turn is the starter's"
        labelled = [t for t in turns if "XX" not in t[0]]
        assert {t[0] for t in labelled} == set(blocks)
        for gender in "FM":  # numbered per speaker within the dialog: 000, 001, ...
            numbers = [int(t[0][-3:]) for t in labelled if t[1] == gender]
            assert numbers == list(range(len(numbers)))
        for utt, gender, start, end, text in turns:
            n_tags += len(re.findall(r"\[(?:LAUGHTER|BREATHING|GARBAGE)\]", text))
            wav = session / "sentences" / "wav" / name / f"{utt}.wav"
            if "XX" in utt:
                n_xx += 1
                assert not wav.exists() and utt not in blocks
                continue
            assert wav.is_file()
            assert (start, end) == (blocks[utt]["start"], blocks[utt]["end"])
            assert abs(soundfile.info(str(wav)).duration - (end - start)) < 1e-3
    assert n_odd >= 1 and n_xx >= 1 and n_tags >= 1


# ----------------------------------------------------------------------------------------- audio


def test_audio_format_duration_and_dialog_match(corpus):
    for name, session in dialogs_of(corpus).items():
        dialog, rate = soundfile.read(str(session / "dialog" / "wav" / f"{name}.wav"), dtype="int16")
        assert rate == 16000 and dialog.ndim == 1
        turns, _ = parse_transcription(session / "dialog" / "transcriptions" / f"{name}.txt")
        assert turns[-1][3] <= dialog.size / rate
        for utt, _, start, end, _ in turns:
            wav = session / "sentences" / "wav" / name / f"{utt}.wav"
            if not wav.exists():
                continue
            info = soundfile.info(str(wav))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            samples, _ = soundfile.read(str(wav), dtype="int16")
            assert 1.2 <= samples.size / 16000 <= 4.5, f"{utt}: implausible duration"
            assert rms(samples) > 300, f"{utt}: (nearly) silent"
            assert np.array_equal(samples, dialog[round(start * 16000):round(end * 16000)])


def test_manifest_matches_files_and_documented_distribution(corpus):
    rows = read_manifest(corpus.parent / "manifest.tsv")
    wavs = {path.stem for path in corpus.rglob("*.wav") if "sentences" in path.parts and not path.name.startswith("._")}
    assert {row["utt"] for row in rows} == wavs
    per_speaker = defaultdict(Counter)
    for row in rows:
        turn_gender = row["utt"].split("_")[-1][0]
        assert row["speaker"] == row["utt"][:5] + turn_gender and row["gender"] == turn_gender.lower()
        per_speaker[row["speaker"]]["four" if row["code"] in FOUR else "other"] += 1
    assert len(per_speaker) == 10
    assert all(counts == Counter(four=4, other=2) for counts in per_speaker.values())
    codes = Counter(row["code"] for row in rows)
    assert codes["hap"] > 0 and codes["exc"] > 0 and codes["hap"] + codes["exc"] == codes["ang"] == codes["sad"] == 10


def test_emotions_differ_in_prosody(corpus):
    """Averaged over utterances: anger loudest and fastest, sadness quietest and slowest."""
    loudness, seconds_per_char = defaultdict(list), defaultdict(list)
    for row in read_manifest(corpus.parent / "manifest.tsv"):
        path = corpus / f"Session{row['session']}" / "sentences" / "wav" / row["dialog"] / f"{row['utt']}.wav"
        samples, _ = soundfile.read(str(path), dtype="int16")
        words = re.sub(r"\[[A-Z]+\]", "", row["text"]).strip()
        loudness[row["code"]].append(rms(samples))
        seconds_per_char[row["code"]].append(samples.size / 16000 / len(words))
    loud = {code: np.mean(values) for code, values in loudness.items()}
    slow = {code: np.mean(values) for code, values in seconds_per_char.items()}
    assert loud["ang"] > 1.2 * loud["neu"] > 1.2 * 1.2 * loud["sad"]
    assert slow["sad"] > 1.08 * slow["neu"] > 1.08 * 1.08 * slow["ang"]


# ---------------------------------------------------------------------------- determinism, reruns


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_is_byte_identical_and_other_seed_differs(corpus, tmp_path):
    again = make_mini_iemocap(tmp_path / "again", seed=1, **TINY)
    reference = file_bytes(corpus.parent)
    assert file_bytes(again.parent) == reference
    other = make_mini_iemocap(tmp_path / "other", seed=2, **TINY)
    other_files = file_bytes(other.parent)
    shared_wavs = [name for name in reference if name.endswith(".wav") and "/._" not in name and name in other_files]
    assert other_files["manifest.tsv"] != reference["manifest.tsv"]
    assert sum(other_files[name] != reference[name] for name in shared_wavs) > 0.9 * len(shared_wavs) > 0


def test_rerun_is_noop_and_refuses_other_content(corpus, tmp_path, capsys):
    marker = corpus.parent / ".done"
    stamp = marker.stat().st_mtime_ns
    assert make_mini_iemocap(corpus.parent, seed=1, **TINY) == corpus
    assert marker.stat().st_mtime_ns == stamp
    assert cli.main(["--out", str(corpus.parent), "--utts-per-speaker", "4", "--others-per-speaker", "2",
                     "--dialogs-per-session", "2", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(corpus)
    with pytest.raises(MiniIemocapError, match=r"seed=1 \(asked 7\)"):
        make_mini_iemocap(corpus.parent, seed=7, **TINY)
    foreign = tmp_path / "foreign"
    (foreign / "IEMOCAP_full_release").mkdir(parents=True)
    with pytest.raises(MiniIemocapError, match="remove it or choose another --out"):
        make_mini_iemocap(foreign, **TINY)


@pytest.mark.parametrize("bad, message", [
    (dict(utts_per_speaker=3), "at least 4"),
    (dict(dialogs_per_session=1), "2..30"),
    (dict(utts_per_speaker=4, others_per_speaker=0, dialogs_per_session=6), "cannot cover 6 dialogs"),
    (dict(jobs=0), "jobs=0"),
])
def test_bad_parameters_are_refused(tmp_path, bad, message):
    with pytest.raises(MiniIemocapError, match=message):
        make_mini_iemocap(tmp_path, **{**TINY, **bad})
    assert not (tmp_path / "IEMOCAP_full_release").exists()


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert cli.main(["--out", str(tmp_path), "--utts-per-speaker", "2", "--quiet"]) == 1
    assert "error: utts_per_speaker=2" in capsys.readouterr().err
