"""The data-selector stage: which of a source's examples a candidate trains on.

Between the data source and tokenising. A candidate's ``data.selection`` (``{"method": ...}``,
checked by :func:`archsearch.spaces.validate_data`) picks the selector for the training split;
then ``train_subset`` / ``eval_subset`` take a seeded random slice (the ``random`` selector), so
"the first N after a seeded shuffle" means the same thing whatever was selected before.

Importance-resampling selection plugs in here:
:class:`~archsearch.worker._dsir_selector.DsirSelector` (``dsir``), registered in
:data:`SELECTORS` and known to ``validate_data``. A selector checks its own options' values
(:meth:`DataSelector.check_options`; ``validate_data`` checks their JSON types) and reports
what it chose as trial info (:meth:`DataSelector.provenance`).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from archsearch.spaces import SpecError, validate_selection
from archsearch.worker._dsir_selector import DsirSelector
from archsearch.worker._example import GlueExample
from archsearch.worker._selector_base import DataSelector, SelectionPlan

__all__ = [
    "SELECTORS",
    "DataSelector",
    "DsirSelector",
    "IdentitySelector",
    "RandomSelector",
    "SelectionPlan",
    "make_selector",
    "select_examples",
    "select_with_provenance",
    "take_subset",
]

_T = TypeVar("_T")

log = logging.getLogger(__name__)


class IdentitySelector(DataSelector):
    """Keeps every example in source order (``{"method": "none"}``)."""

    name = "none"

    def select(
        self, examples: Sequence[GlueExample], plan: SelectionPlan, rng: random.Random
    ) -> list[GlueExample]:
        return list(examples)


class RandomSelector(DataSelector):
    """The first ``size`` examples after a shuffle by ``rng`` (``{"method": "random",
    "size": N}``; ``plan.size`` when the options give none). Size 0, or at least the split's
    length, keeps the whole split in source order, so "the whole split" is the same for every
    seed."""

    name = "random"

    def __init__(self) -> None:
        self._info: dict[str, str] = {}

    def select(
        self, examples: Sequence[GlueExample], plan: SelectionPlan, rng: random.Random
    ) -> list[GlueExample]:
        size = int(plan.options.get("size", plan.size))
        indices = _seeded_indices(len(examples), size, rng)
        chosen = [examples[i] for i in indices]
        digest = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
        self._info = {
            "selection": self.name,
            "selection_kept": f"{len(chosen)} of {len(examples)}",
            # as DSIR's: which examples, and the seed that drew them
            "selection_ids_hash": f"sha256:{digest}",
            "selection_seed": str(plan.seed),
        }
        if 0 < len(examples) <= size:
            warning = (
                f"size {size} is not below the {plan.task} {plan.split} split's "
                f"{len(examples)} examples: every example was kept, so any size from "
                f"{len(examples)} up trains on the same data"
            )
            self._info["selection_warning"] = warning
            log.warning("data.selection random: %s", warning)
        return chosen

    def provenance(self) -> dict[str, str]:
        """How many examples the selection kept, of how many (and a warning when it kept them
        all: a data search whose sizes reach past the split tries the same data twice)."""
        return dict(self._info)


#: Selectors by ``data.selection.method``.
SELECTORS: dict[str, type[DataSelector]] = {
    IdentitySelector.name: IdentitySelector,
    RandomSelector.name: RandomSelector,
    DsirSelector.name: DsirSelector,
}


def make_selector(selection: Mapping[str, Any] | None) -> tuple[DataSelector, dict[str, Any]]:
    """The selector a ``data.selection`` object names, and its options (the other fields).

    Raises:
        SpecError: An unknown method or option (as :func:`archsearch.spaces.validate_data`).
    """
    checked = validate_selection(dict(selection or {"method": "none"}))
    method = checked.pop("method")
    if method not in SELECTORS:  # validate_selection knows a method this worker lacks
        raise SpecError("data.selection.method", f"this worker has no selector {method!r}")
    selector = SELECTORS[method]()
    return selector, selector.check_options(checked)


def select_examples(
    examples: Sequence[GlueExample],
    *,
    task: str,
    split: str,
    selection: Mapping[str, Any] | None,
    subset: int,
    seed: int,
) -> list[GlueExample]:
    """The selector stage for one split: ``selection``'s method (training split only, so
    every candidate is scored on the same dev data), then the ``subset`` slice.

    Each step draws from its own ``random.Random(seed)``, so a candidate without a selection
    gets exactly the slice :func:`take_subset` gives.
    """
    return select_with_provenance(
        examples, task=task, split=split, selection=selection, subset=subset, seed=seed
    )[0]


def select_with_provenance(
    examples: Sequence[GlueExample],
    *,
    task: str,
    split: str,
    selection: Mapping[str, Any] | None,
    subset: int,
    seed: int,
    texts: Callable[[str], Sequence[str]] | None = None,
) -> tuple[list[GlueExample], dict[str, str]]:
    """:func:`select_examples`, and the selector's provenance (trial info entries).

    Args:
        texts: Reads a source name's texts, for selectors with a target (``dsir``).
    """
    info: dict[str, str] = {}
    selected = False
    if split == "train":
        selector, options = make_selector(selection)
        selected = selector.name != "none"
        plan = SelectionPlan(task=task, split=split, options=options, texts=texts, seed=seed)
        examples = selector.select(examples, plan, random.Random(seed))
        info = selector.provenance()
    chosen = _seeded_subset(examples, subset, random.Random(seed))
    if split == "train" and 0 < len(examples) <= subset:  # a dev subset past the split: all
        of = (
            f"the {len(examples)} examples data.selection kept"
            if selected
            else f"the {task} train split's {len(examples)} examples"
        )
        warning = (
            f"{subset} is not below {of}: every one was kept, so any train_subset from "
            f"{len(examples)} up trains on the same data"
        )
        info["train_subset_warning"] = warning  # show: "train_subset: 30 is not below ..."
        log.warning("data.train_subset %s", warning)
    if split == "train" and (selected or subset):  # what the selection sizes do not say
        info["train_examples"] = str(len(chosen))
    return chosen, info


def take_subset(items: Sequence[_T], size: int, seed: int) -> list[_T]:
    """The first ``size`` items after a shuffle seeded by ``seed``: reproducible slices.

    Args:
        items: The whole split.
        size: How many to keep; 0 (or at least ``len(items)``) keeps the whole split in its
            original order, so "the whole split" means the same thing for every seed.
        seed: Shuffle seed (the recipe's seed).

    Returns:
        A new list.
    """
    return _seeded_subset(items, size, random.Random(seed))


def _seeded_subset(items: Sequence[_T], size: int, rng: random.Random) -> list[_T]:
    return [items[i] for i in _seeded_indices(len(items), size, rng)]


def _seeded_indices(n: int, size: int, rng: random.Random) -> list[int]:
    """The positions :func:`_seeded_subset` keeps of ``n`` items: all, in order, for size 0
    or at least ``n``; else the first ``size`` of a shuffle by ``rng``."""
    if size < 0:
        raise ValueError(f"subset size must be >= 0, got {size}")
    if size == 0 or size >= n:
        return list(range(n))
    order = list(range(n))
    rng.shuffle(order)
    return order[:size]
