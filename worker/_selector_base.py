"""The data-selector interface: :class:`DataSelector` and what it is asked
(:class:`SelectionPlan`). Implementations and their registry live in ``_selectors``; this module
is apart so that selectors in their own modules (``_dsir_selector``) import it without a cycle.
"""

from __future__ import annotations

import abc
import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from archsearch.worker._example import GlueExample


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
        seed: The seed of the generator the selector is given (its provenance names it).
    """

    task: str = ""
    split: str = "train"
    size: int = 0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    texts: Callable[[str], Sequence[str]] | None = None
    seed: int = 0


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
