"""Regularised evolution and local search: what each step proposes, with one and many workers."""

from __future__ import annotations

import json
from typing import Any

import optuna
import pytest

from archsearch.search import make_loop
from archsearch.search._local_search_loop import RUN_ATTR
from archsearch.search._mutation import KIND_ATTR
from archsearch.server._spec import SearchSpec
from archsearch.server._suggest import AskedCandidate, ask_candidate, loop_snapshot
from archsearch.spaces import BertSpace, SpecError

SPACE = BertSpace()
TARGET = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
          "intermediate_size": 1024}  # fmt: skip


def _index_distance(arch: dict[str, Any]) -> int:
    """How many of the four choices differ from TARGET's."""
    a, b = SPACE.to_params(arch), SPACE.to_params(TARGET)
    return sum(a[k] != b[k] for k in a)


def _key(arch: Any) -> str:
    return json.dumps(dict(arch), sort_keys=True)


def _study(loop: Any) -> optuna.Study:
    return optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), sampler=loop.sampler, direction="maximize"
    )


def _run(loop: Any, study: optuna.Study, n: int, score: Any) -> list[AskedCandidate]:
    asked = []
    for _ in range(n):
        a = ask_candidate(loop, study, SPACE)
        study.tell(a.number, score(a.architecture))
        asked.append(a)
    return asked


def _attrs(study: optuna.Study, number: int) -> dict[str, Any]:
    return study.trials[number].system_attrs


def test_evolution_mutates_the_tournament_winner_of_the_youngest_population() -> None:
    # S = P = 3: the tournament is the whole population, so the parent is the best of the
    # three most recent results: aging drops the global best (the first result) from it.
    loop = make_loop("evolution", 0, 1, {"population": 3, "sample": 3})
    study = _study(loop)
    scores = iter([10.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    asked = _run(loop, study, 6, lambda a: next(scores))
    assert [_attrs(study, a.number)[KIND_ATTR] for a in asked[:3]] == ["random"] * 3
    child = ask_candidate(loop, study, SPACE)
    assert _attrs(study, child.number)[KIND_ATTR] == "mutation"
    parent = asked[5].architecture  # the best of the last three (scores 3, 4, 5)
    assert _key(child.architecture) in {_key(n) for n in SPACE.neighbours(parent)}


def test_evolution_gives_several_workers_different_unknown_children() -> None:
    loop = make_loop("evolution", 1, 1, {"population": 4, "sample": 2})
    study = _study(loop)
    _run(loop, study, 6, lambda a: -_index_distance(a))
    in_flight = [ask_candidate(loop, study, SPACE) for _ in range(3)]
    got = loop.suggest(loop_snapshot(study, SPACE), 6)
    keys = [_key(s.architecture) for s in got]
    assert len(set(keys)) == 6
    known = {_key(t.params and SPACE.from_params(t.params)) for t in study.trials}
    assert not set(keys) & known and len(in_flight) == 3


def test_local_search_walks_to_the_optimum_then_restarts() -> None:
    loop = make_loop("local-search", 2, 1)
    study = _study(loop)
    asked: list[AskedCandidate] = []
    while not asked or asked[-1].architecture != TARGET:
        asked += _run(loop, study, 1, lambda a: -_index_distance(a))
        assert len(asked) < 60, "local search did not climb a landscape without local optima"
    start = asked[0]
    assert _attrs(study, start.number)[KIND_ATTR] == "start"
    # The whole neighbourhood of the start is evaluated before the walk moves.
    first = {_key(n) for n in SPACE.neighbours(start.architecture)}
    n_first = len(first)
    assert {_key(a.architecture) for a in asked[1 : 1 + n_first]} == first
    assert all(_attrs(study, a.number)[RUN_ATTR] == 0 for a in asked)
    # At the optimum its neighbourhood is evaluated, then a new run starts from a random one.
    rest = _run(loop, study, len(SPACE.neighbours(TARGET)) + 1, lambda a: -_index_distance(a))
    while _attrs(study, rest[-1].number).get(RUN_ATTR) == 0:
        rest += _run(loop, study, 1, lambda a: -_index_distance(a))
    restart = _attrs(study, rest[-1].number)
    assert restart[KIND_ATTR] == "start" and restart[RUN_ATTR] == 1


def test_local_search_evaluates_a_neighbourhood_in_parallel_then_starts_new_runs() -> None:
    loop = make_loop("local-search", 3, 1)
    study = _study(loop)
    got = loop.suggest(loop_snapshot(study, SPACE), 4)
    assert [s.attrs[KIND_ATTR] for s in got] == ["start"] + ["neighbour"] * 3
    assert {s.attrs[RUN_ATTR] for s in got} == {0}
    neighbours = {_key(n) for n in SPACE.neighbours(got[0].architecture)}
    assert {_key(s.architecture) for s in got[1:]} <= neighbours
    # With the whole neighbourhood in flight, the next workers start new runs.
    for _ in range(len(neighbours) + 1):
        ask_candidate(loop, study, SPACE)
    more = loop.suggest(loop_snapshot(study, SPACE), 2)
    assert [s.attrs[KIND_ATTR] for s in more] == ["start", "neighbour"]
    assert {s.attrs[RUN_ATTR] for s in more} == {1}


def test_a_new_loop_object_suggests_what_the_old_one_would() -> None:
    for name in ("evolution", "local-search"):
        first = make_loop(name, 4, 1, None)
        study = _study(first)
        _run(first, study, 25, lambda a: -_index_distance(a))
        ask_candidate(first, study, SPACE)  # one in flight
        snapshot = loop_snapshot(study, SPACE)
        again = make_loop(name, 4, 1, None)
        assert first.suggest(snapshot, 3) == again.suggest(snapshot, 3)


@pytest.mark.parametrize("name", ["evolution", "local-search"])
def test_bad_launches_are_refused(name: str) -> None:
    with pytest.raises(SpecError, match="one objective") as e:
        make_loop(name, 0, 2, None)
    assert e.value.field == "loop"
    with pytest.raises(SpecError) as e:
        make_loop(name, 0, 1, {"populaton": 3})
    assert e.value.field == "loop_options.populaton"
    spec = {"name": "s", "space": "lora", "trainer": "lora", "task": "sst2", "loop": name,
            "n_trials": 4, "recipe": {"lora": {"model": "/m"}}}  # fmt: skip
    with pytest.raises(SpecError, match="mutates architectures") as e:
        SearchSpec.from_dict(spec)
    assert e.value.field == "loop"


def test_evolution_options_are_checked() -> None:
    with pytest.raises(SpecError, match="more than the population") as e:
        make_loop("evolution", 0, 1, {"population": 3, "sample": 4})
    assert e.value.field == "loop_options.sample"
    with pytest.raises(SpecError) as e:
        make_loop("evolution", 0, 1, {"population": 0})
    assert e.value.field == "loop_options.population"
