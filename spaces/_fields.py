"""The field checks every part of a candidate's spec shares: known keys of the right JSON types,
finite numbers, and a value among a few choices (torch-free)."""

from __future__ import annotations

import math
from typing import Any

from archsearch.spaces._errors import SpecError


def check_fields(
    section: str, given: dict[str, Any], types: dict[str, tuple[type, ...]]
) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise SpecError(section, f"must be a JSON object, got {type(given).__name__}")
    for key, value in given.items():
        if key not in types:
            raise SpecError(
                f"{section}.{key}", "unknown field", f"known fields: {', '.join(sorted(types))}"
            )
        allowed = types[key]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise SpecError(f"{section}.{key}", f"must be {names}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{section}.{key}", f"must be finite, got {value!r}")
    return dict(given)


def one_of(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(field, f"{value!r} is not one of {', '.join(choices)}")
