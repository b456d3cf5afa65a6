"""Bad input: every malformed or unauthorised call gets a precise status and changes nothing."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _procs import table_spec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from archsearch.server.app import ArchsearchServer, ConfigError, ServerConfig, check_bind
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

ADMIN = "admin-token-0123456789abcdef"
WORKER = "worker-token-0123456789abcdef"
CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    cfg = ServerConfig(
        storage=f"sqlite:///{tmp_path / 's.db'}",
        port=0,
        admin_tokens=[ADMIN],
        worker_tokens=[WORKER],
        lease_duration_s=2,
        heartbeat_interval_s=1,
        max_long_polls=2,
        max_poll_s=5,
    )
    srv = ArchsearchServer(cfg)
    srv.start()
    yield srv
    srv.stop(0)


@pytest.fixture
def admin(server: ArchsearchServer) -> Iterator[SearchClient]:
    with SearchClient(server.address, token=ADMIN) as c:
        yield c


@pytest.fixture
def worker(server: ArchsearchServer) -> Iterator[WorkerClient]:
    with WorkerClient(server.address, token=WORKER) as c:
        yield c


def snapshot(server: ArchsearchServer) -> Any:
    """Everything the storage holds, read without the server's cache."""
    rdb = server.manager.rdb
    out = []
    for s in rdb.get_all_studies():
        trials = [
            (
                t.number,
                t.state,
                t.values,
                t.params,
                t.user_attrs,
                t.system_attrs,
                t.intermediate_values,
            )
            for t in rdb.get_all_trials(s._study_id)
        ]
        out.append((s.study_name, s.user_attrs, trials))
    return out


def expect(
    code: grpc.StatusCode, fn: Any, *args: Any, contains: str = "", **kw: Any
) -> ClientError:
    with pytest.raises(ClientError) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value
    assert contains in info.value.details
    return info.value


@pytest.fixture
def leased(admin: SearchClient, worker: WorkerClient) -> pb.AcquireTrialResponse:
    admin.launch(table_spec("s", 3))
    worker.register("w1", CAPS)
    r = worker.acquire("w1", CAPS, 0)
    assert r.has_trial
    return r


def test_unknown_study_trial_and_lease(server, admin, worker, leased) -> None:
    before = snapshot(server)
    expect(grpc.StatusCode.NOT_FOUND, admin.get_study, "nope", contains="no archsearch study")
    expect(grpc.StatusCode.NOT_FOUND, admin.list_trials, "nope")
    expect(grpc.StatusCode.NOT_FOUND, admin.stop, "nope")
    expect(grpc.StatusCode.NOT_FOUND, worker.acquire, "w1", CAPS, 0, study_name="nope")
    lid = leased.lease.lease_id
    study_id, trial_id, _token = lid.split(".")
    for bad in (
        "garbage",
        f"{study_id}.{trial_id}.0000",
        f"{study_id}.99999.abc",
        f"999.{trial_id}.abc",
        f"{study_id}.{2**63}.abc",  # past any database row id (was INTERNAL: OverflowError)
        f"{study_id}.{'9' * 30}.abc",
        f"{2**63}.{trial_id}.abc",
    ):
        expect(grpc.StatusCode.NOT_FOUND, worker.heartbeat, bad, contains="unknown lease")
        expect(grpc.StatusCode.NOT_FOUND, worker.complete, bad, {"accuracy": 0.5})
        expect(grpc.StatusCode.NOT_FOUND, worker.report, bad, 1, 0.5)
        expect(grpc.StatusCode.NOT_FOUND, worker.fail, bad, "x", True)
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.heartbeat, "", contains="lease_id is required")
    assert snapshot(server) == before


def test_stale_lease_is_refused(server, worker, leased) -> None:
    lid = leased.lease.lease_id
    time.sleep(3)  # the 2 s lease expires without heartbeats
    server.manager.reap_once()
    before = snapshot(server)
    for call in (
        lambda: worker.heartbeat(lid),
        lambda: worker.report(lid, 5, 0.7),
        lambda: worker.complete(lid, {"accuracy": 0.8}),
        lambda: worker.fail(lid, "x", True),
    ):
        e = expect(grpc.StatusCode.FAILED_PRECONDITION, call)
        assert "expired" in e.details and "re-queued as trial" in e.details
    assert snapshot(server) == before


def test_duplicate_completion(server, worker, leased) -> None:
    lid = leased.lease.lease_id
    first = worker.complete(lid, {"accuracy": 0.81, "params": 1e6})
    before = snapshot(server)
    again = worker.complete(lid, {"accuracy": 0.81, "params": 1e6})  # a retried report: OK
    assert list(again.values) == list(first.values) == [0.81]
    expect(grpc.StatusCode.ALREADY_EXISTS, worker.complete, lid, {"accuracy": 0.5})
    expect(grpc.StatusCode.FAILED_PRECONDITION, worker.report, lid, 3, 0.5)
    assert snapshot(server) == before


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values(server, worker, leased, bad: float) -> None:
    lid = leased.lease.lease_id
    before = snapshot(server)
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.report, lid, 1, bad, contains="finite")
    expect(
        grpc.StatusCode.INVALID_ARGUMENT, worker.complete, lid, {"accuracy": bad}, contains="finite"
    )
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.complete, lid, {"accuracy": 0.5, "loss": bad})
    assert snapshot(server) == before


def test_missing_objective_and_bad_metric_names(server, worker, leased) -> None:
    lid = leased.lease.lease_id
    before = snapshot(server)
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.complete, lid, {"f1": 0.5}, contains="accuracy")
    expect(
        grpc.StatusCode.INVALID_ARGUMENT, worker.complete, lid, {}, contains="metrics is required"
    )
    expect(
        grpc.StatusCode.INVALID_ARGUMENT, worker.complete, lid, {"accuracy": 0.5, "bad name!": 1.0}
    )
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.report, lid, -1, 0.5, contains="step")
    assert snapshot(server) == before


LORA_STUDY = {"name": "x", "space": "lora", "trainer": "lora", "n_trials": 3}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("{not json", "not valid JSON"),
        (
            '{"name": "z3", "name": "z4", "space": "bert", "n_trials": 2}',
            "key 'name' appears twice",
        ),
        (
            json.dumps(
                {"name": "x", "space": "flexibert", "n_trials": 3, "loop": "boshnas"}
                | {"loop_options": {"n_init": "5"}}
            ),
            "loop_options.n_init: must be int, got '5'",
        ),
        (  # not Python's "_random() got multiple values for argument 'seed'"
            json.dumps(
                {"name": "x", "space": "bert", "n_trials": 3, "loop": "random"}
                | {"loop_options": {"seed": 1}}
            ),
            "loop_options.seed: the random loop's seed is not a loop option (the spec's "
            "top-level seed sets the sampler's seed",
        ),
        (
            json.dumps(
                {"name": "x", "space": "bert", "n_trials": 3, "loop": "tpe"}
                | {"loop_options": {"library_size": 5}}
            ),
            "loop_options.library_size: unknown option of the tpe loop (known: ",
        ),
        (
            json.dumps(
                {"name": "x", "space": "bert", "n_trials": 3, "task": "cola", "tasks": ["mrpc"]}
            ),
            "task: 'cola' is not among tasks ['mrpc'], which would win",
        ),
        (
            json.dumps(
                {"name": "x", "space": "bert", "n_trials": 3, "recipe": {"measure_latency": False}}
                | {"objectives": ["accuracy:max", "latency_ms_b1:min"]}
            ),
            "recipe.measure_latency is false, so no trial measures 'latency_ms_b1'",
        ),
        (
            json.dumps(
                {"name": "x", "space": "flexibert", "n_trials": 3, "loop": "boshnas"}
                | {"loop_options": {"library_size": 50_000_000}}
            ),
            "loop_options.library_size: must be <= 50,000",
        ),
        (json.dumps({"name": "x", "space": 1, "n_trials": 3}), "space: must be a space's name"),
        (
            json.dumps({"name": "x", "space": "bert", "n_trials": 3, "objectives": ["params"]}),
            "'params' is a cost",
        ),
        (
            json.dumps(
                {"name": "x", "space": "bert", "n_trials": 3, "loop": "tpe"}
                | {"loop_options": {"n_startup_trials": -3}}
            ),
            "loop_options.n_startup_trials: must be >= 0",
        ),
        (
            json.dumps(
                {"name": "x", "space": "bert", "n_trials": 3, "recipe": {"max_steps": 10**30}}
            ),
            "recipe.max_steps: must be <= 100,000,000",
        ),
        (
            json.dumps(
                {"name": "x", "space": "flexibert", "n_trials": 3}
                | {"recipe": {"transfer_from": "trial:-1"}}
            ),
            "recipe.transfer_from: 'trial:-1': write trial:N",
        ),
        ('{"name": "x", "n_trials": ' + "9" * 5000 + "}", "not valid JSON: Exceeds the limit"),
        (json.dumps([1, 2]), "must be a JSON object"),
        (json.dumps({"space": "bert", "n_trials": 3}), "name"),
        (json.dumps({"name": "x", "space": "bert", "n_trials": 0}), "n_trials"),
        (json.dumps({"name": "x", "space": "bert", "n_trials": 3, "colour": "red"}), "colour"),
        (json.dumps({"name": "x", "space": "resnet", "n_trials": 3}), "unknown space"),
        (json.dumps({"name": "x", "space": "bert", "n_trials": 3, "loop": "magic"}), "loop"),
        (json.dumps({"name": "x", "space": "bert", "n_trials": 3, "task": "imagenet"}), "task"),
        (
            json.dumps(
                {
                    "name": "x",
                    "space": "bert",
                    "n_trials": 3,
                    "space_options": {"hidden_size": [100], "num_attention_heads": [3]},
                }
            ),
            "divides",
        ),
        (
            json.dumps({"name": "x", "space": "bert", "n_trials": 3, "recipe": {"max_steps": -1}}),
            "recipe.max_steps",
        ),
        (
            json.dumps(
                {
                    "name": "x",
                    "space": "bert",
                    "n_trials": 3,
                    "objectives": [{"metric": "accuracy", "direction": "up"}],
                }
            ),
            "direction",
        ),
        (
            json.dumps(
                {
                    "name": "x",
                    "space": "bert",
                    "n_trials": 3,
                    "objectives": ["accuracy:max", "params:min"],
                    "pruner": "hyperband",
                }
            ),
            "hyperband",
        ),
        (json.dumps({"name": "x", "space": "bert", "n_trials": 3, "trainer": "table"}), "trainer"),
        (
            json.dumps({"name": "x", "space": "bert", "n_trials": 3, "loop_options": {"bogus": 1}}),
            "loop_options",
        ),
        # recipe.lora is checked when the study is created, with the worker's rules
        (
            json.dumps(
                {
                    **LORA_STUDY,
                    "space_options": {"r_max": [2, 4]},
                    "recipe": {"lora": {"eval_ranks": [3]}},
                }
            ),
            "recipe.lora.eval_ranks: [3] are outside 1..r_max (2)",
        ),
        (
            json.dumps({**LORA_STUDY, "recipe": {"lora": {"targets": ["query"]}}}),
            "recipe.lora.targets: is set by the lora space",
        ),
        (
            json.dumps({**LORA_STUDY, "space_options": {"targets": [["query"], ["qurey"]]}}),
            "space_options.targets[1]: ['qurey'] match no linear module of the packaged "
            "all-MiniLM-L6-v2 (its linear modules end in ['dense', 'key', 'query', "
            "'value'], e.g. ['query', 'value'])",
        ),
        # the head is trained in full: peft cannot give it LoRA too (every trial failed)
        (
            json.dumps({**LORA_STUDY, "space_options": {"targets": [["query", "classifier"]]}}),
            "space_options.targets[0]: ['classifier'] name only the classification head",
        ),
        # what the lora trainer refuses in every trial is refused at launch
        (
            json.dumps({**LORA_STUDY, "recipe": {"pretrain_steps": 10}}),
            "recipe.pretrain_steps: is not read by the lora trainer",
        ),
        (
            json.dumps({**LORA_STUDY, "recipe": {"teacher": "all-MiniLM-L6-v2"}}),
            "recipe.teacher: is not read by the lora trainer",
        ),
        # an AutoDistil proxy no trial reports ended the study after all the supernet work
        (
            json.dumps(
                {
                    "name": "x",
                    "space": "autodistil",
                    "loop": "autodistil",
                    "trainer": "autodistil",
                    "n_trials": 9,
                    "loop_options": {"proxy": "bogus_metric"},
                }
            ),
            "loop_options.proxy: no trial reports 'bogus_metric'",
        ),
        # the space sets each candidate's learning rate: the study's would be replaced
        (
            json.dumps({**LORA_STUDY, "recipe": {"learning_rate": 5e-4}}),
            "recipe.learning_rate: is set by the lora space for each candidate",
        ),
        (
            json.dumps({**LORA_STUDY, "space_options": {"learning_rate": [1e-3, 1e-4]}}),
            "space_options.learning_rate: must be [low, high] with 0 < low <= high",
        ),
        (
            json.dumps({**LORA_STUDY, "objectives": ["accuracy@r2:max"]}),
            "objectives[0].metric: invalid metric name 'accuracy@r2' (use 'accuracy': each DyLoRA "
            "rank or AutoDistil student is stored as its own trial",
        ),
        (
            json.dumps({**LORA_STUDY, "recipe": {"lora": {"dropout": -0.1}}}),
            "recipe.lora.dropout: must be a number in [0, 1)",
        ),
        (
            json.dumps({"name": "x", "space": "bert", "n_trials": 3, "recipe": {"lora": {}}}),
            "recipe.lora: LoRA settings apply to the lora space only",
        ),
    ],
)
def test_malformed_spec_creates_nothing(server, admin, spec: str, field: str) -> None:
    before = snapshot(server)
    e = expect(grpc.StatusCode.INVALID_ARGUMENT, admin.launch, spec)
    assert field in e.details
    assert snapshot(server) == before


def test_duplicate_study_name(server, admin) -> None:
    admin.launch(table_spec("dup", 2))
    before = snapshot(server)
    expect(grpc.StatusCode.ALREADY_EXISTS, admin.launch, table_spec("dup", 5))
    assert snapshot(server) == before


def test_oversized_message(server, admin) -> None:
    before = snapshot(server)
    huge = {**table_spec("big", 2), "padding": "x" * (5 * 1024 * 1024)}
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, admin.launch, huge)
    assert snapshot(server) == before


def test_tokens(server, admin) -> None:
    admin.launch(table_spec("auth", 2))
    before = snapshot(server)
    with SearchClient(server.address, token=None) as anon:
        expect(grpc.StatusCode.UNAUTHENTICATED, anon.list_studies, contains="missing token")
    with SearchClient(server.address, token="wrong-token-0123456789") as wrong:
        expect(grpc.StatusCode.UNAUTHENTICATED, wrong.get_study, "auth", contains="wrong token")
    with SearchClient(server.address, token=WORKER) as as_worker:
        expect(grpc.StatusCode.PERMISSION_DENIED, as_worker.launch, table_spec("evil", 2))
        expect(grpc.StatusCode.PERMISSION_DENIED, as_worker.stop, "auth")
    with WorkerClient(server.address, token=None) as anon_worker:
        expect(grpc.StatusCode.UNAUTHENTICATED, anon_worker.register, "w", CAPS)
    assert snapshot(server) == before
    with WorkerClient(server.address, token=ADMIN) as admin_worker:  # admin may do everything
        assert admin_worker.register("w", CAPS).worker_id == "w"


def test_worker_request_validation(server, admin, worker) -> None:
    admin.launch(table_spec("v", 2))
    before = snapshot(server)
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.register, "bad id!", CAPS)
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.register, "w", pb.WorkerCapabilities())
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.acquire, "w", CAPS, math.nan)
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.acquire, "", CAPS, 0)
    bad_caps = pb.WorkerCapabilities(trainers=["Table With Spaces"])
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.acquire, "w", bad_caps, 0)
    assert not worker.acquire("w", pb.WorkerCapabilities(trainers=["bert"]), 0).has_trial
    assert snapshot(server) == before


def test_a_worker_that_leaves_is_no_longer_connected(server, admin, worker) -> None:
    """LeaveWorker: an exiting worker stops counting as connected at once (it counted for a
    lease duration after its last call); one holding a lease still counts while it holds it.
    A malformed id is INVALID_ARGUMENT; an unknown one is answered (an earlier server's)."""
    admin.launch(table_spec("lv", 3))
    worker.register("idle", CAPS)
    worker.register("busy", CAPS)
    lease = worker.acquire("busy", CAPS, 0)
    assert lease.has_trial
    assert server.manager.connected_trainers("lv") == {"table": 2}
    assert worker.leave("idle").was_connected
    assert server.manager.connected_trainers("lv") == {"table": 1}
    assert not worker.leave("idle").was_connected  # again: harmless
    assert worker.leave("busy").was_connected
    assert server.manager.connected_trainers("lv") == {"table": 1}  # its lease: still training
    worker.complete(lease.lease.lease_id, {"accuracy": 0.5})
    assert server.manager.connected_trainers("lv") == {}
    assert {w.worker_id for w in server.manager.workers()} == {"idle", "busy"}  # still listed
    assert not worker.leave("never-seen").was_connected
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.leave, "bad id!", contains="worker_id")
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.leave, "", contains="worker_id")
    with WorkerClient(server.address, token=None) as anon:
        expect(grpc.StatusCode.UNAUTHENTICATED, anon.leave, "idle")


def test_long_poll_cap(server, admin, worker) -> None:
    """max_long_polls=2: a third simultaneous wait is refused, not queued."""
    caps = pb.WorkerCapabilities(trainers=["nothing-matches"])
    futures = [worker.acquire_future(f"w{i}", caps, 3.0) for i in range(2)]
    time.sleep(0.5)
    expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        worker.acquire,
        "w9",
        caps,
        3.0,
        contains="--max-long-polls",
    )
    assert all(not f.result(timeout=10).has_trial for f in futures)


def test_list_trials_paging_validation(server, admin) -> None:
    admin.launch(table_spec("p", 2))
    stub = admin._stub
    for req in (
        pb.ListTrialsRequest(study_name="p", page_size=5000),
        pb.ListTrialsRequest(study_name="p", page_token="not-a-token"),
        pb.ListTrialsRequest(study_name="p", page_token="²"),  # isdigit() but not int()
        pb.ListTrialsRequest(study_name="p", page_token="١٢"),  # Arabic-Indic digits
        pb.ListTrialsRequest(study_name="p", states=[99]),
    ):
        expect(grpc.StatusCode.INVALID_ARGUMENT, admin._call, stub.ListTrials, req)


def test_server_stays_up(server, admin, worker, leased) -> None:
    for _ in range(3):
        with pytest.raises(ClientError):
            admin.launch("{")
    with grpc.insecure_channel(server.address) as ch:  # health needs no token
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    assert worker.complete(leased.lease.lease_id, {"accuracy": 0.8}).values == [0.8]


def test_refuses_open_address_without_tokens(tmp_path: Path) -> None:
    cfg = ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", host="0.0.0.0", port=0)
    with pytest.raises(ConfigError, match="without tokens"):
        check_bind(cfg)
    with pytest.raises(ConfigError, match="without tokens"):
        ArchsearchServer(cfg)
    check_bind(ServerConfig(host="0.0.0.0", admin_tokens=[ADMIN]))  # with tokens: allowed
    check_bind(ServerConfig(host="::1"))


def test_non_ascii_digit_lease_ids(server, worker, leased) -> None:
    """'²' passes str.isdigit but not int(): such lease ids are unknown leases, not INTERNAL."""
    study_id, trial_id, token = leased.lease.lease_id.split(".")
    before = snapshot(server)
    for bad in ("1.²³.x", f"{study_id}.{trial_id}².{token}", f"²{study_id}.{trial_id}.{token}"):
        for call in (
            lambda b=bad: worker.heartbeat(b),
            lambda b=bad: worker.report(b, 1, 0.5),
            lambda b=bad: worker.complete(b, {"accuracy": 0.5}),
            lambda b=bad: worker.fail(b, "x", True),
            lambda b=bad: worker.release(b, "x"),
        ):
            expect(grpc.StatusCode.NOT_FOUND, call, contains="unknown lease")
    assert snapshot(server) == before


def _all_methods() -> list[str]:
    return [
        f"/{service.full_name}/{m.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    ]


def test_undecodable_bodies_are_invalid_argument(
    server, admin, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are no protobuf message: INVALID_ARGUMENT and one short log line per call,
    not grpc-python's INTERNAL "Exception deserializing request!" with a traceback."""
    admin.launch(table_spec("g", 2))
    before = snapshot(server)
    caplog.set_level(logging.INFO)
    # invalid for every message type: a truncated tag, a length past the end, a short field
    garbage = [b"\xff" * 7, b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05ab"]
    calls = 0
    with grpc.insecure_channel(server.address) as ch:
        not_utf8 = ("/archsearch.v1.SearchService/GetStudy", [b"\x0a\x02\xc3\x28"])  # name
        for path, bodies in [*((m, garbage) for m in _all_methods()), not_utf8]:
            method = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
            for body in bodies:
                with pytest.raises(grpc.RpcError) as info:
                    method(body, timeout=10, metadata=(("authorization", f"Bearer {ADMIN}"),))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, body)
                assert "not a valid" in info.value.details()
                calls += 1
        # the token check still comes first
        bad = ch.unary_unary(_all_methods()[0], request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            bad(garbage[0], timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) <= calls
    for r in records:
        assert r.exc_info is None and r.name == "archsearch.server", r
        assert len(r.getMessage()) < 200 and "\n" not in r.getMessage()
    assert "Exception deserializing" not in caplog.text
    assert snapshot(server) == before
    # health and reflection still answer
    with grpc.insecure_channel(server.address) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert "archsearch.v1.WorkerService" in names


def test_reasons_cannot_forge_log_lines(
    server, admin, worker, caplog: pytest.LogCaptureFixture
) -> None:
    """A newline (or NUL) in a fail or release reason is escaped in the log; the stored
    fail_reason keeps the text as given."""
    caplog.set_level(logging.INFO, logger="archsearch.server")
    forged = "2026-12-02 08:00:00,000 INFO archsearch.server: forged"
    admin.launch(table_spec("f", 3, max_retries=5))
    worker.register("w1", CAPS)
    reasons = []
    for i, call in enumerate(("fail", "release", "fail")):
        r = worker.acquire("w1", CAPS, 5)
        assert r.has_trial
        reason = f"boom {i}\n{forged}\x00\r{forged}"
        reasons.append(reason)
        if call == "fail":
            assert worker.fail(r.lease.lease_id, reason, True).requeued
        else:
            assert worker.release(r.lease.lease_id, reason).requeued
    logged = caplog.text
    assert "re-queued trial" in logged and "forged" in logged  # the reasons were logged...
    for line in logged.splitlines():  # ...escaped, inside one line each
        assert not line.startswith(forged) and "\x00" not in line, line
    stored = [t.fail_reason for t in admin.list_trials("f") if t.fail_reason]
    assert set(reasons) <= set(stored)


def test_list_trials_pages_cut_by_bytes(server, admin) -> None:
    """Trials with many metrics: a 1000-trial page would be ~6 MB, over the 4 MB message limit;
    pages end early with a token, and the client lists every trial once."""
    import optuna

    admin.launch(table_spec("big", 3))
    study = optuna.load_study(study_name="big", storage=server.manager.rdb)
    metrics = {f"task{i:03d}.metric_with_a_long_name": i / 7 for i in range(600)}
    n = 260
    study.add_trials(
        [
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                values=[0.5],
                user_attrs={"metrics": metrics},
            )
            for _ in range(n)
        ]
    )
    total = len(admin.list_trials("big", page_size=1))
    assert total >= n
    stub = admin._stub
    first = admin._call(stub.ListTrials, pb.ListTrialsRequest(study_name="big", page_size=1000))
    assert first.next_page_token and 0 < len(first.trials) < total
    assert first.ByteSize() <= 4 * 1024 * 1024
    numbers = [t.number for t in admin.iter_trials("big", page_size=1000)]
    assert len(numbers) == total == len(set(numbers))
    assert numbers == sorted(numbers)
