"""AutoDistil sub-spaces: knob multipliers of the teacher, their students, and the presets.

A sub-space writes each knob as AutoDistil's yaml does (``"start,end,count"`` multipliers of the
teacher, or a list); its students are the product of the knob values, rounded against a
:class:`~archsearch.spaces._students.TeacherShape`. Pure Python (no torch).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from archsearch.spaces._errors import SpecError
from archsearch.spaces._students import Student, TeacherShape, params

_KNOBS = ("layers", "heads", "hidden", "mlp_ratio")

#: The most values one knob may take: a ``"start,end,count"`` of 100000 built every student
#: of the product before any check, and a launch hung with a server thread spinning for ever.
MAX_KNOB_VALUES = 64
#: The most students a sub-space may hold (the product of its knobs' counts, checked before
#: any is built; the teacher's rounding may merge some), and a study in all: the paper's one
#: big SuperLM holds 13,824, its K = 3 sub-spaces 256 each; the rank job scores every one.
MAX_STUDENTS = 20_000


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)


def _knob_values(field: str, value: Any, *, ratio: bool = False) -> tuple[float, ...]:
    """A knob's values: a list of numbers, or AutoDistil's ``"start,end,count"`` string
    (fractions allowed, e.g. ``"4/12,7/12,4"``)."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            if len(parts) != 3:
                raise ValueError
            start, end = Fraction(parts[0]), Fraction(parts[1])
            count = int(parts[2])
        except (ValueError, ZeroDivisionError):
            raise SpecError(
                field, f"{value!r} is not 'start,end,count'", "e.g. '4/12,7/12,4'"
            ) from None
        if count < 1 or (count == 1 and start != end) or end < start:
            raise SpecError(field, f"{value!r} needs start <= end and count >= 1 (1 if equal)")
        if count > MAX_KNOB_VALUES:
            raise SpecError(field, f"{value!r}: count {count} is above {MAX_KNOB_VALUES}")
        step = (end - start) / (count - 1) if count > 1 else Fraction(0)
        values: list[Any] = [float(start + k * step) for k in range(count)]
    elif isinstance(value, list | tuple):
        values = list(value)
        if len(values) > MAX_KNOB_VALUES:
            raise SpecError(field, f"has {len(values)} values, more than {MAX_KNOB_VALUES}")
    else:
        raise SpecError(field, f"must be a list of numbers or 'start,end,count', got {value!r}")
    if not values:
        raise SpecError(field, "must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
            raise SpecError(field, f"{v!r} is not a positive number")
        if not ratio and v > 1 + 1e-9:
            raise SpecError(
                field, f"{v!r} is above 1", "values are fractions of the teacher's size"
            )
    if len(set(values)) != len(values):
        raise SpecError(field, f"has duplicates: {values}")
    return tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class SubSpace:
    """One AutoDistil sub-space: the product of its knob values.

    Attributes:
        name: Identifies the sub-space (and its supernet) in a study.
        layers, heads, hidden: Multipliers of the teacher's layers, heads and hidden size
            (AutoDistil's depth/width/hidden multipliers, each in (0, 1]). ``hidden=None``
            ties ``H = A · head_dim``.
        mlp_ratio: Feed-forward ratios ``R = I / H`` (absolute, e.g. 2.0–4.0).
    """

    name: str
    layers: tuple[float, ...]
    heads: tuple[float, ...]
    hidden: tuple[float, ...] | None
    mlp_ratio: tuple[float, ...]

    def students(self, teacher: TeacherShape) -> list[Student]:
        """Every student, deduplicated, sorted by (:func:`params`, key).

        Raises:
            SpecError: A value rounds to zero or beyond the teacher.
        """
        out: set[Student] = set()
        hidden: Sequence[float | None] = self.hidden if self.hidden is not None else (None,)
        for lm, am, hm, r in itertools.product(self.layers, self.heads, hidden, self.mlp_ratio):
            a = _round_half_up(am * teacher.heads)
            h = a * teacher.head_dim if hm is None else _round_half_up(hm * teacher.hidden)
            values = {
                "layers": _round_half_up(lm * teacher.layers),
                "heads": a,
                "hidden": h,
                "intermediate": _round_half_up(r * h),
            }
            for field, v in values.items():
                if v < 1:
                    raise SpecError(
                        f"subspace {self.name!r}",
                        f"a {field} multiplier gives {v} for this teacher",
                        "use larger values",
                    )
            student = Student(**values)
            try:
                student.check(teacher)
            except SpecError as exc:
                raise SpecError(f"subspace {self.name!r}", str(exc)) from None
            out.add(student)
        return sorted(out, key=lambda s: (params(teacher, s), s.key()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": list(self.layers),
            "heads": list(self.heads),
            "hidden": None if self.hidden is None else list(self.hidden),
            "mlp_ratio": list(self.mlp_ratio),
        }

    @classmethod
    def from_dict(cls, data: Any, field: str = "subspace") -> SubSpace:
        """Validates a JSON-safe dict; each knob a list or a ``"start,end,count"`` string.

        Raises:
            SpecError: Naming the field (``<field>.<knob>``) and the problem.
        """
        if not isinstance(data, Mapping):
            raise SpecError(field, f"must be a mapping, got {data!r}")
        known = ("name", *_KNOBS)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(field, f"unknown fields {unknown}", f"known: {list(known)}")
        missing = [k for k in ("name", "layers", "heads", "mlp_ratio") if k not in data]
        if missing:
            raise SpecError(field, f"missing fields {missing}")
        name = data["name"]
        if not isinstance(name, str) or not name or any(c in name for c in "@/ \t\n"):
            raise SpecError(f"{field}.name", f"must be a non-empty word, got {name!r}")
        hidden = data.get("hidden")
        space = cls(
            name=name,
            layers=_knob_values(f"{field}.layers", data["layers"]),
            heads=_knob_values(f"{field}.heads", data["heads"]),
            hidden=None if hidden is None else _knob_values(f"{field}.hidden", hidden),
            mlp_ratio=_knob_values(f"{field}.mlp_ratio", data["mlp_ratio"], ratio=True),
        )
        counts = [len(space.layers), len(space.heads), len(space.hidden or (0,))]
        size = math.prod(counts) * len(space.mlp_ratio)
        if size > MAX_STUDENTS:
            raise SpecError(
                field,
                f"its knobs make {size} students, more than {MAX_STUDENTS} (the paper's "
                "hold 256, its one big SuperLM 13,824; the rank job scores every one)",
                "take fewer values per knob, or split it into several sub-spaces",
            )
        return space


def _f(*values: int, of: int) -> tuple[float, ...]:
    return tuple(v / of for v in values)


def _ratios(start: float, count: int, step: float = 0.5) -> tuple[float, ...]:
    return tuple(start + k * step for k in range(count))


_PRESETS: dict[str, tuple[SubSpace, ...]] = {
    # algorithms.md §3.1: the paper's Tiny / Small / Base (yaml KD_wiki_book_*_256Subs).
    "autodistil-k3": (
        SubSpace(
            "tiny",
            _f(4, 5, 6, 7, of=12),
            _f(7, 8, 9, 10, of=12),
            _f(4, 5, 6, 7, of=24),
            _ratios(2.0, 4),
        ),
        SubSpace(
            "small",
            _f(9, 10, 11, 12, of=12),
            _f(7, 8, 9, 10, of=12),
            _f(8, 9, 10, 11, of=24),
            _ratios(2.5, 4),
        ),
        SubSpace(
            "base",
            _f(9, 10, 11, 12, of=12),
            _f(9, 10, 11, 12, of=12),
            _f(17, 18, 19, 20, of=24),
            _ratios(2.5, 4),
        ),
    ),
    # The 13,824-student "one big SuperLM" (yaml ..._13824Subs).
    "autodistil-k1": (
        SubSpace(
            "all",
            _f(*range(1, 13), of=12),
            _f(*range(1, 13), of=12),
            _f(*range(1, 13), of=12),
            _ratios(0.5, 8),
        ),
    ),
    # next-capabilities.md §1: three 8-student sub-spaces for the MiniLM teacher, H = 32·A.
    "minilm-k3": (
        SubSpace("tiny", _f(2, 3, of=6), _f(4, 6, of=12), None, (2.0, 3.0)),
        SubSpace("small", _f(3, 4, of=6), _f(6, 8, of=12), None, (2.5, 3.5)),
        SubSpace("base", _f(5, 6, of=6), _f(10, 12, of=12), None, (3.0, 4.0)),
    ),
    # One supernet over the union of minilm-k3's knob values (L 2–6, A 4–12, R 2–4).
    "minilm-k1": (
        SubSpace("all", _f(2, 3, 4, 5, 6, of=6), _f(4, 6, 8, 10, 12, of=12), None, _ratios(2.0, 5)),
    ),
}

#: Names accepted by :func:`preset`.
PRESETS = tuple(_PRESETS)


def preset(name: str, teacher: TeacherShape) -> list[SubSpace]:
    """The named sub-spaces, checked against ``teacher`` (every student must fit in it).

    Raises:
        SpecError: Unknown name, or a sub-space with a student the teacher cannot hold.
    """
    if name not in _PRESETS:
        raise SpecError("subspaces", f"unknown preset {name!r}", f"known: {list(_PRESETS)}")
    spaces = list(_PRESETS[name])
    for space in spaces:
        space.students(teacher)
    return spaces
