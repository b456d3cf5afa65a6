"""A generic design space over the rows of a table: what ``archsearch replay`` searches when a
table is not a FlexiBERT one (a ``nas-tables`` JSON, a CSV, an existing study's trials).

An architecture is a row's own dict (JSON scalars, or lists of scalars such as per-layer head
counts). The space flattens it into *parameters*: a scalar field is one parameter, a list field
``f`` one parameter per slot (``f.0``, ``f.1``, ...). Rows need not share their parameters (a
2-layer row has fewer slots than a 4-layer one): the set of a row's parameter names is its
*structure*. A parameter whose value is the same within every structure (the layer count) is
*structural*: it is implied by the structure and not suggested.

``suggest`` asks for each choice as a user writing the search by hand would: first the structure
(``structure``, a categorical labelled by the structural values, e.g. ``n_layer=5``; absent when
every row has the same parameters), then each of that structure's other parameters with its own
distribution, shared by every structure that has it: a categorical for non-numbers and for
numbers with at most ``CATEGORICAL_MAX`` distinct values in the table (heads 2|4|8), else an int
or float range from the table's smallest to its largest value.

With ``padded`` (a reader option, ``--table-option padded=true``) every trial suggests every
non-structural parameter of every structure, and those the chosen structure lacks are ignored.
Optuna's samplers that model only the parameters every trial has (``GPSampler``, TPE without
``group``) then model all of them instead of the few shared by every depth; ``to_params`` fills
a row's unused parameters with their smallest (first) value.

The suggestion is then mapped to the *nearest row* of its structure: the smallest sum, over the
parameters, of ``|difference| / range`` (the parameter's largest minus smallest value in the
table) for numbers and of 1 for a different non-number; ties are broken by a hash of the
suggestion, so the mapping is a pure function of the parameters. A mapped suggestion is recorded
in the trial's ``mapped_from`` user attribute, as the FlexiBERT table space does.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.spaces._base import DesignSpace
from archsearch.spaces._errors import SpecError
from archsearch.spaces._protocols import (
    EnumerableSpace,
    FeatureSpace,
    MutableSpace,
    RawFeatureSpace,
)

if TYPE_CHECKING:
    import optuna

#: Numbers with at most this many distinct values in the table are categorical choices.
CATEGORICAL_MAX = 6
#: ``feature_params`` gives a number with more distinct values than this as its quantile bin.
FEATURE_BINS = 8
#: ``neighbours`` of a row that no row differs from in one parameter: this many nearest.
NEIGHBOURS = 8
STRUCTURE = "structure"
MAPPED_FROM_ATTR = "mapped_from"


def row_key(architecture: Mapping[str, Any]) -> str:
    """A canonical string for a row's architecture (sorted-key JSON)."""
    return json.dumps(architecture, sort_keys=True, separators=(",", ":"))


def flatten(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter name -> value: scalars as they are, list ``f`` as ``f.0``, ``f.1``, ..."""
    out: dict[str, Any] = {}
    for name, value in architecture.items():
        if isinstance(value, list):
            out.update({f"{name}.{i}": v for i, v in enumerate(value)})
        else:
            out[name] = value
    return out


def _vkey(value: Any) -> tuple[str, Any]:
    """A hashable key of a scalar that tells ``True`` from ``1`` and ``1`` from ``1.0``."""
    return type(value).__name__, value


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class RowTableSpace(DesignSpace, EnumerableSpace, FeatureSpace, RawFeatureSpace, MutableSpace):
    """The rows of a table as a design space (see the module docstring).

    Args:
        architectures: The rows' architectures (dicts of JSON scalars or lists of scalars),
            distinct; their order is the enumeration's.
        label: A name for messages (the table's file).
        padded: Suggest every structure's parameters in every trial (the module docstring).
    """

    name = "table-rows"

    def __init__(
        self,
        architectures: Sequence[Mapping[str, Any]],
        label: str = "table",
        padded: bool = False,
    ) -> None:
        if not architectures:
            raise SpecError("table", f"{label} has no rows to search")
        self.label = label
        self.padded = padded
        self.rows = [dict(a) for a in architectures]
        self.index = {row_key(a): i for i, a in enumerate(self.rows)}
        if len(self.index) != len(self.rows):
            raise SpecError("table", f"{label} repeats an architecture", "one row per architecture")
        flat = [flatten(a) for a in self.rows]
        names = sorted({n for f in flat for n in f})
        self._values = {n: [f[n] for f in flat if n in f] for n in names}
        self.numeric = {n for n, vs in self._values.items() if all(map(_is_number, vs))}
        self._range = {
            n: float(max(vs) - min(vs)) or 1.0
            for n, vs in self._values.items()
            if n in self.numeric
        }
        # Structures: the set of parameter names of a row; structural parameters are constant
        # within every structure.
        by_structure: dict[tuple[str, ...], list[int]] = {}
        for i, f in enumerate(flat):
            by_structure.setdefault(tuple(sorted(f)), []).append(i)
        self.structural = [
            n
            for n in names
            if all(
                len({_vkey(flat[i][n]) for i in members}) == 1
                for s, members in by_structure.items()
                if n in s
            )
            and len({_vkey(v) for v in self._values[n]}) > 1
        ]
        self._structures: dict[str, tuple[list[str], list[int]]] = {}
        for s, members in sorted(by_structure.items()):
            fixed = ",".join(f"{n}={flat[members[0]][n]}" for n in self.structural if n in s)
            label_s = fixed or f"{len(s)} parameters"
            if label_s in self._structures:  # not told apart by structural values: by index
                label_s = f"{label_s} #{len(self._structures)}"
            free = [n for n in s if n not in self.structural]
            self._structures[label_s] = (free, members)
        self._structure_of = {
            i: label_s for label_s, (_, members) in self._structures.items() for i in members
        }
        #: What ``suggest`` asks besides the structure: its own parameters, or with ``padded``
        #: every structure's.
        self.suggested = sorted({n for free, _ in self._structures.values() for n in free})
        self._flat = flat
        self._choice_list = {n: self._distinct(n) for n in names}
        self._choice_index = {
            n: {_vkey(v): j for j, v in enumerate(vs)} for n, vs in self._choice_list.items()
        }
        self._bin_edges = {
            n: np.quantile(np.asarray(vs, dtype=float), np.linspace(0, 1, FEATURE_BINS + 1)[1:-1])
            for n, vs in self._values.items()
            if n in self.numeric and len(self._choice_list[n]) > FEATURE_BINS
        }
        # Every row over every parameter, for ``neighbours``: codes, and where a row has none.
        self._names = names
        self._all = np.array(
            [[self._code(n, f[n]) if n in f else np.nan for n in names] for f in flat],
            dtype=np.float64,
        ).reshape(len(flat), len(names))
        self._codes = {
            label_s: self._code_matrix(free, members)
            for label_s, (free, members) in self._structures.items()
        }

    # ------------------------------------------------------------------ distributions

    def _code(self, name: str, value: Any) -> float:
        """A parameter value as a number: itself for numbers, else its index among the
        table's values (compared only for equality)."""
        if name in self.numeric:
            return float(value)
        found = self._choice_index[name].get(_vkey(value))
        return -1.0 if found is None else float(found)

    def _code_matrix(self, free: list[str], members: list[int]) -> np.ndarray:
        return np.array(
            [[self._code(n, self._flat[i][n]) for n in free] for i in members], dtype=np.float64
        ).reshape(len(members), len(free))

    def _choices(self, name: str) -> list[Any]:
        """The table's distinct values of ``name``, sorted (numbers) or in first-seen order."""
        return self._choice_list[name]

    def _distinct(self, name: str) -> list[Any]:
        seen: dict[tuple[str, Any], Any] = {}
        for v in self._values[name]:
            seen.setdefault(_vkey(v), v)
        values = list(seen.values())
        return sorted(values) if name in self.numeric else values

    def _suggest_one(self, trial: optuna.Trial, name: str) -> Any:
        choices = self._choices(name)
        if name not in self.numeric or len(choices) <= CATEGORICAL_MAX:
            return trial.suggest_categorical(name, choices)
        if all(isinstance(v, int) for v in choices):
            return trial.suggest_int(name, int(choices[0]), int(choices[-1]))
        return trial.suggest_float(name, float(choices[0]), float(choices[-1]))

    # ------------------------------------------------------------------ the space

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        labels = list(self._structures)
        label_s = (
            str(trial.suggest_categorical(STRUCTURE, labels)) if len(labels) > 1 else labels[0]
        )
        free, _ = self._structures[label_s]
        asked = {n: self._suggest_one(trial, n) for n in (self.suggested if self.padded else free)}
        params = {n: asked[n] for n in free}
        row = self.nearest_row(label_s, params)
        if self._own_params(row) != ({STRUCTURE: label_s} if len(labels) > 1 else {}) | params:
            described = json.dumps(params, sort_keys=True, separators=(",", ":"))
            trial.set_user_attr(MAPPED_FROM_ATTR, f"{label_s} {described}")
        return dict(row)

    def nearest_row(self, structure: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The row of ``structure`` nearest to ``params`` (see the module docstring)."""
        free, members = self._structures[structure]
        codes = self._codes[structure]
        target = np.array([self._code(n, params[n]) for n in free], dtype=np.float64)
        numeric = np.array([n in self.numeric for n in free], dtype=bool)
        scale = np.array([self._range.get(n, 1.0) for n in free], dtype=np.float64)
        diff = np.where(numeric, np.abs(codes - target) / scale, (codes != target) * 1.0)
        distance = diff.sum(axis=1)
        tied = np.flatnonzero(np.isclose(distance, distance.min(), rtol=0, atol=1e-12))
        seed = json.dumps([structure, params], sort_keys=True, default=str).encode()
        pick = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") % len(tied)
        return self.rows[members[int(tied[pick])]]

    def neighbours(self, architecture: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows one change away, for the mutation loops (the ``MutableSpace`` protocol): the
        rows that differ from ``architecture`` in exactly one parameter; when no row does (a
        table of continuous choices), the ``NEIGHBOURS`` nearest rows: the smallest sum over
        every parameter of ``|difference| / range`` (numbers), 1 for a different value
        (others) and 1 for a parameter only one of the two has. Table order breaks ties."""
        i = self.index[row_key(self.validate(architecture))]
        a, rows = self._all[i], self._all
        present = ~np.isnan(rows)
        mine = ~np.isnan(a)
        numeric = np.array([n in self.numeric for n in self._names], dtype=bool)
        scale = np.array([self._range.get(n, 1.0) for n in self._names], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.where(numeric, np.abs(rows - a) / scale, (rows != a) * 1.0)
        both = present & mine
        diff = np.where(both, diff, (present != mine) * 1.0)
        changed = (diff > 0).sum(axis=1)
        one = np.flatnonzero(changed == 1)
        if len(one):
            return [dict(self.rows[j]) for j in one]
        distance = diff.sum(axis=1)
        distance[i] = np.inf
        order = np.argsort(distance, kind="stable")[: min(NEIGHBOURS, len(self.rows) - 1)]
        return [dict(self.rows[j]) for j in order]

    def validate(self, architecture: Any) -> dict[str, Any]:
        if not isinstance(architecture, dict) or not architecture:
            raise SpecError("architecture", "must be a JSON object, one of the table's rows")
        flat = flatten(architecture)
        for name, value in flat.items():
            field = name.split(".")[0]
            if name not in self._values:
                raise SpecError(
                    f"architecture.{field}", f"{name} is not a parameter of {self.label}"
                )
            if _vkey(value) not in self._choice_index[name]:
                raise SpecError(f"architecture.{field}", f"{value!r} is no row's {name}")
        key = row_key(architecture)
        if key not in self.index:
            raise SpecError("architecture", f"not a row of {self.label}", "pick one of its rows")
        return dict(self.rows[self.index[key]])

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return dict(rng.choice(self.rows))

    def _own_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """The structure (when there are several) and the row's own parameters."""
        i = self.index[row_key(self.validate(architecture))]
        label_s = self._structure_of[i]
        free, _ = self._structures[label_s]
        params = {n: self._flat[i][n] for n in free}
        return ({STRUCTURE: label_s} if len(self._structures) > 1 else {}) | params

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        own = self._own_params(architecture)
        if not self.padded:
            return own
        return own | {n: self._choice_list[n][0] for n in self.suggested if n not in own}

    def feature_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """Every parameter (structural ones too); a number with more than ``FEATURE_BINS``
        distinct values as its quantile bin among the table's values, so one-hot features
        (a library loop's ``architecture`` features) group nearby values."""
        flat = flatten(self.validate(architecture))
        out: dict[str, Any] = {}
        for name, value in flat.items():
            edges = self._bin_edges.get(name)
            if edges is not None:
                out[name] = f"bin{int(np.searchsorted(edges, float(value), side='right'))}"
            else:
                out[name] = value
        return out

    def raw_feature_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """Every parameter (structural ones too), numbers unbinned."""
        return flatten(self.validate(architecture))

    def describe(self, architecture: dict[str, Any]) -> str:
        return row_key(architecture)

    def enumerate(self) -> Iterator[dict[str, Any]]:
        """Every row, in the table's order."""
        for row in self.rows:
            yield dict(row)
