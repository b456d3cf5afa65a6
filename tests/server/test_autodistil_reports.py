"""What an autodistil study does with its jobs' intermediate reports: a supernet job's
distillation loss is its progress, never the objective's learning curve (which the pruner and
optuna-dashboard's plot read); in a stored study with a pruner (launched before launch refused
one) only the stage-3 students are pruned, against each other, and a pruned student is said
as pruned in the completed reason."""

from __future__ import annotations

from typing import Any

import optuna
from _autodistil import AUTODISTIL, CATALOGUE, SPACE, SUBSPACES
from optuna.trial import TrialState

from archsearch.server._index import COMPLETED_REASON_ATTR
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.server._trial_writes import PROGRESS_STEP_ATTR, PROGRESS_VALUE_ATTR

PRUNER = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}


def stored_spec(name: str, pruner: dict[str, Any] | None) -> SearchSpec:
    """A study as a restarted server reads it back (``stored``): one launched before launch
    refused a pruner for the autodistil loop keeps it."""
    return SearchSpec.from_dict(
        {
            "name": name,
            "space": "autodistil",
            "loop": "autodistil",
            "trainer": "autodistil",
            "n_trials": 8,
            "task": "sst2",
            "space_options": {"subspaces": SUBSPACES},
            "loop_options": {"top_n": 3, "supernet": {"steps": 3}},
            "recipe": {"max_steps": 8, "eval_every": 2},
            "pruner": pruner or {"type": "none"},
        },
        CATALOGUE,
        stored=True,
    )


def manager(url: str) -> StudyManager:
    m = StudyManager(url, lease_duration_s=30, heartbeat_interval_s=5)
    m.trainers.remember(AUTODISTIL)
    return m


def rank_report(candidate: Any) -> dict[str, float]:
    """Every student scored; the bigger the better."""
    out = {"train_seconds": 1.0}
    for st in SPACE.students[candidate.architecture["subspace"]["name"]]:
        out[f"accuracy@{st.key()}"] = 0.5 + st.layers * 0.05 + st.heads * 0.01
    return out


def run_supernets_and_ranks(m: StudyManager, name: str) -> list[optuna.trial.FrozenTrial]:
    """Runs the four jobs, each supernet job reporting a falling loss at steps 1-3 (as the
    worker does); returns the supernet trials."""
    numbers = []
    for _ in range(4):
        g = m.acquire("w", ("autodistil",), name)
        assert g is not None and g.candidate.kind in ("supernet", "rank")
        if g.candidate.kind == "supernet":
            for step, loss in ((1, 1.81), (2, 1.89), (3, 1.7)):
                assert m.report(g.lease_id, step, loss)[0] is False  # never pruned
            numbers.append(g.trial_number)
            m.complete(g.lease_id, {"relation_loss": 1.7, "train_seconds": 2.0}, {})
        else:
            m.complete(g.lease_id, rank_report(g.candidate), {})
    trials = m.trials(m.get(name))
    return [trials[n] for n in numbers]


def test_a_supernet_jobs_loss_is_its_progress_not_an_intermediate_value(
    storage_url: str,
) -> None:
    m = manager(storage_url)
    try:
        m.launch(stored_spec("ad", None))
        supernets = run_supernets_and_ranks(m, "ad")
    finally:
        m.close()
    assert len(supernets) == 2
    for t in supernets:
        assert t.intermediate_values == {}  # the dashboard plotted it on the accuracy axis
        assert t.user_attrs[PROGRESS_STEP_ATTR] == 3
        assert t.user_attrs[PROGRESS_VALUE_ATTR] == 1.7


def test_a_stored_study_with_a_pruner_prunes_students_only_against_each_other(
    storage_url: str,
) -> None:
    m = manager(storage_url)
    try:
        h = m.launch(stored_spec("pr", PRUNER))
        run_supernets_and_ranks(m, "pr")
        students = [m.acquire("w", ("autodistil",), "pr") for _ in range(3)]
        assert all(g is not None and g.candidate.kind == "train" for g in students)
        first, second, third = students
        assert first is not None and second is not None and third is not None
        # the first student completes: the only curve the pruner compares with
        assert m.report(first.lease_id, 2, 0.30)[0] is False
        m.complete(first.lease_id, {"accuracy": 0.8}, {})
        # 0.34 at step 2 is above that student's 0.30: not pruned (the supernets' losses,
        # 1.89 at step 2, made it the median and pruned it)
        assert m.report(second.lease_id, 2, 0.34)[0] is False
        m.complete(second.lease_id, {"accuracy": 0.81}, {})
        # below both students: pruned
        assert m.report(third.lease_id, 2, 0.10)[0] is True
        assert h.state == "completed"
        pruned_key = SPACE.to_params(third.candidate.architecture)["student"]
        trials = m.trials(h)
    finally:
        m.close()
    assert trials[third.trial_number].state == TrialState.PRUNED
    reason = optuna.load_study(study_name="pr", storage=storage_url).user_attrs[
        COMPLETED_REASON_ATTR
    ]
    assert f"pruned (no true score): {pruned_key}" in reason
    assert "failed" not in reason
