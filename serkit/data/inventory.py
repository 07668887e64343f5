"""The two label inventories, one parser and one writer each:

- ``classes`` (a data dir's, an export's ``classes.txt``): one emotion label a line, in index order;
  the index is the model's output position and the emotion-phoneme suffix;
- ``tokens.txt`` (a lang dir's, an export's): ``<token> <index>`` lines with indices 0, 1, 2, ... in
  file order and :data:`BLANK` (the CTC blank) at :data:`BLANK_ID`; an export of a model without a
  CTC head has an empty one.

Every stage that reads or writes these files goes through here, so a damaged file gets the same
clear error wherever it is found. The CTC blank is defined here too, name and index together: the
token files, the CTC loss and the decoder must agree on it. This module imports no other serkit
module but the atomic writer, so the data-directory validator can use it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from serkit.atomic import atomic_write_text
from serkit.errors import DataDirError

#: A data directory's class list file (stage 0 writes it, every later stage reads it).
CLASSES_FILE = "classes"
#: The CTC blank: its token and its index in every token inventory (the CTC loss's ``blank``).
BLANK = "<blank>"
BLANK_ID = 0


class InventoryError(DataDirError):
    """A ``classes`` or ``tokens.txt`` file that cannot be used."""


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _write_lines(path: str | Path, lines: Iterable[str]) -> None:
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def read_classes(path: str | Path) -> list[str]:
    """The class labels of ``path`` in index order; empty files and duplicates are errors."""
    path = Path(path)
    if not path.is_file():
        raise InventoryError(f"{path}: class list not found; re-run data preparation (stage 0)")
    classes = _read_lines(path)
    if not classes:
        raise InventoryError(f"{path}: no class labels; re-run data preparation (stage 0)")
    duplicates = sorted({label for label in classes if classes.count(label) > 1})
    if duplicates:
        raise InventoryError(f"{path}: duplicate class label(s) {', '.join(duplicates)}; each label must appear once")
    return classes


def write_classes(path: str | Path, classes: Sequence[str]) -> None:
    """Write one class label a line, in index order (atomic); empty lists and duplicates are errors."""
    if not classes or len(set(classes)) != len(classes):
        raise InventoryError(f"{path}: a class list needs at least one label, each listed once; got {list(classes)}")
    _write_lines(path, classes)


def with_blank(units: Iterable[str]) -> list[str]:
    """A CTC token inventory: ``units`` in order, with :data:`BLANK` at :data:`BLANK_ID`."""
    tokens = list(units)
    if BLANK in tokens:
        raise InventoryError(f"{BLANK} is the CTC blank and cannot be a unit of the targets")
    tokens.insert(BLANK_ID, BLANK)
    return tokens


def read_tokens(path: str | Path, allow_empty: bool = False) -> list[str]:
    """The tokens of ``path`` as a list indexed by token id (see the module docstring).

    The indices must run 0, 1, 2, ... in file order, because the network's output layer and every
    decoded hypothesis rely on position = index.
    """
    path = Path(path)
    if not path.is_file():
        raise InventoryError(f"{path}: token inventory not found; run stage 1 (CTC targets) first")
    tokens: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] != str(len(tokens)):
                raise InventoryError(f"{path}:{line_number}: expected '<token> {len(tokens)}', got {line.strip()!r}; "
                                     "indices must run 0, 1, 2, ... in order (re-run stage 1)")
            if parts[0] in tokens:
                raise InventoryError(f"{path}:{line_number}: duplicate token {parts[0]!r}")
            tokens.append(parts[0])
    if (tokens or not allow_empty) and (len(tokens) <= BLANK_ID or tokens[BLANK_ID] != BLANK):
        raise InventoryError(f"{path}: token {BLANK_ID} must be {BLANK} (the CTC blank); re-run stage 1")
    return tokens


def write_tokens(path: str | Path, tokens: Sequence[str]) -> None:
    """Write ``<token> <index>`` lines in index order (atomic); duplicates are an error."""
    if len(set(tokens)) != len(tokens):
        raise InventoryError(f"{path}: token inventory has duplicates")
    _write_lines(path, (f"{token} {index}" for index, token in enumerate(tokens)))
