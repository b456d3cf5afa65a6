"""AutodistilTrainer (``autodistil``): AutoDistil's three job kinds on a worker.

* ``supernet``: ``architecture = {"teacher": name or folder (default the packaged
  all-MiniLM-L6-v2), "subspace": SubSpace dict}``; ``recipe["supernet"]`` a
  :class:`~archsearch.worker._supernet_training.SupernetRecipe`. Sandwich-trains a supernet
  initialised from the teacher on unlabeled text (the tasks' train sentences,
  ``data["distill_text"]``, or the texts ``data["distill_selection"]`` chooses from pools:
  DSIR towards the first task's training text or at random, as ``data.pretrain_selection``;
  drawn with the selection's own ``seed``, default 0, so every job of a study reads the same
  texts; its provenance goes to the info as ``distill_selection_...``), reports the relation
  loss as it goes (the server keeps it as the trial's ``progress.*`` attributes: a job's
  reports are no learning curve of the study's objective), uploads the supernet
  (``config.json``, ``model.safetensors``) as artifacts of its trial and returns
  ``relation_loss`` (mean of the last steps) and ``train_seconds`` (every attempt's). It saves
  its progress every ``save_minutes`` and when stopped, and a later attempt that finds it
  continues from there (``_supernet_resume``; ``info["resumed_from_step"]``).
* ``rank``: same architecture; ``recipe["rank"]`` (:data:`RANK_DEFAULTS`) names the supernet
  (``"trial:N"``, ``"trial:STUDY:N"`` or a local folder; absent: the untrained teacher). For every
  student of the sub-space: ``relation_loss@<key>`` (held-out text), ``teacher_relation_loss@<key>``
  (P5), the task-proxy dev metrics ``<metric>@<key>`` per task (bert trainer names:
  ``accuracy@<key>`` alone, ``sst2.accuracy@<key>`` with several tasks), ``params@<key>`` and
  ``flops@<key>`` (cost model, ``seq_len`` = the rank recipe's ``cost_seq_len``, 128); plus
  ``train_seconds``.
* ``train``: ``architecture = {"teacher": ..., "student": Student dict}``, optional
  ``recipe["init"] = {"supernet": ref}`` (without it the student is extracted from the
  teacher) and ``recipe["student"] = {"cost_seq_len": N}`` (default 128). The student,
  extracted as a plain BERT, is fine-tuned by the bert trainer's pipeline with the rest of the
  recipe; it reports what the bert trainer reports, except that ``params`` and ``flops`` are
  the cost model's (``cost_seq_len`` tokens), as its rank job reported them, and the measured
  classifier's are ``classifier_params`` and ``classifier_flops``.

Imports torch and transformers at module level.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import BertModel

from archsearch.spaces import Candidate, GlueTask, get_task
from archsearch.spaces._candidate import data_tasks
from archsearch.spaces._errors import SpecError
from archsearch.spaces._students import Student, TeacherShape
from archsearch.spaces._subspaces import SubSpace
from archsearch.worker._autodistil_info import AUTODISTIL_KINDS, AUTODISTIL_TRAINER_INFO
from archsearch.worker._bert_trainer import BertTrainer
from archsearch.worker._dsir_selector import select_pretrain_texts
from archsearch.worker._extract import init_student_from_teacher
from archsearch.worker._finished_tasks import each_task
from archsearch.worker._loop import TrainingHooks, TrainingLoop
from archsearch.worker._optim import seed_everything
from archsearch.worker._progress import DEFAULT_SAVE_MINUTES
from archsearch.worker._registry import register_trainer
from archsearch.worker._result_metrics import merge_metrics
from archsearch.worker._student_ranking import (
    SupernetClassifier,
    cost_metrics,
    proxy_hooks,
    relation_scores,
    trained_student_costs,
)
from archsearch.worker._supernet import Supernet, extract
from archsearch.worker._supernet_files import fetch_supernet, supernet_folder, upload_supernet
from archsearch.worker._supernet_resume import train_resumably
from archsearch.worker._supernet_training import (
    SupernetRecipe,
    SupernetTraining,
    held_out_count,
    held_out_texts,
    text_batches,
    unlabeled_texts,
)
from archsearch.worker._task_training import (
    TaskOutcome,
    finished_tasks,
    job_progress,
    progress_artifact,
)
from archsearch.worker._teacher import load_teacher_encoder
from archsearch.worker._trainer import CandidateError, TrainContext, TrainResult

#: ``recipe["rank"]`` fields and their defaults.
RANK_DEFAULTS: dict[str, Any] = {
    "supernet": None,
    "heldout": 512,  # held-out sentences for the relation losses
    "proxy_steps": 200,  # all-student fine-tuning steps per proxy task
    "proxy_students": None,  # students trained per step (None: all, as the paper)
    "batch_size": 32,
    "max_seq_length": 64,
    "lr": 1e-4,
    "loss": "kl",
    "seed": 0,
    "cost_seq_len": 128,
}
_LAST_STEPS = 20  # the supernet's reported relation_loss: mean over its last steps


@register_trainer
class AutodistilTrainer(BertTrainer):
    """AutoDistil's supernet, rank and train jobs (see the module docstring)."""

    name = "autodistil"
    info = AUTODISTIL_TRAINER_INFO
    kinds = AUTODISTIL_KINDS

    def __init__(
        self,
        glue_dir: str | None = None,
        tokenizer_path: str | None = None,
        save_minutes: float = DEFAULT_SAVE_MINUTES,
    ) -> None:
        super().__init__(glue_dir, tokenizer_path, save_minutes)
        self._teachers: dict[str, BertModel] = {}
        self._init_from: BertModel | None = None

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        try:
            if candidate.kind == "supernet":
                return self._train_supernet(candidate, context)
            if candidate.kind == "rank":
                return self._rank(candidate, context)
            if candidate.kind == "train":
                return self._train_student(candidate, context)
        except SpecError as e:
            raise CandidateError(str(e)) from e
        raise CandidateError(
            f"the autodistil trainer does {', '.join(AUTODISTIL_KINDS)} jobs, "
            f"not {candidate.kind!r}"
        )

    # ------------------------------------------------------------------------- shared

    def teacher(self, name: str | None) -> BertModel:
        """The teacher encoder (cached per name), frozen."""
        key = name or ""
        if key not in self._teachers:
            try:
                model = load_teacher_encoder(name or None)
            except (OSError, ValueError) as e:
                raise CandidateError(f"architecture.teacher {name!r}: {e}") from e
            model.requires_grad_(False)
            self._teachers[key] = model
        return self._teachers[key]

    def _subspace(self, candidate: Candidate) -> tuple[BertModel, SubSpace, list[Student]]:
        arch = _mapping(candidate.architecture, "architecture", ("teacher", "subspace"))
        teacher = self.teacher(arch.get("teacher"))
        space = SubSpace.from_dict(arch.get("subspace"), "architecture.subspace")
        return teacher, space, space.students(TeacherShape.from_config(teacher.config))

    def _load_supernet(self, ref: str | None, teacher: BertModel, context: TrainContext) -> Any:
        if not ref:
            return Supernet.from_teacher(teacher)
        folder = fetch_supernet(context, ref)
        try:
            bert = BertModel.from_pretrained(folder, attn_implementation="eager")
        except (OSError, ValueError) as e:
            raise CandidateError(f"supernet {ref!r}: cannot load {folder}: {e}") from e
        if TeacherShape.from_config(bert.config) != TeacherShape.from_config(teacher.config):
            raise CandidateError(f"supernet {ref!r} does not have the teacher's shape")
        _move(bert, torch.device(context.device))
        return Supernet(bert)

    # ------------------------------------------------------------------------- supernet

    def _train_supernet(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        teacher_bert, space, students = self._subspace(candidate)
        recipe = SupernetRecipe.from_dict(candidate.recipe.get("supernet"))
        texts, selection_info = self._texts(candidate, held_out=False)
        device = torch.device(context.device)
        seed_everything(recipe.seed)
        _move(teacher_bert, device)
        teacher = Supernet(teacher_bert)
        supernet = Supernet.from_teacher(teacher_bert)
        batches = text_batches(
            texts, self.tokenizer, recipe.max_seq_length, recipe.batch_size, recipe.seed, device
        )
        every = max(1, recipe.steps // 20)
        run = SupernetTraining(supernet, teacher, students, batches, recipe)
        done = train_resumably(run, context, candidate.fingerprint(), self.save_minutes, every)
        losses = run.losses
        folder = supernet_folder(context, candidate)
        supernet.bert.save_pretrained(folder)
        done.progress.clear()
        info: dict[str, Any] = {"checkpoint": str(folder), "subspace": space.name}
        if done.resumed_from is not None:
            info["resumed_from_step"] = str(done.resumed_from)
        info.update(selection_info)
        info.update(upload_supernet(context, folder))
        tail = losses[-_LAST_STEPS:]
        metrics = {"relation_loss": sum(tail) / len(tail), "train_seconds": done.seconds}
        return TrainResult(metrics=metrics, info=info)

    def _texts(self, candidate: Candidate, held_out: bool) -> tuple[list[str], dict[str, str]]:
        """The supernet's training text (or, ``held_out``, the text it never trained on) and
        the selection's provenance (empty without ``data.distill_selection``)."""
        text_file = candidate.data.get("distill_text")
        tasks = data_tasks({"task": "sst2", **candidate.data})
        selection = candidate.data.get("distill_selection")
        if selection is not None:
            selected, info = select_pretrain_texts(
                selection,
                self.splits.text_reader(get_task(tasks[0]), candidate.data),
                seed=0,  # the selection's "seed" overrides it; never the recipe's
                section="data.distill_selection",
            )
            cut = len(selected) - held_out_count(len(selected))
            return (selected[cut:] if held_out else selected[:cut]), info
        read = held_out_texts if held_out else unlabeled_texts
        try:
            return read(tasks, self.glue_dir, text_file), {}
        except (OSError, ValueError) as e:
            raise CandidateError(f"unlabeled text: {e}") from e

    # ------------------------------------------------------------------------- rank

    def _rank(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        teacher_bert, _, students = self._subspace(candidate)
        rank = {
            **RANK_DEFAULTS,
            **_mapping(candidate.recipe.get("rank"), "recipe.rank", RANK_DEFAULTS),
        }
        device = torch.device(context.device)
        _move(teacher_bert, device)
        teacher = Supernet(teacher_bert)
        supernet = self._load_supernet(rank["supernet"], teacher_bert, context)
        start = time.perf_counter()
        texts = self._texts(candidate, held_out=True)[0][: int(rank["heldout"])]
        stream = text_batches(
            texts, self.tokenizer, rank["max_seq_length"], rank["batch_size"], rank["seed"], device
        )
        batches = [next(stream) for _ in range(-(-len(texts) // rank["batch_size"]))]
        metrics: dict[str, float] = {}
        for prefix, net in (("", supernet), ("teacher_", teacher)):
            scores = relation_scores(net, teacher, students, batches, rank["loss"])
            metrics.update({f"{prefix}relation_loss@{k}": v for k, v in scores.items()})
        context.check()
        task_ids = data_tasks({"task": "sst2", **candidate.data})
        # several proxy tasks: each finished one is kept, so that a retry tunes only the rest
        finished = finished_tasks(self, candidate) if len(task_ids) > 1 else None

        def proxy(task_id: str) -> TaskOutcome:
            scores = self._proxy(candidate, get_task(task_id), supernet, students, rank, context)
            return TaskOutcome(scores, None, np.empty(0), np.empty(0))

        outcomes = each_task(finished, task_ids, context, proxy)
        metrics.update(merge_metrics({t: o.metrics for t, o in outcomes.items()}))
        metrics.update(cost_metrics(teacher.shape, students, int(rank["cost_seq_len"])))
        metrics["train_seconds"] = time.perf_counter() - start
        if finished is not None:
            finished.clear()
        return TrainResult(metrics=metrics, info={"students": str(len(students))})

    def _proxy(
        self,
        candidate: Candidate,
        task: GlueTask,
        supernet: Supernet,
        students: list[Student],
        rank: Mapping[str, Any],
        context: TrainContext,
    ) -> dict[str, float]:
        """P2 on one task: every student's dev metrics after all-student fine-tuning."""
        data = {"train_subset": 0, "eval_subset": 0, **candidate.data}
        data.pop("distill_text", None)
        data.pop("distill_selection", None)
        encode_recipe = {"max_seq_length": rank["max_seq_length"], "seed": rank["seed"]}
        train = self.encode(task.id, "train", data["train_subset"], encode_recipe, data)
        dev = self.encode(task.id, task.dev_splits[0], data["eval_subset"], encode_recipe, data)
        seed_everything(int(rank["seed"]))
        model = SupernetClassifier(copy.deepcopy(supernet), task).to(context.device)
        steps = int(rank["proxy_steps"])
        loop_recipe = {
            "max_steps": steps,
            "eval_every": steps,
            "batch_size": rank["batch_size"],
            "learning_rate": rank["lr"],
            "weight_decay": 0.01,
            "warmup_ratio": 0.1,
            "seed": rank["seed"],
            "progress": False,
        }
        hooks = proxy_hooks(students, rank["proxy_students"])
        loop = TrainingLoop(
            model,
            task,
            loop_recipe,
            context,
            None,
            self.tokenizer.pad_token_id,
            hooks=hooks,
            resume=job_progress(self, candidate, task.id, context),
            share_as=progress_artifact(self.name, candidate, task.id),
        )
        loop.run(train, dev)
        return {
            f"{m}@{key}": v for key, values in loop.label_metrics.items() for m, v in values.items()
        }

    # ------------------------------------------------------------------------- train

    def _train_student(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        arch = _mapping(candidate.architecture, "architecture", ("teacher", "student"))
        teacher_bert = self.teacher(arch.get("teacher"))
        shape = TeacherShape.from_config(teacher_bert.config)
        student = Student.from_dict(arch.get("student"), shape)
        recipe = dict(candidate.recipe)
        init = _mapping(recipe.pop("init", None), "recipe.init", ("supernet",))
        costs = _mapping(recipe.pop("student", None), "recipe.student", ("cost_seq_len",))
        seq_len = costs.get("cost_seq_len", RANK_DEFAULTS["cost_seq_len"])
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
            raise CandidateError(f"recipe.student.cost_seq_len must be > 0, got {seq_len!r}")
        supernet = self._load_supernet(init.get("supernet"), teacher_bert, context)
        try:
            self._init_from = extract(supernet, student)
        except ValueError as e:
            raise CandidateError(str(e)) from e
        bert = Candidate(
            space="bert",
            architecture={
                "num_hidden_layers": student.layers,
                "hidden_size": student.hidden,
                "num_attention_heads": student.heads,
                "intermediate_size": student.intermediate,
            },
            recipe=recipe,
            data={
                k: v
                for k, v in candidate.data.items()
                if k not in ("distill_text", "distill_selection")
            },
        )
        try:
            result = super().train(bert, context)
        finally:
            self._init_from = None
        info = {**result.info, "student": student.key()}
        if init.get("supernet"):
            info["init_supernet"] = init["supernet"]
        metrics = trained_student_costs(result.metrics, shape, student, seq_len)
        return dataclasses.replace(result, metrics=metrics, info=info)

    def training_hooks(
        self,
        candidate: Candidate,
        task: GlueTask,
        device: torch.device | None = None,
        context: TrainContext | None = None,
    ) -> TrainingHooks:
        """The bert trainer's hooks, starting from the extracted student when there is one."""
        hooks = super().training_hooks(candidate, task, device, context)
        source = self._init_from
        if source is None:
            return hooks

        def init(model: torch.nn.Module) -> None:
            init_student_from_teacher(model, source.to(next(model.parameters()).device))  # type: ignore[arg-type]

        return dataclasses.replace(hooks, init_fn=init)


def _move(model: torch.nn.Module, device: torch.device) -> None:
    """Moves ``model`` in place (transformers' typing of ``to`` confuses mypy)."""
    model.to(device)


def _mapping(value: Any, field: str, known: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CandidateError(f"{field} must be a mapping, got {value!r}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise CandidateError(f"{field}: unknown fields {unknown} (known: {sorted(known)})")
    return dict(value)
