"""How a FlexiBERT candidate starts (its fidelity), as the recipe declares it.

The recipe keys ``pretrain_steps``, ``pretrain_text`` and ``transfer_from``, checked into a
:class:`Fidelity` by :func:`check_fidelity`; ``_flexibert_pretrain.py`` acts on it. Light to
import (no torch), so the candidate's plan (``_plan``) can check them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: Recipe keys of the fidelities, with their JSON types.
FIDELITY_KEYS: dict[str, type] = {
    "pretrain_steps": int,
    "pretrain_text": str,
    "transfer_from": str,
}


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """How a candidate starts (see ``_flexibert_pretrain``'s module docstring).

    Attributes:
        pretrain_steps: MLM optimiser steps before fine-tuning (0: none).
        pretrain_text: A UTF-8 text file, one sentence per line, to pre-train on; None: the
            task's training sentences.
        transfer_from: A checkpoint folder of another FlexiBERT candidate; None: no transfer.
    """

    pretrain_steps: int = 0
    pretrain_text: str | None = None
    transfer_from: str | None = None

    @property
    def default(self) -> bool:
        """True when the candidate is fine-tuned from scratch."""
        return self.pretrain_steps == 0 and self.transfer_from is None


def check_fidelity(values: Mapping[str, Any]) -> Fidelity:
    """The :class:`Fidelity` of a recipe's fidelity keys (others are ignored).

    Raises:
        ValueError: A key has the wrong type or value; the message names it and the fix.
    """
    given = {k: values[k] for k in FIDELITY_KEYS if k in values}
    for key, value in given.items():
        kind = FIDELITY_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            wanted = "an integer" if kind is int else "a path string"
            raise ValueError(f"recipe.{key} must be {wanted}, got {value!r}")
    steps = given.get("pretrain_steps", 0)
    if steps < 0:
        raise ValueError(f"recipe.pretrain_steps must be >= 0, got {steps}")
    if "pretrain_text" in given and steps == 0:
        raise ValueError("recipe.pretrain_text needs recipe.pretrain_steps > 0")
    for key in ("pretrain_text", "transfer_from"):
        if key in given and not given[key]:
            raise ValueError(f"recipe.{key} must be a non-empty path")
    if "transfer_from" in given:
        from archsearch.worker._checkpoint_artifacts import parse_trial_ref

        parse_trial_ref(given["transfer_from"])  # ValueError for a malformed "trial:..." form
    return Fidelity(steps, given.get("pretrain_text"), given.get("transfer_from"))
