"""RAVDESS, speech part (stage 0): ``Actor_NN/03-01-EE-II-SS-RR-AA.wav`` -> data directory.

Facts (docs/corpora in docs/porting.md): 24 actors (odd ids male, even female), 60 speech files
each, 1440 in all (neutral 96, every other emotion 192). The file name is the label: modality
(03 audio-only), vocal channel (01 speech, 02 song), emotion EE (01 neutral, 02 calm, 03 happy,
04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity II (01 normal, 02 strong;
neutral has only 01), statement SS (01 "Kids are talking by the door", 02 "Dogs are sitting by
the door"), repetition RR, actor AA. 48 kHz 16-bit; a few files are stereo, some takes very
quiet, some headers carry extra chunks before ``data`` (the audit reads them like any other).

Parsing follows the name fields, never a fixed file list; song, video and misnamed files are
counted skips. Speaker = the Actor folder; sessions do not exist (no ``utt2session``); the two
statements are ``utt2sentence`` (s01, s02), so every fold shares its sentences with training
unless a sentence-disjoint protocol is chosen.

A copy with all 24 Actor folders is the full release: its files must be exactly the 1440
speech files (missing ones are named), else preparation stops (``strict=False`` to override).
"""
from __future__ import annotations

import re
from pathlib import Path

from serkit.corpora import ClassMap, CorpusError, load_class_map
from serkit.corpora.common import (PrepReport, ReleaseAudio, Utterance, check_codes, check_out_dir, count_differences,
                                   expected_class_counts, finish, keep, list_files, listed, require_root)

CORPUS = "RAVDESS"
LANGUAGE = "en"
#: RAVDESS release: 48 kHz 16-bit, a few files stereo. Other rates/channels: an altered copy.
RELEASE_AUDIO = ReleaseAudio(rates=(48000,), channels=(1, 2))
EMOTION_CODES = ("01", "02", "03", "04", "05", "06", "07", "08")
NEUTRAL = "01"
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
ACTORS = tuple(f"{n:02d}" for n in range(1, 25))
FULL_RELEASE_CODE_COUNTS = {code: 96 if code == NEUTRAL else 192 for code in EMOTION_CODES}
FULL_RELEASE_FILES = 1440
FILES_PER_ACTOR = 60
LAYOUT = """Expected layout (ROOT is the folder holding the actors, e.g. Audio_Speech_Actors_01-24):
  ROOT/Actor_01 .. Actor_24/03-01-EE-II-SS-RR-AA.wav"""

_ACTOR_DIR_RE = re.compile(r"^Actor_(\d{2})$")
_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


def expected_names(actor: str) -> list[str]:
    """The 60 speech file stems of one actor in the full release."""
    names = []
    for emotion in EMOTION_CODES:
        for intensity in ("01",) if emotion == NEUTRAL else ("01", "02"):
            names += [f"03-01-{emotion}-{intensity}-{s}-{r}-{actor}" for s in STATEMENTS for r in ("01", "02")]
    return names


def _actor_dirs(root: Path, report: PrepReport) -> dict[str, Path]:
    dirs = {}
    for entry in sorted(root.iterdir()):
        match = _ACTOR_DIR_RE.match(entry.name)
        if entry.name.startswith("._"):
            report.skipped.add("macOS '._' file", str(entry))
        elif match and entry.is_dir():
            dirs[match.group(1)] = entry
    if not dirs:
        nested = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("Actor_[0-9][0-9]")))
        hint = f"\n{root} holds {nested[0].name}/ with Actor folders: use --root {nested[0]}" if nested else ""
        raise CorpusError(f"no Actor_NN folder under {root}: not a RAVDESS root.{hint}\n{LAYOUT}")
    return dirs


def _parse(path: Path, actor: str, report: PrepReport) -> Utterance | None:
    """The utterance a speech file name describes, or None (counted) for anything else."""
    match = _NAME_RE.match(path.stem)
    if not match:
        report.skipped.add("file name is not MM-VV-EE-II-SS-RR-AA.wav", str(path))
        return None
    modality, channel, emotion, intensity, statement, repetition, name_actor = match.groups()
    if modality != "03":
        report.skipped.add("not audio-only (modality 01/02 is video)", str(path))
    elif channel != "01":
        report.skipped.add("song (vocal channel 02), not the speech part", str(path))
    elif emotion not in EMOTION_CODES:
        report.skipped.add(f"unknown emotion code {emotion!r}", str(path))
    elif intensity not in ("01", "02") or statement not in STATEMENTS or repetition not in ("01", "02"):
        report.skipped.add("intensity, statement or repetition field out of range", str(path))
    elif name_actor != actor:
        report.skipped.add("actor field differs from its Actor folder", str(path))
    else:
        if emotion == NEUTRAL and intensity == "02":
            report.notes.add("neutral with strong intensity (the release has none; kept)", str(path))
        return Utterance(corpus_id=path.stem, speaker=f"Actor_{actor}", wav=path, code=emotion,
                         text=STATEMENTS[statement], gender="m" if int(actor) % 2 else "f",
                         sentence=f"s{statement}")
    return None


def prepare(corpus_root: str | Path, class_map: str | Path | ClassMap, out_dir: str | Path,
            strict: bool | None = None) -> PrepReport:
    """Prepare a RAVDESS speech data directory (docs/formats.md) and ``prep_report.txt``."""
    root, out_dir = Path(corpus_root).absolute(), Path(out_dir).absolute()
    check_out_dir(out_dir)
    mapping = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map, "ravdess")
    check_codes(mapping, EMOTION_CODES, CORPUS)
    require_root(root, CORPUS, LAYOUT)
    report = PrepReport(CORPUS, root, out_dir, mapping, LANGUAGE, release_audio=RELEASE_AUDIO)
    actor_dirs = _actor_dirs(root, report)
    found: dict[str, set[str]] = {}
    utterances = []
    for actor, folder in actor_dirs.items():
        for path in list_files(folder, report.skipped):
            utt = _parse(path, actor, report)
            if utt is None:
                continue
            found.setdefault(actor, set()).add(path.stem)
            kept = keep(utt, report)
            if kept is not None:
                utterances.append(kept)
    report.facts.append(f"actors found: {len(actor_dirs)} (full release 24); speech files found: "
                        f"{sum(map(len, found.values()))} (full release {FULL_RELEASE_FILES})")

    def check() -> list[str]:
        problems = count_differences("emotion code", report.code_counts, FULL_RELEASE_CODE_COUNTS)
        problems += count_differences("class", report.class_counts,
                                      expected_class_counts(mapping, FULL_RELEASE_CODE_COUNTS))
        missing = [f"Actor_{a}/{name}.wav" for a in ACTORS for name in expected_names(a)
                   if name not in found.get(a, set())]
        return problems + listed("  missing speech files:", missing) if problems or missing else []

    return finish(report, utterances, looks_full=set(ACTORS) <= set(actor_dirs), strict=strict, check=check)
