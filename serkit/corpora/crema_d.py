"""CREMA-D (stage 0): ``AudioWAV/<actor>_<SENT>_<EMO>_<LEVEL>.wav`` -> data directory.

Facts: 91 actors 1001-1091 (48 male, 43 female, from ``VideoDemographics.csv``: ActorID, Age,
Sex, Race, Ethnicity), 12 fixed English sentences (the SENT code), six intended emotions (ANG
DIS FEA HAP NEU SAD), intensity LEVEL (LO MD HI, XX unspecified). 7442 files at 16 kHz: ANG DIS
FEA HAP SAD 1271 each and NEU 1087. ``1076_MTI_SAD_XX.wav`` is empty in the release: it is
skipped under its own reason and counted, so 7441 utterances are written.

Labels are the intended (acted) emotions of the file name. Speaker = actor id; no sessions; the
sentence code is ``utt2sentence`` (12 sentences shared by all actors: see the leakage report).

Rater votes (``utt2votes``, the votes target's soft labels) are the crowd's perceived emotions in
``processedResults/tabulatedVotes.csv``: columns ``A D F H N S`` count each clip's responses per
emotion, ``fileName`` names the clip, and the unnamed first column is ``100000 * query type + clip
number`` (query type 1 voice only, 2 face only, 3 audio-visual). Only the voice-only rows are read:
those raters heard what the model hears. This file rather than the raw ``finishedResponses.csv``
(one row per response) because the release's tabulation also drops the responses whose first click
came more than 10 s after the clip (``finishedEmoResponses.csv``): it is the release's own vote
count, the one its perceived labels come from. Votes are counted through the class map like the
labels (ANG DIS FEA HAP NEU SAD); rows whose id or counts are not numbers are noted with their line
and not counted. A copy without the file (many circulate with ``AudioWAV/`` only) is prepared
without ``utt2votes`` (noted once).

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
                                   expected_class_counts, finish, keep, list_files, rater_votes, read_text_lines,
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
#: The raters' responses counted per clip and query type (the source of ``utt2votes``).
RATER_FILE = Path("processedResults") / "tabulatedVotes.csv"
#: Its vote columns (the response letters) -> the file names' emotion codes.
VOTE_COLUMNS = {"A": "ANG", "D": "DIS", "F": "FEA", "H": "HAP", "N": "NEU", "S": "SAD"}
#: The query type of the voice-only ratings (the first column's hundred-thousands digit).
VOICE_ONLY = 1
LAYOUT = """Expected layout (ROOT is the CREMA-D folder):
  ROOT/AudioWAV/<actor>_<SENT>_<EMO>_<LEVEL>.wav   e.g. 1001_DFA_ANG_XX.wav
  ROOT/VideoDemographics.csv                        (optional: gives utt2gender)
  ROOT/processedResults/tabulatedVotes.csv          (optional: the raters' votes, gives utt2votes)"""

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


def read_voice_votes(path: Path, report: PrepReport) -> dict[str, dict[str, int]]:
    """Each clip's voice-only rater votes by emotion code (keyed by file stem) from ``tabulatedVotes.csv``."""
    rows = csv.DictReader(read_text_lines(path, report.notes))
    header = rows.fieldnames or []
    missing = [c for c in (*VOTE_COLUMNS, "fileName") if c not in header]
    if missing:
        raise CorpusError(f"{path}: columns {missing} missing; the release's file starts with an "
                          f"id column then {','.join(VOTE_COLUMNS)},fileName,numResponses,...: restore it, or move it "
                          "away to prepare without utt2votes")
    votes = {}
    for row in rows:
        try:
            query_type = int(row[header[0]]) // 100000
            counts = {code: int(row[column]) for column, code in VOTE_COLUMNS.items()}
        except (TypeError, ValueError):
            report.notes.add(f"{RATER_FILE.name} row whose id or vote counts are not numbers (not counted)",
                             f"{path}:{rows.line_num}")
            continue
        if query_type == VOICE_ONLY:
            votes[(row["fileName"] or "").strip()] = counts
    return votes


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

    extra = rater_votes(root / RATER_FILE, read_voice_votes, utterances, mapping, report)
    return finish(report, utterances, looks_full=set(ACTORS) <= set(actors), strict=strict, check=check,
                  extra_files=extra)
