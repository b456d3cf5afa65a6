"""Joint architecture + data search end to end: `archsearch launch` of a study whose
candidates carry a data selection chosen with the architecture, real tiny training by a bert
worker, the worker's provenance of each selection, and `show`'s parameter importance."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from _procs import Proc, ServerProc, cli, load_trials, wait_study

from archsearch.server.client import SearchClient

DSIR: dict[str, Any] = {"method": "dsir", "k": 48, "laplace": 1}
CHOICES: list[dict[str, Any]] = [{"method": "none"}, DSIR]


def _run(*args: str) -> str:
    r = subprocess.run(cli(*args), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_joint_study_trains_each_candidate_on_its_chosen_data(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log").start()
    spec = {
        "name": "joint",
        "space": "bert",
        "loop": "random",
        "seed": 1,
        "n_trials": 4,
        "trainer": "bert",
        "task": "wnli",  # 635 training pairs: DSIR over them takes well under a second
        "space_options": {
            "num_hidden_layers": [1],
            "hidden_size": [32, 64],
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
        "data": {"eval_subset": 32},
        "data_space": {"selection": CHOICES},
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    assert "launched joint" in _run("launch", "--server", server.address, "--spec", str(spec_file))
    worker = Proc(
        cli("worker", "--server", server.address, "--trainer", "bert", "--poll-seconds", "1"),
        tmp_path / "w.log",
    ).start()
    try:
        with SearchClient(server.address) as c:
            wait_study(c, "joint", 300, [worker])
        shown = _run("show", "joint", "--server", server.address)
        as_json = json.loads(_run("show", "joint", "--server", server.address, "--json"))
    finally:
        worker.stop()
        server.stop()
    # 2 widths x 2 data choices: the 4 candidates, each trained once (the sampler's repeats
    # are recorded with the earlier result, duplicate_of)
    trials = [t for t in load_trials(storage, "joint") if "duplicate_of" not in t.user_attrs]
    assert all(t.state.name == "COMPLETE" for t in trials)
    pairs = {(t.params["hidden_size"], t.params["data.selection"]) for t in trials}
    assert len(trials) == len(pairs) == 4
    assert {p[1] for p in pairs} == {"none", "dsir k=48 laplace=1 target=test"}
    for t in trials:
        data = t.user_attrs["candidate"]["data"]
        info = t.user_attrs["info"]
        if t.params["data.selection"] == "none":
            assert data["selection"] == {"method": "none"}
            assert "selection_ids_hash" not in info  # trained on the whole split
        else:  # the worker ran DSIR: 48 of WNLI's training pairs, towards its test text
            assert data["selection"] == {**DSIR, "target": "test"}  # named at launch
            assert info["selection"] == "dsir" and info["selection_size"] == "48"
            assert info["selection_ids_hash"].startswith("sha256:")
            assert math.isfinite(float(info["selection_kl_reduction"]))
    # the dashboard's parameters: readable data choices next to the architecture's
    assert "data.selection" in shown and "dsir k=48 laplace=1 target=test" in shown
    assert "parameter importance: needs at least 8 complete trials, has 4" in shown
    assert as_json["importance"]["trials"] == 4 and "note" in as_json["importance"]
    named = [c if c["method"] != "dsir" else {**c, "target": "test"} for c in CHOICES]
    assert as_json["spec"]["data_space"] == {"selection": named}
