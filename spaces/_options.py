"""Helpers for validating a design space's options."""

from __future__ import annotations

from typing import Any

from archsearch.spaces._errors import SpecError


def int_choices(name: str, value: Any, low: int, high: int) -> list[int]:
    """A non-empty, duplicate-free list of ints in [low, high], sorted."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"space_options.{name}", f"must be a non-empty list of ints, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise SpecError(f"space_options.{name}", f"{v!r} is not an int in [{low}, {high}]")
    if len(set(value)) != len(value):
        raise SpecError(f"space_options.{name}", f"has duplicates: {value}")
    return sorted(value)


def reject_unknown(options: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise SpecError(
            f"space_options.{unknown[0]}", "unknown option", f"known: {', '.join(sorted(known))}"
        )
