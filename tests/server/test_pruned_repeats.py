"""A repeat of a pruned candidate carries its original's curve (it had none: `show` printed a
blank score for it in a multi-objective study, where a pruned trial has no values, while its
original showed its last value), and a pruned row's ``params`` comes from the built-in cost
model only for the trainer it models (a plugin trainer's complete rows showed its own 256,
its pruned rows the bert count 2.016e+06)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
from _tiny import TWO_CANDIDATES
from optuna.trial import TrialState

from archsearch.server._convert import study_to_pb, trial_to_pb
from archsearch.server._database import open_storage
from archsearch.server._format import format_study
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.server._trial_writes import finish_op
from archsearch.server._writer import StorageWriter
from archsearch.spaces import bert_parameter_count
from archsearch.v1 import archsearch_pb2 as pb

PRUNED_TWO = {
    **TWO_CANDIDATES,
    "name": "p",
    "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    "recipe": {"max_steps": 4, "eval_every": 2},
}


def _rows(text: str) -> dict[int, str]:
    table = text.split("\n\n")[1]
    return {int(line.split()[0]): line for line in table.splitlines() if line[:1].isdigit()}


def test_a_repeat_of_a_pruned_candidate_carries_its_curve(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    manager = StudyManager(url, lease_duration_s=30)
    try:
        h = manager.launch(SearchSpec.from_dict(PRUNED_TWO))
        first = manager.acquire("w", ("bert",))
        assert first is not None
        for step, value in ((2, 0.5), (4, 0.9)):
            assert manager.report(first.lease_id, step, value)[0] is False
        manager.complete(first.lease_id, {"accuracy": 0.9, "params": 1.0}, {})
        second = manager.acquire("w", ("bert",))
        assert second is not None
        assert manager.report(second.lease_id, 2, 0.12)[0] is True  # below the median: pruned
        deadline = time.monotonic() + 30
        while not (
            repeats := [
                t
                for t in manager.trials(h)
                if t.user_attrs.get("duplicate_of") == second.trial_number
            ]
        ):
            assert time.monotonic() < deadline, "the pruned candidate was never proposed again"
            time.sleep(0.05)
        repeat = repeats[0]
        assert repeat.state == TrialState.PRUNED and repeat.intermediate_values == {2: 0.12}
        text = format_study(
            study_to_pb(manager.snapshot(h)), [trial_to_pb(t) for t in manager.trials(h)]
        )
        row = _rows(text)[repeat.number]
        assert row.split()[1:3] == ["PRUNED", "0.1200"] and f"= #{second.trial_number}" in row
    finally:
        manager.close()
    again = StudyManager(url, lease_duration_s=30)  # a restarted server knows the curve too
    try:
        (entry,) = again.get("p").index.pruned.values()
        assert entry[0] == second.trial_number and entry[2] == {2: 0.12}
    finally:
        again.close()


def test_a_stored_trial_that_repeats_a_pruned_one_is_finished_with_its_curve(
    tmp_path: Path,
) -> None:
    """The path of a repeat that is already a stored trial (not a provisional one): its curve
    is written with its state, in one transaction."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    rdb = open_storage(url, 60, 10)
    writer = StorageWriter(rdb.engine)
    try:
        trial = optuna.create_study(study_name="c", storage=rdb).ask()
        curve = {2: 0.12, 4: float("-inf")}
        writer.run(
            finish_op(trial._trial_id, TrialState.PRUNED, None, {"duplicate_of": 0}, curve=curve)
        )
        (read,) = optuna.load_study(study_name="c", storage=url).get_trials()
        assert read.state == TrialState.PRUNED and read.intermediate_values == curve
        assert read.user_attrs == {"duplicate_of": 0}
    finally:
        writer.close()


ARCH = {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2}


def _trials() -> list[pb.Trial]:
    cand = json.dumps(
        {
            "space": "bert",
            "architecture": {**ARCH, "intermediate_size": 128},
            "data": {"task": "sst2"},
        }
    )
    return [
        pb.Trial(
            number=0,
            state=pb.COMPLETE,
            values=[3.0],
            metrics={"echo_score": 3.0, "params": 256.0},
            candidate_json=cand,
            duplicate_of=-1,
        ),
        pb.Trial(
            number=1,
            state=pb.PRUNED,
            candidate_json=cand,
            intermediate_values={2: 1.0},
            duplicate_of=-1,
        ),
    ]


def _study(trainer: str, objective: str) -> pb.Study:
    spec = {"name": "e", "space": "bert", "trainer": trainer, "loop": "random", "n_trials": 2}
    return pb.Study(
        name="e",
        spec_json=json.dumps(spec),
        state=pb.STUDY_RUNNING,
        objectives=[pb.Objective(metric=objective, direction=pb.MAXIMIZE)],
        n_trials=2,
        n_complete=1,
        n_pruned=1,
    )


def test_a_pruned_rows_params_come_from_the_cost_model_of_its_trainer_only() -> None:
    echo = _rows(format_study(_study("echo", "echo_score"), _trials()))
    assert "params(M)" in format_study(_study("echo", "echo_score"), _trials())
    assert echo[0].split()[1:4] == ["COMPLETE", "3.0000", "0.0003"]  # its own count
    assert echo[1].split()[1:4] == ["PRUNED", "1.0000", "L1"]  # none: not the bert count
    bert = _rows(format_study(_study("bert", "accuracy"), _trials()))
    counted = f"{bert_parameter_count({**ARCH, 'intermediate_size': 128}) * 1e-6:.4f}"
    assert bert[1].split()[1:4] == ["PRUNED", "1.0000", counted]
