"""Cost metrics of a model (size, FLOPs, latency, training memory) and measurement provenance.

Each cost is one function, so trainers, benchmarks and tests measure the same thing the same
way (DESIGN.md principle 5: raw cost metrics are stored with every trial):

* :func:`count_parameters` and :func:`count_parameters_without_embeddings`: ``params`` and
  ``params_no_embeddings``.
* :func:`count_flops`: ``flops``, forward FLOPs of one sequence, counted by
  ``torch.utils.flop_counter.FlopCounterMode``.
* :func:`measure_latency_ms`: ``latency_ms_b1`` and ``latency_ms_b32``, measured inference
  latency on the worker's device.
* :class:`PeakMemoryMeter`: ``peak_train_memory_mb``, the memory a training run added.
* :func:`provenance`: what a measurement depends on (seed, data, device, versions, code).

Imports torch at module level, like the trainers; ``archsearch.worker`` does not import it
eagerly.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

#: Sequence length and batch sizes of the latency metrics: ``latency_ms_b{batch}`` at 128 tokens.
LATENCY_SEQ_LENGTH = 128
LATENCY_BATCH_SIZES = (1, 32)
_MIB = 2**20


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


# ----------------------------------------------------------------------------- memory


class PeakMemoryMeter:
    """Context manager measuring ``peak_train_memory_mb``: the most memory the code inside it
    added, in MiB (2²⁰ bytes), over what was in use when it started.

    Wrap model construction and training in it, so that weights, gradients, optimizer state
    and activations all count.

    * CUDA: peak of live tensor bytes on the device (``torch.cuda.max_memory_allocated``,
      its peak statistic reset on entry) minus the bytes live on entry. Exact; memory the
      caching allocator holds but no tensor uses, fragmentation and the CUDA context are
      excluded. :meth:`sample` does nothing.
    * CPU: peak resident set size (RSS) of the process minus the RSS on entry. PyTorch keeps
      no statistics for CPU tensors, and the kernel's own high-water mark (``ru_maxrss``) is
      a whole-process figure that never goes down, so it cannot isolate one trial in a
      long-lived worker. The RSS (``/proc/self/statm``, or ``psutil`` where there is no
      ``/proc``) is read whenever the code inside calls :meth:`sample` (the trainer does
      after each forward and backward pass and optimiser step: about 2 µs each), and every
      ``interval_s`` by a background thread, which catches peaks inside long passes. (The
      thread alone, at the 50 Hz that short steps would need, slowed training by 3-5% on a
      2-core machine by preempting PyTorch's compute threads; at 10 Hz it costs < 1%.)

      On entry, memory the C allocator holds unused is handed back to the system (glibc
      ``malloc_trim``), so that a trial's allocations raise the RSS rather than silently
      reuse pages an earlier trial left resident (without this, repeated identical trials in
      one process read anywhere from 0 to 3x the true figure; with it they agree within
      about 10%). Caveats: a transient buffer that lives only inside one operation can be
      missed; the first trial in a process also pays one-time allocations (kernel caches,
      lazily loaded libraries); non-tensor memory the trial allocated (Python objects)
      counts too.

    Attributes:
        peak_mb: The measurement, set on exit (0.0 before).
    """

    def __init__(self, device: str | torch.device, interval_s: float = 0.1) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._start = 0
        # One maximum per writer (caller, sampler thread): no lock, no lost update.
        self._peak_caller = 0
        self._peak_thread = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_rss = _rss_reader() if self.device.type != "cuda" else None
        self._active = False

    def __enter__(self) -> PeakMemoryMeter:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._read_rss is not None:
            _release_free_heap()
            self._start = self._peak_caller = self._peak_thread = self._read_rss()
            self._active = True
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run_sampler, name="archsearch-rss-sampler", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._read_rss is not None:
            self.sample()
            self._active = False
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak_caller, self._peak_thread)
        else:
            peak = self._start
        self.peak_mb = max(0, peak - self._start) / _MIB

    def sample(self) -> None:
        """Reads the RSS now (CPU); call it where memory peaks. Cheap; a no-op on CUDA and
        outside the ``with`` block."""
        if self._active:
            rss = self._read_rss()  # type: ignore[misc]
            if rss > self._peak_caller:
                self._peak_caller = rss

    def _run_sampler(self) -> None:
        read = self._read_rss
        assert read is not None
        while not self._stop.wait(self.interval_s):
            rss = read()
            if rss > self._peak_thread:
                self._peak_thread = rss


def _release_free_heap() -> None:
    """Returns memory the C allocator holds but no object uses to the system (glibc's
    ``malloc_trim``; a no-op elsewhere), so that the next allocations raise the RSS again
    instead of silently reusing pages an earlier trial left resident."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def _rss_reader() -> Any:
    """A function returning the process's RSS in bytes, or None when it cannot be read.

    Cached: the one ``/proc/self/statm`` descriptor stays open for the process's lifetime.
    """
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        page = os.sysconf("SC_PAGE_SIZE")

        def read_statm() -> int:
            # statm: size resident shared text lib data dt, in pages. pread at offset 0
            # re-generates the file, so one descriptor serves every sample.
            return int(os.pread(fd, 128, 0).split()[1]) * page

        read_statm()
        return read_statm
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        process = psutil.Process()
        return lambda: int(process.memory_info().rss)
    except ImportError:
        return None


# ----------------------------------------------------------------------------- provenance


def device_name(device: str | torch.device) -> str:
    """A readable name of the hardware behind ``device``: the GPU's name on CUDA
    ("NVIDIA H100 80GB HBM3"), the CPU model and PyTorch's thread count on CPU
    ("AMD EPYC 7B13 (2 threads)")."""
    device = torch.device(device)
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return f"{_cpu_model()} ({torch.get_num_threads()} threads)"


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe --always --dirty`` of the archsearch checkout this code runs from, or
    the installed package version when it is not a git checkout (or git is missing).

    Computed once per process. Runs git with ``GIT_OPTIONAL_LOCKS=0`` so that the index
    refresh behind ``--dirty`` never takes ``index.lock`` from under a developer's own git.
    """
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "describe", "--always", "--dirty"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=10,
                env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
                check=True,
            )
            if out.stdout.strip():
                return f"git:{out.stdout.strip()}"
        except (OSError, subprocess.SubprocessError):
            pass
    return f"archsearch {_package_version()}"


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("archsearch")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance(seed: int, data_hash: str, device: str | torch.device) -> dict[str, str]:
    """What a trial's measurements depend on, as strings for ``TrainResult.info``.

    Args:
        seed: The recipe's seed.
        data_hash: A digest of the exact data trained and evaluated on (the caller's choice of
            digest; the BERT trainer hashes the token ids and labels).
        device: The torch device trained on.

    Returns:
        ``seed``, ``data_hash``, ``device`` (the torch device string), ``device_name``,
        ``torch_version``, ``transformers_version``, ``archsearch_version`` and
        ``code_version`` (see :func:`code_version`).
    """
    import transformers

    return {
        "seed": str(seed),
        "data_hash": data_hash,
        "device": str(device),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "archsearch_version": _package_version(),
        "code_version": code_version(),
    }


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
    ``measure_latency`` is False) and :class:`PeakMemoryMeter` produce."""
    yield from ("params", "params_no_embeddings", "flops")
    if measure_latency:
        yield from (f"latency_ms_b{b}" for b in LATENCY_BATCH_SIZES)
    yield "peak_train_memory_mb"
