"""Everything a worker runs: trainers, GLUE data and metrics, the worker loop.

Imports only ``archsearch.spaces``, the generated stubs and the client, never the search stack.
"""

from archsearch.worker._glue import (
    GLUE_TASKS,
    GlueExample,
    GlueTask,
    load_split,
    resolve_glue_dir,
    take_subset,
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
    "GLUE_TASKS",
    "CandidateError",
    "GlueExample",
    "GlueTask",
    "TrainContext",
    "TrainResult",
    "Trainer",
    "TrialStopped",
    "compute_metrics",
    "load_split",
    "primary_metric",
    "resolve_glue_dir",
    "take_subset",
]
