"""Errors in what the user gave (an argument, a setting, a file), as opposed to errors in llmkick itself.

The ``llmkick`` command prints a :class:`UserError` as one line (exit status 2) and shows the traceback of
anything else, so an internal ``ValueError`` is never mistaken for a typo.  Both packages raise these:
``llmkick_models`` may import ``llmkick_tasks``, never the other way round, so the classes live here.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad input the user can fix; the message names it and says what is allowed.

    A ``ValueError``, so callers that catch ``ValueError`` keep catching it.
    """


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist, or is not the kind asked for."""
