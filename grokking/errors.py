"""The package's errors. Library code raises these; the command line maps them to exit statuses.

Every message is one line that names what was wrong (a field, a path) and what is allowed, so
the command line prints it as it is.
"""
from __future__ import annotations


class GrokkingError(Exception):
    """Base class. ``exit_status`` is what the command line exits with."""

    exit_status = 1

    def __init__(self, message: str = ""):
        # One line whatever the input held (a key or path with a newline, say).
        super().__init__(" ".join(str(message).splitlines()))


class InputError(GrokkingError, ValueError):
    """Input refused before anything ran: a bad field, path, file or argument (exit status 2)."""

    exit_status = 2


class NotApplicableError(InputError):
    """A measure or operation that does not apply to this model (an MLP's attention, say)."""
