"""IEMOCAP data preparation (stage 0): corpus tree -> Kaldi-style data directory.

The parser follows the corpus FORMAT (docs/formats.md; the release facts are in its docstrings below), not a list of known files:

* labels come from ``SessionN/dialog/EmoEvaluation/*.txt`` directly in that folder; sub-folders
  (Categorical/, Attribute/, Self-evaluation/), macOS ``._*`` twins and other files are skipped and
  counted. Inside a file, only consensus lines ``[start - end] utt code [v, a, d]`` carry labels;
  the external evaluators' categorical lines (``C-E<n>``) are the label's votes, written to
  ``utt2votes`` through the class map (:mod:`serkit.data.votes`); the ``%`` header, the actors'
  self-evaluations (``C-F1``/``C-M1``) and the ``A-`` lines are recognised and ignored.
* transcripts come from ``SessionN/dialog/transcriptions/<dialog>.txt`` lines
  ``utt [start-end]: text``; lines without id and time (``M: Yeah.``) are counted, XX turns simply
  never match a label, noise tags such as ``[LAUGHTER]`` stay in the text.
* the speaker is the session plus the gender letter of the utterance's OWN turn, read from the last
  ``_`` field of its id (``Ses01F_impro01_M000`` -> ``Ses01M``); the dialog prefix names who started
  the dialog, and suffixed dialogs (``Ses03M_impro05a``) break fixed character indices.

* a labelled utterance of a kept class is skipped, counted and listed with its path when its sentence
  wav is missing, unreadable, empty, truncated, NaN/Inf, all zeros, or shorter than
  :data:`serkit.corpora.common.MIN_WAV_SECONDS` (0.05 s: the wav2vec 2.0
  CNN emits no frame for fewer than 400 samples, and training would crash on it hours later).
* every file in ``SessionN/sentences/wav/`` and its ``<dialog>/`` folders is accounted for: a wav
  that some consensus line names is used or skipped under that line's reason (excluded code, too
  short, ...); every other entry (macOS ``._*`` twins, non-wav files, sub-folders, wavs that no
  consensus line names, wavs of a dialog without an EmoEvaluation file) is counted by reason and
  listed in ``prep_report.txt``. This costs one directory listing per dialog.

Utterances without a majority (``xxx``) that a class map drops are not thrown away: those with at least
one evaluator vote for a class of the map go to ``ambiguous/`` (a data directory without ``utt2emo``,
with their ``utt2votes``), which training uses only on request (``use_ambiguous``); the counts and
checks above concern the labelled data directory alone.

Decision on labelled utterances without a transcript line: they stay in the emotion task with an
empty ``text`` value, and are counted and listed in ``prep_report.txt`` (stage 1 then reports them
as utterances without phones). Dropping them would change the standard 5531-utterance set.

A copy with all 5 sessions and at least :data:`FULL_RELEASE_MIN_DIALOGS` (140) dialogs is taken to
be the full release (151 dialogs); smaller trees (partial copies, test look-alikes) are partial and
only reported. On the full release, a dialog count other than 151 stops preparation (found vs
expected, with the dialogs that look missing or extra), and the counts must equal the published
ones, otherwise preparation stops with found-vs-expected, because a different number means a
damaged copy or a parser bug, and every result computed on it would be silently incomparable.
``strict=True`` applies both checks to any tree, ``strict=False`` to none.
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from tqdm import tqdm

from serkit.corpora import NO_STRICT_HINT, ClassMap, CorpusError, load_class_map
from serkit.corpora.common import PrepReport as SharedPrepReport
from serkit.corpora.common import (AudioAudit, ReleaseAudio, Tally, Utterance, audit_wav, expected_class_counts,
                                   finish, read_text_lines)
from serkit.data.votes import FILE as VOTES_FILE, format_votes

logger = logging.getLogger(__name__)

#: The 11 consensus codes of the release (xxx = no majority among evaluators).
IEMOCAP_CODES = ("neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx")
#: The consensus code of an utterance whose evaluators reached no majority: unless a class map keeps it,
#: its utterances go to the data directory's ``ambiguous/`` folder (those with votes for a class).
NO_MAJORITY_CODE = "xxx"
FULL_RELEASE_SESSIONS = (1, 2, 3, 4, 5)
FULL_RELEASE_DIALOGS = 151
#: All 5 sessions and at least this many dialogs (EmoEvaluation files) = the full release, damaged or
#: not. A copy a few files short of (or over) 151 is a broken full release, not a deliberate subset:
#: treating it as partial would skip the count check and let a silently incomparable corpus through.
#: Deliberate subsets and look-alike trees (tests, the synthetic mini corpus: 20 dialogs) have far
#: fewer dialogs, so they stay partial; 140 leaves room for ~10 lost or stray files either way.
FULL_RELEASE_MIN_DIALOGS = 140
#: Consensus-code counts of the full release (corpora.md); every mapped count derives from them.
FULL_RELEASE_CODE_COUNTS = {
    "xxx": 2507, "fru": 1849, "neu": 1708, "ang": 1103, "sad": 1084, "exc": 1041,
    "hap": 595, "sur": 107, "fea": 40, "oth": 3, "dis": 2,
}
#: Codes kept by the standard 4-class setup; its per-session counts are published too.
STANDARD_4CLASS_CODES = frozenset({"ang", "hap", "exc", "sad", "neu"})
FULL_RELEASE_4CLASS_SESSION_COUNTS = {"Ses01": 1085, "Ses02": 1023, "Ses03": 1151, "Ses04": 1031, "Ses05": 1241}
LANGUAGE = "en"
#: IEMOCAP release: sentences/wav at 16 kHz mono. Other rates/channels: an altered copy.
RELEASE_AUDIO = ReleaseAudio(rates=(16000,), channels=(1,))

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
# An external evaluator's categorical line, e.g. "C-E3:<TAB>Anger; Frustration;<TAB>(annoyed)".
_EVALUATOR_RE = re.compile(r"^C-E\d+:\s*(?P<labels>[^(]*)")
#: The evaluators' label words and their consensus codes (utt2votes counts them through the class map).
VOTE_CODES = {"Neutral": "neu", "Neutral state": "neu", "Happiness": "hap", "Excited": "exc", "Sadness": "sad",
              "Anger": "ang", "Frustration": "fru", "Surprise": "sur", "Fear": "fea", "Disgust": "dis", "Other": "oth"}
_SESSION_PREFIX_RE = re.compile(r"^Ses(\d{2})")


class IemocapError(CorpusError):
    """The IEMOCAP copy is not where or not what data preparation expects."""


@dataclass(frozen=True)
class Label:
    """One consensus line of an EmoEvaluation file."""

    utt: str
    code: str
    source: str  # "file:line", for messages
    votes: tuple[str, ...] = ()  # the external evaluators' categorical labels (codes), one per label given


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
    which tolerates missing blank lines between blocks and any mix of tabs and spaces. The external
    evaluators' categorical lines (``C-E<n>``) become the votes of the label above them (the actors'
    self-evaluations, ``C-F1``/``C-M1``, are not votes of an annotator).
    """
    labels = []
    for number, line in enumerate(read_text_lines(path, notes), start=1):
        stripped = line.strip()
        evaluator = _EVALUATOR_RE.match(stripped)
        if evaluator and labels:
            labels[-1] = replace(labels[-1], votes=labels[-1].votes + _vote_codes(evaluator.group("labels"),
                                                                                   f"{path}:{number}", notes))
            continue
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
    for number, line in enumerate(read_text_lines(path, notes), start=1):
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
class PrepReport(SharedPrepReport):
    """The shared stage-0 report (:class:`serkit.corpora.common.PrepReport`) plus IEMOCAP's sessions and
    dialogs, which the full-release checks and the sentence-file accounting need."""

    sessions: list[int] = field(default_factory=list)
    n_dialogs: int = 0
    #: Session folder name -> {dialog (EmoEvaluation file stem): number of consensus lines in it}.
    dialogs: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Session folder name -> names of the folders in its ``sentences/wav``.
    wav_dialogs: dict[str, list[str]] = field(default_factory=dict)
    session_counts: Counter = field(default_factory=Counter)

    def full_release_text(self) -> str:
        if self.full_release and self.n_dialogs != FULL_RELEASE_DIALOGS:
            return f"yes, {FULL_RELEASE_DIALOGS} dialogs expected"
        return super().full_release_text()

    def add_facts(self) -> None:
        """The summary lines only IEMOCAP has: sessions and dialogs found, utterances per session."""
        self.facts += [f"sessions {self.sessions}, {self.n_dialogs} dialogs",
                       "per session: " + "  ".join(f"{s} {n}" for s, n in sorted(self.session_counts.items()))]


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
    causes.append(NO_STRICT_HINT.rstrip("."))
    raise IemocapError(
        f"IEMOCAP full release expected, but the counts differ from the published ones "
        f"(class map {class_map.name}):\n" + "\n".join(code_diff + class_diff + session_diff)
        + "\nLikely cause:\n" + "\n".join(f"  - {cause}" for cause in causes)
    )


def _vote_codes(labels: str, source: str, notes: Tally) -> tuple[str, ...]:
    """The codes of an evaluator line's ``;``-separated label words; unknown words are noted and not counted."""
    codes = []
    for word in (part.strip() for part in labels.split(";")):
        if word in VOTE_CODES:
            codes.append(VOTE_CODES[word])
        elif word:
            notes.add("unknown evaluator label (not counted as a vote)", f"{source}: {word}")
    return tuple(codes)


def utterance_votes(utterances: Sequence[Utterance], labels: Mapping[str, Label], mapping: ClassMap) -> dict[str, str]:
    """``utt2votes``: each utterance's evaluator votes counted per class of the class map (codes it drops
    are not counted, so an utterance may have none)."""
    return {u.utt_id: format_votes(expected_class_counts(mapping, Counter(labels[u.corpus_id].votes)))
            for u in utterances}


def _collect_labels(session_dirs: list[tuple[int, Path]],
                    report: PrepReport) -> tuple[list[tuple[Path, Label]], set[tuple[str, str]]]:
    """All consensus labels with their Session folder; duplicates and foreign ids are skipped.

    Also returns ``(Session folder name, utterance id)`` of EVERY consensus line, kept or skipped:
    the sentence wavs those lines account for (see :func:`_account_for_sentence_files`).
    """
    seen: set[str] = set()
    labels = []
    named: set[tuple[str, str]] = set()
    for _, session_dir in session_dirs:
        dialogs = report.dialogs.setdefault(session_dir.name, {})
        for path in list_label_files(session_dir, report.skipped):
            report.n_dialogs += 1
            file_labels = parse_emo_evaluation(path, report.skipped, report.notes)
            dialogs[path.stem] = len(file_labels)
            for label in file_labels:
                named.add((session_dir.name, label.utt))
                if label.utt in seen:
                    report.skipped.add("duplicate consensus label (first kept)", f"{label.source}: {label.utt}")
                elif not label.utt.startswith(path.stem + "_"):
                    report.skipped.add("utterance id does not belong to the file's dialog",
                                       f"{label.source}: {label.utt}")
                else:
                    seen.add(label.utt)
                    labels.append((session_dir, label))
    return labels, named


def _account_for_sentence_files(session_dirs: list[tuple[int, Path]], named: set[tuple[str, str]],
                                report: PrepReport) -> None:
    """Count, by reason, every entry of ``sentences/wav`` that no consensus line accounts for.

    A wav at ``SessionN/sentences/wav/<dialog>/<utt>.wav`` is accounted for when a consensus line of
    SessionN's EmoEvaluation files names ``<utt>`` and ``<dialog>`` is that id's dialog (where the
    utterance is looked up): it was used or skipped under that line's own reason. Everything else
    is a skipped file. One listing per session folder and one per dialog folder.
    """
    skipped = report.skipped
    for _, session_dir in session_dirs:
        wav_root = session_dir / "sentences" / "wav"
        if not wav_root.is_dir():
            continue  # its labelled utterances are already counted as "wav missing"
        label_dialogs = report.dialogs.get(session_dir.name, {})
        folders = report.wav_dialogs.setdefault(session_dir.name, [])
        with os.scandir(wav_root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("._"):
                skipped.add("macOS '._' file", entry.path)
                continue
            if not entry.is_dir():
                skipped.add("file in sentences/wav outside a dialog folder", entry.path)
                continue
            folders.append(entry.name)
            with os.scandir(entry.path) as it:
                files = sorted(it, key=lambda e: e.name)
            for item in files:
                stem = item.name[:-4] if item.name.endswith(".wav") else None
                if item.name.startswith("._"):
                    skipped.add("macOS '._' file", item.path)
                elif item.is_dir():
                    skipped.add("folder inside a sentence wav folder", item.path)
                elif stem is None:
                    skipped.add("file in a sentence wav folder that is not a .wav", item.path)
                elif (session_dir.name, stem) in named and stem.rpartition("_")[0] == entry.name:
                    continue  # used, or skipped under its consensus line's reason
                elif (session_dir.name, stem) in named:
                    skipped.add("sentence wav in another dialog's folder (its label looks elsewhere)", item.path)
                elif entry.name not in label_dialogs:
                    skipped.add("sentence wav of a dialog without EmoEvaluation file", item.path)
                else:
                    skipped.add("sentence wav with no label line", item.path)


def _make_utterance(session_dir: Path, label: Label, class_label: str, texts: Mapping[str, str],
                    report: PrepReport) -> Utterance | None:
    """Build one utterance, or count why it is skipped (bad id; wav missing, unreadable, empty, too
    short, truncated, NaN/Inf or all zeros: the shared stage-0 audit)."""
    try:
        turn = parse_utterance_id(label.utt)
    except ValueError as error:
        report.skipped.add("labelled utterance id without a F/M turn", f"{label.source}: {error}")
        return None
    wav = session_dir / "sentences" / "wav" / turn.dialog / f"{label.utt}.wav"
    facts = audit_wav(wav, report.skipped, report.notes, report.audit)
    if facts is None:
        return None
    if f"Session{int(turn.session[3:])}" != session_dir.name:
        report.notes.add("utterance session differs from its Session folder", f"{label.source}: {label.utt}")
    if label.utt not in texts:
        report.notes.add("labelled utterance without transcript line (kept, empty text)",
                         f"{label.source}: {label.utt}")
    elif not texts[label.utt]:
        report.notes.add("labelled utterance with empty transcript text (kept)", f"{label.source}: {label.utt}")
    return Utterance(corpus_id=label.utt, speaker=turn.speaker, wav=wav, code=label.code,
                     text=texts.get(label.utt, ""), gender=turn.gender, session=turn.session,
                     label=class_label, duration=facts.duration)


def _ambiguous_utterance(session_dir: Path, label: Label, texts: Mapping[str, str],
                         report: PrepReport) -> Utterance | None:
    """An utterance without a rater majority, for the ``ambiguous/`` folder; its audit and notes are kept
    out of the report's, which count the labelled data directory (an unusable wav is simply left out)."""
    scratch = replace(report, skipped=Tally(), notes=Tally(), audit=AudioAudit())
    utterance = _make_utterance(session_dir, label, "", texts, scratch)
    if utterance is None:
        report.notes.add("ambiguous utterance left out (id or audio unusable)", f"{label.source}: {label.utt}")
    return utterance


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


def prepare_iemocap(root: str | Path, out_dir: str | Path, class_map: str | Path | ClassMap = "4class",
                    strict: bool | None = None) -> PrepReport:
    """Prepare an IEMOCAP data directory (docs/formats.md) and ``prep_report.txt``; return the report.

    ``class_map``: a shipped map name (``4class``, ``5class``, ``6class``) or a YAML file.
    ``strict``: None checks the dialog count (151) and the published counts only on a full release
    (5 sessions and at least ``FULL_RELEASE_MIN_DIALOGS`` dialogs: a full copy missing a file or
    holding a stray one is damaged, not partial); True checks them always; False never. Nothing is
    written when a check fails, so an earlier good data directory is not half-overwritten.
    Re-running overwrites every file.
    """
    root, out_dir = Path(root).absolute(), Path(out_dir).absolute()  # reports and wav.scp name full paths
    if out_dir.exists() and not out_dir.is_dir():
        raise IemocapError(f"output {out_dir} exists and is not a folder; choose another --out")
    mapping = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map, "iemocap")
    unknown_map_codes = sorted(set(mapping.mapping) - set(IEMOCAP_CODES))
    if unknown_map_codes:
        raise IemocapError(f"class map {mapping.source} maps codes {unknown_map_codes} that IEMOCAP does not use "
                           f"(valid codes: {' '.join(IEMOCAP_CODES)}); fix the spelling in the map")
    report = PrepReport("IEMOCAP", root, out_dir, mapping, LANGUAGE, release_audio=RELEASE_AUDIO)
    session_dirs = find_session_dirs(root, report.skipped)
    report.sessions = [number for number, _ in session_dirs]
    labels, named = _collect_labels(session_dirs, report)

    cache: dict[str, dict[str, str]] = {}
    utterances, ambiguous = [], []
    for session_dir, label in tqdm(labels, desc="IEMOCAP utterances", unit="utt", disable=None):
        report.code_counts[label.code] += 1
        texts = _transcripts(session_dir, label.utt.rpartition("_")[0], cache, report)
        if label.code not in IEMOCAP_CODES:
            report.skipped.add(f"unknown consensus code {label.code!r}", f"{label.source}: {label.utt}")
        class_label = mapping.label(label.code)
        if class_label is None:
            report.excluded_codes[label.code] += 1
            if label.code == NO_MAJORITY_CODE:
                ambiguous.append(_ambiguous_utterance(session_dir, label, texts, report))
            continue
        utterance = _make_utterance(session_dir, label, class_label, texts, report)
        if utterance is not None:
            utterances.append(utterance)
    _note_unlabelled_turns(cache, {label.utt for _, label in labels}, report)
    _account_for_sentence_files(session_dirs, named, report)
    report.session_counts.update(u.session for u in utterances)
    report.add_facts()
    by_id = {label.utt: label for _, label in labels}
    votes = utterance_votes(utterances, by_id, mapping)
    ambiguous_votes = utterance_votes([u for u in ambiguous if u is not None], by_id, mapping)
    ambiguous = [u for u in ambiguous if u is not None and ambiguous_votes[u.utt_id]]
    return finish(report, utterances, looks_full=_looks_full(report), strict=strict,
                  check=lambda: _count_problems(report), extra_files={VOTES_FILE: votes}, ambiguous=ambiguous,
                  ambiguous_files={VOTES_FILE: {u.utt_id: ambiguous_votes[u.utt_id] for u in ambiguous}})


def prepare(corpus_root: str | Path, class_map: str | Path | ClassMap, out_dir: str | Path,
            strict: bool | None = None) -> PrepReport:
    """The corpus-contract entry point (``prepare_corpus --corpus iemocap``): see :func:`prepare_iemocap`."""
    return prepare_iemocap(corpus_root, out_dir, class_map=class_map, strict=strict)


def _looks_full(report: PrepReport) -> bool:
    """A full release: all 5 sessions and enough dialogs (a copy missing a file is damaged, not partial)."""
    all_sessions = tuple(report.sessions) == FULL_RELEASE_SESSIONS
    full = all_sessions and report.n_dialogs >= FULL_RELEASE_MIN_DIALOGS
    if all_sessions and not full:
        logger.warning("all 5 sessions found but only %d dialogs (the full release has %d): treated as a partial "
                       "copy; counts are not checked (strict=True forces the check)",
                       report.n_dialogs, FULL_RELEASE_DIALOGS)
    return full


def _count_problems(report: PrepReport) -> list[str]:
    """The full-release check of dialogs and counts: none, or :class:`IemocapError` with IEMOCAP's own
    explanations (the dialogs that look missing or extra, the likely causes)."""
    problems = []
    if report.n_dialogs != FULL_RELEASE_DIALOGS:
        problems.append(_dialog_count_problem(report))
    try:
        check_full_release(report.code_counts, report.class_counts, report.session_counts, report.class_map,
                           skipped=dict(report.skipped.counts))
    except IemocapError as error:
        problems.append(str(error))
    if problems:
        if len(problems) == 1 and report.n_dialogs != FULL_RELEASE_DIALOGS:
            problems.append(NO_STRICT_HINT)
        # Nothing is written on failure, so the skipped items (the usual explanation) go to the log.
        logger.warning("skipped while reading %s:\n%s", report.root,
                       "\n".join(report.skipped.lines(max_examples=10)) or "  nothing")
        raise IemocapError("\n\n".join(problems))
    return []


def _dialog_count_problem(report: PrepReport, max_listed: int = 20) -> str:
    """Found-vs-expected dialog count, with the dialogs that look missing or extra.

    The release's dialog list is not hard-coded (the parser follows the format), so a dialog looks
    missing when its ``sentences/wav`` folder or transcription exists without an EmoEvaluation file,
    and extra when its EmoEvaluation file has no sentence wav folder or holds no consensus line.
    """
    found = report.n_dialogs
    missing, extra = [], []
    for name, dialogs in sorted(report.dialogs.items()):
        session_dir = report.root / name
        transcripts = session_dir / "dialog" / "transcriptions"
        transcribed = ({p.stem for p in transcripts.glob("*.txt") if not p.name.startswith("._")}
                       if transcripts.is_dir() else set())
        with_wavs = set(report.wav_dialogs.get(name, []))
        for dialog in sorted((with_wavs | transcribed) - set(dialogs)):
            has = [what for what, found_in in (("sentences/wav folder", with_wavs), ("transcription", transcribed))
                   if dialog in found_in]
            missing.append(f"    {name}/dialog/EmoEvaluation/{dialog}.txt (missing; {' and '.join(has)} present)")
        for dialog, n_labels in sorted(dialogs.items()):
            oddities = []
            if dialog not in with_wavs:
                oddities.append("no sentences/wav folder")
            if n_labels == 0:
                oddities.append("no consensus line")
            if oddities:
                extra.append(f"    {name}/dialog/EmoEvaluation/{dialog}.txt ({', '.join(oddities)})")
    incomplete = "is incomplete (EmoEvaluation files missing)"
    has_extra = "has extra files (stray or duplicated .txt files in EmoEvaluation)"
    if missing and extra:
        kind = f"{incomplete} and {has_extra}"
    else:
        kind = incomplete if found < FULL_RELEASE_DIALOGS else has_extra
    why = (f"all 5 sessions and at least {FULL_RELEASE_MIN_DIALOGS} dialogs" if report.full_release
           else "strict=True")
    lines = [f"IEMOCAP full release expected ({why}), but found {found} dialogs "
             f"(SessionN/dialog/EmoEvaluation/<dialog>.txt files), expected {FULL_RELEASE_DIALOGS}: "
             f"the copy {kind}.",
             "  dialogs per session: " + "  ".join(f"{name} {len(dialogs)}"
                                                   for name, dialogs in sorted(report.dialogs.items()))]
    for title, items in (("  looks missing:", missing), ("  looks extra or damaged:", extra)):
        if items:
            lines.append(title)
            lines += items[:max_listed]
            if len(items) > max_listed:
                lines.append(f"    ... and {len(items) - max_listed} more")
    if not (missing or extra):
        lines.append("  (no dialog stands out: compare the EmoEvaluation folders with an intact copy)")
    return "\n".join(lines)
