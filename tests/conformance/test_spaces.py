"""Every registered design space runs :class:`SpaceConformance` (see ``space_suite.py``)."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import pytest
from _procs import TABLE

from archsearch.spaces import (
    SPACES,
    AutoDistilSpace,
    BertSpace,
    DesignSpace,
    FlexiBertSmallSpace,
    FlexiBertSpace,
    LoraSpace,
    MutableSpace,
    SpecError,
    make_space,
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


GOOD_LORA = {"learning_rate": 1e-3, "alpha": 16, "targets": ["query", "value"], "r_max": 8}


class TestLoraSpace(SpaceConformance):
    invalid_architectures: ClassVar[list[tuple[Any, str]]] = [
        ({**GOOD_LORA, "learning_rate": 1.0}, "architecture.learning_rate"),
        ({**GOOD_LORA, "alpha": 12}, "architecture.alpha"),
        ({**GOOD_LORA, "targets": ["key"]}, "architecture.targets"),
        ({**GOOD_LORA, "r_max": 16}, "architecture.r_max"),
        ({**GOOD_LORA, "rank": 4}, "architecture.rank"),
    ]

    def make_space(self) -> DesignSpace:
        return LoraSpace(r_max=[4, 8])

    def test_settings_go_into_the_recipe_with_an_empty_architecture(self) -> None:
        space = LoraSpace(mode="lora")
        study = {"max_steps": 6, "learning_rate": 5e-4, "lora": {"model": "/m", "r_max": 2}}
        arch, recipe = space.candidate_parts({**GOOD_LORA, "r_max": 8}, study)
        assert arch == {}
        assert recipe["learning_rate"] == 1e-3 and recipe["max_steps"] == 6
        assert recipe["lora"] == {
            "model": "/m",
            "mode": "lora",
            "alpha": 16,
            "targets": ["query", "value"],
            "r_max": 8,
        }
        assert study["lora"] == {"model": "/m", "r_max": 2}  # the study's recipe is not changed

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"learning_rate": [1e-2, 1e-4]}, "space_options.learning_rate"),
            ({"alpha": [0]}, "space_options.alpha"),
            ({"targets": [[]]}, "space_options.targets"),
            ({"r_max": [0]}, "space_options.r_max"),
            ({"mode": "lora-fa"}, "space_options.mode"),
        ],
    )
    def test_bad_options_name_the_option(self, options: dict[str, Any], field: str) -> None:
        with pytest.raises(SpecError) as e:
            LoraSpace(**options)
        assert e.value.field == field

    @pytest.mark.parametrize(
        ("options", "lora", "field", "says"),
        [
            ({}, {"r_max": 4}, "recipe.lora.r_max", "set by the lora space"),
            ({}, {"rank": 4}, "recipe.lora", "unknown keys ['rank']"),
            ({}, {"frozen": "yes"}, "recipe.lora.frozen", "true or false"),
            ({}, {"dropout": 1.5}, "recipe.lora.dropout", "[0, 1)"),
            ({}, {"rank_dist": "geometric"}, "recipe.lora.rank_dist", "must be one of"),
            ({}, {"model": " "}, "recipe.lora.model", "local folder or a hub name"),
            ({}, {"eval_ranks": []}, "recipe.lora.eval_ranks", "non-empty list"),
            # checked against every r_max choice: 6 is fine at 8, not at 4
            ({"r_max": [4, 8]}, {"eval_ranks": [6]}, "recipe.lora.eval_ranks", "1..r_max (4)"),
            # plain LoRA (the space's mode) has no frozen/strict components
            ({"mode": "lora"}, {"strict": True}, "recipe.lora.strict", "mode 'dylora' only"),
            ({}, [], "recipe.lora", "JSON object"),
        ],
    )
    def test_a_bad_study_recipe_lora_is_refused_with_the_workers_rules(
        self, options: dict[str, Any], lora: Any, field: str, says: str
    ) -> None:
        with pytest.raises(SpecError) as e:
            LoraSpace(**options).check_recipe({"lora": lora})
        assert e.value.field == field
        assert says in str(e.value)

    def test_a_good_study_recipe_lora_passes(self) -> None:
        space = LoraSpace(r_max=[4, 8])
        space.check_recipe({})
        space.check_recipe({"lora": {"model": "/m", "eval_ranks": [1, 4], "dropout": 0.1}})
        space.check_recipe({"lora": {"frozen": False, "strict": True}})


def test_only_the_lora_space_takes_recipe_lora() -> None:
    with pytest.raises(SpecError) as e:
        make_space("bert", {}).check_recipe({"lora": {}})
    assert e.value.field == "recipe.lora" and "lora space only" in str(e.value)


@pytest.mark.parametrize(
    "space",
    [BertSpace(), FlexiBertSpace(), FlexiBertSpace(hierarchical=True), FlexiBertSmallSpace()],
    ids=lambda s: s.name,
)
def test_architecture_spaces_mutate(space: DesignSpace) -> None:
    """Every space of architectures can mutate them (evolution and local search need it);
    ``lora`` searches training settings with a continuous learning rate, and does not."""
    assert isinstance(space, MutableSpace)
    assert not isinstance(LoraSpace(), MutableSpace)


TINY = {"layers": 1, "heads": 2, "hidden": 64, "intermediate": 128}


class TestAutoDistilSpace(SpaceConformance):
    """Sub-spaces (supernet and rank jobs) and students (train jobs) of the minilm-k3 preset."""

    invalid_architectures: ClassVar[list[tuple[Any, str]]] = [
        ({"teacher": "bert-base-uncased", "student": TINY}, "architecture.teacher"),
        ({"teacher": "all-MiniLM-L6-v2", "student": TINY}, "architecture.student"),
        (
            {"teacher": "all-MiniLM-L6-v2", "student": {**TINY, "layers": 7}},
            "architecture.student.layers",
        ),
        (
            {
                "teacher": "all-MiniLM-L6-v2",
                "subspace": {"name": "tiny", "layers": [0.5], "heads": [0.5], "mlp_ratio": [2.0]},
            },
            "architecture.subspace",
        ),
        ({"teacher": "all-MiniLM-L6-v2"}, "architecture"),
    ]

    def make_space(self) -> DesignSpace:
        return AutoDistilSpace()


def test_every_registered_space_runs_the_suite() -> None:
    covered = {
        type(cls().make_space()).name
        for cls in globals().values()
        if isinstance(cls, type)
        and issubclass(cls, SpaceConformance)
        and cls is not SpaceConformance
    }
    assert covered == set(SPACES), "add a SpaceConformance subclass for each new space"
