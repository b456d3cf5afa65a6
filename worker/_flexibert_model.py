"""Heterogeneous FlexiBERT encoders, written from scratch in torch.

Every layer of a FlexiBERT model chooses its own width ``h``, head count ``n``, token-mixing
operation and feed-forward stack (algorithms.md 1.1; the architecture format is described in
``spaces/_flexibert_overlap.py``). One layer is::

    x ─ mixer(x) ─ mixer_output (Linear h→h) ─ dropout ─ (+x) ─ mixer_norm ─ y
    y ─ Linear(h→f₁) ─ GELU ─ … ─ Linear(f_k→h) ─ dropout ─ (+y) ─ output_norm
      ─ projection (Linear h→h_next, only when the next layer's width differs)

The token mixers (self-attention, linear transforms, dynamic convolution) and the choices made
in them are in ``_flexibert_mixers``.

Choices where the reference leaves room, and why:

* **Positions**: learned *absolute* position embeddings at the embedding layer, for every
  operation. The reference uses relative-key embeddings inside self-attention only, which
  leaves linear-transform and convolution layers (and WMA, whose code path we could not
  check) without any position signal; absolute positions give every operation one, cost
  ``max_positions × h₀`` parameters once instead of ``(2·max_positions − 1) × d`` per layer,
  and keep the parameter count independent of how attention is implemented.
* **MLM head**: BERT's (Linear h_L→h_L, GELU, LayerNorm, decoder to the vocabulary with its
  own bias). The decoder is tied to the word embedding when ``h₀ == h_L`` (as in BERT) and
  untied otherwise, since the two tables then have different widths.

Parameter names match :func:`archsearch.spaces._flexibert_overlap.flexibert_parameter_shapes`
(the torch-free description the server uses for counts and weight-transfer overlap). What a model
is built from (:class:`~archsearch.worker._flexibert_config.FlexiBertConfig`) and a candidate's
architecture in this format are in ``_flexibert_config``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput

from archsearch.spaces._flexibert_overlap import flexibert_parameter_count, weight_overlap
from archsearch.worker._flexibert_config import CONFIG_FILE, WEIGHTS_FILE, FlexiBertConfig
from archsearch.worker._flexibert_mixers import (
    DROPOUT,
    DynamicConvMixer,
    LinearTransformMixer,
    SdpSelfAttention,
    WmaSelfAttention,
    build_mixer,
)

_INIT_STD = 0.02  # BERT's initializer_range
_LAYER_NORM_EPS = 1e-12

__all__ = [
    "DynamicConvMixer",
    "FlexiBertForMaskedLM",
    "FlexiBertForSequenceClassification",
    "FlexiBertLayer",
    "FlexiBertModel",
    "LinearTransformMixer",
    "SdpSelfAttention",
    "WmaSelfAttention",
    "flexibert_parameter_count",
    "weight_overlap",
]


class FlexiBertLayer(nn.Module):
    """One encoder layer: mixer, add & norm, feed-forward stack, add & norm, and a
    projection to the next layer's width when it differs.

    Args:
        operation, parameter, hidden, heads: The layer's ``o``, ``p``, ``h``, ``n``.
        feed_forward: The stack's widths f₁…f_k.
        next_hidden: The next layer's width (None for the last layer).
    """

    def __init__(
        self,
        operation: str,
        parameter: str,
        hidden: int,
        heads: int,
        feed_forward: list[int],
        next_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.mixer = build_mixer(operation, parameter, hidden, heads)
        self.mixer_output = nn.Linear(hidden, hidden)
        self.mixer_norm = nn.LayerNorm(hidden, eps=_LAYER_NORM_EPS)
        widths = [hidden, *feed_forward, hidden]
        self.feed_forward = nn.ModuleList(
            nn.Linear(widths[j], widths[j + 1]) for j in range(len(widths) - 1)
        )
        self.output_norm = nn.LayerNorm(hidden, eps=_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(DROPOUT)
        self.projection = (
            nn.Linear(hidden, next_hidden)
            if next_hidden is not None and next_hidden != hidden
            else None
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mixed = self.dropout(self.mixer_output(self.mixer(x, mask)))
        x = self.mixer_norm(mixed + x)
        out = x
        last = len(self.feed_forward) - 1
        for j, linear in enumerate(self.feed_forward):
            out = linear(out)
            if j < last:
                out = F.gelu(out)
        x = self.output_norm(self.dropout(out) + x)
        return self.projection(x) if self.projection is not None else x


class FlexiBertEmbeddings(nn.Module):
    """Word + absolute position + token-type embeddings of width h₀, LayerNorm, dropout."""

    def __init__(self, config: FlexiBertConfig) -> None:
        super().__init__()
        width = config.architecture["h"][0]
        self.word_embeddings = nn.Embedding(
            config.vocab_size, width, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_positions, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab, width)
        self.layer_norm = nn.LayerNorm(width, eps=_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        embedded = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(embedded))


class FlexiBertModel(nn.Module):
    """The encoder: embeddings, then the heterogeneous layers; returns (B, S, h_L)."""

    def __init__(self, config: FlexiBertConfig) -> None:
        super().__init__()
        self.config = config
        arch = config.architecture
        self.embeddings = FlexiBertEmbeddings(config)
        self.layers = nn.ModuleList(
            FlexiBertLayer(
                arch["o"][i],
                arch["p"][i],
                arch["h"][i],
                arch["n"][i],
                arch["f"][i],
                arch["h"][i + 1] if i + 1 < arch["l"] else None,
            )
            for i in range(arch["l"])
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if input_ids.shape[1] > self.config.max_positions:
            raise ValueError(
                f"sequence of {input_ids.shape[1]} tokens is longer than the "
                f"{self.config.max_positions} position embeddings; truncate it"
            )
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool)
            if attention_mask is None
            else attention_mask.bool()
        )
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.embeddings(input_ids, types)
        for layer in self.layers:
            x = layer(x, mask)
        return x


def _init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms; WMA's W and
    the padding row keep their own (set by their modules)."""
    if isinstance(module, nn.Linear | nn.Conv1d):
        nn.init.normal_(module.weight, std=_INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=_INIT_STD)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class _FlexiBertHeadModel(nn.Module):
    """Shared parts of the task models: the encoder under ``flexibert`` and checkpoints."""

    flexibert: FlexiBertModel

    @property
    def base_model(self) -> FlexiBertModel:
        """The encoder (``archsearch.worker._cost`` finds the embeddings through it)."""
        return self.flexibert

    @property
    def architecture(self) -> dict[str, Any]:
        return self.flexibert.config.architecture

    def save_pretrained(
        self, folder: str | Path, state_dict: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        """Writes the weights (``model.safetensors``; ``state_dict`` instead of the live
        ones when given) and the config (``flexibert_config.json``) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = dict(self.state_dict() if state_dict is None else state_dict)
        # safetensors refuses tensors sharing memory (a tied MLM decoder): keep one copy.
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        config = {**self.flexibert.config.to_dict(), "model": type(self).__name__}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Self:
        """The model :meth:`save_pretrained` wrote into ``folder`` (a kept checkpoint, or one
        ``archsearch fetch`` downloaded), on the CPU, in eval mode.

        Raises:
            FileNotFoundError: ``folder`` lacks the weights or the config.
            ValueError: The folder holds another kind of FlexiBERT model.
        """
        config, state, kind = load_checkpoint(folder)
        if kind not in (None, cls.__name__):
            raise ValueError(f"{folder} holds a {kind}, not a {cls.__name__}")
        model = cls(config)
        model.load_state_dict(state)
        return model.eval()


def load_checkpoint(
    folder: str | Path,
) -> tuple[FlexiBertConfig, dict[str, torch.Tensor], str | None]:
    """The config, weights (on the CPU) and model class name (None when not recorded) of a
    folder :meth:`_FlexiBertHeadModel.save_pretrained` wrote.

    Raises:
        FileNotFoundError: The folder lacks the weights or the config.
    """
    folder = Path(folder)
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a FlexiBERT checkpoint: no {', '.join(missing)} (write one with "
            f"recipe keep_checkpoint: true on a flexibert candidate)"
        )
    values = json.loads((folder / CONFIG_FILE).read_text())
    kind = values.pop("model", None)
    return FlexiBertConfig.from_dict(values), load_file(str(folder / WEIGHTS_FILE)), kind


class FlexiBertForSequenceClassification(_FlexiBertHeadModel):
    """Encoder + BERT pooler (tanh Linear on the first token, width h_L) + classifier.

    ``forward`` returns a ``SequenceClassifierOutput`` whose ``loss`` (when ``labels`` are
    given) is cross-entropy, or MSE for a single-output regressor.
    """

    def __init__(self, config: FlexiBertConfig) -> None:
        super().__init__()
        last = config.architecture["h"][-1]
        self.flexibert = FlexiBertModel(config)
        self.pooler = nn.Linear(last, last)
        self.dropout = nn.Dropout(DROPOUT)
        self.classifier = nn.Linear(last, config.num_labels)
        self.apply(_init_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        hidden = self.flexibert(input_ids, attention_mask, token_type_ids)
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.flexibert.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class FlexiBertForMaskedLM(_FlexiBertHeadModel):
    """Encoder + BERT's MLM head on h_L (tied to the word embedding when h₀ == h_L).

    ``forward`` returns a ``MaskedLMOutput``; ``labels`` holds the original token at masked
    positions and -100 elsewhere.
    """

    def __init__(self, config: FlexiBertConfig) -> None:
        super().__init__()
        last = config.architecture["h"][-1]
        self.flexibert = FlexiBertModel(config)
        self.mlm_transform = nn.Linear(last, last)
        self.mlm_norm = nn.LayerNorm(last, eps=_LAYER_NORM_EPS)
        self.mlm_decoder = nn.Linear(last, config.vocab_size)
        self.apply(_init_weights)
        if config.architecture["h"][0] == last:
            self.mlm_decoder.weight = self.flexibert.embeddings.word_embeddings.weight

    @property
    def tied(self) -> bool:
        return self.mlm_decoder.weight is self.flexibert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        masked_only: bool = False,
    ) -> MaskedLMOutput:
        """The MLM logits and, with ``labels`` (-100 where not masked), the mean
        cross-entropy over the masked positions.

        ``masked_only`` (with ``labels``): the head runs on the masked positions alone and
        ``logits`` holds only their rows (in row-major order). The loss and its gradients are
        the same; the vocabulary projection, most of a small model's cost, shrinks by the
        masking rate (15%).
        """
        hidden = self.flexibert(input_ids, attention_mask, token_type_ids)
        if masked_only and labels is not None:
            keep = labels != -100
            hidden, labels = hidden[keep], labels[keep]
        logits = self.mlm_decoder(self.mlm_norm(F.gelu(self.mlm_transform(hidden))))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        return MaskedLMOutput(loss=loss, logits=logits)
