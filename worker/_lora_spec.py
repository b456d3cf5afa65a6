"""``recipe.lora`` on the worker: the shared check (:mod:`archsearch.spaces._lora_spec`), whose
errors a trainer reports as :class:`~archsearch.worker.CandidateError` s.

The rules live in ``archsearch.spaces`` (torch-free) so the server applies the same ones when a
study is created; see that module for the keys and their defaults.
"""

from __future__ import annotations

from typing import Any

from archsearch.spaces import SpecError
from archsearch.spaces._lora_spec import LORA_DEFAULTS, LORA_MODES, RANK_DISTRIBUTIONS, LoraSpec
from archsearch.spaces._lora_spec import parse_lora_spec as _parse_lora_spec
from archsearch.worker._trainer import CandidateError

__all__ = ["LORA_DEFAULTS", "LORA_MODES", "RANK_DISTRIBUTIONS", "LoraSpec", "parse_lora_spec"]


def parse_lora_spec(value: Any) -> LoraSpec:
    """Checks a ``recipe.lora`` object and fills in its defaults.

    Raises:
        CandidateError: Not an object, an unknown key, or a bad value; the message names the
            key, what it must be, and the value given.
    """
    try:
        return _parse_lora_spec(value)
    except SpecError as e:
        raise CandidateError(str(e)) from e
