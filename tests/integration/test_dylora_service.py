"""A DyLoRA study through the real service: ``archsearch launch``, a server process and one
``archsearch worker --trainer lora`` process really fine-tune a tiny local base on an SST-2
slice; the storage ends with the training trial and one COMPLETE trial per rank, linked to it,
and ``archsearch show`` names each rank's training trial."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from _procs import Proc, ServerProc, cli, load_trials, run_cli, wait_study
from _tiny_lora import tiny_base
from optuna.trial import TrialState

from archsearch.server._rank_trials import RANK_OF_ATTR, RANK_PARAM, is_rank_trial
from archsearch.server.client import SearchClient

R_MAX = 3


def test_a_dylora_study_ends_with_one_trial_per_rank(tmp_path: Path, procs: list[Proc]) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log").start()
    procs.append(server)
    spec = {
        "name": "dylora",
        "space": "lora",
        "trainer": "lora",
        "loop": "random",
        "n_trials": 1,
        "space_options": {"r_max": [R_MAX], "alpha": [8], "learning_rate": [1e-3, 5e-3]},
        "objectives": ["accuracy:max", "trainable_params:min"],
        "recipe": {
            "lora": {"model": tiny_base()},
            "max_steps": 6,
            "eval_every": 3,
            "batch_size": 16,
            "max_seq_length": 32,
            "measure_latency": False,
            "keep_checkpoint": True,
        },
        "data": {"task": "sst2", "train_subset": 64, "eval_subset": 32},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run(  # what a user runs
        cli("launch", "--spec", str(tmp_path / "spec.json"), "--server", server.address),
        capture_output=True,
        timeout=60,
        check=True,
    )
    with SearchClient(server.address) as client:
        worker = Proc(
            cli(
                "worker",
                "--server",
                server.address,
                "--trainer",
                "lora",
                "--max-trials",
                "1",
                "--poll-seconds",
                "1",
            ),
            tmp_path / "worker.log",
        )
        procs.append(worker.start())
        study = wait_study(client, "dylora", 240, procs)  # 20 s alone; bounded
        shown = client.list_trials("dylora")
    assert study.n_complete == 1 + R_MAX

    trials = load_trials(storage, "dylora")
    trained = [t for t in trials if not is_rank_trial(t)]
    assert len(trained) == 1 and trained[0].state == TrialState.COMPLETE
    training = trained[0]
    assert training.user_attrs["candidate"]["recipe"]["lora"]["mode"] == "dylora"
    ranks = sorted((t for t in trials if is_rank_trial(t)), key=lambda t: t.params[RANK_PARAM])
    assert [t.params[RANK_PARAM] for t in ranks] == list(range(1, R_MAX + 1))
    for t in ranks:
        b = t.params[RANK_PARAM]
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs[RANK_OF_ATTR] == training.number
        assert t.values == [
            training.user_attrs["metrics"][f"accuracy@r{b}"],
            training.user_attrs["metrics"][f"trainable_params@r{b}"],
        ]
        assert t.params["learning_rate"] == training.params["learning_rate"]
        assert t.user_attrs["metrics"]["train_seconds"] == 0.0
        # the rank's own dev loss, to plot beside its score
        dev_loss = training.user_attrs["metrics"][f"dev_loss@r{b}"]
        assert t.user_attrs["metrics"]["dev_loss"] == dev_loss > 0
    sizes = [t.values[1] for t in ranks]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # more rank, more parameters
    assert ranks[-1].values == training.values  # r_max is what the training trial reports
    assert len(shown) == len(trials)  # ListTrials lists the ranks too

    show = run_cli("show", "dylora", "--server", server.address)
    assert f"{R_MAX} rank trials" in show and f"rank 1 of #{training.number}" in show, show
    as_json = run_cli("show", "dylora", "--json", "--server", server.address)
    links = {t["number"]: t["rank_of"] for t in json.loads(as_json)["trials"]}
    assert links == {t.number: (training.number if is_rank_trial(t) else None) for t in trials}
    best = json.loads(as_json)["best_trials"]  # linked there too (rank_of was null)
    assert best and all(t["rank_of"] == links[t["number"]] for t in best)
    assert training.number not in {t["number"] for t in best}  # its r_max rank trial is it

    listed = run_cli("studies", "--server", server.address)
    assert f" 1 +{R_MAX} " in listed and "DyLoRA ranks or AutoDistil students" in listed, listed
    described = {t["number"]: t["description"] for t in json.loads(as_json)["trials"]}
    assert described[ranks[0].number] == f"rank 1 of #{training.number}"

    # the user takes rank 2's adapter: a plain rank-2 LoRA of the training trial's weights
    fetched = run_cli(
        "fetch", "dylora", str(ranks[1].number), "--server", server.address, cwd=tmp_path
    )
    at_rank = tmp_path / f"dylora-trial{ranks[1].number}"  # named after the trial asked for
    said = f"trial {ranks[1].number} (rank 2 of #{training.number}): checkpoint in {at_rank.name}"
    assert said in fetched and "weights of the final step" in fetched, fetched
    assert json.loads((at_rank / "adapter_config.json").read_text())["r"] == 2
    other = subprocess.run(  # another rank than the trial's own: said, nothing written
        cli("fetch", "dylora", str(ranks[1].number), "--rank", "3", "--server", server.address),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert other.returncode == 2 and f"is rank 2 of #{training.number}" in other.stderr
    listed = run_cli("fetch", "dylora", str(ranks[1].number), "--list", "--server", server.address)
    assert listed.startswith(  # a pointer, not a dead end ("holds no files")
        f"trial {ranks[1].number} is rank 2 of #{training.number} and holds no files"
    ), listed
    whole = tmp_path / "whole"
    subprocess.run(
        cli(
            "fetch", "dylora", str(training.number), "--out", str(whole), "--server", server.address
        ),
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert (whole / "dylora.json").is_file()  # the DyLoRA adapter at r_max, every rank in it
    check_adapter_at_rank(whole, at_rank, 2)


def check_adapter_at_rank(dylora_folder: Path, plain_folder: Path, rank: int) -> None:
    """plain peft on the fetched rank-b adapter equals the DyLoRA adapter set to rank b."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from archsearch.worker._dylora import dylora_of, load_dylora

    def base() -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(tiny_base(), num_labels=2)

    plain = PeftModel.from_pretrained(base(), str(plain_folder)).eval()
    dylora = load_dylora(base(), dylora_folder).eval()
    dylora_of(dylora).set_rank(rank)
    ids = torch.tensor([[101, 2023, 2003, 2204, 102]])
    with torch.no_grad():
        got, want = plain(input_ids=ids).logits, dylora(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
