"""The first hour of a new user, without a server: the CLI's parser, help and errors, what
`studies` and `show` print, specs in which every trial must fail, the worker note, pruning at
the last step."""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from _procs import TABLE, table_spec
from optuna.trial import TrialState

from archsearch.server import _cli_common, cli
from archsearch.server._convert import study_to_pb, trial_to_pb
from archsearch.server._format import format_study
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.spaces import SpecError
from archsearch.v1 import archsearch_pb2 as pb

BERT_ARCH = {
    "num_hidden_layers": 1,
    "hidden_size": 64,
    "num_attention_heads": 2,
    "intermediate_size": 128,
}


def _cand(arch: dict[str, Any] = BERT_ARCH, space: str = "bert") -> str:
    return json.dumps(
        {"space": space, "architecture": arch, "recipe": {}, "data": {"task": "sst2"}}
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# ------------------------------------------------------------------------------ parser


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """With the code label: every build said 0.1.0."""
    from archsearch.server import __version__
    from archsearch.server._source import source_digest

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"archsearch {__version__}+src.{source_digest()}"


def test_every_option_has_help_and_shows_its_default() -> None:
    parser = cli.build_parser()
    assert "``" not in parser.format_help() and "``" not in (parser.description or "")
    commands = _subparsers(parser)
    assert set(commands) == {
        *(
            "serve",
            "worker",
            "launch",
            "studies",
            "show",
            "wait",
            "stop",
            "resume",
            "delete",
            "demo",
            "replay",
            "fetch",
            "fleet",
        )
    }
    fleet = {f"fleet {k}": v for k, v in _subparsers(commands["fleet"]).items()}
    assert set(fleet) == {f"fleet {k}" for k in ("slurm", "ray", "k8s", "status", "stop")}
    for name, sub in [("", parser), *commands.items(), *fleet.items()]:
        text = "".join(sub.format_help().split())  # no spaces: wrapping breaks at hyphens
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help text"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                # argparse's own "(default: X)", or a help text that states it
                assert "default" in action.help or f"(default:{action.default})" in text, where


def test_argparse_errors_use_the_one_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["launch", "--pruner", "sometimes"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "archsearch: argument --pruner: invalid choice" in err
    assert "error:" not in err and "archsearch launch --help" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["launch", "--space", "bert", "--trials", "3"], "launch needs --name NAME"),
        (["launch", "--space", "bert", "--name", "x"], "launch needs --trials N"),
        (["launch", "--name", "x", "--trials", "3"], "launch needs --space SPACE"),
    ],
)
def test_launch_says_which_flag_is_missing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --server points nowhere: the check happens before any RPC
    assert cli.main([*argv, "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"archsearch: {message}") and "None" not in err


def test_missing_tls_ca_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "ca.pem"
    assert cli.main(["studies", "--server", "127.0.0.1:1", "--tls-ca", str(missing)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"archsearch: cannot read CA certificate file {missing}")
        and "--tls-ca" in err
    )
    assert len(err.strip().splitlines()) == 1
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    assert cli.main(["studies", "--server", "127.0.0.1:1", "--tls-ca", str(not_pem)]) == 2
    assert "is not a PEM file" in capsys.readouterr().err


# ------------------------------------------------------------------------------ studies, show


class _FakeClient:
    """The SearchClient calls `studies`, `show` and `launch` make, answered from memory."""

    def __init__(self, studies: list[pb.Study], trials: list[pb.Trial]) -> None:
        self.studies, self.trials = studies, trials

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def list_studies(self, unserved: dict[str, str] | None = None) -> list[pb.Study]:
        return self.studies

    def get_study(self, name: str) -> pb.Study:
        return self.studies[0]

    def list_trials(self, name: str) -> list[pb.Trial]:
        return self.trials

    def launch(self, spec: dict[str, Any]) -> pb.Study:
        return self.studies[0]


def _study(**kw: Any) -> pb.Study:
    spec = SearchSpec.from_dict(
        {
            "name": "s",
            "space": "bert",
            "n_trials": 5,
            "pruner": "median",
            "recipe": {"max_steps": 300},
        }
    )
    fields: dict[str, Any] = {
        "name": "s",
        "spec_json": spec.to_json(),
        "state": pb.STUDY_RUNNING,
        "objectives": [pb.Objective(metric="accuracy", direction=pb.MAXIMIZE)],
        "n_trials": 5,
    }
    return pb.Study(**{**fields, **kw})


def test_studies_counts_every_finished_trial_as_done(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(n_complete=2, n_pruned=1, n_fail=1, n_running=1, workers_for_trainer=2)
    monkeypatch.setattr(_cli_common, "SearchClient", lambda *a, **k: _FakeClient([study], []))
    assert cli.main(["studies"]) == 0
    out = capsys.readouterr().out
    row = out.splitlines()[2].split()
    assert row[:7] == ["s", "running", "bert", "tpe", "bert", "4", "5"]
    assert "done counts every finished trial" not in out  # within the budget: nothing to say
    retried = _study(n_complete=5, n_fail=2, n_running=0)  # 7 done, budget 5
    monkeypatch.setattr(_cli_common, "SearchClient", lambda *a, **k: _FakeClient([retried], []))
    assert cli.main(["studies"]) == 0
    assert "a failed trial and its retry are two" in capsys.readouterr().out
    # a trial a worker handed back is not done, nor a failure: its candidate is queued again
    back = _study(n_fail=3, n_handed_back=3, n_waiting=1, n_running=0)
    monkeypatch.setattr(_cli_common, "SearchClient", lambda *a, **k: _FakeClient([back], []))
    assert cli.main(["studies"]) == 0
    out = capsys.readouterr().out
    row = out.splitlines()[2].split()
    assert row[5] == "0" and row[9:12] == ["0", "+3", "handed"]
    assert "(failed +N handed back: trials a worker gave back" in out


@pytest.mark.parametrize("command", [["studies"], ["show", "s"], ["launch", "--spec"]])
def test_no_worker_for_the_trainer_is_said(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`launch --space flexibert-small` defaults to the bert trainer; table workers never take
    its trials. launch, studies and show say so, and what the connected workers offer."""
    study = _study(workers_for_trainer=0, connected_trainers=["table"])
    monkeypatch.setattr(_cli_common, "SearchClient", lambda *a, **k: _FakeClient([study], []))
    if command[0] == "launch":
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"name": "s", "space": "bert", "n_trials": 5}))
        command = [*command, str(spec)]
    assert cli.main(command) == 0
    out = capsys.readouterr().out
    assert "no connected worker runs the bert trainer" in out
    assert "the connected workers offer only table" in out
    assert "archsearch worker --server 127.0.0.1:50051 --trainer bert" in out
    # with a worker for it, or once the study is over, nothing is said
    for fine in (_study(workers_for_trainer=1), _study(state=pb.STUDY_COMPLETED)):
        monkeypatch.setattr(
            _cli_common, "SearchClient", lambda *a, f=fine, **k: _FakeClient([f], [])
        )
        assert cli.main(command) == 0
        assert "no connected worker" not in capsys.readouterr().out


def test_show_marks_repeats_and_pruned_trials() -> None:
    now = "2026-01-01T12:00:00"
    trials = [
        pb.Trial(
            number=0,
            state=pb.COMPLETE,
            values=[0.8],
            metrics={"accuracy": 0.8, "params": 2e6},
            candidate_json=_cand(),
            duplicate_of=-1,
            started_at=now,
            finished_at=now,
        ),
        pb.Trial(
            number=1,
            state=pb.PRUNED,
            candidate_json=_cand(),
            intermediate_values={100: 0.61, 200: 0.625},
            duplicate_of=-1,
        ),
        pb.Trial(
            number=2,
            state=pb.COMPLETE,
            values=[0.8],
            metrics={"accuracy": 0.8, "params": 2e6},
            candidate_json=_cand(),
            duplicate_of=0,
        ),
    ]
    text = format_study(_study(n_complete=2, n_pruned=1), trials)
    rows = {int(line.split()[0]): line for line in text.splitlines() if line[:1].isdigit()}
    assert "= #0" in rows[2] and "= #" not in rows[0] + rows[1]
    assert "1 repeated candidates" in text
    # pruned: where, its last value, and its size computed from the architecture
    assert "pruned at step 200 of 300" in rows[1] and "0.6250" in rows[1]
    from archsearch.spaces import bert_parameter_count

    assert f"{bert_parameter_count(BERT_ARCH) * 1e-6:.4f}" in rows[1]


def test_rank_trials_show_their_trainable_parameters_and_descriptions() -> None:
    trials = [
        pb.Trial(
            number=n,
            state=pb.COMPLETE,
            values=[0.7 + n / 100],
            metrics={"accuracy": 0.7 + n / 100, "trainable_params": 1000.0 * (n + 1)},
            params_json=json.dumps({"lr": 0.001, **({"lora_rank": n} if n else {})}),
            candidate_json="" if n else _cand(),
            description=f"rank {n} of #0" if n else "dylora lr=0.001",
            duplicate_of=-1,
            **({"derived_from": 0} if n else {}),
        )
        for n in range(3)
    ]
    text = format_study(_study(n_complete=3, n_derived=2), trials)
    rows = {int(line.split()[0]): line for line in text.splitlines() if line[:1].isdigit()}
    assert "trainable(K)" in text and "3.0000" in rows[2] and "2.0000" in rows[1]
    assert "rank 2 of #0" in rows[2] and "dylora lr=0.001" in rows[0]
    assert "2 rank trials" in text and "students" not in text


def test_duplicate_of_goes_on_the_wire() -> None:
    now = datetime.datetime(2026, 1, 1)
    frozen = optuna.trial.FrozenTrial(
        number=5,
        state=TrialState.COMPLETE,
        value=0.8,
        values=None,
        datetime_start=now,
        datetime_complete=now,
        params={},
        distributions={},
        user_attrs={"duplicate_of": 2, "metrics": {"accuracy": 0.8}},
        system_attrs={},
        intermediate_values={},
        trial_id=6,
    )
    assert trial_to_pb(frozen).duplicate_of == 2
    frozen.user_attrs.pop("duplicate_of")
    assert trial_to_pb(frozen).duplicate_of == -1


# ------------------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        (
            {"space": "bert", "objectives": ["acc:max"]},
            "objectives[0].metric",
            "(did you mean accuracy? it reports accuracy, dev_loss",
        ),
        (
            {**table_spec("x", 3), "objectives": ["accuracy:max", "params:min"]},
            "objectives[1].metric",
            "table trainer never reports 'params'",
        ),
        (
            {**table_spec("x", 3), "objectives": ["glue_avg:max"]},
            "objectives[0].metric",
            "the table trainer reports one",
        ),
        (
            {"space": "bert", "tasks": ["sst2", "mrpc"], "objectives": ["accuracy:max"]},
            "objectives[0].metric",
            "reports 'accuracy' per task in a multi-task study (use sst2.accuracy or "
            "mrpc.accuracy)",
        ),
        (
            {"space": "bert", "tasks": ["sst2", "mrpc"], "objectives": ["pearson:max"]},
            "objectives[0].metric",
            "sst2.accuracy, sst2.dev_loss, mrpc.f1",
        ),
        (  # a cost a multi-task lora trial has per task only: the names it has
            {
                "space": "lora",
                "trainer": "lora",
                "tasks": ["sst2", "rte"],
                "objectives": ["glue_avg:max", "trainable_params:min"],
            },
            "objectives[1].metric",
            "use sst2.trainable_params or rte.trainable_params",
        ),
        (
            {"space": "flexibert-small", "trainer": "table"},
            "space_options.table",
            "pass --table PATH",
        ),
    ],
)
def test_specs_in_which_every_trial_must_fail_are_refused(
    spec: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({"name": "x", "n_trials": 3, **spec})
    assert str(e.value).startswith(field) and says in str(e.value)


def test_a_sentence_pair_task_needs_five_tokens() -> None:
    spec = {"name": "x", "n_trials": 3, "space": "bert", "recipe": {"max_seq_length": 4}}
    SearchSpec.from_dict({**spec, "task": "sst2"})  # one text: [CLS] a b [SEP]
    with pytest.raises(SpecError, match=r"recipe.max_seq_length: must be >= 5 \(\[CLS\], a"):
        SearchSpec.from_dict({**spec, "tasks": ["sst2", "rte"]})
    pairs = {  # a custom task of two text fields is a pair task too
        "name": "reviews",
        "train": "/data/train.tsv",
        "dev": "/data/dev.tsv",
        "text_fields": ["a", "b"],
        "label_field": "y",
    }
    with pytest.raises(SpecError, match=r"recipe.max_seq_length: must be >= 5"):
        SearchSpec.from_dict({**spec, "data": {"task": "reviews", "custom_task": pairs}})
    stored = SearchSpec.from_dict({**spec, "task": "sst2"}).to_dict()
    stored["data"]["task"] = stored["task"] = "rte"  # stored before the check: still served
    SearchSpec.from_dict(stored, stored=True)


def test_specs_whose_metrics_a_trainer_reports_are_accepted() -> None:
    ok = [
        {"space": "bert", "objectives": ["accuracy:max", "params:min", "latency_ms_b1:min"]},
        {"space": "bert", "task": "mnli", "objectives": ["accuracy_mismatched:max"]},
        {"space": "bert", "task": "stsb", "objectives": ["spearman:max", "flops:min"]},
        {"space": "bert", "tasks": ["sst2", "cola"], "objectives": ["glue_avg:max", "params:min"]},
        {"space": "bert", "tasks": ["sst2", "cola"], "objectives": ["cola.mcc:max"]},
        {**table_spec("x", 3), "task": "sst2", "objectives": ["score:max"]},
    ]
    for spec in ok:
        SearchSpec.from_dict({"name": "x", "n_trials": 3, **spec})


@pytest.mark.parametrize("tasks", [["sst2"], ["mnli"], ["stsb"], ["sst2", "mrpc"]])
def test_trainer_metrics_match_what_the_bert_trainer_reports(tasks: list[str]) -> None:
    from archsearch.server._spec import trainer_metrics
    from archsearch.worker._bert_trainer import BertTrainer

    data = {"task": tasks[0]} if len(tasks) == 1 else {"tasks": tasks}
    assert set(BertTrainer.metric_names(tasks if len(tasks) > 1 else tasks[0])) <= set(
        trainer_metrics("bert", data)
    )


def test_trainer_metrics_of_the_table_trainer_are_what_it_reports(tmp_path: Path) -> None:
    from archsearch.server._spec import trainer_metrics
    from archsearch.spaces import Candidate, FlexiBertSmallSpace, load_table
    from archsearch.worker._table_trainer import TableTrainer
    from archsearch.worker._trainer import TrainContext

    table = load_table(TABLE)
    arch = FlexiBertSmallSpace().validate(table.scored("sst2")[0])
    cand = Candidate(space="flexibert-small", architecture=arch, recipe={}, data={"task": "sst2"})
    result = TableTrainer(TABLE).train(cand, TrainContext(device="cpu"))
    assert set(result.metrics) == set(trainer_metrics("table", {"task": "sst2"}))


# ------------------------------------------------------------------------------ server side


@pytest.fixture
def manager(tmp_path: Path):
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=2, heartbeat_interval_s=1)
    yield m
    m.close()


def test_study_says_which_trainers_the_connected_workers_offer(manager: StudyManager) -> None:
    spec = SearchSpec.from_dict(
        {"name": "b", "space": "flexibert-small", "space_options": {"table": TABLE}, "n_trials": 3}
    )
    h = manager.launch(spec)
    msg = study_to_pb(manager.snapshot(h))
    assert msg.workers_for_trainer == 0 and list(msg.connected_trainers) == []
    manager.register("t1", ("table",), "cpu", 0, "host")
    assert manager.acquire("t1", ("table",)) is None  # a table worker never takes bert trials
    msg = study_to_pb(manager.snapshot(h))
    assert msg.workers_for_trainer == 0 and list(msg.connected_trainers) == ["table"]
    grant = manager.acquire("b1", ("bert", "table"))
    assert grant is not None
    msg = study_to_pb(manager.snapshot(h))
    assert msg.workers_for_trainer == 1 and list(msg.connected_trainers) == ["bert", "table"]
    assert pb.Study.FromString(msg.SerializeToString()) == msg
    # after a lease duration without a call, t1 is gone; b1 still holds a lease (and still
    # offers table too: a training worker is connected)
    assert manager.connected_trainers("b") == {"bert": 1, "table": 2}
    deadline = time.monotonic() + 30
    while manager.connected_trainers("b").get("table") != 1:
        assert time.monotonic() < deadline, "t1 still counted as connected"
        manager.heartbeat(grant.lease_id)
        time.sleep(0.2)
    assert study_to_pb(manager.snapshot(h)).workers_for_trainer == 1  # training, not acquiring


def test_a_worker_that_asked_for_another_study_does_not_count(manager: StudyManager) -> None:
    """``archsearch worker --study o`` never takes study b's trials: b's note must not count
    it, or b's user would wait for a worker that never comes."""
    table = {"space": "flexibert-small", "space_options": {"table": TABLE}, "n_trials": 3}
    b = manager.launch(SearchSpec.from_dict({"name": "b", **table}))
    o = manager.launch(SearchSpec.from_dict({"name": "o", **table}))
    manager.register("only-o", ("bert",), "cpu", 0, "host")
    assert manager.acquire("only-o", ("bert",), "o") is not None
    assert study_to_pb(manager.snapshot(o)).workers_for_trainer == 1
    msg = study_to_pb(manager.snapshot(b))
    assert msg.workers_for_trainer == 0 and msg.workers_elsewhere == 1
    # the note says which: none at all, or some that serve other studies only
    from archsearch.server._worker_note import worker_note

    assert "(the 1 connected serve other studies by --study)" in worker_note(msg, "")
    assert study_to_pb(manager.snapshot(o)).workers_elsewhere == 0
    assert manager.acquire("any", ("bert",)) is not None  # a worker for any study counts
    assert study_to_pb(manager.snapshot(b)).workers_for_trainer == 1


def test_a_worker_training_another_study_still_counts(manager: StudyManager) -> None:
    """Two workers busy on study a for longer than a lease duration: a new study b's note
    said "no worker is connected" and told the user to start one, although both take b's
    trials once done."""
    table = {"space": "flexibert-small", "space_options": {"table": TABLE}, "n_trials": 3}
    manager.launch(SearchSpec.from_dict({"name": "a", **table}))
    manager.register("w1", ("bert",), "cpu", 0, "host")
    grant = manager.acquire("w1", ("bert",))
    assert grant is not None
    b = manager.launch(SearchSpec.from_dict({"name": "b", **table}))
    deadline = time.monotonic() + 30
    while time.monotonic() - manager._active["w1"][0] <= 2.5:  # past a lease duration
        assert time.monotonic() < deadline
        manager.heartbeat(grant.lease_id)  # training a's trial: heartbeats, no acquire
        time.sleep(0.2)
    manager.directory._workers.clear()  # its registration aged out too
    msg = study_to_pb(manager.snapshot(b))
    assert msg.workers_for_trainer == 1 and list(msg.connected_trainers) == ["bert"]


def test_no_prune_at_the_last_step(manager: StudyManager) -> None:
    """A value at the candidate's last step is its final evaluation: pruning then saves
    nothing, so the trial completes; before it the pruner still prunes."""
    spec = SearchSpec.from_dict(
        {
            "name": "p",
            "space": "bert",
            "loop": "random",
            "n_trials": 4,
            "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
            "recipe": {"max_steps": 4, "eval_every": 2},
        }
    )
    manager.launch(spec)
    first = manager.acquire("w", ("bert",))
    assert first is not None
    for step, value in ((2, 0.5), (4, 0.9)):
        assert manager.report(first.lease_id, step, value)[0] is False
    manager.complete(first.lease_id, {"accuracy": 0.9, "params": 1.0}, {})
    # Optuna's median pruner compares a trial's best value so far with the others' median
    late = manager.acquire("w", ("bert",))
    assert late is not None
    assert manager.report(late.lease_id, 2, 0.6)[0] is False  # above the median at step 2
    assert manager.report(late.lease_id, 4, 0.6)[0] is False  # below it, but the last step
    early = manager.acquire("w", ("bert",))
    assert early is not None
    assert manager.report(early.lease_id, 2, 0.1)[0] is True  # the pruner does prune before


# ------------------------------------------------------------------------------ the demo


def test_demo_prints_commands_that_run_as_printed() -> None:
    """`archsearch` is not on PATH after `make demo`: the printed commands use absolute
    paths into the virtualenv, and they run."""
    import shlex
    import subprocess

    from archsearch.server._demo import next_steps

    lines = [ln.strip() for ln in next_steps("sqlite:////tmp/x.db", "demo-1")]
    commands = [shlex.split(ln.rstrip("&")) for ln in lines if ln.startswith("/")]
    assert len(commands) == 3
    for argv in commands:
        assert Path(argv[0]).is_absolute()
        done = subprocess.run([argv[0], "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert [c[1:] for c in commands[1:]] == [
        ["serve", "--storage", "sqlite:////tmp/x.db"],
        ["show", "demo-1"],
    ]
    assert any("bin/activate" in ln for ln in lines)


def test_demo_progress_marks_repeats_and_pruned_steps(capsys: pytest.CaptureFixture[str]) -> None:
    from archsearch.server._demo import _print_event
    from archsearch.spaces import bert_parameter_count

    repeat = pb.Trial(
        number=7,
        state=pb.COMPLETE,
        metrics={"accuracy": 0.8, "params": 2e6},
        candidate_json=_cand(),
        duplicate_of=2,
    )
    pruned = pb.Trial(
        number=8,
        state=pb.PRUNED,
        candidate_json=_cand(),
        intermediate_values={100: 0.6, 200: 0.65},
        duplicate_of=-1,
    )
    _print_event(time.monotonic(), repeat, 300)
    _print_event(time.monotonic(), pruned, 300)
    first, second = capsys.readouterr().out.splitlines()
    assert "trial  7 complete" in first and "= #2 (repeat" in first
    assert "trial  8 pruned    at step 200 of 300 (accuracy 0.6500)" in second
    assert f"params={bert_parameter_count(BERT_ARCH) / 1e6:.2f}M" in second


def test_custom_task_metrics() -> None:
    def spec(objective: str, **task: Any) -> dict[str, Any]:
        custom = {"name": "reviews", "train": "/t.csv", "dev": "/d.csv", "text_fields": ["text"]}
        return {
            "name": "x",
            "space": "bert",
            "n_trials": 3,
            "objectives": [objective],
            "data": {"custom_task": {**custom, "label_field": "y", **task}},
        }

    accepted: list[tuple[str, dict[str, Any]]] = [
        ("accuracy:max", {}),
        ("f1_macro:max", {}),
        ("spearman:max", {"type": "regression"}),
        ("mcc:max", {"metrics": ["mcc"]}),
        ("reviews.accuracy:max", {}),
    ]
    for objective, task in accepted:
        SearchSpec.from_dict(spec(objective, **task))
    refused: list[tuple[str, dict[str, Any]]] = [
        ("accuracy:max", {"type": "regression"}),
        ("f1:max", {"metrics": ["mcc"]}),
    ]
    for objective, task in refused:
        with pytest.raises(SpecError, match="never reports"):
            SearchSpec.from_dict(spec(objective, **task))


def test_a_table_studys_best_params_are_said_to_be_the_loops_suggestion() -> None:
    """A flexibert-small table study trains the table row nearest the loop's suggestion:
    `params` read as the architecture scored (4x256 where 2x128 was trained)."""
    from _procs import TABLE

    spec = SearchSpec.from_dict(
        {
            "name": "t",
            "space": "flexibert-small",
            "trainer": "table",
            "space_options": {"table": TABLE},
            "n_trials": 3,
        }
    )
    best = pb.Trial(number=0, state=pb.COMPLETE, values=[0.8], params_json='{"l0.hidden": 256}')
    study = _study(spec_json=spec.to_json(), n_complete=1, best_trials=[best])
    line = format_study(study, [best]).splitlines()[-1]
    assert line.endswith(
        """params {"l0.hidden": 256}  (the loop's suggestion; the table row trained is above)"""
    )
    plain = _study(n_complete=1, best_trials=[best])
    assert format_study(plain, [best]).splitlines()[-1].endswith('params {"l0.hidden": 256}')


def test_a_plugin_study_that_scores_no_task_shows_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """`show digits` of the mlp example printed `task sst2`, the spec's default."""
    from archsearch.server import _format
    from archsearch.server._trainers import TrainerCatalogue
    from archsearch.spaces import TrainerInfo

    mlp = TrainerInfo(name="mlp", spaces=("mlp",), metrics=("accuracy",))
    installed = TrainerCatalogue.installed()
    catalogue = TrainerCatalogue([*(installed.require(n) for n in installed.names()), mlp])
    monkeypatch.setattr(_format.TrainerCatalogue, "installed", classmethod(lambda cls: catalogue))
    spec = json.loads(_study().spec_json)
    plugin = _study(spec_json=json.dumps({**spec, "space": "mlp", "trainer": "mlp"}))
    assert "  loop tpe  trainer mlp  " in format_study(plugin, []).splitlines()[1]
    assert "  loop tpe  task sst2  trainer bert  " in format_study(_study(), []).splitlines()[1]
    # a multi-task study names every task (it said "task stsb", the first)
    several = _study(
        spec_json=json.dumps({**spec, "data": {"task": "stsb", "tasks": ["stsb", "cola"]}})
    )
    assert (
        "  loop tpe  tasks stsb, cola  trainer bert  " in format_study(several, []).splitlines()[1]
    )
    # a per-task objective is not shown twice (its read-time column has the same name)
    both = {**spec, "data": {"task": "sst2", "tasks": ["sst2", "mrpc"]}}
    objectives = [
        pb.Objective(metric="sst2.accuracy", direction=pb.MAXIMIZE),
        pb.Objective(metric="mrpc.f1", direction=pb.MAXIMIZE),
    ]
    done = pb.Trial(
        number=0,
        state=pb.COMPLETE,
        values=[0.8, 0.7],
        metrics={"sst2.accuracy": 0.8, "mrpc.f1": 0.7, "mrpc.accuracy": 0.6},
        duplicate_of=-1,
    )
    header = format_study(_study(spec_json=json.dumps(both), objectives=objectives), [done])
    columns = next(line for line in header.splitlines() if "glue_avg" in line).split()
    assert columns.count("sst2.accuracy") == columns.count("mrpc.f1") == 1, columns


def test_verbose_goes_before_or_after_the_command() -> None:
    """``archsearch studies -v`` said "unrecognized arguments: -v"."""
    parser = cli.build_parser()
    assert parser.parse_args(["studies", "-v"]).verbose is True
    assert parser.parse_args(["-v", "studies"]).verbose is True
    assert parser.parse_args(["studies"]).verbose is False
