"""IEMOCAP data preparation (stage 0): corpus tree -> Kaldi-style data directory.

The parser follows the corpus FORMAT (see /work/shared/corpora.md), not a list of known files:

* labels come from ``SessionN/dialog/EmoEvaluation/*.txt`` directly in that folder; sub-folders
  (Categorical/, Attribute/, Self-evaluation/), macOS ``._*`` twins and other files are skipped and
  counted. Inside a file, only consensus lines ``[start - end] utt code [v, a, d]`` carry labels;
  the ``%`` header and the evaluators' ``C-``/``A-`` lines are recognised and ignored.
* transcripts come from ``SessionN/dialog/transcriptions/<dialog>.txt`` lines
  ``utt [start-end]: text``; lines without id and time (``M: Yeah.``) are counted, XX turns simply
  never match a label, noise tags such as ``[LAUGHTER]`` stay in the text.
* the speaker is the session plus the gender letter of the utterance's OWN turn, read from the last
  ``_`` field of its id (``Ses01F_impro01_M000`` -> ``Ses01M``); the dialog prefix names who started
  the dialog, and suffixed dialogs (``Ses03M_impro05a``) break fixed character indices.

Decision on labelled utterances without a transcript line: they stay in the emotion task with an
empty ``text`` value, and are counted and listed in ``prep_report.txt`` (stage 1 then reports them
as utterances without phones). Dropping them would change the standard 5531-utterance set.

On the full release (5 sessions, 151 dialogs) the counts must equal the published ones, otherwise
preparation stops with found-vs-expected, because a different number means a damaged copy or a
parser bug, and every result computed on it would be silently incomparable.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from tqdm import tqdm

from serkit.audio import AudioError, audio_info
from serkit.corpora import ClassMap, CorpusError, load_class_map
from serkit.datadir import invert_utt2spk, validate_data_dir, write_list, write_map

logger = logging.getLogger(__name__)

#: The 11 consensus codes of the release (xxx = no majority among evaluators).
IEMOCAP_CODES = ("neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx")
FULL_RELEASE_SESSIONS = (1, 2, 3, 4, 5)
FULL_RELEASE_DIALOGS = 151
#: Consensus-code counts of the full release (corpora.md); every mapped count derives from them.
FULL_RELEASE_CODE_COUNTS = {
    "xxx": 2507, "fru": 1849, "neu": 1708, "ang": 1103, "sad": 1084, "exc": 1041,
    "hap": 595, "sur": 107, "fea": 40, "oth": 3, "dis": 2,
}
#: Codes kept by the standard 4-class setup; its per-session counts are published too.
STANDARD_4CLASS_CODES = frozenset({"ang", "hap", "exc", "sad", "neu"})
FULL_RELEASE_4CLASS_SESSION_COUNTS = {"Ses01": 1085, "Ses02": 1023, "Ses03": 1151, "Ses04": 1031, "Ses05": 1241}
SAMPLE_RATE = 16000
#: Stage-1 outputs that depend on stage 0's labels; a re-run of stage 0 deletes them.
STAGE1_FILES = ("utt2arpabet", "utt2phn")

EXPECTED_LAYOUT = """Expected layout (ROOT is the folder usually named IEMOCAP_full_release):
  ROOT/Session1 .. Session5/
    dialog/EmoEvaluation/<dialog>.txt
    dialog/transcriptions/<dialog>.txt
    sentences/wav/<dialog>/<utterance>.wav"""

_SESSION_DIR_RE = re.compile(r"^Session(\d+)$")
_NUMBER = r"\d+(?:\.\d*)?"
_CONSENSUS_RE = re.compile(
    rf"^\[\s*(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})\s*\]\s*"
    rf"(?P<utt>[^\s\[]+)\s+(?P<code>[^\s\[]+)(?:\s+\[[^\]]*\])?\s*$"
)
_TRANSCRIPT_RE = re.compile(
    rf"^(?P<utt>[^\s\[]+)\s*\[\s*{_NUMBER}\s*-\s*{_NUMBER}\s*\]\s*:\s*(?P<text>.*)$"
)
_TURN_RE = re.compile(r"^([FM])\d+$")
_SESSION_PREFIX_RE = re.compile(r"^Ses(\d{2})")


class IemocapError(CorpusError):
    """The IEMOCAP copy is not where or not what data preparation expects."""


class Tally:
    """Counts events by reason and keeps every example, so nothing is dropped silently."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, []).append(example)

    def lines(self, max_examples: int | None = None) -> list[str]:
        """Human-readable lines: ``reason: count`` then the examples, indented."""
        out = []
        for reason, count in sorted(self.counts.items()):
            out.append(f"  {reason}: {count}")
            examples = self.examples[reason]
            shown = examples if max_examples is None else examples[:max_examples]
            out.extend(f"      {example}" for example in shown)
            if len(shown) < len(examples):
                out.append(f"      ... and {len(examples) - len(shown)} more (see prep_report.txt)")
        return out


@dataclass(frozen=True)
class Label:
    """One consensus line of an EmoEvaluation file."""

    utt: str
    code: str
    source: str  # "file:line", for messages


@dataclass(frozen=True)
class TurnId:
    """What an utterance id says about its speaker."""

    dialog: str
    session: str  # "Ses01"
    gender: str  # "f" or "m"

    @property
    def speaker(self) -> str:
        return f"{self.session}{self.gender.upper()}"


def parse_utterance_id(utt: str) -> TurnId:
    """Split ``Ses03M_impro05a_F002`` into dialog, session and the speaking turn's gender.

    Raises ValueError for ids that are not a gendered turn of a ``SesNN`` dialog (e.g. XX turns).
    """
    dialog, sep, turn = utt.rpartition("_")
    turn_match = _TURN_RE.match(turn)
    session_match = _SESSION_PREFIX_RE.match(dialog)
    if not sep or not turn_match or not session_match:
        raise ValueError(f"{utt!r} is not '<SesNN dialog>_<F|M><number>'")
    return TurnId(dialog=dialog, session=f"Ses{session_match.group(1)}", gender=turn_match.group(1).lower())


def _read_lines(path: Path, notes: Tally) -> list[str]:
    """Lines of a corpus text file, whatever its line ends (LF, CRLF, CR) and BOM."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        notes.add("text file not UTF-8, read as Latin-1", str(path))
    return [line.rstrip() for line in text.splitlines()]


def find_session_dirs(root: Path, skipped: Tally) -> list[tuple[int, Path]]:
    """``(number, path)`` of every ``SessionN`` folder with labels; clear errors for a wrong root."""
    if not root.is_dir():
        raise IemocapError(f"IEMOCAP root {root} does not exist or is not a folder.\n{EXPECTED_LAYOUT}")
    sessions = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("._"):
            skipped.add("macOS '._' file", str(entry))
            continue
        match = _SESSION_DIR_RE.match(entry.name)
        if not match or not entry.is_dir():
            continue  # Documentation/, README.txt ... are not data
        if (entry / "dialog" / "EmoEvaluation").is_dir():
            sessions.append((int(match.group(1)), entry))
        else:
            skipped.add("Session folder without dialog/EmoEvaluation", str(entry))
    if not sessions:
        hint = ""
        if (root / "IEMOCAP_full_release").is_dir():
            hint = f"\n{root} contains IEMOCAP_full_release/: use --root {root / 'IEMOCAP_full_release'}"
        elif (root / "dialog" / "EmoEvaluation").is_dir():
            hint = f"\n{root} looks like a single SessionN folder: use its parent {root.parent} as the root"
        raise IemocapError(f"no Session*/dialog/EmoEvaluation folder under {root}: not an IEMOCAP root.{hint}\n"
                           f"{EXPECTED_LAYOUT}")
    return sorted(sessions)


def list_label_files(session_dir: Path, skipped: Tally) -> list[Path]:
    """The per-dialog EmoEvaluation files, skipping (and counting) everything else in the folder."""
    files = []
    for entry in sorted((session_dir / "dialog" / "EmoEvaluation").iterdir()):
        if entry.name.startswith("._"):
            skipped.add("macOS '._' file", str(entry))
        elif entry.is_dir():
            skipped.add("EmoEvaluation sub-folder (not consensus labels)", str(entry))
        elif entry.suffix != ".txt":
            skipped.add("EmoEvaluation entry that is not a .txt file", str(entry))
        else:
            files.append(entry)
    return files


def parse_emo_evaluation(path: Path, skipped: Tally, notes: Tally) -> list[Label]:
    """Consensus labels of one EmoEvaluation file, in file order.

    Each line is classified on its own (header ``%``, evaluator ``C-``/``A-``, consensus, blank),
    which tolerates missing blank lines between blocks and any mix of tabs and spaces.
    """
    labels = []
    for number, line in enumerate(_read_lines(path, notes), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("%", "C-", "A-")):
            continue
        match = _CONSENSUS_RE.match(stripped)
        if match:
            labels.append(Label(utt=match.group("utt"), code=match.group("code"), source=f"{path}:{number}"))
        elif stripped.startswith("["):
            skipped.add("malformed consensus line in EmoEvaluation", f"{path}:{number}: {stripped}")
        else:
            skipped.add("unrecognised line in EmoEvaluation", f"{path}:{number}: {stripped}")
    return labels


def parse_transcription(path: Path, skipped: Tally, notes: Tally) -> dict[str, str]:
    """``{utterance id: text}`` of one transcription file; noise tags are kept as they are."""
    texts: dict[str, str] = {}
    for number, line in enumerate(_read_lines(path, notes), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        match = _TRANSCRIPT_RE.match(stripped)
        if not match:
            skipped.add("transcript line without utterance id and time", f"{path}:{number}: {stripped}")
            continue
        utt = match.group("utt")
        if utt in texts:
            skipped.add("duplicate transcript line (first kept)", f"{path}:{number}: {utt}")
            continue
        texts[utt] = match.group("text").strip()
    return texts


@dataclass
class PrepReport:
    """What stage 0 found and wrote; ``to_text()`` is the content of prep_report.txt."""

    root: Path
    out_dir: Path
    class_map: ClassMap
    sessions: list[int] = field(default_factory=list)
    n_dialogs: int = 0
    full_release: bool = False
    count_check: str = "not run"
    code_counts: Counter = field(default_factory=Counter)
    excluded_codes: Counter = field(default_factory=Counter)
    class_counts: Counter = field(default_factory=Counter)
    session_counts: Counter = field(default_factory=Counter)
    speaker_counts: Counter = field(default_factory=Counter)
    skipped: Tally = field(default_factory=Tally)
    notes: Tally = field(default_factory=Tally)

    @property
    def n_utterances(self) -> int:
        return sum(self.class_counts.values())

    def summary_lines(self) -> list[str]:
        """The count tables (no examples): what the CLI logs."""
        classes = self.class_map.classes
        lines = [
            f"IEMOCAP root {self.root}: sessions {self.sessions}, {self.n_dialogs} dialogs, "
            f"full release: {'yes' if self.full_release else 'no'}, count check: {self.count_check}",
            f"class map {self.class_map.name}: {' '.join(classes)}; {self.n_utterances} utterances written "
            f"to {self.out_dir}",
            "  per class:   " + "  ".join(f"{c} {self.class_counts[c]}" for c in classes),
            "  per session: " + "  ".join(f"{s} {n}" for s, n in sorted(self.session_counts.items())),
            "  per speaker: " + "  ".join(f"{s} {n}" for s, n in sorted(self.speaker_counts.items())),
            "  consensus codes found: " + "  ".join(f"{c} {n}" for c, n in self.code_counts.most_common()),
            "  excluded by the class map: " + ("  ".join(f"{c} {n}" for c, n in self.excluded_codes.most_common())
                                               or "none"),
        ]
        lines.append("  skipped: " + ("  ".join(f"{r} {n}" for r, n in sorted(self.skipped.counts.items())) or "none"))
        lines.append("  kept, noted: " + ("  ".join(f"{r} {n}" for r, n in sorted(self.notes.counts.items()))
                                          or "none"))
        return lines

    def to_text(self) -> str:
        """Full report: the summary, then every skipped or noted item with its file (and line)."""
        lines = ["IEMOCAP data preparation report (serkit stage 0)", ""]
        lines += self.summary_lines()
        lines += ["", "Skipped (not in the data directory), by reason, with every item:"]
        lines += self.skipped.lines() or ["  none"]
        lines += ["", "Kept or ignored but worth knowing, by reason, with every item:"]
        lines += self.notes.lines() or ["  none"]
        return "\n".join(lines) + "\n"


def expected_full_release_counts(class_map: ClassMap) -> tuple[dict[str, int], dict[str, int] | None]:
    """Per-class counts a full release must give under ``class_map`` (and per-session counts when known).

    Class counts follow from the published consensus-code counts; per-session counts are published
    only for the standard 4-class code set (ang hap exc sad neu), so other maps get ``None``.
    """
    classes = {label: 0 for label in class_map.classes}
    for code, count in FULL_RELEASE_CODE_COUNTS.items():
        label = class_map.label(code)
        if label is not None:
            classes[label] += count
    sessions = dict(FULL_RELEASE_4CLASS_SESSION_COUNTS) if set(class_map.mapping) == STANDARD_4CLASS_CODES else None
    return classes, sessions


def _differences(what: str, found: Mapping[str, int], expected: Mapping[str, int]) -> list[str]:
    keys = sorted(set(found) | set(expected))
    return [f"  {what} {key}: found {found.get(key, 0)}, expected {expected.get(key, 0)}"
            for key in keys if found.get(key, 0) != expected.get(key, 0)]


def check_full_release(code_counts: Mapping[str, int], class_counts: Mapping[str, int],
                       session_counts: Mapping[str, int], class_map: ClassMap,
                       skipped: Mapping[str, int] | None = None) -> None:
    """Raise :class:`IemocapError` unless the counts are exactly those of the full release.

    ``code_counts`` are consensus codes of all labelled utterances; ``class_counts`` and
    ``session_counts`` are what is written to the data directory; ``skipped`` (reason -> count)
    only feeds the likely-cause hints.
    """
    expected_classes, expected_sessions = expected_full_release_counts(class_map)
    code_diff = _differences("consensus code", code_counts, FULL_RELEASE_CODE_COUNTS)
    class_diff = _differences("class", class_counts, expected_classes)
    session_diff = _differences("session", session_counts, expected_sessions) if expected_sessions else []
    if not (code_diff or class_diff or session_diff):
        return
    causes = []
    if code_diff:
        causes.append("the EmoEvaluation files differ from the official release: a dialog file missing, "
                      "duplicated or edited, or a different corpus version")
    if (class_diff or session_diff) and not code_diff:
        causes.append("labels are complete, so utterances were lost later: sentence wavs missing or unreadable "
                      "(the skipped wav paths are logged), or a partial copy of sentences/wav")
    if skipped:
        causes.append("skipped items: " + ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items())))
    causes.append("if this copy is intentionally partial or modified, rerun with --no-strict (strict=False)")
    raise IemocapError(
        f"IEMOCAP full release expected, but the counts differ from the published ones "
        f"(class map {class_map.name}):\n" + "\n".join(code_diff + class_diff + session_diff)
        + "\nLikely cause:\n" + "\n".join(f"  - {cause}" for cause in causes)
    )


@dataclass(frozen=True)
class _Utterance:
    """One utterance that made it into the data directory."""

    utt_id: str
    turn: TurnId
    wav: Path
    duration: float
    text: str
    label: str
    code: str


def _collect_labels(session_dirs: list[tuple[int, Path]], report: PrepReport) -> list[tuple[Path, Label]]:
    """All consensus labels with their Session folder; duplicates and foreign ids are skipped."""
    seen: set[str] = set()
    labels = []
    for _, session_dir in session_dirs:
        for path in list_label_files(session_dir, report.skipped):
            report.n_dialogs += 1
            for label in parse_emo_evaluation(path, report.skipped, report.notes):
                if label.utt in seen:
                    report.skipped.add("duplicate consensus label (first kept)", f"{label.source}: {label.utt}")
                elif not label.utt.startswith(path.stem + "_"):
                    report.skipped.add("utterance id does not belong to the file's dialog",
                                       f"{label.source}: {label.utt}")
                else:
                    seen.add(label.utt)
                    labels.append((session_dir, label))
    return labels


def _make_utterance(session_dir: Path, label: Label, class_label: str, texts: Mapping[str, str],
                    report: PrepReport) -> _Utterance | None:
    """Build one utterance, or count why it is skipped (bad id, missing/unreadable wav)."""
    try:
        turn = parse_utterance_id(label.utt)
    except ValueError as error:
        report.skipped.add("labelled utterance id without a F/M turn", f"{label.source}: {error}")
        return None
    wav = session_dir / "sentences" / "wav" / turn.dialog / f"{label.utt}.wav"
    if not wav.is_file():
        report.skipped.add("wav missing", str(wav))
        return None
    try:
        info = audio_info(wav)
    except AudioError as error:
        report.skipped.add("wav unreadable", str(error))
        return None
    if round(info.duration, 3) <= 0:
        report.skipped.add("wav empty (no samples)", str(wav))
        return None
    if info.sample_rate != SAMPLE_RATE:
        report.notes.add(f"wav not {SAMPLE_RATE} Hz (kept; loaders resample)", f"{wav}: {info.sample_rate} Hz")
    if info.channels != 1:
        report.notes.add("wav not mono (kept; loaders downmix)", f"{wav}: {info.channels} channels")
    if f"Session{int(turn.session[3:])}" != session_dir.name:
        report.notes.add("utterance session differs from its Session folder", f"{label.source}: {label.utt}")
    if label.utt not in texts:
        report.notes.add("labelled utterance without transcript line (kept, empty text)",
                         f"{label.source}: {label.utt}")
    elif not texts[label.utt]:
        report.notes.add("labelled utterance with empty transcript text (kept)", f"{label.source}: {label.utt}")
    return _Utterance(utt_id=f"{turn.speaker}-{label.utt}", turn=turn, wav=wav, duration=info.duration,
                      text=texts.get(label.utt, ""), label=class_label, code=label.code)


def _transcripts(session_dir: Path, dialog: str, cache: dict[str, dict[str, str]],
                 report: PrepReport) -> dict[str, str]:
    """Transcripts of one dialog, read once; a missing file is noted (its utterances get empty text)."""
    if dialog not in cache:
        path = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
        if path.is_file():
            cache[dialog] = parse_transcription(path, report.skipped, report.notes)
        else:
            report.notes.add("transcription file missing (its utterances get empty text)", str(path))
            cache[dialog] = {}
    return cache[dialog]


def _note_unlabelled_turns(cache: Mapping[str, Mapping[str, str]], labelled: set[str], report: PrepReport) -> None:
    """Transcript lines outnumber labels (XX turns and others): count them so the gap is explained."""
    for texts in cache.values():
        for utt in texts:
            if utt not in labelled:
                reason = ("transcript line of an XX turn (no label, no wav)" if "XX" in utt.rpartition("_")[2]
                          else "transcript line without consensus label")
                report.notes.add(reason, utt)


def _write_data_dir(out_dir: Path, utterances: list[_Utterance], class_map: ClassMap) -> None:
    """Write every stage-0 file, and delete stage-1 files that the new labels make stale."""
    out_dir.mkdir(parents=True, exist_ok=True)
    utt2spk = {u.utt_id: u.turn.speaker for u in utterances}
    write_map(out_dir / "wav.scp", {u.utt_id: str(u.wav) for u in utterances})  # absolute: root is
    write_map(out_dir / "text", {u.utt_id: u.text for u in utterances})
    write_map(out_dir / "utt2spk", utt2spk)
    write_map(out_dir / "spk2utt", invert_utt2spk(utt2spk))
    write_map(out_dir / "utt2emo", {u.utt_id: u.label for u in utterances})
    write_map(out_dir / "utt2gender", {u.utt_id: u.turn.gender for u in utterances})
    write_map(out_dir / "utt2dur", {u.utt_id: f"{u.duration:.3f}" for u in utterances})
    write_map(out_dir / "utt2raw_emo", {u.utt_id: u.code for u in utterances})
    write_map(out_dir / "utt2session", {u.utt_id: u.turn.session for u in utterances})
    write_list(out_dir / "classes", class_map.classes)
    for name in STAGE1_FILES:
        if (out_dir / name).exists():
            (out_dir / name).unlink()
            logger.warning("removed stale %s (written by stage 1 for the previous labels): re-run stage 1",
                           out_dir / name)


def prepare_iemocap(root: str | Path, out_dir: str | Path, class_map: str | Path | ClassMap = "4class",
                    strict: bool | None = None) -> PrepReport:
    """Prepare an IEMOCAP data directory (docs/formats.md) and ``prep_report.txt``; return the report.

    ``class_map``: a shipped map name (``4class``, ``5class``, ``6class``) or a YAML file.
    ``strict``: None checks the published counts only on a full release (5 sessions, 151
    dialogs); True checks them always; False never. Nothing is written when a check fails, so an
    earlier good data directory is not half-overwritten. Re-running overwrites every file.
    """
    root, out_dir = Path(root).absolute(), Path(out_dir).absolute()  # reports and wav.scp name full paths
    if out_dir.exists() and not out_dir.is_dir():
        raise IemocapError(f"output {out_dir} exists and is not a folder; choose another --out")
    mapping = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map)
    unknown_map_codes = sorted(set(mapping.mapping) - set(IEMOCAP_CODES))
    if unknown_map_codes:
        raise IemocapError(f"class map {mapping.source} maps codes {unknown_map_codes} that IEMOCAP does not use "
                           f"(valid codes: {' '.join(IEMOCAP_CODES)}); fix the spelling in the map")
    report = PrepReport(root=root, out_dir=out_dir, class_map=mapping)
    session_dirs = find_session_dirs(root, report.skipped)
    report.sessions = [number for number, _ in session_dirs]
    labels = _collect_labels(session_dirs, report)

    cache: dict[str, dict[str, str]] = {}
    utterances = []
    for session_dir, label in tqdm(labels, desc="IEMOCAP utterances", unit="utt", disable=None):
        report.code_counts[label.code] += 1
        texts = _transcripts(session_dir, label.utt.rpartition("_")[0], cache, report)
        if label.code not in IEMOCAP_CODES:
            report.skipped.add(f"unknown consensus code {label.code!r}", f"{label.source}: {label.utt}")
        class_label = mapping.label(label.code)
        if class_label is None:
            report.excluded_codes[label.code] += 1
            continue
        utterance = _make_utterance(session_dir, label, class_label, texts, report)
        if utterance is not None:
            utterances.append(utterance)
    _note_unlabelled_turns(cache, {label.utt for _, label in labels}, report)
    for u in utterances:
        report.class_counts[u.label] += 1
        report.session_counts[u.turn.session] += 1
        report.speaker_counts[u.turn.speaker] += 1

    _check_counts(report, strict)
    if not utterances:
        raise IemocapError(f"no utterance of {root} survived preparation with class map {mapping.name}:\n"
                           + "\n".join(report.summary_lines()))
    _write_data_dir(out_dir, utterances, mapping)
    (out_dir / "prep_report.txt").write_text(report.to_text(), encoding="utf-8")
    validate_data_dir(out_dir)
    return report


def _check_counts(report: PrepReport, strict: bool | None) -> None:
    """Decide whether this is the full release and, if so (or if forced), check the counts."""
    report.full_release = (tuple(report.sessions) == FULL_RELEASE_SESSIONS
                           and report.n_dialogs == FULL_RELEASE_DIALOGS)
    if tuple(report.sessions) == FULL_RELEASE_SESSIONS and not report.full_release:
        logger.warning("all 5 sessions found but %d dialogs (the full release has %d): treated as a partial "
                       "copy; counts are not checked (strict=True forces the check)",
                       report.n_dialogs, FULL_RELEASE_DIALOGS)
    check = report.full_release if strict is None else strict
    if not check:
        report.count_check = "not run (partial copy)" if strict is None else "not run (strict=False)"
        return
    try:
        check_full_release(report.code_counts, report.class_counts, report.session_counts, report.class_map,
                           skipped=dict(report.skipped.counts))
    except IemocapError:
        # Nothing is written on failure, so the skipped items (the usual explanation) go to the log.
        logger.warning("skipped while reading %s:\n%s", report.root,
                       "\n".join(report.skipped.lines(max_examples=10)) or "  nothing")
        raise
    report.count_check = "passed"
