"""The server's trainer catalogue: installed trainers, what workers describe, bad descriptions.

The server knows trainers from the ``archsearch.trainers`` entry points and from the workers'
``RegisterWorker.trainer_info``; no list of its own (checked here with grep).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from archsearch.server._spec import SearchSpec
from archsearch.server._trainers import TrainerCatalogue, installed_trainers
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient, WorkerClient, trainer_info_to_pb
from archsearch.spaces import SpecError, TrainerInfo
from archsearch.v1 import archsearch_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
ECHO = TrainerInfo(name="echo", spaces=("bert",), metrics=("echo_score",))
SPEC = {"name": "e", "space": "bert", "trainer": "echo", "n_trials": 2}


def test_installed_trainers_come_from_entry_points_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from archsearch.server._trainers import installed_trainers; "
        "print(','.join(i.name for i in installed_trainers()), 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert out.stdout.split() == ["autodistil,bert,lora,table", "False"], out.stderr


def test_a_spec_on_an_unknown_trainer_is_refused_until_a_worker_describes_it() -> None:
    catalogue = TrainerCatalogue(installed_trainers())
    spec = {**SPEC, "objectives": ["echo_score:max"]}
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict(spec, catalogue)
    assert e.value.field == "trainer"
    assert "unknown trainer 'echo'" in str(
        e.value
    ) and "known: autodistil, bert, lora, table" in str(e.value)
    assert "start a worker that offers it" in str(e.value)

    catalogue.learn([ECHO], "worker-1")
    assert SearchSpec.from_dict(spec, catalogue).trainer == "echo"
    with pytest.raises(SpecError, match="the echo trainer never reports 'accuracy'"):
        SearchSpec.from_dict({**spec, "objectives": ["accuracy:max"]}, catalogue)
    with pytest.raises(SpecError, match="glue_avg averages several GLUE tasks"):
        SearchSpec.from_dict({**spec, "objectives": ["glue_avg:max"]}, catalogue)
    with pytest.raises(SpecError, match="the echo trainer does not train flexibert candidates"):
        SearchSpec.from_dict({**spec, "space": "flexibert"}, catalogue)


def test_a_recorded_description_is_taken_only_for_an_unknown_trainer() -> None:
    catalogue = TrainerCatalogue(installed_trainers())
    bert = catalogue.require("bert")
    catalogue.remember(TrainerInfo(name="bert", metrics=("only",)))
    assert catalogue.require("bert") == bert
    catalogue.remember(ECHO)
    assert catalogue.require("echo") == ECHO
    assert TrainerInfo.from_dict(ECHO.to_dict()) == ECHO


def test_a_worker_cannot_redescribe_an_installed_trainer(caplog) -> None:
    """A worker token could register `bert` as training only lora candidates, and every
    admin's bert launch was refused until someone registered the right description."""
    catalogue = TrainerCatalogue(installed_trainers())
    bert = catalogue.require("bert")
    forged = TrainerInfo(name="bert", metrics=("score",), spaces=("lora",))
    with caplog.at_level("WARNING", logger="archsearch.server"):
        catalogue.learn([forged], "worker-evil")
        catalogue.learn([forged], "worker-evil")
    assert catalogue.require("bert") == bert
    said = [r.getMessage() for r in caplog.records if "describes it differently" in r.getMessage()]
    assert len(said) == 1 and "the server keeps its own description" in said[0]
    assert SearchSpec.from_dict({**SPEC, "trainer": "bert", "space": "bert"}, catalogue)
    # a plugin's description: the newest one wins
    catalogue.learn([ECHO], "w1")
    newer = TrainerInfo(name="echo", metrics=("echo_score", "other"), spaces=("bert",))
    catalogue.learn([newer], "w2")
    assert catalogue.require("echo") == newer


def test_no_hard_coded_trainer_list_in_the_server() -> None:
    found = []
    for path in sorted((REPO / "server").glob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bTRAINERS\b|TRAINER_METRICS|trainer ?[!=]= ?['\"]|BERT_TRAINER", line):
                found.append(f"{path.name}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


# ------------------------------------------------------------------ over the wire


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    cfg = ServerConfig(
        storage=f"sqlite:///{tmp_path / 's.db'}",
        port=0,
        lease_duration_s=2,
        heartbeat_interval_s=1,
    )
    srv = ArchsearchServer(cfg)
    srv.start()
    yield srv
    srv.stop(0)


def _register(worker: WorkerClient, infos: list[pb.TrainerInfo], offered=("echo",)) -> None:
    caps = pb.WorkerCapabilities(trainers=list(offered), device="cpu")
    req = pb.RegisterWorkerRequest(worker_id="w", capabilities=caps, trainer_info=infos)
    worker._call(worker.stub.RegisterWorker, req)


def _echo(**fields) -> pb.TrainerInfo:
    msg = trainer_info_to_pb(ECHO)
    for key, value in fields.items():
        if isinstance(value, list):
            del getattr(msg, key)[:]
            getattr(msg, key).extend(value)
        else:
            setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    ("infos", "says"),
    [
        ([_echo(name="Echo!")], "trainer_info.name: invalid trainer name 'Echo!'"),
        ([_echo(name="other")], "trainer_info[0].name: describes 'other', which capabilities"),
        ([_echo(), _echo()], "trainer_info[1].name: 'echo' is described twice"),
        ([_echo(metrics=["a.b"])], "trainer_info[echo].metrics: invalid name 'a.b'"),
        ([_echo(metrics=[])], "trainer_info[echo].metrics: the trainer reports no metric"),
        ([_echo(task_metrics="loud")], "trainer_info[echo].task_metrics: unknown rule 'loud'"),
        ([_echo(multi_task_metrics=["x"])], "trainer_info[echo].multi_task_metrics: 'x' is not"),
        ([_echo(spaces=["bert", "bert"])], "trainer_info[echo].spaces: a name is listed twice"),
        ([_echo(description="x" * 201)], "trainer_info[echo].description: must be one line"),
        ([_echo(description="two\nlines")], "trainer_info[echo].description: must be one line"),
        ([_echo(cost_metrics=["echo_score"])], "'echo_score' is also a cost metric"),
        ([_echo()] * 33, "trainer_info: 33 descriptions; at most 32"),
    ],
)
def test_bad_trainer_info_is_invalid_argument_and_teaches_nothing(
    server: ArchsearchServer, infos: list[pb.TrainerInfo], says: str
) -> None:
    with WorkerClient(server.address) as worker, SearchClient(server.address) as admin:
        with pytest.raises(ClientError) as e:
            _register(worker, infos)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert says in e.value.details
        with pytest.raises(ClientError, match="unknown trainer 'echo'"):
            admin.launch({**SPEC, "objectives": ["echo_score:max"]})


def test_a_described_trainer_is_launchable(server: ArchsearchServer) -> None:
    with WorkerClient(server.address) as worker, SearchClient(server.address) as admin:
        _register(worker, [_echo()])
        study = admin.launch({**SPEC, "objectives": ["echo_score:max"]})
        assert study.name == "e"
        # a worker sending no description (an older worker) still registers by name
        _register(worker, [], offered=("bert", "table"))


def test_a_plugin_publishing_a_built_in_name_is_ignored(tmp_path: Path) -> None:
    """A plugin entry point named "bert" was used instead of archsearch's own when it came
    first, and every bert launch was checked against the plugin's description."""
    import subprocess
    import sys

    (tmp_path / "fakebert.py").write_text(
        "from archsearch.spaces import TrainerInfo\n"
        "INFO = TrainerInfo(name='bert', spaces=('bert',), metrics=('accuracy',))\n"
    )
    dist = tmp_path / "aaa_fake-0.1.dist-info"  # sorts first on the path
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aaa-fake\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[archsearch.trainers]\nbert = fakebert:INFO\n")
    code = (
        "from archsearch.server._trainers import installed_trainers; "
        "print([i.cost_metrics[:1] for i in installed_trainers() if i.name == 'bert'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[('params',)]"  # archsearch's own description
    assert "published twice (archsearch.worker._bert_info:BERT_TRAINER_INFO and fakebert:INFO)" in (
        done.stderr
    )
