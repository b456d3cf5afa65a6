"""Conformance suite for ``Stateful`` objects (``archsearch.worker._loop_state``): the hook
objects a resumed training saves and restores (DyLoRA's rank draws, a curriculum) and the
batches' position.

A subclass provides :meth:`make` (a fresh object, the same every call) and :meth:`advance`
(uses the object the way training does, returning what it gave). The suite checks that a
fresh object given another's state, through the file a resumed job reads back
(``torch.save`` then ``torch.load(weights_only=True)``), goes on to give exactly what the
other gives, and that the state does not change under its owner's later use.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor | np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _through_a_file(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


class StatefulConformance:
    """Subclass per implementation; override :meth:`make` and :meth:`advance`."""

    def make(self) -> Any:
        raise NotImplementedError

    def advance(self, obj: Any) -> Any:
        raise NotImplementedError

    def test_a_restored_copy_continues_exactly(self) -> None:
        original = self.make()
        for _ in range(3):
            self.advance(original)
        state = _through_a_file(original.state_dict())
        copy = self.make()
        copy.load_state_dict(state)
        for _ in range(4):
            assert _same(self.advance(copy), self.advance(original))

    def test_the_state_is_a_snapshot(self) -> None:
        obj = self.make()
        self.advance(obj)
        state = obj.state_dict()
        expected = [self.advance(obj) for _ in range(3)]
        fresh = self.make()
        fresh.load_state_dict(_through_a_file(state))  # taken before those three uses
        assert _same([self.advance(fresh) for _ in range(3)], expected)

    def test_a_fresh_object_differs_from_an_advanced_one(self) -> None:
        """The checks above can fail: the object's output depends on its state."""
        advanced, fresh = self.make(), self.make()
        for _ in range(3):
            self.advance(advanced)
        assert not _same(
            [self.advance(fresh) for _ in range(4)], [self.advance(advanced) for _ in range(4)]
        )
