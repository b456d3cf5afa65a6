"""Measurement provenance: what a trial's metrics depend on (seed, data, device, versions, code).

Imports torch at module level, like the trainers.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import torch


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
    the installed package version and source digest (``archsearch 0.1.0+src.1a2b3c4d5e6f``,
    ``server/_source.py``) when it is not a git checkout (or git is missing): every build
    called itself 0.1.0.

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
    from archsearch.server._source import code_label

    return f"archsearch {code_label()}"


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
