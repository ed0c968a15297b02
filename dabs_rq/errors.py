"""The one error type for a user's mistake: a bad config value, a malformed dataset YAML, data that
do not fit the task. The command line prints it as one line (exit status 2); every other exception
is a bug or a fault and keeps its traceback (exit status 1), so that an error raised deep inside a
30-hour job is never reduced to a line.

Raise :class:`UserError` (or a subclass) only where the message names what is wrong and how to fix
it. It subclasses :class:`ValueError` so that callers catching ``ValueError`` keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's config or data, explained in one line that names the fix."""


class UserFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or the config implies) is missing or unusable."""
