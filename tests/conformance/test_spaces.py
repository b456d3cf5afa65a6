"""Every registered design space runs :class:`SpaceConformance` (see ``space_suite.py``)."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import pytest
from _procs import TABLE

from archsearch.spaces import (
    SPACES,
    BertSpace,
    DesignSpace,
    FlexiBertSmallSpace,
    FlexiBertSpace,
    SpecError,
)
from conformance.space_suite import SpaceConformance

GOOD_BERT = {
    "num_hidden_layers": 4,
    "hidden_size": 256,
    "num_attention_heads": 2,
    "intermediate_size": 512,
}


class TestBertSpace(SpaceConformance):
    invalid_architectures: ClassVar[list[tuple[Any, str]]] = [
        (
            {**GOOD_BERT, "num_hidden_layers": 5},
            "architecture.num_hidden_layers",
        ),
        (
            {**GOOD_BERT, "num_attention_heads": 3},
            "architecture.num_attention_heads",
        ),
    ]

    def make_space(self) -> DesignSpace:
        return BertSpace()


class TestFlexiBertSpace(SpaceConformance):
    invalid_architectures: ClassVar[list[tuple[Any, str]]] = [
        ({"l": 3, "o": [], "p": [], "h": [], "n": [], "f": []}, "architecture.l"),
    ]

    def make_space(self) -> DesignSpace:
        return FlexiBertSpace()


class TestHierarchicalFlexiBertSpace(TestFlexiBertSpace):
    def make_space(self) -> DesignSpace:
        return FlexiBertSpace(hierarchical=True)


class TestFlexiBertSmallSpace(SpaceConformance):
    invalid_architectures: ClassVar[list[tuple[Any, str]]] = [
        ({"l": 3, "a": [], "h": [], "s": [], "f": []}, "architecture.l"),
        (
            {"l": 2, "a": [2, 2], "h": [128, 100], "s": ["sdp"] * 2, "f": [512] * 2},
            "architecture.h",
        ),
    ]

    def make_space(self) -> DesignSpace:
        return FlexiBertSmallSpace()


class TestFlexiBertSmallTableSpace(TestFlexiBertSmallSpace):
    """Members are the table's scored rows: suggestions map to the nearest member."""

    def make_space(self) -> DesignSpace:
        return FlexiBertSmallSpace(table=str(TABLE), task="sst2")

    def test_a_row_the_table_lacks_is_refused(self) -> None:
        space, free = self.make_space(), FlexiBertSmallSpace()
        rng = random.Random(0)
        outside = next(
            a
            for a in (free.sample(rng) for _ in range(500))
            if space.describe(a) not in space.members
        )  # type: ignore[attr-defined]
        with pytest.raises(SpecError, match="no sst2 score") as e:
            space.validate(outside)
        assert e.value.field == "architecture"


def test_every_registered_space_runs_the_suite() -> None:
    covered = {
        type(cls().make_space()).name
        for cls in globals().values()
        if isinstance(cls, type)
        and issubclass(cls, SpaceConformance)
        and cls is not SpaceConformance
    }
    assert covered == set(SPACES), "add a SpaceConformance subclass for each new space"
