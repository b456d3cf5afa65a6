"""The bert trainer's metadata, torch-free: what a server reads before any worker connects.

:class:`~archsearch.worker.BertTrainer` declares it as its ``info`` (its own module imports
torch); pyproject.toml publishes it as the ``bert`` entry point of ``archsearch.trainers``.
"""

from __future__ import annotations

from archsearch.spaces import DATA_FIELDS, DISTILL_DATA_FIELDS, TrainerInfo

#: Cost metrics a task of a multi-task trial also reports unprefixed (the largest of the
#: tasks' values, ``train_seconds`` summed): ``_result_metrics.AGGREGATED_COST_METRICS``.
_AGGREGATED = (
    "params",
    "params_no_embeddings",
    "flops",
    "latency_ms_b1",
    "latency_ms_b32",
    "peak_train_memory_mb",
    "train_seconds",
)

BERT_TRAINER_INFO = TrainerInfo(
    name="bert",
    description="trains BERT and FlexiBERT students on GLUE or a custom task, with cost metrics",
    spaces=("bert", "flexibert", "flexibert-small"),
    task_metrics="glue",
    # _result_metrics.COST_METRICS, then what the FlexiBERT fidelity hooks add
    # (_flexibert_pretrain); tests check both lists against the trainer's own
    cost_metrics=(
        *_AGGREGATED,
        "eval_samples",
        "pretrain_steps",
        "pretrain_loss",
        "pretrain_seconds",
        "pretrain_cached",
        "transfer_overlap",
        "transferred",
        # data.curriculum (worker/_curriculum.py)
        "curriculum_epochs",
        "curriculum_examples",
        "curriculum_ability",
        "crowd_seconds",
    ),
    multi_task_metrics=_AGGREGATED,
    # every data field but AutoDistil's supernet text
    data_fields=tuple(f for f in DATA_FIELDS if f not in DISTILL_DATA_FIELDS),
    multi_task=True,
)
