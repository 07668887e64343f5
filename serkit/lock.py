"""One process at a time per output folder: an exclusive lock on ``<folder>/.lock``.

Two runs training the same fold at once delete each other's checkpoints; the second one must
refuse instead, and say who holds the fold.  The lock is ``flock`` on a file inside the folder:
the kernel drops it when the holding process ends, however it ends, so a lock file left by a dead
process (``kill -9``, a node crash) never blocks a rerun.  The holder writes its pid, host and
start time into the file only to name itself in the refusal; the flock alone decides.  Linux NFS
clients implement ``flock`` with NFS locks, so the refusal also works across cluster nodes that
share the experiment folder.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from serkit.errors import SerkitError

LOCK_FILE = ".lock"


class FolderLocked(SerkitError):
    """Another live process holds the folder's lock."""


def _holder(path: Path) -> str:
    """Who holds the lock, as the holder wrote it (``pid 123 on host since ...``)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"  # between its flock and its write


@contextmanager
def folder_lock(folder: Path | str, what: str = "training") -> Iterator[Path]:
    """Hold ``<folder>/.lock`` for the duration of the block, or raise :class:`FolderLocked`.

    ``what`` names the work in the refusal message.  Never blocks: a second run is refused at
    once rather than queued behind a run that may take hours.
    """
    path = Path(folder) / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLocked(
                f"{folder} is locked by {_holder(path)} ({path}): another {what} of this folder is "
                f"running; wait for it to end or stop that process, then rerun") from None
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (info + "\n").encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(descriptor, 0)  # released: no holder to name (the file itself stays)
    finally:
        os.close(descriptor)  # closing drops the flock
