"""Checkpoints that cannot block a fold, and the random states that make a resumed run exact.

SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` writes ``CKPT.yaml`` *first* and
the parameter files after it, into the checkpoint's final directory. A kill or a full disk during a
save therefore leaves a directory that looks complete (it has its ``CKPT.yaml``) but holds a
truncated or missing ``model.ckpt``; every later resume picks it as the newest and crashes
(``PytorchStreamReader``, ``KeyError``), although an intact older checkpoint sits beside it.

:class:`SafeCheckpointer` keeps SpeechBrain's directory format (docs/formats.md) and changes when a
checkpoint becomes visible:

- **save**: every file is written into a staging directory ``save/.partial-CKPT+...`` (a name no
  reader takes for a checkpoint), ``CKPT.yaml`` last, each file flushed and fsynced; then one atomic
  ``rename`` publishes the directory and the parent directory is fsynced. A failed write (full disk,
  quota, I/O error) removes the staging directory and raises :class:`CheckpointError` naming the
  folder, the cause and the free space, so the previous checkpoint stays the newest.
- **load**: a checkpoint is loaded only after its parts are found to agree (meta readable, every
  file present with the size ``CKPT.yaml`` recorded for it, the epoch counter at the epoch
  ``CKPT.yaml`` names); one whose parts disagree is skipped with one warning naming it and moved
  aside to ``save/broken-CKPT+...`` so that no later save, resume or export trips on it again, and
  the next one in order (the newest consistent one, for a resume) is used. One that fails to load
  otherwise is skipped with a warning and left in place (the configuration may have changed).
  Torch files are read with ``weights_only=True`` passed explicitly, so no code from a checkpoint
  runs even where ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` asks torch to allow pickles.

:class:`RandomStates` is a recoverable holding every random state that affects training (torch CPU
and CUDA, numpy, Python ``random``, and named torch generators such as the data loader's), so a run
resumed from any checkpoint draws the same dropout masks and worker seeds as the uninterrupted run.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    DEFAULT_LOAD_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    get_default_hook,
    torch_recovery,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

from serkit.errors import SerkitError, load_error_text
from serkit.training.expdir import FILE_SIZES_KEY, ExpDirError, checkpoint_problem, read_checkpoint_meta

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".partial-"  # a staging directory never starts with "CKPT", so no reader lists it
BROKEN_PREFIX = "broken-"  # where a checkpoint whose parts disagree is set aside (no reader lists it either)


class CheckpointError(SerkitError):
    """A checkpoint could not be written, or no checkpoint of a folder can be loaded."""


# ----------------------------------------------------------------------------- durable files


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to the disk (a rename is only durable after the data it names is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_full(error: BaseException, path: Path) -> bool:
    """Whether a failed write hit a full disk or quota (torch.save's errors carry no errno: look)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(path).free < 2**20
    except OSError:
        return False


def free_space_text(path: Path) -> str:
    """``'12.3 MB free on <path>'``, or '' when it cannot be read."""
    try:
        return f"{shutil.disk_usage(path).free / 1e6:.1f} MB free on {path}"
    except OSError:
        return ""


# ----------------------------------------------------------------------------- loading torch files


def torch_load_safe(path: str | Path) -> Any:
    """``torch.load`` of plain data only: ``weights_only=True`` explicitly, whatever the environment says."""
    return torch.load(path, map_location="cpu", weights_only=True)


def safe_torch_recovery(obj, path, end_of_epoch) -> None:
    """SpeechBrain's load hook for modules, optimizers, schedulers and scalers, without pickled code."""
    del end_of_epoch  # the same state either way
    state = torch_load_safe(path)
    if isinstance(obj, torch.nn.Module):
        obj.load_state_dict(state, strict=True)
    else:
        obj.load_state_dict(state)


# ----------------------------------------------------------------------------- the checkpointer


class SafeCheckpointer(Checkpointer):
    """A :class:`Checkpointer` whose checkpoints appear whole or not at all (see the module docstring)."""

    # ---------------------------------------------------------------- saving

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006 (SB's signature)
        """Write every recoverable and ``CKPT.yaml`` into a staging directory, then publish it atomically."""
        final = staging = None
        if if_main_process():
            final = self._new_checkpoint_dirpath() if name is None else self._custom_checkpoint_dirpath(name)
            staging = final.with_name(STAGING_PREFIX + final.name)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        final, staging = ddp_broadcast((final, staging), src=0)
        try:
            for name_, obj in self.recoverables.items():
                self._save_recoverable(name_, obj, staging / f"{name_}{PARAMFILE_EXT}")
            ddp_barrier()  # every process has written its part before the main one publishes
            if not if_main_process():
                # Wait until the main process has published: every process must then see the same
                # checkpoints (SpeechBrain's keep-only deletion broadcasts once per deleted one).
                ddp_barrier()
                return None
            # CKPT.yaml records every file's size: a file cut short or replaced later is caught on load.
            sizes = {path.name: path.stat().st_size for path in staging.iterdir()}
            saved_meta = self._save_checkpoint_metafile(staging / METAFNAME, {**meta, FILE_SIZES_KEY: sizes},
                                                        end_of_epoch)
            for path in staging.iterdir():
                fsync_file(path)
            fsync_dir(staging)
            os.rename(staging, final)
            fsync_dir(self.checkpoints_dir)
            ddp_barrier()
        except (OSError, RuntimeError) as error:
            full = disk_full(error, self.checkpoints_dir)  # before the cleanup frees the space again
            if staging is not None and if_main_process():
                shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointError(self._write_error(final, error, full)) from error
        logger.log(verbosity, "Saved an %s checkpoint in %s", "end-of-epoch" if end_of_epoch else "intra-epoch", final)
        paramfiles = {name_: final / f"{name_}{PARAMFILE_EXT}" for name_ in self.recoverables}
        return Checkpoint(final, saved_meta, paramfiles)

    def save_and_keep_only(self, *args, importance_keys=None, **kwargs):
        """SpeechBrain's, with a fresh ``importance_keys`` list per call: its default list is
        appended to on every call, so frequent checkpoints would slow down without bound."""
        return super().save_and_keep_only(*args, importance_keys=list(importance_keys or []), **kwargs)

    def _save_recoverable(self, name: str, obj, path: Path) -> None:
        hook = self.custom_save_hooks.get(name)
        if hook is None:
            from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS
            hook = get_default_hook(obj, DEFAULT_SAVE_HOOKS)
        if hook is None:
            raise CheckpointError(f"don't know how to save {type(obj).__name__} ({name}); register a save hook")
        hook(obj, path)

    def _write_error(self, final: Path | None, error: BaseException, full: bool) -> str:
        newest = self._newest_name()
        cause = "the disk is full" if full else "the write failed"
        return (f"{final}: could not write the checkpoint, {cause} ({error}); {free_space_text(self.checkpoints_dir)}. "
                f"Nothing of it was published: the newest checkpoint is still {newest or 'none (the run starts over)'}. "
                "Free some space (or move the experiment folder) and run the same command again to resume from it")

    def _newest_name(self) -> str | None:
        checkpoints = self.list_checkpoints()
        return max(checkpoints, key=lambda c: c.meta["unixtime"]).path.name if checkpoints else None

    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):  # noqa: B006
        """``CKPT.yaml`` (written last: its presence marks a complete checkpoint), flushed to disk."""
        meta = super()._save_checkpoint_metafile(fpath, meta_to_include, end_of_epoch)
        fsync_file(Path(fpath))
        return meta

    # ---------------------------------------------------------------- listing

    def list_checkpoints(self) -> list[Checkpoint]:
        """The published checkpoints whose ``CKPT.yaml`` is readable; a broken one is named in a
        warning and set aside (:meth:`set_aside`), so the warning comes once, not at every save."""
        checkpoints = []
        for ckpt_dir in self._list_checkpoint_dirs():
            try:
                meta = read_checkpoint_meta(ckpt_dir / METAFNAME)
            except ExpDirError as error:
                self.set_aside(ckpt_dir, str(error))
                continue
            paramfiles = {path.stem: path for path in ckpt_dir.iterdir() if path.suffix == PARAMFILE_EXT}
            checkpoints.append(Checkpoint(ckpt_dir, meta, paramfiles))
        return checkpoints

    def set_aside(self, ckpt_dir: Path, problem: str) -> None:
        """Move a broken checkpoint to ``save/broken-CKPT+...`` (kept for inspection, never deleted),
        with one warning: no later listing, resume, export or rerun trips on it again."""
        aside = ckpt_dir.with_name(BROKEN_PREFIX + ckpt_dir.name)
        if if_main_process() and ckpt_dir.is_dir():
            try:
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(ckpt_dir, aside)
            except OSError as error:
                logger.warning("%s: broken checkpoint skipped (%s); it could not be moved aside (%s)",
                               ckpt_dir, problem, error)
                return
        logger.warning("%s: broken checkpoint skipped (%s); moved aside to %s", ckpt_dir, problem, aside.name)

    def remove_staging_dirs(self) -> None:
        """Delete what a killed save left behind (never a checkpoint: those were never published)."""
        for path in self.checkpoints_dir.glob(STAGING_PREFIX + "*"):
            logger.info("%s: removing the unfinished checkpoint of an interrupted save", path)
            shutil.rmtree(path, ignore_errors=True)

    # ---------------------------------------------------------------- loading

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None):
        """Load the first intact checkpoint in the requested order (newest first by default).

        A broken checkpoint (unreadable meta, a missing or empty file, a file that fails to load) is
        skipped with a warning that names it. Returns the loaded checkpoint, or None if there is none
        at all; raises :class:`CheckpointError` if checkpoints exist but none of them loads.
        """
        if if_main_process():
            self.remove_staging_dirs()
        candidates = self.find_checkpoints(importance_key, max_key, min_key, ckpt_predicate)
        if not candidates:
            logger.info("no checkpoint in %s yet: starting from scratch", self.checkpoints_dir)
            return None
        problems = []
        for checkpoint in candidates:
            problem = self.problem(checkpoint)
            if problem is not None:  # its parts disagree: it can never load right, take it out of the way
                self.set_aside(checkpoint.path, problem)
                problems.append(f"{checkpoint.path.name}: {problem}")
                continue
            try:
                self.load_checkpoint(checkpoint)
            except SerkitError:
                raise  # a deliberate refusal (e.g. a changed configuration), not a broken file
            except Exception as error:  # noqa: BLE001 -- any failure to load means: try the next one
                # Not moved aside: the file may be sound and the configuration changed since.
                self._forget_partial_load()
                problem = f"failed to load ({load_error_text(error)})"
                logger.warning("%s: broken checkpoint, skipped: %s", checkpoint.path, problem)
                problems.append(f"{checkpoint.path.name}: {problem}")
                continue
            if problems:
                logger.warning("resuming from %s, the newest intact checkpoint", checkpoint.path.name)
            return checkpoint
        raise CheckpointError(f"{self.checkpoints_dir}: no checkpoint can be loaded ({'; '.join(problems)}); "
                              f"inconsistent ones were moved aside ({BROKEN_PREFIX}CKPT+...). Delete the broken "
                              "ones (or the whole folder to start over) and run again")

    def problem(self, checkpoint: Checkpoint) -> str | None:
        """Why ``checkpoint`` cannot be complete or consistent (a missing, empty or resized file, an
        epoch counter that disagrees with ``CKPT.yaml``: :func:`serkit.training.expdir.checkpoint_problem`), or None."""
        inconsistent = checkpoint_problem(checkpoint.path, checkpoint.meta)
        if inconsistent is not None:
            return inconsistent
        for name in self.recoverables:
            path = checkpoint.paramfiles.get(name)
            if path is None:
                if self.optional_recoverables.get(name) or "dataloader" in name:
                    continue  # SpeechBrain's rule: these may be absent (older checkpoints)
                return f"{name}{PARAMFILE_EXT} is missing"
            if path.stat().st_size == 0:
                return f"{path.name} is empty"
        return None

    def load_checkpoint(self, checkpoint) -> None:
        """SpeechBrain's loading, with torch files read ``weights_only=True`` (:func:`safe_torch_recovery`)."""
        logger.info("loading checkpoint %s", checkpoint.path)
        end_of_epoch = checkpoint.meta["end-of-epoch"]
        for name, obj in self.recoverables.items():
            path = checkpoint.paramfiles.get(name)
            if path is None:
                logger.warning("%s: has no %s%s (an older checkpoint); %s keeps its current state",
                               checkpoint.path.name, name, PARAMFILE_EXT, name)
                continue
            hook = self.custom_load_hooks.get(name) or get_default_hook(obj, DEFAULT_LOAD_HOOKS)
            if hook is torch_recovery:
                hook = safe_torch_recovery
            if hook is None:
                raise CheckpointError(f"don't know how to load {type(obj).__name__} ({name}); register a load hook")
            hook(obj, path, end_of_epoch)

    def _forget_partial_load(self) -> None:
        """Undo what a failed load may have set that the next load would not overwrite."""
        for obj in self.recoverables.values():
            if hasattr(obj, "_speechbrain_recovery_skip_to"):
                obj._speechbrain_recovery_skip_to = None  # an end-of-epoch load leaves this untouched


# ----------------------------------------------------------------------------- random states


class RandomStates:
    """Every random state that affects training, as one recoverable (``rng.ckpt``).

    Saved: torch's CPU generator, every CUDA device's generator, numpy's and Python's global
    generators, and the named torch ``generators`` (e.g. the one the training data loader draws its
    worker seeds from). All are stored as tensors and plain numbers, loadable with
    ``weights_only=True``. Loading restores them in place, so the next random draw (a dropout mask,
    a crop) is the one the uninterrupted run made after this checkpoint.
    """

    def __init__(self, generators: dict[str, torch.Generator] | None = None):
        self.generators = dict(generators or {})

    def state(self) -> dict[str, Any]:
        numpy_state = np.random.get_state()
        version, python_state, gauss_next = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": numpy_state[0], "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                      "pos": int(numpy_state[2]), "has_gauss": int(numpy_state[3]),
                      "cached_gaussian": float(numpy_state[4])},
            "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                       "gauss_next": gauss_next},
            "generators": {name: generator.get_state() for name, generator in self.generators.items()},
        }

    def set_state(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        torch.set_rng_state(state["torch"])
        cuda = list(state["cuda"])
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        elif cuda or torch.cuda.is_available():
            logger.warning("%s: saved with %d CUDA device(s), %d here: CUDA random states not restored, "
                           "so GPU-side random draws differ from the uninterrupted run", source, len(cuda),
                           torch.cuda.device_count() if torch.cuda.is_available() else 0)
        numpy_state = state["numpy"]
        np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                             numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
        python = state["python"]
        random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss_next"]))
        for name, generator in self.generators.items():
            if name in state["generators"]:
                generator.set_state(state["generators"][name])

    def save(self, path) -> None:
        torch.save(self.state(), path)

    def load(self, path, end_of_epoch=None) -> None:
        del end_of_epoch  # restored either way
        self.set_state(torch_load_safe(path), str(path))

    def register(self, checkpointer: Checkpointer, name: str = "rng") -> None:
        """Add to ``checkpointer``; optional, so checkpoints from before this existed still resume."""
        checkpointer.add_recoverable(name, self, custom_save_hook=_main_only(RandomStates.save),
                                     custom_load_hook=RandomStates.load, optional_load=True)


class JsonState:
    """A recoverable of plain data (``<name>.ckpt`` = JSON) with a check on load.

    ``get()`` gives the state to save; ``check(saved)`` is called with the saved state on load and
    raises :class:`CheckpointError` when the run cannot continue from it (e.g. a sampler whose seed
    or batch size changed, which would silently change the batches of the resumed run).
    """

    def __init__(self, get: Callable[[], dict], check: Callable[[dict], None]):
        self.get, self.check = get, check

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.get(), sort_keys=True) + "\n", encoding="utf-8")

    def load(self, path, end_of_epoch=None) -> None:
        del end_of_epoch
        self.check(json.loads(Path(path).read_text(encoding="utf-8")))

    def register(self, checkpointer: Checkpointer, name: str) -> None:
        checkpointer.add_recoverable(name, self, custom_save_hook=_main_only(JsonState.save),
                                     custom_load_hook=JsonState.load, optional_load=True)


def _main_only(save: Callable) -> Callable:
    """A save hook that writes on the main process only (as SpeechBrain's default hooks do)."""
    def hook(obj, path) -> None:
        if if_main_process():
            save(obj, path)
    return hook
