"""The study's own trials in PUDF's crowd (``data.curriculum.crowd_trials``): a real server and
one bert worker process. Trial 0 fits the cross-fitted crowd alone (no trial has answered yet),
trains, and uploads its answers on every training item; trial 1's crowd takes them
(``curriculum_crowd_trials: 0``), so its difficulties have another key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _procs import Proc, ServerProc, cli, load_trials, wait_study
from test_shared_difficulties import SPEC

from archsearch.server.client import SearchClient, WorkerClient


def test_the_second_trial_takes_the_first_ones_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec: dict[str, Any] = copy.deepcopy(SPEC)
    spec["name"] = "crowd"
    spec["data"]["curriculum"]["crowd_trials"] = 8
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log").start()
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ARCHSEARCH_CURRICULUM_DIR", raising=False)
    argv = cli("worker", "--server", server.address, "--trainer", "bert", "--max-trials", "2")
    try:
        with SearchClient(server.address) as c:
            c.launch(spec)
            w = Proc([*argv, "--poll-seconds", "1"], tmp_path / "worker.log").start()
            try:
                assert w.wait(120) == 0, w.output()[-3000:]
            finally:
                w.stop()
            wait_study(c, "crowd", 30)
        first, second = sorted(load_trials(storage, "crowd"), key=lambda t: t.number)
        a, b = first.user_attrs["info"], second.user_attrs["info"]
        assert "curriculum_share_error" not in a and "curriculum_share_error" not in b
        assert a["curriculum_crowd_trials"] == "none"
        assert b["curriculum_crowd_trials"] == str(first.number)
        assert a["curriculum_difficulty_key"] != b["curriculum_difficulty_key"]
        assert b["curriculum_difficulties"] == "fitted"
        name = a["curriculum_answers"]
        assert name.startswith("answers-") and b["curriculum_answers"] == name
        with WorkerClient(server.address) as wc:
            found = wc.find_artifact("crowd", name, limit=10)
            assert [h.trial_number for h in found.holders] == [first.number, second.number]
            wc.download_artifact("crowd", first.number, name, tmp_path / "answers.npz")
    finally:
        server.stop()
    with np.load(tmp_path / "answers.npz") as f:
        answers = f["answers"]
    assert answers.shape == (spec["data"]["train_subset"],)
    assert set(np.unique(answers)) <= {0, 1}
