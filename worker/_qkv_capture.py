"""Reading Q, K and V of one BERT self-attention layer during a forward pass (for MiniLM).

Q, K and V are read with forward hooks on ``encoder.layer[i].attention.self.{query,key,value}``
(the ``nn.Linear`` projections of transformers' ``BertSelfAttention``; their outputs are the
concatenated heads, before the per-head reshape). The MiniLM losses (``_distill_losses.py``)
recompute attention distributions from them instead of asking for ``output_attentions``, so they
work under any attention implementation (under SDPA, transformers returns no attention maps) and
see the distributions before attention dropout.
"""

from __future__ import annotations

import dataclasses
from types import TracebackType
from typing import Any

import torch
from torch import nn
from transformers import BertModel

#: The projections captured, in the order of a :class:`QKV`.
PROJECTIONS = ("query", "key", "value")


@dataclasses.dataclass(frozen=True)
class QKV:
    """One self-attention layer's projections, heads concatenated: each ``(batch, seq, width)``.

    Attributes:
        query, key, value: Outputs of the layer's query/key/value ``nn.Linear`` modules;
            ``width = num_heads * head_dim``.
        num_heads: The layer's attention heads (for per-head views, MiniLM v1).
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    num_heads: int

    @property
    def width(self) -> int:
        return int(self.query.shape[-1])


class QKVCapture:
    """Captures Q, K and V of one encoder layer during a forward pass (a context manager).

    Example::

        with QKVCapture(model, layer=-1) as capture:
            model(**inputs)
        qkv = capture.qkv

    Gradients flow through the captured tensors when the forward pass builds a graph.

    Args:
        model: A ``BertModel``, or a model holding one as ``.bert``
            (``BertForSequenceClassification``).
        layer: The encoder layer, Python-style (``-1`` is the last one).

    Raises:
        TypeError: No BERT encoder in ``model``.
        IndexError: No such layer.
    """

    def __init__(self, model: nn.Module, layer: int = -1) -> None:
        encoder = bert_encoder(model)
        layers = encoder.encoder.layer
        if not -len(layers) <= layer < len(layers):
            raise IndexError(f"layer {layer} out of range for a {len(layers)}-layer encoder")
        attention: Any = layers[layer].attention
        self.attention: nn.Module = attention.self
        self.num_heads = int(encoder.config.num_attention_heads)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> QKVCapture:
        self._outputs.clear()
        for name in PROJECTIONS:
            module = getattr(self.attention, name)
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Unregisters the hooks (the captured tensors stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def qkv(self) -> QKV:
        """The tensors of the last forward pass.

        Raises:
            RuntimeError: No forward pass ran through the layer while capturing.
        """
        missing = [name for name in PROJECTIONS if name not in self._outputs]
        if missing:
            raise RuntimeError(f"no {'/'.join(missing)} captured: run a forward pass first")
        return QKV(
            self._outputs["query"], self._outputs["key"], self._outputs["value"], self.num_heads
        )

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self._outputs[name] = output

        return hook


def bert_encoder(model: nn.Module) -> BertModel:
    """The ``BertModel`` inside ``model`` (itself, or its ``.bert``)."""
    if isinstance(model, BertModel):
        return model
    inner = getattr(model, "bert", None)
    if isinstance(inner, BertModel):
        return inner
    raise TypeError(f"expected a BERT model (BertModel or one with .bert), got {type(model)}")
