"""ESD, the Emotional Speech Dataset (stage 0): ``00XX/<Emotion>/[<split>/]00XX_NNNNNN.wav`` -> data directory.

Facts: 20 speakers, 10 English (0011-0020; male 0011-0014 and 0020, female 0015-0019) and 10
Mandarin (0001-0010); emotions Angry Happy Neutral Sad Surprise, 350 utterances per speaker and
emotion (17,500 a language); predefined splits per speaker and emotion: 300 train, 20
evaluation, 30 test. Copies circulate with the ``train/ evaluation/ test/`` folders and without.
Transcripts: ``00XX/00XX.txt`` lines ``id<TAB>text<TAB>emotion`` in UTF-8, Latin-1 or UTF-16
depending on the speaker (Mandarin: UTF-8, UTF-16 or GB18030).

A data directory holds one language (its ``language`` file drives stage 1), so the two halves are
two registered corpora: ``esd`` (English) and ``esd_zh`` (Mandarin). Speaker folders of the other
half are noted and left out. The split folders give ``utt2split`` (the ``predefined`` protocol);
a copy without them gets no ``utt2split``. ``utt2sentence`` is the normalised transcript (the
same sentence is read in every emotion). Gender is written for the English speakers only (the
facts we ship do not list the Mandarin speakers' genders).

A copy holding all 10 speakers of the half is the full release: every (speaker, emotion) must hold
350 utterances (and 300/20/30 when split folders exist), else preparation stops.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from serkit.corpora import ClassMap, CorpusError, load_class_map
from serkit.corpora.common import (PrepReport, ReleaseAudio, Utterance, check_codes, check_out_dir, count_differences,
                                   finish, keep, list_files, read_text_lines, require_root)

CORPUS = "ESD"
EMOTION_CODES = ("Angry", "Happy", "Neutral", "Sad", "Surprise")
SPLITS = {"train": 300, "evaluation": 20, "test": 30}
PER_SPEAKER_EMOTION = 350
#: ESD release: 16 kHz mono. Other rates/channels: an altered copy.
RELEASE_AUDIO = ReleaseAudio(rates=(16000,), channels=(1,))
LANGUAGES = {
    "en": {"speakers": tuple(f"{n:04d}" for n in range(11, 21)), "fallbacks": ("latin-1",)},
    "zh": {"speakers": tuple(f"{n:04d}" for n in range(1, 11)), "fallbacks": ("gb18030",)},
}
ENGLISH_GENDER = {**dict.fromkeys(("0011", "0012", "0013", "0014", "0020"), "m"),
                  **dict.fromkeys(("0015", "0016", "0017", "0018", "0019"), "f")}
LAYOUT = """Expected layout (ROOT is the folder holding the speaker folders):
  ROOT/0011/0011.txt                                   (id<TAB>text<TAB>emotion)
  ROOT/0011/Angry/[train|evaluation|test/]0011_000351.wav ..."""

_SPEAKER_RE = re.compile(r"^\d{4}$")
_UTT_RE = re.compile(r"^(\d{4})_(\d{6})$")
_LINE_RE = re.compile(r"^(\d{4}_\d{6})\s+(.*)$")


def sentence_key(text: str) -> str:
    """The transcript reduced to its words (lower case, letters/digits/CJK only), joined by ``_``."""
    words = re.findall(r"\w+", text.lower())
    return "_".join(words)


def read_transcripts(path: Path, fallbacks: tuple[str, ...], report: PrepReport) -> dict[str, str]:
    """``utterance id -> text`` of one speaker's ``00XX.txt`` (any of the encodings the release uses)."""
    texts: dict[str, str] = {}
    for number, line in enumerate(read_text_lines(path, report.notes, fallbacks), start=1):
        if not line.strip():
            continue
        match = _LINE_RE.match(line.strip())
        if not match:
            report.skipped.add("transcript line not '<id><TAB><text><TAB><emotion>'", f"{path}:{number}: {line!r}")
            continue
        utt, rest = match.groups()
        text = rest.rsplit("\t", 1)[0] if "\t" in rest else rest
        if utt in texts:
            report.skipped.add("duplicate transcript line (first kept)", f"{path}:{number}: {utt}")
            continue
        texts[utt] = text.strip()
    return texts


def _speaker_files(folder: Path, speaker: str, report: PrepReport) -> list[tuple[str, str | None, Path]]:
    """``(emotion, split or None, wav)`` of one speaker; stray entries are counted."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("._"):
            report.skipped.add("macOS '._' file", str(entry))
        elif entry.is_file():
            if entry.name != f"{speaker}.txt":
                report.skipped.add("unexpected file in a speaker folder", str(entry))
        elif entry.name not in EMOTION_CODES:
            report.skipped.add("folder that is not an ESD emotion", str(entry))
        else:
            for item in sorted(entry.iterdir()):
                if item.is_dir() and item.name in SPLITS:
                    found += [(entry.name, item.name, wav) for wav in list_files(item, report.skipped)]
                elif item.is_dir():
                    report.skipped.add("folder that is not an ESD split", str(item))
                elif item.name.startswith("._"):
                    report.skipped.add("macOS '._' file", str(item))
                elif item.suffix.lower() != ".wav":
                    report.skipped.add("file that is not a .wav", str(item))
                else:
                    found.append((entry.name, None, item))
    return found


def prepare(corpus_root: str | Path, class_map: str | Path | ClassMap, out_dir: str | Path,
            strict: bool | None = None, language: str = "en") -> PrepReport:
    """Prepare one language half of ESD (docs/formats.md) and ``prep_report.txt``."""
    root, out_dir = Path(corpus_root).absolute(), Path(out_dir).absolute()
    check_out_dir(out_dir)
    if language not in LANGUAGES:
        raise CorpusError(f"ESD language {language!r}: choose one of {sorted(LANGUAGES)}")
    mapping = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map, "esd")
    check_codes(mapping, EMOTION_CODES, CORPUS)
    require_root(root, CORPUS, LAYOUT)
    wanted = LANGUAGES[language]["speakers"]
    report = PrepReport(f"{CORPUS} ({language})", root, out_dir, mapping, language, release_audio=RELEASE_AUDIO)
    speaker_dirs = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and _SPEAKER_RE.match(entry.name):
            if entry.name in wanted:
                speaker_dirs[entry.name] = entry
            else:
                other = "esd_zh" if language == "en" else "esd"
                report.notes.add(f"speaker folder of the other language (use --corpus {other}; left out)", str(entry))
    if not speaker_dirs:
        raise CorpusError(f"no speaker folder {wanted[0]}..{wanted[-1]} under {root}: not an ESD root "
                          f"(or not its {language} half).\n{LAYOUT}")
    cells, splits, utterances = Counter(), Counter(), []
    for speaker, folder in speaker_dirs.items():
        txt = folder / f"{speaker}.txt"
        texts = read_transcripts(txt, LANGUAGES[language]["fallbacks"], report) if txt.is_file() else {}
        if not txt.is_file():
            report.notes.add("transcript file missing (its utterances get empty text)", str(txt))
        seen = set()
        for emotion, split, wav in _speaker_files(folder, speaker, report):
            seen.add(wav.stem)
            match = _UTT_RE.match(wav.stem)
            if not match or match.group(1) != speaker:
                report.skipped.add("wav name is not <speaker>_<6 digits>.wav of its speaker folder", str(wav))
                continue
            if wav.stem not in texts:
                report.notes.add("wav without transcript line (kept, empty text)", str(wav))
            text = texts.get(wav.stem, "")
            cells[speaker, emotion] += 1
            splits[speaker, emotion, split] += 1
            utt = Utterance(corpus_id=wav.stem, speaker=speaker, wav=wav, code=emotion, text=text,
                            gender=ENGLISH_GENDER.get(speaker) if language == "en" else None,
                            sentence=sentence_key(text) or f"untranscribed_{wav.stem}", split=split)
            kept = keep(utt, report)
            if kept is not None:
                utterances.append(kept)
        for utt_id in sorted(set(texts) - seen):
            report.notes.add("transcript line without its wav", f"{txt}: {utt_id}")
    with_split = sum(n for (_, _, split), n in splits.items() if split is not None)
    if 0 < with_split < sum(splits.values()):
        report.notes.add("some wavs outside train/evaluation/test folders: no utt2split written",
                         f"{sum(splits.values()) - with_split} of {sum(splits.values())} wavs")
        for u in utterances:
            u.split = None
    report.facts.append(f"speakers found: {len(speaker_dirs)} (full release 10 a language); wavs found: "
                        f"{sum(cells.values())} (full release {10 * 5 * PER_SPEAKER_EMOTION}); split folders: "
                        f"{'yes' if with_split else 'no'}")

    def check() -> list[str]:
        expected = {f"{s} {e}": PER_SPEAKER_EMOTION for s in wanted for e in EMOTION_CODES}
        problems = count_differences("speaker+emotion", {f"{s} {e}": n for (s, e), n in cells.items()}, expected)
        if with_split:
            expected = {f"{s} {e} {p}": n for s in wanted for e in EMOTION_CODES for p, n in SPLITS.items()}
            problems += count_differences("speaker+emotion+split",
                                          {f"{s} {e} {p}": n for (s, e, p), n in splits.items()}, expected)
        written = Counter((u.speaker, u.code) for u in utterances)
        lost = [f"  {s} {e}: {cells[s, e] - written[s, e]} found but not written (see skipped)"
                for (s, e) in sorted(cells) if mapping.label(e) and written[s, e] != cells[s, e]]
        return problems + lost

    return finish(report, utterances, looks_full=set(wanted) <= set(speaker_dirs), strict=strict, check=check)


def prepare_english(corpus_root, class_map, out_dir, strict=None) -> PrepReport:
    """``--corpus esd``: the English half (speakers 0011-0020)."""
    return prepare(corpus_root, class_map, out_dir, strict=strict, language="en")


def prepare_mandarin(corpus_root, class_map, out_dir, strict=None) -> PrepReport:
    """``--corpus esd_zh``: the Mandarin half (speakers 0001-0010)."""
    return prepare(corpus_root, class_map, out_dir, strict=strict, language="zh")
