"""The root of serkit's exceptions.

Every error serkit raises on purpose derives from :class:`SerkitError`, so command-line entry points
can print its message (which names the file and the fix) instead of a traceback.
"""


class SerkitError(Exception):
    """An error with a message meant for the user: what went wrong, where, and how to fix it."""
