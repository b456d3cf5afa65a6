"""A handed-back trial's progress file (often hundreds of MB) is removed from the server once
the candidate's retry completes: its bytes and its record. Nothing else is touched: another
candidate's progress, a kept checkpoint, the retry's own files."""

from __future__ import annotations

from pathlib import Path

from _procs import table_spec

from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import SearchClient, WorkerClient
from archsearch.spaces import Candidate
from archsearch.v1 import archsearch_pb2 as pb

CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")


def test_a_completed_retry_removes_its_earlier_attempts_progress(tmp_path: Path) -> None:
    srv = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0))
    srv.start()
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as worker:
            admin.launch({**table_spec("s", 1), "objectives": ["score:max"]})
            worker.register("w", CAPS)
            first = worker.acquire("w", CAPS, 5)
            fp = Candidate.from_json(first.candidate_json).fingerprint()
            files = {
                f"progress-table-{fp}-sst2.pt": b"p" * 4096,  # this candidate's: removed
                f"progress-table-{'0' * 16}-sst2.pt": b"q" * 64,  # another candidate's
                "checkpoint-config.json": b"{}",  # a kept file
            }
            for name, data in files.items():
                (tmp_path / name).write_bytes(data)
                worker.upload_artifact(first.lease.lease_id, tmp_path / name, name)
            artifact_dir = Path(srv.artifact_dir or "")
            stored_before = {p.name for p in artifact_dir.iterdir() if p.is_file()}
            assert len(stored_before) == 3
            worker.release(first.lease.lease_id, "worker stopped (SIGTERM)")  # handed back
            retry = worker.acquire("w", CAPS, 5)
            assert retry.lease.trial_number != first.lease.trial_number
            (tmp_path / "own").write_bytes(b"r")
            own = f"progress-table-{fp}-sst2.pt"
            worker.upload_artifact(retry.lease.lease_id, tmp_path / "own", own)
            worker.complete(retry.lease.lease_id, {"score": 0.5}, {})
            left = {a.name for a in worker.list_artifacts("s", first.lease.trial_number)}
            assert left == set(files) - {own}
            # the retry's own upload is not an earlier attempt's: it stays
            assert [a.name for a in worker.list_artifacts("s", retry.lease.trial_number)] == [own]
            stored_after = {p.name for p in artifact_dir.iterdir() if p.is_file()}
            assert len(stored_after) == 3 and len(stored_before - stored_after) == 1
            # the removed file is gone for a download too
            names = [a.name for a in worker.list_artifacts("s", first.lease.trial_number)]
            assert own not in names
    finally:
        srv.stop(0)
