"""The autodistil trainer's three job kinds on a tiny local teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import save_tiny_teacher
from transformers import BertModel

from archsearch.spaces import Candidate, get_task
from archsearch.spaces._students import Student, TeacherShape, flops
from archsearch.spaces._subspaces import SubSpace
from archsearch.worker import CandidateError, TrainContext, TrialStopped
from archsearch.worker._autodistil_trainer import AutodistilTrainer
from archsearch.worker._student_ranking import cost_metrics
from archsearch.worker._supernet import Supernet, extract

#: With the tiny teacher (2 x 64, 4 heads of 16): L 1-2, A 2-4 (H 32-64), I = 2H.
SUBSPACE = SubSpace("t", (0.5, 1.0), (0.5, 1.0), None, (2.0,)).to_dict()
KEYS = ["L1_A2_H32_I64", "L2_A2_H32_I64", "L1_A4_H64_I128", "L2_A4_H64_I128"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    words = ["the", "a", "film", "movie", "good", "bad", "great", "dull", "story", "plot"]
    lines = [" ".join(words[(i * k) % len(words)] for k in range(1, 9)) for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def trainer() -> AutodistilTrainer:
    return AutodistilTrainer()


def _data(text_file: str) -> dict[str, object]:
    return {"task": "sst2", "train_subset": 64, "eval_subset": 32, "distill_text": text_file}


def test_supernet_job_trains_saves_and_reports(
    trainer: AutodistilTrainer,
    teacher: str,
    text_file: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path))
    reports: list[tuple[int, float]] = []
    candidate = Candidate(
        space="autodistil",
        kind="supernet",
        architecture={"teacher": teacher, "subspace": SUBSPACE},
        recipe={"supernet": {"steps": 4, "batch_size": 8, "max_seq_length": 16, "lr": 1e-3}},
        data=_data(text_file),
    )

    def report(step: int, value: float) -> bool:
        reports.append((step, value))
        return False

    store: dict[tuple[str, int, str], bytes] = {}

    def upload(path: Path, name: str) -> str:
        store[("s", 7, name)] = path.read_bytes()
        return name

    def download(study: str, number: int, name: str, dest: Path) -> None:
        dest.write_bytes(store[(study, number, name)])

    context = TrainContext(
        report=report, upload=upload, download=download, study_name="s", trial_number=7
    )
    result = trainer.train(candidate, context)
    assert result.info["checkpoint_artifacts"] == "model.safetensors config.json"
    # A rank job elsewhere fetches the supernet by trial reference.
    from archsearch.worker._supernet_files import fetch_supernet

    fetched = fetch_supernet(
        TrainContext(upload=upload, download=download, study_name="s"), "trial:7"
    )
    assert Path(fetched, "model.safetensors").read_bytes() == store[("s", 7, "model.safetensors")]
    # ... on this worker, where the supernet job kept it: one copy (the download finds it)
    assert fetched == result.info["checkpoint"]
    assert len(list(tmp_path.rglob("model.safetensors"))) == 1
    with pytest.raises(CandidateError, match="only a worker connected to a server"):
        fetch_supernet(TrainContext(), "trial:7")
    assert set(result.metrics) == {"relation_loss", "train_seconds"}
    assert result.metrics["relation_loss"] > 0
    assert [s for s, _ in reports] == [1, 2, 3, 4]
    saved = BertModel.from_pretrained(result.info["checkpoint"]).state_dict()
    original = BertModel.from_pretrained(teacher).state_dict()
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(saved[name], original[name])


def test_rank_job_scores_every_student(
    trainer: AutodistilTrainer, teacher: str, text_file: str
) -> None:
    candidate = Candidate(
        space="autodistil",
        kind="rank",
        architecture={"teacher": teacher, "subspace": SUBSPACE},
        recipe={"rank": {"proxy_steps": 3, "heldout": 6, "batch_size": 8, "max_seq_length": 16}},
        data=_data(text_file),
    )
    result = trainer.train(candidate, TrainContext())
    m = result.metrics
    for key in KEYS:
        for name in ("relation_loss", "teacher_relation_loss", "accuracy", "params", "flops"):
            assert f"{name}@{key}" in m, (name, key)
        assert f"sst2.accuracy@{key}" in m
    # Without a supernet the supernet is the teacher: P1 = P5, and the teacher itself is 0.
    assert m["relation_loss@L2_A4_H64_I128"] == pytest.approx(0.0, abs=1e-6)
    assert m["relation_loss@L1_A2_H32_I64"] == m["teacher_relation_loss@L1_A2_H32_I64"] > 0
    assert m["params@L1_A2_H32_I64"] < m["params@L2_A4_H64_I128"]


def test_train_job_fine_tunes_the_extracted_student(
    trainer: AutodistilTrainer, teacher: str, text_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: list[torch.Tensor] = []
    original = AutodistilTrainer.training_hooks

    def spy(self, candidate, task, device=None, context=None):  # type: ignore[no-untyped-def]
        hooks = original(self, candidate, task, device, context)
        init = hooks.init_fn
        assert init is not None

        def wrapped(model: Any) -> None:
            init(model)
            captured.append(
                model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
            )

        import dataclasses

        return dataclasses.replace(hooks, init_fn=wrapped)

    monkeypatch.setattr(AutodistilTrainer, "training_hooks", spy)
    student = Student(1, 2, 32, 64)
    candidate = Candidate(
        space="autodistil",
        kind="train",
        architecture={"teacher": teacher, "student": student.to_dict()},
        recipe={
            "max_steps": 2,
            "batch_size": 8,
            "max_seq_length": 16,
            "eval_every": 2,
            "measure_latency": False,
            "student": {"cost_seq_len": 24},
        },
        data=_data(text_file),
    )
    result = trainer.train(candidate, TrainContext())
    m = result.metrics
    assert "accuracy" in m and "sst2.accuracy" in m
    # its costs are the shared cost model's, as its rank job reports them for its proxy row
    # (the encoder; FLOPs of cost_seq_len tokens): the proxy row no longer dominated it
    shape = TeacherShape.from_config(BertModel.from_pretrained(teacher).config)
    rank_costs = cost_metrics(shape, [student], 24)
    for name in ("params", "flops"):
        assert m[name] == m[f"sst2.{name}"] == rank_costs[f"{name}@L1_A2_H32_I64"]
    # ... and the fine-tuned classifier's measured ones (task head, max_seq_length) beside them
    head = student.hidden * 2 + 2  # SST-2's two labels
    assert m["classifier_params"] == m["sst2.classifier_params"] == m["params"] + head
    assert m["classifier_flops"] == flops(shape, student, 16) + 2 * student.hidden * 2
    assert result.info["student"] == "L1_A2_H32_I64"
    expected = extract(Supernet(BertModel.from_pretrained(teacher)), student)
    assert torch.equal(
        captured[0], expected.state_dict()["encoder.layer.0.attention.self.query.weight"]
    )


@pytest.mark.parametrize(
    ("kind", "architecture", "match"),
    [
        ("supernet", {"subspace": {"name": "x"}}, "missing fields"),
        (
            "train",
            {"student": {"layers": 9, "heads": 1, "hidden": 16, "intermediate": 8}},
            "exceeds the teacher's 2",
        ),
        (
            "train",
            {"student": {"layers": 1, "heads": 1, "hidden": 32, "intermediate": 8}},
            "hidden = heads x head size",
        ),
        ("bogus", {}, "does supernet, rank, train jobs"),
    ],
)
def test_bad_candidates_are_refused(
    trainer: AutodistilTrainer,
    teacher: str,
    kind: str,
    architecture: dict[str, object],
    match: str,
) -> None:
    candidate = Candidate(
        space="autodistil", kind=kind, architecture={"teacher": teacher, **architecture}
    )
    with pytest.raises(CandidateError, match=match):
        trainer.train(candidate, TrainContext())


@pytest.mark.parametrize("method", ["dsir", "random"])
def test_supernet_text_chosen_from_pools(
    trainer: AutodistilTrainer,
    teacher: str,
    text_file: str,
    method: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """data.distill_selection: the supernet trains on the texts DSIR (or random) picks from
    the pools, the rank job scores on the selection's held-out tail, never on trained text."""
    from archsearch.worker._dsir_selector import select_pretrain_texts
    from archsearch.worker._supernet_training import held_out_count

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path))
    selection = {"method": method, "pool": ["glue:cola", text_file], "k": 40}
    data = {"task": "sst2", "train_subset": 64, "eval_subset": 32, "distill_selection": selection}
    arch = {"teacher": teacher, "subspace": SUBSPACE}
    result = trainer.train(
        Candidate(
            space="autodistil",
            kind="supernet",
            architecture=arch,
            recipe={"supernet": {"steps": 2, "batch_size": 8, "max_seq_length": 16}},
            data=data,
        ),
        TrainContext(),
    )
    info = result.info
    assert info["distill_selection"] == method and info["distill_selection_size"] == "40"
    if method == "random":
        assert float(info["distill_selection_kl_reduction"]) == 0.0
    job = Candidate(space="autodistil", kind="rank", architecture=arch, data=data)
    trained, _ = trainer._texts(job, held_out=False)
    held, _ = trainer._texts(job, held_out=True)
    assert len(held) == held_out_count(40) and len(trained) == 40 - len(held)
    # the same selection in every job (its seed is the selection's, not the recipe's)
    texts, _ = select_pretrain_texts(
        selection,
        trainer.splits.text_reader(get_task("sst2"), data),
        seed=0,
        section="data.distill_selection",
    )
    assert trained + held == texts


def test_distill_selection_is_checked() -> None:
    from archsearch.spaces import SpecError
    from archsearch.spaces._candidate import validate_data

    with pytest.raises(SpecError, match=r"data\.distill_selection"):
        validate_data({"distill_selection": {"method": "none"}})
    with pytest.raises(SpecError, match=r"data\.distill_selection.*distill_text"):
        validate_data(
            {
                "distill_selection": {"method": "random", "pool": "x.txt", "k": 3},
                "distill_text": "x.txt",
            }
        )
    checked = validate_data({"distill_selection": {"method": "dsir", "pool": "x.txt", "k": 3}})
    assert checked["distill_selection"]["k"] == 3


def test_a_stopped_rank_job_continues_its_task_proxy_fine_tuning(
    teacher: str, text_file: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path))
    candidate = Candidate(
        space="autodistil",
        kind="rank",
        architecture={"teacher": teacher, "subspace": SUBSPACE},
        recipe={"rank": {"proxy_steps": 8, "heldout": 6, "batch_size": 8, "max_seq_length": 16}},
        data={**_data(text_file), "task": "stsb"},  # correlations move with any weight
    )
    checks = [0]

    def count() -> bool:
        checks[0] += 1
        return False

    whole = AutodistilTrainer().train(candidate, TrainContext(should_stop=count))
    # the last checks: one per P2 step, then one per student scored; stop inside step 6
    stop_at = checks[0] - len(KEYS) - 2
    seen = [0]

    def stop() -> bool:
        seen[0] += 1
        return seen[0] == stop_at

    trainer = AutodistilTrainer()
    with pytest.raises(TrialStopped):
        trainer.train(candidate, TrainContext(should_stop=stop))
    saved = tmp_path / "progress" / "autodistil" / candidate.fingerprint() / "stsb"
    assert (saved / "progress.pt").exists()
    again = trainer.train(candidate, TrainContext())
    pearson = {k: v for k, v in whole.metrics.items() if k.startswith("pearson@")}
    assert len(pearson) == len(KEYS)
    assert {k: again.metrics[k] for k in pearson} == pearson
    assert not saved.exists()


def test_a_stopped_rank_job_of_two_tasks_tunes_only_the_task_it_had_not_finished(
    teacher: str, text_file: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    candidate = Candidate(
        space="autodistil",
        kind="rank",
        architecture={"teacher": teacher, "subspace": SUBSPACE},
        recipe={"rank": {"proxy_steps": 6, "heldout": 6, "batch_size": 8, "max_seq_length": 16}},
        data={**_data(text_file), "task": "stsb", "tasks": ["stsb", "mrpc"]},
    )
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "whole"))
    whole = AutodistilTrainer().train(candidate, TrainContext())

    tuned: list[str] = []
    real = AutodistilTrainer._proxy

    def spy(self, candidate, task, *args):  # type: ignore[no-untyped-def]
        tuned.append(task.id)
        if task.id == "mrpc" and len(tuned) == 2:  # the first attempt stops in mrpc
            raise TrialStopped("preempted")
        return real(self, candidate, task, *args)

    monkeypatch.setattr(AutodistilTrainer, "_proxy", spy)
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "stopped"))
    trainer = AutodistilTrainer()
    with pytest.raises(TrialStopped):
        trainer.train(candidate, TrainContext())
    folder = tmp_path / "stopped" / "progress" / "autodistil" / candidate.fingerprint()
    assert (folder / "stsb.done.pt").exists()

    again = trainer.train(candidate, TrainContext())
    assert tuned == ["stsb", "mrpc", "mrpc"]  # stsb's proxy scores were kept
    scores = {k: v for k, v in whole.metrics.items() if "@" in k and "seconds" not in k}
    assert any(k.startswith("stsb.pearson@") for k in scores)
    assert any(k.startswith("mrpc.accuracy@") for k in scores)
    assert {k: again.metrics[k] for k in scores} == scores
    assert not folder.exists()  # the job ended: nothing kept
