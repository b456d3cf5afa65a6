"""The note `launch`, `studies` and `show` print when no connected worker trains a running
study's trials: why (no worker, workers of other trainers, workers serving other studies, or
workers lacking its data), and the command that starts one."""

from __future__ import annotations

import json
import shlex
from typing import Any

from archsearch.server._trainers import TrainerCatalogue
from archsearch.v1 import archsearch_pb2 as pb


def worker_note(study: Any, flags: str, after: str = "") -> str:
    """A note when no connected worker offers a running study's trainer ("" otherwise), with
    the command that starts one: ``flags`` are its connection flags (``--server HOST:PORT``,
    and ``--token-file F`` when the server needs a token), ``after`` what to say after it
    (where the token comes from, when that was ``$ARCHSEARCH_TOKEN``)."""
    if study.state != pb.STUDY_RUNNING or study.workers_for_trainer > 0:
        return ""
    spec = json.loads(study.spec_json)
    trainer = spec.get("trainer", "bert")
    offered = ", ".join(study.connected_trainers)
    if study.workers_lacking_data:
        n = study.workers_lacking_data
        return (
            f"note: the {n} connected worker{'s' if n > 1 else ''} running the {trainer} trainer "
            f"lack{'' if n > 1 else 's'} {study.name}'s data and skip its trials (the worker "
            "logs say what is missing and where they looked); they wait for a worker that has "
            f"it: `archsearch worker {flags} --trainer {trainer} --glue-dir DIR`{after}"
        )
    connected = (
        f"the connected workers offer only {offered}"
        if offered
        else f"the {study.workers_elsewhere} connected serve other studies by --study"
        if study.workers_elsewhere
        else "no worker is connected"
    )
    # a space option the trainer needs names a file its workers read too (the table trainer's
    # space_options.table is the worker's --table PATH): the study's own, the likeliest path
    info = TrainerCatalogue.installed().get(trainer)
    given = spec.get("space_options") or {}
    table = "".join(
        f" --{key} {shlex.quote(str(given[key])) if given.get(key) else 'PATH'}"
        for key in (info.required_space_options if info else ())
    )
    return (
        f"note: no connected worker runs the {trainer} trainer ({connected}); {study.name}'s "
        f"trials wait until one does: `archsearch worker {flags} --trainer "
        f"{trainer}{table}`{after}"
    )
