"""An autodistil study in the service, with a fake worker's reports: supernets, rank jobs whose
students become trials (stored with the rank job's completion), the budgeted pick trained with
the proxy beside the truth, and a restart in the middle."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from _autodistil import AUTODISTIL, CATALOGUE, SPACE, SUBSPACES
from optuna.trial import TrialState

from archsearch.search._autodistil_loop import STUDENT_ATTR
from archsearch.server._derived_trials import is_derived_trial
from archsearch.server._index import COMPLETED_REASON_ATTR
from archsearch.server._spec import SearchSpec
from archsearch.server._student_trials import PROXY_TRIAL_ATTR, SCORE_KIND_ATTR, STUDENT_OF_ATTR
from archsearch.server._studies import StudyManager


def spec(name: str, **loop: Any) -> SearchSpec:
    return SearchSpec.from_dict(
        {
            "name": name,
            "space": "autodistil",
            "loop": "autodistil",
            "trainer": "autodistil",
            "n_trials": 8,  # more than the 6 jobs: the loop itself ends the study
            "task": "sst2",
            "space_options": {"subspaces": SUBSPACES},
            "loop_options": {"top_n": 2, "supernet": {"steps": 3}, **loop},
        },
        CATALOGUE,
    )


def proxy(key: str) -> float:
    """A student's proxy score: larger students score higher, b's a little more."""
    st = SPACE.student(key)
    return 0.5 + st.layers * 0.05 + st.heads * 0.01


def report(candidate: Any, skip: frozenset[str] = frozenset()) -> dict[str, float]:
    """What the autodistil trainer reports for each kind of job (a rank job scores every
    student but those in ``skip``)."""
    if candidate.kind == "supernet":
        return {"relation_loss": 0.5, "train_seconds": 2.0}
    if candidate.kind == "rank":
        name = candidate.architecture["subspace"]["name"]
        out = {"train_seconds": 3.0}
        for st in SPACE.students[name]:
            if st.key() in skip:
                continue
            out[f"accuracy@{st.key()}"] = proxy(st.key())
            out[f"relation_loss@{st.key()}"] = 1 - proxy(st.key())
        return out
    key = SPACE.to_params(candidate.architecture)["student"]
    return {"accuracy": proxy(key) - 0.1, "train_seconds": 5.0}


def by_n(trials: list[Any]) -> list[int]:
    return [t.number for t in trials]


def manager(url: str) -> StudyManager:
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    m.trainers.remember(AUTODISTIL)
    return m


def work(
    m: StudyManager, name: str, limit: int = 100, skip: frozenset[str] = frozenset()
) -> list[tuple[int, str]]:
    """Runs jobs until none is left (or ``limit``); returns (trial number, kind) of each."""
    done: list[tuple[int, str]] = []
    while len(done) < limit and (g := m.acquire("w", ("autodistil",), name)) is not None:
        metrics = report(g.candidate, skip)
        values, _ = m.complete(g.lease_id, metrics, {})
        assert m.complete(g.lease_id, metrics, {}) == (values, TrialState.COMPLETE)  # a repeat
        done.append((g.trial_number, g.candidate.kind))
    return done


def test_an_autodistil_study_runs_its_stages_and_survives_a_restart(storage_url: str) -> None:
    m = manager(storage_url)
    try:
        m.launch(spec("ad"))
        first = work(m, "ad", limit=3)  # two supernets and one rank job
        held = m.acquire("w", ("autodistil",), "ad")  # the other rank job, in flight
        assert held is not None and held.candidate.kind == "rank"
    finally:
        m.close()
    assert [k for _, k in first] == ["supernet", "supernet", "rank"]

    m = manager(storage_url)  # a new server: the stages are read back from the trials
    try:
        h = m.get("ad")
        assert h.index.originals == 4  # the students recorded so far are not counted
        m.complete(held.lease_id, report(held.candidate), {})
        rest = work(m, "ad")
        assert h.state == "completed"
        trials = m.trials(h)
    finally:
        m.close()
    assert [k for _, k in rest] == ["train", "train"]

    students = [t for t in trials if STUDENT_OF_ATTR in t.user_attrs]
    assert len(students) == 4 and all(is_derived_trial(t) for t in students)
    by_key = {t.params["student"]: t for t in students}
    assert set(by_key) == set(SPACE.student_keys)
    for key, t in by_key.items():
        st = SPACE.student(key)
        assert t.state == TrialState.COMPLETE and t.values == pytest.approx([proxy(key)])
        assert t.params["layers"] == st.layers and t.params["subspace"] in ("a", "b")
        metrics = t.user_attrs["metrics"]
        assert metrics["flops"] == SPACE.flops(st) and metrics["params"] == SPACE.params(st)
        assert metrics["relation_loss"] == pytest.approx(1 - proxy(key))
        assert metrics["train_seconds"] == 0.0
        rank = trials[t.user_attrs[STUDENT_OF_ATTR]]
        assert rank.user_attrs["candidate"]["kind"] == "rank"
        # proxy scores sit under proxy.*, never in the metric.* columns of true scores
        assert t.user_attrs[SCORE_KIND_ATTR] == "proxy"
        assert t.user_attrs["proxy.accuracy"] == pytest.approx(proxy(key))
        assert not [k for k in t.user_attrs if k.startswith("metric.")]
        assert t.system_attrs[STUDENT_ATTR]["supernet_trial"] == t.user_attrs["supernet_trial"]

    # stage 3: the two best proxies (both of b), from b's supernet, truth beside the proxy
    trained = [trials[n] for n, _ in rest]
    best = sorted(SPACE.students["b"], key=lambda st: -proxy(st.key()))
    assert [t.params["student"] for t in trained] == [st.key() for st in best]
    for t in trained:
        picked = trials[t.user_attrs[PROXY_TRIAL_ATTR]]
        assert picked.params["student"] == t.params["student"]
        init = t.user_attrs["candidate"]["recipe"]["init"]
        assert init == {"supernet": f"trial:ad:{picked.user_attrs['supernet_trial']}"}
        assert t.user_attrs["proxy.accuracy"] == picked.values[0]
        assert t.values == pytest.approx([picked.values[0] - 0.1])  # the truth
        assert t.user_attrs[SCORE_KIND_ATTR] == "measured"
        assert t.user_attrs["metric.accuracy"] == pytest.approx(picked.values[0] - 0.1)
    # the supernet and rank jobs score no student themselves: their objective is at its worst
    jobs = [
        t for t in trials if t.user_attrs.get("candidate", {}).get("kind") in ("supernet", "rank")
    ]
    assert len(jobs) == 4 and all(t.values == [-math.inf] for t in jobs)
    assert all(t.user_attrs[SCORE_KIND_ATTR] == "none" for t in jobs)
    # the dashboard's table: metric.accuracy holds true scores only, score_kind says which
    table = optuna.load_study(study_name="ad", storage=storage_url).trials_dataframe()
    kinds = dict(zip(table["number"], table["user_attrs_score_kind"], strict=True))
    measured = table[table["user_attrs_metric.accuracy"].notna()]
    assert {kinds[n] for n in measured["number"]} == {"measured"}
    assert sorted(measured["number"]) == sorted(t.number for t in trained)
    assert sorted(n for n, k in kinds.items() if k == "proxy") == sorted(by_n(students))
    study = optuna.load_study(study_name="ad", storage=storage_url)
    assert "every stage done" in study.user_attrs[COMPLETED_REASON_ATTR]
    assert study.best_trial.number in {t.number for t in students}


def test_a_budget_nothing_fits_completes_the_study_with_the_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    m = manager(url)
    try:
        # only the smallest student fits, and the rank job does not score it
        smallest = SPACE.student(SPACE.student_keys[0])
        h = m.launch(spec("tight", budget={"params": SPACE.params(smallest)}))
        jobs = work(m, "tight", skip=frozenset({smallest.key()}))
        assert [k for _, k in jobs] == ["supernet", "supernet", "rank", "rank"]
        assert h.state == "completed"
    finally:
        m.close()
    study = optuna.load_study(study_name="tight", storage=url)
    reason = study.user_attrs[COMPLETED_REASON_ATTR]
    assert f"no ranked student fits the budget params <= {SPACE.params(smallest):.4g}" in reason


def test_a_cancelled_job_runs_again_when_the_study_is_resumed(tmp_path: Path) -> None:
    """A rank job ended by `stop --cancel-running` counted as failed for good: resume then
    completed the study "every stage done" with no student ranked, and refused a second."""
    m = manager(f"sqlite:///{tmp_path / 's.db'}")
    try:
        m.launch(spec("c"))
        assert [k for _, k in work(m, "c", limit=2)] == ["supernet", "supernet"]
        held = m.acquire("w", ("autodistil",), "c")
        assert held is not None and held.candidate.kind == "rank"
        m.stop("c", cancel_running=True)
        m.fail(held.lease_id, "cancelled: the study was stopped with --cancel-running", False)
        m.resume("c")
        rest = work(m, "c")
        h = m.get("c")
        assert h.state == "completed"
        assert sorted(k for _, k in rest) == ["rank", "rank", "train", "train"]
        cancelled = [t for t in m.trials(h) if t.user_attrs.get("cancelled")]
        assert [t.number for t in cancelled] == [held.trial_number]
    finally:
        m.close()


def test_a_completed_autodistil_study_is_not_resumed_with_more_trials(tmp_path: Path) -> None:
    """Its n_trials is its job count: "pass --n-trials above 6" led to "resumed", then the
    study completed again at once with nothing trained."""
    from archsearch.server._errors import FailedPrecondition

    m = manager(f"sqlite:///{tmp_path / 's.db'}")
    try:
        exact = dataclasses.replace(spec("done"), n_trials=6)
        m.launch(exact)
        assert len(work(m, "done")) == 6
        assert m.get("done").state == "completed"
        with pytest.raises(FailedPrecondition, match="the autodistil loop's jobs are done"):
            m.resume("done", 10)
    finally:
        m.close()
