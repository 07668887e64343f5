"""The job backends of serkit-run by name (``--backend``): the local process pool or Slurm.

This factory sits above both backends, so :mod:`serkit.jobs.slurm` can build on :mod:`serkit.jobs.jobs`
without the two importing each other.
"""
from __future__ import annotations

from typing import Optional

from serkit.jobs.jobs import Backend, JobsUsageError, LocalBackend
from serkit.jobs.slurm import SlurmBackend

BACKENDS = ("local", "slurm")


def make_backend(name: str, max_jobs: Optional[int] = None, **options) -> Backend:
    """Build a backend by name (the ``--backend`` option); ``options`` go to the Slurm backend."""
    if name == "local":
        return LocalBackend(max_jobs=max_jobs)
    if name == "slurm":
        return SlurmBackend(max_jobs=max_jobs, **options)
    raise JobsUsageError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
