"""Readable trial attributes: one user-attribute row per value, for optuna-dashboard.

The machine-readable attributes (``metrics``, ``info``, ``candidate``: JSON objects that the
server, the CLI and clients read back) show in optuna-dashboard as one line of JSON each, cut
off at the page edge. Next to them the server stores each value as its own attribute, which
the dashboard shows as a row of the trial's "User Attributes" table and as a sortable column of
its trial table:

* ``metric.<name>``: each raw metric the worker reported (a number; cost metrics such as
  ``metric.params`` or ``metric.latency_ms`` included), on completed trials and repeats (an
  AutoDistil student's proxy row has ``proxy.<name>`` instead: ``_student_trials``);
* ``info.<key>``: each provenance entry (a string);
* ``recipe.<key>`` and ``data.<key>``: the candidate's training recipe and data choices
  (numbers, strings and booleans as they are; lists and objects as compact JSON).
* ``row.<param>``: where a table space trained the table row nearest the loop's suggestion
  (``mapped_from``), that row's parameters (the space's ``to_params``), beside the trial's
  parameters, which stay the suggestion the sampler made and learns from.

The rows are a view: nothing reads them back, and the JSON attributes stay the source of truth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

METRIC_PREFIX = "metric."
INFO_PREFIX = "info."
CANDIDATE_PREFIXES = ("recipe.", "data.")
ROW_PREFIX = "row."


def metric_rows(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metric.<name>`` -> the metric's value (a float), one row per raw metric."""
    return {f"{METRIC_PREFIX}{name}": float(value) for name, value in metrics.items()}


def info_rows(info: Mapping[str, str]) -> dict[str, str]:
    """``info.<key>`` -> the provenance entry, one row per key."""
    return {f"{INFO_PREFIX}{key}": str(value) for key, value in info.items()}


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def candidate_rows(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """``recipe.<key>`` and ``data.<key>`` rows of a candidate dict (``Candidate.to_dict``);
    its architecture is already readable as the trial's parameters and ``arch``."""
    rows: dict[str, Any] = {}
    for section in ("recipe", "data"):
        for key, value in (candidate.get(section) or {}).items():
            rows[f"{section}.{key}"] = _scalar(value)
    return rows


def row_rows(params: Mapping[str, Any]) -> dict[str, Any]:
    """``row.<param>`` -> the value, one row per parameter of the table row a trial trained."""
    return {f"{ROW_PREFIX}{name}": _scalar(value) for name, value in params.items()}


def is_candidate_row(key: str) -> bool:
    """Whether a user attribute is one of :func:`candidate_rows` or :func:`row_rows` (a retry,
    which trains the same candidate, copies them)."""
    return key.startswith((*CANDIDATE_PREFIXES, ROW_PREFIX))


def completion_attrs(metrics: Mapping[str, float], info: Mapping[str, str]) -> dict[str, Any]:
    """The user attributes a completion stores: the JSON ``metrics`` and ``info`` (when any)
    for machines, and their rows for the dashboard."""
    user: dict[str, Any] = {"metrics": dict(metrics), **metric_rows(metrics)}
    if info:
        user["info"] = dict(info)
        user.update(info_rows(info))
    return user
