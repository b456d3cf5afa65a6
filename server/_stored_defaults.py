"""Defaults that changed under stored studies: what a study stored before a change meant,
and what a candidate of a study launched since must say.

A default that changes must not change a stored study: its new trials would train
differently from its first ones under the same label (and its repeats would no longer be
recognised). Each change has its date here; a study created before it gets the old meaning.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

from archsearch.spaces import Candidate

#: When ``recipe.lora.frozen``'s default became false (commit 805dfc2): a DyLoRA study created
#: before then that named no ``frozen`` trained frozen, and launches since name it
#: (``pin_lora_defaults``).
FROZEN_DEFAULT_CHANGED = datetime.datetime(2026, 12, 6, 11, 58, 3, tzinfo=datetime.UTC)

#: When a DSIR selection's default ``target`` became the task's unlabelled test text (commit
#: 7cefb40; it was the dev split that scores the trials).
DSIR_DEFAULT_CHANGED = datetime.datetime(2026, 12, 7, 10, 55, 47, tzinfo=datetime.UTC)


def created_before(created_at: str, change: datetime.datetime) -> bool | None:
    """Whether a study created at ``created_at`` (ISO text) predates ``change``; None when
    the text is no date (a study from before dates were stored, or written by hand)."""
    try:
        created = datetime.datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=datetime.UTC)
    return created < change


def dev_if_unnamed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with a DSIR selection that names no target given ``"dev"``: what it meant in
    a study stored before :data:`DSIR_DEFAULT_CHANGED`. Launches since name the target in the
    stored spec (``fill_dsir_targets``) and the pool in each new candidate
    (:func:`candidate_data`), so the server meets one without a target only in a study, or a
    candidate, stored before."""
    return _named(data, "dev")


def _named(data: dict[str, Any], target: str) -> dict[str, Any]:
    """``data`` with a DSIR selection that names no target given ``target``."""
    selection = data.get("selection")
    if not isinstance(selection, dict) or selection.get("method") != "dsir":
        return data
    if "target" in selection:
        return data
    return {**data, "selection": {**selection, "target": target}}


def candidate_data(
    spec_data: dict[str, Any],
    chosen: dict[str, Any],
    created_at: str,
    searched: Sequence[Any] = (),
) -> dict[str, Any]:
    """A new candidate's data (the spec's, with what the loop ``chosen`` over it), its DSIR
    target named: ``"dev"`` in a study stored before :data:`DSIR_DEFAULT_CHANGED` (as its
    first trials trained), else the default ``"test"``; a selection the loop chose is checked
    against the leak a launch refuses (a loop that proposed a DSIR selection without a target
    trained towards the dev split that scores the trials). The spec's own data and its
    ``data_space`` selections (``searched``) are not checked again: a stored study goes on as
    it was launched.

    Raises:
        SpecError: the loop's selection reads the scoring text.
    """
    from archsearch.spaces import data_tasks
    from archsearch.spaces._selection_checks import check_selection_target

    data = {**spec_data, **chosen}
    if created_before(created_at, DSIR_DEFAULT_CHANGED) is not False:
        return dev_if_unnamed(data)
    named = _named(data, "test")
    own = chosen.get("selection")
    if isinstance(own, dict) and own not in searched:
        check_selection_target(named["selection"], data_tasks(named), "suggestion.data.selection")
    return named


def lora_as_launched(candidate: Candidate, created_at: str) -> Candidate:
    """``candidate`` as its study's workers must train it: a DyLoRA candidate of a study
    created before :data:`FROZEN_DEFAULT_CHANGED` that names no ``frozen`` gets ``frozen:
    true``, its default then (a resumed study trained its new trials unfrozen, reading as
    before). The stored candidate keeps its text, so repeats of its earlier trials are still
    recognised; the trial's ``lora_frozen`` info says how it trained."""
    lora = candidate.recipe.get("lora")
    if not isinstance(lora, dict) or "frozen" in lora or lora.get("mode", "dylora") != "dylora":
        return candidate  # plain LoRA has no frozen (it refuses one)
    if not created_before(created_at, FROZEN_DEFAULT_CHANGED):
        return candidate  # since the change, or no date: older than DyLoRA, or by hand
    recipe = {**candidate.recipe, "lora": {**lora, "frozen": True}}
    return dataclasses.replace(candidate, recipe=recipe)


def stored_candidate(obj: Any) -> Candidate:
    """A candidate read back from the storage (``Candidate.from_dict``), its DSIR selection
    meaning what it did when it was stored (:func:`dev_if_unnamed`): a retry, a repeat check
    and a resumed trial of a study stored before the default changed train and compare as it
    did, not towards the test text under the same label. (A candidate stored since names its
    target.)

    Raises:
        SpecError: as ``Candidate.from_dict``.
    """
    if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
        obj = {**obj, "data": dev_if_unnamed(obj["data"])}
    return Candidate.from_dict(obj)
