"""Codes of a library's parameters: one-hot, or numbers as numbers and the rest one-hot.

The library loops' ``architecture`` features one-hot every parameter value (``numbers=False``;
a number with many distinct values as its quantile bin), so a surrogate cannot tell that 640
is nearer 800 than 1871. The ``numeric`` feature kind (``numbers=True``) keeps that order: each
parameter whose values (where rows have it) are all numbers with more than two distinct values
is one column, min-max scaled to [0, 1] over the library, plus an ``absent`` indicator column
when some rows lack it (a layer a shallower model does not have; the value column is 0 there).
Every other parameter (strings, booleans, two-valued numbers) is one-hot, through
scikit-learn's ``OneHotEncoder`` (``ABSENT`` its own value). scikit-learn's
``ColumnTransformer`` could scale and one-hot, but not pick the columns by their values and
impute the missing layers with an indicator in one step; this does those forty lines by hand.

``totals=True`` (the ``numeric+totals`` feature kind) adds, for each group of per-layer numbers
(parameters whose names differ only in their digits, such as ``d_inner.0``, ``d_inner.1``, ...
or ``l0.hidden``, ``l1.hidden``, ...), their sum and their mean over the layers a row has, each
min-max scaled over the library. A model's size is a sum over its layers, which a kernel over
one column per layer sees only through many lengthscales; the totals give it one column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: The value of a parameter a row does not have.
ABSENT = "<absent>"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def layer_groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Groups of per-layer numbers: name with its digits as ``#`` -> the parameters (two or
    more) that share it, where every value rows have is a number."""
    names = sorted({n for r in rows for n in r})
    groups: dict[str, list[str]] = {}
    for name in names:
        if re.search(r"\d", name):
            groups.setdefault(re.sub(r"\d+", "#", name), []).append(name)
    return {
        key: members
        for key, members in groups.items()
        if len(members) > 1 and all(_is_number(r[m]) for r in rows for m in members if m in r)
    }


def _totals(rows: Sequence[Mapping[str, Any]], members: Sequence[str]) -> np.ndarray:
    """Each row's sum and mean of ``members`` over those it has (0 and 0 with none)."""
    out = np.zeros((len(rows), 2))
    for i, r in enumerate(rows):
        values = [float(r[m]) for m in members if m in r and _is_number(r[m])]
        if values:
            out[i] = sum(values), sum(values) / len(values)
    return out


class ParamCodes:
    """Fitted on the library's rows (parameter name -> value); ``transform`` codes any rows
    with the library's columns and scales (a value outside the library's range goes beyond
    [0, 1]; an unknown value of a one-hot parameter gets zeros). ``numbers=False``: every
    parameter one-hot (``ABSENT`` where a row lacks it). ``totals=True``: per-layer groups'
    sums and means beside them (module docstring)."""

    def __init__(
        self, rows: Sequence[Mapping[str, Any]], numbers: bool = True, totals: bool = False
    ) -> None:
        from sklearn.preprocessing import OneHotEncoder

        names = sorted({n for r in rows for n in r})
        self.numeric: dict[str, tuple[float, float, bool]] = {}  # name -> (low, span, absent)
        self.categorical: list[str] = []
        for name in names:
            present = [r[name] for r in rows if name in r]
            if numbers and all(_is_number(v) for v in present) and len(set(present)) > 2:
                low, high = float(min(present)), float(max(present))
                self.numeric[name] = (low, high - low, len(present) < len(rows))
            else:
                self.categorical.append(name)
        self._onehot = None
        if self.categorical:
            self._onehot = OneHotEncoder(
                handle_unknown="ignore", sparse_output=False, dtype=np.float64
            ).fit(self._categorical_table(rows))
        #: group key -> (members, lows of sum and mean, spans of sum and mean)
        self.totals: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
        if totals:
            for key, members in layer_groups(rows).items():
                t = _totals(rows, members)
                low, span = t.min(axis=0), t.max(axis=0) - t.min(axis=0)
                self.totals[key] = (members, low, np.where(span > 0, span, 1.0))

    def _categorical_table(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.asarray(
            [[str(r.get(n, ABSENT)) for n in self.categorical] for r in rows], dtype=object
        ).reshape(len(rows), len(self.categorical))

    @property
    def width(self) -> int:
        """Columns of the codes."""
        numeric = sum(2 if absent else 1 for _, _, absent in self.numeric.values())
        onehot = 0 if self._onehot is None else sum(len(c) for c in self._onehot.categories_)
        return numeric + onehot + 2 * len(self.totals)

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        cols: list[np.ndarray] = []
        for name, (low, span, absent) in self.numeric.items():
            has = np.array([name in r for r in rows], dtype=bool)
            values = np.array([float(r[name]) if name in r else low for r in rows])
            cols.append(np.where(has, (values - low) / span, 0.0))
            if absent:
                cols.append((~has).astype(np.float64))
        out = np.column_stack(cols) if cols else np.zeros((len(rows), 0))
        if self._onehot is not None:
            out = np.hstack([out, self._onehot.transform(self._categorical_table(rows))])
        for members, lows, spans in self.totals.values():
            out = np.hstack([out, (_totals(rows, members) - lows) / spans])
        return np.asarray(out, dtype=np.float64)
