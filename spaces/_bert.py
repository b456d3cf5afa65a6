"""Homogeneous BERT students: every layer has the same shape."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from archsearch.spaces._base import SPACES, DesignSpace
from archsearch.spaces._errors import SpecError
from archsearch.spaces._options import int_choices, reject_unknown
from archsearch.spaces._protocols import MutableSpace

if TYPE_CHECKING:
    import optuna

_ARCH_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")


@SPACES.register("bert")
class BertSpace(DesignSpace, MutableSpace):
    """BERT students: layers, hidden size, heads and feed-forward size.

    Only valid combinations are produced: the hidden size must divide evenly into heads. When
    every head count divides every hidden size, ``num_attention_heads`` is one parameter;
    otherwise each hidden size gets its own conditional parameter
    (``num_attention_heads@h<hidden>``) holding only the head counts valid for it, because an
    Optuna parameter's choices must not change between trials.

    Options (all lists of ints):
        num_hidden_layers: default [2, 4, 6].
        hidden_size: default [128, 256, 384].
        num_attention_heads: default [2, 4, 8].
        intermediate_ratio: feed-forward size as a multiple of hidden; default [1, 2, 4].
    """

    name = "bert"

    def __init__(self, **options: Any) -> None:
        reject_unknown(
            options,
            {"num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_ratio"},
        )
        self.layers = int_choices(
            "num_hidden_layers", options.get("num_hidden_layers", [2, 4, 6]), 1, 48
        )
        self.hidden = int_choices(
            "hidden_size", options.get("hidden_size", [128, 256, 384]), 8, 8192
        )
        self.heads = int_choices(
            "num_attention_heads", options.get("num_attention_heads", [2, 4, 8]), 1, 128
        )
        self.ratios = int_choices(
            "intermediate_ratio", options.get("intermediate_ratio", [1, 2, 4]), 1, 16
        )
        self.valid_heads = {h: [a for a in self.heads if h % a == 0] for h in self.hidden}
        for h, heads in self.valid_heads.items():
            if not heads:
                raise SpecError(
                    "space_options.num_attention_heads",
                    f"no head count in {self.heads} divides hidden size {h}",
                    "add a head count that divides it, or drop that hidden size",
                )
        self.shared_heads = all(len(v) == len(self.heads) for v in self.valid_heads.values())

    def options(self) -> dict[str, Any]:
        return {
            "num_hidden_layers": self.layers,
            "hidden_size": self.hidden,
            "num_attention_heads": self.heads,
            "intermediate_ratio": self.ratios,
        }

    def _heads_param(self, hidden: int) -> str:
        return "num_attention_heads" if self.shared_heads else f"num_attention_heads@h{hidden}"

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        layers = trial.suggest_categorical("num_hidden_layers", self.layers)
        hidden = trial.suggest_categorical("hidden_size", self.hidden)
        heads = trial.suggest_categorical(self._heads_param(hidden), self.valid_heads[hidden])
        ratio = trial.suggest_categorical("intermediate_ratio", self.ratios)
        return self.validate(
            {
                "num_hidden_layers": layers,
                "hidden_size": hidden,
                "num_attention_heads": heads,
                "intermediate_size": ratio * hidden,
            }
        )

    def validate(self, architecture: Any) -> dict[str, Any]:
        if not isinstance(architecture, dict):
            raise SpecError("architecture", "must be a JSON object")
        missing = [k for k in _ARCH_KEYS if k not in architecture]
        if missing:
            raise SpecError(f"architecture.{missing[0]}", "missing")
        extra = sorted(set(architecture) - set(_ARCH_KEYS))
        if extra:
            raise SpecError(f"architecture.{extra[0]}", "unknown field", f"known: {_ARCH_KEYS}")
        for k in _ARCH_KEYS:
            v = architecture[k]
            if isinstance(v, bool) or not isinstance(v, int):
                raise SpecError(f"architecture.{k}", f"must be an int, got {v!r}")
        layers, hidden, heads, inter = (architecture[k] for k in _ARCH_KEYS)
        if layers not in self.layers:
            raise SpecError("architecture.num_hidden_layers", f"{layers} not in {self.layers}")
        if hidden not in self.hidden:
            raise SpecError("architecture.hidden_size", f"{hidden} not in {self.hidden}")
        if heads not in self.valid_heads[hidden]:
            raise SpecError(
                "architecture.num_attention_heads",
                f"{heads} heads invalid for hidden size {hidden}",
                f"choose from {self.valid_heads[hidden]}",
            )
        if inter % hidden or inter // hidden not in self.ratios:
            raise SpecError(
                "architecture.intermediate_size",
                f"{inter} is not hidden_size x one of {self.ratios}",
            )
        return {k: architecture[k] for k in _ARCH_KEYS}

    def sample(self, rng: random.Random) -> dict[str, Any]:
        hidden = rng.choice(self.hidden)
        return {
            "num_hidden_layers": rng.choice(self.layers),
            "hidden_size": hidden,
            "num_attention_heads": rng.choice(self.valid_heads[hidden]),
            "intermediate_size": rng.choice(self.ratios) * hidden,
        }

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        arch = self.validate(architecture)
        hidden = arch["hidden_size"]
        return {
            "num_hidden_layers": arch["num_hidden_layers"],
            "hidden_size": hidden,
            self._heads_param(hidden): arch["num_attention_heads"],
            "intermediate_ratio": arch["intermediate_size"] // hidden,
        }

    def neighbours(self, architecture: dict[str, Any]) -> list[dict[str, Any]]:
        """The architectures with one of layers, hidden size, heads or feed-forward ratio
        changed (see :class:`MutableSpace`). A new hidden size keeps the ratio, and the head
        count when it divides it (else the valid head count nearest to it)."""
        a = self.validate(architecture)
        hidden, heads = a["hidden_size"], a["num_attention_heads"]
        ratio = a["intermediate_size"] // hidden
        out = [{**a, "num_hidden_layers": n} for n in self.layers if n != a["num_hidden_layers"]]
        for h in self.hidden:
            if h != hidden:
                valid = self.valid_heads[h]
                kept = heads if heads in valid else min(valid, key=lambda v: (abs(v - heads), v))
                out.append(
                    {
                        **a,
                        "hidden_size": h,
                        "num_attention_heads": kept,
                        "intermediate_size": ratio * h,
                    }
                )
        out += [{**a, "num_attention_heads": n} for n in self.valid_heads[hidden] if n != heads]
        out += [{**a, "intermediate_size": r * hidden} for r in self.ratios if r != ratio]
        return out

    def describe(self, architecture: dict[str, Any]) -> str:
        a = architecture
        return (
            f"L{a['num_hidden_layers']} H{a['hidden_size']} "
            f"A{a['num_attention_heads']} I{a['intermediate_size']}"
        )


def bert_parameter_count(
    architecture: dict[str, Any],
    vocab_size: int = 30522,
    max_position_embeddings: int = 512,
    type_vocab_size: int = 2,
    num_labels: int = 2,
) -> int:
    """Analytic parameter count of ``BertForSequenceClassification`` for ``architecture``."""
    n = architecture["num_hidden_layers"]
    h = architecture["hidden_size"]
    i = architecture["intermediate_size"]
    embeddings = (vocab_size + max_position_embeddings + type_vocab_size) * h + 2 * h
    attention = 4 * (h * h + h) + 2 * h
    ffn = (h * i + i) + (i * h + h) + 2 * h
    pooler = h * h + h
    classifier = h * num_labels + num_labels
    return embeddings + n * (attention + ffn) + pooler + classifier
