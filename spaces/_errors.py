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
