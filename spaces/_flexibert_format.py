"""The FlexiBERT architecture format (the reference's ``model_dict``): its check and conversions.

:func:`check_architecture` validates an architecture against a :class:`FlexiBertVariant` and
returns its normalised copy (``FlexiBertSpace.validate``); :func:`small_to_flexibert` and
:func:`flexibert_to_small` convert from and to the ``flexibert-small`` table's format
(``FlexiBertSpace.from_small`` and ``to_small``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archsearch.spaces._errors import SpecError
from archsearch.spaces._flexibert_small import FlexiBertSmallSpace
from archsearch.spaces._flexibert_variants import OPERATIONS, FlexiBertVariant

_ARCH_KEYS = ("l", "o", "p", "h", "n", "f")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def check_architecture(
    architecture: Any, variant: FlexiBertVariant, *, heterogeneous_ff: bool, hierarchical: bool
) -> dict[str, Any]:
    """Checks ``architecture`` against ``variant`` and returns its normalised copy.

    See ``FlexiBertSpace.validate``, which calls it with its own options.

    Args:
        architecture: The architecture to check (any JSON value).
        variant: The space's value sets.
        heterogeneous_ff: Whether a feed-forward stack may mix widths.
        hierarchical: Whether consecutive pairs of layers must share every choice.

    Raises:
        SpecError: Names the first offending field.
    """
    v = variant
    if not isinstance(architecture, dict):
        raise SpecError("architecture", "must be a JSON object with keys l, o, p, h, n, f")
    extra = sorted(set(architecture) - set(_ARCH_KEYS))
    if extra:
        raise SpecError(f"architecture.{extra[0]}", "unknown field", "keys are l, o, p, h, n, f")
    missing = [k for k in _ARCH_KEYS if k not in architecture]
    if missing:
        raise SpecError(f"architecture.{missing[0]}", "missing", "keys are l, o, p, h, n, f")
    layers = architecture["l"]
    if not _is_int(layers) or layers not in v.layers:
        raise SpecError("architecture.l", f"must be one of {list(v.layers)}, got {layers!r}")
    for key in _ARCH_KEYS[1:]:
        values = architecture[key]
        if not _is_list(values) or len(values) != layers:
            raise SpecError(
                f"architecture.{key}",
                f"must be a list of {layers} values (one per layer), got {values!r}",
            )
    out: dict[str, Any] = {"l": layers, "o": [], "p": [], "h": [], "n": [], "f": []}
    for i in range(layers):
        op = architecture["o"][i]
        if op not in OPERATIONS:
            raise SpecError(f"architecture.o[{i}]", f"{op!r} not in {list(OPERATIONS)}")
        param = architecture["p"][i]
        if op == "c" and _is_int(param):
            param = str(param)
        if not isinstance(param, str) or param not in v.params_of(op):
            raise SpecError(
                f"architecture.p[{i}]",
                f"{param!r} is not a parameter of operation {op!r}",
                f"one of {list(v.params_of(op))}",
            )
        for key, choices in (("h", v.hidden), ("n", v.heads)):
            value = architecture[key][i]
            if not _is_int(value) or value not in choices:
                raise SpecError(f"architecture.{key}[{i}]", f"{value!r} not in {list(choices)}")
        stack = architecture["f"][i]
        if not _is_list(stack) or len(stack) not in v.ff_depths:
            raise SpecError(
                f"architecture.f[{i}]",
                f"must be a list of {' or '.join(map(str, v.ff_depths))} widths, got {stack!r}",
            )
        for j, width in enumerate(stack):
            if not _is_int(width) or width not in v.ff_widths:
                raise SpecError(
                    f"architecture.f[{i}][{j}]", f"{width!r} not in {list(v.ff_widths)}"
                )
        if not heterogeneous_ff and len(set(stack)) > 1:
            raise SpecError(
                f"architecture.f[{i}]",
                f"widths {list(stack)} differ, but this space's FF stacks are homogeneous",
                "repeat one width, or use heterogeneous_ff=true",
            )
        out["o"].append(op)
        out["p"].append(param)
        out["h"].append(architecture["h"][i])
        out["n"].append(architecture["n"][i])
        out["f"].append(list(stack))
    if hierarchical:
        for i in range(1, layers, 2):
            for key in _ARCH_KEYS[1:]:
                if out[key][i] != out[key][i - 1]:
                    raise SpecError(
                        f"architecture.{key}[{i}]",
                        f"{out[key][i]!r} differs from {key}[{i - 1}] = {out[key][i - 1]!r}",
                        "hierarchical spaces share every choice within a pair of layers",
                    )
    return out


def small_to_flexibert(table_architecture: dict[str, Any]) -> dict[str, Any]:
    """A ``flexibert-small`` architecture ``{"l", "a", "h", "s", "f"}`` in the FlexiBERT format.

    The result is ``o="sa"``, ``p=s``, ``n=a``, ``f=[[f]]`` per layer, not yet checked against
    a FlexiBERT space (``FlexiBertSpace.from_small`` does).

    Raises:
        SpecError: ``table_architecture`` is not a valid flexibert-small architecture.
    """
    small = FlexiBertSmallSpace().validate(table_architecture)
    layers = small["l"]
    return {
        "l": layers,
        "o": ["sa"] * layers,
        "p": list(small["s"]),
        "h": list(small["h"]),
        "n": list(small["a"]),
        "f": [[width] for width in small["f"]],
    }


def flexibert_to_small(arch: dict[str, Any]) -> dict[str, Any]:
    """A validated FlexiBERT architecture in the ``flexibert-small`` format.

    Raises:
        SpecError: That format cannot express it (an operation other than self-attention, more
            than one FF layer, or a value outside the small space).
    """
    for i in range(arch["l"]):
        if arch["o"][i] != "sa":
            raise SpecError(
                f"architecture.o[{i}]",
                f"operation {arch['o'][i]!r} cannot be expressed in flexibert-small",
                "flexibert-small layers are self-attention only",
            )
        if len(arch["f"][i]) != 1:
            raise SpecError(
                f"architecture.f[{i}]",
                f"{len(arch['f'][i])} feed-forward layers cannot be expressed in flexibert-small",
                "flexibert-small layers have one feed-forward layer",
            )
    small = {
        "l": arch["l"],
        "a": list(arch["n"]),
        "h": list(arch["h"]),
        "s": list(arch["p"]),
        "f": [stack[0] for stack in arch["f"]],
    }
    return FlexiBertSmallSpace().validate(small)
