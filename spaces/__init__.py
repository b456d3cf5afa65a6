"""Design spaces: typed candidates, validation, sampling and Optuna parameters."""

from __future__ import annotations

from typing import Any

from archsearch.spaces._base import DesignSpace
from archsearch.spaces._bert import BertSpace, bert_parameter_count
from archsearch.spaces._candidate import (
    CANDIDATE_VERSION,
    DEFAULT_DATA,
    DEFAULT_RECIPE,
    Candidate,
    data_tasks,
    validate_data,
    validate_recipe,
)
from archsearch.spaces._errors import SpecError
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
from archsearch.spaces._table import TABLE_TASK_NAMES, NasTable, load_table

SPACES: dict[str, type[DesignSpace]] = {
    BertSpace.name: BertSpace,
    FlexiBertSmallSpace.name: FlexiBertSmallSpace,
    FlexiBertSpace.name: FlexiBertSpace,
}


def make_space(name: str, options: dict[str, Any] | None = None) -> DesignSpace:
    """Builds the design space ``name`` with ``options``; SpecError for unknown names/options."""
    try:
        cls = SPACES[name]
    except KeyError as e:
        raise SpecError("space", f"unknown space {name!r}", f"one of {', '.join(SPACES)}") from e
    if options is not None and not isinstance(options, dict):
        raise SpecError("space_options", "must be a JSON object")
    return cls(**(options or {}))


__all__ = [
    "CANDIDATE_VERSION",
    "DEFAULT_DATA",
    "DEFAULT_RECIPE",
    "OVERLAP_THRESHOLD",
    "SPACES",
    "TABLE_TASK_NAMES",
    "BertSpace",
    "Candidate",
    "DesignSpace",
    "FlexiBertSmallSpace",
    "FlexiBertSpace",
    "NasTable",
    "SpecError",
    "architecture_graph",
    "bert_parameter_count",
    "check_flexibert_architecture",
    "data_tasks",
    "flexibert_parameter_count",
    "flexibert_parameter_shapes",
    "graph_hash",
    "graph_image",
    "graph_png",
    "load_table",
    "make_space",
    "node_labels",
    "ordered_labels",
    "validate_data",
    "validate_recipe",
    "weight_overlap",
]
