"""The ``autodistil`` loop's job settings and budget, checked at launch.

The supernet and rank settings go to the workers as ``recipe.supernet`` and ``recipe.rank``
(``worker/_autodistil_trainer.py`` reads them); checking them here too makes a bad one fail at
launch with the field that is wrong, not in every worker later.
"""

from __future__ import annotations

import math
from typing import Any, cast

from archsearch.spaces import SpecError
from archsearch.spaces._recipe import check_seq_length

#: ``loop_options.supernet`` fields and their types: the worker's ``SupernetRecipe``
#: (``worker/_supernet_training.py``).
SUPERNET_FIELDS: dict[str, tuple[type, ...]] = {
    "steps": (int,),
    "batch_size": (int,),
    "max_seq_length": (int,),
    "lr": (int, float),
    "weight_decay": (int, float),
    "loss": (str,),
    "seed": (int,),
    "sandwich": (int,),
}
#: ``loop_options.rank`` fields and their types: the worker's ``recipe.rank`` but ``supernet``
#: and ``cost_seq_len``, which the loop sets (each job's supernet; the space's ``seq_len``, so
#: that the costs the worker reports are those the budget is applied to).
RANK_FIELDS: dict[str, tuple[type, ...]] = {
    "heldout": (int,),
    "proxy_steps": (int,),
    "proxy_students": (int,),
    "batch_size": (int,),
    "max_seq_length": (int,),
    "lr": (int, float),
    "loss": (str,),
    "seed": (int,),
}
RELATION_LOSSES = ("kl", "mse")
BUDGET_KINDS = ("flops", "params")
_SET_BY_LOOP = {
    "supernet": "each rank job's supernet",
    "cost_seq_len": "space_options.seq_len",
}


def _positive(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise SpecError(field, f"must be a positive number, got {value!r}")


def _check(field: str, key: str, value: Any, types: tuple[type, ...]) -> None:
    """One setting: its type, then its range (``loss`` a relation loss, ``seed`` a 32-bit
    int, ``weight_decay`` >= 0, ``sandwich`` >= 2, ``max_seq_length`` 5..512, anything else
    > 0)."""
    where = f"{field}.{key}"
    if isinstance(value, bool) or not isinstance(value, types):
        raise SpecError(where, f"must be {types[0].__name__}, got {value!r}")
    value = cast(Any, value)  # an int, float or str, as ``types`` says
    if key == "loss":
        if value not in RELATION_LOSSES:
            raise SpecError(where, f"{value!r} is not one of {', '.join(RELATION_LOSSES)}")
    elif key == "seed":
        if not 0 <= int(value) < 2**32:
            raise SpecError(where, f"must be in [0, 2^32), got {value!r}")
    elif key == "weight_decay":
        if not 0 <= float(value) < math.inf:
            raise SpecError(where, f"must be >= 0, got {value!r}")
    elif key == "max_seq_length":
        check_seq_length(where, int(value))
    elif key == "sandwich":
        if int(value) < 2:
            raise SpecError(where, f"must be an int >= 2 (largest and smallest), got {value!r}")
    else:
        _positive(where, value)


def _settings(field: str, value: Any, known: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(field, f"must be a JSON object, got {value!r}")
    for key, v in value.items():
        if key in _SET_BY_LOOP and key not in known:
            raise SpecError(f"{field}.{key}", f"is set by the loop ({_SET_BY_LOOP[key]})")
        if key not in known:
            raise SpecError(f"{field}.{key}", "unknown field", f"known: {', '.join(known)}")
        if key == "proxy_students" and v is None:
            continue  # every student each step, as the paper
        _check(field, key, v, known[key])
    return dict(value)


def supernet_options(value: Any) -> dict[str, Any]:
    """``loop_options.supernet``, checked (SpecError naming the field)."""
    return _settings("loop_options.supernet", value, SUPERNET_FIELDS)


def rank_options(value: Any) -> dict[str, Any]:
    """``loop_options.rank``, checked (SpecError naming the field)."""
    return _settings("loop_options.rank", value, RANK_FIELDS)


def budget_option(value: Any) -> tuple[str, float] | None:
    """``loop_options.budget``: ``{"flops": N}`` or ``{"params": N}`` as (kind, N), or None."""
    if value is None:
        return None
    field = "loop_options.budget"
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in BUDGET_KINDS:
        raise SpecError(
            field, f'must be {{"flops": N}} or {{"params": N}}, got {value!r}', "one of the two"
        )
    ((kind, limit),) = value.items()
    _positive(f"{field}.{kind}", limit)
    return kind, float(limit)
