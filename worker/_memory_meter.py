"""``peak_train_memory_mb``: the memory a training run added, on CUDA or on the CPU.

:class:`PeakMemoryMeter` reads the device's allocator statistics on CUDA and the process's
resident set size on the CPU (see its docstring for how, and for the caveats).
"""

from __future__ import annotations

import functools
import os
import threading
from types import TracebackType
from typing import Any

import torch

_MIB = 2**20


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
