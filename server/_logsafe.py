"""Client-supplied text in log lines: escaped, so a newline or NUL cannot forge a log line."""

from __future__ import annotations

#: Longest client text a log line quotes; the rest is cut (the storage keeps the whole text).
MAX_LOGGED = 200


def loggable(text: object, limit: int = MAX_LOGGED) -> str:
    """``text`` as one printable line: ``repr``-escaped (newlines, NUL, control and non-ASCII
    characters appear as escapes, inside quotes) and cut to about ``limit`` characters.

    Example: ``loggable("boom\\n2026 INFO forged")`` is ``'boom\\\\n2026 INFO forged'``.
    """
    s = str(text)
    cut = len(s) > limit
    out = ascii(s[:limit])
    return f"{out}...({len(s)} chars)" if cut else out
