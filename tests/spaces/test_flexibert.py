"""The FlexiBERT design space: sizes, enumeration, validation, Optuna parameters, conversions."""

from __future__ import annotations

import collections
import copy
import random
from typing import Any

import optuna
import pytest
from _procs import TABLE
from optuna.trial import FixedTrial

from archsearch.spaces import SpecError, load_table
from archsearch.spaces._flexibert import ENUMERATE_LIMIT, FlexiBertSpace
from archsearch.spaces._graph import architecture_graph, node_labels

MINI: dict[str, Any] = {
    "l": 4,
    "o": ["sa", "sa", "l", "l"],
    "p": ["sdp", "sdp", "dct", "dct"],
    "h": [256, 256, 128, 128],
    "n": [2, 2, 4, 4],
    "f": [[512, 512, 512], [512, 512, 512], [1024], [1024]],
}

SPACES: dict[str, dict[str, Any]] = {
    "test": {},
    "hierarchical": {"hierarchical": True},
    "homogeneous-ff": {"heterogeneous_ff": False},
    "large": {"variant": "large"},
    "large-hierarchical-heteroff": {
        "variant": "large",
        "hierarchical": True,
        "heterogeneous_ff": True,
    },
}


@pytest.fixture(scope="module")
def hierarchical_archs() -> list[dict[str, Any]]:
    return list(FlexiBertSpace(hierarchical=True).enumerate())


def test_sizes_match_the_paper() -> None:
    space = FlexiBertSpace()
    # 6 op/param pairs x 2 hidden x 2 heads x (2 one-layer FF + 2**3 three-layer FF) = 240
    assert len(space.unit_choices) == 240
    assert space.size() == 240**2 + 240**4 == 3_317_817_600
    hierarchical = FlexiBertSpace(hierarchical=True)
    # pairs of layers share choices; FF stacks homogeneous: 6 x 2 x 2 x (2 depths x 2 widths)
    assert len(hierarchical.unit_choices) == 96
    assert hierarchical.size() == 96 + 96**2 == 9_312
    homogeneous = FlexiBertSpace(heterogeneous_ff=False)
    assert homogeneous.size() == 96**2 + 96**4
    large = FlexiBertSpace(variant="large")
    # 7 op/param pairs (c-13 added) x 3 x 3 x (4 + 4**2 + 4**3) = 5,292 per layer
    assert len(large.unit_choices) == 5_292
    assert large.size() == 5_292**2 + 5_292**4 + 5_292**6


def test_hierarchical_enumeration_is_complete_distinct_valid_and_paired(
    hierarchical_archs: list[dict[str, Any]],
) -> None:
    space = FlexiBertSpace(hierarchical=True)
    assert len(hierarchical_archs) == 9_312
    assert len({space.fingerprint(a) for a in hierarchical_archs}) == 9_312
    assert len({space.describe(a) for a in hierarchical_archs}) == 9_312
    layer_counts = collections.Counter(a["l"] for a in hierarchical_archs)
    assert layer_counts == {2: 96, 4: 96**2}
    for arch in hierarchical_archs:
        assert space.validate(arch) == arch
        for key in "ophnf":
            assert arch[key][0::2] == arch[key][1::2]  # layers 2k and 2k+1 share every choice
        assert all(len(set(stack)) == 1 for stack in arch["f"])  # homogeneous FF
    # deterministic order
    again = list(space.enumerate())
    assert again[0] == hierarchical_archs[0] and again[-1] == hierarchical_archs[-1]
    assert hierarchical_archs[0] == {
        "l": 2,
        "o": ["sa", "sa"],
        "p": ["sdp", "sdp"],
        "h": [128, 128],
        "n": [2, 2],
        "f": [[512], [512]],
    }


def test_graph_hashes_of_the_hierarchical_library_are_distinct(
    hierarchical_archs: list[dict[str, Any]],
) -> None:
    space = FlexiBertSpace(hierarchical=True)
    # all 2-layer ones and a fixed sample of the 4-layer ones (the whole library takes ~10 s)
    chosen = hierarchical_archs[:96] + random.Random(0).sample(hierarchical_archs[96:], 600)
    assert len({space.graph_hash(a) for a in chosen}) == len(chosen)


def test_huge_spaces_are_not_enumerated() -> None:
    space = FlexiBertSpace()
    assert space.size() > ENUMERATE_LIMIT
    assert list(space.enumerate()) == []  # library loops then sample instead
    first = [a for _, a in zip(range(3), space.iter_architectures(), strict=False)]
    assert [space.validate(a) for a in first] == first
    assert first[0]["l"] == 2 and first[1]["f"] == [[512], [1024]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"l": 3}, "architecture.l"),
        ({"l": True}, "architecture.l"),
        ({"h": [256, 256, 128]}, "architecture.h"),
        ({"o": ["sa", "sa", "x", "l"]}, "architecture.o[2]"),
        ({"p": ["sdp", "sdp", "sdp", "dct"]}, "architecture.p[2]"),  # sdp is not a linear op
        ({"o": ["sa", "c", "l", "l"], "p": ["sdp", "13", "dct", "dct"]}, "architecture.p[1]"),
        ({"h": [256, 256, 512, 128]}, "architecture.h[2]"),
        ({"n": [2, 2, 4, 8]}, "architecture.n[3]"),
        ({"f": [[512, 512], [512, 512, 512], [1024], [1024]]}, "architecture.f[0]"),
        ({"f": [[512, 512, 512], [512, 2048, 512], [1024], [1024]]}, "architecture.f[1][1]"),
        ({"f": [[512, 512, 512], [512, 512, 512], [1024], "1024"]}, "architecture.f[3]"),
        ({"x": 1}, "architecture.x"),
    ],
)
def test_validation_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        FlexiBertSpace().validate({**MINI, **change})
    assert err.value.field == field


def test_validation_of_missing_keys_and_space_constraints() -> None:
    with pytest.raises(SpecError) as err:
        FlexiBertSpace().validate({k: v for k, v in MINI.items() if k != "n"})
    assert err.value.field == "architecture.n"
    with pytest.raises(SpecError, match="homogeneous") as err:
        FlexiBertSpace(heterogeneous_ff=False).validate(
            {**MINI, "f": [[512, 1024, 512], [512, 512, 512], [1024], [1024]]}
        )
    assert err.value.field == "architecture.f[0]"
    # MINI's layers 0 and 1 match, 2 and 3 match, and its FF stacks are homogeneous
    assert FlexiBertSpace(hierarchical=True).validate(MINI) == MINI
    unpaired = copy.deepcopy(MINI)
    unpaired["n"][3] = 2
    with pytest.raises(SpecError, match="pair") as err:
        FlexiBertSpace(hierarchical=True).validate(unpaired)
    assert err.value.field == "architecture.n[3]"


def test_validation_normalises_int_kernels() -> None:
    space = FlexiBertSpace()
    arch = {**MINI, "o": ["c", "c", "l", "l"], "p": [9, "9", "dct", "dct"]}
    out = space.validate(arch)
    assert out["p"] == ["9", "9", "dct", "dct"]
    assert space.fingerprint(arch) == space.fingerprint(out)
    assert space.fingerprint(arch) != space.fingerprint(MINI)
    assert len(space.fingerprint(MINI)) == 64


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"variant": "huge"}, "space_options.variant"),
        ({"hierarchical": "yes"}, "space_options.hierarchical"),
        ({"heterogeneous_ff": 1}, "space_options.heterogeneous_ff"),
        ({"layers": [2]}, "space_options.layers"),
    ],
)
def test_bad_options(options: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        FlexiBertSpace(**options)
    assert err.value.field == field


def test_options_and_defaults() -> None:
    assert FlexiBertSpace().options() == {
        "variant": "test",
        "hierarchical": False,
        "heterogeneous_ff": True,
    }
    assert FlexiBertSpace(hierarchical=True).options()["heterogeneous_ff"] is False


def test_sampling_is_valid_seeded_and_uniform_per_layer() -> None:
    space = FlexiBertSpace()
    draws = [space.sample(random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(2000)]
    assert all(space.validate(a) == a for a in archs)
    layers = collections.Counter(a["l"] for a in archs)
    assert 900 < layers[2] < 1100  # layer count uniform over {2, 4}
    depths = collections.Counter(len(stack) for a in archs for stack in a["f"])
    # uniform over the 240 layer choices: 8 of each 10 FF stacks have three layers
    assert 0.76 < depths[3] / sum(depths.values()) < 0.84
    ops = collections.Counter(o for a in archs for o in a["o"])
    assert 0.30 < ops["c"] / sum(ops.values()) < 0.37  # 2 of 6 op/param pairs


@pytest.mark.parametrize("name", list(SPACES))
def test_suggest_rebuilds_every_sampled_architecture(name: str) -> None:
    space = FlexiBertSpace(**SPACES[name])
    rng = random.Random(1)
    for _ in range(150):
        arch = space.sample(rng)
        params = space.to_params(arch)
        trial = FixedTrial(params)
        assert space.suggest(trial) == arch
        assert trial.params == params  # to_params is exactly what suggest sets


def test_parameter_names_are_readable_and_stable() -> None:
    space = FlexiBertSpace()
    assert space.to_params(MINI) == {
        "num_layers": 4,
        **{f"l{i}.op": "sa-sdp" for i in (0, 1)},
        **{f"l{i}.op": "l-dct" for i in (2, 3)},
        **{f"l{i}.hidden": h for i, h in enumerate(MINI["h"])},
        **{f"l{i}.heads": n for i, n in enumerate(MINI["n"])},
        **{f"l{i}.ff_depth": d for i, d in enumerate([3, 3, 1, 1])},
        **{f"l{i}.ff{j}": 512 for i in (0, 1) for j in range(3)},
        "l2.ff0": 1024,
        "l3.ff0": 1024,
    }
    assert FlexiBertSpace(hierarchical=True).to_params(MINI) == {
        "num_layers": 4,
        "s0.op": "sa-sdp",
        "s0.hidden": 256,
        "s0.heads": 2,
        "s0.ff_depth": 3,
        "s0.ff_width": 512,
        "s1.op": "l-dct",
        "s1.hidden": 128,
        "s1.heads": 4,
        "s1.ff_depth": 1,
        "s1.ff_width": 1024,
    }
    # Optuna refuses a name whose distribution changes; 40 random trials must all succeed.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(40):
        trial = study.ask()
        arch = space.suggest(trial)
        study.tell(trial, float(arch["l"]))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_enqueued_parameters_rebuild_the_architecture() -> None:
    space = FlexiBertSpace(variant="large")
    study = optuna.create_study()
    arch = {
        "l": 2,
        "o": ["c", "l"],
        "p": ["13", "dft"],
        "h": [512, 128],
        "n": [8, 2],
        "f": [[4096, 512], [2048]],
    }
    study.enqueue_trial(space.to_params(arch))
    assert space.suggest(study.ask()) == arch


def test_describe() -> None:
    space = FlexiBertSpace()
    assert space.describe(MINI) == (
        "L4[2x256 sa-sdp f512-512-512 | 2x256 sa-sdp f512-512-512 | 4x128 l-dct f1024 | "
        "4x128 l-dct f1024]"
    )


def test_graphs_of_the_space() -> None:
    space = FlexiBertSpace(variant="large")
    vocabulary = set(space.graph_labels())
    rng = random.Random(2)
    for _ in range(50):
        arch = space.sample(rng)
        labels = node_labels(space.graph(arch))
        assert labels == node_labels(architecture_graph(arch))
        assert set(labels) <= vocabulary
    assert space.graph_hash(MINI) == space.graph_hash(copy.deepcopy(MINI))
    assert space.graph_hash(MINI) != space.graph_hash({**MINI, "n": [2, 2, 4, 2]})


def test_small_table_rows_convert_both_ways() -> None:
    rows = load_table(TABLE).architectures
    large = FlexiBertSpace(variant="large")
    for row in rows:
        arch = large.from_small(row)
        assert arch["o"] == ["sa"] * row["l"]
        assert arch["p"] == row["s"] and arch["n"] == row["a"] and arch["h"] == row["h"]
        assert arch["f"] == [[f] for f in row["f"]]
        assert large.to_small(arch) == row
    # the test variant has no FF width 2048: those rows are outside it
    test = FlexiBertSpace()
    converted = 0
    for row in rows:
        if 2048 in row["f"]:
            with pytest.raises(SpecError) as err:
                test.from_small(row)
            assert err.value.field == f"architecture.f[{row['f'].index(2048)}][0]"
        else:
            assert test.to_small(test.from_small(row)) == row
            converted += 1
    assert converted > 0


def test_to_small_refuses_what_the_small_format_cannot_express() -> None:
    space = FlexiBertSpace(variant="large")
    with pytest.raises(SpecError) as err:
        space.to_small(MINI)  # three FF layers in layer 0
    assert err.value.field == "architecture.f[0]"
    one_ff = {**MINI, "f": [[512], [512], [1024], [1024]]}
    with pytest.raises(SpecError) as err:
        space.to_small(one_ff)  # layer 2 is a linear transform
    assert err.value.field == "architecture.o[2]"
    big_ff = {**one_ff, "o": ["sa"] * 4, "p": ["sdp"] * 4, "f": [[4096], [512], [512], [512]]}
    with pytest.raises(SpecError) as err:
        space.to_small(big_ff)  # flexibert-small has no FF width 4096
    assert err.value.field == "architecture.f"
    with pytest.raises(SpecError):
        space.from_small(
            {"l": 2, "a": [2, 2], "h": [128, 128], "s": ["sdp", "xyz"], "f": [512, 512]}
        )
