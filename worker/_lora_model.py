"""The ``lora`` model factory and the DyLoRA training hooks.

:class:`LoraModelFactory` (space ``lora``) loads a pretrained classifier (the packaged
all-MiniLM-L6-v2 teacher by default, any local folder or hub name otherwise) and wraps it in
peft LoRA with rank truncation (:mod:`._dylora`). :func:`lora_hooks` gives the training loop
its per-step rank draw and the per-rank evaluation.

Imports torch, transformers and peft at module level; ``archsearch.worker`` does not import it
eagerly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
import transformers

from archsearch.spaces._lora_spec import module_suffixes, unmatched_targets
from archsearch.worker._cost import (
    count_flops,
    count_parameters,
    count_parameters_without_embeddings,
)
from archsearch.worker._dylora import DyLoRA, attach_dylora, dylora_of
from archsearch.worker._loop import ConfigureFn, TrainingHooks
from archsearch.worker._lora_spec import LoraSpec, parse_lora_spec
from archsearch.worker._models import ModelFactory, register_model_factory
from archsearch.worker._task_info import Task
from archsearch.worker._teacher import resolve_teacher
from archsearch.worker._trainer import CandidateError

#: The space whose candidates this factory builds.
LORA_SPACE = "lora"


def resolve_base(model: str | None) -> tuple[str, bool]:
    """Where the base model is read from: ``(path or hub name, is_local)``.

    Raises:
        CandidateError: A path that does not exist, or a hub name while the hub is off.
    """
    try:
        return resolve_teacher(model)
    except FileNotFoundError as e:
        raise CandidateError(
            f"recipe.lora.model: folder {model!r} does not exist on this worker (give a model "
            "folder the workers can read, a hub name, or null for the packaged "
            "all-MiniLM-L6-v2)"
        ) from e
    except ValueError as e:
        raise CandidateError(
            f"recipe.lora.model {model!r} is not a local folder, and this worker may not "
            "download it (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): give a model folder "
            "the workers can read, or null for the packaged all-MiniLM-L6-v2"
        ) from e


def load_base_classifier(model: str | None, task: Task) -> torch.nn.Module:
    """The pretrained model ``model`` names under a fresh head for ``task``.

    Raises:
        CandidateError: The model cannot be found or read.
    """
    source, local = resolve_base(model)
    label_names = task.labels if task.labels is not None else ("score",)
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=local)
        # transformers 5 derives num_labels from id2label (there is no num_labels argument)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: i for i, name in enumerate(label_names)}
        config.problem_type = "regression" if task.is_regression else "single_label_classification"
        base: torch.nn.Module = transformers.AutoModelForSequenceClassification.from_pretrained(
            source, config=config, local_files_only=local
        )
    except (OSError, ValueError) as e:
        raise CandidateError(f"recipe.lora.model {source!r} cannot be loaded: {e}") from e
    return base


@register_model_factory(LORA_SPACE)
class LoraModelFactory(ModelFactory):
    """A pretrained classifier with LoRA (rank truncation attached) from the plan's
    architecture: ``{"lora": <checked recipe.lora>}`` (:func:`lora_architecture`)."""

    def build(self, architecture: Mapping[str, Any], task: Task, tokenizer: Any) -> torch.nn.Module:
        spec = parse_lora_spec(architecture["lora"])
        base = load_base_classifier(spec.model, task)
        try:
            return attach_dylora(base, spec)
        except ValueError as e:  # peft: no module matches the targets
            linear = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)]
            missing = unmatched_targets(spec.targets, linear) or list(spec.targets)
            raise CandidateError(
                f"recipe.lora.targets: {missing} match no linear module of the base model (its "
                f"linear modules end in {module_suffixes(linear)}; a target names a module "
                f"whose name is it or ends with '.' and it): {str(e)[:200]}"
            ) from e


def lora_architecture(spec: LoraSpec) -> dict[str, Any]:
    """What the plan holds as the architecture of a ``lora`` candidate."""
    return {"lora": spec.to_dict()}


def lora_hooks(spec: LoraSpec, seed: int, seq_len: int) -> TrainingHooks:
    """The loop hooks of a LoRA (``mode: lora``) or DyLoRA (``mode: dylora``) fine-tuning.

    * DyLoRA: before each optimiser step a rank b is drawn uniformly from 1..r_max with a
      generator seeded by the trial's ``seed`` (its own stream: the data order does not
      change) and set on every LoRA module, frozen or not as ``spec.frozen`` says. After the
      step the model goes back to r_max, so the loop's periodic evaluations (and intermediate
      reports) score rank r_max. With ``spec.strict``, the components that got no gradient at
      that step are put back after it.
    * Plain LoRA trains at r_max throughout.
    * Both: after training, each of ``spec.eval_ranks`` is scored with the one set of weights
      (``evaluate_many``, labels ``"r<b>"``; r_max is the loop's own final evaluation, not
      scored twice); ``hooks.metrics`` gets ``trainable_params`` (at
      r_max) and ``trainable_params@r<b>``, ``params@r<b>``, ``params_no_embeddings@r<b>``
      and ``flops@r<b>`` (counted as ``flops`` is, at ``seq_len``, under rank b) for each
      rank scored: a rank trial's costs are its rank's, not r_max's.
    """
    draws = RankDraws(seed)
    generator = draws.generator
    controller: list[DyLoRA] = []
    saved: list[Any] = []

    def init_fn(model: torch.nn.Module) -> None:
        lora = dylora_of(model)
        lora.set_rank(spec.r_max, frozen=False)
        controller[:] = [lora]
        at_max = lora.trainable_parameters(spec.r_max)
        hooks.metrics["trainable_params"] = float(at_max)
        # The weights hold r_max components; the model at rank b (what `fetch --rank b`
        # writes) has the LoRA components beyond b fewer: its params are the r_max count less
        # those (the classifier head, trainable at every rank, cancels out).
        size = {
            "params": count_parameters(model),
            "params_no_embeddings": count_parameters_without_embeddings(model),
        }
        for b in spec.eval_ranks:
            fewer = at_max - lora.trainable_parameters(b)
            hooks.metrics[f"trainable_params@r{b}"] = float(lora.trainable_parameters(b))
            for name, total in size.items():
                hooks.metrics[f"{name}@r{b}"] = float(total - fewer)
            with lora.at_rank(b):
                hooks.metrics[f"flops@r{b}"] = float(count_flops(model, seq_len))

    def before_step(step: int) -> None:
        lora = controller[0]
        b = int(torch.randint(1, spec.r_max + 1, (1,), generator=generator))
        lora.set_rank(b, frozen=spec.frozen)
        if spec.strict:
            saved[:] = [lora.snapshot_untrained()]

    def after_step(step: int) -> None:
        lora = controller[0]
        if saved:
            lora.restore(saved.pop())
        lora.set_rank(spec.r_max, frozen=False)

    def evaluate_many(model: torch.nn.Module) -> Iterator[tuple[str, ConfigureFn | None]]:
        lora = dylora_of(model)
        for b in spec.eval_ranks:
            # Training leaves the model at r_max: the loop's final evaluation already scored it.
            yield f"r{b}", (None if b == spec.r_max else (lambda _model, b=b: lora.at_rank(b)))

    hooks = TrainingHooks(
        init_fn=init_fn,
        evaluate_many=evaluate_many,
        before_step=before_step if spec.dynamic else None,
        after_step=after_step if spec.dynamic else None,
        stateful=(draws,) if spec.dynamic else (),
    )
    return hooks


class RankDraws:
    """DyLoRA's rank generator, seeded by the trial, whose state a resumed training restores."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
