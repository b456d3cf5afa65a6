"""What ``archsearch show`` says under its table: each failed trial's whole reason, the
workers' warnings, all as printable single lines (a worker's text reaches the reader's
terminal)."""

from __future__ import annotations

import re
from collections.abc import Sequence

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
