"""Everything a worker runs: trainers, task data and metrics, the worker loop.

Imports only ``archsearch.spaces``, the generated stubs and the client, never the search stack.
What the server also needs (the GLUE task catalogue, custom task declarations, aggregates) lives
in ``archsearch.spaces``. Modules that need torch (``_bert_trainer``, ``_teacher``, ``_extract``,
``_distill``, ``_cost``) are imported where used, so importing this package stays light;
:class:`BertTrainer` is loaded on first access.

The data pipeline of a trainer, one stage per module:

* :class:`DataSource` (``_sources``): where a task's examples come from: a ``glue_data`` folder
  (``_glue_dir``), a hub dataset (``_hub``), a user's own files (``_custom_files``).
* :class:`DataSelector` (``_selectors``): which of them to train on; :class:`DsirSelector`
  (``_dsir_selector``) by importance resampling (``_dsir``, numpy only: also
  :func:`select_texts`, k texts from any pool towards a target) over named text sources
  (``_text_pools``).
* :func:`encode_examples` (``_encoding``): tokenised, cached on disk.

The training pipeline of the bert trainer (``_bert_trainer`` orchestrates it; torch modules,
imported where used): ``_plan`` (the candidate parsed once) → ``_split_cache`` (source,
selector, tokeniser) → ``_models`` (:class:`ModelFactory` per space) → ``_student_hooks``
(teacher extraction, distillation, FlexiBERT fidelities) → ``_loop`` (the public
``TrainingLoop`` and its ``TrainingHooks``: init, loss, per-epoch data schedule,
evaluate-many) → ``_evaluate`` (``Evaluator``, ``CostMeter``) → ``_checkpoints``.

Trainers register themselves by name where they live (:func:`register_trainer`);
:func:`create_trainer` builds one from a worker's options.

Writing a trainer
-----------------
Subclass :class:`Trainer` (``name``, ``info``: a :class:`~archsearch.spaces.TrainerInfo`,
``train``), decorate it with :func:`register_trainer`, and publish its ``info`` as an
``archsearch.trainers`` entry point of your package: the server then knows what it trains and
reports, and ``archsearch worker --trainer NAME`` imports the module.

A trainer is given a :class:`~archsearch.spaces.Candidate` and a :class:`TrainContext`. It trains
and evaluates, calling ``context.report(step, value)`` for intermediate values of the study's
intermediate metric (``context.intermediate_metric``; the server's pruner reads them; a job of
another kind than ``train``, such as a supernet, reports its progress, which the server keeps as
the trial's ``progress.step`` and ``progress.value`` attributes, never pruned) and
``context.check()`` regularly (each epoch, or every few steps). Both raise
:class:`TrialStopped` when the trial must end: pruned (:class:`TrialPruned`), cancelled by
``stop --cancel-running`` (:class:`TrialCancelled`), the lease lost, or the worker stopping
(SIGTERM: the trial is handed back and retried elsewhere). Let it propagate; a trainer that
never calls either cannot be stopped, pruned or cancelled (the worker warns when a trainer has
ignored a stop for longer than its stop grace). It returns a :class:`TrainResult` whose
``metrics`` hold every raw metric it measured (task metrics and cost metrics) and whose
``info`` is free text about the run.

Contract:
    * ``train`` is called from the worker's main thread; heartbeats run on another thread.
    * A failure of the candidate itself (invalid architecture for this trainer, diverged loss)
      raises :class:`CandidateError`: the trial fails with its message and is not retried. Any
      other exception is a failure of the machine: the candidate is retried elsewhere (up to
      the study's ``max_retries``).
    * ``report`` takes a whole step >= 0 and a finite number; the result's metrics must be
      finite numbers and include the study's objectives (``context.objective_metrics``). A
      mistake there fails the trial at once with the reason, not retried.
    * ``info`` values are text (others are stored as ``str(value)``).
    * ``recipe.max_steps`` is the step count a pruned trial's note shows ("pruned at step S of
      M"): report steps in the same unit.
    * ``context.upload(path, name)`` stores a file on the trial (``archsearch fetch STUDY N
      --artifact NAME`` downloads it); ``context.has_server`` says whether there is a server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archsearch.worker._custom_files import load_custom_split, resolve_custom_task
from archsearch.worker._dsir import DsirCache, dsir_select, select_texts
from archsearch.worker._dsir_selector import DsirSelector
from archsearch.worker._encoding import EncodedExamples, encode_examples
from archsearch.worker._example import GlueExample
from archsearch.worker._glue_dir import GLUE_DIR_ENV, load_split, resolve_glue_dir, split_path
from archsearch.worker._hub import DEFAULT_HUB_DATASET, HubUnavailableError, load_hub_split
from archsearch.worker._metrics import compute_metrics, primary_metric
from archsearch.worker._registry import (
    TRAINERS,
    create_trainer,
    register_trainer,
    trainer_class,
    trainer_names,
)
from archsearch.worker._runner import Worker
from archsearch.worker._selectors import (
    SELECTORS,
    DataSelector,
    IdentitySelector,
    RandomSelector,
    SelectionPlan,
    take_subset,
)
from archsearch.worker._sources import (
    SOURCES,
    CustomSource,
    DataSource,
    GlueDirSource,
    HubSource,
    choose_source,
    load_examples,
)
from archsearch.worker._task_info import (
    Task,
    TaskInfo,
    TaskRef,
    resolve_task,
    result_metric_names,
    task_info,
)
from archsearch.worker._trainer import (
    CandidateError,
    TrainContext,
    Trainer,
    TrainResult,
    TrialPruned,
    TrialStopped,
)

if TYPE_CHECKING:
    from archsearch.worker._autodistil_trainer import AutodistilTrainer
    from archsearch.worker._bert_trainer import BertTrainer
    from archsearch.worker._flexibert_model import FlexiBertForSequenceClassification
    from archsearch.worker._lora_trainer import LoraTrainer
    from archsearch.worker._table_trainer import TableTrainer

# Loaded on first access: BertTrainer imports torch and transformers.
_LAZY = {
    "AutodistilTrainer": "archsearch.worker._autodistil_trainer",
    "BertTrainer": "archsearch.worker._bert_trainer",
    "FlexiBertForSequenceClassification": "archsearch.worker._flexibert_model",
    "LoraTrainer": "archsearch.worker._lora_trainer",
    "TableTrainer": "archsearch.worker._table_trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_HUB_DATASET",
    "GLUE_DIR_ENV",
    "SELECTORS",
    "SOURCES",
    "TRAINERS",
    "AutodistilTrainer",
    "BertTrainer",
    "CandidateError",
    "CustomSource",
    "DataSelector",
    "DataSource",
    "DsirCache",
    "DsirSelector",
    "EncodedExamples",
    "FlexiBertForSequenceClassification",
    "GlueDirSource",
    "GlueExample",
    "HubSource",
    "HubUnavailableError",
    "IdentitySelector",
    "LoraTrainer",
    "RandomSelector",
    "SelectionPlan",
    "TableTrainer",
    "Task",
    "TaskInfo",
    "TaskRef",
    "TrainContext",
    "TrainResult",
    "Trainer",
    "TrialPruned",
    "TrialStopped",
    "Worker",
    "choose_source",
    "compute_metrics",
    "create_trainer",
    "dsir_select",
    "encode_examples",
    "load_custom_split",
    "load_examples",
    "load_hub_split",
    "load_split",
    "primary_metric",
    "register_trainer",
    "resolve_custom_task",
    "resolve_glue_dir",
    "resolve_task",
    "result_metric_names",
    "select_texts",
    "split_path",
    "take_subset",
    "task_info",
    "trainer_class",
    "trainer_names",
]
