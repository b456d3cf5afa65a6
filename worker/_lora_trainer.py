"""LoraTrainer (``lora``): LoRA and DyLoRA fine-tuning of a pretrained encoder on GLUE tasks.

The bert trainer's pipeline (data stages, loop, evaluator, costs) with a ``lora`` plan: the
model comes from :class:`~archsearch.worker._lora_model.LoraModelFactory` and the loop gets
:func:`~archsearch.worker._lora_model.lora_hooks` (per-step rank draw, per-rank evaluation).

Imports torch, transformers and peft at module level; ``archsearch.worker`` does not import it
eagerly.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from archsearch.spaces import Candidate, GlueTask, get_task
from archsearch.worker._bert_trainer import BertTrainer
from archsearch.worker._checkpoints import save_checkpoint
from archsearch.worker._dylora import save_dylora
from archsearch.worker._fidelity import FIDELITY_KEYS
from archsearch.worker._loop import TrainingHooks, TrainingLoop
from archsearch.worker._lora_info import LORA_TRAINER_INFO
from archsearch.worker._lora_model import LORA_SPACE, lora_architecture, lora_hooks, resolve_base
from archsearch.worker._lora_spec import LoraSpec, parse_lora_spec
from archsearch.worker._plan import TrainingPlan, parse_plan
from archsearch.worker._progress import DEFAULT_SAVE_MINUTES
from archsearch.worker._registry import register_trainer
from archsearch.worker._result_metrics import labelled_metrics
from archsearch.worker._result_metrics import metric_names as bert_metric_names
from archsearch.worker._split_cache import SplitEncoder
from archsearch.worker._task_info import Task
from archsearch.worker._trainer import CandidateError, TrainContext, TrainResult

#: Recipe keys of the bert trainer that have no meaning for a LoRA fine-tuning.
_REFUSED_RECIPE_KEYS = ("init", "distill", "teacher", *FIDELITY_KEYS)
#: A shape the bert plan accepts; the lora plan replaces it with the LoRA settings.
_PLACEHOLDER_SHAPE = {
    "num_hidden_layers": 1,
    "hidden_size": 1,
    "num_attention_heads": 1,
    "intermediate_size": 1,
}


#: The costs a DyLoRA trial reports at every rank it scores (``lora_hooks``).
RANK_COSTS = ("params", "params_no_embeddings", "flops")


def lora_metric_names(
    tasks: Sequence[str | Task], spec: LoraSpec, measure_latency: bool = True
) -> tuple[str, ...]:
    """Every metric name a ``lora`` trial returns: the bert trainer's, then per task
    ``trainable_params``, ``trainable_params@r<b>``, the rank's costs (``params@r<b>``,
    ``params_no_embeddings@r<b>``, ``flops@r<b>``), ``<metric>@r<b>`` and ``dev_loss@r<b>``
    for every rank b scored (the primary dev split's), prefixed ``"<task>."`` and, for a
    single task, also unprefixed."""
    resolved = [get_task(t) if isinstance(t, str) else t for t in tasks]
    extra = {
        t.id: (
            "trainable_params",
            *(f"trainable_params@r{b}" for b in spec.eval_ranks),
            *(f"{c}@r{b}" for b in spec.eval_ranks for c in RANK_COSTS),
            *(f"{m}@r{b}" for b in spec.eval_ranks for m in labelled_metrics(t)),
        )
        for t in resolved
    }
    prefixed = tuple(f"{t}.{name}" for t, names in extra.items() for name in names)
    unprefixed = extra[resolved[0].id] if len(resolved) == 1 else ()
    return (*bert_metric_names(resolved, measure_latency), *unprefixed, *prefixed)


def parse_lora_plan(candidate: Candidate) -> tuple[TrainingPlan, LoraSpec]:
    """Checks a ``lora`` candidate: space ``lora``, an empty architecture (the model and
    LoRA settings are in ``recipe.lora``), the shared recipe and data keys.

    Returns:
        The plan (its architecture is :func:`lora_architecture`) and the LoRA settings.

    Raises:
        CandidateError: Another space, a non-empty architecture, a missing or bad
            ``recipe.lora``, or a recipe key that only the bert trainer reads.
    """
    if candidate.space != LORA_SPACE:
        raise CandidateError(
            f"the lora trainer fine-tunes candidates of space {LORA_SPACE!r}, not "
            f"{candidate.space!r}"
        )
    if candidate.architecture:
        raise CandidateError(
            f"a lora candidate's architecture must be empty (the model and LoRA settings go in "
            f"recipe.lora), got {candidate.architecture!r}"
        )
    recipe = dict(candidate.recipe)
    if "lora" not in recipe:
        raise CandidateError(
            "recipe.lora is missing: give the LoRA settings, e.g. {'mode': 'dylora', "
            "'r_max': 8, 'alpha': 16, 'targets': ['query', 'value']}"
        )
    spec = parse_lora_spec(recipe.pop("lora"))
    refused = sorted(k for k in _REFUSED_RECIPE_KEYS if k in recipe)
    if refused:
        raise CandidateError(
            f"recipe {refused} are not supported by the lora trainer (they apply to BERT "
            f"students); remove them"
        )
    # The shared recipe, data and tasks are checked as the bert trainer checks them.
    shared = parse_plan(
        dataclasses.replace(
            candidate, space="bert", architecture=dict(_PLACEHOLDER_SHAPE), recipe=recipe
        )
    )
    plan = dataclasses.replace(
        shared,
        candidate=candidate,
        architecture=lora_architecture(spec),
    )
    return plan, spec


@register_trainer
class LoraTrainer(BertTrainer):
    """Fine-tunes a pretrained encoder with LoRA or DyLoRA (``recipe.lora``).

    Candidates: space ``lora``, architecture ``{}``, ``recipe.lora`` as in
    :mod:`archsearch.worker._lora_spec` (mode ``dylora`` or ``lora``, ``r_max``, ``alpha``,
    ``targets``, ``frozen``, ``strict``, ``eval_ranks``, ``dropout``, ``model``), and the shared
    recipe and data keys. The base model (the packaged all-MiniLM-L6-v2 by default) is frozen;
    the LoRA factors and the classifier head train.

    Metrics: those of the bert trainer (the task's metrics at rank r_max, ``params`` of the
    whole model, ``train_seconds``, ...), plus for every rank b scored ``<metric>@r<b>`` (the
    task's metrics at rank b, the same weights truncated) and ``trainable_params@r<b>``, and
    ``trainable_params`` at r_max. Plain LoRA (``mode: lora``) scores r_max alone unless
    ``eval_ranks`` lists others (LoRA trained at r_max, truncated at evaluation).

    The tokenizer is the base model's own. A kept checkpoint (``recipe.keep_checkpoint``) is
    the final adapter when several ranks are scored (every rank's score is the final weights'),
    else the one with the best dev value (:func:`~archsearch.worker._dylora.save_dylora`:
    peft's adapter files, which plain peft loads as a rank-r_max LoRA, and ``dylora.json``), the
    tokenizer and the checkpoint note; :func:`~archsearch.worker._dylora.load_dylora` on
    :func:`~archsearch.worker._lora_model.load_base_classifier` loads it back at any rank.
    """

    name = "lora"
    info = LORA_TRAINER_INFO
    splits: SplitEncoder
    _tokenizer: Any

    def __init__(
        self,
        glue_dir: str | None = None,
        tokenizer_path: str | None = None,
        save_minutes: float = DEFAULT_SAVE_MINUTES,
    ) -> None:
        super().__init__(glue_dir, tokenizer_path, save_minutes)
        self._tokenizer_source = str(self.tokenizer_path.resolve())
        # One split cache per tokenizer: the cache key does not name the tokenizer.
        self._encoders: dict[str, tuple[Any, SplitEncoder]] = {
            self._tokenizer_source: (None, self.splits)
        }

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        """Trains ``candidate`` (see the class docstring and ``Trainer``).

        Raises:
            CandidateError: An objective metric the trial does not produce (the LoRA metrics
                such as ``trainable_params`` and ``accuracy@r2`` count), or see
                :func:`parse_lora_plan`.
        """
        plan, spec = parse_lora_plan(candidate)
        produced = lora_metric_names(plan.tasks, spec, plan.measure_latency)
        unknown = [m for m in context.objective_metrics if m not in produced]
        if unknown:
            raise CandidateError(
                f"objective metric(s) {unknown} cannot be produced by the lora trainer on "
                f"{'+'.join(t.id for t in plan.tasks)}; it produces {list(produced)}"
            )
        # The bert stages check the objectives they know; the LoRA ones are checked above.
        bert_names = set(bert_metric_names(list(plan.tasks), plan.measure_latency))
        checked = copy.copy(context)
        checked.objective_metrics = tuple(m for m in context.objective_metrics if m in bert_names)
        result = super().train(candidate, checked)
        # how it trained, on the trial (a default may change between versions)
        result.info.update(
            lora_mode=spec.mode,
            lora_frozen=str(spec.frozen).lower(),
            lora_strict=str(spec.strict).lower(),
        )
        return result

    def save_checkpoint(
        self, model: torch.nn.Module, loop: TrainingLoop, folder: Path, candidate: Candidate
    ) -> Path:
        """Writes the adapter into ``folder``, replacing an earlier one atomically: the best
        evaluated one (see the class docstring), or, when the trial scores several ranks
        (DyLoRA, ``eval_ranks``), the final one, on which every rank was scored (the best
        evaluation is chosen at r_max alone: a rank's fetched adapter did not compute its
        rank trial's score)."""
        _, spec = parse_lora_plan(candidate)
        final = len(spec.eval_ranks) > 1
        if loop.best_state is not None and not final:  # None: no evaluation scored a number
            model.load_state_dict(loop.best_state)  # training is over: the model may change
        return save_checkpoint(
            model,
            loop,
            folder,
            candidate,
            self.tokenizer,
            write_weights=lambda staging: save_dylora(model, staging),
            final=final,
        )

    def parse_plan(self, candidate: Candidate) -> TrainingPlan:
        """The lora plan (:func:`parse_lora_plan`); also switches to the base model's tokenizer."""
        plan, spec = parse_lora_plan(candidate)
        self._use_tokenizer_of(spec)
        return plan

    def training_hooks(
        self,
        candidate: Candidate,
        task: GlueTask,
        device: torch.device | None = None,
        context: TrainContext | None = None,
    ) -> TrainingHooks:
        """The LoRA / DyLoRA hooks (:func:`~archsearch.worker._lora_model.lora_hooks`)."""
        plan, spec = parse_lora_plan(candidate)
        return lora_hooks(spec, int(candidate.recipe.get("seed", 0)), plan.max_seq_length)

    def _use_tokenizer_of(self, spec: LoraSpec) -> None:
        source, local = resolve_base(spec.model)
        key = str(Path(source).resolve()) if local else source
        if key == self._tokenizer_source:
            return
        # Park the current tokenizer and its splits; take (or make) the base model's.
        self._encoders[self._tokenizer_source] = (self._tokenizer, self.splits)
        if key not in self._encoders:
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            except (OSError, ValueError) as e:
                raise CandidateError(
                    f"recipe.lora.model {source!r}: its tokenizer cannot be loaded: {e}"
                ) from e
            self._encoders[key] = (
                tokenizer,
                SplitEncoder(self.glue_dir_arg, lambda: self.tokenizer),
            )
        self._tokenizer, self.splits = self._encoders[key]
        self._tokenizer_source = key
