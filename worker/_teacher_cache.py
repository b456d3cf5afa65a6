"""Task-specific teachers, fine-tuned once per task and kept on disk (:class:`TeacherCache`).

A task-specific teacher (the encoder fine-tuned on one GLUE task) is expensive and identical for
every candidate of a study, so :class:`TeacherCache` trains it once and keeps it on disk, shared
by every worker process on the machine. The cache does not own the training loop: the caller
passes a ``fine_tune`` function (dependency injection), and the cache only decides whether to
call it, and stores its result atomically. Loading the teacher itself is ``_teacher.py``'s job.

Imports torch and transformers at module level, so ``archsearch.worker`` does not import this
module eagerly; use ``from archsearch.worker._teacher_cache import TeacherCache``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import BertForSequenceClassification

from archsearch.spaces import GLUE_TASKS, GlueTask
from archsearch.worker._teacher import (
    DEFAULT_TEACHER_PACKAGE,
    default_teacher_path,
    resolve_teacher,
    teacher_recipe,
)

#: Environment variable naming archsearch's cache root; teachers live in ``<root>/teachers``.
CACHE_DIR_ENV = "ARCHSEARCH_CACHE_DIR"
# Written last into a cached teacher's folder (before the atomic rename): what it was built from.
_META_FILE = "archsearch_teacher.json"
# Bump when the cache layout or the key's inputs change, so old entries are never misread.
_KEY_FORMAT = 1
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def _teacher_identity(source: str, local: bool) -> Any:
    """What identifies a teacher in a cache key: stable across machines for the packaged one."""
    if local and Path(source) == default_teacher_path().resolve():
        return {"package": DEFAULT_TEACHER_PACKAGE, "version": _package_version()}
    if not local:
        return {"hub": source}
    # A local folder: its path, plus size and mtime of the weights so that retraining into the
    # same folder is a cache miss rather than a stale teacher.
    files = {}
    for name in _WEIGHT_FILES:
        path = Path(source, name)
        if path.is_file():
            stat = path.stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
    return {"path": source, "files": files}


def _package_version() -> str:
    try:
        return importlib.metadata.version(DEFAULT_TEACHER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed editable
        return "unknown"


@dataclasses.dataclass(frozen=True)
class TeacherJob:
    """What a ``fine_tune`` function is asked to produce.

    Attributes:
        teacher: The teacher to start from: a local folder or a hub name, as resolved.
        task: The GLUE task id, or a custom task's JSON-compatible description.
        recipe: The fine-tuning hyperparameters (see :data:`TEACHER_RECIPES`).
        data_hash: The caller's fingerprint of the training data (opaque to the cache).
        key: The cache key these inputs hash to.
    """

    teacher: str
    task: str | dict[str, Any]
    recipe: dict[str, Any]
    data_hash: str
    key: str


#: ``fine_tune(job)`` trains and returns the task-specific teacher.
FineTune = Callable[[TeacherJob], BertForSequenceClassification]


def default_cache_root() -> Path:
    """``$ARCHSEARCH_CACHE_DIR/teachers``, or ``~/.cache/archsearch/teachers``."""
    base = os.environ.get(CACHE_DIR_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "archsearch"
    return root / "teachers"


class TeacherCache:
    """Task-specific teachers, fine-tuned once and kept on disk.

    Each entry is a ``save_pretrained`` folder at ``<root>/<key>``, where ``key`` is the
    sha256 of the teacher's identity, the task (id or custom description), the recipe and the
    data hash (see :meth:`key`). Concurrency rules, for several worker processes sharing a root:

    * An entry is written into a temporary folder next to it and renamed into place, and the
      rename is atomic on one file system: a reader sees a complete teacher or none.
    * Fine-tuning one key holds an exclusive ``fcntl.flock`` on ``<root>/<key>.lock``; a second
      process asking for the same key waits, then loads what the first one wrote. Different
      keys do not block each other.
    * A fine-tune or a save that fails leaves nothing behind (its temporary folder is removed;
      one left by a killed process is removed by the next writer of that key).

    Args:
        root: The folder holding entries; default :func:`default_cache_root`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_root()

    @staticmethod
    def key(
        task: str | GlueTask | Mapping[str, Any],
        recipe: Mapping[str, Any],
        data_hash: str = "",
        teacher: str | os.PathLike[str] | None = None,
    ) -> str:
        """The cache key: sha256 of (teacher identity, task, recipe, data hash) as sorted JSON."""
        source, local = resolve_teacher(teacher)
        payload = {
            "format": _KEY_FORMAT,
            "teacher": _teacher_identity(source, local),
            "task": _task_identity(task),
            "recipe": dict(recipe),
            "data_hash": data_hash,
        }
        try:
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"teacher task and recipe must be plain JSON values: {e}") from e
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives (whether or not it exists yet)."""
        return self.root / key

    def contains(self, key: str) -> bool:
        return (self.path(key) / _META_FILE).is_file()

    def load(
        self,
        key: str,
        *,
        device: str | torch.device | None = None,
        attn_implementation: str = "eager",
    ) -> BertForSequenceClassification | None:
        """The cached teacher for ``key`` in eval mode, or None when there is none."""
        if not self.contains(key):
            return None
        model = BertForSequenceClassification.from_pretrained(
            str(self.path(key)), local_files_only=True, attn_implementation=attn_implementation
        )
        if device is not None:
            nn.Module.to(model, torch.device(device))  # moves in place
        return model.eval()

    def get(
        self,
        task: str | GlueTask | Mapping[str, Any],
        fine_tune: FineTune,
        *,
        recipe: Mapping[str, Any] | None = None,
        data_hash: str = "",
        teacher: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str = "eager",
    ) -> BertForSequenceClassification:
        """The fine-tuned teacher for ``task``: from disk, or made by ``fine_tune`` and saved.

        Either way the returned model is the one read back from the cache folder (in eval mode),
        so the first and every later caller get the same weights.

        Args:
            task: A GLUE task id, a ``GlueTask``, or a custom task's JSON-compatible description.
            fine_tune: Called at most once per key across processes, with a :class:`TeacherJob`;
                returns the trained ``BertForSequenceClassification``.
            recipe: Fine-tuning hyperparameters; default ``TEACHER_RECIPES[task id]``.
            data_hash: A fingerprint of the training data, so other data is another entry.
            teacher: The teacher to start from (see :func:`resolve_teacher`); default packaged.
            device: Where to put the returned model.
            attn_implementation: For the returned model; "eager" so attention can be read.

        Raises:
            TypeError: ``fine_tune`` returned something other than a
                ``BertForSequenceClassification``.
            ValueError: No recipe given for a task without a standard one.
        """
        task_id = _task_identity(task)
        if recipe is None:
            if not isinstance(task_id, str):
                raise ValueError("a custom teacher task needs an explicit recipe")
            recipe = teacher_recipe(task_id)
        source, _ = resolve_teacher(teacher)
        key = self.key(task, recipe, data_hash, teacher)
        loaded = self.load(key, device=device, attn_implementation=attn_implementation)
        if loaded is not None:
            return loaded
        self.root.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self.root / f"{key}.lock"):
            if not self.contains(key):  # another process may have written it while we waited
                self._remove_stale_temporaries(key)
                job = TeacherJob(source, task_id, dict(recipe), data_hash, key)
                model = fine_tune(job)
                if not isinstance(model, BertForSequenceClassification):
                    raise TypeError(
                        "fine_tune must return a BertForSequenceClassification, got "
                        f"{type(model).__name__}"
                    )
                self._write(model, job)
        loaded = self.load(key, device=device, attn_implementation=attn_implementation)
        assert loaded is not None  # written above, under the lock
        return loaded

    def _write(self, model: BertForSequenceClassification, job: TeacherJob) -> None:
        """Saves into a temporary sibling folder, then renames it into place atomically."""
        temporary = Path(tempfile.mkdtemp(prefix=f".{job.key}.tmp-", dir=self.root))
        try:
            model.save_pretrained(str(temporary))
            meta = {
                **dataclasses.asdict(job),
                "created": time.time(),
                "torch_version": torch.__version__,
                "transformers_version": transformers.__version__,
            }
            # The marker that makes an entry complete; written last, inside the temporary folder.
            (temporary / _META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.rename(temporary, self.path(job.key))
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def _remove_stale_temporaries(self, key: str) -> None:
        # Called under the key's lock: no live writer of this key can own these folders.
        for leftover in self.root.glob(f".{key}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        # An entry without its marker (not produced by this class) is not trusted either.
        if self.path(key).exists():
            shutil.rmtree(self.path(key), ignore_errors=True)


def _task_identity(task: str | GlueTask | Mapping[str, Any]) -> str | dict[str, Any]:
    """A GLUE task by its id; any other task by its full JSON-compatible description."""
    if isinstance(task, str):
        return task
    if isinstance(task, GlueTask):
        if GLUE_TASKS.get(task.id) == task:
            return task.id
        # Round-trip through JSON so tuples become lists, exactly as they are hashed.
        description: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(task)))
        return description
    if isinstance(task, Mapping):
        return dict(task)
    raise TypeError(f"task must be a task id, a GlueTask or a mapping, got {type(task).__name__}")


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path``, held for the ``with`` block (blocks until free).

    ``flock`` locks belong to the open file description, so two processes (or two threads
    opening the file separately) exclude each other; the kernel releases the lock if the holder
    dies, so a crashed fine-tune never wedges the key.
    """
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
