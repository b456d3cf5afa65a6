"""An AutoDistil study end to end through the real service, with real (tiny) training on CPU:
``archsearch launch``, a server process and one ``archsearch worker --trainer autodistil``
process train a supernet over two MiniLM students, rank both from it, and fine-tune the
better one stand-alone from its supernet. The server is SIGKILLed and restarted once the
supernet is trained (mid-stage): the study continues from the stored trials and ends with the
supernet, its rank job, one trial per student and the stand-alone student with its proxy
beside its truth."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import optuna
from _autodistil import needs_autodistil_trainer
from _procs import Proc, ServerProc, cli, load_trials, run_cli, wait_for, wait_study
from optuna.trial import TrialState

from archsearch.server._index import COMPLETED_REASON_ATTR
from archsearch.server._student_trials import PROXY_TRIAL_ATTR, STUDENT_OF_ATTR
from archsearch.server.client import SearchClient

#: One sub-space of two students: one layer, 2 or 4 heads of the MiniLM teacher (H = 32·A).
SUBSPACE = {"name": "tiny", "layers": [1 / 6], "heads": [2 / 12, 4 / 12], "mlp_ratio": [2.0]}
SPEC = {
    "name": "distil",
    "space": "autodistil",
    "loop": "autodistil",
    "trainer": "autodistil",
    "n_trials": 5,  # more than its 3 jobs: the loop itself ends the study
    "space_options": {"subspaces": [SUBSPACE], "seq_len": 32},
    "loop_options": {
        "top_n": 1,
        "supernet": {"steps": 4, "batch_size": 8, "max_seq_length": 32},
        "rank": {"proxy_steps": 4, "heldout": 16},
    },
    "recipe": {
        "max_steps": 4,
        "eval_every": 4,
        "batch_size": 8,
        "max_seq_length": 32,
        "measure_latency": False,
        "keep_checkpoint": True,  # the final student, for `archsearch fetch`
    },
    "data": {"task": "sst2", "train_subset": 64, "eval_subset": 32},
}


pytestmark = needs_autodistil_trainer


def _kind(t) -> str:
    cand = t.user_attrs.get("candidate")
    return cand.get("kind", "train") if isinstance(cand, dict) else ""


def test_an_autodistil_study_survives_a_restart_mid_stage(
    tmp_path: Path, procs: list[Proc]
) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    log = tmp_path / "server.log"
    server = ServerProc(storage, log, lease=20, heartbeat=1).start()
    procs.append(server)
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    launched = subprocess.run(  # what a user runs
        cli("launch", "--spec", str(tmp_path / "spec.json"), "--server", server.address),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert launched.returncode == 0, launched.stderr
    worker = Proc(
        cli("worker", "--server", server.address, "--trainer", "autodistil", "--poll-seconds", "1"),
        tmp_path / "worker.log",
    )
    procs.append(worker.start())

    def supernet_done() -> bool:
        return any(
            _kind(t) == "supernet" and t.state == TrialState.COMPLETE
            for t in load_trials(storage, "distil")
        )

    wait_for(supernet_done, 400, "the supernet to train (see worker.log)")
    server.signal(signal.SIGKILL)  # mid-stage: the rank job is prepared or leased
    server.wait(10)
    restarted = ServerProc(storage, log, port=server.port, lease=20, heartbeat=1).start()
    procs.append(restarted)
    with SearchClient(restarted.address) as client:
        wait_study(client, "distil", 400, procs)

    trials = load_trials(storage, "distil")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    supernets = [t for t in done if _kind(t) == "supernet"]
    ranks = [t for t in done if _kind(t) == "rank"]
    students = [t for t in done if STUDENT_OF_ATTR in t.user_attrs]
    trained = [t for t in done if _kind(t) == "train"]
    assert (len(supernets), len(ranks), len(students), len(trained)) == (1, 1, 2, 1), [
        (t.number, t.state.name, _kind(t)) for t in trials
    ]
    (supernet,) = supernets
    assert any(k.startswith("artifacts:") for k in supernet.system_attrs)  # its checkpoint
    assert ranks[0].user_attrs["candidate"]["recipe"]["rank"]["supernet"] == (
        f"trial:distil:{supernet.number}"
    )
    for s in students:
        assert s.user_attrs[STUDENT_OF_ATTR] == ranks[0].number
        metrics = s.user_attrs["metrics"]
        assert {"accuracy", "dev_loss", "params", "flops", "relation_loss"} <= set(metrics)
        # its proxy scores: proxy.* rows and score_kind, not the true scores' metric.* rows
        assert s.user_attrs["score_kind"] == "proxy" and "metric.accuracy" not in s.user_attrs
        assert s.user_attrs["proxy.accuracy"] == metrics["accuracy"]
    (final,) = trained
    picked = next(s for s in students if s.number == final.user_attrs[PROXY_TRIAL_ATTR])
    assert picked.values[0] == max(s.values[0] for s in students)  # the better proxy
    # equal proxies (likely after so short a training) go to the lower dev loss
    best = min(students, key=lambda s: (-s.values[0], s.user_attrs["metrics"]["dev_loss"]))
    assert picked.number == best.number
    assert final.params["student"] == picked.params["student"]
    assert final.user_attrs["proxy.accuracy"] == picked.values[0]
    # one cost model for both rows of the student: its proxy row does not dominate it
    for cost in ("params", "flops"):
        assert final.user_attrs["metrics"][cost] == picked.user_attrs["metrics"][cost], cost
    assert 0.0 <= final.values[0] <= 1.0  # its true accuracy, beside the proxy
    assert final.user_attrs["score_kind"] == "measured"
    assert final.user_attrs["metric.accuracy"] == final.values[0]
    assert final.user_attrs["candidate"]["recipe"]["init"] == {
        "supernet": f"trial:distil:{supernet.number}"
    }
    study = optuna.load_study(study_name="distil", storage=storage)
    assert "every stage done" in study.user_attrs[COMPLETED_REASON_ATTR]

    # what `show` says: each job by its kind, each student by its key, the trained pick best
    shown = run_cli("show", "distil", "--json", "--server", restarted.address)
    out_json = json.loads(shown, parse_constant=_not_json)  # standard JSON: no -Infinity
    by_number = {t["number"]: t for t in out_json["trials"]}
    assert by_number[supernet.number]["values"] == [None]  # the job's -inf
    assert by_number[supernet.number]["description"].startswith("supernet job: sub-space tiny")
    assert by_number[ranks[0].number]["description"].startswith("rank job: sub-space tiny")
    for s in students:
        assert by_number[s.number]["derived_from"] == ranks[0].number
        key = s.params["student"]
        assert by_number[s.number]["description"].startswith(f"student {key} of tiny")
        assert by_number[s.number]["proxy"] is True
    assert by_number[final.number]["proxy"] is False
    assert [t["number"] for t in out_json["best_trials"]] == [final.number]  # not a proxy
    assert out_json["counts"]["derived"] == len(students)
    listed = run_cli("studies", "--server", restarted.address)
    assert f" {len(trials) - len(students)} +{len(students)} " in listed, listed

    # the user takes the picked student: a plain BERT classifier, wherever it trained
    out = tmp_path / "student"
    run_cli("fetch", "distil", str(final.number), "--out", str(out), "--server", restarted.address)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == picked.params["layers"]
    measured = final.user_attrs["metrics"]["classifier_params"]  # its task head included
    assert sum(p.numel() for p in model.parameters()) == measured


def _not_json(word: str) -> None:
    raise AssertionError(f"show --json printed {word}, which is not JSON")
