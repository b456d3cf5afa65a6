"""A study whose candidates all fail the same way stops instead of spending its budget.

A reason shared by every failure (a custom task's file that does not parse, a recipe value
the trainer refuses, a data field every worker rejects) is the study's, not its candidates':
each new candidate fails in a second with it, and the study ended "completed (no result)"
with its whole budget spent. Once :data:`SAME_FAILURES` distinct candidates in a row have
failed for good with one reason, before any candidate of the study has trained (completed or
pruned), the study stops with that reason and the fix (``archsearch resume`` goes on). After
a candidate has trained, failures are the candidates' own (a region of the space that does
not fit in memory) and the study goes on.
"""

from __future__ import annotations

import shlex

from archsearch.server._index import StudyIndex

#: Distinct candidates failing in a row with one reason, nothing trained yet: the study stops.
SAME_FAILURES = 3


def same_failure(idx: StudyIndex, reason: str) -> int:
    """Counts a candidate's final failure with ``reason``; returns how many in a row failed
    with it (0 once a candidate of the study has trained: the streak no longer matters).
    Caller holds the study's lock."""
    if idx.done or idx.pruned:
        idx.fail_streak = ("", 0)
        return 0
    last, count = idx.fail_streak
    count = count + 1 if reason == last else 1
    idx.fail_streak = (reason, count)
    return count


def stop_reason(name: str, count: int, reason: str) -> str:
    """What a study stopped this way says (``show``, ``studies``, a worker bound to it)."""
    return (
        f"stopped: its first {count} candidates failed with the same error, before any "
        f"trained: {reason}; fix that, then `archsearch resume {shlex.quote(name)}` goes on"
    )
