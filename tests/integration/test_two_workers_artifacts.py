"""Artifacts between machines that share no directory: a real server and two bert worker
processes, each with its own cache, checkpoint and pre-training folders. Worker A trains a
tiny FlexiBERT candidate and keeps its checkpoint, which it uploads; its folders are then
deleted; worker B trains a candidate whose ``transfer_from`` names A's trial and gets the same
bytes through the server."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from _procs import Proc, ServerProc, cli, load_trials, wait_study

from archsearch.server.client import SearchClient

RECIPE = {
    "max_steps": 2,
    "eval_every": 2,
    "batch_size": 8,
    "max_seq_length": 24,
    "measure_latency": False,
}


def spec(name: str, **recipe: object) -> dict[str, object]:
    return {
        "name": name,
        "space": "flexibert",
        "loop": "random",
        "n_trials": 1,
        "trainer": "bert",
        "objectives": ["accuracy:max"],
        "recipe": {**RECIPE, **recipe},
        "data": {"train_subset": 32, "eval_subset": 16},
    }


def worker(address: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> Proc:
    """A bert worker whose every folder is under ``home`` (nothing shared with the other)."""
    for var, sub in (
        ("ARCHSEARCH_CACHE_DIR", "cache"),
        ("ARCHSEARCH_CHECKPOINT_DIR", "checkpoints"),
        ("ARCHSEARCH_PRETRAIN_DIR", "pretrained"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    argv = cli("worker", "--server", address, "--trainer", "bert", "--poll-seconds", "1")
    return Proc(argv, home / "worker.log").start()  # the environment is copied at start


def test_weight_transfer_through_the_server(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "server").mkdir()
    storage = f"sqlite:///{tmp_path / 'server' / 's.db'}"
    server = ServerProc(storage, tmp_path / "server" / "server.log").start()
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    a_home.mkdir()
    b_home.mkdir()
    try:
        with SearchClient(server.address) as c:
            c.launch(spec("src", keep_checkpoint=True))
            a = worker(server.address, a_home, monkeypatch)
            try:
                wait_study(c, "src", 300, [a])
            finally:
                a.stop()
            (src,) = load_trials(storage, "src")
            info = src.user_attrs["info"]
            kept = sorted(p.name for p in Path(info["checkpoint"]).iterdir())
            uploaded = [f"checkpoint-{name}" for name in kept]  # the whole folder
            assert "flexibert_config.json" in kept and "model.safetensors" in kept
            assert info["checkpoint_artifacts"] == " ".join(uploaded)
            weights = (Path(info["checkpoint"]) / "model.safetensors").read_bytes()
            assert Path(info["checkpoint"]).is_relative_to(a_home)
            shutil.rmtree(a_home)  # nothing of A's is left on this machine
            c.launch(spec("dst", transfer_from="trial:src:0"))
            b = worker(server.address, b_home, monkeypatch)
            try:
                wait_study(c, "dst", 300, [b])
            finally:
                b.stop()
    finally:
        server.stop()
    (dst,) = load_trials(storage, "dst")
    assert dst.state.name == "COMPLETE", dst.system_attrs.get("fail_reason")
    assert dst.user_attrs["info"]["transfer_from"] == "trial:src:0"
    metrics = dst.user_attrs["metrics"]
    assert metrics["transferred"] == 1.0 and 0 < metrics["transfer_overlap"] <= 1
    fetched = b_home / "checkpoints" / "transfers" / "src" / "0" / "model.safetensors"
    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(weights).digest()
    # Optuna's records of the uploads: what optuna-dashboard lists on the trial's page
    names = sorted(
        json.loads(v)["filename"] for k, v in src.system_attrs.items() if k.startswith("artifacts:")
    )
    assert names == uploaded
    assert (tmp_path / "server" / "s-artifacts").is_dir()
