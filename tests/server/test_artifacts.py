"""Artifacts through the server: chunked upload with sha256, size cap, live lease only, precise
statuses for unknown names and bad bytes, and Optuna's artifact records (what the dashboard
lists)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _procs import table_spec

from archsearch.server._trial_artifacts import default_artifact_dir
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.v1 import archsearch_pb2 as pb

WORKER = "worker-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")
CAP = 3 * (1 << 20) + 5  # a few chunks, and room to go over


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    cfg = ServerConfig(
        storage=f"sqlite:///{tmp_path / 's.db'}",
        port=0,
        admin_tokens=[ADMIN],
        worker_tokens=[WORKER],
        lease_duration_s=30,
        heartbeat_interval_s=5,
        max_artifact_bytes=CAP,
    )
    srv = ArchsearchServer(cfg)
    srv.start()
    yield srv
    srv.stop(0)


@pytest.fixture
def worker(server: ArchsearchServer) -> Iterator[WorkerClient]:
    with WorkerClient(server.address, token=WORKER) as c:
        yield c


@pytest.fixture
def leased(server: ArchsearchServer, worker: WorkerClient) -> pb.AcquireTrialResponse:
    with SearchClient(server.address, token=ADMIN) as admin:
        admin.launch(table_spec("s", 3))
    worker.register("w1", CAPS)
    r = worker.acquire("w1", CAPS, 5)
    assert r.has_trial
    return r


def expect(code: grpc.StatusCode, fn, *args, contains: str = "", **kw) -> ClientError:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value
    assert contains in info.value.details, info.value.details
    return info.value


def artifact_attrs(server: ArchsearchServer, number: int) -> dict[str, str]:
    study_id = server.manager.rdb.get_study_id_from_name("s")
    tid = server.manager.rdb.get_trial_id_from_study_id_trial_number(study_id, number)
    attrs = server.manager.rdb.get_trial(tid).system_attrs
    return {k: v for k, v in attrs.items() if k.startswith(("artifacts:", "archsearch_artifact"))}


def test_upload_in_chunks_then_download_the_same_bytes(server, worker, leased, tmp_path) -> None:
    data = bytes(range(256)) * (10_000)  # 2.56 MB: three 1 MiB chunks
    src = tmp_path / "model.safetensors"
    src.write_bytes(data)
    lease = leased.lease
    artifact_id = worker.upload_artifact(lease.lease_id, src, "ckpt.bin")
    # Optuna's own record (what optuna-dashboard lists) plus the checked size and sha256
    attrs = artifact_attrs(server, lease.trial_number)
    meta = json.loads(attrs[f"artifacts:{artifact_id}"])
    assert meta["filename"] == "ckpt.bin"
    listed = worker.list_artifacts("s", lease.trial_number)
    assert [(a.name, a.artifact_id, a.size_bytes) for a in listed] == [
        ("ckpt.bin", artifact_id, len(data))
    ]
    assert listed[0].sha256 == hashlib.sha256(data).hexdigest()
    dest = tmp_path / "elsewhere" / "got.bin"
    dest.parent.mkdir()
    got = worker.download_artifact("s", lease.trial_number, "ckpt.bin", dest)
    assert got.artifact_id == artifact_id and dest.read_bytes() == data
    by_id = tmp_path / "by_id.bin"
    worker.download_artifact("s", lease.trial_number, "", by_id, artifact_id=artifact_id)
    assert by_id.read_bytes() == data
    # the same bytes again: the stored artifact (a retried upload is harmless)
    assert worker.upload_artifact(lease.lease_id, src, "ckpt.bin") == artifact_id
    # other bytes under the same name: refused
    other = tmp_path / "other"
    other.write_bytes(b"x")
    expect(
        grpc.StatusCode.ALREADY_EXISTS, worker.upload_artifact, lease.lease_id, other, "ckpt.bin"
    )
    # an empty file is an artifact too
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    worker.upload_artifact(lease.lease_id, empty)
    worker.download_artifact("s", lease.trial_number, "empty.txt", tmp_path / "e2")
    assert (tmp_path / "e2").read_bytes() == b""


def test_concurrent_uploads_of_one_name_store_it_once(server, worker, leased, tmp_path) -> None:
    """The name check and the write were two steps: six racing uploads of one name stored it
    four times, and two racing retries of the same bytes stored them twice or got a false
    ALREADY_EXISTS. Now the same bytes all answer with one artifact, and of different bytes
    exactly one is stored."""
    lease = leased.lease
    same = tmp_path / "same.bin"
    same.write_bytes(b"s" * 300_000)
    others = []
    for i in range(6):
        others.append(tmp_path / f"o{i}.bin")
        others[-1].write_bytes(bytes([i]) * 300_000)

    def race(paths: list[Path], name: str) -> list[str]:
        barrier = threading.Barrier(len(paths))

        def one(path: Path) -> str:
            barrier.wait()
            try:
                return worker.upload_artifact(lease.lease_id, path, name)
            except ClientError as e:
                return e.code.name

        with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
            return list(pool.map(one, paths))

    ids = race([same] * 4, "dup.bin")
    assert len(set(ids)) == 1 and ids[0] not in ("ALREADY_EXISTS", "INTERNAL"), ids
    answers = race(others, "one.bin")
    assert sorted(answers).count("ALREADY_EXISTS") == 5, answers
    listed = [a.name for a in worker.list_artifacts("s", lease.trial_number)]
    assert sorted(listed) == ["dup.bin", "one.bin"]


def _raw_upload(worker: WorkerClient, header: pb.UploadArtifactHeader, chunks: list[bytes]):  # type: ignore[no-untyped-def]
    msgs = [pb.UploadArtifactRequest(header=header)] + [
        pb.UploadArtifactRequest(chunk=c) for c in chunks
    ]
    return worker.stub.UploadArtifact(iter(msgs), timeout=30, metadata=worker._metadata)


def test_sha_mismatch_short_and_long_uploads_store_nothing(server, worker, leased) -> None:
    lease = leased.lease.lease_id
    data = b"abc" * 1000
    good = hashlib.sha256(data).hexdigest()
    cases = [
        (len(data), hashlib.sha256(b"other").hexdigest(), [data], grpc.StatusCode.DATA_LOSS),
        (len(data) + 1, good, [data], grpc.StatusCode.DATA_LOSS),  # short
        (len(data) - 1, good, [data], grpc.StatusCode.INVALID_ARGUMENT),  # more than declared
    ]
    for size, sha, chunks, code in cases:
        header = pb.UploadArtifactHeader(lease_id=lease, name="f.bin", size_bytes=size, sha256=sha)
        with pytest.raises(grpc.RpcError) as info:
            _raw_upload(worker, header, chunks)
        assert info.value.code() == code, info.value.details()
    assert artifact_attrs(server, leased.lease.trial_number) == {}
    assert worker.list_artifacts("s", leased.lease.trial_number) == []
    spool = Path(default_artifact_dir(server.cfg.storage) or "") / ".uploads"
    assert spool.is_dir() and not any(spool.iterdir())  # no received bytes left behind


def test_size_cap_names_the_flag(server, worker, leased, tmp_path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (CAP + 1))
    expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        worker.upload_artifact,
        leased.lease.lease_id,
        big,
        contains="--max-artifact-bytes",
    )
    at_cap = tmp_path / "cap.bin"
    at_cap.write_bytes(b"\1" * CAP)
    worker.upload_artifact(leased.lease.lease_id, at_cap)
    assert [a.size_bytes for a in worker.list_artifacts("s", leased.lease.trial_number)] == [CAP]


def test_upload_needs_a_live_lease(server, worker, leased, tmp_path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello")
    expect(grpc.StatusCode.NOT_FOUND, worker.upload_artifact, "1.999.x", f, contains="lease")
    expect(grpc.StatusCode.NOT_FOUND, worker.upload_artifact, "junk", f, contains="lease")
    expect(grpc.StatusCode.INVALID_ARGUMENT, worker.upload_artifact, "", f, contains="lease_id")
    lease = leased.lease
    worker.complete(lease.lease_id, {"accuracy": 0.5})
    expect(grpc.StatusCode.FAILED_PRECONDITION, worker.upload_artifact, lease.lease_id, f)
    assert worker.list_artifacts("s", lease.trial_number) == []


def test_bad_names_and_unknown_study_trial_artifact(server, worker, leased, tmp_path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello")
    lease = leased.lease
    for bad in ("../x", ".hidden", "a/b", "x" * 129, "sp ace", "é"):
        expect(grpc.StatusCode.INVALID_ARGUMENT, worker.upload_artifact, lease.lease_id, f, bad)
    worker.upload_artifact(lease.lease_id, f)
    n = lease.trial_number
    dest = tmp_path / "d"
    not_found = grpc.StatusCode.NOT_FOUND
    expect(not_found, worker.download_artifact, "nope", n, "f.txt", dest, contains="study")
    expect(not_found, worker.download_artifact, "s", 999, "f.txt", dest, contains="trial 999")
    expect(not_found, worker.download_artifact, "s", n, "g.txt", dest, contains="no artifact")
    expect(not_found, worker.download_artifact, "s", n, "", dest, artifact_id="zz")
    expect(not_found, worker.list_artifacts, "nope", n)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect(invalid, worker.download_artifact, "s", n, "", dest, contains="exactly one")
    expect(invalid, worker.download_artifact, "s", -1, "f.txt", dest, contains="trial_number")
    expect(invalid, worker.list_artifacts, "", n, contains="study_name")
    for bad in ("%", "ok.txt ", "../x"):  # NOT_FOUND here, INVALID_ARGUMENT from FindArtifact
        expect(invalid, worker.download_artifact, "s", n, bad, dest, contains="artifact name")
    assert not dest.exists()


def test_bad_bytes_in_streams_are_invalid_argument(server, worker, leased) -> None:
    auth = (("authorization", f"Bearer {WORKER}"),)
    header = pb.UploadArtifactRequest(
        header=pb.UploadArtifactHeader(
            lease_id=leased.lease.lease_id, name="f", size_bytes=1, sha256="0" * 64
        )
    ).SerializeToString()
    garbage = b"\x0a\xff\xff\xff\xff\x0f"
    with grpc.insecure_channel(server.address) as ch:
        up = ch.stream_unary(
            "/archsearch.v1.WorkerService/UploadArtifact",
            request_serializer=None,
            response_deserializer=None,
        )
        for stream in ([garbage], [header, garbage]):  # a bad header, a bad chunk
            with pytest.raises(grpc.RpcError) as info:
                up(iter(stream), timeout=10, metadata=auth)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid" in info.value.details()
        # no message at all, a chunk before the header, a second header
        chunk = pb.UploadArtifactRequest(chunk=b"x").SerializeToString()
        for stream, why in (([], "header"), ([chunk], "header"), ([header, header], "only")):
            with pytest.raises(grpc.RpcError) as info:
                up(iter(stream), timeout=10, metadata=auth)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert why in info.value.details()
        down = ch.unary_stream(
            "/archsearch.v1.WorkerService/DownloadArtifact",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as info:
            list(down(garbage, timeout=10, metadata=auth))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert artifact_attrs(server, leased.lease.trial_number) == {}


def test_corrupted_store_is_data_loss_and_dest_untouched(server, worker, leased, tmp_path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello world")
    artifact_id = worker.upload_artifact(leased.lease.lease_id, f)
    folder = Path(default_artifact_dir(server.cfg.storage) or "")
    (folder / artifact_id).write_bytes(b"hello WORLD")  # the disk lies
    dest = tmp_path / "d"
    expect(
        grpc.StatusCode.DATA_LOSS,
        worker.download_artifact,
        "s",
        leased.lease.trial_number,
        "f.txt",
        dest,
    )
    assert not dest.exists() and not list(tmp_path.glob("d*.part"))


def test_downloads_of_one_file_at_once_into_one_folder_both_succeed(
    server, worker, leased, tmp_path
) -> None:
    """Two workers sharing a checkpoint folder fetch one supernet at once: each download has
    its own partial file (one shared ``.part`` name made the second rename fail)."""
    import threading

    f = tmp_path / "f.bin"
    f.write_bytes(b"w" * 3_000_000)
    worker.upload_artifact(leased.lease.lease_id, f)
    dest = tmp_path / "shared" / "f.bin"
    dest.parent.mkdir()
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            worker.download_artifact("s", leased.lease.trial_number, "f.bin", dest)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert dest.read_bytes() == f.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]  # no partial left


def test_a_destination_that_holds_the_artifact_is_kept(server, worker, leased, tmp_path) -> None:
    """A rank job and each picked student's job downloaded their supernet again on a worker
    that already held it (or had trained it): the same bytes are now read from the disk."""
    f = tmp_path / "f.bin"
    f.write_bytes(b"s" * 2_500_000)
    worker.upload_artifact(leased.lease.lease_id, f)
    dest = tmp_path / "cache" / "f.bin"
    dest.parent.mkdir()
    got = worker.download_artifact("s", leased.lease.trial_number, "f.bin", dest)
    first = dest.stat().st_ino
    again = worker.download_artifact("s", leased.lease.trial_number, "f.bin", dest)
    assert again.sha256 == got.sha256 and dest.stat().st_ino == first  # not written again
    dest.write_bytes(b"S" * 2_500_000)  # same size, other bytes: downloaded over
    worker.download_artifact("s", leased.lease.trial_number, "f.bin", dest)
    assert dest.read_bytes() == f.read_bytes() and dest.stat().st_ino != first
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]


def test_default_artifact_dir() -> None:
    assert default_artifact_dir("sqlite:////data/runs.db") == "/data/runs-artifacts"
    assert default_artifact_dir("sqlite:///runs.db") == "runs-artifacts"
    assert default_artifact_dir("sqlite:///:memory:") is None
    assert default_artifact_dir("postgresql://u@h/db") is None


def test_no_store_is_failed_precondition_naming_the_flag(tmp_path) -> None:
    from archsearch.server._studies import StudyManager
    from archsearch.server._trial_artifacts import TrialArtifacts

    m = StudyManager(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(Exception, match="--artifact-dir") as info:
            TrialArtifacts.in_folder(m, None, 10).begin_upload("1.1.x", "f", 1, "0" * 64)
        assert getattr(info.value, "code", "") == "FAILED_PRECONDITION"
    finally:
        m.close()


def test_tokens_are_checked_on_streams(server, worker, leased, tmp_path) -> None:
    """Worker tokens may upload and download; a call without a token is UNAUTHENTICATED (the
    interceptor's refusal also ends a stream)."""
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello")
    worker.upload_artifact(leased.lease.lease_id, f)  # the fixture's client has a worker token
    with WorkerClient(server.address, token="wrong-token-0123456789abcdef") as anon:
        unauth = grpc.StatusCode.UNAUTHENTICATED
        expect(unauth, anon.upload_artifact, leased.lease.lease_id, f, "g.txt")
        expect(unauth, anon.download_artifact, "s", leased.lease.trial_number, "f.txt", f)
        expect(unauth, anon.list_artifacts, "s", leased.lease.trial_number)
    assert [a.name for a in worker.list_artifacts("s", leased.lease.trial_number)] == ["f.txt"]


def test_round_trip_on_each_storage(storage_url: str, tmp_path: Path) -> None:
    """SQLite and PostgreSQL: with --artifact-dir, a worker's upload comes back whole."""
    cfg = ServerConfig(storage=storage_url, port=0, artifact_dir=str(tmp_path / "art"))
    srv = ArchsearchServer(cfg)
    srv.start()
    try:
        with SearchClient(srv.address) as admin, WorkerClient(srv.address) as w:
            admin.launch(table_spec("rt", 2))
            w.register("w", CAPS)
            lease = w.acquire("w", CAPS, 5).lease
            f = tmp_path / "notes.txt"
            f.write_bytes(b"\x00\xffbytes" * 1000)
            artifact_id = w.upload_artifact(lease.lease_id, f)
            w.complete(lease.lease_id, {"accuracy": 0.5})  # a finished trial's files stay
            found = w.find_artifact("rt", "notes.txt")
            assert found.trial_number == lease.trial_number
            assert found.artifact.artifact_id == artifact_id
            w.download_artifact("rt", lease.trial_number, "notes.txt", tmp_path / "back")
    finally:
        srv.stop(0)
    assert (tmp_path / "back").read_bytes() == f.read_bytes()
    assert (tmp_path / "art" / artifact_id).read_bytes() == f.read_bytes()


def test_find_artifact_names_the_first_trial_holding_a_whole_upload(
    server, worker, leased, tmp_path
) -> None:
    """FindArtifact: the lowest-numbered trial whose upload of the name completed (any state),
    an artifact without a recorded sha256 does not count, and client mistakes are
    INVALID_ARGUMENT / NOT_FOUND, never INTERNAL."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    f = tmp_path / "shared.npz"
    f.write_bytes(b"difficulties")
    first = leased.lease
    worker.register("w2", CAPS)
    second = worker.acquire("w2", CAPS, 5).lease
    assert second.trial_number > first.trial_number
    not_found = grpc.StatusCode.NOT_FOUND
    expect(not_found, worker.find_artifact, "s", "shared.npz", contains="no trial of 's'")
    worker.upload_artifact(second.lease_id, f)
    found = worker.find_artifact("s", "shared.npz")
    assert found.trial_number == second.trial_number
    assert found.artifact.sha256 == hashlib.sha256(b"difficulties").hexdigest()
    assert found.artifact.size_bytes == len(b"difficulties")
    worker.upload_artifact(first.lease_id, f)
    worker.complete(first.lease_id, {"accuracy": 0.5})  # a finished trial's files still count
    found = worker.find_artifact("s", "shared.npz")
    assert found.trial_number == first.trial_number
    back = tmp_path / "back"
    worker.download_artifact("s", found.trial_number, "shared.npz", back)
    assert back.read_bytes() == b"difficulties"
    # an artifact Optuna lists but whose upload the server never checked (no sha256): not one
    rdb = server.manager.rdb
    tid = rdb.get_trial_id_from_study_id_trial_number(
        rdb.get_study_id_from_name("s"), second.trial_number
    )
    half = tmp_path / "half.bin"
    half.write_bytes(b"x")
    store = FileSystemArtifactStore(default_artifact_dir(server.cfg.storage) or "")
    upload_artifact(
        artifact_store=store, file_path=str(half), study_or_trial=rdb.get_trial(tid), storage=rdb
    )
    assert "half.bin" in [a.name for a in worker.list_artifacts("s", second.trial_number)]
    expect(not_found, worker.find_artifact, "s", "half.bin", contains="half.bin")
    expect(not_found, worker.find_artifact, "nope", "shared.npz", contains="unknown study")
    expect(not_found, worker.find_artifact, "n" * 5000, "shared.npz", contains="unknown study")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect(invalid, worker.find_artifact, "", "shared.npz", contains="study_name")
    for bad in ("", "x" * 129, "../x", ".hidden", "a/b", "sp ace"):
        expect(invalid, worker.find_artifact, "s", bad, contains="artifact name")
    with WorkerClient(server.address, token="wrong-token-0123456789abcdef") as anon:
        expect(grpc.StatusCode.UNAUTHENTICATED, anon.find_artifact, "s", "shared.npz")


def test_find_artifact_with_a_limit_lists_every_holder(server, worker, leased, tmp_path) -> None:
    """FindArtifact with ``limit``: up to that many holding trials, lowest-numbered first, one
    per trial; limit 0 (an older client) answers as before; a limit out of range is
    INVALID_ARGUMENT, an unknown study NOT_FOUND."""
    f = tmp_path / "answers.npz"
    leases = [leased.lease]
    for w in ("w2", "w3"):
        worker.register(w, CAPS)
        leases.append(worker.acquire(w, CAPS, 5).lease)
    numbers = [lease.trial_number for lease in leases]
    assert numbers == sorted(numbers)
    for i in (2, 0, 1):  # uploaded out of order
        f.write_bytes(f"answers {i}".encode())
        worker.upload_artifact(leases[i].lease_id, f)
    worker.upload_artifact(leases[0].lease_id, tmp_path / "answers.npz", "other.npz")
    sha = [hashlib.sha256(f"answers {i}".encode()).hexdigest() for i in range(3)]
    old = worker.find_artifact("s", "answers.npz")  # limit 0: the lowest holder
    assert old.trial_number == numbers[0] and old.artifact.sha256 == sha[0]
    assert [h.trial_number for h in old.holders] == [numbers[0]]
    every = worker.find_artifact("s", "answers.npz", limit=1000)
    assert [(h.trial_number, h.artifact.sha256) for h in every.holders] == list(
        zip(numbers, sha, strict=True)
    )
    assert every.trial_number == numbers[0]
    two = worker.find_artifact("s", "answers.npz", limit=2)
    assert [h.trial_number for h in two.holders] == numbers[:2]
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    for bad in (-1, 1001, -(2**31)):
        expect(invalid, worker.find_artifact, "s", "answers.npz", limit=bad, contains="limit")
    expect(invalid, worker.find_artifact, "", "answers.npz", limit=5, contains="study_name")
    expect(invalid, worker.find_artifact, "s", "../x", limit=5, contains="artifact name")
    expect(not_found, worker.find_artifact, "nope", "answers.npz", limit=5, contains="unknown")
    expect(not_found, worker.find_artifact, "s", "none.npz", limit=5, contains="none.npz")


def test_an_artifact_folder_removed_while_serving_is_not_made_again(
    server, worker, leased, tmp_path
) -> None:
    """Uploads failed INTERNAL (FileNotFoundError); then the next upload made a fresh empty
    folder, and the server went on beside the real one (moved away, an unmounted volume).
    Now an upload answers UNAVAILABLE naming the folder, and makes nothing."""
    import shutil

    assert server.artifact_dir is not None
    shutil.rmtree(server.artifact_dir)
    src = tmp_path / "f.bin"
    src.write_bytes(b"weights")
    expect(
        grpc.StatusCode.UNAVAILABLE,
        worker.upload_artifact,
        leased.lease.lease_id,
        src,
        contains=f"the artifact folder {server.artifact_dir} is gone",
    )
    assert not Path(server.artifact_dir).exists()
    assert worker.list_artifacts("s", leased.lease.trial_number) == []
