"""Exponential backoff with full jitter, for calls to a server that may be down."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter: 0.2 s doubling up to ``cap`` seconds."""

    def __init__(self, base: float = 0.2, cap: float = 5.0) -> None:
        self.base, self.cap, self.n = base, cap, 0

    def next(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.n))
        self.n = min(self.n + 1, 30)
        return delay

    def reset(self) -> None:
        self.n = 0
