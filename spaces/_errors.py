"""Errors shared by every layer that validates user input."""

from __future__ import annotations


class SpecError(ValueError):
    """A search spec or candidate is malformed.

    The message names the offending field and says how to fix it; the server turns it into
    ``INVALID_ARGUMENT`` and the CLI prints it as is.
    """

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        text = f"{field}: {problem}" if field else problem
        if fix:
            text += f" ({fix})"
        super().__init__(text)


class PluginFailed(SpecError):
    """A plugin's code (a space's or a loop's constructor, a loop's step) raised.

    A ``SpecError`` still (a launch is refused with INVALID_ARGUMENT, a stored study is left
    unserved, the CLI prints one line), whose message promises that the server log has the
    traceback: whoever catches it on the server logs it with ``exc_info`` (the raised
    exception is its ``__cause__``).
    """
