"""``recipe.lora``: the LoRA / DyLoRA settings of a candidate, checked once.

Torch-free and in ``archsearch.spaces``, so the server checks a study's ``recipe.lora`` when
the study is created (``LoraSpace.check_recipe``) with the same rules the worker applies to each
candidate (``archsearch.worker._lora_spec`` turns the errors into CandidateErrors). The keys
(defaults in :data:`LORA_DEFAULTS`):

* ``mode``: ``"dylora"`` (one rank drawn per optimiser step, every rank usable after training)
  or ``"lora"`` (plain LoRA trained at ``r_max``; the baselines);
* ``r_max``: the LoRA rank (DyLoRA: the largest rank), an int >= 1;
* ``alpha``: LoRA's α; the update at rank b is scaled by α/b (α/r_max for plain LoRA);
* ``targets``: names (suffixes) of the linear modules that get LoRA, e.g. ``["query", "value"]``;
* ``frozen``: DyLoRA only: true gives gradient at rank b to component b-1 alone (row b-1 of A,
  column b-1 of B; the paper's GLUE setting); false (the default) trains components 0..b-1.
  Unfrozen was chosen by a rule fixed before its held-out runs (STS-B, seed 1): it scored above
  frozen at every rank there, as it had on SST-2 and MRPC (``benchmarks/RESULTS.md``);
* ``strict``: DyLoRA only: after each optimiser step, put back every component that got no
  gradient (AdamW's momentum and decoupled weight decay otherwise still move them);
* ``rank_dist``: how the step's rank is drawn: ``"uniform"`` over 1..r_max (the only one);
* ``eval_ranks``: ranks scored after training with the one set of weights (null: every rank
  1..r_max for DyLoRA, r_max alone for plain LoRA; a list for plain LoRA gives the
  "trained at r_max, truncated at evaluation" baseline);
* ``dropout``: LoRA dropout on the module input, in [0, 1);
* ``model``: the pretrained model to adapt: null for the packaged all-MiniLM-L6-v2 teacher, a
  local folder, or a hub name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from archsearch.spaces._errors import SpecError

LORA_MODES = ("dylora", "lora")
RANK_DISTRIBUTIONS = ("uniform",)

#: Every ``recipe.lora`` key with its default.
LORA_DEFAULTS: dict[str, Any] = {
    "mode": "dylora",
    "r_max": 8,
    "alpha": 16,
    "targets": ["query", "value"],
    "frozen": False,
    "strict": False,
    "rank_dist": "uniform",
    "eval_ranks": None,
    "dropout": 0.0,
    "model": None,
}


#: Defaults a launch writes into the study's ``recipe.lora`` (:func:`pin_lora_defaults`); the
#: space sets mode, r_max, alpha and targets per candidate, and ``eval_ranks`` and ``model``
#: default to null, which already names what they mean.
PINNED_LORA_KEYS = ("frozen", "strict", "rank_dist", "dropout")


def pin_lora_defaults(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` with the defaults of :data:`PINNED_LORA_KEYS` written into ``recipe.lora``,
    so that a study's candidates say how they train whatever the defaults become (``frozen``'s
    changed on 2026-12-06: a study launched before and resumed after trained unfrozen, its
    candidates reading as before)."""
    given = dict(recipe.get("lora") or {})
    return {**recipe, "lora": {**{k: LORA_DEFAULTS[k] for k in PINNED_LORA_KEYS}, **given}}


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """Checked ``recipe.lora`` (see the module docstring for each field)."""

    mode: str = "dylora"
    r_max: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("query", "value")
    frozen: bool = False
    strict: bool = False
    rank_dist: str = "uniform"
    eval_ranks: tuple[int, ...] = ()
    dropout: float = 0.0
    model: str | None = None

    @property
    def dynamic(self) -> bool:
        """Whether the rank is drawn per step (DyLoRA) rather than fixed at ``r_max``."""
        return self.mode == "dylora"

    def to_dict(self) -> dict[str, Any]:
        """The spec as ``recipe.lora`` JSON (lists for tuples)."""
        out = dataclasses.asdict(self)
        out["targets"] = list(self.targets)
        out["eval_ranks"] = list(self.eval_ranks)
        return out


#: Every linear module of the packaged all-MiniLM-L6-v2 under a classification head (6
#: layers): what a LoRA target may name on the default base model.
PACKAGED_LINEAR_MODULES = (
    *(
        f"bert.encoder.layer.{i}.{name}"
        for i in range(6)
        for name in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        )
    ),
    "bert.pooler.dense",
    "classifier",
)


#: The classification head: trained in full (peft's ``modules_to_save``), never a LoRA target.
HEAD_MODULE = "classifier"


def unmatched_targets(targets: Sequence[str], modules: Sequence[str]) -> list[str]:
    """The targets that name none of ``modules``: peft's rule for a list of targets, a module
    matches when its name is the target or ends with ``"." + target``."""
    return [t for t in targets if not any(m == t or m.endswith(f".{t}") for m in modules)]


def module_suffixes(modules: Sequence[str]) -> list[str]:
    """The last names of ``modules``, each once, sorted (``query``, ``dense``, ...): what a
    user would write as targets."""
    return sorted({m.rsplit(".", 1)[-1] for m in modules})


def check_packaged_targets(targets: Sequence[str], field: str) -> None:
    """Refuses targets that match no linear module of the packaged base model.

    Raises:
        SpecError: Naming the unmatched targets and the modules there are.
    """
    body = [m for m in PACKAGED_LINEAR_MODULES if m != HEAD_MODULE]
    missing = unmatched_targets(targets, PACKAGED_LINEAR_MODULES)
    if missing:
        raise SpecError(
            field,
            f"{missing} match no linear module of the packaged all-MiniLM-L6-v2",
            f"its linear modules end in {module_suffixes(body)}, e.g. ['query', 'value']",
        )
    head = [t for t in unmatched_targets(targets, body)]
    if head:
        raise SpecError(
            field,
            f"{head} name only the classification head, which is trained in full (it is "
            "never frozen), so it cannot also take LoRA; peft would fail every trial",
            f"drop {head[0]!r}; the targets are the encoder's modules "
            f"({', '.join(module_suffixes(body))})",
        )


def parse_lora_spec(value: Any) -> LoraSpec:
    """Checks a ``recipe.lora`` object and fills in its defaults.

    Raises:
        SpecError: Not an object, an unknown key, or a bad value; the message names the
            key, what it must be, and the value given.
    """
    if not isinstance(value, Mapping):
        raise SpecError(
            "recipe.lora",
            f"must be a JSON object such as {{'mode': 'dylora', 'r_max': 8, 'alpha': 16}}, "
            f"got {value!r}",
        )
    unknown = sorted(set(value) - set(LORA_DEFAULTS))
    if unknown:
        raise SpecError(
            "recipe.lora", f"has unknown keys {unknown}", f"known keys: {sorted(LORA_DEFAULTS)}"
        )
    given = {**LORA_DEFAULTS, **value}
    mode = given["mode"]
    if mode not in LORA_MODES:
        raise SpecError("recipe.lora.mode", f"must be one of {list(LORA_MODES)}, got {mode!r}")
    r_max = given["r_max"]
    if isinstance(r_max, bool) or not isinstance(r_max, int) or r_max < 1:
        raise SpecError("recipe.lora.r_max", f"must be an int >= 1, got {r_max!r}")
    alpha = given["alpha"]
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise SpecError("recipe.lora.alpha", f"must be a number > 0, got {alpha!r}")
    targets = given["targets"]
    if (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(t, str) and t for t in targets)
    ):
        raise SpecError(
            "recipe.lora.targets",
            f"must be a non-empty list of module names such as ['query', 'value'], got {targets!r}",
        )
    for key in ("frozen", "strict"):
        if not isinstance(given[key], bool):
            raise SpecError(f"recipe.lora.{key}", f"must be true or false, got {given[key]!r}")
    if mode == "lora":
        given_true = [k for k in ("frozen", "strict") if value.get(k) is True]
        if given_true:
            raise SpecError(
                f"recipe.lora.{given_true[0]}",
                "applies to mode 'dylora' only (plain LoRA trains every component at r_max)",
                "remove it",
            )
    if given["rank_dist"] not in RANK_DISTRIBUTIONS:
        raise SpecError(
            "recipe.lora.rank_dist",
            f"must be one of {list(RANK_DISTRIBUTIONS)}, got {given['rank_dist']!r}",
        )
    eval_ranks = eval_ranks_of(given["eval_ranks"], mode, r_max)
    dropout = given["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise SpecError("recipe.lora.dropout", f"must be a number in [0, 1), got {dropout!r}")
    model = given["model"]
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise SpecError(
            "recipe.lora.model",
            f"must be a local folder or a hub name (null: the packaged all-MiniLM-L6-v2), "
            f"got {model!r}",
        )
    return LoraSpec(
        mode=mode,
        r_max=r_max,
        alpha=float(alpha),
        targets=tuple(dict.fromkeys(targets)),
        # plain LoRA trains all r_max components every step: "frozen" has no meaning there
        frozen=given["frozen"] if mode == "dylora" else False,
        strict=given["strict"],
        rank_dist=given["rank_dist"],
        eval_ranks=eval_ranks,
        dropout=float(dropout),
        model=model,
    )


def eval_ranks_of(value: Any, mode: str, r_max: int) -> tuple[int, ...]:
    """The ranks a LoRA is scored at: ``value`` checked (1..r_max), or the default (every rank
    of DyLoRA, r_max of plain LoRA). Raises SpecError on ``recipe.lora.eval_ranks``."""
    if value is None:
        return tuple(range(1, r_max + 1)) if mode == "dylora" else (r_max,)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in value)
    ):
        raise SpecError(
            "recipe.lora.eval_ranks", f"must be a non-empty list of ranks (ints), got {value!r}"
        )
    bad = [b for b in value if not 1 <= b <= r_max]
    if bad:
        raise SpecError(
            "recipe.lora.eval_ranks",
            f"{bad} are outside 1..r_max ({r_max})",
            f"a LoRA of rank {r_max} can be scored at ranks 1 to {r_max}",
        )
    return tuple(sorted(set(value)))
