"""The searchable data choices of a study: its data becomes a search dimension.

A spec's ``data_space`` lists, per data field, the values the search chooses among::

    "data_space": {
        "selection": [{"method": "none"}, {"method": "dsir", "k": 2000},
                      {"method": "random", "size": 2000}],
        "train_subset": [1000, 4000]
    }

Every candidate then carries an architecture, a recipe and one value per listed field, chosen
together by the loop: Optuna's samplers through one categorical parameter per field
(``data.selection``, whose choices are readable labels such as ``dsir k=2000``, so the
dashboard and ``optuna.importance`` show them like the architecture's), the library loops
(BOSHNAS, the embedding GP) through one-hot features appended to each library row's.

Any data field may be searched except those that define what a score means: the task(s),
the evaluation slice and the data source (:data:`FIXED_DATA_FIELDS`); so ``data.curriculum``
and later fields plug in as more dimensions without a change here. Each value is checked by
:func:`~archsearch.spaces.validate_data` exactly as if the spec's ``data`` had set it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.spaces._candidate import DEFAULT_DATA, validate_data
from archsearch.spaces._errors import SpecError
from archsearch.spaces._selection_checks import check_dsir_options, check_pretrain_selection

if TYPE_CHECKING:
    import optuna

#: Data fields a study cannot search: they decide what its scores measure.
FIXED_DATA_FIELDS = (
    "task",
    "tasks",
    "custom_task",
    "source",
    "hub_dataset",
    "eval_subset",
    "eval_seed",
)
#: Prefix of the Optuna parameter of each searched field (``data.selection``).
PARAM_PREFIX = "data."
#: Most values one field may list (a categorical parameter; the product is the loops' grid).
MAX_CHOICES = 64
_UNSET = object()


def choice_label(value: Any) -> str:
    """A readable label of one value: ``dsir k=2000 laplace=1`` for an object with a
    ``method``, ``k=v`` pairs in key order for other objects, the value itself otherwise."""
    if isinstance(value, dict):
        parts = [str(value["method"])] if "method" in value else []
        parts += [f"{k}={_text(v)}" for k, v in sorted(value.items()) if k != "method"]
        return " ".join(parts) or "{}"
    return _text(value)


def _meaning(field: str, value: Any) -> str:
    """``value`` with the defaults its method fills in (a DSIR selection's ``ngrams`` 2, ...),
    as comparable text: two values with the same meaning train on the same data."""
    if isinstance(value, dict) and value.get("method") == "dsir" and field == "selection":
        value = {"method": "dsir", **check_dsir_options(value, f"data.{field}")}
    elif isinstance(value, dict) and field in ("pretrain_selection", "distill_selection"):
        value = check_pretrain_selection(value, f"data.{field}")
    return json.dumps(value, sort_keys=True, default=str)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class DataSpace:
    """The data fields a study searches and the values each may take.

    Build it with :meth:`from_spec` (which checks every value); ``fields`` keep the spec's
    order, and a candidate's data choice is one value per field.

    Args:
        choices: Field -> its checked values (non-empty, distinct labels).
    """

    def __init__(self, choices: Mapping[str, list[Any]]) -> None:
        self.choices = {k: list(v) for k, v in choices.items()}
        self.labels = {k: [choice_label(v) for v in vs] for k, vs in self.choices.items()}

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.choices)

    @staticmethod
    def param(field: str) -> str:
        """The Optuna parameter of ``field`` (``data.selection``)."""
        return PARAM_PREFIX + field

    @classmethod
    def from_spec(cls, raw: Any, data: Mapping[str, Any], strict: bool = True) -> DataSpace | None:
        """The data space a spec's ``data_space`` declares (None when it declares none).

        Args:
            raw: The spec's ``data_space`` value.
            data: The spec's raw ``data`` object: a field searched here must not be set
                there too.
            strict: Also refuse two values that mean the same once their defaults are
                filled in (off for a stored study's spec, launched before that check).

        Raises:
            SpecError: Not an object of non-empty lists, a fixed or unknown field, a value
                ``validate_data`` refuses, two values with the same label, or a field that
                ``data`` sets as well; the field is named (``data_space.selection[1].k``).
        """
        if raw is None or raw == {}:
            return None
        if not isinstance(raw, dict):
            raise SpecError(
                "data_space",
                f"must be a JSON object of lists, got {type(raw).__name__}",
                'e.g. {"selection": [{"method": "none"}, {"method": "dsir", "k": 1000}]}',
            )
        base = {k: v for k, v in data.items() if k not in raw}
        checked: dict[str, list[Any]] = {}
        for field, values in raw.items():
            where = f"data_space.{field}"
            if field in FIXED_DATA_FIELDS:
                raise SpecError(
                    where,
                    "cannot be searched: it decides what the scores measure",
                    f"search other data fields; fixed: {', '.join(FIXED_DATA_FIELDS)}",
                )
            # a stored spec's data holds the defaults (train_subset 0): not a conflict
            if field in data and data[field] != DEFAULT_DATA.get(field, _UNSET):
                raise SpecError(
                    f"data.{field}", f"is searched by {where}", f"drop it from data or from {where}"
                )
            if not isinstance(values, list) or not values:
                raise SpecError(where, f"must be a non-empty list of values, got {values!r}")
            if len(values) > MAX_CHOICES:
                raise SpecError(where, f"lists {len(values)} values", f"at most {MAX_CHOICES}")
            checked[field] = [
                _check_value(base, field, v, f"{where}[{i}]") for i, v in enumerate(values)
            ]
            labels = [choice_label(v) for v in checked[field]]
            for i, label in enumerate(labels):
                if labels.index(label) != i:
                    raise SpecError(
                        f"{where}[{i}]",
                        f"repeats {where}[{labels.index(label)}] ({label!r})",
                        "list each value once",
                    )
            meanings = [_meaning(field, v) for v in checked[field]] if strict else []
            for i, meaning in enumerate(meanings):
                if (first := meanings.index(meaning)) != i:
                    raise SpecError(
                        f"{where}[{i}]",
                        f"means the same as {where}[{first}] once the defaults are filled in "
                        f"({labels[i]!r} and {labels[first]!r})",
                        "list each value once; leave out settings equal to their default",
                    )
        return cls(checked)

    def to_dict(self) -> dict[str, list[Any]]:
        """The checked values per field (what the stored spec keeps)."""
        return {k: list(v) for k, v in self.choices.items()}

    # -- Optuna parameters -------------------------------------------------------------------

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Chooses one value per field through ``trial.suggest_categorical`` on its labels;
        returns the candidate's data keys."""
        out = {}
        for field, labels in self.labels.items():
            label = trial.suggest_categorical(self.param(field), labels)
            out[field] = self.choices[field][labels.index(label)]
        return out

    def to_params(self, data: Mapping[str, Any]) -> dict[str, str]:
        """The parameters ``suggest`` would set for a candidate's ``data``.

        Raises:
            KeyError: ``data`` lacks a field, or holds a value the field does not list.
        """
        return {self.param(f): self.labels[f][self._position(f, data)] for f in self.fields}

    def from_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The data keys of a trial's parameters.

        Raises:
            KeyError: A field's parameter is missing or holds an unknown label.
        """
        out = {}
        for field, labels in self.labels.items():
            label = params[self.param(field)]
            if label not in labels:
                raise KeyError(f"{self.param(field)}={label!r} is not one of {labels}")
            out[field] = self.choices[field][labels.index(label)]
        return out

    def describe(self, data: Mapping[str, Any]) -> str:
        """``selection=dsir k=2000, train_subset=1000`` for a candidate's ``data``."""
        return ", ".join(f"{f}={choice_label(data.get(f))}" for f in self.fields)

    # -- the grid of combinations (library loops, benchmarks) -------------------------------

    def __len__(self) -> int:
        """Number of combinations (one value per field)."""
        n = 1
        for values in self.choices.values():
            n *= len(values)
        return n

    def combos(self) -> Iterator[dict[str, Any]]:
        """Every combination as data keys, in index order (the last field varies fastest)."""
        for values in itertools.product(*self.choices.values()):
            yield dict(zip(self.fields, values, strict=True))

    def index(self, data: Mapping[str, Any]) -> int:
        """The combination index of a candidate's ``data`` (see :meth:`combos`).

        Raises:
            KeyError: ``data`` holds a value a field does not list.
        """
        i = 0
        for field, values in self.choices.items():
            i = i * len(values) + self._position(field, data)
        return i

    def one_hot(self) -> np.ndarray:
        """One row per combination: the one-hot codes of its value of each field."""
        rows = []
        for combo in itertools.product(*(range(len(v)) for v in self.choices.values())):
            row = np.zeros(sum(len(v) for v in self.choices.values()))
            offset = 0
            for pos, values in zip(combo, self.choices.values(), strict=True):
                row[offset + pos] = 1.0
                offset += len(values)
            rows.append(row)
        return np.asarray(rows)

    def _position(self, field: str, data: Mapping[str, Any]) -> int:
        value = data.get(field)
        for i, v in enumerate(self.choices[field]):
            if v == value:
                return i
        raise KeyError(f"data.{field}={value!r} is not a value of data_space.{field}")


def _check_value(base: Mapping[str, Any], field: str, value: Any, where: str) -> Any:
    """``value`` as ``validate_data`` normalises it, errors renamed to ``where``."""
    try:
        return validate_data({**base, field: value})[field]
    except SpecError as e:
        prefix = f"data.{field}"
        if e.field == prefix or e.field.startswith(prefix + "."):
            raise SpecError(where + e.field[len(prefix) :], e.problem, e.fix) from None
        raise
