"""Pre-trained FlexiBERT encoders cached on disk, one folder per pre-training run's key."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

#: Environment variable naming the folder pre-trained encoders are cached under.
PRETRAIN_DIR_ENV = "ARCHSEARCH_PRETRAIN_DIR"
# Bump when pre-training changes in a way the key does not capture: old entries then miss.
_CACHE_FORMAT = 1
ENCODER_FILE = "encoder.safetensors"
META_FILE = "pretrain.json"


def pretrain_root() -> Path:
    """Where pre-trained encoders are cached: ``$ARCHSEARCH_PRETRAIN_DIR``, else
    ``$ARCHSEARCH_CACHE_DIR/pretrained``, else ``~/.cache/archsearch/pretrained``."""
    named = os.environ.get(PRETRAIN_DIR_ENV)
    if named:
        return Path(named).expanduser()
    base = os.environ.get("ARCHSEARCH_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "archsearch"
    return root / "pretrained"


class PretrainCache:
    """Pre-trained encoders on disk, one folder per key (:meth:`key`).

    A folder holds ``encoder.safetensors`` (the encoder's ``state_dict``) and
    ``pretrain.json`` (the key's fields, the final loss, the seconds it took). Folders are
    written under a temporary name and renamed, so a reader never sees half an entry and two
    workers pre-training the same key at once both end with a complete one.

    Args:
        root: The cache folder; default :func:`pretrain_root`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else pretrain_root()

    @staticmethod
    def key(fields: Mapping[str, Any]) -> str:
        """A digest of the JSON of ``fields`` (architecture, steps, data hash, seed and the
        optimisation settings): equal fields, equal pre-trained encoder."""
        text = json.dumps({"format": _CACHE_FORMAT, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The cached encoder weights and metadata, or None."""
        folder = self.root / key
        if not (folder / ENCODER_FILE).is_file() or not (folder / META_FILE).is_file():
            return None
        meta = json.loads((folder / META_FILE).read_text())
        return load_file(str(folder / ENCODER_FILE)), meta

    def put(self, key: str, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
        """Stores an entry (replacing an existing one); returns its folder."""
        folder = self.root / key
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(f".{key}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(staging / ENCODER_FILE))
        (staging / META_FILE).write_text(json.dumps(dict(meta), indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:  # another worker renamed its copy in between: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
        return folder
