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


class HeldLock:
    """A held flock on ``<folder>/.lock`` (see :func:`acquire`); :meth:`release` drops it."""

    def __init__(self, path: Path, descriptor: int):
        self.path, self.descriptor = path, descriptor

    def keep_across_exec(self) -> None:
        """Let a program that this process execs go on holding the lock (same pid, same holder)."""
        os.set_inheritable(self.descriptor, True)

    def release(self) -> None:
        if self.descriptor < 0:
            return
        try:
            os.ftruncate(self.descriptor, 0)  # released: no holder to name (the file itself stays)
        finally:
            os.close(self.descriptor)  # closing drops the flock
            self.descriptor = -1


def _ancestors() -> set[int]:
    """The pids of this process's parent, its parent's parent, ... (from /proc; the parent alone elsewhere)."""
    found, pid = set(), os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
            pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
        except (OSError, ValueError, IndexError):
            break
    return found


def held_for_us(path: Path) -> bool:
    """Whether the holder of ``path`` is an ancestor of this process on this host.

    A launcher (serkit-run) takes a fold's lock before it writes the fold's job log and holds it
    while the job runs; the training it started, and the processes torchrun starts for it, then
    work under that lock instead of being refused by it.
    """
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return info["host"] == socket.gethostname() and int(info["pid"]) in _ancestors()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def acquire(folder: Path | str, what: str = "training") -> HeldLock | None:
    """Take ``<folder>/.lock`` without blocking: a :class:`HeldLock`, or None when an ancestor of
    this process holds it for us (:func:`held_for_us`); raise :class:`FolderLocked` naming the
    holder when anyone else does."""
    path = Path(folder) / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        if held_for_us(path):
            return None
        raise FolderLocked(
            f"{folder} is locked by {_holder(path)} ({path}): another {what} of this folder is "
            f"running; wait for it to end or stop that process, then rerun") from None
    except BaseException:
        os.close(descriptor)
        raise
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (info + "\n").encode(), 0)
    return HeldLock(path, descriptor)


@contextmanager
def folder_lock(folder: Path | str, what: str = "training") -> Iterator[Path]:
    """Hold ``<folder>/.lock`` for the duration of the block, or raise :class:`FolderLocked`.

    ``what`` names the work in the refusal message.  Never blocks: a second run is refused at
    once rather than queued behind a run that may take hours.  Inside a launcher that holds the
    lock for this process (:func:`held_for_us`) the block runs under the launcher's lock.
    """
    held = acquire(folder, what)
    try:
        yield Path(folder) / LOCK_FILE
    finally:
        if held is not None:
            held.release()
