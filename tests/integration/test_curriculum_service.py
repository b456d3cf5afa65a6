"""Curriculum learning end to end (issue 15): `archsearch launch` of a study whose data space
chooses each candidate's ``data.curriculum`` (PUDF with a tiny crowd, or a length/root
competency curriculum), real tiny training by a bert worker process, and what the storage then
holds: the per-epoch trace and the last ability and set size, and the ``curriculum.png``
artifact that optuna-dashboard shows on the trial's page (through the server's download RPC,
and through optuna-dashboard's own API and artifact route)."""

from __future__ import annotations

import json
import subprocess
import wsgiref.util
from pathlib import Path
from typing import Any

import pytest
from _procs import Proc, ServerProc, cli, load_trials, wait_study

from archsearch.server.client import SearchClient, WorkerClient

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAIN = 320  # RTE pairs trained on (PUDF holds 32 of them out to estimate the ability)
PUDF = {
    "method": "pudf",
    # four TF-IDF subjects (five distinct difficulties), three folds: well under a second
    "crowd": ["tfidf-lr:0.1:0.5", "tfidf-lr:0.3", "tfidf-lr:1:0.5", "tfidf-lr:3"],
    "folds": 3,
    "num_obs": 200,
    "min_examples": 32,
}
COMPETENCY = {
    "method": "competency",
    "difficulty": "length",
    "scheduler": "root",
    "min_examples": 32,
}


def _run(*args: str) -> str:
    r = subprocess.run(cli(*args), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _dashboard_get(app: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    """One GET through optuna-dashboard's WSGI app: status, headers, body."""
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    wsgiref.util.setup_testing_defaults(environ)
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.update(status=status, headers=dict(headers))
        return lambda _: None

    body = b"".join(app(environ, start_response))
    return started["status"], started["headers"], body


def test_a_curriculum_study_trains_and_shows_its_curricula(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log").start()
    spec = {
        "name": "curricula",
        "space": "bert",
        "loop": "random",
        "seed": 0,
        "n_trials": 2,
        "trainer": "bert",
        "task": "rte",
        "space_options": {
            "num_hidden_layers": [1],
            "hidden_size": [32],
            "num_attention_heads": [2],
            "intermediate_ratio": [2],
        },
        "recipe": {
            "max_steps": 30,
            "eval_every": 15,
            "batch_size": 16,
            "max_seq_length": 32,
            "learning_rate": 1e-3,
            "measure_latency": False,
        },
        "data": {"train_subset": TRAIN, "eval_subset": 64},
        "data_space": {"curriculum": [PUDF, COMPETENCY]},  # the curriculum is searched
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    assert "launched curricula" in _run(
        "launch", "--server", server.address, "--spec", str(spec_file)
    )
    monkeypatch.setenv("ARCHSEARCH_CURRICULUM_DIR", str(tmp_path / "crowd"))  # a fresh crowd
    worker = Proc(
        cli("worker", "--server", server.address, "--trainer", "bert", "--poll-seconds", "1"),
        tmp_path / "w.log",
    ).start()
    try:
        with SearchClient(server.address) as c:
            wait_study(c, "curricula", 300, [worker])
        with WorkerClient(server.address) as w:
            listed = {n: w.list_artifacts("curricula", n) for n in (0, 1)}
            for n in (0, 1):
                w.download_artifact("curricula", n, "curriculum.png", tmp_path / f"{n}.png")
    finally:
        worker.stop()
        server.stop()

    trials = load_trials(storage, "curricula")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert not any("duplicate_of" in t.user_attrs for t in trials)
    by_method = {t.user_attrs["candidate"]["data"]["curriculum"]["method"]: t for t in trials}
    assert set(by_method) == {"pudf", "competency"}  # one candidate per searched curriculum
    for method, t in by_method.items():
        info, metrics = t.user_attrs["info"], t.user_attrs["metrics"]
        assert t.params["data.curriculum"].startswith(method)  # a search dimension
        assert info["curriculum"] == method
        trace = json.loads(info["curriculum_trace"])
        sizes = [e["examples"] for e in trace]
        # 30 steps of 16: several epochs, the first on an easier part of the items, never
        # shrinking (the DDS-MAE bound only rises; so does the competency)
        assert len(trace) >= 2 and 32 <= sizes[0] < TRAIN - 32
        assert sizes == sorted(sizes) and sizes[-1] <= TRAIN
        assert [e["epoch"] for e in trace] == list(range(len(trace)))
        assert metrics["curriculum_examples"] == sizes[-1]
        assert metrics["curriculum_epochs"] == len(trace)
        if method == "pudf":
            assert all(isinstance(e["ability"], float) and "bound" in e for e in trace)
            assert metrics["curriculum_ability"] == trace[-1]["ability"]
            assert info["curriculum_val_items"] == "32" and sizes[-1] <= TRAIN - 32
            assert metrics["crowd_seconds"] > 0 and info["curriculum_crowd_cached"] == "false"
        else:
            assert info["curriculum_difficulty"] == "length"
            assert sizes[0] < sizes[-1]  # the root schedule lets more items in each epoch
            assert "curriculum_ability" not in metrics
        # the picture: named in the info, listed and downloadable through the server
        assert info["curriculum_plot"] == "curriculum.png"
        assert "curriculum_plot_error" not in info
        (artifact,) = [a for a in listed[t.number] if a.name == "curriculum.png"]
        assert artifact.mimetype == "image/png"
        png = (tmp_path / f"{t.number}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) == artifact.size_bytes > 10_000

    # what optuna-dashboard shows: the trial's artifacts (its page previews image/png) and
    # the bytes its artifact route serves, from the server's default artifact folder
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore

    store = FileSystemArtifactStore(str(tmp_path / "s-artifacts"))
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    status, _, body = _dashboard_get(app, "/api/studies")
    assert status.startswith("200")
    (summary,) = [s for s in json.loads(body)["study_summaries"] if s["study_name"] == "curricula"]
    study_id = summary["study_id"]
    status, _, body = _dashboard_get(app, f"/api/studies/{study_id}")
    assert status.startswith("200")
    for shown in json.loads(body)["trials"]:
        (meta,) = [a for a in shown["artifacts"] if a["filename"] == "curriculum.png"]
        assert meta["mimetype"] == "image/png"
        path = f"/artifacts/{study_id}/{shown['trial_id']}/{meta['artifact_id']}"
        status, headers, served = _dashboard_get(app, path)
        assert status.startswith("200") and headers["Content-Type"] == "image/png"
        assert served == (tmp_path / f"{shown['number']}.png").read_bytes()
