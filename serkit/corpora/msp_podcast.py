"""MSP-Podcast (stage 0): ``Audios/*.wav`` + ``Labels/labels_consensus.csv`` -> data directory.

Facts (v1.11): ``Labels/labels_consensus.csv`` with header ``FileName,EmoClass,EmoAct,EmoVal,EmoDom,
SpkrID,Gender,Split_Set``; EmoClass in A S H U F D C N (angry sad happy surprise fear disgust
contempt neutral) plus O (other) and X (no agreement among annotators); SpkrID may be ``Unknown``;
Split_Set Train, Development, Test1, Test2, Test3. ``Partitions.txt`` repeats the splits
(``Split; FileName``); ``Transcripts/<utterance>.txt`` holds the text. Older releases misspell the
label file ``labels_concensus.csv`` and call the development set ``Validation``: both spellings
are read and the layout found is stated in the report. 16 kHz; rare outliers are stereo 44.1 kHz
(kept, noted; loaders downmix and resample).

O and X are not emotions of the primary categorical task (the release documents them as
"other" and "no agreement"): no shipped class map lists them, so they are excluded and counted per
code. Rows without an EmoClass (hidden test labels) are counted skips. Utterances of unknown
speakers get the speaker ``unknown`` (the leakage report leaves them out of speaker overlap; the
speaker protocols would treat them as one speaker, which is why the recipe uses ``predefined``);
``utt2gender`` is written only when every kept utterance's gender is known.

The label file is the release's own manifest, and the release version decides how many rows it
has, so no per-version total is hard-coded: a copy whose ``Audios/`` holds at least 90 % of the
files the label file names is a full release, and then every named file must be there and
``Partitions.txt`` must agree with ``Split_Set``, else preparation stops naming what is missing.
A copy with fewer files is partial: reported, not checked.

Rater votes (``utt2votes``, the votes target's soft labels) come from ``Labels/labels_detailed.csv``,
one row per annotator judgement. Releases 1.7 on hold ``FileName,EmoDetail`` with
``EmoDetail = "WORKER<id>; <primary>; <secondary,...>; A:<a>; V:<v>; D:<d>;"``; 1.6 and 2.0 name
the primary emotion in an ``EmoClass_Major`` column; both are read. The primary emotion is a word
(``Angry``, ``Sad``, ``Happy``, ``Surprise``, ``Fear``, ``Disgust``, ``Contempt``, ``Neutral``,
``Other`` or ``Other-<the rater's word>``) or an EmoClass code; it is counted as its EmoClass code
through the class map, so votes for O, and for codes the map drops, are not counted. Rows without a
file name or a primary emotion, and unknown words, are noted (with their line) and not counted. A
copy without the file is prepared without ``utt2votes`` (noted once).
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from serkit.corpora import ClassMap, CorpusError, load_class_map
from serkit.corpora.common import (PrepReport, ReleaseAudio, Utterance, check_codes, check_out_dir, finish, keep,
                                   listed, rater_votes, read_text_lines, require_root)

CORPUS = "MSP-Podcast"
LANGUAGE = "en"
#: MSP-Podcast release: 16 kHz mono, rare outliers stereo 44.1 kHz. Other rates/channels: an altered copy.
RELEASE_AUDIO = ReleaseAudio(rates=(16000, 44100), channels=(1, 2))
EMOTION_CODES = ("A", "S", "H", "U", "F", "D", "C", "N", "O", "X")
LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv")  # current spelling, then the older one
REQUIRED_COLUMNS = ("FileName", "EmoClass", "SpkrID", "Gender", "Split_Set")
KNOWN_SPLITS = ("Train", "Development", "Validation", "Test1", "Test2", "Test3")
UNKNOWN_SPEAKER = "unknown"
#: ``Audios/`` holding at least this share of the labelled files = a full release (damaged or not).
FULL_RELEASE_MIN_SHARE = 0.9
#: One row per annotator judgement (the source of ``utt2votes``).
RATER_FILE = "labels_detailed.csv"
#: The annotators' primary-emotion words (lower case) -> EmoClass codes; ``Other-<word>`` counts as O.
RATER_WORDS = {"angry": "A", "anger": "A", "sad": "S", "sadness": "S", "happy": "H", "happiness": "H",
               "surprise": "U", "surprised": "U", "fear": "F", "disgust": "D", "disgusted": "D",
               "contempt": "C", "neutral": "N", "other": "O"}
LAYOUT = """Expected layout (ROOT is the MSP-Podcast folder):
  ROOT/Audios/<FileName>.wav
  ROOT/Labels/labels_consensus.csv   (older releases: labels_concensus.csv)
  ROOT/Labels/labels_detailed.csv    (optional: one row per annotator, gives utt2votes)
  ROOT/Partitions.txt                (optional: 'Split; FileName' lines, cross-checked)
  ROOT/Transcripts/<utterance>.txt   (optional: text for stage 1)"""


def find_label_file(root: Path, report: PrepReport) -> Path:
    for name in LABEL_FILES:
        path = root / "Labels" / name
        if path.is_file():
            if name != LABEL_FILES[0]:
                report.facts.append(f"label file {name} (the older releases' spelling)")
            return path
    raise CorpusError(f"no Labels/{LABEL_FILES[0]} (or Labels/{LABEL_FILES[1]}) under {root}: "
                      f"not an MSP-Podcast root.\n{LAYOUT}")


def read_labels(path: Path, report: PrepReport) -> list[dict[str, str]]:
    rows = list(csv.DictReader(read_text_lines(path, report.notes)))
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]] or ([] if rows else ["(no rows)"])
    if missing:
        raise CorpusError(f"{path}: columns {missing} missing; the header must name {', '.join(REQUIRED_COLUMNS)}")
    return rows


def read_partitions(path: Path, report: PrepReport) -> dict[str, str]:
    """FileName -> split from ``Partitions.txt`` (``Split; FileName`` lines)."""
    parts = {}
    for number, line in enumerate(read_text_lines(path, report.notes), start=1):
        if not line.strip():
            continue
        split, sep, name = (field.strip() for field in line.partition(";"))
        if not sep or not name:
            report.skipped.add("Partitions.txt line not 'Split; FileName'", f"{path}:{number}: {line!r}")
        else:
            parts[name] = split
    return parts


def rater_code(word: str) -> str | None:
    """The EmoClass code of an annotator's primary emotion (a word or a code), None when unknown."""
    if word in EMOTION_CODES:
        return word
    key = word.lower()
    return "O" if key.startswith("other") else RATER_WORDS.get(key)


def _primary_emotion(row: dict[str, str | None]) -> str:
    """The primary emotion of a rater row ('' when absent): its ``EmoClass_Major`` or ``EmoDetail``'s second field."""
    if "EmoClass_Major" in row:
        return (row["EmoClass_Major"] or "").strip()
    fields = (row.get("EmoDetail") or "").split(";")
    return fields[1].strip() if len(fields) > 2 and fields[0].strip() else ""


def read_rater_votes(path: Path, report: PrepReport) -> dict[str, Counter]:
    """Each file's annotator votes by EmoClass code (keyed by file stem) from ``labels_detailed.csv``."""
    rows = csv.DictReader(read_text_lines(path, report.notes))
    header = rows.fieldnames or []
    if "FileName" not in header or not {"EmoDetail", "EmoClass_Major"} & set(header):
        raise CorpusError(f"{path}: header {','.join(header) or '(empty)'} has neither FileName,EmoDetail (releases "
                          "1.7 on) nor FileName and EmoClass_Major (one row per annotator); restore the release's "
                          f"{RATER_FILE}, or move it out of Labels/ to prepare without utt2votes")
    votes: dict[str, Counter] = {}
    for row in rows:
        where = f"{path}:{rows.line_num}"
        name, primary = (row["FileName"] or "").strip(), _primary_emotion(row)
        code = rater_code(primary) if primary else None
        if not name or not primary:
            report.notes.add(f"{RATER_FILE} row without a file name or a primary emotion (not counted)", where)
        elif code is None:
            report.notes.add(f"{RATER_FILE}: unknown primary emotion (not counted)", f"{where}: {primary!r}")
        else:
            votes.setdefault(Path(name).stem, Counter())[code] += 1
    return votes


def _utterance(row: dict[str, str], root: Path, report: PrepReport) -> Utterance | None:
    name = row["FileName"].strip()
    code, split = row["EmoClass"].strip(), row["Split_Set"].strip()
    if not code:
        report.skipped.add("no EmoClass (label not released, e.g. a hidden test set)", name)
        return None
    if code not in EMOTION_CODES:
        report.skipped.add(f"unknown EmoClass {code!r}", name)
        return None
    if split not in KNOWN_SPLITS:
        report.notes.add(f"unknown Split_Set {split!r} (kept as given)", name)
    speaker = row["SpkrID"].strip()
    if not speaker or speaker.lower() == "unknown":
        speaker = UNKNOWN_SPEAKER
        report.notes.add("speaker Unknown (speaker 'unknown'; left out of speaker-overlap reports)", name)
    gender = {"male": "m", "female": "f"}.get(row["Gender"].strip().lower())
    stem = Path(name).stem
    transcript = root / "Transcripts" / f"{stem}.txt"
    text = " ".join(read_text_lines(transcript, report.notes)).strip() if transcript.is_file() else ""
    if not transcript.is_file():
        report.notes.add("no transcript (kept, empty text)", str(transcript))
    return Utterance(corpus_id=stem, speaker=speaker, wav=root / "Audios" / name, code=code, text=text,
                     gender=gender, split=split)


def prepare(corpus_root: str | Path, class_map: str | Path | ClassMap, out_dir: str | Path,
            strict: bool | None = None) -> PrepReport:
    """Prepare an MSP-Podcast data directory (docs/formats.md) and ``prep_report.txt``."""
    root, out_dir = Path(corpus_root).absolute(), Path(out_dir).absolute()
    check_out_dir(out_dir)
    mapping = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map, "msp_podcast")
    check_codes(mapping, EMOTION_CODES, CORPUS)
    require_root(root, CORPUS, LAYOUT)
    report = PrepReport(CORPUS, root, out_dir, mapping, LANGUAGE, release_audio=RELEASE_AUDIO)
    rows = read_labels(find_label_file(root, report), report)
    splits_named = Counter(row["Split_Set"].strip() for row in rows)
    dev = [s for s in ("Development", "Validation") if s in splits_named]
    report.facts.append(f"label rows: {len(rows)}; Split_Set: " + "  ".join(f"{s} {n}" for s, n in
                                                                              sorted(splits_named.items()))
                        + (f"; development set named {'/'.join(dev)}" if dev else ""))
    audio = root / "Audios"
    on_disk = {p.name for p in audio.iterdir() if p.suffix.lower() == ".wav"} if audio.is_dir() else set()
    named = [row["FileName"].strip() for row in rows]
    seen, utterances, missing = set(), [], []
    for row in rows:
        name = row["FileName"].strip()
        if name in seen:
            report.skipped.add("duplicate label row (first kept)", name)
            continue
        seen.add(name)
        if name not in on_disk:
            missing.append(name)
        utt = _utterance(row, root, report)
        if utt is not None:
            kept = keep(utt, report)
            if kept is not None:
                utterances.append(kept)
    for name in sorted(on_disk - seen):
        report.skipped.add("audio file without a label row", str(audio / name))
    partitions = read_partitions(root / "Partitions.txt", report) if (root / "Partitions.txt").is_file() else None
    disagree = ([f"{n}: Split_Set {s}, Partitions.txt {partitions.get(n, 'absent')}"
                 for n, s in ((r["FileName"].strip(), r["Split_Set"].strip()) for r in rows) if partitions.get(n) != s]
                if partitions is not None else [])
    for item in disagree:
        report.notes.add("Split_Set and Partitions.txt disagree (Split_Set used)", item)
    share = len(set(named) & on_disk) / max(len(set(named)), 1)

    def check() -> list[str]:
        problems = listed(f"  {len(missing)} labelled file(s) missing from Audios/:", missing)
        problems += listed(f"  {len(disagree)} file(s) whose Partitions.txt split differs from Split_Set:", disagree)
        return ([f"  Audios/ holds {len(set(named) & on_disk)} of the {len(set(named))} files the label file "
                 "names"] + problems) if problems else []

    extra = rater_votes(root / "Labels" / RATER_FILE, read_rater_votes, utterances, mapping, report)
    return finish(report, utterances, looks_full=share >= FULL_RELEASE_MIN_SHARE, strict=strict, check=check,
                  extra_files=extra)
