"""Kaldi-style data directories: reading and writing ``<key> <value>`` files.

A data directory is a folder of small text files keyed by utterance (or speaker) id, such as
``wav.scp``, ``text``, ``utt2spk`` and ``utt2emo`` (see docs/formats.md). Keys are kept sorted in
C (byte) order, as Kaldi's tools expect, so files can be joined line by line with standard tools.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping

from serkit.data import inventory
from serkit.atomic import atomic_write_text
from serkit.errors import DataDirError

logger = logging.getLogger(__name__)

#: The sub-folder of a data directory holding its ambiguous utterances: those whose raters reached no
#: majority (IEMOCAP's ``xxx``). They have no class label, so they are a data directory of their own
#: without ``utt2emo`` (docs/formats.md), never in a fold list: training may add those of its own
#: speakers on request (``use_ambiguous``, :func:`serkit.data.dataio.load_fold_data`) and learns
#: them from their vote proportions; validation and test stay on clear utterances.
AMBIGUOUS_DIR = "ambiguous"


def c_sorted(keys: Iterable[str]) -> list[str]:
    """Sort strings in C (byte) order, the order Kaldi's ``sort`` with LC_ALL=C gives."""
    return sorted(keys, key=lambda key: key.encode("utf-8"))


def read_map(path: str | Path) -> dict[str, str]:
    """Read a ``<key> <value>`` file; the value is the rest of the line and may be empty."""
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: file not found (did the stage that writes it run?)")
    mapping: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                raise DataDirError(f"{path}:{line_number}: empty line (fix: utils-style fix_data_dir or remove it)")
            key, _, value = line.partition(" ")
            if not key or key != key.strip():
                raise DataDirError(f"{path}:{line_number}: malformed line {line!r} (expected '<key> <value>')")
            if key in mapping:
                raise DataDirError(f"{path}:{line_number}: duplicate key {key!r}")
            mapping[key] = value.strip()
    return mapping


def write_map(path: str | Path, mapping: Mapping[str, object]) -> None:
    """Write a ``<key> <value>`` file sorted by key in C order, atomically (temp file + rename)."""
    lines = (f"{key} {mapping[key]}" if str(mapping[key]) else key for key in c_sorted(mapping))
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def read_list(path: str | Path) -> list[str]:
    """Read a file with one item a line (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: file not found")
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def write_list(path: str | Path, items: Iterable[str]) -> None:
    """Write one item a line, atomically, in the order given."""
    atomic_write_text(path, "".join(f"{item}\n" for item in items))


# ---------------------------------------------------------------------------------------------
# Validation and repair (after Kaldi's utils/validate_data_dir.sh and utils/fix_data_dir.sh)
# ---------------------------------------------------------------------------------------------

#: Files keyed by utterance id that may appear in a data directory, in the order they are checked.
UTT_KEYED_FILES = (
    "wav.scp", "text", "utt2spk", "utt2emo", "utt2gender", "utt2dur", "utt2raw_emo",
    "utt2session", "utt2arpabet", "utt2phn", "utt2sentence", "utt2split", "utt2sampa", "utt2phones",
    "utt2votes",
)
#: Files without which a directory is not a data directory at all.
REQUIRED_FILES = ("wav.scp", "utt2spk")
#: Utterance-keyed files whose value may legitimately be empty (no transcript, no phones).
EMPTY_VALUE_ALLOWED = frozenset({"text", "utt2arpabet", "utt2phn", "utt2sampa", "utt2phones", "utt2votes"})
#: What later stages need beyond REQUIRED_FILES; checked with ``complete=True`` (stage 0's own check).
COMPLETE_FILES = ("utt2emo", "utt2dur", inventory.CLASSES_FILE)
GENDERS = frozenset({"f", "m"})
#: How many example keys a problem message shows.
N_EXAMPLES = 3


def _examples(keys: Iterable[str]) -> str:
    """Format a count plus a few example keys, so a message stays short for 10,000 bad lines."""
    keys = list(keys)
    shown = ", ".join(keys[:N_EXAMPLES])
    more = ", ..." if len(keys) > N_EXAMPLES else ""
    return f"{len(keys)} key(s), e.g. {shown}{more}"


def _is_positive_float(value: str) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    return number > 0 and number != float("inf")


def invert_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, str]:
    """Build spk2utt values (space-separated utterance ids in C order) from utt2spk."""
    spk2utts: dict[str, list[str]] = {}
    for utt in c_sorted(utt2spk):
        spk2utts.setdefault(utt2spk[utt], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in spk2utts.items()}


def _bad_values(name: str, mapping: Mapping[str, str], classes: list[str] | None) -> dict[str, list[str]]:
    """Return ``{problem description: [keys]}`` for values a file of this name must not have."""
    problems: dict[str, list[str]] = {}

    def flag(problem: str, key: str) -> None:
        problems.setdefault(problem, []).append(key)

    for key, value in mapping.items():
        if not value:
            if name not in EMPTY_VALUE_ALLOWED:
                flag("empty value", key)
        elif name == "utt2dur" and not _is_positive_float(value):
            flag("duration is not a positive number", key)
        elif name == "utt2gender" and value not in GENDERS:
            flag("gender is not 'f' or 'm'", key)
        elif name == "utt2emo" and classes is not None and value not in classes:
            flag("emotion label not listed in 'classes'", key)
    return problems


def _read_classes(data_dir: Path, problems: list[str]) -> list[str] | None:
    """Read the optional ``classes`` file (serkit.data.inventory's checks), recording problems instead of raising."""
    path = data_dir / inventory.CLASSES_FILE
    if not path.is_file():
        return None
    try:
        return inventory.read_classes(path)
    except inventory.InventoryError as error:
        problems.append(str(error))
        return read_list(path)


def _read_maps(data_dir: Path, names: Iterable[str], problems: list[str]) -> dict[str, dict[str, str]]:
    """Read each existing file; unreadable ones become problems and are left out of later checks."""
    maps: dict[str, dict[str, str]] = {}
    for name in names:
        path = data_dir / name
        if not path.is_file():
            continue
        try:
            maps[name] = read_map(path)
        except (DataDirError, UnicodeDecodeError) as error:
            problems.append(f"{name}: cannot be read: {error}")
    return maps


def _check_sorted(name: str, mapping: Mapping[str, str], problems: list[str]) -> None:
    keys = list(mapping)
    wanted = c_sorted(keys)
    if keys != wanted:
        misplaced = [key for key, good in zip(keys, wanted) if key != good]
        problems.append(f"{name}: keys are not sorted in C (byte) order ({_examples(misplaced)})")


def validate_data_dir(data_dir: str | Path, complete: bool = False) -> dict[str, int]:
    """Check a data directory against docs/formats.md and raise :class:`DataDirError` listing ALL problems.

    Checks (the ones Kaldi's ``validate_data_dir.sh`` makes, plus serkit's label files): required
    files exist; every file has unique keys sorted in C order; all utterance-keyed files share one
    key set; ``spk2utt`` is exactly the inverse of ``utt2spk``; each utterance id starts with its
    speaker id; durations are positive, genders are f/m, emotions are listed in ``classes``.
    Everything is reported at once so one run tells the user all there is to fix.

    ``complete=True`` (what stage 0 checks before later stages run) also requires ``utt2emo``,
    ``utt2dur`` and ``classes``, and that every ``wav.scp`` path exists.

    Returns ``{"utterances": n, "speakers": n}`` when the directory is valid.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: data directory not found (run the data preparation stage first)")
    problems: list[str] = []
    for name in REQUIRED_FILES:
        if not (data_dir / name).is_file():
            problems.append(f"{name}: required file is missing")
    if complete:
        problems += [f"{name}: required by training (stage 3) but missing; re-run stage 0"
                     for name in COMPLETE_FILES if not (data_dir / name).is_file()]
    classes = _read_classes(data_dir, problems)
    maps = _read_maps(data_dir, (*UTT_KEYED_FILES, "spk2utt"), problems)
    if complete and "wav.scp" in maps:
        absent = [utt for utt, path in maps["wav.scp"].items() if not Path(path).is_file()]
        if absent:
            problems.append(f"wav.scp: audio files do not exist ({_examples(absent)}, e.g. "
                            f"{maps['wav.scp'][absent[0]]}); is the corpus mounted where stage 0 found it?")

    for name, mapping in maps.items():
        _check_sorted(name, mapping, problems)
        for problem, keys in _bad_values(name, mapping, classes).items():
            problems.append(f"{name}: {problem} ({_examples(keys)})")
    _check_same_keys(maps, problems)
    _check_speakers(maps, problems)

    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise DataDirError(
            f"{data_dir}: data directory is not valid ({len(problems)} problem(s)):\n{listing}\n"
            f"Fix: re-run the stage that wrote it, or try, in the recipe folder, `. ./path.sh && python -m "
            f"serkit.bin.validate_data_dir {data_dir} --fix` (sorts, drops utterances missing from some file, "
            "rebuilds spk2utt)."
        )
    utt2spk = maps["utt2spk"]
    return {"utterances": len(utt2spk), "speakers": len(set(utt2spk.values()))}


def _check_same_keys(maps: Mapping[str, Mapping[str, str]], problems: list[str]) -> None:
    """Every utterance-keyed file must list the same utterances as utt2spk (or wav.scp)."""
    reference = "utt2spk" if "utt2spk" in maps else "wav.scp"
    if reference not in maps:
        return
    reference_keys = set(maps[reference])
    for name in UTT_KEYED_FILES:
        if name == reference or name not in maps:
            continue
        keys = set(maps[name])
        missing = c_sorted(reference_keys - keys)
        extra = c_sorted(keys - reference_keys)
        if missing:
            problems.append(f"{name}: lacks utterances that {reference} has ({_examples(missing)})")
        if extra:
            problems.append(f"{name}: has utterances that {reference} lacks ({_examples(extra)})")


def _check_speakers(maps: Mapping[str, Mapping[str, str]], problems: list[str]) -> None:
    """Utterance ids must start with their speaker id, and spk2utt must invert utt2spk exactly."""
    utt2spk = maps.get("utt2spk")
    if utt2spk is None:
        return
    unprefixed = [utt for utt, spk in utt2spk.items() if spk and not utt.startswith(spk)]
    if unprefixed:
        problems.append(f"utt2spk: utterance ids do not start with their speaker id "
                        f"({_examples(unprefixed)}); Kaldi needs that prefix so sorting keeps speakers together")
    spk2utt = maps.get("spk2utt")
    if spk2utt is None:
        problems.append("spk2utt: file is missing (rebuild it from utt2spk with --fix)")
        return
    expected = invert_utt2spk(utt2spk)
    differing = c_sorted(spk for spk in set(expected) | set(spk2utt) if expected.get(spk) != spk2utt.get(spk))
    if differing:
        problems.append(f"spk2utt: is not the inverse of utt2spk for speakers {_examples(differing)}")


def fix_data_dir(data_dir: str | Path) -> dict:
    """Repair what can be repaired, like Kaldi's ``fix_data_dir.sh``, then validate.

    Keeps only utterances that are present in every utterance-keyed file and whose values are
    valid (positive duration, f/m gender, emotion listed in ``classes``, non-empty where a value is
    required); rewrites every file sorted; rebuilds ``spk2utt`` from ``utt2spk``. Each dropped
    utterance is counted under the reason it was dropped and logged. Duplicate keys and malformed
    lines are NOT repaired (which of two values is right cannot be guessed): they raise, naming the
    file and line. Problems the fixer cannot repair (utterance ids without their speaker prefix) make
    the final validation raise.

    Returns ``{"kept": n, "removed": n, "removed_by_reason": {reason: n}}``.
    """
    data_dir = Path(data_dir)
    for name in REQUIRED_FILES:
        if not (data_dir / name).is_file():
            raise DataDirError(f"{data_dir / name}: required file is missing; the fixer cannot invent it "
                               "(re-run the data preparation stage)")
    classes_file = data_dir / inventory.CLASSES_FILE
    classes = inventory.read_classes(classes_file) if classes_file.is_file() else None
    maps = {name: read_map(data_dir / name) for name in UTT_KEYED_FILES if (data_dir / name).is_file()}

    all_utts = set().union(*(set(mapping) for mapping in maps.values()))
    reasons: dict[str, set[str]] = {}
    for name, mapping in maps.items():
        missing = all_utts - set(mapping)
        if missing:
            reasons[f"missing from {name}"] = missing
        for problem, keys in _bad_values(name, mapping, classes).items():
            reasons.setdefault(f"{name}: {problem}", set()).update(keys)
    removed = set().union(*reasons.values()) if reasons else set()
    kept = all_utts - removed

    for name, mapping in maps.items():
        write_map(data_dir / name, {utt: value for utt, value in mapping.items() if utt in kept})
    write_map(data_dir / "spk2utt", invert_utt2spk({utt: maps["utt2spk"][utt] for utt in kept}))

    removed_by_reason = {reason: len(keys) for reason, keys in sorted(reasons.items())}
    for reason, keys in sorted(reasons.items()):
        logger.warning("fix_data_dir %s: removed %s (%s)", data_dir, _examples(c_sorted(keys)), reason)
    logger.info("fix_data_dir %s: kept %d of %d utterances", data_dir, len(kept), len(all_utts))
    validate_data_dir(data_dir)
    return {"kept": len(kept), "removed": len(removed), "removed_by_reason": removed_by_reason}
