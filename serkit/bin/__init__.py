"""Command-line entry points (``python -m serkit.bin.<name>``) and what they share.

Every entry point keeps its own argument parser; the helpers here are the scaffold around it:
:func:`setup_logging` and :func:`one_line_errors`. This module imports only the standard library
and :mod:`serkit.errors`, so that entry points whose worker processes re-import ``__main__`` still
start fast.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from serkit.errors import SerkitError

#: Log line format of the entry points (and of serkit.bin.train's train_log.txt).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The same without the time stamp.
SHORT_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO, *, timestamps: bool = True) -> None:
    """Log ``level`` and above to stderr, each line with its level and logger name (and time)."""
    logging.basicConfig(level=level, format=LOG_FORMAT if timestamps else SHORT_LOG_FORMAT)


def one_line_errors(prog: str, *, exit_code: int = 1,
                    errors: tuple[type[BaseException], ...] = (SerkitError,)) -> Callable:
    """Decorate an entry point's ``main`` so that ``errors`` become one line and an exit status.

    A :class:`~serkit.errors.SerkitError` is a problem with the user's input or files, and its
    message already names the file and the fix; a traceback would bury that line in frames the
    user cannot act on. So the decorated ``main`` prints ``<prog>: error: <message>`` to stderr
    and returns ``exit_code`` instead. Any other exception is a bug and keeps its traceback.
    """
    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapper(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except errors as error:
                print(f"{prog}: error: {error}", file=sys.stderr)
                return exit_code
        return wrapper
    return decorate
