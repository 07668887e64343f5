"""Atomic file writes: a file is either its old whole self or its new whole self, never half of one.

Every file serkit writes for a later stage or process to read (data-dir files, fold files, feature
caches, RESULTS.md, Slurm task status) goes through here: a killed job, a full disk or a reader
that looks at the wrong moment then never sees a half-written file. Kept free of serkit imports so
that every layer, down to the data directories, can use it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it into place.

    The temporary name carries the process id: jobs running at once may write the same shared
    file (a feature-cache entry), and each must rename its own complete copy. The folder is
    created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
