"""Tables of measured architectures for ``archsearch replay``: one reader per format.

A reader turns a source (a file, or an Optuna storage URL) into a :class:`ReplayTable`: rows of
(architecture, score), the direction that is better, and the design space a loop searches
(evaluating a candidate means reading its row's score). Formats (``TABLE_READERS``):

* ``flexibert``: FlexiBERT's ``dataset_*.json`` (``model_dicts`` and per-task ``accuracies``);
  option ``task`` (default ``sst2``). The space is ``flexibert-small`` restricted to the rows
  scored on the task (its per-layer parameters, mapped to the nearest row).
* ``nas-tables``: ``{"metric", "direction", "architectures": [{"id", "arch", <scores>}]}``;
  options ``metric`` (default: the file's) and ``direction`` (default: the file's; needed
  for another metric, or a file that says none). A list longer than the row's layer count
  (a field ``n_layer`` or ``*_n_layer``) is cut to it, and a ``*layer_indices`` field equal to
  0..n-1 is dropped: HW-GPT-Bench keeps 12 slots and uses only the first ``sample_n_layer``.
* ``csv``: a header line, one row per architecture; option ``score`` (default ``score``) names
  the score column, every other column is a parameter (numbers parsed, an empty cell absent);
  option ``direction`` (default ``maximize``).
* ``optuna`` (``_study_table.py``): the COMPLETE trials of an existing study; the source is
  its storage URL, option
  ``study`` its name; parameters are the trials' parameters, the score their first value (option
  ``objective``: another index), the direction the study's.

Every format but ``flexibert`` searches a :class:`~archsearch.spaces._row_table.RowTableSpace`;
their option ``padded`` (``true``/``false``, default false) is its ``padded``.
Rows whose architecture repeats keep the first score (``ReplayTable.repeated`` counts the rest).
"""

from __future__ import annotations

import abc
import csv
import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from archsearch.spaces._errors import SpecError
from archsearch.spaces._files import MAX_TABLE_BYTES, read_text
from archsearch.spaces._registry import Registry
from archsearch.spaces._replay_table import DIRECTIONS, ReplayTable
from archsearch.spaces._row_table import RowTableSpace, row_key


class TableReader(abc.ABC):
    """Reads one table format (see the module docstring)."""

    #: Options ``read`` accepts, with their meaning (for error messages).
    options: ClassVar[Mapping[str, str]] = {}

    @abc.abstractmethod
    def read(self, source: str, **options: Any) -> ReplayTable:
        """The table at ``source``; SpecError (field ``table`` or ``table_options.NAME``)
        naming the problem when it cannot be read."""

    def check_options(self, fmt: str, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(f"{k} ({v})" for k, v in self.options.items()) or "none"
            raise SpecError(
                f"table_options.{unknown[0]}",
                f"not an option of the {fmt} format",
                f"known: {known}",
            )
        if "padded" in options:
            _padded(options)  # a bad value is refused before the source is read


#: Every table format by name.
TABLE_READERS: Registry[type[TableReader]] = Registry(
    "table format", "format", plugins="archsearch.table_formats"
)


def _read_json(path: str) -> Any:
    text = read_text(path, "table", MAX_TABLE_BYTES, "pass the path of a table")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise SpecError("table", f"{path} is not a JSON table: {e}") from e


def _direction(value: Any, field: str) -> str:
    if value not in DIRECTIONS:
        raise SpecError(field, f"must be maximize or minimize, got {value!r}")
    return str(value)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _check_scalar_arch(arch: Any, where: str) -> dict[str, Any]:
    """A row's architecture: a non-empty object of JSON scalars or lists of scalars."""
    if not isinstance(arch, dict) or not arch:
        raise SpecError("table", f"{where} is not an architecture (a non-empty JSON object)")
    for k, v in arch.items():
        items = v if isinstance(v, list) else [v]
        if any(isinstance(x, float) and not math.isfinite(x) for x in items):
            raise SpecError("table", f"{where}: field {k!r} holds {v!r}, not a finite number")
        if not all(x is None or isinstance(x, bool | int | float | str) for x in items):
            raise SpecError(
                "table", f"{where}: field {k!r} must be a number, string or list of them"
            )
    return dict(arch)


#: The reader option of every ``RowTableSpace`` format (see ``RowTableSpace``'s ``padded``).
PADDED_OPTION = {
    "padded": "true: every trial suggests every layer's parameters, a shorter structure "
    "ignoring the rest (for samplers that model only the parameters all trials share)"
}


def _padded(options: Mapping[str, Any]) -> bool:
    value = options.get("padded", False)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise SpecError("table_options.padded", f"must be true or false, got {value!r}")
    return value


def _rows_table(
    source: str,
    rows: list[tuple[dict[str, Any], float]],
    direction: str,
    metric: str,
    padded: bool = False,
    unscored: int = 0,
    derived: int = 0,
) -> ReplayTable:
    """A table of generic rows (the first of repeated architectures kept); ``unscored`` counts
    the rows the reader left out for want of a score."""
    if not rows:
        raise SpecError("table", f"{source} has no row with a score for {metric}")
    kept: dict[str, tuple[dict[str, Any], float]] = {}
    conflicting = 0
    for arch, score in rows:
        first = kept.setdefault(row_key(arch), (arch, score))
        conflicting += first[1] != score
    archs = [a for a, _ in kept.values()]
    return ReplayTable(
        source=source,
        architectures=archs,
        scores=[s for _, s in kept.values()],
        direction=direction,
        space=RowTableSpace(archs, label=source, padded=padded),
        metric=metric,
        repeated=len(rows) - len(kept),
        conflicting=conflicting,
        unscored=unscored,
        derived=derived,
    )


@TABLE_READERS.register("flexibert")
class FlexiBertReader(TableReader):
    """FlexiBERT's ``dataset_*.json`` over the ``flexibert-small`` space."""

    options: ClassVar[Mapping[str, str]] = {
        "task": "GLUE task id whose scores are read, default sst2"
    }

    def read(self, source: str, **options: Any) -> ReplayTable:
        from archsearch.spaces._flexibert_small import FlexiBertSmallSpace

        self.check_options("flexibert", options)
        task = options.get("task", "sst2")
        try:
            space = FlexiBertSmallSpace(table=source, task=task)
        except SpecError as e:
            field = "table_options.task" if e.field.endswith("task") else "table"
            raise SpecError(field, e.problem, e.fix) from e
        assert space.members is not None
        from archsearch.spaces._table import load_table

        table = load_table(source)
        archs = list(space.members.values())
        scores = [float(table.score(a, task) or 0.0) for a in archs]
        return ReplayTable(
            source,
            archs,
            scores,
            "maximize",
            space,
            metric=task,
            repeated=table.repeated.get(table.table_task(task), 0),
            conflicting=table.conflicting.get(table.table_task(task), 0),
        )


def _normalise_layers(arch: dict[str, Any]) -> dict[str, Any]:
    """Lists cut to the layer count, a ``*layer_indices`` of 0..n-1 dropped (module docstring)."""
    counts = [v for k, v in arch.items() if k == "n_layer" or k.endswith("_n_layer")]
    if len(counts) != 1 or isinstance(counts[0], bool) or not isinstance(counts[0], int):
        return arch
    n = counts[0]
    out = {}
    for k, v in arch.items():
        if k.endswith("layer_indices") and v == list(range(n)):
            continue
        out[k] = v[:n] if isinstance(v, list) and len(v) > n else v
    return out


@TABLE_READERS.register("nas-tables")
class NasTablesReader(TableReader):
    """The ``nas-tables`` JSON format (``{"metric", "direction", "architectures"}``)."""

    options: ClassVar[Mapping[str, str]] = {
        "metric": "score field of each row, default the file's metric",
        "direction": "maximize or minimize, which scores are better; default the file's "
        "(needed for a metric other than the file's)",
        **PADDED_OPTION,
    }

    def read(self, source: str, **options: Any) -> ReplayTable:
        self.check_options("nas-tables", options)
        raw = _read_json(source)
        if not isinstance(raw, dict) or not isinstance(raw.get("architectures"), list):
            raise SpecError(
                "table", f"{source} lacks an 'architectures' list", "is it a nas-tables file?"
            )
        metric = options.get("metric", raw.get("metric"))
        if not isinstance(metric, str) or not metric:
            raise SpecError("table_options.metric", f"{source} names no metric", "pass one")
        own = raw.get("metric")
        if "direction" in options:
            direction = _direction(options["direction"], "table_options.direction")
        elif own is not None and metric != own:  # the file's direction is its own metric's
            raise SpecError(
                "table_options.direction",
                f"metric {metric!r} is not {source}'s own ({own!r}, "
                f"{raw.get('direction', 'no direction')}): which way is better is not known",
                "pass direction=maximize or direction=minimize",
            )
        elif "direction" not in raw:
            raise SpecError(
                "table_options.direction",
                f"{source} says no direction for its metric {metric!r}",
                "pass direction=maximize or direction=minimize",
            )
        else:
            direction = _direction(raw["direction"], "table")
        rows = []
        for i, entry in enumerate(raw["architectures"]):
            if not isinstance(entry, dict):
                raise SpecError("table", f"{source}: architectures[{i}] is not an object")
            arch = _check_scalar_arch(entry.get("arch"), f"{source}: architectures[{i}].arch")
            score = _finite(entry.get(metric))
            if score is not None:
                rows.append((_normalise_layers(arch), score))
        unscored = len(raw["architectures"]) - len(rows)
        return _rows_table(source, rows, direction, metric, _padded(options), unscored)


def _cell(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


@TABLE_READERS.register("csv")
class CsvReader(TableReader):
    """A CSV of parameters and a score column."""

    options: ClassVar[Mapping[str, str]] = {
        "score": "the score column, default score",
        "direction": "maximize (default) or minimize",
        **PADDED_OPTION,
    }

    def read(self, source: str, **options: Any) -> ReplayTable:
        self.check_options("csv", options)
        column = options.get("score", "score")
        direction = _direction(options.get("direction", "maximize"), "table_options.direction")
        try:
            with open(source, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                lines = list(reader)
                header = list(reader.fieldnames or [])
        except FileNotFoundError as e:
            raise SpecError("table", f"file {source} not found", "pass the path of a CSV") from e
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SpecError("table", f"cannot read {source} as CSV: {e}") from e
        if column not in header:
            found = ", ".join(header) or "an empty first line"
            other = len(header) == 1 and any(c in header[0] for c in ";\t|")
            hint = "; is it comma-separated?" if other else ""
            raise SpecError(
                "table_options.score", f"{source} has no column {column!r} ({found}){hint}"
            )
        if not lines:
            raise SpecError("table", f"{source} has a header and no rows", "add the rows")
        rows = []
        for n, line in enumerate(lines, start=2):
            if None in line:
                raise SpecError("table", f"{source} line {n} has more cells than the header")
            if None in line.values():
                cells = sum(v is not None for v in line.values())
                raise SpecError(
                    "table", f"{source} line {n} has {cells} cells, the header {len(header)}"
                )
            score = _finite(_cell(line[column] or ""))
            if score is None:
                raise SpecError(
                    "table",
                    f"{source} line {n}: {column} {line[column]!r} is not a number",
                    "give it a score, or leave the row out",
                )
            arch = {k: _cell(v) for k, v in line.items() if k != column and v not in ("", None)}
            for k, v in arch.items():
                if isinstance(v, float) and not math.isfinite(v):
                    raise SpecError(
                        "table",
                        f"{source} line {n}: parameter {k} {line[k]!r} is not a finite number",
                        "give it a number, or leave the cell empty",
                    )
            if not arch:
                raise SpecError("table", f"{source} line {n} has no parameter besides the score")
            rows.append((arch, score))
        return _rows_table(source, rows, direction, column, _padded(options))


def guess_format(source: str) -> str:
    """The format of ``source`` when the user does not name one: a storage URL is a study, a
    ``.csv`` file a CSV, a JSON file FlexiBERT's when it has ``model_dicts``, else nas-tables."""
    if "://" in source:
        return "optuna"
    if source.lower().endswith(".csv"):
        return "csv"
    raw = _read_json(source)
    return "flexibert" if isinstance(raw, dict) and "model_dicts" in raw else "nas-tables"


def read_table(source: str, fmt: str | None = None, **options: Any) -> ReplayTable:
    """Reads ``source`` with the reader of ``fmt`` (guessed when None).

    Raises:
        SpecError: Unknown format (the known ones listed), bad options, or a source the
            format cannot read (the message names the problem).
    """
    reader = TABLE_READERS[fmt if fmt is not None else guess_format(source)]()
    return reader.read(source, **options)


# The ``optuna`` format registers itself where it is defined (it reads a storage, not a file).
from archsearch.spaces import _study_table as _study_table  # noqa: E402
