"""Model factories: the classifier a candidate's plan describes, built with random weights.

One :class:`ModelFactory` per space family, found by space name in :data:`MODEL_FACTORIES`
(filled by :func:`register_model_factory` where each factory is defined):

* ``bert``: :class:`BertModelFactory`, a homogeneous ``BertForSequenceClassification``;
* ``flexibert`` and ``flexibert-small``: :class:`FlexiBertModelFactory`, a heterogeneous
  ``FlexiBertForSequenceClassification`` (the plan holds the architecture in FlexiBERT's
  format for both).

A new family (LoRA students, supernets) defines a factory and registers it under its spaces'
names; the trainer then builds its models without other changes. Imports torch and transformers
at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification

from archsearch.spaces import Registry
from archsearch.worker._flexibert_config import FLEXIBERT_SPACES, FlexiBertConfig
from archsearch.worker._flexibert_model import FlexiBertForSequenceClassification
from archsearch.worker._task_info import Task
from archsearch.worker._trainer import CandidateError

#: Largest position the built models embed.
MAX_POSITIONS = 512


class ModelFactory(abc.ABC):
    """Builds a randomly initialised classifier (a regressor for STS-B-like tasks).

    Implementations: :class:`BertModelFactory` (``bert``), :class:`FlexiBertModelFactory`
    (``flexibert``, ``flexibert-small``).
    """

    @abc.abstractmethod
    def build(self, architecture: Mapping[str, Any], task: Task, tokenizer: Any) -> torch.nn.Module:
        """The model of ``architecture`` (the plan's, already checked) with ``task``'s head.

        Args:
            architecture: :attr:`~archsearch.worker._plan.TrainingPlan.architecture`.
            task: Its labels give the head's width (one output for regression).
            tokenizer: Gives the vocabulary size and the padding id.
        """


#: Model factories by space name.
MODEL_FACTORIES: Registry[type[ModelFactory]] = Registry("model factory", "candidate.space")


def register_model_factory(
    *spaces: str,
) -> Callable[[type[ModelFactory]], type[ModelFactory]]:
    """Class decorator: registers a factory for the spaces named.

    Raises:
        ValueError: A space already has a factory.
    """

    def register(cls: type[ModelFactory]) -> type[ModelFactory]:
        for space in spaces:
            MODEL_FACTORIES.register(space, cls)
        return cls

    return register


def model_factory(space: str) -> ModelFactory:
    """The factory for ``space``.

    Raises:
        CandidateError: No factory builds models of that space.
    """
    cls = MODEL_FACTORIES.get(space)
    if cls is None:
        raise CandidateError(
            f"no model factory for space {space!r}; this worker builds {list(MODEL_FACTORIES)}"
        )
    return cls()


@register_model_factory("bert")
class BertModelFactory(ModelFactory):
    """``BertForSequenceClassification`` from the four shape fields (``num_hidden_layers``,
    ``hidden_size``, ``num_attention_heads``, ``intermediate_size``)."""

    def build(
        self, architecture: Mapping[str, Any], task: Task, tokenizer: Any
    ) -> BertForSequenceClassification:
        # transformers 5 types BertConfig's arguments and has no ``num_labels`` parameter: the
        # head's width comes from id2label (which also puts the real label names in the config);
        # label2id is not derived from it there, so a kept checkpoint would read it as None.
        label_names = task.labels if task.labels is not None else ("score",)
        config = BertConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            max_position_embeddings=MAX_POSITIONS,
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            problem_type="regression" if task.is_regression else "single_label_classification",
            num_hidden_layers=architecture["num_hidden_layers"],
            hidden_size=architecture["hidden_size"],
            num_attention_heads=architecture["num_attention_heads"],
            intermediate_size=architecture["intermediate_size"],
        )
        return BertForSequenceClassification(config)


@register_model_factory(*FLEXIBERT_SPACES)
class FlexiBertModelFactory(ModelFactory):
    """``FlexiBertForSequenceClassification`` from an architecture in the ``flexibert``
    format, with the tokenizer's vocabulary and 512 positions."""

    def build(
        self, architecture: Mapping[str, Any], task: Task, tokenizer: Any
    ) -> FlexiBertForSequenceClassification:
        labels = len(task.labels) if task.labels is not None else 1
        config = FlexiBertConfig(
            dict(architecture),
            vocab_size=len(tokenizer),
            max_positions=MAX_POSITIONS,
            num_labels=labels,
            pad_token_id=tokenizer.pad_token_id,
        )
        return FlexiBertForSequenceClassification(config)
