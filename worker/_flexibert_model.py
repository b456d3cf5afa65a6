"""Heterogeneous FlexiBERT encoders, written from scratch in torch.

Every layer of a FlexiBERT model chooses its own width ``h``, head count ``n``, token-mixing
operation and feed-forward stack (algorithms.md 1.1; the architecture format is described in
``spaces/_flexibert_overlap.py``). One layer is::

    x ─ mixer(x) ─ mixer_output (Linear h→h) ─ dropout ─ (+x) ─ mixer_norm ─ y
    y ─ Linear(h→f₁) ─ GELU ─ … ─ Linear(f_k→h) ─ dropout ─ (+y) ─ output_norm
      ─ projection (Linear h→h_next, only when the next layer's width differs)

Mixers, one class each, all taking the layer input ``(B, S, h)`` and the padding mask:

* :class:`SdpSelfAttention` (``sa``/``sdp``) and :class:`WmaSelfAttention` (``sa``/``wma``,
  scores Q·W·Kᵀ/√d with one d×d ``W`` shared by the heads, initialised U(−0.1, 0.1)).
* :class:`LinearTransformMixer` (``l``/``dft``, ``l``/``dct``): the masked mean of V (what
  the reference's zeroed attention scores give) plus a 2-D Fourier (real part) or DCT-II
  transform of the layer input over the sequence and hidden axes.
* :class:`DynamicConvMixer` (``c``/kernel): ConvBERT's mixed attention with head ratio 2.

Choices where the reference leaves room, and why:

* **Positions**: learned *absolute* position embeddings at the embedding layer, for every
  operation. The reference uses relative-key embeddings inside self-attention only, which
  leaves linear-transform and convolution layers (and WMA, whose code path we could not
  check) without any position signal; absolute positions give every operation one, cost
  ``max_positions × h₀`` parameters once instead of ``(2·max_positions − 1) × d`` per layer,
  and keep the parameter count independent of how attention is implemented.
* **Padding never leaks into real tokens' outputs** (stricter than the reference). Attention
  masks padded keys; the linear transform runs over each sequence's *true* length (a
  per-length transform matrix, zero on padding), where the reference's FFT runs over the
  padded length so padding changes every output; the convolution zeroes padded positions
  before its key convolution and its unfolded values, so a window reaching past the end sees
  the same zeros as an unpadded sequence. A real token's output therefore does not depend on
  how much padding follows it (tested).
* **Transform scale**: both transforms are orthonormal (DFT divided by √(S·h), as
  ``torch.fft.fft2(norm="ortho")``; DCT-II orthonormal), keeping the mixing output on the
  scale of its input for any length. They are matrix products (cos/sin or DCT matrices), so
  ``FlopCounterMode`` counts their FLOPs, which an FFT call would hide.
* **Heads of a linear-transform layer** change nothing: uniform attention is the same for
  every head. Such a layer has only the value projection (no unused query/key weights).
* **MLM head**: BERT's (Linear h_L→h_L, GELU, LayerNorm, decoder to the vocabulary with its
  own bias). The decoder is tied to the word embedding when ``h₀ == h_L`` (as in BERT) and
  untied otherwise, since the two tables then have different widths.

Parameter names match :func:`archsearch.spaces._flexibert_overlap.flexibert_parameter_shapes`
(the torch-free description the server uses for counts and weight-transfer overlap).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput

from archsearch.spaces._flexibert_overlap import (
    DEFAULT_MAX_POSITIONS,
    DEFAULT_TYPE_VOCAB_SIZE,
    DEFAULT_VOCAB_SIZE,
    check_flexibert_architecture,
    flexibert_parameter_count,
    from_small_architecture,
    transferable,
    weight_overlap,
)

#: The design spaces whose candidates this module builds.
FLEXIBERT_SPACES = ("flexibert", "flexibert-small")
#: The files ``save_pretrained`` writes into a checkpoint folder.
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "flexibert_config.json"
_INIT_STD = 0.02  # BERT's initializer_range
_WMA_INIT = 0.1  # W ~ U(-0.1, 0.1), as the reference initialises it
_DROPOUT = 0.1
_LAYER_NORM_EPS = 1e-12

__all__ = [
    "FLEXIBERT_SPACES",
    "DynamicConvMixer",
    "FlexiBertConfig",
    "FlexiBertForMaskedLM",
    "FlexiBertForSequenceClassification",
    "FlexiBertLayer",
    "FlexiBertModel",
    "LinearTransformMixer",
    "SdpSelfAttention",
    "WmaSelfAttention",
    "candidate_architecture",
    "flexibert_parameter_count",
    "load_checkpoint",
    "transfer_weights",
    "weight_overlap",
]


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


# ----------------------------------------------------------------------------- mixers


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, S, heads·d) -> (B, heads, S, d)."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, S, d) -> (B, S, heads·d)."""
    batch, heads, length, size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * size)


def _attend(
    scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, dropout: nn.Dropout
) -> torch.Tensor:
    """Softmax over the real keys (``mask`` (B, S) bool), dropout, weighted sum of values."""
    scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return torch.matmul(dropout(scores.softmax(dim=-1)), values)


class SdpSelfAttention(nn.Module):
    """``sa``/``sdp``: multi-head scaled dot-product attention, scores Q·Kᵀ/√d.

    Args:
        hidden: Layer width h.
        heads: Heads n (h must be divisible by n).
    """

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_size = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(_DROPOUT)

    def scores(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        query = _split_heads(self.query(x), self.heads)
        key = _split_heads(self.key(x), self.heads)
        value = _split_heads(self.value(x), self.heads)
        return _merge_heads(_attend(self.scores(query, key), value, mask, self.dropout))


class WmaSelfAttention(SdpSelfAttention):
    """``sa``/``wma``: weighted multiplicative attention, scores Q·W·Kᵀ/√d with one learned
    d×d ``similarity`` matrix W shared by all heads, initialised U(−0.1, 0.1)."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__(hidden, heads)
        self.similarity = nn.Parameter(torch.empty(self.head_size, self.head_size))
        nn.init.uniform_(self.similarity, -_WMA_INIT, _WMA_INIT)

    def scores(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        weighted = torch.matmul(query, self.similarity)
        return torch.matmul(weighted, key.transpose(-1, -2)) / math.sqrt(self.head_size)


@functools.lru_cache(maxsize=256)
def _transform_matrices(kind: str, size: int) -> tuple[np.ndarray, ...]:
    """Orthonormal transform matrices of length ``size``: DCT-II ``(C,)`` with
    C[k, j] = √(2/n)·c_k·cos(π(2j+1)k/2n), c₀ = 1/√2; DFT ``(cos, sin)`` parts of
    exp(−2πi·kj/n)/√n."""
    k = np.arange(size)[:, None]
    j = np.arange(size)[None, :]
    if kind == "dct":
        matrix = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * j + 1) * k / (2 * size))
        matrix[0] /= np.sqrt(2.0)
        return (matrix,)
    angle = 2 * np.pi * ((k * j) % size) / size  # reduce k·j mod n first: exact angles
    return np.cos(angle) / np.sqrt(size), np.sin(angle) / np.sqrt(size)


def _device_sequence_matrices(
    kind: str, lengths: torch.Tensor, size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """``_transform_matrices`` of every example's length, zero-padded to ``size`` and stacked
    (B, S, S), built on the lengths' device in float64 (the same formulas: k·j is reduced
    mod n first, exactly, as integers below 2^53 are in float64) and then cast to ``dtype``."""
    n = lengths.to(torch.float64).clamp(min=1)[:, None, None]
    k = torch.arange(size, device=lengths.device, dtype=torch.float64)[None, :, None]
    j = torch.arange(size, device=lengths.device, dtype=torch.float64)[None, None, :]
    inside = (k < n) & (j < n)
    if kind == "dct":
        matrix = torch.sqrt(2.0 / n) * torch.cos(math.pi * (2 * j + 1) * k / (2 * n))
        matrix = torch.where(k == 0, matrix / math.sqrt(2.0), matrix)
        return (torch.where(inside, matrix, 0.0).to(dtype),)
    angle = 2 * math.pi * torch.remainder(k * j, n) / n
    scale = torch.rsqrt(n)
    return tuple(
        torch.where(inside, part * scale, 0.0).to(dtype)
        for part in (torch.cos(angle), torch.sin(angle))
    )


class LinearTransformMixer(nn.Module):
    """``l``/``dft`` or ``l``/``dct``: FNet-style token mixing plus uniform attention.

    Output = masked mean of V over the real tokens (uniform attention: the reference zeroes
    the scores) + T(x), where T is the orthonormal 2-D transform of the layer input over the
    sequence and hidden axes, taken over each sequence's true length: Re(F_S·x·F_h) for the
    DFT (= Cs·x·Ch − Ss·x·Sh with the cos/sin parts), C_S·x·C_hᵀ for the DCT-II. Padded
    positions' transform outputs are zero.

    Args:
        hidden: Layer width h.
        kind: ``"dft"`` or ``"dct"``.
    """

    def __init__(self, hidden: int, kind: str) -> None:
        super().__init__()
        if kind not in ("dft", "dct"):
            raise ValueError(f"linear transform kind must be 'dft' or 'dct', got {kind!r}")
        self.kind = kind
        self.hidden = hidden
        self.value = nn.Linear(hidden, hidden)
        # The hidden-axis matrices per (device, dtype): copied to the device once, not per call.
        self._hidden_matrices: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def _hidden(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (like.device, like.dtype)
        cached = self._hidden_matrices.get(key)
        if cached is None:
            cached = tuple(like.new_tensor(m) for m in _transform_matrices(self.kind, self.hidden))
            self._hidden_matrices[key] = cached
        return cached

    def _sequence_matrices(
        self, mask: torch.Tensor, like: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Each example's sequence-axis matrices over its true length, zero-padded to S:
        shape (S, S) when no example is padded, else (B, S, S).

        On a CUDA GPU they are computed there from the lengths (``_device_sequence_matrices``): no
        host synchronisation to read the lengths, no host-to-device copies per call."""
        if mask.device.type == "cuda":  # (float64, which MPS lacks, is fine on CUDA)
            return _device_sequence_matrices(self.kind, mask.sum(dim=1), mask.shape[1], like.dtype)
        batch, length = mask.shape
        lengths = mask.sum(dim=1).tolist()
        if all(n == length for n in lengths):
            return tuple(like.new_tensor(m) for m in _transform_matrices(self.kind, length))
        parts = len(_transform_matrices(self.kind, 1))
        out = [like.new_zeros(batch, length, length) for _ in range(parts)]
        for index, n in enumerate(lengths):
            for target, matrix in zip(out, _transform_matrices(self.kind, int(n)), strict=True):
                target[index, :n, :n] = like.new_tensor(matrix)
        return tuple(out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(x.dtype)[..., None]  # (B, S, 1)
        value = self.value(x)
        mean = (value * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True)
        hidden = self._hidden(x)
        sequence = self._sequence_matrices(mask, x)
        if self.kind == "dct":
            mixed = torch.matmul(torch.matmul(sequence[0], x), hidden[0].T)
        else:  # Re((Cs − iSs)·x·(Ch − iSh)) = Cs·x·Ch − Ss·x·Sh (both symmetric)
            mixed = torch.matmul(torch.matmul(sequence[0], x), hidden[0]) - torch.matmul(
                torch.matmul(sequence[1], x), hidden[1]
            )
        return mean + mixed


class DynamicConvMixer(nn.Module):
    """``c``/kernel k: ConvBERT's mixed attention with head ratio 2.

    n/2 heads of size d = h/n attend as in :class:`SdpSelfAttention`; n/2 "convolution
    heads" of the same size apply span-based dynamic convolution: a depthwise-separable
    convolution of the layer input (kernel k) gives span-aware keys, which gate the queries;
    a linear map of the gated queries gives each position and head a softmax-normalised k-tap
    kernel, applied to the k values around the position (``conv_out`` of the input). The two
    halves are concatenated (attention heads first) to width h. Padded positions are zeroed
    before both convolutions (see the module docstring).

    Args:
        hidden: Layer width h.
        heads: Heads n (even; h divisible by n).
        kernel: Odd kernel size k.
    """

    def __init__(self, hidden: int, heads: int, kernel: int) -> None:
        super().__init__()
        if heads % 2 or hidden % heads or kernel % 2 == 0:
            raise ValueError(
                f"dynamic convolution needs even heads dividing hidden and an odd kernel, "
                f"got hidden {hidden}, heads {heads}, kernel {kernel}"
            )
        half = hidden // 2
        self.heads = heads // 2  # attention heads, and as many convolution heads
        self.head_size = hidden // heads
        self.kernel = kernel
        self.query = nn.Linear(hidden, half)
        self.key = nn.Linear(hidden, half)
        self.value = nn.Linear(hidden, half)
        self.key_conv_depthwise = nn.Conv1d(
            hidden, hidden, kernel, padding=kernel // 2, groups=hidden, bias=False
        )
        self.key_conv_pointwise = nn.Conv1d(hidden, half, 1, bias=False)
        self.key_conv_bias = nn.Parameter(torch.zeros(half))
        self.conv_kernel = nn.Linear(half, self.heads * kernel)
        self.conv_out = nn.Linear(hidden, half)
        self.dropout = nn.Dropout(_DROPOUT)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        real = mask.to(x.dtype)[..., None]
        query_flat = self.query(x)
        query = _split_heads(query_flat, self.heads)
        key = _split_heads(self.key(x), self.heads)
        value = _split_heads(self.value(x), self.heads)
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
        attended = _merge_heads(_attend(scores, value, mask, self.dropout))

        span_keys = self.key_conv_pointwise(self.key_conv_depthwise((x * real).transpose(1, 2)))
        span_keys = span_keys.transpose(1, 2) + self.key_conv_bias
        kernels = self.conv_kernel(span_keys * query_flat)
        kernels = kernels.view(batch, length, self.heads, self.kernel).softmax(dim=-1)
        values = self.conv_out(x) * real
        pad = self.kernel // 2
        windows = F.pad(values, (0, 0, pad, pad)).unfold(1, self.kernel, 1)  # (B, S, h/2, k)
        windows = windows.reshape(batch, length, self.heads, self.head_size, self.kernel)
        convolved = torch.matmul(windows, kernels[..., None]).reshape(batch, length, -1)
        return torch.cat([attended, convolved], dim=-1)


def build_mixer(operation: str, parameter: str, hidden: int, heads: int) -> nn.Module:
    """The mixer module of one layer (``o``, ``p``, ``h``, ``n``)."""
    if operation == "sa":
        return (
            SdpSelfAttention(hidden, heads)
            if parameter == "sdp"
            else WmaSelfAttention(hidden, heads)
        )
    if operation == "l":
        return LinearTransformMixer(hidden, parameter)
    if operation == "c":
        return DynamicConvMixer(hidden, heads, int(parameter))
    raise ValueError(f"unknown operation {operation!r}; use sa, l or c")


# ----------------------------------------------------------------------------- model


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
        self.dropout = nn.Dropout(_DROPOUT)
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
        self.dropout = nn.Dropout(_DROPOUT)

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
        self.dropout = nn.Dropout(_DROPOUT)
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
    ) -> MaskedLMOutput:
        hidden = self.flexibert(input_ids, attention_mask, token_type_ids)
        logits = self.mlm_decoder(self.mlm_norm(F.gelu(self.mlm_transform(hidden))))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100
            )
        return MaskedLMOutput(loss=loss, logits=logits)


# ----------------------------------------------------------------------------- transfer


def load_checkpoint(folder: str | Path) -> tuple[FlexiBertConfig, dict[str, torch.Tensor]]:
    """The config and weights of a folder written by ``save_pretrained`` (on the CPU).

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
    values.pop("model", None)
    return FlexiBertConfig.from_dict(values), load_file(str(folder / WEIGHTS_FILE))


def transfer_weights(
    source_state: Mapping[str, torch.Tensor],
    source_architecture: Mapping[str, Any],
    target: _FlexiBertHeadModel,
    apply: bool = True,
) -> float:
    """Ordered (OD) weight transfer from a trained neighbour into ``target``, in place.

    Every parameter of ``target`` whose name the source has receives the source's leading
    ``min`` slice along each axis (the rest keeps its initialisation); a layer's
    token-mixing block only when the two layers' operation types match (see
    :func:`archsearch.spaces._flexibert_overlap.weight_overlap`, which predicts the returned
    value from the architectures alone).

    Args:
        source_state: The neighbour's ``state_dict`` (names as in ``target``).
        source_architecture: The neighbour's architecture.
        target: The freshly built model to fill.
        apply: False only measures the share (nothing is copied).

    Returns:
        The share of ``target``'s parameters that received (or would receive) weights, in
        [0, 1].
    """
    target_architecture = target.architecture
    copied = total = 0
    params = dict(target.named_parameters())  # a tied tensor once, under its first name
    with torch.no_grad():
        for name, param in params.items():
            total += param.numel()
            source = source_state.get(name)
            if source is None or not transferable(name, source_architecture, target_architecture):
                continue
            if source.ndim != param.ndim:
                continue
            sizes = [min(a, b) for a, b in zip(param.shape, source.shape, strict=True)]
            if apply:
                region = tuple(slice(0, size) for size in sizes)
                param[region] = source[region].to(param.device, param.dtype)
            copied += math.prod(sizes)
    return copied / total
