"""The values of a data selection, checked without reading any text: source names (pools and
targets) and DSIR's settings.

Pure Python, so the server refuses at launch what every trial would fail on (a negative ``k``,
``k`` and ``fraction`` together, an unknown source, a pool other than the task's training split
for ``data.selection``); the worker runs the same checks again before it selects
(``worker/_dsir_selector.py``, ``worker/_text_pools.py``).

Source names (one string or a list):

* ``"train"``, ``"dev"``, ``"test"`` (or another dev split name): the candidate's own task's
  split;
* ``"glue:TASK"`` or ``"glue:TASK/SPLIT"`` (SPLIT ``train`` by default): another GLUE task's
  text;
* ``"file:PATH"``, or a path ending in ``.txt`` or ``.jsonl``: a text or JSONL file;
* ``"wiki:gensim"``: the English Wikipedia shard bundled with gensim.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from archsearch.spaces._errors import SpecError
from archsearch.spaces._tasks import get_task

DEFAULT_NGRAMS = 2
DEFAULT_BUCKETS = 10_000
DEFAULT_MIN_LENGTH = 1

#: The candidate's own task's splits, as source names.
OWN_SPLITS = ("train", "dev", "test", "dev_matched", "dev_mismatched")
FILE_SUFFIXES = (".txt", ".jsonl")
#: gensim's bundled English Wikipedia shard, as a source name.
WIKI_GENSIM = "wiki:gensim"
SOURCE_FORMS = (
    "'train' | 'dev' | 'test' (the task's own split), 'glue:TASK[/SPLIT]', "
    "'file:PATH' or a path ending in .txt or .jsonl, or 'wiki:gensim'"
)


def file_path(name: Any) -> str | None:
    """The path a source name reads (``"file:PATH"``, or a path ending in ``.txt`` or
    ``.jsonl``); None for any other source (an own split, ``glue:``, ``wiki:gensim``)."""
    if isinstance(name, str) and (name.startswith("file:") or name.endswith(FILE_SUFFIXES)):
        return name.removeprefix("file:")
    return None


def source_names(value: str | Sequence[str]) -> list[str]:
    """``value`` (one source name or a list) as a checked list of names.

    Raises:
        ValueError: Not a non-empty string or list of them, a name twice, or a name of no
            known form (the message lists the forms).
    """
    names = [value] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"must be a source name or a non-empty list of them, got {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"names a source twice: {names}")
    for name in names:
        if name in (*OWN_SPLITS, WIKI_GENSIM) or name.startswith("file:"):
            continue
        if name.endswith(FILE_SUFFIXES):
            continue
        if name.startswith("glue:"):
            glue_source(name)
            continue
        raise ValueError(f"unknown source {name!r}; a source is {SOURCE_FORMS}")
    return names


def glue_source(name: str) -> tuple[str, str]:
    """The (task id, split) a ``glue:TASK[/SPLIT]`` name reads.

    Raises:
        ValueError: An unknown task or split (the known splits are named).
    """
    task_id, _, split = name.removeprefix("glue:").partition("/")
    try:
        task = get_task(task_id)
    except ValueError as e:  # SpecError too: an unknown task
        raise ValueError(f"{name!r}: {e}") from None
    split = split or "train"
    if split not in ("train", "test", *task.dev_splits):
        known = ", ".join(("train", *task.dev_splits, "test"))
        raise ValueError(f"{name!r}: GLUE {task_id} has no split {split!r} ({known})")
    return task.id, split


#: The method's settings and their defaults (``pool``/``target``: the training-subset use:
#: examples of the task's training split chosen to resemble its unlabelled test text, never
#: the dev split that scores the trial; :func:`check_selection_target`).
DSIR_DEFAULTS: dict[str, Any] = {
    "pool": "train",
    "target": "test",
    "ngrams": DEFAULT_NGRAMS,
    "buckets": DEFAULT_BUCKETS,
    "laplace": 0.0,
    "min_length": DEFAULT_MIN_LENGTH,
    "top_k": False,
}
_MAX_NGRAMS = 5
_MAX_BUCKETS = 1 << 24


def check_dsir_options(
    options: Mapping[str, Any], section: str = "data.selection"
) -> dict[str, Any]:
    """``options`` with :data:`DSIR_DEFAULTS` filled in, ``pool`` and ``target`` as lists.

    Raises:
        SpecError: Neither or both of ``k`` and ``fraction``, a value out of range, or a
            source name of no known form; the field is named with ``section``.
    """
    out = {**DSIR_DEFAULTS, **options}
    out.pop("method", None)
    if ("k" in out) == ("fraction" in out):
        raise SpecError(
            section, "dsir needs exactly one of k and fraction", 'e.g. "k": 1000 or "fraction": 0.5'
        )
    if "k" in out and not (isinstance(out["k"], int) and out["k"] >= 1):
        raise SpecError(f"{section}.k", f"must be an int >= 1, got {out['k']!r}")
    if "fraction" in out and not 0 < out["fraction"] <= 1:
        raise SpecError(f"{section}.fraction", f"must be in (0, 1], got {out['fraction']!r}")
    if not 1 <= out["ngrams"] <= _MAX_NGRAMS:
        raise SpecError(
            f"{section}.ngrams",
            f"must be in [1, {_MAX_NGRAMS}], got {out['ngrams']!r}",
            "2 = unigrams and bigrams, as the paper",
        )
    if not 1 <= out["buckets"] <= _MAX_BUCKETS:
        raise SpecError(
            f"{section}.buckets",
            f"must be in [1, {_MAX_BUCKETS}], got {out['buckets']!r}",
            "the paper uses 10000",
        )
    if out["laplace"] < 0:
        raise SpecError(f"{section}.laplace", f"must be >= 0 (a pseudo-count): {out['laplace']}")
    if out["min_length"] < 0:
        raise SpecError(f"{section}.min_length", f"must be >= 0, got {out['min_length']}")
    for key in ("pool", "target"):
        try:
            out[key] = source_names(out[key])
        except ValueError as e:
            raise SpecError(f"{section}.{key}", str(e)) from None
    return out


#: The methods of ``data.pretrain_selection``.
PRETRAIN_METHODS: tuple[str, ...] = ("dsir", "random")
#: Settings only DSIR reads; a ``random`` pre-training selection refuses them.
_DSIR_ONLY = ("laplace", "top_k")


def check_pretrain_selection(
    selection: Mapping[str, Any], section: str = "data.pretrain_selection"
) -> dict[str, Any]:
    """A ``data.pretrain_selection`` (or ``data.distill_selection``: AutoDistil's supernet
    text, ``section``) checked: method ``dsir`` or ``random``, a ``pool`` named, the target
    defaulting to the task's training text; the result keeps ``method``.

    ``random`` takes DSIR's keys (``pool``, ``k``/``fraction``, ``target``, ``ngrams``,
    ``buckets``, ``min_length``, ``seed``: the same eligible texts and the same KL
    provenance) but refuses ``laplace`` and ``top_k``, which only shape DSIR's weights.

    Raises:
        SpecError: Another method, no pool, a DSIR-only setting for random, or a bad
            setting (the field is named).
    """
    method = selection.get("method", "none")
    if method not in PRETRAIN_METHODS:
        raise SpecError(
            f"{section}.method",
            f"{method!r}: this text is selected by 'dsir' or 'random' (its baseline)",
            'e.g. {"method": "dsir", "pool": ["glue:sst2", "glue:qnli/test"], "k": 20000}',
        )
    if "pool" not in selection:
        raise SpecError(
            f"{section}.pool",
            "name the texts to choose from",
            'e.g. ["glue:sst2", "glue:qnli/test", "file:/data/wiki.txt"]',
        )
    if method == "random":
        for key in _DSIR_ONLY:
            if key in selection:
                raise SpecError(
                    f"{section}.{key}",
                    "a DSIR setting: a random selection has no importance weights",
                    f"leave {key} out, or use method 'dsir'",
                )
    return {"method": method, **check_dsir_options({"target": "train", **selection}, section)}


def check_selection_values(selection: Mapping[str, Any], section: str, pools: bool) -> None:
    """The value checks of a selection whose fields and types are already checked
    (``spaces/_candidate.py: validate_selection``).

    Args:
        selection: The object.
        section: Its place in the candidate, for errors.
        pools: True for a selection of texts from pools (``data.pretrain_selection``,
            ``data.distill_selection``), False for ``data.selection`` (training examples).

    Raises:
        SpecError: A value out of range, a source name of no known form, or (for
            ``data.selection``) a pool other than the task's own training split.
    """
    if pools:
        check_pretrain_selection(selection, section)
        return
    if selection.get("method", "none") != "dsir":
        return
    options = check_dsir_options(selection, section)
    if options["pool"] != ["train"]:
        raise SpecError(
            f"{section}.pool",
            f"{options['pool']}: training examples are selected from the task's own training split",
            "leave pool out; other pools choose pre-training text (data.pretrain_selection)",
        )


def check_selection_target(
    selection: Mapping[str, Any], tasks: Sequence[str], section: str = "data.selection"
) -> None:
    """Refuses a ``data.selection`` DSIR target that reads the text that scores the trial (a
    task's dev split: choosing training data to resemble the evaluation set leaks it into
    the score, as a PUDF crowd fitted on dev would), and the default ``test`` target of a
    custom task, which has no test split. Checked at launch; a stored study keeps its target.

    Args:
        selection: A ``data.selection`` object whose fields are checked.
        tasks: The candidate's tasks (a custom task's name among them is not a GLUE id).
        section: Its place in the spec, for errors.
    """
    from archsearch.spaces._tasks import GLUE_TASK_IDS

    if selection.get("method", "none") != "dsir":
        return
    target = check_dsir_options(selection, section)["target"]
    for name in target:
        scored = [
            t
            for t in tasks
            if (t in GLUE_TASK_IDS and _reads_dev(name, t))
            or (t not in GLUE_TASK_IDS and name == "dev")
        ]
        if scored:
            fix = (
                "leave target out for the task's unlabelled test text, or name other text: "
                if scored[0] in GLUE_TASK_IDS
                else "name other in-domain text (a custom task has no test text): "
            )
            raise SpecError(
                f"{section}.target",
                f"{name!r} is text of the dev split that scores every trial ({scored[0]}): "
                "training data chosen to resemble it leaks the evaluation set into the score",
                fix + "'train', 'glue:TASK', 'file:PATH', 'wiki:gensim'",
            )
    custom = [t for t in tasks if t not in GLUE_TASK_IDS]
    if "test" in target and custom:
        raise SpecError(
            f"{section}.target",
            f"custom task {custom[0]!r} has no test split (the default target: the text the "
            "training examples should resemble)",
            "name it: 'file:PATH' (unlabelled in-domain text, one per line), 'glue:TASK' or "
            "'wiki:gensim'",
        )


def check_selection_size(
    selection: Mapping[str, Any], tasks: Sequence[str], section: str = "data.selection"
) -> None:
    """Refuses a ``data.selection`` whose size a GLUE training split cannot meet: DSIR's ``k``
    past any task's split (that task's trials would fail), or a ``k`` or random ``size`` that
    keeps the whole split of every task (no selection at all). The worker applies the
    selection to each task's split on its own, so a size past one task's split only is a
    real choice for the others. Checked at launch."""
    from archsearch.spaces._tasks import GLUE_TRAIN_EXAMPLES

    method = selection.get("method", "none")
    fraction = selection.get("fraction")
    if method == "dsir" and isinstance(fraction, int | float) and fraction >= 1:
        raise SpecError(
            f"{section}.fraction",
            f"{fraction} keeps every training example: the whole split, no selection (its "
            "examples merely reordered)",
            'lower fraction below 1, or {"method": "none"}',
        )
    key = {"dsir": "k", "random": "size"}.get(method)
    wanted = selection.get(key) if key else None
    if not isinstance(wanted, int) or isinstance(wanted, bool):
        return
    held = {t: GLUE_TRAIN_EXAMPLES[t] for t in tasks if t in GLUE_TRAIN_EXAMPLES}
    fix = f"lower {key}" + (", or use fraction" if method == "dsir" else ', or {"method": "none"}')
    short = [t for t, n in held.items() if wanted > n]
    if method == "dsir" and short:
        raise SpecError(
            f"{section}.k",
            f"{wanted} is more than the {held[short[0]]} examples of {short[0]}'s training split",
            fix,
        )
    if held and len(held) == len(tasks) and all(wanted >= n for n in held.values()):
        task, n = min(held.items(), key=lambda tn: tn[1])
        said = "more than" if wanted > n else "all"
        raise SpecError(
            f"{section}.{key}",
            f"{wanted} is {said} the {n} examples of {task}'s training split: the whole split "
            "is kept, no selection",
            fix,
        )


def _reads_dev(name: str, task_id: str) -> bool:
    """Whether source ``name`` reads a dev split of GLUE task ``task_id``."""
    task = get_task(task_id)
    if name in task.dev_splits or name == "dev":
        return True
    if name.startswith("glue:"):
        other, split = glue_source(name)
        return other == task.id and split in task.dev_splits
    if (given := file_path(name)) is not None:  # the dev file by its path
        path = Path(given)
        with contextlib.suppress(OSError, RuntimeError, ValueError):  # ~user unknown, a NUL
            path = path.expanduser().resolve()
        devs = {task.split_file(s) for s in task.dev_splits}
        return path.parent.name == task.folder and path.name in devs
    return False
