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

import abc
import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from archsearch.spaces import SpecError, validate_selection
from archsearch.worker._example import GlueExample

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class SelectionPlan:
    """What a selector is asked to do for one split.

    Attributes:
        task: The task id.
        split: The split ("train", "dev", ...).
        size: How many examples to keep; 0 keeps them all (the ``random`` selector reads it).
        options: The ``data.selection`` object's other fields (the method's own settings).
        texts: Reads the texts of a source name (the task's own splits, ``glue:``, files;
            :mod:`~archsearch.worker._text_pools`), for selectors that need a target; None
            where no source is at hand.
    """

    task: str = ""
    split: str = "train"
    size: int = 0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    texts: Callable[[str], Sequence[str]] | None = None


class DataSelector(abc.ABC):
    """Chooses the examples of a split to use, from everything its source loaded.

    Implementations today (by ``data.selection.method``):

    * :class:`IdentitySelector` (``"none"``, the default): every example, in source order.
    * :class:`RandomSelector` (``"random"``): a seeded random subset; also what
      ``train_subset`` and ``eval_subset`` apply after the method.
    * :class:`~archsearch.worker._dsir_selector.DsirSelector` (``"dsir"``): importance
      resampling towards a target text (DSIR).
    """

    #: The ``data.selection.method`` value that picks this selector.
    name: ClassVar[str]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The method's options with defaults filled in, their values checked.

        Raises:
            SpecError: A value the method cannot use; the field is named.
        """
        return dict(options)

    def provenance(self) -> dict[str, str]:
        """What the last :meth:`select` chose, as trial ``info`` entries (none by default)."""
        return {}

    @abc.abstractmethod
    def select(
        self, examples: Sequence[GlueExample], plan: SelectionPlan, rng: random.Random
    ) -> list[GlueExample]:
        """The selected examples (a new list; ``examples`` is not changed).

        Args:
            examples: Everything the source loaded for the split.
            plan: The task, split, size and the method's options.
            rng: The randomness to use, seeded from the recipe's seed, so a selection is
                reproducible.
        """


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

    def select(
        self, examples: Sequence[GlueExample], plan: SelectionPlan, rng: random.Random
    ) -> list[GlueExample]:
        return _seeded_subset(examples, int(plan.options.get("size", plan.size)), rng)


#: Selectors by ``data.selection.method``.
SELECTORS: dict[str, type[DataSelector]] = {
    IdentitySelector.name: IdentitySelector,
    RandomSelector.name: RandomSelector,
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
    if split == "train":
        selector, options = make_selector(selection)
        plan = SelectionPlan(task=task, split=split, options=options, texts=texts)
        examples = selector.select(examples, plan, random.Random(seed))
        info = selector.provenance()
    plan = SelectionPlan(task=task, split=split, size=subset)
    return RandomSelector().select(examples, plan, random.Random(seed)), info


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
    if size < 0:
        raise ValueError(f"subset size must be >= 0, got {size}")
    if size == 0 or size >= len(items):
        return list(items)
    order = list(range(len(items)))
    rng.shuffle(order)
    return [items[i] for i in order[:size]]


# Registered after the base classes exist: the module imports DataSelector from here.
from archsearch.worker._dsir_selector import DsirSelector  # noqa: E402

SELECTORS[DsirSelector.name] = DsirSelector
