"""A search spec's data choices: the task or tasks (given at the top level or in ``data``),
a custom task, and the data fields, checked as ``SearchSpec.from_dict`` reads them."""

from __future__ import annotations

import os
import re
from typing import Any

from archsearch.spaces import (
    GLUE_TASK_IDS,
    DataSpace,
    SpecError,
    data_tasks,
    validate_custom_task,
    validate_data,
)
from archsearch.spaces._selection_checks import (
    check_selection_size,
    check_selection_target,
    file_path,
)
from archsearch.spaces._tasks import folder_hint


def pin_eval_seed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` of a new launch with ``eval_seed`` named (0 unless given) when it scores on a
    dev sample (``eval_subset``): the sample is the study's, whatever ``recipe.seed`` a
    candidate trains with. A stored spec without it is left alone: its candidates draw the
    sample with their recipe's seed, as its first trials did."""
    if data.get("eval_subset", 0) and "eval_seed" not in data:
        return {**data, "eval_seed": 0}
    return data


def spec_data(obj: dict[str, Any], stored: bool = False) -> dict[str, Any]:
    """The spec's data choices: task(s) from the top level or ``data``, custom task checked
    (``stored``: see ``SearchSpec.from_dict``)."""
    data_in = obj.get("data", {})
    if not isinstance(data_in, dict):
        raise SpecError("data", "must be a JSON object")
    data_in = dict(data_in)
    custom_name = None
    if "custom_task" in data_in:
        custom = validate_custom_task(data_in["custom_task"])
        data_in["custom_task"] = custom.to_dict()
        custom_name = custom.name
        if not stored:
            for split in ("train", "dev"):
                check_absolute(f"data.custom_task.{split}", str(getattr(custom, split)))
    for key in ("task", "tasks"):
        if key in obj:
            if key in data_in and data_in[key] != obj[key]:
                raise SpecError(f"data.{key}", f"contradicts {key} {obj[key]!r}", "give it once")
            data_in[key] = obj[key]
    if "tasks" in data_in and not isinstance(data_in["tasks"], list):
        field = "tasks" if "tasks" in obj else "data.tasks"
        raise SpecError(field, f"must be a list of task names, got {data_in['tasks']!r}")
    if "tasks" in data_in and "task" in data_in and data_in["tasks"][:1] != [data_in["task"]]:
        if not stored and data_in["task"] not in data_in["tasks"]:
            raise SpecError(
                "task",
                f"{data_in['task']!r} is not among tasks {data_in['tasks']}, which would win",
                "give tasks alone (or add the task to it)",
            )
        data_in.pop("task")  # "task" mirrors tasks[0] in a stored spec; tasks wins
    if "task" not in data_in and "tasks" not in data_in:
        data_in["task"] = custom_name or "sst2"
    data = validate_data(data_in)
    if custom_name and custom_name not in data_tasks(data) and not stored:
        field = "tasks" if "tasks" in data_in else "task"
        raise SpecError(
            field,
            f"{data_tasks(data)} leaves out data.custom_task {custom_name!r}, whose data would "
            "never be read",
            f"name {custom_name!r} among the tasks (or leave --task out), or drop data.custom_task",
        )
    known = set(GLUE_TASK_IDS) | ({custom_name} if custom_name else set())
    for t in data_tasks(data):
        if t not in known:
            field = "tasks" if "tasks" in data_in else "task"
            raise SpecError(
                field,
                f"unknown task {t!r}",
                f"{folder_hint(t)}one of {', '.join(GLUE_TASK_IDS)}, or declare data.custom_task",
            )
    return data


def fill_dsir_targets(
    data: dict[str, Any], data_space: DataSpace | None, stored: bool
) -> tuple[dict[str, Any], DataSpace | None]:
    """DSIR selections written without a ``target``, given the one they mean, so that a
    stored study keeps it whatever the default becomes: at launch the default, ``"test"``
    (in ``data`` and each ``data_space`` value: its label then says ``target=test``); for a
    study stored before the default was named (it was the scoring dev split), ``"dev"`` in
    ``data``, as it trained. Its ``data_space`` values are left as they are (their labels are
    the Optuna parameter's choices): the candidates made of them get ``"dev"`` when the pool
    stores them (:func:`dev_if_unnamed`), as they trained before."""

    def named(value: Any, target: str) -> Any:
        if isinstance(value, dict) and value.get("method") == "dsir" and "target" not in value:
            return {**value, "target": target}
        return value

    data = (
        {**data, "selection": named(data["selection"], "dev" if stored else "test")}
        if ("selection" in data)
        else data
    )
    if not stored and data_space is not None and "selection" in data_space.choices:
        choices = dict(data_space.choices)
        choices["selection"] = [named(v, "test") for v in choices["selection"]]
        data_space = DataSpace(choices)
    return data, data_space


def check_absolute(field: str, path: str) -> None:
    """Refuses a relative file path: each worker reads it from its own working directory
    (a launch from the data's folder trained on another file of that name, or failed). A
    path from ``~`` is the worker's home; variables are not expanded."""
    if "\x00" in path:
        raise SpecError(field, f"{path!r} holds a NUL byte, which no file name does")
    if path.startswith("~") or os.path.isabs(path):
        return
    if "$" in path:
        fix = "write the path out: workers do not expand environment variables"
    elif re.match(r"^[A-Za-z]:[\\/]", path):
        fix = "give the path as the workers see it (POSIX: /data/...)"
    else:
        fix = f"give an absolute path, e.g. {os.path.abspath(path)!r}"
    raise SpecError(
        field,
        f"{path!r} is a relative path: each worker would read it from its own working "
        "directory, not from where you launch",
        fix,
    )


def _file_sources_absolute(selection: Any, section: str) -> None:
    """A selection's ``file:`` sources (its pool and target) as absolute paths."""
    if not isinstance(selection, dict):
        return
    for key in ("pool", "target"):
        value = selection.get(key)
        for name in value if isinstance(value, list) else [value]:
            if (path := file_path(name)) is not None:
                check_absolute(f"{section}.{key}", path)


def check_selection_targets(data: dict[str, Any], data_space: Any) -> None:
    """At launch, each DSIR selection, fixed or searched: no target reads the dev text that
    scores the trials (a dev split, ``check_selection_target``, or a custom task's own dev
    file), a custom task's names its target, and none asks for more than a GLUE training
    split holds (``check_selection_size``)."""
    tasks = data_tasks(data)
    custom = data.get("custom_task")
    dev = custom.get("dev") if isinstance(custom, dict) else None
    values = [("data.selection", data.get("selection"))]
    if data_space is not None:
        values += [
            (f"data_space.selection[{i}]", v)
            for i, v in enumerate(data_space.choices.get("selection", []))
        ]
    for field in ("pretrain_selection", "distill_selection"):
        _file_sources_absolute(data.get(field), f"data.{field}")
        if data_space is not None:
            for i, v in enumerate(data_space.choices.get(field, [])):
                _file_sources_absolute(v, f"data_space.{field}[{i}]")
    if isinstance(data.get("distill_text"), str):
        check_absolute("data.distill_text", data["distill_text"])
    for section, value in values:
        if not isinstance(value, dict):
            continue
        _file_sources_absolute(value, section)
        if isinstance(dev, str):
            _no_custom_dev_target(value, dev, section)
        check_selection_target(value, tasks, section)
        check_selection_size(value, tasks, section)


def check_curriculum_effect(data: dict[str, Any]) -> None:
    """At launch: a fixed ``data.curriculum`` whose ``min_examples`` (default 1000) covers
    every item it orders, for every task, changes nothing (every epoch sees them all, which
    the worker said only after training): refused with the fix. The items are the most the
    fixed data can hold (a selection's size, k or fraction, the train_subset, the GLUE
    training split), less PUDF's ``val_fraction`` held out as the worker does."""
    from archsearch.spaces._tasks import GLUE_TRAIN_EXAMPLES

    curriculum = data.get("curriculum")
    if not isinstance(curriculum, dict) or curriculum.get("method", "none") == "none":
        return
    least = curriculum.get("min_examples", 1000)
    fraction = curriculum.get("val_fraction", 0.1) if curriculum["method"] == "pudf" else 0.0
    if not isinstance(least, int) or not isinstance(fraction, int | float):
        return  # the curriculum's own checks say what is wrong
    items = {t: _curriculum_items(data, n, float(fraction)) for t in data_tasks(data)
             if (n := GLUE_TRAIN_EXAMPLES.get(t)) is not None}  # fmt: skip
    if not items or len(items) < len(data_tasks(data)):
        return  # a custom task: its size is known on the worker only
    if all(least >= n for n, _ in items.values()):
        task, (n, where) = max(items.items(), key=lambda kv: kv[1][0])
        raise SpecError(
            "data.curriculum.min_examples",
            f"{least} (the default is 1000) covers all {n} items the curriculum orders on "
            f"{task} ({where}): every epoch would see them all, so it changes nothing",
            f"give min_examples below {n}, or train on more data",
        )


def _curriculum_items(data: dict[str, Any], held: int, val_fraction: float) -> tuple[int, str]:
    """The most training items a curriculum orders on a split of ``held`` examples, and what
    bounds them (the worker's count: a selection, then the train_subset, then PUDF's
    validation share held out)."""
    chosen = data.get("selection")
    selection: dict[str, Any] = chosen if isinstance(chosen, dict) else {}
    n, where = held, "the training split"
    method = selection.get("method")
    size = selection.get("size") if method == "random" else selection.get("k")
    if method == "dsir" and isinstance(selection.get("fraction"), int | float):
        size = max(1, int(selection["fraction"] * held))
    if method in ("random", "dsir") and isinstance(size, int) and size < n:
        n, where = size, f"data.selection's {size}"
    subset = data.get("train_subset")
    if isinstance(subset, int) and 0 < subset < n:
        n, where = subset, f"data.train_subset {subset}"
    if val_fraction:
        n -= max(1, round(val_fraction * n))
        where += f", less the val_fraction {val_fraction:g} held out"
    return n, where


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same text once normalised, or, where they exist
    here, the same file through links."""
    a, b = os.path.expanduser(a), os.path.expanduser(b)
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _no_custom_dev_target(selection: dict[str, Any], dev: str, section: str) -> None:
    """A DSIR target that names a custom task's own dev file leaks it as "dev" would."""
    if selection.get("method") != "dsir":
        return
    target = selection.get("target", [])
    for name in [target] if isinstance(target, str) else target:
        if (path := file_path(name)) is not None and _same_file(path, dev):
            raise SpecError(
                f"{section}.target",
                f"{name!r} is the custom task's dev file, which scores every trial: "
                "training data chosen to resemble it leaks the evaluation set",
                "name other in-domain text (unlabelled, not the dev file)",
            )
