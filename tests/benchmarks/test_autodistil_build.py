"""``benchmarks/_autodistil_build.py``: the build's supernet, rank and truth jobs as one pool,
with fake jobs on threads: truth starts once the K = 3 supernets exist (not waiting for K = 1),
each result is stored as it arrives, and the truth keeps each student's seed order."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _autodistil_build as build

KEYS = {"La": "a", "Lb": "b"}
JOBS = [("K3:a", {"name": "a"}, 10), ("K3:b", {"name": "b"}, 10), ("K1", {"name": "u"}, 30)]
SETTINGS = {
    "batch": 16, "seq": 64, "proxy_steps": 5, "proxy_students": 8, "heldout": 8,
    "tasks": "sst2", "train_subset": 100, "eval_subset": 50,
}  # fmt: skip


def _data() -> dict[str, Any]:
    return {
        "settings": {**SETTINGS, "seeds": "0,1", "truth_steps": 3, "truth_lr": 1e-4},
        "students": {k: {"subspace": s, "student": {"layers": 1}} for k, s in KEYS.items()},
        "supernets": {},
        "seconds": {},
        "truth": {},
        "proxies": {"K3": {}, "K1": {}},
    }


def test_truth_runs_beside_the_long_supernet_and_keeps_seed_order() -> None:
    data = _data()
    saves: list[int] = []
    truth_seen = threading.Event()
    order: list[str] = []

    def supernet(spec: dict[str, Any]) -> dict[str, Any]:
        if spec["label"] == "K1":  # the long one: ends only once truth results came in
            assert truth_seen.wait(10), "truth waited for K = 1"
        order.append(f"supernet {spec['label']}")
        return {"checkpoint": f"/ck/{spec['label']}", "seconds": spec["steps"]}

    def rank(spec: dict[str, Any]) -> dict[str, Any]:
        assert spec["supernet"] == f"/ck/{spec['label']}"
        assert spec["data"] == {"tasks": ["sst2"], "train_subset": 100, "eval_subset": 50}
        proxies = {k: {"P2_task": 1.0} for k in [*KEYS, "outsider"]}
        return {"proxies": proxies, "seconds": 2.0}

    def truth_job(spec: dict[str, Any]) -> dict[str, float]:
        if spec["seed"] == 0:
            time.sleep(0.05)  # seed 1 of a student may end first
        truth_seen.set()
        return {"accuracy": 70.0 + spec["seed"], "train_seconds": 1.0}

    with ThreadPoolExecutor(4) as pool:
        build.run(
            data, JOBS, SETTINGS, ["sst2"], set(KEYS), lambda: saves.append(1), pool, 4,
            runners={"supernet": supernet, "rank": rank, "truth": truth_job},
        )  # fmt: skip

    assert order[-1] == "supernet K1"  # K = 1 ended after the truth had started
    assert data["supernets"] == {label: f"/ck/{label}" for label, _, _ in JOBS}
    assert set(data["proxies"]["K3"]) == set(KEYS) == set(data["proxies"]["K1"])
    assert data["truth"] == {k: {"sst2": [70.0, 71.0]} for k in KEYS}  # seed order kept
    assert data["seconds"]["supernet K1"] == 30 and data["seconds"]["rank K3:a"] == 2.0
    assert len(saves) == 3 + 3 + 4  # one save per finished job


def test_a_build_runs_only_what_is_missing_and_stops_at_a_failure() -> None:
    data = _data()
    data["supernets"] = {"K3:a": "/ck/K3:a", "K3:b": "/ck/K3:b"}
    data["seconds"] = {"rank K3:a": 1.0}
    data["truth"] = {"La": {"sst2": [70.0, 71.0]}}
    ran: list[str] = []

    def record(kind: str) -> Any:
        def job(spec: dict[str, Any]) -> dict[str, Any]:
            ran.append(f"{kind} {spec.get('label') or spec['supernet']}")  # truth: its supernet
            if kind == "supernet":
                raise RuntimeError("out of memory")
            return {"proxies": {}, "seconds": 1.0, "accuracy": 70.0, "train_seconds": 1.0}

        return job

    with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="out of memory"):
        build.run(
            data, JOBS, SETTINGS, ["sst2"], set(KEYS), lambda: None, pool, 1,
            runners={k: record(k) for k in ("supernet", "rank", "truth")},
        )  # fmt: skip
    assert ran[0] == "supernet K1"  # the only supernet missing, first
    assert "K1" not in data["supernets"]  # its failure ended the build
    assert "rank K3:a" not in ran and "truth /ck/K3:a" not in ran  # done before: not rerun
    assert len(ran) <= 2  # the jobs not yet started were cancelled


def test_two_builds_of_one_file_are_refused(tmp_path: Path) -> None:
    import autodistil_rank

    out = tmp_path / "built.json"
    held = autodistil_rank._lock(out)
    with pytest.raises(SystemExit, match="another build is writing"):
        autodistil_rank._lock(out)
    held.close()  # the first build ended: the next may start
    autodistil_rank._lock(out).close()
