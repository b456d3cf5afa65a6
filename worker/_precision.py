"""Training precision: the recipe's ``precision`` resolved against the worker's device.

Imports torch at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class Precision:
    """Resolved ``precision``: its name, the autocast dtype (None: fp32) and whether losses
    are scaled (fp16, whose narrow range underflows small gradients)."""

    name: str
    dtype: torch.dtype | None
    scaled: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The context the forward passes run under (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


#: Plain fp32: no autocast, no loss scaling.
FP32 = Precision("fp32", None, False)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision a recipe's ``precision`` means on ``device``.

    ``auto`` is bf16 on a GPU that has it natively, fp16 (scaled) on another GPU, fp32 on a CPU.

    Raises:
        RuntimeError: bf16 asked of a GPU without it: a property of this machine, not of the
            candidate, so a plain error (the candidate is retried on another worker).
    """
    cuda = device.type == "cuda"
    name = requested
    if name == "auto":
        name = ("bf16" if _cuda_bf16(device) else "fp16") if cuda else "fp32"
    if name == "bf16" and cuda and not _cuda_bf16(device):
        raise RuntimeError(
            f"recipe.precision 'bf16' needs a GPU with bf16 support; {device} has none"
        )
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return Precision(name, dtype, scaled=name == "fp16")


def fp32_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """No autocast: for loops that do not scale losses (FlexiBERT pre-training under fp16)."""
    return contextlib.nullcontext()


def _cuda_bf16(device: torch.device) -> bool:
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
