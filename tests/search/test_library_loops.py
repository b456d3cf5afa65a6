"""The library loops (BOSHNAS, embedding GP) driven the way the server drives them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import optuna
import pytest
from _procs import TABLE
from optuna.trial import TrialState

from archsearch.search import BoshnasLoop, EmbeddingGPLoop, make_loop
from archsearch.search._library import arch_key
from archsearch.search._library_loops import KIND_ATTR, LOOP_ATTR
from archsearch.search._param_codes import ABSENT
from archsearch.server._spec import SearchSpec
from archsearch.server._suggest import AskedCandidate, ask_candidate
from archsearch.spaces import (
    BertSpace,
    FlexiBertSmallSpace,
    FlexiBertSpace,
    GraphSpace,
    SpecError,
    load_table,
)

FAST = {"n_init": 4, "batch_size": 4}


@pytest.fixture(scope="module")
def space() -> FlexiBertSmallSpace:
    return FlexiBertSmallSpace(table=TABLE, task="sst2")


def _study(loop: optuna.samplers.BaseSampler, n_objectives: int = 1) -> optuna.Study:
    return optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        sampler=loop,
        directions=["maximize", "minimize"][:n_objectives],  # type: ignore[arg-type]
    )


def _run(loop, space, study, n: int, tell: bool = True) -> list[AskedCandidate]:
    table = load_table(TABLE)
    trials = []
    for _ in range(n):
        asked = ask_candidate(loop, study, space)
        arch = asked.architecture
        assert arch == space.validate(arch)
        assert table.score(arch, "sst2") is not None  # only scored (library) candidates
        if tell:
            score = table.score(arch, "sst2")
            study.tell(asked.number, [score, arch["l"]][: len(study.directions)])
        trials.append(asked)
    return trials


def test_boshnas_proposes_valid_unseen_candidates(space: FlexiBertSmallSpace) -> None:
    loop = BoshnasLoop(seed=3, n_objectives=1, options=FAST)
    study = _study(loop.sampler)
    _run(loop, space, study, 14)
    trials = study.get_trials()
    keys = [arch_key(space.suggest(optuna.trial.FixedTrial(t.params))) for t in trials]
    assert len(set(keys)) == len(keys) == 14  # never a candidate twice
    kinds = [t.system_attrs[KIND_ATTR] for t in trials]
    assert kinds[:4] == ["random"] * 4  # n_init random rows, then the surrogate's choices
    assert set(kinds[4:]) <= {"exploitation", "uncertainty", "diversity"}
    assert "exploitation" in kinds[4:]
    # The dashboard sees readable parameters, exactly the space's own.
    for t in trials:
        assert t.params == space.to_params(space.suggest(optuna.trial.FixedTrial(t.params)))


def test_idle_workers_get_a_batch_of_different_candidates(space: FlexiBertSmallSpace) -> None:
    """Eight asks before any result (eight idle workers): eight different candidates, from
    one surrogate fit; in-flight candidates are never proposed again."""
    loop = BoshnasLoop(seed=0, n_objectives=1, options={**FAST, "batch_size": 8})
    study = _study(loop.sampler)
    _run(loop, space, study, 6)  # past n_init: the surrogate is in use
    running = _run(loop, space, study, 8, tell=False)
    rows = [study.trials[t.number].system_attrs[LOOP_ATTR] for t in running]
    assert len(set(rows)) == 8
    done_rows = {t.system_attrs[LOOP_ATTR] for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert not set(rows) & done_rows


def test_four_workers_spend_n_init_random_rows_in_all(space: FlexiBertSmallSpace) -> None:
    """Four workers asking before any of them reports (the service's way): with n_init 5 the
    first round is 4 random rows, the second 1 random row (it completes the design) and 3 from
    the surrogate, not a second round of random rows."""
    loop = BoshnasLoop(seed=2, n_objectives=1, options={"n_init": 5, "batch_size": 8})
    study = _study(loop.sampler)
    table = load_table(TABLE)
    for _ in range(3):
        asked = _run(loop, space, study, 4, tell=False)
        for trial in asked:
            study.tell(trial.number, table.score(trial.architecture, "sst2"))
    kinds = [t.system_attrs[KIND_ATTR] for t in study.get_trials()]
    assert len(kinds) == 12 and kinds[:5] == ["random"] * 5
    assert set(kinds[5:]) <= {"exploitation", "uncertainty", "diversity"}


def test_a_restarted_loop_rebuilds_from_the_storage(space: FlexiBertSmallSpace) -> None:
    loop = BoshnasLoop(seed=1, n_objectives=1, options=FAST)
    study = _study(loop.sampler)
    _run(loop, space, study, 6)
    again = BoshnasLoop(seed=1, n_objectives=1, options=FAST)  # a new server process
    _run(again, space, study, 4)
    rows = [t.system_attrs[LOOP_ATTR] for t in study.get_trials()]
    assert len(set(rows)) == 10


def test_embeddings_are_cached_and_reused(space: FlexiBertSmallSpace) -> None:
    loop = EmbeddingGPLoop(seed=0, n_objectives=1, options=FAST)
    lib = loop.library(space)
    cached = sorted(Path(loop.cache_root).glob("flexibert-small-*.npz"))  # type: ignore[arg-type]
    assert cached, "the fitted embeddings are written to the cache"
    again = EmbeddingGPLoop(seed=5, n_objectives=1, options=FAST).library(space)
    np.testing.assert_array_equal(lib.embeddings, again.embeddings)  # the study seed is not used
    assert len(lib) == 620


def test_multi_objective_boshnas_and_gp(space: FlexiBertSmallSpace) -> None:
    for cls in (BoshnasLoop, EmbeddingGPLoop):
        loop = cls(seed=0, n_objectives=2, options=FAST)
        study = _study(loop.sampler, n_objectives=2)
        _run(loop, space, study, 8)
        assert len({t.system_attrs[LOOP_ATTR] for t in study.get_trials()}) == 8


def test_a_queued_trial_keeps_its_parameters(space: FlexiBertSmallSpace) -> None:
    loop = BoshnasLoop(seed=0, n_objectives=1, options=FAST)
    study = _study(loop.sampler)
    arch = next(space.enumerate())
    study.enqueue_trial(space.to_params(arch))
    asked = ask_candidate(loop, study, space, waiting=True)
    assert asked.architecture == arch and asked.requeued
    study.tell(asked.number, 0.5)
    _run(loop, space, study, 3)  # the enqueued one is known: not proposed again
    keys = [arch_key(space.suggest(optuna.trial.FixedTrial(t.params))) for t in study.get_trials()]
    assert len(set(keys)) == 4


def test_bad_options_and_spaces_are_refused() -> None:
    with pytest.raises(SpecError, match=r"loop_options\.gobi_starts"):
        make_loop("boshnas", 0, 1, {"gobi_starts": 3})
    with pytest.raises(SpecError, match=r"loop_options\.features"):
        make_loop("boshnas", 0, 1, {"features": "graph"})
    with pytest.raises(SpecError, match="not accepted by the boshnas loop"):
        make_loop("boshnas", 0, 1, {"acquisition_search": "grid"})
    with pytest.raises(SpecError, match=r"loop_options\.batch_size"):
        make_loop("boshnas", 0, 1, {"batch_size": 0})
    with pytest.raises(SpecError, match="not accepted by the boshnas loop"):
        make_loop("boshnas", 0, 1, {"n_init": 1})
    with pytest.raises(SpecError, match="embeds architecture graphs"):
        SearchSpec.from_dict({"name": "x", "space": "bert", "loop": "boshnas", "n_trials": 3})
    assert not isinstance(BertSpace(), GraphSpace)


def test_architecture_features_are_one_hot_codes_of_the_layer_parameters(
    tmp_path: Path,
) -> None:
    space = FlexiBertSpace()
    loop = BoshnasLoop(seed=0, n_objectives=1, options={**FAST, "library_size": 40})
    loop.cache_root = tmp_path
    lib = loop.library(space)
    onehot = lib.architecture_features()
    params = [space.to_params(a) for a in lib.archs]
    names = sorted({n for p in params for n in p})
    assert onehot.shape[0] == 40
    assert onehot.shape[1] == sum(len({str(p.get(n, ABSENT)) for p in params}) for n in names)
    # One value per parameter name, "absent" for the layers a 2-layer architecture lacks.
    assert np.array_equal(onehot.sum(axis=1), np.full(40, len(names)))
    two = next(i for i, a in enumerate(lib.archs) if a["l"] == 2)
    four = next(i for i, a in enumerate(lib.archs) if a["l"] == 4)
    assert not np.array_equal(onehot[two], onehot[four])
    # A row added later (a user's enqueued architecture) is encoded with the same columns.
    rng = random.Random(5)
    new = space.sample(rng)
    while arch_key(new) in lib.index:
        new = space.sample(rng)
    row = lib.row(new)
    assert row == 40
    grown = lib.architecture_features()
    assert grown.shape == (41, onehot.shape[1]) and np.array_equal(grown[:40], onehot)
    assert grown[40].sum() <= len(names)
    assert lib.features("both").shape == (41, lib.embeddings.shape[1] + onehot.shape[1])
    assert lib.features("embedding") is lib.embeddings


@pytest.mark.parametrize(
    ("features", "table_columns"),
    [
        ("embedding", 0),
        ("architecture", 1),
        ("both", 1),
        ("numeric", 1),
        ("embedding+numeric", 1),
        ("numeric+totals", 1),
    ],
)
def test_the_surrogate_sees_the_chosen_features(
    space: FlexiBertSmallSpace, features: str, table_columns: int
) -> None:
    """The small space's table mode: the features are the per-layer choices
    (``feature_params``), not 620 one-hot columns (one per row)."""
    loop = BoshnasLoop(seed=0, n_objectives=1, options={**FAST, "features": features})
    study = _study(loop.sampler)
    _run(loop, space, study, 6)
    assert loop._proposer is not None and loop._proposer.surrogate is not None
    width = loop._proposer.surrogate.input_dim
    embedding = 16 if features in ("embedding", "both", "embedding+numeric") else 0
    onehot = width - embedding
    assert (onehot > 0) == bool(table_columns)
    assert onehot < 60  # 17 layer parameters with 2-4 values each, not one per architecture


def test_the_full_flexibert_space_samples_a_library(tmp_path: Path) -> None:
    """A space of 3.3 billion architectures: the library is a seeded sample of it."""
    space = FlexiBertSpace()
    loop = BoshnasLoop(seed=0, n_objectives=1, options={**FAST, "library_size": 60})
    loop.cache_root = tmp_path
    lib = loop.library(space)
    assert len(lib) == 60
    assert all(space.validate(a) == a for a in lib.archs)
    study = _study(loop.sampler)
    for i in range(6):
        asked = ask_candidate(loop, study, space)
        study.tell(asked.number, float(sum(asked.architecture["h"])) / 1000 + 0.01 * i)
    assert len({json.dumps(t.params, sort_keys=True) for t in study.get_trials()}) == 6


def test_weight_transfer_picks_the_neighbour_with_the_largest_overlap(
    space: FlexiBertSmallSpace,
) -> None:
    """With ``weight_transfer``, a proposal's recipe names the kept checkpoint of the completed
    trial covering most of its weights, when that share reaches the paper's 0.8."""
    from archsearch.spaces import OVERLAP_THRESHOLD, weight_overlap

    loop = BoshnasLoop(seed=0, n_objectives=1, options={**FAST, "weight_transfer": True})
    study = _study(loop.sampler)
    archs = list(space.enumerate())
    wide = next(a for a in archs if a["h"] == [256] * a["l"] and a["l"] == 4)
    narrow = next(a for a in archs if a["h"] == [128] * a["l"] and a["l"] == 2)
    for arch, ckpt in ((wide, "/ckpt/wide"), (narrow, "/ckpt/narrow")):
        t = study.ask()
        t.set_user_attr("candidate", {"architecture": arch})
        t.set_user_attr("info", {"checkpoint": ckpt})
        study.tell(t, 0.8)
    decisions = 0
    for _ in range(6):
        asked = ask_candidate(loop, study, space)
        arch, got = asked.architecture, dict(asked.suggestion.recipe)
        target = space.to_flexibert(arch)
        overlaps = {
            "/ckpt/wide": weight_overlap(space.to_flexibert(wide), target),
            "/ckpt/narrow": weight_overlap(space.to_flexibert(narrow), target),
        }
        best = max(overlaps, key=overlaps.__getitem__)
        if overlaps[best] >= OVERLAP_THRESHOLD:
            assert got == {"transfer_from": best}
            decisions += 1
        else:
            assert got == {}
    assert decisions > 0  # the wide 4-layer model covers most 256-wide proposals
