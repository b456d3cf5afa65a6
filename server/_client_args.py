"""The Python client's own argument checks: a wrong type or value is a ``TypeError`` or
``ValueError`` naming the argument, what it must be and what was given, before any call
(a notebook's ``np.int64`` or Optuna's ``TrialState`` included). Imports only the standard
library and the generated messages, like the client."""

from __future__ import annotations

import enum
import json
import math
import numbers
from collections.abc import Iterable
from typing import Any

from archsearch.v1 import archsearch_pb2 as pb


def text(value: Any, what: str = "study name") -> str:
    """``value`` when it is a str."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__} {value!r}")
    return value


def seconds(value: Any, what: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite number of seconds, > 0 (>= 0 with ``allow_zero``); any real
    number (a numpy float32 too), not a bool or a str."""
    if isinstance(value, bool | str | bytes) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be a finite number of seconds {bound}, got {value!r}")
    return number


def whole(value: Any, what: str, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum`` (an integral numpy scalar too; not a bool)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    number = int(value.__index__())
    if number < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {number}")
    return number


def flag(value: Any, what: str) -> bool:
    """``value`` when it is a bool (``bool("no")`` is True: a str is refused, not read)."""
    if isinstance(value, bool):
        return value
    if getattr(getattr(value, "dtype", None), "kind", "") == "b":  # a numpy bool
        return bool(value)
    if isinstance(value, int) and value in (0, 1):  # as it was taken before
        return bool(value)
    raise TypeError(f"{what} must be True or False, got {type(value).__name__} {value!r}")


def trial_states(states: Iterable[Any] | None) -> list[int]:
    """``ListTrials``' states: ``pb.TrialState`` values, their names (``"COMPLETE"``), or
    Optuna's ``TrialState`` members (numbered from 0 where ``pb.TrialState`` starts at 1: read
    by name, not by number)."""
    if states is None:
        return []
    if isinstance(states, str | int | enum.Enum) or (
        hasattr(states, "__index__") and not hasattr(states, "__iter__")
    ):  # one state (a numpy integer too)
        states = [states]
    out = []
    for state in states:
        if isinstance(state, enum.Enum):  # optuna.trial.TrialState.COMPLETE, or another enum
            state = state.name
        elif not isinstance(state, bool | str) and hasattr(state, "__index__"):
            state = int(state.__index__())  # a numpy integer
        if isinstance(state, str):
            if state.upper() not in _state_numbers():
                raise ValueError(f"states: unknown trial state {state!r} ({_state_names()})")
            out.append(_state_numbers()[state.upper()])
        elif isinstance(state, int) and not isinstance(state, bool) and state in _state_values():
            out.append(state)
        else:
            raise ValueError(f"states: {state!r} is not a trial state ({_state_names()})")
    return out


def _state_numbers() -> dict[str, int]:
    """``pb.TrialState``'s names and numbers, less the unspecified one."""
    return {k: v for k, v in pb.TrialState.items() if not k.endswith("UNSPECIFIED")}


def _state_values() -> set[int]:
    return set(_state_numbers().values())


def _state_names() -> str:
    names = ", ".join(_state_numbers())
    return f"pb.TrialState.{{{names}}}, their names, or optuna's TrialState"


def spec_text(spec: Any) -> str:
    """A spec as JSON text: a str as given; a dict with numpy scalars and arrays as plain
    numbers and lists (what a notebook's arithmetic gives)."""
    if isinstance(spec, str):
        return spec
    if not isinstance(spec, dict):
        raise TypeError(f"spec must be a dict or a JSON str, got {type(spec).__name__}")
    return json.dumps(spec, default=_plain)


def _plain(value: Any) -> Any:
    """``json.dumps``' fallback: numpy scalars (``.item()``) and arrays (``.tolist()``)."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)) and type(value).__module__ == "numpy":
            return getattr(value, method)()
    raise TypeError(
        f"spec value {value!r} of type {type(value).__name__} is not JSON: give str, int, "
        "float, bool, None, lists and dicts"
    )
