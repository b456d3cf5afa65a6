"""The server's trainer catalogue: which trainers exist, and what each trains and reports.

The server has no list of trainers of its own. It learns them

1. at start-up, from the trainers installed in its own environment: the ``archsearch.trainers``
   entry points (pyproject.toml), each a light :class:`~archsearch.spaces.TrainerInfo` object,
   so reading them imports no torch and no training code, and the server names no worker
   module;
2. from every worker's ``RegisterWorker`` (``trainer_info``): a trainer that only a remote
   worker has (a plugin not installed here) becomes launchable once such a worker registered;
3. from the studies it serves: each study records its trainer's metadata at launch
   (:data:`TRAINER_ATTR`), so a restarted server re-validates a plugin trainer's study before
   any worker has registered again.

A registration describing a trainer the catalogue already knows replaces that description
(the workers run the trainers; a server's installed copy may be older), and the change is
logged. Studies already launched keep the spec they were validated with.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import threading
from collections.abc import Iterable, Mapping

from archsearch.server._logsafe import loggable
from archsearch.spaces import SpecError, TrainerInfo
from archsearch.v1 import archsearch_pb2 as pb

log = logging.getLogger("archsearch.server")

#: Entry-point group of installed trainers: ``name = "module:object"``, the object a TrainerInfo.
ENTRY_POINT_GROUP = "archsearch.trainers"
#: Study user attribute holding the trainer's metadata as the study was launched with it.
TRAINER_ATTR = "archsearch:trainer_info"
#: Most trainer descriptions one registration may carry.
MAX_TRAINER_INFO = 32


class TrainerCatalogue:
    """Trainer metadata by name, safe to read and update from any thread.

    Args:
        infos: What is known at the start (usually :func:`installed_trainers`).
    """

    def __init__(self, infos: Iterable[TrainerInfo] = ()) -> None:
        self._lock = threading.Lock()
        self._infos: dict[str, TrainerInfo] = {i.name: i for i in infos}
        #: the trainers known from the start (installed here): a worker's description never
        #: replaces theirs, so a worker token cannot change what people may launch
        self._own = frozenset(self._infos)
        self._warned: set[str] = set()  # descriptions of installed trainers said once

    @classmethod
    def installed(cls) -> TrainerCatalogue:
        """A catalogue of the trainers installed in this environment (entry points)."""
        return cls(installed_trainers())

    def names(self) -> tuple[str, ...]:
        """Every known trainer's name, sorted."""
        with self._lock:
            return tuple(sorted(self._infos))

    def get(self, name: str) -> TrainerInfo | None:
        """The metadata of ``name``, None when no such trainer is known."""
        with self._lock:
            return self._infos.get(name)

    def require(self, name: str) -> TrainerInfo:
        """The metadata of the trainer a spec names.

        Raises:
            SpecError: ``trainer``: no such trainer is known; the message lists the known ones.
        """
        info = self.get(name)
        if info is None:
            known = ", ".join(self.names()) or (
                "none (no archsearch.trainers entry point is installed: reinstall archsearch, "
                "for example `pip install -e .`)"
            )
            raise SpecError(
                "trainer",
                f"unknown trainer {name!r}",
                f"known: {known}; for another, start a worker that offers it "
                f"(archsearch worker --trainer {name}) and launch again",
            )
        return info

    def learn(self, infos: Iterable[TrainerInfo], source: str) -> None:
        """Takes what a worker (``source``) says about its trainers: a plugin's description
        (the newest one wins), never one that replaces an installed trainer's."""
        with self._lock:
            for info in infos:
                known = self._infos.get(info.name)
                if known is not None and info.name in self._own:
                    said = json.dumps(info.to_dict(), sort_keys=True)
                    if known != info and said not in self._warned:
                        self._warned.add(said)
                        log.warning(
                            "trainer %s: %s describes it differently from the one installed "
                            "with this server (another archsearch version?); the server keeps "
                            "its own description",
                            info.name,
                            loggable(source),
                        )
                    continue
                if known is not None and known != info:
                    log.warning(
                        "trainer %s: %s describes it differently from before; using the new "
                        "description for studies launched from now on",
                        info.name,
                        loggable(source),
                    )
                self._infos[info.name] = info

    def remember(self, info: TrainerInfo) -> None:
        """Takes a study's recorded metadata, unless the trainer is known already."""
        with self._lock:
            self._infos.setdefault(info.name, info)


@functools.cache
def installed_trainers() -> tuple[TrainerInfo, ...]:
    """The trainers installed in this environment: the ``archsearch.trainers`` entry points.

    An entry point that fails to load, or is not a TrainerInfo of its own name, is logged and
    skipped (one broken plugin does not stop the server).
    """
    out = []
    seen: dict[str, str] = {}
    # archsearch's own first: a plugin that publishes a built-in trainer's name is ignored,
    # whichever order the entry points come in
    eps = sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
        key=lambda ep: not ep.value.startswith("archsearch."),
    )
    for ep in eps:
        if ep.name in seen:  # two packages publish one name
            log.error(
                "trainer entry point %s is published twice (%s and %s); using %s, "
                "uninstall or rename the other",
                ep.name,
                seen[ep.name],
                ep.value,
                seen[ep.name],
            )
            continue
        seen[ep.name] = ep.value
        try:
            info = ep.load()
        except Exception as e:  # a plugin's import error must not stop the server
            log.error("trainer entry point %s (%s) does not load: %s", ep.name, ep.value, e)
            continue
        if not isinstance(info, TrainerInfo) or info.name != ep.name:
            log.error(
                "trainer entry point %s (%s) is not a TrainerInfo named %s; skipped",
                ep.name,
                ep.value,
                ep.name,
            )
            continue
        out.append(info)
    return tuple(sorted(out, key=lambda i: i.name))


def trainer_info_from_pb(msg: pb.TrainerInfo) -> TrainerInfo:
    """A registration's trainer description, checked.

    Raises:
        SpecError: A field is malformed; the message names it and the fix.
    """
    return TrainerInfo(
        name=msg.name,
        description=msg.description,
        spaces=tuple(msg.spaces),
        task_metrics=msg.task_metrics,
        metrics=tuple(msg.metrics),
        cost_metrics=tuple(msg.cost_metrics),
        multi_task_metrics=tuple(msg.multi_task_metrics),
        multi_task=msg.multi_task,
        required_space_options=dict(msg.required_space_options),
        labelled_metrics=msg.labelled_metrics,
        data_fields=tuple(msg.data_fields),
    )


def registered_trainer_info(
    msgs: Iterable[pb.TrainerInfo], offered: Iterable[str]
) -> list[TrainerInfo]:
    """Every trainer description of a RegisterWorker request, checked.

    Raises:
        SpecError: Too many descriptions, one of a trainer the worker does not offer, two of
            one trainer, or a malformed one (``trainer_info[i]...`` names it).
    """
    msgs = list(msgs)
    if len(msgs) > MAX_TRAINER_INFO:
        raise SpecError("trainer_info", f"{len(msgs)} descriptions; at most {MAX_TRAINER_INFO}")
    offered = set(offered)
    out: list[TrainerInfo] = []
    for i, msg in enumerate(msgs):
        info = trainer_info_from_pb(msg)  # its SpecError names the trainer and the field
        if info.name not in offered:
            raise SpecError(
                f"trainer_info[{i}].name",
                f"describes {info.name!r}, which capabilities.trainers does not offer",
                "describe only the trainers the worker offers",
            )
        if any(o.name == info.name for o in out):
            raise SpecError(f"trainer_info[{i}].name", f"{info.name!r} is described twice")
        out.append(info)
    return out


def recorded_trainer_info(user_attrs: Mapping[str, object]) -> TrainerInfo | None:
    """The trainer metadata a study recorded at launch; None when it has none or it no
    longer reads (the installed or registered trainers decide then)."""
    raw = user_attrs.get(TRAINER_ATTR)
    if raw is None:
        return None
    try:
        return TrainerInfo.from_dict(raw)
    except (SpecError, TypeError) as e:
        log.warning("recorded trainer metadata does not read (%s); ignored", loggable(e))
        return None
