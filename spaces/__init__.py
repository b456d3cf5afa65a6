"""Design spaces: typed candidates, validation, sampling and Optuna parameters.

Also the knowledge the server and the workers share, without torch: the GLUE task catalogue
(:data:`GLUE_TASKS`), a user's task declaration (:class:`CustomTask`) and the aggregates
computed from a trial's raw metrics (:func:`compute_aggregate`).
"""

from __future__ import annotations

import inspect
from typing import Any

from archsearch.spaces._aggregate import (
    AGGREGATES,
    autodistil_average,
    borda_ranks,
    compute_aggregate,
    flexibert_average,
    glue_average,
    per_task_primary,
    task_scores,
)
from archsearch.spaces._autodistil import AutoDistilSpace
from archsearch.spaces._base import SPACES, DesignSpace
from archsearch.spaces._bert import BertSpace, bert_parameter_count
from archsearch.spaces._candidate import (
    CANDIDATE_VERSION,
    DATA_FIELDS,
    DEFAULT_DATA,
    DISTILL_DATA_FIELDS,
    PRETRAIN_SELECTION_METHODS,
    SELECTION_METHODS,
    Candidate,
    data_tasks,
    validate_data,
    validate_selection,
)
from archsearch.spaces._curriculum_spec import curriculum_summary, validate_curriculum
from archsearch.spaces._custom_task import (
    CUSTOM_FORMATS,
    CUSTOM_METRICS,
    CustomTask,
    validate_custom_task,
)
from archsearch.spaces._data_space import FIXED_DATA_FIELDS, DataSpace, choice_label
from archsearch.spaces._errors import PluginFailed, SpecError
from archsearch.spaces._flexibert import FlexiBertSpace
from archsearch.spaces._flexibert_overlap import (
    OVERLAP_THRESHOLD,
    check_flexibert_architecture,
    flexibert_parameter_count,
    flexibert_parameter_shapes,
    weight_overlap,
)
from archsearch.spaces._flexibert_small import FlexiBertSmallSpace
from archsearch.spaces._graph import (
    architecture_graph,
    graph_hash,
    graph_image,
    graph_png,
    node_labels,
    ordered_labels,
)
from archsearch.spaces._lora import LoraSpace
from archsearch.spaces._protocols import (
    EnumerableSpace,
    FeatureSpace,
    FlexiBertConvertible,
    GraphImageSpace,
    GraphSpace,
    MutableSpace,
    RawFeatureSpace,
)
from archsearch.spaces._recipe import DEFAULT_RECIPE, validate_recipe
from archsearch.spaces._registry import Registry, UnknownName
from archsearch.spaces._row_table import RowTableSpace
from archsearch.spaces._table import TABLE_METRIC, TABLE_TASK_NAMES, NasTable, load_table
from archsearch.spaces._table_readers import (
    TABLE_READERS,
    ReplayTable,
    TableReader,
    guess_format,
    read_table,
)
from archsearch.spaces._tasks import (
    DEV_LOSS,
    GLUE_TASK_IDS,
    GLUE_TASKS,
    SPLIT_ALIASES,
    GlueTask,
    canonical_split,
    get_task,
    result_metric_names,
)
from archsearch.spaces._trainer_info import TASK_METRIC_RULES, TRAINER_NAME_RE, TrainerInfo


def make_space(name: str, options: dict[str, Any] | None = None) -> DesignSpace:
    """Builds the design space ``name`` with ``options``.

    Whose fault a failure is decides what it says: options the constructor's signature does
    not take are the user's (``space_options``, naming the known ones); a space class that
    leaves abstract methods out, or a constructor that raises anything but a SpecError, is the
    space's (a plugin's): :class:`PluginFailed`, naming the class (every TypeError was blamed on
    the user's options, an abstract method missing included, and anything else reached the
    server as INTERNAL, or stopped it at start-up).

    Raises:
        SpecError: an unknown name, options that are not accepted (or that the space refuses).
        PluginFailed: the space cannot be built whatever the options.
    """
    cls = SPACES[name]  # UnknownName (a SpecError) lists the registered names
    if options is not None and not isinstance(options, dict):
        raise SpecError("space_options", "must be a JSON object")
    where = f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', cls)!s}"
    _check_options(name, cls, options or {})
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise PluginFailed(
            "space",
            f"the {name} space ({where}) cannot be built: it does not implement {missing}",
            "fix the space: a DesignSpace implements every abstract method; or choose another",
        )
    try:
        return cls(**(options or {}))
    except SpecError:
        raise
    except (Exception, SystemExit) as e:  # SystemExit: an argparse-using plugin's
        raise PluginFailed(
            "space",
            f"the {name} space ({where}) failed in its constructor: {type(e).__name__}: {e}",
            "fix the space (the server log has the traceback), or choose another",
        ) from e


def _check_options(name: str, cls: Any, options: dict[str, Any]) -> None:
    """SpecError when the constructor of ``cls`` does not take ``options`` (its signature,
    bound without calling it: a TypeError the constructor raises is not the user's)."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):  # no signature to read: the constructor says
        return
    try:
        sig.bind(**options)
    except TypeError as e:
        known = [p for p in sig.parameters if p not in ("self", "args", "kwargs")]
        unknown = sorted(set(options) - set(known))
        field = f"space_options.{unknown[0]}" if unknown else "space_options"
        raise SpecError(
            field,
            f"not accepted by the {name} space ({e})",
            f"known: {', '.join(known) or 'none'}",
        ) from e


#: The design spaces whose candidates are FlexiBERT models.
FLEXIBERT_SPACES = (FlexiBertSpace.name, FlexiBertSmallSpace.name)

__all__ = [
    "AGGREGATES",
    "CANDIDATE_VERSION",
    "CUSTOM_FORMATS",
    "CUSTOM_METRICS",
    "DATA_FIELDS",
    "DEFAULT_DATA",
    "DEFAULT_RECIPE",
    "DEV_LOSS",
    "DISTILL_DATA_FIELDS",
    "FIXED_DATA_FIELDS",
    "FLEXIBERT_SPACES",
    "GLUE_TASKS",
    "GLUE_TASK_IDS",
    "OVERLAP_THRESHOLD",
    "PRETRAIN_SELECTION_METHODS",
    "SELECTION_METHODS",
    "SPACES",
    "SPLIT_ALIASES",
    "TABLE_METRIC",
    "TABLE_READERS",
    "TABLE_TASK_NAMES",
    "TASK_METRIC_RULES",
    "TRAINER_NAME_RE",
    "AutoDistilSpace",
    "BertSpace",
    "Candidate",
    "CustomTask",
    "DataSpace",
    "DesignSpace",
    "EnumerableSpace",
    "FeatureSpace",
    "FlexiBertConvertible",
    "FlexiBertSmallSpace",
    "FlexiBertSpace",
    "GlueTask",
    "GraphImageSpace",
    "GraphSpace",
    "LoraSpace",
    "MutableSpace",
    "NasTable",
    "PluginFailed",
    "RawFeatureSpace",
    "Registry",
    "ReplayTable",
    "RowTableSpace",
    "SpecError",
    "TableReader",
    "TrainerInfo",
    "UnknownName",
    "architecture_graph",
    "autodistil_average",
    "bert_parameter_count",
    "borda_ranks",
    "canonical_split",
    "check_flexibert_architecture",
    "choice_label",
    "compute_aggregate",
    "curriculum_summary",
    "data_tasks",
    "flexibert_average",
    "flexibert_parameter_count",
    "flexibert_parameter_shapes",
    "get_task",
    "glue_average",
    "graph_hash",
    "graph_image",
    "graph_png",
    "guess_format",
    "load_table",
    "make_space",
    "node_labels",
    "ordered_labels",
    "per_task_primary",
    "read_table",
    "result_metric_names",
    "task_scores",
    "validate_curriculum",
    "validate_custom_task",
    "validate_data",
    "validate_recipe",
    "validate_selection",
    "weight_overlap",
]
