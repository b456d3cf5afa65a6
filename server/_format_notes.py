"""What ``archsearch show`` says under its table: each failed trial's whole reason, the
workers' warnings, all as printable single lines (a worker's text reaches the reader's
terminal)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from archsearch.v1 import archsearch_pb2 as pb

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` as one line a terminal shows as written: line breaks and tabs become spaces,
    other control characters (NUL, ESC: a worker's reason could recolour or rewrite the
    reader's terminal) their escapes (``\\x1b``)."""
    text = " ".join(text.splitlines()).replace("\t", " ")
    return _CONTROL.sub(lambda m: ascii(m[0])[1:-1], text)


def failure_reasons(trials: Sequence[pb.Trial]) -> list[str]:
    """The whole reason of each failed trial, once per distinct reason with the trials that
    gave it ("#3, #7: candidate error: ..."): the table's note column shows only its start."""
    retried_as = {t.retry_of: t.number for t in trials if t.HasField("retry_of")}
    by_reason: dict[str, list[str]] = {}
    for t in trials:
        if t.state == pb.FAIL and t.fail_reason:
            again = f" (retried as #{retried_as[t.number]})" if t.number in retried_as else ""
            by_reason.setdefault(printable(t.fail_reason), []).append(f"#{t.number}{again}")
    return [f"  {', '.join(numbers)}: {reason}" for reason, numbers in by_reason.items()]


#: info entries that are warnings without a ``_warning`` name, and how they are said: a kept
#: checkpoint the server refused (its disk full: the trial completed, its files on the worker)
#: was said nowhere but in ``--json`` and the dashboard
WARNING_KEYS = {
    "checkpoint_upload_error": (
        "checkpoint not uploaded (the result stands; its files stay on the worker, "
        "`archsearch fetch` says where)"
    ),
}


def dev_data_warning(trials: Sequence[pb.Trial]) -> str:
    """A line when a study's trials were scored on different dev data (their ``dev_hash``
    differs at one ``max_seq_length``): a dev file edited during the study, or workers reading
    different copies (a glue_data folder and the hub); "" when they agree."""
    groups: dict[Any, dict[str, list[int]]] = {}
    for t in trials:
        digest = t.info.get("dev_hash")
        if t.state != pb.COMPLETE or t.duplicate_of >= 0 or not digest:
            continue
        recipe = json.loads(t.candidate_json or "{}").get("recipe", {})
        length = recipe.get("max_seq_length") if isinstance(recipe, dict) else None
        groups.setdefault(length, {}).setdefault(digest, []).append(t.number)
    split = [by_hash for by_hash in groups.values() if len(by_hash) > 1]
    if not split:
        return ""
    sets = " vs ".join(
        ", ".join(f"#{n}" for n in numbers[:4]) + (" ..." if len(numbers) > 4 else "")
        for numbers in split[0].values()
    )
    return (
        f"  trials were scored on different dev data ({sets}): a dev file changed during the "
        "study, or workers read different copies (each trial's data_source says which); their "
        "scores do not compare"
    )


def trial_warnings(trials: Sequence[pb.Trial]) -> list[str]:
    """What workers warned about in their trials' info (``*_warning`` entries: a curriculum
    or data selection that changed nothing; the :data:`WARNING_KEYS`), once per distinct
    warning with the trials that gave it ("#2, #5: rte selection: size 5000 is not below
    ...")."""
    by_warning: dict[str, list[str]] = {}
    for t in trials:
        for key, text in sorted(t.info.items()):
            if key.endswith("_warning") and text:
                what = key.removesuffix("_warning").replace(".", " ")
            elif key in WARNING_KEYS and text:
                what = WARNING_KEYS[key]
            else:
                continue
            by_warning.setdefault(printable(f"{what}: {text}"), []).append(f"#{t.number}")
    return [f"  {', '.join(numbers)}: {text}" for text, numbers in by_warning.items()]
