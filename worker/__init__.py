"""Everything a worker runs: trainers, GLUE data and metrics, the worker loop.

Imports only ``archsearch.spaces``, the generated stubs and the client, never the search stack.
Modules that need torch (``_bert_trainer``, ``_teacher``, ``_extract``, ``_distill``,
``_cost``) are imported where used, so importing this package stays light.
"""

from archsearch.worker._aggregate import (
    AGGREGATES,
    borda_ranks,
    compute_aggregate,
    per_task_primary,
)
from archsearch.worker._glue import (
    GLUE_TASKS,
    CustomTask,
    GlueExample,
    GlueTask,
    HubUnavailableError,
    encode_examples,
    load_examples,
    load_split,
    resolve_glue_dir,
    take_subset,
    task_info,
    validate_custom_task,
)
from archsearch.worker._metrics import compute_metrics, primary_metric
from archsearch.worker._trainer import (
    CandidateError,
    TrainContext,
    Trainer,
    TrainResult,
    TrialStopped,
)

__all__ = [
    "AGGREGATES",
    "GLUE_TASKS",
    "CandidateError",
    "CustomTask",
    "GlueExample",
    "GlueTask",
    "HubUnavailableError",
    "TrainContext",
    "TrainResult",
    "Trainer",
    "TrialStopped",
    "borda_ranks",
    "compute_aggregate",
    "compute_metrics",
    "encode_examples",
    "load_examples",
    "load_split",
    "per_task_primary",
    "primary_metric",
    "resolve_glue_dir",
    "take_subset",
    "task_info",
    "validate_custom_task",
]
