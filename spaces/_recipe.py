"""A candidate's training recipe: its defaults, fields and checks (torch-free).

The worker reads the recipe (worker/_plan.py); the server checks it at launch with
:func:`validate_recipe`, so that a value every trial would fail on is refused once.
"""

from __future__ import annotations

from typing import Any

from archsearch.spaces._checkpoint_names import parse_trial_ref
from archsearch.spaces._errors import SpecError
from archsearch.spaces._fields import check_fields as _check_fields
from archsearch.spaces._fields import one_of as _one_of

# Training recipe defaults: small enough for a CPU worker, overridden by the search spec.
DEFAULT_RECIPE: dict[str, Any] = {
    "max_steps": 200,
    "batch_size": 32,
    "max_seq_length": 64,
    "learning_rate": 5e-4,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "eval_every": 50,
    "seed": 0,
}

_RECIPE_TYPES: dict[str, tuple[type, ...]] = {
    "max_steps": (int,),
    "batch_size": (int,),
    "max_seq_length": (int,),
    "learning_rate": (int, float),
    "weight_decay": (int, float),
    "warmup_ratio": (int, float),
    "eval_every": (int,),
    "seed": (int,),
    "gradient_accumulation_steps": (int,),
    # "auto" (bf16/fp16 autocast on CUDA, fp32 on CPU) | "fp32" | "bf16" | "fp16"
    "precision": (str,),
    "keep_checkpoint": (bool,),
    "measure_latency": (bool,),
    "progress": (bool,),  # tqdm bar: default shown only on a terminal
    # student initialisation: "random" | "teacher" (AutoDistil extraction from the teacher) |
    # {"supernet": "trial:STUDY:N"} (extraction from a trained AutoDistil supernet)
    "init": (str, dict),
    # teacher: a local path or hub name; default all-MiniLM-L6-v2 from its PyPI package
    "teacher": (str,),
    # distillation: {"mode": "none"|"logits"|"minilm"|"minilmv2", "temperature", "alpha",
    #                "logit_weight", "relation_weight", "relation_heads", "layer"}
    "distill": (dict,),
    # FlexiBERT fidelities (worker/_flexibert_pretrain.py): masked-LM pre-training steps
    # before fine-tuning, its text (one sentence per line; default the task's training
    # sentences), and a trained neighbour's checkpoint folder to transfer weights from.
    "pretrain_steps": (int,),
    "pretrain_text": (str,),
    "transfer_from": (str,),
    # LoRA / DyLoRA settings of the lora trainer (worker/_lora_spec.py checks them)
    "lora": (dict,),
    # AutoDistil jobs of the autodistil trainer: supernet training, student ranking and
    # stand-alone student settings (the trainer checks their fields; the loop sets them)
    "supernet": (dict,),
    "rank": (dict,),
    # a stand-alone student's costs: {"cost_seq_len": N}, the FLOPs' sequence length
    "student": (dict,),
}
_DISTILL_TYPES: dict[str, tuple[type, ...]] = {
    "mode": (str,),
    "temperature": (int, float),
    "alpha": (int, float),
    "logit_weight": (int, float),
    "relation_weight": (int, float),
    "relation_heads": (int,),
    "layer": (int,),
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INITS = ("random", "teacher")
DISTILL_MODES = ("none", "logits", "minilm", "minilmv2")


#: Upper bounds of the recipe's counts: past them a value is a typo (1e30 steps), which a
#: worker would otherwise meet as an overflow, or never finish.
_RECIPE_MOST = {
    "max_steps": 100_000_000,
    "pretrain_steps": 100_000_000,
    "eval_every": 100_000_000,
    "batch_size": 65_536,
    "gradient_accumulation_steps": 65_536,
}


#: The shortest ``max_seq_length``: ``[CLS] a [SEP]`` keeps a token of a single text; a pair
#: needs :data:`MIN_PAIR_SEQ_LENGTH` (``[CLS] a [SEP] b [SEP]``). Below them the tokenizer
#: silently keeps the texts whole (longer than asked) or drops them.
MIN_SEQ_LENGTH = 3
MIN_PAIR_SEQ_LENGTH = 5


def check_seq_length(field: str, value: int, pairs: bool = False) -> None:
    """``value`` is a usable sequence length: ``MIN_SEQ_LENGTH`` (``MIN_PAIR_SEQ_LENGTH`` for
    sentence pairs) to 512."""
    least = MIN_PAIR_SEQ_LENGTH if pairs else MIN_SEQ_LENGTH
    if value < least:
        holds = "a token of each text of a pair, two [SEP]" if pairs else "a token, [SEP]"
        raise SpecError(
            field,
            f"must be >= {least} ([CLS], {holds}), got {value}",
            "GLUE models usually take 128",
        )
    if value > 512:
        raise SpecError(field, "must be <= 512 (BERT position embeddings)")


def check_pair_length(recipe: dict[str, Any], tasks: list[str], data: dict[str, Any]) -> None:
    """A recipe's ``max_seq_length`` holds a pair of each sentence-pair task of ``tasks``: a
    GLUE pair task, or ``data.custom_task`` with two ``text_fields``."""
    from archsearch.spaces._tasks import GLUE_TASKS

    custom = data.get("custom_task")
    custom_pairs = isinstance(custom, dict) and len(custom.get("text_fields") or ()) > 1
    if custom_pairs or any(len(GLUE_TASKS[t].text_columns) > 1 for t in tasks if t in GLUE_TASKS):
        check_seq_length("recipe.max_seq_length", recipe["max_seq_length"], pairs=True)


def validate_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Returns the recipe with defaults filled in; raises SpecError on a bad field."""
    out = dict(DEFAULT_RECIPE)
    out.update(_check_fields("recipe", recipe, _RECIPE_TYPES))
    for key in ("max_steps", "batch_size", "max_seq_length", "eval_every"):
        if out[key] <= 0:
            raise SpecError(f"recipe.{key}", f"must be > 0, got {out[key]}")
    for key, most in _RECIPE_MOST.items():
        if key in out and out[key] > most:
            raise SpecError(f"recipe.{key}", f"must be <= {most:,}, got {out[key]:,}")
    check_seq_length("recipe.max_seq_length", out["max_seq_length"])
    if out["learning_rate"] <= 0:
        raise SpecError("recipe.learning_rate", "must be > 0")
    if not 0 <= out["warmup_ratio"] < 1:
        raise SpecError("recipe.warmup_ratio", "must be in [0, 1)")
    if out.get("pretrain_steps", 0) < 0:
        raise SpecError("recipe.pretrain_steps", "must be >= 0")
    if out.get("gradient_accumulation_steps", 1) <= 0:
        raise SpecError("recipe.gradient_accumulation_steps", "must be > 0")
    _one_of("recipe.precision", out.get("precision", "auto"), PRECISIONS)
    init = out.get("init", "random")
    if isinstance(init, dict):
        ref = init.get("supernet")
        if set(init) != {"supernet"} or not isinstance(ref, str) or not ref:
            raise SpecError(
                "recipe.init",
                f'must be one of {", ".join(INITS)} or {{"supernet": "trial:STUDY:N"}} (a '
                f"supernet's trial, or its folder), got {init!r}",
            )
        _trial_ref("recipe.init.supernet", ref)
    else:
        _one_of("recipe.init", init, INITS)
    if "transfer_from" in out:
        _trial_ref("recipe.transfer_from", out["transfer_from"])
    if "distill" in out:
        d = _check_fields("recipe.distill", out["distill"], _DISTILL_TYPES)
        _one_of("recipe.distill.mode", d.get("mode", "logits"), DISTILL_MODES)
        if d.get("temperature", 1.0) <= 0:
            raise SpecError("recipe.distill.temperature", "must be > 0")
        if not 0 <= d.get("alpha", 0.5) <= 1:
            raise SpecError("recipe.distill.alpha", "must be in [0, 1]")
        if d.get("relation_heads", 1) <= 0:
            raise SpecError("recipe.distill.relation_heads", "must be > 0")
        out["distill"] = d
    return out


def _trial_ref(field: str, text: str) -> None:
    """A ``trial:...`` reference must be ``trial:N`` or ``trial:STUDY:N`` (anything else is a
    folder): refused at launch, not on every worker."""
    try:
        parse_trial_ref(text, field)
    except ValueError as e:
        raise SpecError(field, str(e).removeprefix(f"{field} ")) from None
