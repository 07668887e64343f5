"""The root of serkit's exceptions.

Every error serkit raises on purpose derives from :class:`SerkitError`, so command-line entry points
can print its message (which names the file and the fix) instead of a traceback.
"""
import re


class SerkitError(Exception):
    """An error with a message meant for the user: what went wrong, where, and how to fix it."""


class DataDirError(SerkitError):
    """A data directory file is missing, malformed or inconsistent (:mod:`serkit.data.datadir`,
    :mod:`serkit.data.inventory`)."""


class Refused(SerkitError):
    """serkit refused untrusted input (a tag that would run code, a pickle, a link out of an export).

    Entry points exit with code 2 for it, as for any unusable input, and its message says what was
    refused and why; it never suggests turning a protection off.
    """


def load_error_text(error: BaseException) -> str:
    """What a failed ``torch.load`` means, in one line, without torch's advice to turn its protection off.

    ``weights_only=True`` refuses a pickle that names Python code; torch's message then suggests
    ``weights_only=False``, which would run that code. serkit never passes that advice on: it says
    which object the file asked for.
    """
    text = str(error)
    wanted = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if wanted:
        return (f"it holds a pickled reference to the Python object {wanted[1]}, not only plain tensors; "
                "loading it could run code, so it was refused")
    if "weights_only" in text or "WeightsUnpickler" in text:
        detail = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        return ("it holds more than plain tensors and numbers (" + (detail[1][:200] if detail else "pickled objects")
                + "); loading it could run code, so it was refused")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def reraise_as(error_class: type[SerkitError], *lower: type[SerkitError]):
    """Decorator: errors of the layers below (``lower``) surface as ``error_class`` with the same message.

    A stage reports its own kind of error (a scoring error, an export error) even when the cause is
    found by the shared format reader underneath.
    """
    def decorate(function):
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except lower as error:
                raise error_class(str(error)) from None
        wrapper.__doc__, wrapper.__name__, wrapper.__wrapped__ = function.__doc__, function.__name__, function
        return wrapper
    return decorate
