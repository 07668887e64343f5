"""What every corpus preparation shares: the skip tally, the stage-0 audio audit, the report, the
data-directory writer and the found-vs-expected count check.

A corpus module (``serkit/corpora/<name>.py``) only knows its corpus: where the files are, what the
names and label codes mean, and the counts of the full release. It turns each labelled recording
into an :class:`Utterance`, and hands the list to :func:`finish`, which audits nothing itself but
checks counts, writes the data directory (docs/formats.md), the report, and validates the result.
"""
from __future__ import annotations

import logging
import math
import shutil
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import soundfile

from serkit.data import inventory
from serkit.atomic import atomic_write_text
from serkit.data.audio import AudioInfo
from serkit.corpora import NO_STRICT_HINT, ClassMap, CorpusError
from serkit.labels.ctc_targets import STAGE1_FILES
from serkit.data.datadir import AMBIGUOUS_DIR, invert_utt2spk, validate_data_dir, write_list, write_map
from serkit.data.votes import FILE as VOTES_FILE, format_votes

logger = logging.getLogger(__name__)

#: Shortest wav kept, in seconds. The wav2vec 2.0 CNN needs 400 samples (25 ms at 16 kHz) to emit
#: one frame; a shorter utterance makes a batch with zero frames and crashes training hours in.
#: 50 ms gives two frames' margin and still holds after 8 kHz audio is resampled.
MIN_WAV_SECONDS = 0.05
#: The rate the models consume; other rates are kept and noted (loaders resample).
SAMPLE_RATE = 16000
#: Optional stage-0 files; one left by an earlier run that this run does not write is deleted.
OPTIONAL_FILES = ("utt2gender", "utt2session", "utt2sentence", "utt2split", "utt2sampa", "utt2votes")
#: A take whose peak is below this (dBFS) is noted as very quiet (kept).
QUIET_PEAK_DB = -30.0
#: A 20 ms frame whose RMS is below this (dBFS) counts as silence in the audit summary.
SILENCE_DB = -50.0
#: Files more than this fraction silent are noted (kept).
MOSTLY_SILENT = 0.8
#: The altered-copy checks need this many kept files: a few files of one length prove nothing.
ALTERED_MIN_FILES = 8
#: Durations within this many seconds of each other count as "one duration" (cropped or padded copies).
ONE_DURATION_S = 0.001
#: Share of clipped files above which a copy looks normalised or amplified to clipping.
MOSTLY_CLIPPED = 0.5
#: A file "starts at speech level" (no leading silence) when its first 20 ms frame is within this many
#: dB of its loudest frame. Recordings start in room noise 40-60 dB below the speech; copies trimmed with
#: the usual ``top_db`` of 20-30 start within it.
SPEECH_START_DB = 30.0
#: Share of files starting at speech level above which a copy looks trimmed.
MOSTLY_TRIMMED = 0.8
#: The data-directory file listing stage 0's warnings (empty classes, missing folders, altered copy);
#: stage 2 copies them into protocol.json, so RESULTS.md repeats them.
WARNINGS_FILE = "prep_warnings.txt"
#: What stage 0 found and wrote, in full (:meth:`PrepReport.to_text`).
REPORT_FILE = "prep_report.txt"


@dataclass(frozen=True)
class ReleaseAudio:
    """What a corpus release's files are (each corpus module states its own): the sample rates and
    channel counts the release has. The audit flags a copy with any other as altered (resampled)."""

    rates: tuple[int, ...]
    channels: tuple[int, ...] = (1,)


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


# ------------------------------------------------------------------------------ audio audit

@dataclass
class AudioAudit:
    """Per-corpus summary of every kept file: rates, channels, durations, peaks, silence."""

    rates: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    peaks_db: list[float] = field(default_factory=list)
    silent_fractions: list[float] = field(default_factory=list)
    speech_starts: list[bool] = field(default_factory=list)  # first 20 ms at speech level (no leading silence)

    def lines(self) -> list[str]:
        if not self.durations:
            return ["  audio audit: no file kept"]
        d = np.asarray(self.durations)
        p = np.asarray(self.peaks_db)
        s = np.asarray(self.silent_fractions)
        return [
            "  audio audit (kept files): sample rates " + "  ".join(f"{r} Hz: {n}" for r, n in sorted(self.rates.items()))
            + "; channels " + "  ".join(f"{c}: {n}" for c, n in sorted(self.channels.items())),
            f"    duration s: total {d.sum():.1f}  min {d.min():.3f}  median {np.median(d):.3f}  max {d.max():.3f}",
            f"    peak dBFS: min {p.min():.1f}  median {np.median(p):.1f}  max {p.max():.1f}; "
            f"below {QUIET_PEAK_DB:.0f} dBFS: {int((p < QUIET_PEAK_DB).sum())}; clipped (>= -0.01): "
            f"{int((p >= -0.01).sum())}",
            f"    silence (20 ms frames below {SILENCE_DB:.0f} dBFS): mean {s.mean():.0%}; "
            f"files more than {MOSTLY_SILENT:.0%} silent: {int((s > MOSTLY_SILENT).sum())}",
        ]


def altered_copy_lines(audit: AudioAudit, release: ReleaseAudio | None, corpus: str) -> list[str]:
    """Why the kept files look like an altered copy of ``corpus`` (empty: they do not).

    Copies passed around the web are often cropped or padded to one length, resampled, trimmed or
    normalised to clipping; figures on them are not comparable with anyone's, and the audit summary
    alone (``min 2.000 median 2.000 max 2.000``) said nothing. Each line names what was found."""
    n = len(audit.durations)
    lines = []
    if release is not None:
        odd = {rate: count for rate, count in sorted(audit.rates.items()) if rate not in release.rates}
        if odd:
            lines.append(f"sample rate {', '.join(f'{r} Hz ({c} files)' for r, c in odd.items())}: the {corpus} release "
                         f"has {' / '.join(f'{r} Hz' for r in release.rates)} only (a resampled copy?)")
        odd = {ch: count for ch, count in sorted(audit.channels.items()) if ch not in release.channels}
        if odd:
            lines.append(f"channel count {', '.join(f'{ch} ({c} files)' for ch, c in odd.items())}: the {corpus} "
                         f"release has {' / '.join(map(str, release.channels))} (a converted copy?)")
    if n >= ALTERED_MIN_FILES:
        d = np.asarray(audit.durations)
        if d.max() - d.min() < ONE_DURATION_S:
            lines.append(f"every one of the {n} kept files lasts {d[0]:.3f} s: cropped or padded to one length "
                         "(the release's recordings differ in length)")
        clipped = int((np.asarray(audit.peaks_db) >= -0.01).sum())
        if clipped > MOSTLY_CLIPPED * n:
            lines.append(f"{clipped} of {n} files clipped (peak at full scale): normalised or amplified to clipping")
        starts = sum(audit.speech_starts)
        if starts > MOSTLY_TRIMMED * n:
            lines.append(f"{starts} of {n} files start at speech level (first 20 ms within {SPEECH_START_DB:.0f} dB "
                         "of the loudest frame): trimmed to no leading silence")
    return [f"ALTERED COPY? {line}; figures on this copy are not comparable with published ones" for line in lines]


def declared_wav_frames(path: Path) -> tuple[int, int] | None:
    """``(frames the RIFF header declares, frames the file holds)`` for a PCM wav, else None.

    libsndfile quietly shortens a wav whose ``data`` chunk runs past the end of the file, so a cut
    copy reads as a short recording; only the header's own size field tells it was cut. This
    walks the RIFF chunks (extra chunks such as ``LIST`` before ``data`` are skipped).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = path.stat().st_size
            block_align = None
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return None
                name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"fmt ":
                    fmt = handle.read(length + (length & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif name == b"data":
                    if not block_align or length in (0, 0xFFFFFFFF):
                        return None  # streaming placeholders: no declared size to compare
                    available = size - handle.tell()
                    return length // block_align, max(available, 0) // block_align
                else:
                    handle.seek(length + (length & 1), 1)
    except OSError:
        return None


def audit_wav(path: Path, skipped: Tally, notes: Tally, audit: AudioAudit,
              min_seconds: float = MIN_WAV_SECONDS) -> AudioInfo | None:
    """Header + one read of ``path``: the facts of a usable file, or None after counting why not.

    Skips (counted in ``skipped`` with the path): missing, unreadable, empty, shorter than
    ``min_seconds``, data shorter than the header says (truncated), NaN/Inf samples, all zeros.
    Notes (kept): not 16 kHz, not mono, very quiet, mostly silent.
    """
    if not path.is_file():
        skipped.add("wav missing", str(path))
        return None
    if path.stat().st_size == 0:
        skipped.add("wav empty (0 bytes)", str(path))
        return None
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as error:
        skipped.add("wav unreadable", f"{path}: not a readable audio file ({error})")
        return None
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if frames <= 0:
        skipped.add("wav empty (no samples)", str(path))
        return None
    if frames / rate < min_seconds:
        skipped.add(f"wav shorter than {min_seconds} s (too short for wav2vec 2.0)",
                    f"{path}: {frames} samples at {rate} Hz ({frames / rate:.4f} s)")
        return None
    declared = declared_wav_frames(path)
    if declared is not None and declared[1] < declared[0]:
        skipped.add("wav truncated (data shorter than its header says)",
                    f"{path}: header {declared[0]} frames, data {declared[1]}")
        return None
    try:
        data, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        skipped.add("wav unreadable", f"{path}: could not decode ({error})")
        return None
    if data.shape[0] < frames:
        skipped.add("wav truncated (data shorter than its header says)", f"{path}: header {frames} frames, "
                    f"read {data.shape[0]}")
        return None
    if not np.isfinite(data).all():
        skipped.add("wav holds NaN or Inf samples", str(path))
        return None
    peak = float(np.abs(data).max())
    if peak == 0.0:
        skipped.add("wav all zeros (digital silence)", str(path))
        return None
    _note_and_summarise(path, data, rate, channels, peak, notes, audit)
    return AudioInfo(sample_rate=rate, channels=channels, frames=frames)


def _note_and_summarise(path: Path, data: np.ndarray, rate: int, channels: int, peak: float,
                        notes: Tally, audit: AudioAudit) -> None:
    if rate != SAMPLE_RATE:
        notes.add(f"wav not {SAMPLE_RATE} Hz (kept; loaders resample)", f"{path}: {rate} Hz")
    if channels != 1:
        notes.add("wav not mono (kept; loaders downmix)", f"{path}: {channels} channels")
    peak_db = 20 * math.log10(peak)
    if peak_db < QUIET_PEAK_DB:
        notes.add(f"very quiet take (peak below {QUIET_PEAK_DB:.0f} dBFS, kept)", f"{path}: peak {peak_db:.1f} dBFS")
    mono = data.mean(axis=1)
    hop = max(1, rate // 50)
    n = len(mono) // hop
    if n:
        rms = np.sqrt(np.mean(mono[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-20)
        silent = float(np.mean(20 * np.log10(rms) < SILENCE_DB))
    else:
        silent = 0.0
    audit.speech_starts.append(bool(n) and float(20 * np.log10(rms[0] / rms.max())) > -SPEECH_START_DB)
    if silent > MOSTLY_SILENT:
        notes.add(f"mostly silent (over {MOSTLY_SILENT:.0%} of 20 ms frames below {SILENCE_DB:.0f} dBFS, kept)",
                  f"{path}: {silent:.0%}")
    audit.rates[rate] += 1
    audit.channels[channels] += 1
    audit.durations.append(len(mono) / rate)
    audit.peaks_db.append(peak_db)
    audit.silent_fractions.append(silent)


# ------------------------------------------------------------------------- text files

def read_text_lines(path: Path, notes: Tally, fallbacks: Sequence[str] = ("latin-1",)) -> list[str]:
    """Lines of a corpus text file in whatever encoding it came, with any line ends.

    Tried in order: a UTF-16 byte-order mark; UTF-8 (with or without BOM); UTF-16 without BOM when a
    quarter of the bytes are NUL; then ``fallbacks`` (Latin-1 never fails, so it is the last resort
    for Western text; Mandarin passes GB18030 instead). Any read other than UTF-8 is noted.
    """
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return [line.rstrip() for line in raw.decode("utf-16").splitlines()]
    candidates = ["utf-8-sig"]
    if raw.count(b"\x00") > len(raw) // 4:
        candidates.append("utf-16-le" if raw[1:2] == b"\x00" else "utf-16-be")
    for encoding in [*candidates, *fallbacks]:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding != "utf-8-sig":
            notes.add(f"text file not UTF-8, read as {encoding}", str(path))
        return [line.rstrip() for line in text.splitlines()]
    raise CorpusError(f"{path}: text file in none of utf-8, utf-16, {', '.join(fallbacks)}; convert it to UTF-8")


# ----------------------------------------------------------------------------- utterances

@dataclass
class Utterance:
    """One labelled recording of a corpus and everything the data directory records about it.

    ``None`` for an optional field means the corpus does not know it; the matching file is then
    not written (docs/formats.md: what a corpus without sessions, gender or text gets).
    """

    corpus_id: str  # the corpus's own name for it (file stem)
    speaker: str
    wav: Path
    code: str  # the corpus's own emotion code
    text: str = ""
    gender: str | None = None  # "f" / "m"
    session: str | None = None
    sentence: str | None = None  # sentence/text id, for sentence-overlap reports
    split: str | None = None  # the release's predefined partition
    sampa: str | None = None  # phones from the corpus's own label files (Emo-DB lablaut)
    label: str = ""  # class after the class map
    duration: float = 0.0

    @property
    def utt_id(self) -> str:
        """Kaldi rule: the utterance id starts with the speaker id."""
        return f"{self.speaker}-{self.corpus_id}"


@dataclass
class PrepReport:
    """What stage 0 found and wrote; ``to_text()`` is the content of prep_report.txt."""

    corpus: str
    root: Path
    out_dir: Path
    class_map: ClassMap
    language: str
    full_release: bool = False
    count_check: str = "not run"
    code_counts: Counter = field(default_factory=Counter)
    excluded_codes: Counter = field(default_factory=Counter)
    class_counts: Counter = field(default_factory=Counter)
    speaker_counts: Counter = field(default_factory=Counter)
    split_counts: Counter = field(default_factory=Counter)
    skipped: Tally = field(default_factory=Tally)
    notes: Tally = field(default_factory=Tally)
    audit: AudioAudit = field(default_factory=AudioAudit)
    facts: list[str] = field(default_factory=list)  # corpus-specific summary lines
    files_written: list[str] = field(default_factory=list)
    release_audio: ReleaseAudio | None = None  # the corpus module's statement of its release's rates/channels
    missing: Tally = field(default_factory=Tally)  # speaker or class folders the layout has and the copy lacks
    warnings: list[str] = field(default_factory=list)  # what check_contract found (also in prep_warnings.txt)

    @property
    def n_utterances(self) -> int:
        return sum(self.class_counts.values())

    def full_release_text(self) -> str:
        """``yes`` or ``no`` in the summary's first line; a corpus may add what a full release should have."""
        return "yes" if self.full_release else "no"

    def summary_lines(self) -> list[str]:
        """The count tables (no examples): what the CLI logs."""
        classes = self.class_map.classes
        lines = [
            f"{self.corpus} root {self.root}: full release: {self.full_release_text()}, "
            f"count check: {self.count_check}, language: {self.language}",
            *(f"  WARNING: {line}" for line in self.warnings),
            *(f"  {fact}" for fact in self.facts),
            f"class map {self.class_map.name}: {' '.join(classes)}; {self.n_utterances} utterances written "
            f"to {self.out_dir}",
            "  per class:   " + "  ".join(f"{c} {self.class_counts[c]}" for c in classes),
            "  per speaker: " + "  ".join(f"{s} {n}" for s, n in sorted(self.speaker_counts.items())),
        ]
        if self.split_counts:
            lines.append("  per split:   " + "  ".join(f"{s} {n}" for s, n in sorted(self.split_counts.items())))
        lines += [
            "  emotion codes found: " + "  ".join(f"{c} {n}" for c, n in sorted(self.code_counts.items())),
            "  excluded by the class map: " + ("  ".join(f"{c} {n}" for c, n in sorted(self.excluded_codes.items()))
                                               or "none"),
            "  skipped: " + ("  ".join(f"{r} {n}" for r, n in sorted(self.skipped.counts.items())) or "none"),
            "  kept, noted: " + ("  ".join(f"{r} {n}" for r, n in sorted(self.notes.counts.items())) or "none"),
            *self.audit.lines(),
        ]
        if self.files_written:
            lines.append("  files: " + " ".join(self.files_written))
        return lines

    def to_text(self) -> str:
        """Full report: the summary, then every skipped or noted item with its file."""
        lines = [f"{self.corpus} data preparation report (serkit stage 0)", ""]
        lines += self.summary_lines()
        lines += ["", "Skipped (not in the data directory), by reason, with every item:"]
        lines += self.skipped.lines() or ["  none"]
        lines += ["", "Kept or ignored but worth knowing, by reason, with every item:"]
        lines += self.notes.lines() or ["  none"]
        return "\n".join(lines) + "\n"


def check_codes(class_map: ClassMap, codes: Iterable[str], corpus: str) -> None:
    """A class map that names a code the corpus does not use is a typo: say which, and the valid codes."""
    codes = tuple(codes)
    unknown = sorted(set(class_map.mapping) - set(codes))
    if unknown:
        raise CorpusError(f"class map {class_map.source} maps codes {unknown} that {corpus} does not use "
                          f"(valid codes: {' '.join(codes)}); fix the spelling in the map")


def keep(utt: Utterance, report: PrepReport, min_seconds: float = MIN_WAV_SECONDS) -> Utterance | None:
    """Count the code, apply the class map, audit the wav: the utterance to write, or None (counted)."""
    report.code_counts[utt.code] += 1
    label = report.class_map.label(utt.code)
    if label is None:
        report.excluded_codes[utt.code] += 1
        return None
    facts = audit_wav(utt.wav, report.skipped, report.notes, report.audit, min_seconds)
    if facts is None:
        return None
    utt.label, utt.duration = label, facts.duration
    return utt


def write_data_dir(out_dir: Path, utterances: Sequence[Utterance], class_map: ClassMap, language: str,
                   raw_codes: bool = True, labelled: bool = True) -> list[str]:
    """Write the data directory (docs/formats.md) and return the names of the files written.

    ``labelled=False`` writes the ambiguous utterances' folder (:data:`AMBIGUOUS_DIR`): the same
    files without ``utt2emo``, since those utterances have no class.

    Required files always; each optional file only when every utterance knows its value (a file
    covering some utterances would break the one-key-set rule). Files of an earlier run that this
    run does not write, and stage-1 files made stale by new labels, are deleted (logged).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    utt2spk = {u.utt_id: u.speaker for u in utterances}
    files: dict[str, Mapping[str, object]] = {
        "wav.scp": {u.utt_id: str(u.wav) for u in utterances},  # absolute: the corpus stays where it is
        "text": {u.utt_id: u.text for u in utterances},
        "utt2spk": utt2spk,
        "spk2utt": invert_utt2spk(utt2spk),
        "utt2dur": {u.utt_id: f"{u.duration:.3f}" for u in utterances},
    }
    if labelled:
        files["utt2emo"] = {u.utt_id: u.label for u in utterances}
    if raw_codes:
        files["utt2raw_emo"] = {u.utt_id: u.code for u in utterances}
    for name, attribute in (("utt2gender", "gender"), ("utt2session", "session"), ("utt2sentence", "sentence"),
                            ("utt2split", "split"), ("utt2sampa", "sampa")):
        values = {u.utt_id: getattr(u, attribute) for u in utterances}
        if all(value is not None for value in values.values()):
            files[name] = values
    for name, mapping in files.items():
        write_map(out_dir / name, mapping)
    inventory.write_classes(out_dir / inventory.CLASSES_FILE, class_map.classes)
    write_list(out_dir / "language", [language])
    for name in (*STAGE1_FILES, *(n for n in OPTIONAL_FILES if n not in files), *([] if labelled else ["utt2emo"])):
        if (out_dir / name).exists():
            (out_dir / name).unlink()
            logger.warning("removed %s (from an earlier run; %s)", out_dir / name,
                           "re-run stage 1" if name in STAGE1_FILES else "this run does not know its values")
    return [*files, inventory.CLASSES_FILE, "language"]


def count_differences(what: str, found: Mapping[str, int], expected: Mapping[str, int]) -> list[str]:
    """``  <what> <key>: found N, expected M`` for every key whose counts differ."""
    keys = sorted(set(found) | set(expected))
    return [f"  {what} {key}: found {found.get(key, 0)}, expected {expected.get(key, 0)}"
            for key in keys if found.get(key, 0) != expected.get(key, 0)]


def fail_count_check(report: PrepReport, problems: list[str], extra: Sequence[str] = ()) -> None:
    """Raise the loud full-release error: found vs expected, what was skipped, how to override."""
    skipped = [f"  {reason}: {n}" for reason, n in sorted(report.skipped.counts.items())]
    logger.warning("skipped while reading %s:\n%s", report.root, "\n".join(report.skipped.lines(10)) or "  nothing")
    raise CorpusError(
        f"{report.corpus} full release expected at {report.root}, but the counts differ from the published ones "
        f"(a damaged or incomplete copy, or a different release):\n" + "\n".join(problems)
        + ("\n" + "\n".join(extra) if extra else "")
        + ("\nskipped while reading:\n" + "\n".join(skipped) if skipped else "")
        + "\n" + NO_STRICT_HINT)


def decide_full_release(report: PrepReport, looks_full: bool, strict: bool | None,
                        check: Callable[[], list[str]]) -> None:
    """Run ``check`` (found-vs-expected lines) when the copy looks full (or ``strict``), fail loudly on any."""
    report.full_release = looks_full
    run = looks_full if strict is None else strict
    if not run:
        report.count_check = "not run (partial copy)" if strict is None else "not run (strict=False)"
        return
    problems = check()
    if problems:
        fail_count_check(report, problems)
    report.count_check = "passed"


def check_contract(report: PrepReport, strict: bool | None) -> list[str]:
    """The corpus contract's loud part, after the count check: a class of the map with no utterance
    fails under ``strict`` and is a warning otherwise; missing speaker/class folders are named; an
    altered copy is flagged. The lines go to the log, the report's summary and ``prep_warnings.txt``.

    Without this a missing class folder gave exit 0 and a class of 0 utterances, and training went
    on with a softmax output that never sees an example."""
    empty = [c for c in report.class_map.classes if report.class_counts[c] == 0]
    lines = [f"{kind} missing: {path}" for kind, paths in sorted(report.missing.examples.items()) for path in paths]
    if empty:
        codes = {c: sorted(code for code, label in report.class_map.mapping.items() if label == c) for c in empty}
        found = "; ".join(f"{c} (codes {' '.join(codes[c])}: {sum(report.code_counts[k] for k in codes[c])} "
                          "found)" for c in empty)
        message = (f"class(es) of class map {report.class_map.name} with 0 utterances: {found}")
        if strict:
            raise CorpusError(f"{report.corpus} at {report.root}: {message}.\n" + "\n".join(lines)
                              + ("\n" if lines else "") + "Give a copy that holds every class, or a class map "
                              "without the empty one(s) (./run.sh --class_map path/to/map.yaml), or "
                              + NO_STRICT_HINT[0].lower() + NO_STRICT_HINT[1:])
        lines.append(message + " (training would keep an output that never sees an example)")
    lines += altered_copy_lines(report.audit, report.release_audio, report.corpus)
    for line in lines:
        logger.warning("%s: %s", report.corpus, line)
    report.warnings = lines
    return lines


def write_warnings(out_dir: Path, warnings: Sequence[str]) -> None:
    """``prep_warnings.txt``: one warning a line, or no file (a stale one is removed)."""
    path = out_dir / WARNINGS_FILE
    if warnings:
        write_list(path, list(warnings))
    elif path.exists():
        path.unlink()


def finish(report: PrepReport, utterances: list[Utterance], *, looks_full: bool, strict: bool | None,
           check: Callable[[], list[str]], raw_codes: bool = True,
           extra_files: Mapping[str, Mapping[str, str]] | None = None, ambiguous: Sequence[Utterance] = (),
           ambiguous_files: Mapping[str, Mapping[str, str]] | None = None) -> PrepReport:
    """Tally, check the counts and the contract (nothing is written when they fail), write, report, validate.

    ``extra_files`` are utterance-keyed files only some corpora can write (e.g. ``utt2votes`` from
    rater labels); they are written with the data directory and listed in the report. ``ambiguous``
    utterances (no rater majority, no class) and their ``ambiguous_files`` (their ``utt2votes``) go to
    the :data:`AMBIGUOUS_DIR` sub-folder, outside the counts and checks of the labelled ones.
    """
    for u in utterances:
        report.class_counts[u.label] += 1
        report.speaker_counts[u.speaker] += 1
        if u.split is not None:
            report.split_counts[u.split] += 1
    decide_full_release(report, looks_full, strict, check)
    if not utterances:
        raise CorpusError(f"no utterance of {report.root} survived preparation with class map "
                          f"{report.class_map.name}:\n" + "\n".join(report.summary_lines()))
    check_contract(report, strict)
    report.files_written = write_data_dir(report.out_dir, utterances, report.class_map, report.language, raw_codes)
    for name, mapping in (extra_files or {}).items():
        write_map(report.out_dir / name, mapping)
        report.files_written.append(name)
    write_ambiguous(report, ambiguous, ambiguous_files or {})
    write_warnings(report.out_dir, report.warnings)
    atomic_write_text(report.out_dir / REPORT_FILE, report.to_text())
    validate_data_dir(report.out_dir, complete=True)
    return report


def write_ambiguous(report: PrepReport, utterances: Sequence[Utterance], files: Mapping[str, Mapping[str, str]]) -> None:
    """The :data:`AMBIGUOUS_DIR` folder of ``utterances`` (none: an earlier run's folder is removed)."""
    folder = report.out_dir / AMBIGUOUS_DIR
    if not utterances:
        if folder.is_dir():
            shutil.rmtree(folder)
            logger.warning("removed %s (from an earlier run; this run has no ambiguous utterance)", folder)
        return
    write_data_dir(folder, utterances, report.class_map, report.language, labelled=False)
    for name, mapping in files.items():
        write_map(folder / name, mapping)
    report.files_written.append(AMBIGUOUS_DIR)
    report.facts.append(f"{len(utterances)} ambiguous utterances (no rater majority) written to {AMBIGUOUS_DIR}/: "
                        "training only, with use_ambiguous: True")


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise CorpusError(f"output {out_dir} exists and is not a folder; choose another --out")


def require_root(root: Path, corpus: str, layout: str) -> None:
    if not root.is_dir():
        raise CorpusError(f"{corpus} root {root} does not exist or is not a folder.\n{layout}")


def list_files(folder: Path, skipped: Tally, suffix: str = ".wav") -> list[Path]:
    """Files of ``folder`` with ``suffix``; macOS ``._`` twins, other files and sub-folders are counted."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("._"):
            skipped.add("macOS '._' file", str(entry))
        elif entry.is_dir():
            skipped.add("unexpected sub-folder", str(entry))
        elif entry.suffix.lower() != suffix:
            skipped.add(f"file that is not a {suffix}", str(entry))
        else:
            found.append(entry)
    return found


def expected_class_counts(class_map: ClassMap, code_counts: Mapping[str, int]) -> dict[str, int]:
    """Per-class counts that per-code counts give under ``class_map`` (excluded codes dropped)."""
    classes = {label: 0 for label in class_map.classes}
    for code, count in code_counts.items():
        label = class_map.label(code)
        if label is not None:
            classes[label] += count
    return classes


def rater_votes(path: Path, read: Callable[[Path, PrepReport], Mapping[str, Mapping[str, int]]],
                utterances: Sequence[Utterance], class_map: ClassMap, report: PrepReport) -> dict[str, dict[str, str]]:
    """``finish``'s ``extra_files`` for a corpus's rater file: ``{"utt2votes": ...}``, or nothing when absent.

    ``read`` returns each corpus id's vote count per corpus code. Votes are counted per class of
    ``class_map`` like the labels (votes for codes it drops are not counted); an utterance the file
    has no votes for gets an empty value (noted), so the votes target sees it unvoted. A copy
    without the file is noted and prepared without ``utt2votes``: the labels do not need it."""
    if not path.is_file():
        report.notes.add("rater file missing (no utt2votes written; the votes target needs it)", str(path))
        return {}
    votes, written = read(path, report), {}
    for u in utterances:
        if u.corpus_id not in votes:
            report.notes.add(f"no votes in {path.name} (empty utt2votes value)", u.corpus_id)
        written[u.utt_id] = format_votes(expected_class_counts(class_map, votes.get(u.corpus_id, {})))
    return {VOTES_FILE: written}


def listed(title: str, items: Sequence[str], limit: int = 20) -> list[str]:
    """``title`` and up to ``limit`` indented items (for found-vs-expected messages)."""
    if not items:
        return []
    more = [f"    ... and {len(items) - limit} more"] if len(items) > limit else []
    return [title, *(f"    {item}" for item in items[:limit]), *more]
