"""FlexiBERT's token mixers, written from scratch in torch.

One class each, all taking the layer input ``(B, S, h)`` and the padding mask:

* :class:`SdpSelfAttention` (``sa``/``sdp``) and :class:`WmaSelfAttention` (``sa``/``wma``,
  scores Q·W·Kᵀ/√d with one d×d ``W`` shared by the heads, initialised U(−0.1, 0.1)).
* :class:`LinearTransformMixer` (``l``/``dft``, ``l``/``dct``): the masked mean of V (what
  the reference's zeroed attention scores give) plus a 2-D Fourier (real part) or DCT-II
  transform of the layer input over the sequence and hidden axes.
* :class:`DynamicConvMixer` (``c``/kernel): ConvBERT's mixed attention with head ratio 2.

Choices where the reference leaves room, and why (the model's are in ``_flexibert_model``):

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
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_WMA_INIT = 0.1  # W ~ U(-0.1, 0.1), as the reference initialises it
DROPOUT = 0.1  # BERT's hidden and attention dropout


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
        self.dropout = nn.Dropout(DROPOUT)

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
            # Built as ordinary tensors even inside inference_mode (a PUDF curriculum scores
            # the model before it trains): an inference tensor cached here failed every later
            # training step ("Inference tensors cannot be saved for backward").
            with torch.inference_mode(False):
                matrices = _transform_matrices(self.kind, self.hidden)
                cached = tuple(like.new_tensor(m) for m in matrices)
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
        self.dropout = nn.Dropout(DROPOUT)

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
