"""What the server does when a study's loop fails: the study stops, not the workers.

A loop is code the user may have written (a plugin) or one whose library fails on some data (a
GP whose fit breaks). Before this, anything it raised, or a suggestion that could not become a
trial (not a list of one :class:`~archsearch.search.Suggestion`, an architecture outside the
space, attributes that are not JSON), went back to the worker asking for work as INTERNAL (or
INVALID_ARGUMENT): the worker exited, every worker asking for any study hit the same study
again, and the study still read "running" with no reason anywhere but the server log.

Now :func:`suggest_one` and :func:`loop_mistake` turn such a failure into :class:`LoopFailed`,
whose message names the loop, what went wrong and the fix; the candidate pool stops the study
with it (``StudyLifecycle.stop_failed``: trials in flight finish; ``show``, ``studies`` and a
worker bound to the study by ``--study`` say why), logs the traceback and serves the other
studies. ``archsearch resume`` runs it again once the loop is fixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from archsearch.search import LoopSnapshot, NoSuggestion, SearchLoop, Suggestion
from archsearch.spaces import PluginFailed, SpecError

T = TypeVar("T")

#: The fix every loop failure names (the study's name is added).
FIX = (
    "fix the loop (the server log has the traceback; a fixed plugin is loaded when the server "
    "restarts), then `archsearch resume {study}`"
)

#: What a plugin's code may raise that the server catches: ``SystemExit`` too (an
#: argparse-using plugin's; it ended the RPC's thread, or the server, with no word).
PLUGIN_ERRORS: tuple[type[BaseException], ...] = (Exception, SystemExit)


class LoopFailed(Exception):
    """The study's loop raised, or proposed what cannot be a trial (see the module docstring).

    Args:
        reason: One line: the loop, what it did, and the fix (for a study).
        detail: What went wrong alone (a replay, which has no study to resume, says this).
        mistake: its suggestion was refused (:func:`loop_mistake`): the loop's fault even
            when the refusal is a ``SpecError``.
    """

    def __init__(self, reason: str, detail: str, mistake: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.mistake = mistake


def _error(e: BaseException) -> str:
    """A spec error says its field and fix itself; anything else is named by its type."""
    return str(e) if isinstance(e, SpecError) else f"{type(e).__name__}: {e}"


def _name(loop: SearchLoop) -> str:
    return str(getattr(loop, "name", "") or type(loop).__name__)


def suggest_one(loop: SearchLoop, snapshot: LoopSnapshot) -> Suggestion:
    """``loop.suggest(snapshot, 1)``'s one suggestion.

    Raises:
        NoSuggestion: as the loop raised it (it waits, or has finished).
        LoopFailed: the loop raised anything else, or did not return a list (or tuple) of
            exactly one ``Suggestion`` with a mapping architecture and JSON attributes.
    """
    name = _name(loop)
    try:
        answer: Any = loop.suggest(snapshot, 1)
    except NoSuggestion:
        raise
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as e:  # SystemExit too: it ended the RPC's thread with no answer
        fix = FIX.format(study=snapshot.study_name)
        raise LoopFailed(f"loop {name} failed: {_error(e)} ({fix})", _error(e)) from e
    if not isinstance(answer, list | tuple) or len(answer) != 1:
        what = (
            f"{len(answer)} suggestions"
            if isinstance(answer, list | tuple)
            else f"a {type(answer).__name__}"
        )
        raise failure(
            name,
            snapshot.study_name,
            f"it answered suggest(snapshot, 1) with {what}, not a list of one Suggestion "
            "(raise NoSuggestion when it has none)",
        )
    (suggestion,) = answer
    if not isinstance(suggestion, Suggestion):
        detail = f"it suggested a {type(suggestion).__name__}, not an archsearch.search.Suggestion"
        raise failure(name, snapshot.study_name, detail)
    if not isinstance(suggestion.architecture, Mapping):
        detail = (
            f"it suggested an architecture that is a {type(suggestion.architecture).__name__}, "
            "not a mapping"
        )
        raise failure(name, snapshot.study_name, detail)
    try:
        json.dumps(dict(suggestion.attrs))
    except (TypeError, ValueError) as e:
        detail = f"it suggested attrs that are not JSON ({e}): they are stored on the trial"
        raise failure(name, snapshot.study_name, detail) from e
    return suggestion


def loop_mistake(loop: SearchLoop, snapshot: LoopSnapshot, error: Exception) -> LoopFailed:
    """The :class:`LoopFailed` of a suggestion that cannot become a trial: ``error`` is what
    checking it raised (its architecture is not in the space, its recipe or data keys are
    bad)."""
    space = getattr(snapshot.space, "name", type(snapshot.space).__name__)
    detail = f"it suggested a candidate the {space} space cannot train: {_error(error)}"
    failed = failure(_name(loop), snapshot.study_name, detail)
    failed.mistake = True
    return failed


def loop_call(name: str, what: str, call: Callable[[], T]) -> T:
    """``call()``, a step of the loop ``name`` outside ``suggest`` (its constructor,
    ``check_study``, ``warm_up``, ``ready``), ``what`` naming it.

    Raises:
        SpecError: what ``call`` raised, as is when it was one, else a :class:`PluginFailed`
            (whoever catches it logs its traceback, which its fix promises) naming the loop
            and the step: a launch is refused (INVALID_ARGUMENT, not INTERNAL), a stored study
            is left unserved with the reason (a plugin's constructor that raised kept the
            server from starting at all).
    """
    try:
        return call()
    except SpecError:
        raise
    except PLUGIN_ERRORS as e:
        raise PluginFailed(
            "loop",
            f"the {name} loop failed in {what}: {type(e).__name__}: {e}",
            "fix the loop (the server log has the traceback), or choose another",
        ) from e


def failure(loop: str, study: str, detail: str) -> LoopFailed:
    """The :class:`LoopFailed` of the loop ``loop`` of ``study``: ``detail``, then the fix."""
    return LoopFailed(f"loop {loop}: {detail} ({FIX.format(study=study)})", detail)


def ready_failed(h: Any, error: BaseException) -> LoopFailed:
    """A loop whose ``ready`` raised (``h``: its study's handle)."""
    return failure(h.spec.loop, h.spec.name, f"its ready() raised {_error(error)}")


def store_failed(h: Any, error: BaseException) -> LoopFailed:
    """A suggestion the space could not make a candidate of (its ``candidate_parts`` or
    ``describe`` raised, or the candidate is not JSON)."""
    detail = f"it suggested a candidate the {h.spec.space} space cannot make: {_error(error)}"
    return failure(h.spec.loop, h.spec.name, detail)


def warm_up_failed(h: Any, error: SpecError) -> LoopFailed:
    """A loop whose ``warm_up`` failed when its study was resumed (``error``: from
    :func:`loop_call`)."""
    cause = error.__cause__
    said = _error(cause) if cause is not None else str(error)
    return failure(h.spec.loop, h.spec.name, f"its warm_up failed: {said}")


def waits_for_nothing(h: Any, said: str) -> LoopFailed:
    """A loop that says it waits (``NoSuggestion``, not finished) while nothing of its study
    is in flight: it never proposes again, and the study ran on "running" with nothing said
    anywhere."""
    detail = (
        f"it has nothing to propose ({said}) and no trial in flight to wait for (raise "
        "NoSuggestion(reason, finished=True) when it is done)"
    )
    return failure(h.spec.loop, h.spec.name, detail)
