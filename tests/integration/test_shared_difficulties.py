"""PUDF's crowd fitted once per study: a real server and two bert worker processes that share
no folder. Worker A trains the study's first candidate, fits the IRT crowd and uploads its
difficulties as an artifact; worker B, with an empty cache, trains the second candidate on
difficulties downloaded from A's trial (``curriculum_difficulties: trial:<A's>``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _procs import Proc, ServerProc, cli, load_trials, wait_study

from archsearch.server.client import SearchClient
from archsearch.worker._difficulty_sharing import artifact_name

CURRICULUM = {
    "method": "pudf",
    "crowd": ["tfidf-lr:0.3", "tfidf-lr:3:0.5"],
    "folds": 3,
    "min_examples": 16,
    "num_obs": 50,
}
SPEC = {
    "name": "pudf",
    "space": "bert",
    "loop": "random",
    "seed": 0,
    "n_trials": 2,
    "trainer": "bert",
    "task": "sst2",
    "space_options": {
        "num_hidden_layers": [1],
        "hidden_size": [16, 32, 48, 64],
        "num_attention_heads": [2],
        "intermediate_ratio": [2],
    },
    "recipe": {
        "max_steps": 4,
        "eval_every": 4,
        "batch_size": 16,
        "max_seq_length": 32,
        "measure_latency": False,
    },
    "data": {"train_subset": 120, "eval_subset": 32, "curriculum": CURRICULUM},
}


def _worker(address: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> Proc:
    """A bert worker taking one trial, every cache under ``home`` (its own machine)."""
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(home / "cache"))
    monkeypatch.delenv("ARCHSEARCH_CURRICULUM_DIR", raising=False)
    argv = cli("worker", "--server", address, "--trainer", "bert", "--max-trials", "1")
    argv += ["--poll-seconds", "1"]
    return Proc(argv, home / "worker.log").start()  # the environment is copied at start


def test_the_second_machine_downloads_the_first_ones_crowd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "server").mkdir()
    storage = f"sqlite:///{tmp_path / 'server' / 's.db'}"
    server = ServerProc(storage, tmp_path / "server" / "server.log").start()
    homes = [tmp_path / "a", tmp_path / "b"]
    try:
        with SearchClient(server.address) as c:
            c.launch(SPEC)
            for home in homes:  # one after the other: B starts once A's trial is complete
                home.mkdir()
                w = _worker(server.address, home, monkeypatch)
                try:
                    assert w.wait(120) == 0, w.output()[-3000:]
                finally:
                    w.stop()
            wait_study(c, "pudf", 30)
    finally:
        server.stop()
    first, second = sorted(load_trials(storage, "pudf"), key=lambda t: t.number)
    assert "duplicate_of" not in second.user_attrs  # two candidates, each trained
    a, b = first.user_attrs["info"], second.user_attrs["info"]
    assert a["worker_id"] != b["worker_id"]
    assert a["curriculum_difficulties"] == "fitted"
    assert b["curriculum_difficulties"] == f"trial:{first.number}"
    assert "curriculum_share_error" not in a and "curriculum_share_error" not in b
    key = a["curriculum_difficulty_key"]
    assert b["curriculum_difficulty_key"] == key and b["curriculum_crowd_cached"] == "true"
    assert second.user_attrs["metrics"]["crowd_seconds"] == 0
    assert first.user_attrs["metrics"]["crowd_seconds"] > 0
    a_file, b_file = (home / "cache" / "curriculum" / f"{key}.npz" for home in homes)
    assert b_file.read_bytes() == a_file.read_bytes()  # B's cache holds A's bytes
    records = [v for k, v in first.system_attrs.items() if k.startswith("artifacts:")]
    assert any(artifact_name(key) in str(v) for v in records)  # listed on A's trial page
