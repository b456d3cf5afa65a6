"""``archsearch fetch``: a trial's kept checkpoint from a real (in-process) server, a DyLoRA
adapter written as a plain peft LoRA of a chosen rank that scores exactly as the DyLoRA
weights truncated to that rank, and one-line errors for every mistake. A DyLoRA rank trial of a
real study is fetched in tests/integration/test_dylora_service.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _procs import table_spec
from _tiny_lora import tiny_classifier
from peft import PeftModel

from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.cli import main
from archsearch.server.client import SearchClient, WorkerClient
from archsearch.server.fetch import adapter_at_rank
from archsearch.spaces._checkpoint_names import DYLORA_FILE, NOTE_FILE
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker._checkpoint_artifacts import upload_checkpoint
from archsearch.worker._dylora import attach_dylora, dylora_of, load_dylora, save_dylora
from archsearch.worker._lora_spec import parse_lora_spec
from archsearch.worker._trainer import TrainContext

ADMIN = "admin-token-0123456789abcdef"
CAPS = pb.WorkerCapabilities(trainers=["table"], device="cpu")
R_MAX = 4


def trained_adapter(folder: Path) -> Path:
    """A DyLoRA adapter (r_max 4) whose factors are all non-zero, saved as the trainer does."""
    model = attach_dylora(tiny_classifier(), parse_lora_spec({"r_max": R_MAX, "alpha": 8}))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "classifier" in name:
                p.add_(torch.randn_like(p) * 0.5)
    save_dylora(model, folder)
    (folder / NOTE_FILE).write_text(json.dumps({"metric": "accuracy", "value": 0.75, "step": 6}))
    return folder


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 9, 13, 2], [1, 7, 3, 2, 0]])
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=ids, attention_mask=(ids > 0).long()).logits
    return out


def test_an_adapter_at_rank_b_scores_as_dylora_truncated_to_b(tmp_path: Path) -> None:
    saved = trained_adapter(tmp_path / "dylora")
    for b in range(1, R_MAX + 1):
        folder = tmp_path / f"r{b}"
        shutil.copytree(saved, folder)
        adapter_at_rank(folder, b)
        assert not (folder / DYLORA_FILE).exists()
        assert json.loads((folder / "adapter_config.json").read_text())["r"] == b
        plain = PeftModel.from_pretrained(tiny_classifier(), str(folder)).eval()  # no archsearch
        dylora = load_dylora(tiny_classifier(), saved).eval()
        dylora_of(dylora).set_rank(b)
        torch.testing.assert_close(logits(plain), logits(dylora), rtol=0, atol=1e-6)
    # the ranks differ from each other, so the check above can fail
    r1, r4 = (PeftModel.from_pretrained(tiny_classifier(), str(tmp_path / r)) for r in ("r1", "r4"))
    assert not torch.allclose(logits(r1.eval()), logits(r4.eval()))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    cfg = ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0, admin_tokens=[ADMIN])
    srv = ArchsearchServer(cfg)
    srv.start()
    yield srv
    srv.stop(0)


@pytest.fixture
def study(server: ArchsearchServer, tmp_path: Path) -> Path:
    """Study "s": trial 0 kept a DyLoRA adapter (uploaded as a worker does), trial 1 kept a
    whole model, trial 2 kept nothing, trial 3 only part of one (an upload refused part-way);
    trial 4 kept one whose upload failed, trial 5 one on its worker's disk only; trial 6 is
    running and has uploaded part of its checkpoint; returns the admin token file."""
    with SearchClient(server.address, token=ADMIN) as admin:
        admin.launch(table_spec("s", 8))
    kept = {0: trained_adapter(tmp_path / "kept0"), 1: tmp_path / "kept1", 3: tmp_path / "kept3"}
    for number in (1, 3):
        kept[number].mkdir()
        (kept[number] / "config.json").write_text('{"model_type": "bert"}')
    (kept[1] / "model.safetensors").write_bytes(b"\x00" * 64)
    with WorkerClient(server.address, token=ADMIN) as worker:
        worker.register("w1", CAPS)
        for number in range(7):
            lease = worker.acquire("w1", CAPS, 5).lease
            assert lease.trial_number == number
            context = TrainContext(
                upload=lambda path, name, lid=lease.lease_id: worker.upload_artifact(
                    lid, path, name
                ),
                download=lambda *args: None,  # not used
                study_name="s",
            )
            if number == 6:  # still running, in the middle of its upload
                worker.upload_artifact(
                    lease.lease_id, kept[3] / "config.json", "checkpoint-config.json"
                )
                break
            info = upload_checkpoint(context, kept[number]) if number in kept else {}
            if number in (4, 5):  # what a worker records when the upload fails, or without one
                info = {"checkpoint": f"/ckpt/{number}"}
                if number == 4:
                    info["checkpoint_upload_error"] = "UploadArtifact: UNAVAILABLE: gone"
            assert number not in kept or "checkpoint_artifacts" in info, info
            worker.complete(lease.lease_id, {"accuracy": 0.5, "score": 0.5}, info)
    token = tmp_path / "token"
    token.write_text(ADMIN)
    return token


def fetch(server: ArchsearchServer, token: Path, *args: str) -> int:
    return main(["fetch", "--server", server.address, "--token-file", str(token), *args])


def test_fetch_downloads_the_kept_files(server, study, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "got"
    assert fetch(server, study, "s", "0", "--out", str(out)) == 0
    kept = tmp_path / "kept0"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in kept.iterdir())
    for p in kept.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes()
    said = capsys.readouterr().out
    assert "weights of step 6, the best dev accuracy 0.75" in said
    assert "a DyLoRA adapter at r_max" in said
    # a whole model; --rank 2 into the default folder (named after study, trial and rank)
    assert fetch(server, study, "s", "1", "--out", str(tmp_path / "whole")) == 0
    assert (tmp_path / "whole" / "config.json").read_text() == '{"model_type": "bert"}'
    assert "a transformers classifier: load it with" in capsys.readouterr().out
    monkey_cwd = tmp_path / "cwd"
    monkey_cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(monkey_cwd)
        assert fetch(server, study, "s", "0", "--rank", "2") == 0
    got = monkey_cwd / "s-trial0-r2"
    assert json.loads((got / "adapter_config.json").read_text())["r"] == 2
    assert "at rank 2" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*part*")) and not list(monkey_cwd.glob(".*part*"))
    as_json = tmp_path / "as-json"
    assert fetch(server, study, "s", "0", "--rank", "3", "--out", str(as_json), "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "out": str(as_json),
        "trial": 0,
        "source_trial": 0,
        "rank": 3,
        "folders": [str(as_json)],
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("s", "9"), "study 's' has no trial 9 (its trials: numbered 0-6)"),
        (
            ("s", "2"),
            "trial 2 kept no checkpoint (launch the study with --set recipe.keep_checkpoint=true",
        ),
        (
            ("s", "4"),
            "trial 4 kept its checkpoint, but its upload failed (UploadArtifact: UNAVAILABLE: "
            "gone): the files are in /ckpt/4 on worker w1; copy them from there",
        ),
        (("s", "5"), "trial 5 kept its checkpoint on its worker's disk only (/ckpt/5 on worker w1"),
        (("s", "6"), "trial 6 has not finished: its checkpoint comes when it ends"),
        (("s", "3"), "trial 3's checkpoint on the server lacks its weights"),
        (("s", "0", "--rank", "5"), "--rank 5 is above the adapter's r_max 4 (pass 1-4)"),
        (("s", "1", "--rank", "1"), "--rank applies to a lora trainer's adapter"),
        (("nope", "0"), "no archsearch study named 'nope'"),
        (("s", "-1"), "argument trial"),
    ],
)
def test_mistakes_are_one_line_errors(server, study, tmp_path, capsys, args, message) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    if args[1] == "-1":  # refused by the argument parser
        with pytest.raises(SystemExit) as exited:
            fetch(server, study, *args, "--out", str(out))
        assert exited.value.code == 2
    else:  # README "Scripting": 4 no such study or trial, 2 a --rank that does not apply,
        # 1 a trial with nothing to fetch
        missing = "no archsearch study" in message or "has no trial" in message
        code = 4 if missing else 2 if message.startswith("--rank") else 1
        assert fetch(server, study, *args, "--out", str(out)) == code
    err = capsys.readouterr().err
    assert err.startswith("archsearch: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("afile", "afile is a file, not a folder (pass --out NEW_FOLDER)"),
        ("afile/sub", "afile is not a folder (create it first)"),
        ("no/such/place", "no/such is not a folder (create it first)"),
    ],
)
def test_an_out_that_cannot_be_written_says_so(
    server, study, tmp_path, capsys, out, message
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "afile").write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert fetch(server, study, "s", "0", "--out", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("archsearch: ") and message in err and err.count("\n") == 1, err


def test_an_existing_folder_is_not_overwritten(server, study, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "full"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert fetch(server, study, "s", "0", "--out", str(out)) == 2
    assert "exists and is not empty (pass --out NEW_FOLDER" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fetch(server, study, "s", "0", "--out", str(empty)) == 0  # an empty one is fine
    assert (empty / "adapter_model.safetensors").is_file()


def test_the_same_fetch_in_python(server, study, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from archsearch.server.fetch import FetchError, fetch_checkpoint

    got = fetch_checkpoint(server.address, "s", 0, tmp_path / "py", rank=3, token=ADMIN)
    assert (got.out, got.trial, got.source, got.rank) == (tmp_path / "py", 0, 0, 3)
    assert got.folders == (tmp_path / "py",)
    assert json.loads((got.out / "adapter_config.json").read_text())["r"] == 3
    with pytest.raises(FetchError, match="has no trial 9"):
        fetch_checkpoint(server.address, "s", 9, tmp_path / "none", token=ADMIN)


def test_a_trials_own_files_are_listed_and_fetched_by_name(server, study, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A trainer of one's own uploads what it likes (context.upload): `fetch --list`, `fetch
    --artifact NAME` and `--all` get it; the plain fetch names those files instead of saying
    only "kept no checkpoint"."""
    with WorkerClient(server.address, token=ADMIN) as worker:
        lease = worker.acquire("w1", CAPS, 5).lease
        assert lease.trial_number == 7
        pkl = tmp_path / "model.pkl"
        pkl.write_bytes(b"pickled" * 100)
        worker.upload_artifact(lease.lease_id, pkl, "model.pkl")
        worker.upload_artifact(lease.lease_id, tmp_path / "kept1" / "config.json", "notes.json")
        worker.complete(lease.lease_id, {"accuracy": 0.5, "score": 0.5}, {})
    assert fetch(server, study, "s", "7", "--list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "         700  model.pkl",
        "          22  notes.json",
    ]
    assert fetch(server, study, "s", "7", "--list", "--json") == 0  # for scripts
    assert json.loads(capsys.readouterr().out) == [
        {"name": "model.pkl", "size_bytes": 700},
        {"name": "notes.json", "size_bytes": 22},
    ]
    assert (
        fetch(server, study, "s", "7", "--out", str(tmp_path / "none")) == 1
    )  # nothing of archsearch to fetch
    err = capsys.readouterr().err
    assert "kept no checkpoint of archsearch's; it holds model.pkl, notes.json: fetch them" in err
    out = tmp_path / "one"
    assert fetch(server, study, "s", "7", "--artifact", "model.pkl", "--out", str(out)) == 0
    assert [p.name for p in out.iterdir()] == ["model.pkl"]
    assert (out / "model.pkl").read_bytes() == pkl.read_bytes()
    assert "1 file(s) in" in capsys.readouterr().out
    two = tmp_path / "two"
    args = ("--artifact", "notes.json", "--out", str(two), "--json")
    assert fetch(server, study, "s", "7", *args) == 0
    assert json.loads(capsys.readouterr().out) == {
        "out": str(two),
        "trial": 7,
        "files": ["notes.json"],
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert fetch(server, study, "s", "7", "--all") == 0
    assert sorted(p.name for p in (tmp_path / "s-trial7").iterdir()) == ["model.pkl", "notes.json"]
    capsys.readouterr()
    assert (
        fetch(server, study, "s", "7", "--artifact", "nope.bin", "--out", str(tmp_path / "x"))
        == 4  # no such file
    )
    err = capsys.readouterr().err
    assert "trial 7 holds no file 'nope.bin' (it holds: model.pkl, notes.json)" in err
    assert not (tmp_path / "x").exists()
    assert fetch(server, study, "s", "2", "--list") == 0
    assert capsys.readouterr().out.strip() == "trial 2 of 's' holds no files"


def test_a_repeat_points_at_the_trial_that_trained_it() -> None:
    """`fetch STUDY 3` on a repeat of #0 said "kept no checkpoint (launch the study with
    --set recipe.keep_checkpoint=true)" in a study that keeps them."""
    from archsearch.server._fetch_reasons import nothing_kept as _nothing_kept

    repeat = pb.Trial(number=3, state=pb.COMPLETE, duplicate_of=0)
    said = _nothing_kept(repeat, 3, [repeat])
    assert said == "trial 3 repeats trial 0 (its result, not trained again): fetch 0"


def test_autodistil_jobs_and_students_say_what_they_are() -> None:
    """A supernet job said "kept its checkpoint on its worker's disk only", a ranked student
    "launch the study with keep_checkpoint" (it never trained): each now says what it is."""
    from archsearch.server._fetch_reasons import nothing_kept as _nothing_kept

    supernet = pb.Trial(
        number=0, state=pb.COMPLETE, duplicate_of=-1, candidate_json='{"kind": "supernet"}'
    )
    said = _nothing_kept(supernet, 0, [supernet], ["model.safetensors"])
    assert said.startswith("trial 0 is an AutoDistil supernet job, not a model to fine-tune")
    assert "`--all` fetches them" in said
    rank = pb.Trial(number=1, state=pb.COMPLETE, duplicate_of=-1, candidate_json='{"kind": "rank"}')
    assert "a rank job scores students and keeps no model" in _nothing_kept(rank, 1, [rank])
    student = pb.Trial(
        number=4, state=pb.COMPLETE, duplicate_of=-1, derived_from=1, params_json=KEY
    )
    assert _nothing_kept(student, 4, [student]).startswith(
        "trial 4 is a student scored by rank job #1, not trained: only its stand-alone"
    )
    # the picked student points at the trial that trained it (a retry: the completed one)
    failed = pb.Trial(number=6, state=pb.FAIL, duplicate_of=-1, params_json=KEY)
    trained = pb.Trial(number=7, state=pb.COMPLETE, duplicate_of=-1, params_json=KEY)
    other = pb.Trial(number=8, state=pb.COMPLETE, duplicate_of=-1, params_json=OTHER)
    assert _nothing_kept(student, 4, [student, failed, trained, other]) == (
        "trial 4 is a student scored by rank job #1, not trained; trial 7 trained it "
        "stand-alone: fetch 7"
    )
    assert _nothing_kept(student, 4, [student, failed]).endswith(
        "its stand-alone training is trial 6 (not completed)"
    )


KEY = '{"target": "student", "student": "L2_A2_H128_I256"}'
OTHER = '{"target": "student", "student": "L1_A2_H128_I256"}'


def test_a_plain_lora_adapter_is_not_called_dylora(tmp_path: Path) -> None:
    from archsearch.server._cli_fetch import _adapter_kind

    (tmp_path / "dylora.json").write_text('{"spec": {"mode": "lora", "r_max": 4}, "rank": 4}')
    assert _adapter_kind(tmp_path) == "a LoRA adapter"
    (tmp_path / "dylora.json").write_text('{"spec": {"mode": "dylora", "r_max": 4}, "rank": 4}')
    assert _adapter_kind(tmp_path) == "a DyLoRA adapter"


def test_fetch_files_of_a_missing_trial_is_a_fetch_error(server, study) -> None:  # type: ignore[no-untyped-def]
    """The README says FetchError covers "no such trial"; fetch_files raised ClientError."""
    from archsearch.server.fetch import NoSuchTrial, fetch_files

    with pytest.raises(NoSuchTrial, match="no trial 77"):
        fetch_files(server.address, "s", 77, token=ADMIN)


def test_a_plain_lora_adapter_is_cut_only_at_ranks_it_scored(tmp_path: Path) -> None:
    """A plain LoRA adapter (mode lora) was trained at r_max only: cutting it at another
    rank wrote an adapter nobody trained or scored; its eval_ranks (the truncated-LoRA
    baseline) are the ranks it scored."""
    from archsearch.server.fetch import (
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
        BadFetchRequest,
        adapter_at_rank,
    )

    (tmp_path / ADAPTER_CONFIG).write_text('{"r": 4, "lora_alpha": 8}')
    (tmp_path / ADAPTER_WEIGHTS).write_bytes(b"")
    (tmp_path / "dylora.json").write_text('{"spec": {"mode": "lora", "eval_ranks": [4]}}')
    with pytest.raises(BadFetchRequest, match="--rank 2 was never trained or scored"):
        adapter_at_rank(tmp_path, 2)


def test_a_table_trial_says_there_is_no_model_to_fetch() -> None:
    """It said "launch the study with --set recipe.keep_checkpoint=true" to a study that had:
    the table trainer trains nothing."""
    from archsearch.server._fetch_reasons import nothing_kept

    trial = pb.Trial(number=3, state=pb.COMPLETE, duplicate_of=-1, info={"table": "/t.json"})
    said = nothing_kept(trial, 3, [trial])
    assert said.startswith("trial 3 was scored from a table (/t.json)")
    assert "keep_checkpoint" not in said
    # the server's own architecture picture is no file of the trainer's
    assert nothing_kept(trial, 3, [trial], ["trial-3-architecture.png"]) == said


def test_a_regression_checkpoint_is_not_called_a_classifier(tmp_path: Path) -> None:
    """STS-B or a custom regression task: one output, scores not classes."""
    from archsearch.server._cli_fetch import _head_kind

    (tmp_path / "config.json").write_text('{"model_type": "bert", "problem_type": "regression"}')
    assert _head_kind(tmp_path) == "regression model"
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert _head_kind(tmp_path) == "classifier"
