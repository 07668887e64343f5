"""The ``utt2votes`` format: each utterance's annotator votes counted per class, ``<class>:<count> ...``.

Corpus preps write it and the votes target reads it; both use these two functions, and this module
imports nothing heavier than the data-dir errors so a prep never loads torch for it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from serkit.errors import DataDirError

FILE = "utt2votes"


def format_votes(counts: Mapping[str, int]) -> str:
    """``utt2votes``'s value for vote ``counts`` by class, classes in the given order, zeros left out."""
    return " ".join(f"{label}:{count}" for label, count in counts.items() if count)


def parse_votes(value: str, classes: Sequence[str], where: str) -> list[int]:
    """Vote counts per class (in ``classes`` order) of a ``utt2votes`` value; ``where`` names it in errors."""
    counts = [0] * len(classes)
    for item in value.split():
        label, _, count = item.partition(":")
        if label not in classes or not count.isdigit():
            raise DataDirError(f"{where}: {item!r} is not <class>:<count> with a class of {', '.join(classes)}; "
                               "re-run data preparation (stage 0)")
        counts[classes.index(label)] += int(count)
    return counts
