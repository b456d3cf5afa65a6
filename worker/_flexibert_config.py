"""What a FlexiBERT model is built from: a candidate's architecture in the ``flexibert`` format,
the embedding sizes around it, and the files of a checkpoint folder (torch-free)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from archsearch import spaces
from archsearch.spaces._checkpoint_names import FLEXIBERT_CONFIG_FILE
from archsearch.spaces._flexibert_overlap import (
    DEFAULT_MAX_POSITIONS,
    DEFAULT_TYPE_VOCAB_SIZE,
    DEFAULT_VOCAB_SIZE,
    check_flexibert_architecture,
    flexibert_parameter_count,
    from_small_architecture,
)

#: The design spaces whose candidates ``_flexibert_model`` builds.
FLEXIBERT_SPACES = spaces.FLEXIBERT_SPACES
#: The files ``save_pretrained`` writes into a checkpoint folder.
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = FLEXIBERT_CONFIG_FILE


def candidate_architecture(space: str, architecture: Any) -> dict[str, Any]:
    """A candidate's architecture in the ``flexibert`` format: checked as is for space
    ``"flexibert"``, converted from the table format for ``"flexibert-small"`` (every layer
    ``sa`` with similarity ``s``, heads ``a``, one feed-forward layer ``f``).

    Raises:
        SpecError: The architecture is malformed (the message names the field).
        ValueError: ``space`` is not one of :data:`FLEXIBERT_SPACES`.
    """
    if space == "flexibert":
        return check_flexibert_architecture(architecture)
    if space == "flexibert-small":
        if not isinstance(architecture, dict):
            raise ValueError("a flexibert-small architecture must be a JSON object")
        return from_small_architecture(architecture)
    raise ValueError(f"space {space!r} is not a FlexiBERT space; use one of {FLEXIBERT_SPACES}")


class FlexiBertConfig:
    """What a FlexiBERT model is built from: the architecture and the embedding sizes.

    Args:
        architecture: A ``flexibert`` architecture (checked here).
        vocab_size: Word-embedding rows (the tokenizer's vocabulary).
        max_positions: Position-embedding rows (longest sequence).
        type_vocab: Token-type (segment) embedding rows.
        num_labels: Classifier outputs; 1 makes the classifier a regressor (MSE loss).
        pad_token_id: Padding id of the tokenizer (its embedding row starts at zero).
    """

    def __init__(
        self,
        architecture: Mapping[str, Any],
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        max_positions: int = DEFAULT_MAX_POSITIONS,
        type_vocab: int = DEFAULT_TYPE_VOCAB_SIZE,
        num_labels: int = 2,
        pad_token_id: int = 0,
    ) -> None:
        self.architecture = check_flexibert_architecture(dict(architecture))
        for name, value in (
            ("vocab_size", vocab_size),
            ("max_positions", max_positions),
            ("type_vocab", type_vocab),
            ("num_labels", num_labels),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.vocab_size = vocab_size
        self.max_positions = max_positions
        self.type_vocab = type_vocab
        self.num_labels = num_labels
        self.pad_token_id = pad_token_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "vocab_size": self.vocab_size,
            "max_positions": self.max_positions,
            "type_vocab": self.type_vocab,
            "num_labels": self.num_labels,
            "pad_token_id": self.pad_token_id,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FlexiBertConfig:
        return cls(**values)

    def parameter_count(self) -> int:
        """The analytic ``params`` of the sequence classifier built from this config."""
        return flexibert_parameter_count(
            self.architecture, self.vocab_size, self.max_positions, self.type_vocab, self.num_labels
        )
