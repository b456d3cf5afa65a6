"""A table trial scored with another table than its study's is said: a worker answers from
its own --table, and one started with another file gave other scores with nothing said."""

from __future__ import annotations

import hashlib
from pathlib import Path

from _procs import TABLE, table_spec

from archsearch.server.client import SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


def test_a_worker_table_other_than_the_studys_is_said(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    srv = sqlite_server()
    own = hashlib.sha256(Path(TABLE).read_bytes()).hexdigest()
    with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
        admin.launch({**table_spec("t", 2), "objectives": ["accuracy:max"]})
        worker.register("w", CAPS)
        for sha in (own, "0" * 64):  # the study's table, then another one
            lease = worker.acquire("w", CAPS, 5, study_name="t").lease
            info = {"table": "/elsewhere/mine.json", "table_sha256": sha}
            worker.complete(lease.lease_id, {"accuracy": 0.8}, info)
        trials = sorted(admin.list_trials("t"), key=lambda t: t.number)
        assert "table_warning" not in trials[0].info
        said = trials[1].info["table_warning"]
        assert said.startswith(
            "scored with the worker's table /elsewhere/mine.json, not the study's"
        )
        assert f"start the worker with --table {TABLE}" in said


def test_the_table_trainer_sends_its_tables_digest() -> None:
    from archsearch.worker._table_trainer import TableTrainer

    trainer = TableTrainer(str(TABLE))
    assert trainer._sha256 == hashlib.sha256(Path(TABLE).read_bytes()).hexdigest()
    assert isinstance(trainer._sha256, str) and len(trainer._sha256) == 64
