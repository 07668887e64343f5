"""Emo-DB, the Berlin Database of Emotional Speech (stage 0): ``wav/03a01Fa.wav`` -> data directory.

Facts: 535 files at 16 kHz mono, in ``wav/`` (some copies: ``wav_corpus/``). The name is the
label: characters 0-1 speaker (male 03 10 11 12 15, female 08 09 13 14 16), 2-4 text code (ten
fixed German sentences a01 a02 a04 a05 a07 b01 b02 b03 b09 b10), 5 emotion (German initials:
W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral), 6 version.
Per emotion: W 127, L 81, E 46, A 69, F 71, N 79, T 62.

Phones come from the release's own phonetic label files ``lablaut/<name>xx.lablaut`` (some
copies also hold a ``<name>.lablaut`` twin; the ``xx`` file wins and the twin is noted): Latin-1
xlabel files whose header ends with a ``#`` line, then one ``<time> <colour> <label>`` line per
SAMPA phone. They are copied verbatim into ``utt2sampa`` (stage 1 maps them to the six phone
classes, docs/emophone.md); German text never goes through the English G2P. Without a label
file an utterance gets an empty ``utt2sampa`` value (emotion-only, counted); without a
``lablaut/`` folder no ``utt2sampa`` is written and stage 1 trains emotion-only, saying so.

Speaker = the two-digit speaker code; no sessions; ``utt2sentence`` = the text code.
A copy with all 10 speakers is the full release; its counts must match, else preparation stops.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from serkit.corpora import ClassMap, CorpusError, load_class_map
from serkit.corpora.common import (PrepReport, ReleaseAudio, Tally, Utterance, check_codes, check_out_dir,
                                   count_differences, expected_class_counts, finish, keep, list_files, require_root)

CORPUS = "Emo-DB"
LANGUAGE = "de"
#: Phones come from the release's own label files (lablaut/ -> utt2sampa), stage 1's German source.
PHONE_LABELS = True
#: Emo-DB release: 16 kHz mono (downsampled from 48 kHz by its authors). Other rates/channels: an altered copy.
RELEASE_AUDIO = ReleaseAudio(rates=(16000,), channels=(1,))
EMOTION_CODES = ("W", "L", "E", "A", "F", "T", "N")
SPEAKER_GENDER = {"03": "m", "10": "m", "11": "m", "12": "m", "15": "m",
                  "08": "f", "09": "f", "13": "f", "14": "f", "16": "f"}
SENTENCES = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
FULL_RELEASE_FILES = 535
FULL_RELEASE_CODE_COUNTS = {"W": 127, "L": 81, "E": 46, "A": 69, "F": 71, "T": 62, "N": 79}
WAV_FOLDERS = ("wav", "wav_corpus")
LAYOUT = """Expected layout (ROOT is the Emo-DB folder):
  ROOT/wav/03a01Fa.wav ...            (or ROOT/wav_corpus/)
  ROOT/lablaut/03a01Faxx.lablaut ...  (optional: SAMPA phone labels for stage 1)"""

_NAME_RE = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])$")
_LABLAUT_RE = re.compile(r"^(\d{2}[ab]\d{2}[A-Z][a-z])(xx)?$")


def parse_lablaut(path: Path) -> list[str]:
    """SAMPA labels of one lablaut file, in time order (Latin-1; header up to the ``#`` line).

    A data line is ``<time> <colour> <label>``; lines that are not (blank, odd) are ignored. A file
    without a ``#`` line is read as data lines only.
    """
    lines = path.read_bytes().decode("latin-1").splitlines()
    if "#" in (line.strip() for line in lines):
        lines = lines[[line.strip() for line in lines].index("#") + 1:]
    labels = []
    for line in lines:
        fields = line.split(None, 2)
        if len(fields) == 3 and re.fullmatch(r"-?\d+(\.\d*)?", fields[0]):
            labels.append(fields[2].strip())
    return labels


def find_lablaut(root: Path, skipped: Tally, notes: Tally) -> dict[str, Path] | None:
    """Utterance stem -> its lablaut file (``xx`` name preferred); None when there is no folder."""
    folder = root / "lablaut"
    if not folder.is_dir():
        return None
    files: dict[str, Path] = {}
    for path in list_files(folder, skipped, suffix=".lablaut"):
        match = _LABLAUT_RE.match(path.stem)
        if not match:
            skipped.add("lablaut file name is not <utterance>[xx].lablaut", str(path))
            continue
        stem, regular = match.group(1), bool(match.group(2))
        if stem in files:
            kept, dropped = (path, files[stem]) if regular else (files[stem], path)
            notes.add("two lablaut files for one utterance (the 'xx' one used)", f"{kept} (not {dropped})")
            files[stem] = kept
        else:
            files[stem] = path
    return files


def _wav_folder(root: Path) -> Path:
    for name in WAV_FOLDERS:
        if (root / name).is_dir():
            return root / name
    hint = f"\n{root} is the wav folder itself: use --root {root.parent}" if root.name in WAV_FOLDERS else ""
    raise CorpusError(f"no wav/ or wav_corpus/ folder under {root}: not an Emo-DB root.{hint}\n{LAYOUT}")


def _parse(path: Path, lablaut: dict[str, Path] | None, report: PrepReport) -> Utterance | None:
    match = _NAME_RE.match(path.stem)
    if not match:
        report.skipped.add("file name is not <speaker 2><text 3><emotion 1><version 1>.wav", str(path))
        return None
    speaker, text, emotion, _ = match.groups()
    if speaker not in SPEAKER_GENDER:
        report.skipped.add(f"unknown speaker code {speaker!r}", str(path))
    elif text not in SENTENCES:
        report.skipped.add(f"unknown text code {text!r}", str(path))
    elif emotion not in EMOTION_CODES:
        report.skipped.add(f"unknown emotion code {emotion!r}", str(path))
    else:
        sampa = None
        if lablaut is not None:
            label_file = lablaut.get(path.stem)
            sampa = " ".join(parse_lablaut(label_file)) if label_file else ""
            if not label_file:
                report.notes.add("no lablaut file (empty utt2sampa: emotion-only in stage 1)", str(path))
        return Utterance(corpus_id=path.stem, speaker=speaker, wav=path, code=emotion, text=SENTENCES[text],
                         gender=SPEAKER_GENDER[speaker], sentence=text, sampa=sampa)
    return None


def prepare(corpus_root: str | Path, class_map: str | Path | ClassMap, out_dir: str | Path,
            strict: bool | None = None) -> PrepReport:
    """Prepare an Emo-DB data directory (docs/formats.md) and ``prep_report.txt``."""
    root, out_dir = Path(corpus_root).absolute(), Path(out_dir).absolute()
    check_out_dir(out_dir)
    mapping = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map, "emodb")
    check_codes(mapping, EMOTION_CODES, CORPUS)
    require_root(root, CORPUS, LAYOUT)
    report = PrepReport(CORPUS, root, out_dir, mapping, LANGUAGE, release_audio=RELEASE_AUDIO)
    wav_folder = _wav_folder(root)
    lablaut = find_lablaut(root, report.skipped, report.notes)
    if lablaut is None:
        report.notes.add("no lablaut/ folder (no utt2sampa: stage 1 trains emotion-only)", str(root / "lablaut"))
    speakers, utterances, n_files = Counter(), [], 0
    for path in list_files(wav_folder, report.skipped):
        utt = _parse(path, lablaut, report)
        if utt is None:
            continue
        speakers[utt.speaker] += 1
        n_files += 1
        kept = keep(utt, report)
        if kept is not None:
            utterances.append(kept)
    if lablaut is not None:
        stems = {p.stem for p in wav_folder.glob("*.wav")}
        for stem, path in sorted(lablaut.items()):
            if stem not in stems:
                report.notes.add("lablaut file without its wav", str(path))
    report.facts.append(f"speakers found: {len(speakers)} (full release 10); files found: {n_files} "
                        f"(full release {FULL_RELEASE_FILES}); wav folder: {wav_folder.name}/")

    def check() -> list[str]:
        problems = (count_differences("emotion code", report.code_counts, FULL_RELEASE_CODE_COUNTS)
                    + count_differences("class (written)", report.class_counts,
                                        expected_class_counts(mapping, FULL_RELEASE_CODE_COUNTS)))
        if problems:  # where to look: files per speaker and emotion
            problems.append("  files per speaker: " + "  ".join(f"{s} {n}" for s, n in sorted(speakers.items())))
        return problems

    return finish(report, utterances, looks_full=set(SPEAKER_GENDER) <= set(speakers), strict=strict, check=check)
