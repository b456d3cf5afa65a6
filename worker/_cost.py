"""Cost metrics of a model (size, FLOPs, latency, training memory) and measurement provenance.

Each cost is one function, so trainers, benchmarks and tests measure the same thing the same
way (DESIGN.md principle 5: raw cost metrics are stored with every trial):

* :func:`count_parameters` and :func:`count_parameters_without_embeddings`: ``params`` and
  ``params_no_embeddings``.
* :func:`count_flops`: ``flops``, forward FLOPs of one sequence, counted by
  ``torch.utils.flop_counter.FlopCounterMode``.
* :func:`measure_latency_ms`: ``latency_ms_b1`` and ``latency_ms_b32``, measured inference
  latency on the worker's device.
* ``PeakMemoryMeter`` (``_memory_meter``): ``peak_train_memory_mb``, the memory a training run
  added.
* ``provenance`` (``_provenance``): what a measurement depends on (seed, data, device, versions,
  code).

Imports torch at module level, like the trainers; ``archsearch.worker`` does not import it
eagerly.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

#: Sequence length and batch sizes of the latency metrics: ``latency_ms_b{batch}`` at 128 tokens.
LATENCY_SEQ_LENGTH = 128
LATENCY_BATCH_SIZES = (1, 32)


# ----------------------------------------------------------------------------- parameters


def count_parameters(model: torch.nn.Module) -> int:
    """``params``: every parameter of ``model``, a shared (tied) tensor counted once."""
    return sum(p.numel() for p in model.parameters())


def embedding_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules whose parameters are "embeddings" for ``params_no_embeddings``.

    For a Hugging Face encoder (BERT and its relatives) this is the base model's
    ``embeddings`` block: word, position and token-type embeddings and the LayerNorm applied
    to their sum (BERT-base: 23.8 M of its 109.5 M parameters). A model without such a block
    falls back to its ``torch.nn.Embedding`` modules.
    """
    base = getattr(model, "base_model", model)
    block = getattr(base, "embeddings", None)
    if isinstance(block, torch.nn.Module):
        return [block]
    return [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]


def count_parameters_without_embeddings(model: torch.nn.Module) -> int:
    """``params_no_embeddings``: :func:`count_parameters` minus :func:`embedding_modules`'.

    What remains for BERT is the encoder layers, the pooler and the task head: the part that
    grows with depth and width, whereas the embedding tables (vocabulary × ``hidden_size``
    for the words alone) dominate a small student's total.
    """
    embedding_ids = {id(p) for m in embedding_modules(model) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)


# ----------------------------------------------------------------------------- FLOPs


def count_flops(model: torch.nn.Module, seq_len: int) -> int:
    """``flops``: FLOPs of one forward pass of one ``seq_len``-token sequence (batch 1, no
    padding, inference mode), as ``FlopCounterMode`` counts them.

    ``FlopCounterMode`` counts matrix products only (``mm``, ``addmm``, ``bmm``, ``baddbmm``,
    convolutions and the fused attention kernels), at 2 FLOPs per multiply-add; softmax,
    LayerNorm, GELU, residual additions and embedding lookups count zero. It has no formula
    for the CPU flash-attention kernel that PyTorch's SDPA picks on CPU, so attention scores
    would count zero on a CPU worker and 4·s²·h on a GPU. To make ``flops`` a property of the
    architecture rather than of the worker, a Hugging Face model is counted with
    ``attn_implementation="eager"`` (explicit ``bmm`` products, the same count the GPU
    fused kernels get) and restored afterwards.

    For BERT with ``L`` layers, hidden size ``h``, intermediate size ``i``, ``C`` labels and
    sequence length ``s`` this is exactly::

        L · (8·s·h²      # Q, K, V and output projections: 4 matmuls of (s×h)·(h×h)
             + 4·s²·h    # scores Q·Kᵀ and the weighted sum of V, over all heads
             + 4·s·h·i)  # the two feed-forward matmuls
        + 2·h² + 2·h·C   # pooler and classifier, applied to the first token only

    (see :func:`bert_flops`). Biases are not counted (``addmm`` is counted as its product).

    Args:
        model: A model called as ``model(input_ids=..., attention_mask=...)``.
        seq_len: Tokens in the sequence.
    """
    device = _model_device(model)
    ids = torch.ones((1, seq_len), dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        # no_grad, not inference_mode: FlopCounterMode's module tracker hooks the inputs of
        # every module call, and a parametrized weight (DyLoRA's rank truncation) passes a
        # parameter that requires grad, whose grad hook cannot be found in inference mode.
        with _eager_attention(model), torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def bert_flops(architecture: dict[str, int], seq_len: int, num_labels: int = 2) -> int:
    """The analytic count that :func:`count_flops` gives a ``BertForSequenceClassification``
    of ``architecture``; the formula is in :func:`count_flops`'s docstring."""
    n = architecture["num_hidden_layers"]
    h = architecture["hidden_size"]
    i = architecture["intermediate_size"]
    s = seq_len
    layer = 8 * s * h * h + 4 * s * s * h + 4 * s * h * i
    return n * layer + 2 * h * h + 2 * h * num_labels


@functools.lru_cache(maxsize=1)
def _has_attn_switch() -> bool:
    import transformers

    return hasattr(transformers.PreTrainedModel, "set_attn_implementation")


class _eager_attention:
    """Context manager: switches a Hugging Face model to eager attention, then back."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model: Any = model
        config = getattr(model, "config", None)
        self.previous = getattr(config, "_attn_implementation", None)

    def __enter__(self) -> None:
        if self.previous not in (None, "eager") and _has_attn_switch():
            self.model.set_attn_implementation("eager")

    def __exit__(self, *exc: object) -> None:
        if self.previous not in (None, "eager") and _has_attn_switch():
            self.model.set_attn_implementation(self.previous)


# ----------------------------------------------------------------------------- latency


def measure_latency_ms(
    model: torch.nn.Module,
    batch_size: int,
    seq_len: int = LATENCY_SEQ_LENGTH,
    *,
    runs: int = 10,
    warmup: int = 2,
    max_seconds: float = 1.0,
    min_runs: int = 3,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """``latency_ms_b{batch_size}``: median wall time of one inference forward pass, in ms.

    Runs on the model's own device and attention implementation, in inference mode on a
    ``batch_size`` × ``seq_len`` batch with no padding, under autocast to ``autocast_dtype``
    when given (trainers pass the precision they evaluate in). After ``warmup`` untimed
    passes, up to ``runs`` passes are timed, stopping early once ``max_seconds`` have been
    spent timing and at least ``min_runs`` were taken: the cost of measuring stays bounded on
    a CPU worker with a large model. On CUDA the device is synchronised before and after
    each pass, so the time is the kernels' and not the launch's. The number is as noisy as
    the machine: another process on the same CPUs or GPU inflates it.

    Args:
        model: A model called as ``model(input_ids=..., attention_mask=...)``.
        batch_size: Sequences per forward pass.
        seq_len: Tokens per sequence.
        runs: Most timed passes.
        warmup: Untimed passes first (at least one is always run).
        max_seconds: Time budget for the timed passes.
        min_runs: Fewest timed passes, whatever the budget.
        autocast_dtype: Autocast dtype, or None for the model's own dtype.
    """
    device = _model_device(model)
    ids = torch.ones((batch_size, seq_len), dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    sync = _synchronizer(device)
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.inference_mode(), _autocast(device, autocast_dtype):
            for _ in range(max(1, warmup)):
                model(input_ids=ids, attention_mask=mask)
            sync()
            spent = 0.0
            while len(times) < max(runs, 1) and (len(times) < min_runs or spent < max_seconds):
                start = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                sync()
                times.append(time.perf_counter() - start)
                spent += times[-1]
    finally:
        model.train(was_training)
    return 1000.0 * statistics.median(times)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None or dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def _synchronizer(device: torch.device) -> Any:
    if device.type == "cuda":
        return functools.partial(torch.cuda.synchronize, device)
    return lambda: None


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def latency_metrics(
    model: torch.nn.Module,
    *,
    autocast_dtype: torch.dtype | None = None,
    max_seconds: float = 0.5,
) -> dict[str, float]:
    """``latency_ms_b1`` and ``latency_ms_b32`` (see :data:`LATENCY_BATCH_SIZES`) of
    ``model``, each bounded by ``max_seconds`` of timed passes (see
    :func:`measure_latency_ms`)."""
    return {
        f"latency_ms_b{b}": measure_latency_ms(
            model, b, autocast_dtype=autocast_dtype, max_seconds=max_seconds
        )
        for b in LATENCY_BATCH_SIZES
    }


def size_metrics(model: torch.nn.Module, seq_len: int) -> dict[str, float]:
    """``params``, ``params_no_embeddings`` and ``flops`` (at ``seq_len``) of ``model``."""
    return {
        "params": float(count_parameters(model)),
        "params_no_embeddings": float(count_parameters_without_embeddings(model)),
        "flops": float(count_flops(model, seq_len)),
    }


def iter_cost_metric_names(measure_latency: bool = True) -> Iterator[str]:
    """Names of the metrics :func:`size_metrics`, :func:`latency_metrics` (unless
    ``measure_latency`` is False) and ``_memory_meter.PeakMemoryMeter`` produce."""
    yield from ("params", "params_no_embeddings", "flops")
    if measure_latency:
        yield from (f"latency_ms_b{b}" for b in LATENCY_BATCH_SIZES)
    yield "peak_train_memory_mb"
