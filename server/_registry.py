"""The served studies: a registry by name and storage id, opened and rebuilt from the storage.

At start-up every archsearch study in the storage (a study with an ``archsearch:spec``
attribute) gets a handle again, and :func:`rebuild_index` reads its trials once to rebuild the
in-memory index (counts, queued retries, live leases, the prepared pool, completed candidates).

A launch is several commits (Optuna's public API has no way to create a study with its
attributes in one): the study, its metric names, then the ``archsearch:*`` attributes. A
server killed in between leaves an Optuna study without a spec and without trials; it is not
served, and launch, ``show`` and ``delete`` name it as such: ``archsearch delete NAME --yes``
removes it (an Optuna study with trials that archsearch did not launch is never touched).
"""

from __future__ import annotations

import datetime
import logging
import shlex
import threading
from collections.abc import Callable
from typing import Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.search import ServerStudy, make_loop, make_pruner
from archsearch.server import _storage
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._delete import DELETING_ATTR
from archsearch.server._derived_trials import is_derived_trial
from archsearch.server._errors import AlreadyExists, FailedPrecondition, NotFound
from archsearch.server._index import (
    CANCEL_ATTR,
    COMPLETED_REASON_ATTR,
    CREATED_ATTR,
    LEASE_ATTR,
    RETRY_ON_RESUME_ATTR,
    RUNNING,
    SPEC_ATTR,
    STATE_ATTR,
    STOPPED,
    LiveTrial,
    StudyHandle,
    StudyIndex,
)
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._logsafe import loggable
from archsearch.server._loop_guard import loop_call
from archsearch.server._pool import CandidatePool
from archsearch.server._retries import Retries
from archsearch.server._rpc import storage_down
from archsearch.server._spec import SearchSpec
from archsearch.server._stored_defaults import stored_candidate
from archsearch.server._trainers import TRAINER_ATTR, TrainerCatalogue, recorded_trainer_info
from archsearch.spaces import PluginFailed, SpecError

log = logging.getLogger("archsearch.server")


#: what a study in the storage that this server does not serve is (:meth:`stored_kind`)
StoredKind = Literal["empty", "foreign", "deleting", "archsearch"]


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class StudyRegistry:
    """The archsearch studies this server serves, by name and by storage id.

    Args:
        storage: the server's Optuna storage.
        notify: wakes acquires waiting for work (a loop that finished building, a launch).
        trainers: the trainers studies may select; each study records its trainer's metadata
            at launch, and a restart takes it back for trainers not known again yet.
    """

    def __init__(
        self,
        storage: DeferredTrialStorage,
        notify: Callable[[], None],
        trainers: TrainerCatalogue | None = None,
    ):
        self.storage = storage
        self.notify = notify
        self.trainers = trainers if trainers is not None else TrainerCatalogue.installed()
        self._handles: dict[str, StudyHandle] = {}
        self._by_id: dict[int, StudyHandle] = {}
        self._lock = threading.Lock()
        #: studies in the storage whose stored spec no longer reads, and why (not served)
        self.unserved: dict[str, str] = {}
        #: studies whose deletion a stopped server began (not served; the start finishes it)
        self.half_deleted: set[str] = set()
        #: one delete at a time, and none while a study is being launched
        self.delete_lock = threading.Lock()

    def named(self, name: str) -> StudyHandle | None:
        """The served study called ``name``, None when there is none."""
        return self._handles.get(name)

    def by_id(self, study_id: int) -> StudyHandle | None:
        """The served study with this storage id, None when there is none."""
        return self._by_id.get(study_id)

    def get(self, name: str) -> StudyHandle:
        """The served study called ``name``.

        Raises:
            NotFound: no archsearch study has that name.
        """
        try:
            return self._handles[name]
        except KeyError:
            pass
        if name in self.unserved:
            raise FailedPrecondition(
                f"study {name!r} is in the storage, but this server cannot serve it: its "
                f"stored spec no longer reads ({self.unserved[name]}); start the server where "
                "what the spec names is installed (a plugin's space or trainer, the same "
                "archsearch version)"
            )
        kind = self.stored_kind(name)
        if kind == "empty":
            raise NotFound(
                f"no archsearch study named {name!r}: a study of that name {_empty(name)}"
            )
        if kind == "deleting":
            raise NotFound(
                f"study {name!r} is being deleted; `archsearch delete {shlex.quote(name)} --yes` "
                "finishes a deletion a stopped server began"
            )
        if kind == "foreign":
            raise NotFound(
                f"no archsearch study named {name!r}: the storage's study of that name is an "
                "Optuna study that archsearch did not launch (it has trials, no archsearch "
                "spec); read it with optuna-dashboard or Optuna's API, or launch under "
                "another name"
            )
        raise NotFound(f"no archsearch study named {name!r}; `archsearch studies` lists them")

    def serves(self, h: StudyHandle) -> bool:
        """Whether ``h`` is still the served study of its name (not deleted)."""
        return self._handles.get(h.spec.name) is h

    def stored_kind(self, name: str) -> StoredKind | None:
        """What the storage's study called ``name``, which this server does not serve, is:
        ``deleting`` (a deletion began), ``empty`` (no archsearch spec and no trials: a launch
        the server did not finish, or an empty Optuna study), ``foreign`` (an Optuna study
        with trials that archsearch did not launch), ``archsearch`` (a spec: being deleted);
        None: the storage has no study of that name."""
        try:
            study_id = self.storage.get_study_id_from_name(name)
            attrs = self.storage.get_study_user_attrs(study_id)
            if attrs.get(DELETING_ATTR):
                return "deleting"
            if SPEC_ATTR in attrs:
                return "archsearch"
            return "foreign" if self.storage.get_n_trials(study_id) else "empty"
        except KeyError:  # none, or deleted meanwhile
            return None

    def handles(self) -> list[StudyHandle]:
        """Every served study, oldest first."""
        return sorted(self._handles.values(), key=lambda h: (h.created_at, h.spec.name))

    def forget(self, name: str) -> None:
        """Stops serving study ``name`` (it is being deleted)."""
        with self._lock:
            h = self._handles.pop(name, None)
            if h is not None:
                self._by_id.pop(h.study_id, None)
            self.unserved.pop(name, None)
            self.half_deleted.discard(name)

    def _add(self, h: StudyHandle) -> None:
        self._handles[h.spec.name] = h
        self._by_id[h.study_id] = h

    def create(self, spec: SearchSpec) -> StudyHandle:
        """Creates the Optuna study of a new archsearch study and serves it.

        Returns:
            The new study's handle (state running).

        Raises:
            AlreadyExists: a study of that name exists (archsearch's or a plain Optuna one).
        """
        with self.delete_lock, self._lock:
            if spec.name in self._handles:
                raise AlreadyExists(
                    f"study {spec.name!r} already exists; choose another name (or `archsearch "
                    f"resume {spec.name}` to run it again, `archsearch delete {spec.name}` once "
                    "it is stopped)"
                )
            if spec.name in self.unserved:
                raise AlreadyExists(
                    f"study {spec.name!r} already exists (this server cannot serve it: "
                    f"{self.unserved[spec.name]}); choose another name"
                )
            kind = self.stored_kind(spec.name)
            if kind == "empty":
                raise AlreadyExists(f"a study named {spec.name!r} {_empty(spec.name)}")
            if kind == "deleting":
                raise AlreadyExists(
                    f"study {spec.name!r} is being deleted; launch it again once "
                    f"`archsearch delete {shlex.quote(spec.name)} --yes` has finished"
                )
            if kind == "archsearch":
                raise AlreadyExists(
                    f"study {spec.name!r} already exists in the storage; choose another name"
                )
            if kind == "foreign":
                raise AlreadyExists(
                    f"a study named {spec.name!r} already exists in the storage (not launched "
                    "by archsearch); choose another name"
                )
            directions = [o.direction for o in spec.objectives]
            study = optuna.create_study(
                study_name=spec.name, storage=self.storage, directions=directions
            )
            study.set_metric_names([o.metric for o in spec.objectives])
            created = _now_iso()
            study.set_user_attr(SPEC_ATTR, spec.to_dict())
            study.set_user_attr(STATE_ATTR, RUNNING)
            study.set_user_attr(CREATED_ATTR, created)
            if (info := self.trainers.get(spec.trainer)) is not None:
                study.set_user_attr(TRAINER_ATTR, info.to_dict())
            try:
                handle = self._open(spec, RUNNING, created)
            except BaseException:  # the loop failed: no study is left behind, half launched
                optuna.delete_study(study_name=spec.name, storage=self.storage)
                raise
            self._add(handle)
        return handle

    def load(self, rebuild: Callable[[StudyHandle], None]) -> None:
        """Serves every archsearch study in the storage again, calling ``rebuild`` on each.

        A study that cannot be served is logged and left out (:meth:`_unserve`), the others
        served: its stored spec no longer valid, or a step of building it raising (a plugin
        space's or loop's constructor, its index's rebuild). One such study stopped the whole
        server at start-up with a traceback. A storage that cannot be read still stops it.
        """
        for frozen in self.storage.get_all_studies():
            if frozen.user_attrs.get(DELETING_ATTR):
                self.half_deleted.add(frozen.study_name)
                continue
            raw = frozen.user_attrs.get(SPEC_ATTR)
            if raw is None:
                continue  # a plain Optuna study sharing the storage
            if (info := recorded_trainer_info(frozen.user_attrs)) is not None:
                self.trainers.remember(info)
            try:
                spec = SearchSpec.from_dict(raw, self.trainers, stored=True)
                handle = self._open(
                    spec,
                    frozen.user_attrs.get(STATE_ATTR, RUNNING),
                    frozen.user_attrs.get(CREATED_ATTR, ""),
                )
                handle.completed_reason = str(frozen.user_attrs.get(COMPLETED_REASON_ATTR, ""))
                handle.cancel_running = frozen.user_attrs.get(CANCEL_ATTR) is True
                self._add(handle)
                try:
                    rebuild(handle)
                except BaseException:
                    self.forget(spec.name)
                    raise
            except Exception as e:
                if storage_down(e) is not None:
                    raise
                self._unserve(frozen.study_name, e)

    def _unserve(self, name: str, e: Exception) -> None:
        """Leaves study ``name`` unserved because of ``e``, logged: a spec error as its message
        (a plugin's failure, and anything unexpected, with the traceback)."""
        if isinstance(e, SpecError):
            why = str(e)
            log.error(
                "study %s: stored spec no longer valid (%s); not serving it",
                loggable(name),
                loggable(e),
                exc_info=e if isinstance(e, PluginFailed) else None,
            )
        else:
            why = f"building it failed: {type(e).__name__}: {e} (the server log has the traceback)"
            log.exception("study %s: %s; not serving it", loggable(name), loggable(why))
        self.unserved[name] = why[:300]

    def _open(self, spec: SearchSpec, state: str, created_at: str) -> StudyHandle:
        n_existing = 0
        try:
            sid = self.storage.get_study_id_from_name(spec.name)
            n_existing = len(self.storage.get_all_trials(sid, deepcopy=False))
        except KeyError:
            pass
        # Offset the seed by the trials already made so a restarted server does not replay
        # the suggestions of its previous life (a seeded RandomSampler would).
        loop = loop_call(
            spec.loop,
            "its constructor",
            lambda: make_loop(
                spec.loop, spec.seed + n_existing, len(spec.objectives), spec.loop_options
            ),
        )
        study = ServerStudy(
            study_name=spec.name,
            storage=self.storage,
            sampler=loop.sampler,
            pruner=make_pruner(spec.pruner, len(spec.objectives)),
        )
        handle = StudyHandle(
            spec=spec,
            study=study,
            space=spec.build_space(),
            loop=loop,
            lock=threading.RLock(),
            state=state,
            created_at=created_at,
        )
        if state == RUNNING:  # build what the loop needs now, not in a worker's call
            loop_call(spec.loop, "warm_up", lambda: loop.warm_up(handle.space, self.notify))
        return handle


def _empty(name: str) -> str:
    return (
        "exists with no trials and no archsearch spec (a launch the server did not finish, "
        f"or an empty Optuna study): `archsearch delete {shlex.quote(name)} --yes` removes it"
    )


def rebuild_index(
    h: StudyHandle,
    trials: list[FrozenTrial],
    storage: DeferredTrialStorage,
    pool: CandidatePool,
    lifecycle: StudyLifecycle,
    retries: Retries,
) -> None:
    """Rebuilds ``h``'s index from its stored ``trials`` (read once): counts, queued retries,
    live leases, completed candidates.

    A RUNNING trial without a lease was prepared but never handed out when the previous
    server stopped: it goes back to the pool. One without a candidate died inside
    preparation: it is failed and its parameters re-queued (not counted as a failure).
    """

    idx = StudyIndex()
    orphans = []
    with h.lock:
        for t in trials:
            if is_derived_trial(t):
                continue  # a DyLoRA rank, a student: no budget, lease or candidate (complete)
            if "failed_trial" not in t.system_attrs:
                if "duplicate_of" not in t.user_attrs:
                    idx.originals += 1
                    idx.repeat_streak = 0
                elif t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    idx.repeat_streak += 1
                    idx.repeats += 1
            if t.state == TrialState.FAIL and t.system_attrs.get(RETRY_ON_RESUME_ATTR):
                idx.unretried.add(t.number)
            if t.state == TrialState.WAITING:
                idx.waiting.add(_storage.trial_id_of(t))
            elif t.state == TrialState.COMPLETE and "candidate" in t.user_attrs:
                fp = stored_candidate(t.user_attrs["candidate"]).fingerprint()
                idx.done.setdefault(
                    fp, (t.number, list(t.values or []), t.user_attrs.get("metrics", {}))
                )
            elif (
                t.state == TrialState.PRUNED
                and "candidate" in t.user_attrs
                and "duplicate_of" not in t.user_attrs
            ):
                fp = stored_candidate(t.user_attrs["candidate"]).fingerprint()
                curve = dict(t.intermediate_values)
                idx.pruned.setdefault(fp, (t.number, list(t.values or []), curve))
            elif t.state == TrialState.RUNNING:
                if "candidate" not in t.user_attrs:
                    orphans.append(t)
                    continue
                live = LiveTrial(
                    _storage.trial_id_of(t),
                    t.number,
                    stored_candidate(t.user_attrs["candidate"]),
                    len(t.system_attrs.get("retry_history", [])),
                    str(t.system_attrs.get(LEASE_ATTR, "")),
                )
                idx.live[_storage.trial_id_of(t)] = live
                if not live.lease_id:
                    idx.pool.append(_storage.trial_id_of(t))
        if idx.repeat_streak >= pool.repeat_limit(h) or idx.repeats >= pool.repeats_limit(h):
            idx.exhausted = pool.exhausted_reason(h, idx.repeat_streak, idx.originals, idx.repeats)
        h.index = idx
        for t in orphans:
            why = "server stopped while preparing it"
            lifecycle.fail_unrun(h, _storage.trial_id_of(t), why)
            retries.requeue(h, storage.get_trial(_storage.trial_id_of(t)), why, count=False)
        if h.state == STOPPED:  # a stop of an older server version left some waiting
            lifecycle.end_unrun(h)
