"""Resuming a study: a stopped or completed study runs again, or a running one gets a new budget.

``archsearch resume STUDY [--n-trials N]`` (ResumeSearch). What Optuna users do by calling
``optimize`` again on a stored study: the loop continues from every stored trial (its sampler
reads the history), nothing is trained twice (completed candidates are recorded repeats).

* ``n_trials`` is the new budget of distinct candidates: at least those already asked (they
  stay asked), above them for a completed study (or it would complete again at once). It is
  written into the stored spec, so a restarted server keeps it.
* A stopped study's candidates that were prepared or queued for a retry but never ran (FAIL,
  "study stopped before this candidate ran"), and those whose trial failed retryably while it
  was stopped (handed back at SIGTERM, lease expired), are queued again as WAITING copies, not
  counted as failures and not against the budget (they were counted when first asked). Trials
  that ``stop --cancel-running`` cancelled stay failed: the user ended them (they are marked
  ``cancelled``: a staged loop such as AutoDistil's asks their job again).
* The stop's cancel flag and the completed reason are cleared.
* Refused: a study whose loop said it has nothing new to propose (the space exhausted,
  AutoDistil's stages done), or a completed one whose loop plans its budget
  (``SearchLoop.plans_its_budget``: AutoDistil's jobs), which more trials cannot change; a
  running study without a new budget.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection

from optuna.trial import FrozenTrial, TrialState

from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._errors import FailedPrecondition, InvalidArgument
from archsearch.server._index import (
    CANCEL_ATTR,
    COMPLETED,
    COMPLETED_REASON_ATTR,
    RUNNING,
    SPEC_ATTR,
    STOPPED_REASON,
    StudyHandle,
)
from archsearch.server._lifecycle import N_TRIALS_REASON, StudyLifecycle
from archsearch.server._loop_guard import loop_call, warm_up_failed
from archsearch.server._retries import Retries
from archsearch.server._spec import MAX_TRIALS
from archsearch.spaces import SpecError

log = logging.getLogger(__name__)

#: why a re-queued candidate of a stopped study waits again
RESUMED_REASON = "study resumed: this candidate never ran before its stop"


def check_budget(h: StudyHandle, n_trials: int) -> None:
    """Raises when ``n_trials`` (0: keep the budget) cannot be ``h``'s new budget.

    Raises:
        InvalidArgument: out of 0..MAX_TRIALS.
        FailedPrecondition: below the candidates already asked, not above them for a
            completed study, or missing for a running study.
    """
    name, asked = h.spec.name, h.index.originals
    if not 0 <= n_trials <= MAX_TRIALS:
        raise InvalidArgument(f"n_trials must be in 1..{MAX_TRIALS} (0 keeps it), got {n_trials}")
    if n_trials and n_trials < asked and h.state != COMPLETED:
        raise FailedPrecondition(
            f"study {name} has asked {asked} distinct candidates already; "
            f"pass --n-trials {asked} or more"
        )
    if h.state == RUNNING and not n_trials:
        raise FailedPrecondition(
            f"study {name} is running (budget {h.spec.n_trials}); pass --n-trials N to change "
            "its budget"
        )
    if h.state == COMPLETED and (n_trials or h.spec.n_trials) <= asked:
        raise FailedPrecondition(
            f"study {name} completed with its budget of {h.spec.n_trials} spent ({asked} "
            f"distinct candidates); pass --n-trials above {asked} to try more"
        )


def resume(
    h: StudyHandle,
    n_trials: int,
    storage: DeferredTrialStorage,
    lifecycle: StudyLifecycle,
    retries: Retries,
    trials: Callable[[StudyHandle], list[FrozenTrial]],
    notify: Callable[[], None],
) -> int:
    """Runs ``h`` again (see the module docstring); returns how many never-run candidates of
    its stop were queued again.

    Raises:
        InvalidArgument, FailedPrecondition: as :func:`check_budget`; FailedPrecondition
            also when the loop has nothing new to propose.
    """
    with h.lock:
        exhausted = h.index.exhausted
        if h.state == COMPLETED and not h.completed_reason.startswith(N_TRIALS_REASON):
            exhausted = exhausted or h.completed_reason  # the loop's own reason, kept
        if h.state == COMPLETED and getattr(h.loop, "plans_its_budget", False):
            # its budget is its plan: "pass --n-trials above N" led to "resumed", then nothing
            exhausted = exhausted or (
                f"the {h.spec.loop} loop's jobs are done (its n_trials, {h.spec.n_trials}, "
                "is their count: more trials change nothing)"
            )
        if exhausted:
            raise FailedPrecondition(
                f"study {h.spec.name} cannot go on: {exhausted}; launch a new study "
                "(another name, space or loop) to search further"
            )
        check_budget(h, n_trials)
        was = h.state
        if n_trials and n_trials != h.spec.n_trials:
            spec = dataclasses.replace(h.spec, n_trials=n_trials)
            storage.set_study_user_attr(h.study_id, SPEC_ATTR, spec.to_dict())
            h.spec = spec
        if h.completed_reason:
            storage.set_study_user_attr(h.study_id, COMPLETED_REASON_ATTR, "")
            h.completed_reason = ""
        if h.cancel_running:
            storage.set_study_user_attr(h.study_id, CANCEL_ATTR, False)
            h.cancel_running = False
        if was != RUNNING:
            lifecycle.set_state(h, RUNNING)
        requeued = 0
        if was != COMPLETED and was != RUNNING:  # stopped: its never-run candidates again
            for t in never_ran(trials(h), h.index.unretried):
                requeued += retries.requeue(h, t, RESUMED_REASON, count=False)
            h.index.unretried.clear()
        try:
            loop_call(h.spec.loop, "warm_up", lambda: h.loop.warm_up(h.space, notify))
        except SpecError as e:  # the loop cannot start again: the study stays stopped, said
            failed = warm_up_failed(h, e)
            log.error("study %s stopped: %s", h.spec.name, failed.reason, exc_info=e.__cause__ or e)
            lifecycle.stop_failed(h, failed.reason)
            raise FailedPrecondition(f"study {h.spec.name} cannot go on: {failed.reason}") from e
        log.info(
            "study %s resumed (was %s; budget %d; %d never-run candidates queued again)",
            h.spec.name,
            was,
            h.spec.n_trials,
            requeued,
        )
    notify()
    return requeued


def never_ran(trials: list[FrozenTrial], unretried: Collection[int] = ()) -> list[FrozenTrial]:
    """The trials a stop failed before they ran (:data:`STOPPED_REASON`), and those that
    failed retryably while the study was stopped (``unretried``: handed back, lease expired),
    that no later trial retries, in trial order."""
    retried = {
        int(t.system_attrs["retry_history"][-1])
        for t in trials
        if t.system_attrs.get("retry_history")
    }
    return [
        t
        for t in sorted(trials, key=lambda t: t.number)
        if t.state == TrialState.FAIL
        and (t.user_attrs.get("fail_reason") == STOPPED_REASON or t.number in unretried)
        and t.number not in retried
    ]
