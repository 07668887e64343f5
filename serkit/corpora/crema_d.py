"""CREMA-D (stage 0): ``AudioWAV/<actor>_<SENT>_<EMO>_<LEVEL>.wav`` -> data directory.

Facts: 91 actors 1001-1091 (48 male, 43 female, from ``VideoDemographics.csv``: ActorID, Age,
Sex, Race, Ethnicity), 12 fixed English sentences (the SENT code), six intended emotions (ANG
DIS FEA HAP NEU SAD), intensity LEVEL (LO MD HI, XX unspecified). 7442 files at 16 kHz: ANG DIS
FEA HAP SAD 1271 each and NEU 1087. ``1076_MTI_SAD_XX.wav`` is empty in the release: it is
skipped under its own reason and counted, so 7441 utterances are written.

Labels are the intended (acted) emotions of the file name; the crowd's perceived labels in
``processedResults/tabulatedVotes.csv`` are not used. Speaker = actor id; no sessions; the
sentence code is ``utt2sentence`` (12 sentences shared by all actors: see the leakage report).

A copy with all 91 actors is the full release; its counts must match, else preparation stops.
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import soundfile

from serkit.corpora import ClassMap, CorpusError, load_class_map
from serkit.corpora.common import (PrepReport, ReleaseAudio, Utterance, check_codes, check_out_dir, count_differences,
                                   expected_class_counts, finish, keep, list_files, read_text_lines,
                                   require_root)

CORPUS = "CREMA-D"
LANGUAGE = "en"
#: CREMA-D release: 16 kHz mono wav. Other rates/channels: an altered copy.
RELEASE_AUDIO = ReleaseAudio(rates=(16000,), channels=(1,))
EMOTION_CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
LEVELS = ("LO", "MD", "HI", "XX")
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
ACTORS = tuple(str(n) for n in range(1001, 1092))
FULL_RELEASE_FILES = 7442
FULL_RELEASE_CODE_COUNTS = {"ANG": 1271, "DIS": 1271, "FEA": 1271, "HAP": 1271, "NEU": 1087, "SAD": 1271}
FULL_RELEASE_GENDERS = {"m": 48, "f": 43}
#: Clips the release ships empty: skipped under KNOWN_EMPTY_REASON, expected by the count check.
KNOWN_EMPTY = ("1076_MTI_SAD_XX",)
KNOWN_EMPTY_REASON = "known empty clip of the release"
DEMOGRAPHICS = "VideoDemographics.csv"
LAYOUT = """Expected layout (ROOT is the CREMA-D folder):
  ROOT/AudioWAV/<actor>_<SENT>_<EMO>_<LEVEL>.wav   e.g. 1001_DFA_ANG_XX.wav
  ROOT/VideoDemographics.csv                        (optional: gives utt2gender)"""

_NAME_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def read_genders(path: Path, report: PrepReport) -> dict[str, str]:
    """ActorID -> f/m from ``VideoDemographics.csv``; unknown Sex values are noted."""
    genders = {}
    rows = csv.DictReader(read_text_lines(path, report.notes))
    for row in rows:
        actor, sex = (row.get("ActorID") or "").strip(), (row.get("Sex") or "").strip().lower()
        if sex in ("male", "female"):
            genders[actor] = sex[0]
        else:
            report.notes.add(f"{DEMOGRAPHICS}: row without Male/Female Sex", f"{actor or '?'}: {sex!r}")
    return genders


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0 or soundfile.info(str(path)).frames == 0
    except (RuntimeError, soundfile.LibsndfileError):
        return True


def _parse(path: Path, genders: dict[str, str] | None, report: PrepReport) -> Utterance | None:
    match = _NAME_RE.match(path.stem)
    if not match:
        report.skipped.add("file name is not <actor>_<SENT>_<EMO>_<LEVEL>.wav", str(path))
        return None
    actor, sentence, emotion, level = match.groups()
    if actor not in ACTORS:
        report.skipped.add("actor id outside 1001-1091", str(path))
    elif sentence not in SENTENCES:
        report.skipped.add(f"unknown sentence code {sentence!r}", str(path))
    elif emotion not in EMOTION_CODES:
        report.skipped.add(f"unknown emotion code {emotion!r}", str(path))
    elif level not in LEVELS:
        report.skipped.add(f"unknown intensity level {level!r}", str(path))
    else:
        gender = genders.get(actor) if genders is not None else None
        if genders is not None and gender is None:
            report.notes.add(f"actor missing from {DEMOGRAPHICS} (no utt2gender written)", str(path))
        return Utterance(corpus_id=path.stem, speaker=actor, wav=path, code=emotion, text=SENTENCES[sentence],
                         gender=gender, sentence=sentence)
    return None


def _audio_dir(root: Path) -> Path:
    if (root / "AudioWAV").is_dir():
        return root / "AudioWAV"
    hint = f"\n{root} is the AudioWAV folder itself: use --root {root.parent}" if root.name == "AudioWAV" else ""
    raise CorpusError(f"no AudioWAV folder under {root}: not a CREMA-D root.{hint}\n{LAYOUT}")


def prepare(corpus_root: str | Path, class_map: str | Path | ClassMap, out_dir: str | Path,
            strict: bool | None = None) -> PrepReport:
    """Prepare a CREMA-D data directory (docs/formats.md) and ``prep_report.txt``."""
    root, out_dir = Path(corpus_root).absolute(), Path(out_dir).absolute()
    check_out_dir(out_dir)
    mapping = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map, "crema_d")
    check_codes(mapping, EMOTION_CODES, CORPUS)
    require_root(root, CORPUS, LAYOUT)
    report = PrepReport(CORPUS, root, out_dir, mapping, LANGUAGE, release_audio=RELEASE_AUDIO)
    audio = _audio_dir(root)
    genders = read_genders(root / DEMOGRAPHICS, report) if (root / DEMOGRAPHICS).is_file() else None
    if genders is None:
        report.notes.add(f"{DEMOGRAPHICS} missing (no utt2gender written)", str(root / DEMOGRAPHICS))
    actors, utterances = Counter(), []
    for path in list_files(audio, report.skipped):
        utt = _parse(path, genders, report)
        if utt is None:
            continue
        actors[utt.speaker] += 1
        if path.stem in KNOWN_EMPTY and _is_empty(path):
            report.code_counts[utt.code] += 1
            report.skipped.add(KNOWN_EMPTY_REASON, str(path))
            continue
        kept = keep(utt, report)
        if kept is not None:
            utterances.append(kept)
    report.facts.append(f"actors found: {len(actors)} (full release 91); files found: {sum(actors.values())} "
                        f"(full release {FULL_RELEASE_FILES})")

    def check() -> list[str]:
        problems = count_differences("emotion code", report.code_counts, FULL_RELEASE_CODE_COUNTS)
        expected = Counter(FULL_RELEASE_CODE_COUNTS)
        for stem in KNOWN_EMPTY:
            if stem in " ".join(report.skipped.examples.get(KNOWN_EMPTY_REASON, [])):
                expected[stem.split("_")[2]] -= 1
        problems += count_differences("class (written)", report.class_counts, expected_class_counts(mapping, expected))
        if genders is not None:
            found = Counter(genders.get(a) for a in ACTORS if a in genders)
            problems += count_differences(f"actors by sex in {DEMOGRAPHICS}", found, FULL_RELEASE_GENDERS)
        if problems:  # where to look: the actors with the fewest files
            fewest = sorted(ACTORS, key=lambda a: (actors[a], a))[:10]
            problems.append("  files per actor, fewest first: " + "  ".join(f"{a} {actors[a]}" for a in fewest))
        return problems

    return finish(report, utterances, looks_full=set(ACTORS) <= set(actors), strict=strict, check=check)
