"""The root of serkit's exceptions.

Every error serkit raises on purpose derives from :class:`SerkitError`, so command-line entry points
can print its message (which names the file and the fix) instead of a traceback.
"""


class SerkitError(Exception):
    """An error with a message meant for the user: what went wrong, where, and how to fix it."""


class Refused(SerkitError):
    """serkit refused untrusted input (a tag that would run code, a pickle, a link out of an export).

    Entry points exit with code 2 for it, as for any unusable input, and its message says what was
    refused and why; it never suggests turning a protection off.
    """


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
