"""A bounded, seeded fuzz run against a real server process on 127.0.0.1.

About 2,000 calls: random bytes, messages with random field values (garbage lease ids, huge
strings under the message limit, NaN/inf, negative numbers, unknown enum values, random spec
JSON), mutated valid messages, lease abuse (stale, foreign and finished leases) and bad tokens,
mixed with a well-behaved worker. Afterwards: no call got INTERNAL or UNKNOWN, the server is
healthy and its log holds no traceback, the database is consistent, and a normal worker still
acquires and completes a trial. Set ``ARCHSEARCH_FUZZ_SEED`` to replay another seed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import optuna
import pytest
from _procs import ServerProc, table_spec, wait_for
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from archsearch.v1 import archsearch_pb2 as pb

SEED = int(os.environ.get("ARCHSEARCH_FUZZ_SEED", "11"))
CALLS = 2000
ADMIN = "fuzz-admin-token-0123456789"
WORKER = "fuzz-worker-token-0123456789"
CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")
METHODS = {
    m.name: (
        f"/{service.full_name}/{m.name}",
        message_factory.GetMessageClass(m.input_type),
        message_factory.GetMessageClass(m.output_type),
    )
    for service in pb.DESCRIPTOR.services_by_name.values()
    for m in service.methods
}
STUDY_STATES = {"running", "stopped", "completed"}


class Fuzzer:
    """Sends calls as raw bytes (so any body can go out) and tallies the status codes."""

    def __init__(self, address: str, rng: random.Random) -> None:
        self.ch = grpc.insecure_channel(address)
        self.rng = rng
        self.tally: collections.Counter[str] = collections.Counter()
        self.bad: list[str] = []
        self.leases: list[str] = []  # every lease ever granted, live or not
        self.studies = ["fz", "fz-bert"]

    def call(
        self, method: str, body: bytes, token: str | None = ADMIN, timeout: float = 5.0
    ) -> bytes | None:
        path, _, _ = METHODS[method]
        stub = self.ch.unary_unary(path, request_serializer=None, response_deserializer=None)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            out = stub(body, timeout=timeout, metadata=metadata)
            self.tally["OK"] += 1
            return bytes(out)
        except grpc.RpcError as e:
            code = e.code()
            self.tally[code.name] += 1
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                self.bad.append(f"{method} {body[:120]!r}: {code.name} {e.details()}")
            return None

    def send(self, method: str, msg: Any, **kw: Any) -> Any:
        out = self.call(method, msg.SerializeToString(), **kw)
        return None if out is None else METHODS[method][2].FromString(out)

    # ----------------------------------------------------------------- random values

    def text(self) -> str:
        r = self.rng
        kind = r.randrange(9)
        if kind == 0:
            return ""
        if kind == 1:
            return "".join(chr(r.randrange(32, 127)) for _ in range(r.randrange(1, 40)))
        if kind == 2:  # control characters, non-ASCII digits, surrogate-free unicode
            return "".join(r.choice("\n\r\x00\t²³١٢ 😀é.-_:") for _ in range(r.randrange(1, 30)))
        if kind == 3:
            return "x" * r.choice([101, 129, 257, 4096, 200_000, 1_000_000])  # huge, under 4 MB
        if kind == 4:
            return self.lease_like()
        if kind == 5:
            return r.choice([*self.studies, "w1", "table", "bert", "nope"])
        if kind == 6:
            return json.dumps(self.json_value())
        if kind == 7:
            return r.choice(self.leases) if self.leases else "1.1.x"
        return str(r.randrange(-5, 10**6))

    def lease_like(self) -> str:
        r = self.rng
        parts = [
            r.choice(["1", "2", "0", "-1", "²", "99999999999999999999", "", "a"]) for _ in "ab"
        ]
        return ".".join([*parts, r.choice(["x", "", "deadbeef", "0" * 32])][: r.randrange(1, 5)])

    def number(self, kind: int) -> Any:
        r = self.rng
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return r.choice([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300, r.uniform(-9, 9)])
        bits = 64 if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64) else 32
        low = 0 if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64) else None
        choices = [0, 1, -1, 7, 1000, 1001, 2 ** (bits - 1) - 1, -(2 ** (bits - 1))]
        v = r.choice([*choices, r.randrange(-(10**6), 10**6)])
        return abs(v) if low == 0 else v

    def json_value(self, depth: int = 0) -> Any:
        r = self.rng
        k = r.randrange(8 if depth < 3 else 5)
        if k == 0:
            return None
        if k == 1:
            return r.choice([True, False])
        if k == 2:
            return r.choice([0, -1, 3, 2**40, 1.5])
        if k in (3, 4):
            return r.choice(["", "sst2", "tpe", "median", "table", "x" * 50, "²"])
        if k == 5:
            return [self.json_value(depth + 1) for _ in range(r.randrange(4))]
        keys = ["task", "tasks", "type", "table", "metric", "direction", "max_steps", "zz"]
        return {r.choice(keys): self.json_value(depth + 1) for _ in range(r.randrange(4))}

    def fill(self, msg: Any, depth: int = 0) -> Any:
        """Random values in random fields of ``msg``."""
        for f in msg.DESCRIPTOR.fields:
            if self.rng.random() < 0.3:
                continue
            # a value the field cannot hold is simply left out
            with contextlib.suppress(ValueError, TypeError, OverflowError):
                self._fill_field(msg, f, depth)
        return msg

    def _fill_field(self, msg: Any, f: FieldDescriptor, depth: int) -> None:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            target = getattr(msg, f.name)
            for _ in range(self.rng.randrange(1, 6)):
                key = self.rng.choice(["accuracy", "params", self.text()[:80]])
                target[key] = self.scalar(value_field)
        elif f.is_repeated:
            getattr(msg, f.name).extend(self.scalar(f) for _ in range(self.rng.randrange(4)))
        elif f.message_type is not None:
            if depth < 2:
                getattr(msg, f.name).CopyFrom(self.fill(getattr(msg, f.name), depth + 1))
        else:
            setattr(msg, f.name, self.scalar(f))

    def scalar(self, f: FieldDescriptor) -> Any:
        if f.type == FieldDescriptor.TYPE_STRING:
            return self.text()
        if f.type == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if f.type == FieldDescriptor.TYPE_ENUM:
            return self.rng.randrange(-3, 12)  # unknown values included
        return self.number(f.type)

    def spec_json(self) -> str:
        r = self.rng
        spec: Any = table_spec(f"fz-{r.randrange(10**6)}", r.choice([1, 2, 5]))
        for _ in range(r.randrange(1, 4)):
            spec[r.choice([*spec, "tasks", "pruner", "recipe", "loop_options"])] = self.json_value()
        return json.dumps(spec if r.random() < 0.8 else self.json_value())

    # ----------------------------------------------------------------------- actions

    def act(self) -> None:
        r = self.rng
        action = r.choices(
            ["bytes", "mutated", "random_msg", "spec", "lease", "token", "good"],
            weights=[12, 15, 30, 5, 25, 5, 8],
        )[0]
        method = r.choice(sorted(METHODS))
        if action == "bytes":
            self.call(method, r.randbytes(r.randrange(0, 64)), timeout=2)
        elif action == "mutated":
            body = bytearray(self.fill(METHODS[method][1]()).SerializeToString())
            for _ in range(r.randrange(1, 4)):
                if body and r.random() < 0.7:
                    body[r.randrange(len(body))] = r.randrange(256)
                else:
                    body += r.randbytes(r.randrange(1, 8))
            if body and r.random() < 0.3:
                del body[r.randrange(len(body)) :]
            self.call(method, bytes(body), timeout=2)
        elif action == "random_msg":
            msg = self.fill(METHODS[method][1]())
            if method == "AcquireTrial":
                msg.timeout_s = min(msg.timeout_s, 0.2) if math.isfinite(msg.timeout_s) else 0
            self.send(method, msg, token=r.choice([ADMIN, WORKER]), timeout=2)
        elif action == "spec":
            self.send("LaunchSearch", pb.LaunchSearchRequest(spec_json=self.spec_json()))
        elif action == "lease":
            self.abuse_lease()
        elif action == "token":
            token = r.choice([None, "wrong-token-0123456789", WORKER, "Bearer x", "x"])
            self.send(method, self.fill(METHODS[method][1]()), token=token, timeout=2)
        else:
            self.good_worker()

    def acquire(self, study: str = "fz") -> str | None:
        resp = self.send(
            "AcquireTrial",
            pb.AcquireTrialRequest(worker_id="w1", capabilities=CAPS, study_name=study),
            token=WORKER,
        )
        if resp is not None and resp.has_trial:
            self.leases.append(resp.lease.lease_id)
            return str(resp.lease.lease_id)
        return None

    def good_worker(self) -> None:
        lease = self.acquire()
        if lease is not None:
            report = pb.ReportIntermediateRequest(lease_id=lease, step=1, value=0.5)
            self.send("ReportIntermediate", report, token=WORKER)
            metrics = {"accuracy": self.rng.random()}
            complete = pb.CompleteTrialRequest(lease_id=lease, metrics=metrics)
            self.send("CompleteTrial", complete, token=WORKER)

    def abuse_lease(self) -> None:
        """Every lease RPC on a live, finished, stale, foreign or forged lease."""
        r = self.rng
        if not self.leases or r.random() < 0.2:
            self.acquire()
        if not self.leases:
            return
        lease = r.choice(self.leases)
        if r.random() < 0.3:  # foreign: another lease's token, or a neighbouring trial id
            study, trial, token = lease.split(".")
            other = r.choice(self.leases).split(".")[2]
            lease = r.choice([f"{study}.{trial}.{other}", f"{study}.{int(trial) + 1}.{token}"])
        value = r.choice([0.5, math.nan, -1.0, 1e300])
        reason = r.choice(
            ["", "oom", "x\n2026-01-01 INFO archsearch.server: forged\x00", "y" * 9000]
        )
        msg: Any = r.choice(
            [
                pb.HeartbeatRequest(lease_id=lease),
                pb.ReportIntermediateRequest(
                    lease_id=lease, step=r.randrange(-2, 400), value=value
                ),
                pb.CompleteTrialRequest(lease_id=lease, metrics={"accuracy": value}),
                pb.CompleteTrialRequest(lease_id=lease, metrics={"accuracy": 0.7, "x": 1.0}),
                pb.FailTrialRequest(lease_id=lease, reason=reason, retryable=r.random() < 0.5),
                pb.ReleaseTrialRequest(lease_id=lease, reason=reason),
            ]
        )
        self.send(type(msg).__name__.removesuffix("Request"), msg, token=WORKER)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    (tmp_path / "admin").write_text(ADMIN + "\n")
    (tmp_path / "worker").write_text(WORKER + "\n")
    srv = ServerProc(
        f"sqlite:///{tmp_path / 'fuzz.db'}",
        tmp_path / "server.log",
        lease=3,
        extra=(
            "--admin-token-file",
            str(tmp_path / "admin"),
            "--worker-token-file",
            str(tmp_path / "worker"),
        ),
    )
    srv.start()
    yield srv
    srv.stop()


def check_database(storage: str) -> dict[str, int]:
    """Invariants that hold whatever the calls were; returns the trial count per study."""
    rdb = optuna.storages.RDBStorage(storage)
    counts = {}
    try:
        for s in rdb.get_all_studies():
            if "archsearch:spec" not in s.user_attrs:
                continue
            assert s.user_attrs.get("archsearch:state") in STUDY_STATES, s.user_attrs
            trials = rdb.get_all_trials(s._study_id, deepcopy=False)
            counts[s.study_name] = len(trials)
            assert sorted(t.number for t in trials) == list(range(len(trials)))
            for t in trials:
                if t.state == optuna.trial.TrialState.COMPLETE:
                    assert t.values is not None and len(t.values) == len(s.directions), t
                    assert all(math.isfinite(v) for v in t.values), t
                    assert "metrics" in t.user_attrs, t
                else:
                    assert t.values is None, t
    finally:
        rdb.engine.dispose()
    return counts


def test_fuzz(server: ServerProc) -> None:
    rng = random.Random(SEED)
    f = Fuzzer(server.address, rng)
    bert = {"name": "fz-bert", "space": "bert", "n_trials": 5}  # no worker here trains it
    for spec in (table_spec("fz", 60, max_retries=3), bert):
        launch = pb.LaunchSearchRequest(spec_json=json.dumps(spec))
        assert f.send("LaunchSearch", launch) is not None
    register = pb.RegisterWorkerRequest(worker_id="w1", capabilities=CAPS)
    assert f.send("RegisterWorker", register, token=WORKER) is not None
    for _ in range(CALLS):
        f.act()
    print(f"\nfuzz seed {SEED}, {sum(f.tally.values())} calls: {dict(sorted(f.tally.items()))}")
    assert not f.bad, f"INTERNAL/UNKNOWN (seed {SEED}):\n" + "\n".join(f.bad[:20])

    with grpc.insecure_channel(server.address) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert server.alive()
    log = server.output()
    assert "Traceback" not in log, log[-3000:]

    # The server's view adds up, and matches the storage, once preparation settles.
    def consistent() -> bool:
        stored = check_database(server.storage)
        listed = f.send("ListStudies", pb.ListStudiesRequest())
        assert listed is not None
        for s in listed.studies:
            states = (s.n_complete, s.n_pruned, s.n_fail, s.n_running, s.n_waiting)
            if sum(states) != stored.get(s.name):
                return False
        return {s.name for s in listed.studies} == set(stored)

    wait_for(consistent, 30, "the server's counts to match the storage")

    # A well-behaved worker still gets work done.
    spec = table_spec("after-fuzz", 2)
    assert f.send("LaunchSearch", pb.LaunchSearchRequest(spec_json=json.dumps(spec))) is not None
    lease = wait_for(lambda: f.acquire("after-fuzz"), 30, "a trial of the new study")
    done = f.send(
        "CompleteTrial",
        pb.CompleteTrialRequest(lease_id=lease, metrics={"accuracy": 0.75}),
        token=WORKER,
    )
    assert done is not None and list(done.values) == [0.75]
    check_database(server.storage)
