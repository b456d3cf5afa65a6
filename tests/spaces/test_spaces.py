"""Design spaces and candidates: validation, sampling, Optuna parameters and back."""

from __future__ import annotations

import json
import random

import optuna
import pytest
from _procs import TABLE

from archsearch.spaces import (
    BertSpace,
    Candidate,
    FlexiBertSmallSpace,
    SpecError,
    bert_parameter_count,
    load_table,
    make_space,
)


def _roundtrip(space, arch):
    """enqueue(to_params(arch)) + suggest rebuilds arch: the flattened form is complete."""
    study = optuna.create_study()
    study.enqueue_trial(space.to_params(arch))
    trial = study.ask()
    return space.suggest(trial), trial.params


def test_bert_space_only_valid_combinations() -> None:
    space = BertSpace(hidden_size=[96, 128], num_attention_heads=[3, 4, 8])
    # 3 divides 96 but not 128: heads become a per-hidden conditional parameter
    assert not space.shared_heads
    assert space.valid_heads == {96: [3, 4, 8], 128: [4, 8]}
    rng = random.Random(0)
    for _ in range(200):
        arch = space.sample(rng)
        assert arch["hidden_size"] % arch["num_attention_heads"] == 0
        assert space.validate(arch) == arch
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        t = study.ask()
        arch = space.suggest(t)
        assert arch["hidden_size"] % arch["num_attention_heads"] == 0
        assert f"num_attention_heads@h{arch['hidden_size']}" in t.params
        study.tell(t, 0.0)


@pytest.mark.parametrize(
    ("arch", "field"),
    [
        (
            {
                "num_hidden_layers": 2,
                "hidden_size": 128,
                "num_attention_heads": 3,
                "intermediate_size": 256,
            },
            "num_attention_heads",
        ),
        (
            {
                "num_hidden_layers": 5,
                "hidden_size": 128,
                "num_attention_heads": 2,
                "intermediate_size": 256,
            },
            "num_hidden_layers",
        ),
        (
            {
                "num_hidden_layers": 2,
                "hidden_size": 128,
                "num_attention_heads": 2,
                "intermediate_size": 300,
            },
            "intermediate_size",
        ),
        (
            {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2},
            "intermediate_size",
        ),
        (
            {
                "num_hidden_layers": "2",
                "hidden_size": 128,
                "num_attention_heads": 2,
                "intermediate_size": 256,
            },
            "num_hidden_layers",
        ),
        ([], "architecture"),
    ],
)
def test_bert_space_rejects(arch, field: str) -> None:
    with pytest.raises(SpecError) as e:
        BertSpace().validate(arch)
    assert field in str(e.value)


def test_bert_roundtrip_and_parameter_count() -> None:
    space = BertSpace()
    arch = {
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "intermediate_size": 1024,
    }
    rebuilt, params = _roundtrip(space, arch)
    assert rebuilt == arch
    assert params == {
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "intermediate_ratio": 4,
    }
    # Hand count: embeddings (30522+512+2)*256 + LN 512; per layer 4*(256*256+256) + 512
    # + (256*1024+1024) + (1024*256+256) + 512; pooler 256*256+256; classifier 256*2+2.
    h, i = 256, 1024
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    expected = (30522 + 512 + 2) * h + 2 * h + 4 * layer + h * h + h + 2 * h + 2
    assert bert_parameter_count(arch) == expected


def test_space_options_are_validated() -> None:
    with pytest.raises(SpecError, match="unknown option"):
        make_space("bert", {"depth": [2]})
    with pytest.raises(SpecError, match="divides"):
        make_space("bert", {"hidden_size": [100], "num_attention_heads": [3]})
    with pytest.raises(SpecError, match="unknown space"):
        make_space("resnet")
    with pytest.raises(SpecError, match="not found"):
        make_space("flexibert-small", {"table": "/nonexistent.json"})


def test_flexibert_small_space() -> None:
    space = FlexiBertSmallSpace()
    rng = random.Random(0)
    for _ in range(100):
        arch = space.sample(rng)
        assert space.validate(arch) == arch
        assert len(arch["a"]) == arch["l"]
        rebuilt, params = _roundtrip(space, arch)
        assert rebuilt == arch
        assert params["num_layers"] == arch["l"]
    with pytest.raises(SpecError, match=r"architecture\.s"):
        space.validate({"l": 2, "a": [2, 2], "h": [128, 128], "s": ["sdp", "cnn"], "f": [512, 512]})
    with pytest.raises(SpecError, match="list of 4"):
        space.validate({"l": 4, "a": [2, 2], "h": [128, 128], "s": ["sdp", "sdp"], "f": [512, 512]})


def test_flexibert_small_table_only_keeps_scored_architectures() -> None:
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    table = load_table(TABLE)
    assert space.members is not None and len(space.members) == 620
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    mapped = 0
    for _ in range(50):
        t = study.ask()
        arch = space.suggest(t)
        assert table.score(arch, "sst2") is not None
        # Readable per-layer parameters; a suggestion that is no row is mapped to the nearest
        # row and recorded, and the mapping is a pure function of the parameters.
        assert set(t.params) == set(space.to_params(arch)) or "mapped_from" in t.user_attrs
        if "mapped_from" in t.user_attrs:
            mapped += 1
            assert t.user_attrs["mapped_from"] != space.describe(arch)
            assert space.to_params(arch) != t.params
        else:
            assert space.to_params(arch) == t.params
        assert space.suggest(optuna.trial.FixedTrial(t.params)) == arch
        study.tell(t, 0.0)
    assert mapped > 40  # 620 rows of 332,352 architectures: random suggestions are rarely rows
    unscored = next(a for a in table.architectures if table.score(a, "sst2") is None)
    with pytest.raises(SpecError, match="has no sst2 score"):
        space.validate(unscored)
    scores = [table.score(a, "sst2") for a in table.scored("sst2")]
    assert max(scores) == pytest.approx(0.8314, abs=1e-4)


def test_candidate_json_roundtrip_and_validation() -> None:
    c = Candidate(space="bert", architecture={"num_hidden_layers": 2})
    again = Candidate.from_json(c.to_json())
    assert again == c and again.fingerprint() == c.fingerprint()
    other = Candidate(
        space="bert", architecture={"num_hidden_layers": 2}, recipe={**c.recipe, "seed": 1}
    )
    assert other.fingerprint() != c.fingerprint()
    for bad, field in [
        ("[]", "candidate"),
        (json.dumps({**c.to_dict(), "version": 99}), "version"),
        (json.dumps({**c.to_dict(), "recipe": {"max_steps": 0}}), "recipe.max_steps"),
        (json.dumps({**c.to_dict(), "recipe": {"learning_rate": "fast"}}), "recipe.learning_rate"),
        (json.dumps({**c.to_dict(), "data": {"train_subset": -1}}), "data.train_subset"),
        (json.dumps({**c.to_dict(), "extra": 1}), "unknown fields"),
    ]:
        with pytest.raises(SpecError, match=field):
            Candidate.from_json(bad)


def test_flexibert_small_table_rows_round_trip_and_map_to_the_nearest_row() -> None:
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    assert space.members is not None
    for arch in list(space.members.values())[::31]:  # the BOSHNAS loops enqueue rows
        rebuilt, params = _roundtrip(space, arch)
        assert rebuilt == arch and params == space.to_params(arch)
    # One choice away from a row: mapped to a row at distance <= 1 (that row or an equal one).
    row = next(a for a in space.members.values() if a["l"] == 4)
    for i in range(4):
        near = {**row, "h": list(row["h"])}
        near["h"][i] = 128 if row["h"][i] == 256 else 256
        if space.describe(near) in space.members:
            continue
        t = optuna.trial.FixedTrial(FlexiBertSmallSpace().to_params(near))  # the whole space
        got = space.suggest(t)  # type: ignore[arg-type]
        diffs = sum(got[k][j] != near[k][j] for k in ("a", "h", "s", "f") for j in range(near["l"]))
        assert got["l"] == 4 and diffs == 1
        assert t.user_attrs["mapped_from"] == space.describe(near)


def test_flexibert_small_table_trials_have_small_distributions() -> None:
    """Issue 11: one categorical over the 620 table rows made every trial carry all of them
    (73 kB of dashboard page data per trial). Per-layer parameters: at most 3 choices each,
    and 20 trials' parameters and distributions in under 40 kB of JSON (28 kB; about 70 kB each
    before, 1.46 MB for 20)."""
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    for _ in range(20):
        t = study.ask()
        space.suggest(t)
        study.tell(t, random.random())
    data = []
    for frozen in study.get_trials():
        for name, dist in frozen.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                assert len(dist.choices) <= 3, name
        data.append(
            {
                "params": frozen.params,
                "distributions": {
                    n: optuna.distributions.distribution_to_json(d)
                    for n, d in frozen.distributions.items()
                },
            }
        )
    assert len(json.dumps(data)) < 40_000


def test_a_candidates_summary_says_what_it_trains() -> None:
    bert = Candidate(space="bert", architecture={"num_hidden_layers": 2})
    assert bert.summary() == '{"num_hidden_layers":2}'
    lora = Candidate(
        space="lora", architecture={}, recipe={"learning_rate": 0.001, "lora": {"r_max": 8}}
    )
    assert lora.summary() == '{"learning_rate":0.001,"lora":{"r_max":8}}'  # not "{}"
    job = Candidate(space="autodistil", architecture={"subspace": "x" * 300}, kind="supernet")
    text = job.summary()
    assert text.startswith('supernet job {"subspace":"xxx') and text.endswith("...")
    assert len(text) == len("supernet job ") + 160
