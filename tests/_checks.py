"""A trial's ``should_stop`` that counts its calls and asks to stop at one of them, for the tests
of jobs that stop and continue."""

from __future__ import annotations


class Checks:
    """A ``should_stop`` that counts its calls (one per micro-batch or step, one per report)
    and asks to stop at call ``stop_at`` (never when 0)."""

    def __init__(self, stop_at: int = 0) -> None:
        self.calls, self.stop_at = 0, stop_at

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls == self.stop_at
