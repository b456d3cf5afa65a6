"""IRT difficulties shared by every trial of a study, through the server's artifacts.

:func:`~archsearch.worker._difficulty.item_difficulties` caches a crowd's difficulties on the
local disk, keyed by a sha256 of (task, crowd, folds, items): one fit per machine. On a worker
connected to a server, :func:`shared_item_difficulties` makes it one fit per study:

1. It asks the server which trial of the study holds the artifact
   ``difficulties-<key>.npz`` (``TrainContext.find_artifact``: the lowest-numbered trial whose
   upload of it completed, in any state: the file is a function of its key alone).
2. Found, and the local cache misses: it downloads the file (sha256 checked by the client)
   beside the cache file, checks that it loads (one finite difficulty per item, the crowd's
   accuracy) and moves it into place, so the cache read that follows hits.
3. It calls ``item_difficulties``, which reads the cache or fits the crowd.
4. No trial holds the file yet (a fit here, or a local cache from another study): it uploads
   the cache file under that name, so the study's later trials, on any machine, download it.

With ``crowd_trials`` (:mod:`~archsearch.worker._trial_crowd`), step 1 first lists the study's
trials holding answers on these items, and the key (so the artifact's name) covers the
cross-fitted crowd's key and each answering trial's number and answers' sha256: a trial that
finds more answering trials fits anew instead of reading difficulties of a smaller crowd.
Missing, the answers are downloaded and the 1PL is fitted on the cross-fitted crowd's cached
responses plus theirs; info ``curriculum_crowd_trials`` lists the trials used.

Sharing is an optimisation only: a refusal or an unreachable server is logged as a warning
and recorded in the trial's info (``curriculum_share_error``), and the trial fits the crowd
itself; it never fails because of it. The trial's info says where its difficulties came from:
``curriculum_difficulties`` = ``fitted``, ``local cache`` or ``trial:N`` (downloaded from
trial N's artifact).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.worker._difficulty import (
    Difficulties,
    _cache_key,
    crowd_responses,
    curriculum_root,
    item_difficulties,
)
from archsearch.worker._trainer import TrainContext
from archsearch.worker._trial_crowd import (
    TRIALS_INFO_KEY,
    answering_trials,
    answers_name,
    crowd_key,
    fetch_trial_answers,
    items_key,
    with_trial_subjects,
)

__all__ = ["SOURCE_KEY", "SharedDifficulties", "artifact_name", "shared_item_difficulties"]

log = logging.getLogger("archsearch.worker.curriculum")

#: The trial info key saying where the difficulties came from.
SOURCE_KEY = "curriculum_difficulties"
#: The trial info key holding why sharing failed (the trial went on without it).
ERROR_KEY = "curriculum_share_error"
_ERROR_CHARS = 300


@dataclasses.dataclass(frozen=True)
class SharedDifficulties(Difficulties):
    """:class:`Difficulties` with where they came from (IRT only).

    Attributes:
        source: ``fitted``, ``local cache`` or ``trial:N``; empty for heuristic difficulties.
        share_error: Why sharing through the server failed; empty when it did not.
        crowd_trials: The study's trials whose answers joined the crowd (``crowd_trials``
            asked; empty: none could); None when not asked.
    """

    source: str = ""
    share_error: str = ""
    crowd_trials: tuple[int, ...] | None = None

    def info(self) -> dict[str, str]:
        out = super().info()
        if self.source:
            out[SOURCE_KEY] = self.source
        if self.share_error:
            out[ERROR_KEY] = self.share_error[:_ERROR_CHARS]
        if self.crowd_trials is not None:
            out[TRIALS_INFO_KEY] = ",".join(map(str, self.crowd_trials)) or "none"
        return out


def artifact_name(key: str) -> str:
    """The artifact name of the difficulties of cache key ``key``."""
    return f"difficulties-{key[:32]}.npz"


def shared_item_difficulties(
    texts: Sequence[str],
    labels: Sequence[int],
    options: Mapping[str, Any],
    *,
    task: str,
    context: TrainContext | None = None,
    cache_dir: Path | None = None,
) -> SharedDifficulties:
    """``item_difficulties``, shared with the study's other trials when ``context`` has a
    server (see the module docstring), with the study's answering trials in the crowd when
    the curriculum asks for them (``crowd_trials``; :mod:`._trial_crowd`); the same
    arguments, and the same errors."""
    if options["difficulty"] != "irt":
        plain = item_difficulties(texts, labels, options, task=task, cache_dir=cache_dir)
        return SharedDifficulties(**_fields(plain))
    root = cache_dir or curriculum_root()
    base_key = _cache_key(task, list(options["crowd"]), int(options["folds"]), texts, labels)
    limit = int(options.get("crowd_trials", 0))
    errors: list[str] = []
    sharing = context is not None and context.has_server
    answering: list[tuple[int, str]] = []  # (trial, sha256) of the answers the crowd takes
    items = items_key(task, texts, labels) if limit else ""
    if limit and sharing:
        assert context is not None
        try:
            answering = answering_trials(context, items, limit)
        except Exception as e:  # the cross-fitted crowd alone
            errors.append(_failed("look up", answers_name(items), e))
    key = crowd_key(base_key, answering)
    holder: int | None = None
    downloaded = False
    if sharing:
        assert context is not None
        try:
            holder = context.find_artifact(artifact_name(key))
        except Exception as e:  # sharing is optional: fit locally
            errors.append(_failed("look up", artifact_name(key), e))
        if holder is not None and not _loads(root / f"{key}.npz", len(texts)):
            try:
                _fetch(context, holder, key, root, len(texts))
                downloaded = True
            except Exception as e:
                errors.append(_failed(f"download from trial {holder}", artifact_name(key), e))
    crowd_trials: tuple[int, ...] | None = None
    if answering:
        assert context is not None
        found, crowd_trials = _with_trials(
            texts, labels, options, task, context, root, items, answering, errors
        )
    else:
        found = item_difficulties(texts, labels, options, task=task, cache_dir=cache_dir)
        crowd_trials = () if limit else None
    source = (f"trial:{holder}" if downloaded else "local cache") if found.cached else "fitted"
    if sharing and (holder is None or found.key != key):  # give them to later trials
        assert context is not None
        name = artifact_name(found.key)
        try:
            context.upload(root / f"{found.key}.npz", name)
            log.info("uploaded the crowd difficulties as %s", name)
        except Exception as e:
            errors.append(_failed("upload", name, e))
    return SharedDifficulties(
        **_fields(found),
        source=source,
        share_error="; ".join(errors),
        crowd_trials=crowd_trials,
    )


def _with_trials(
    texts: Sequence[str],
    labels: Sequence[int],
    options: Mapping[str, Any],
    task: str,
    context: TrainContext,
    root: Path,
    items: str,
    answering: Sequence[tuple[int, str]],
    errors: list[str],
) -> tuple[Difficulties, tuple[int, ...]]:
    """The difficulties of the cross-fitted crowd plus the ``answering`` trials' answers: the
    cache (local, or just downloaded) when it holds them, else a fit on the cross-fitted
    crowd's responses (its own cache, or fitted) and the answers downloaded; a trial whose
    answers cannot be had is left out (the key then names the trials used)."""
    base_key = _cache_key(task, list(options["crowd"]), int(options["folds"]), texts, labels)
    key = crowd_key(base_key, answering)
    path = root / f"{key}.npz"
    if _loads(path, len(texts)):
        with np.load(path) as f:
            values, accuracy = np.asarray(f["difficulty"]), float(f["accuracy"])
        numbers = tuple(n for n, _ in answering)
        return Difficulties(values, "irt", key, cached=True, crowd_accuracy=accuracy), numbers
    answers = fetch_trial_answers(context, items, answering, len(texts))
    errors.extend(answers.errors)
    base = item_difficulties(texts, labels, options, task=task, cache_dir=root)
    if not answers.trials:
        return base, ()
    try:
        with np.load(root / f"{base.key}.npz") as f:
            responses = np.asarray(f["responses"], dtype=np.float64)
    except (OSError, KeyError, ValueError):
        responses = np.empty(0)
    if responses.shape[1:] != (len(texts),):  # a cache without them: answer again
        responses = crowd_responses(texts, labels, list(options["crowd"]), int(options["folds"]))
    key = crowd_key(base_key, answers.trials)
    values, accuracy, seconds, cached = with_trial_subjects(responses, answers, key, root)
    found = Difficulties(values, "irt", key, base.seconds + seconds, cached, accuracy)
    return found, answers.numbers


def _fetch(context: TrainContext, trial: int, key: str, root: Path, items: int) -> None:
    """Downloads trial ``trial``'s difficulties of ``key`` into the cache folder ``root``.

    Raises:
        ValueError: The file does not hold one finite difficulty per item and an accuracy.
        archsearch.server.client.ClientError, OSError: The download failed.
    """
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{key}.{os.getpid()}.download.npz"
    try:
        context.download(trial, artifact_name(key), staging)
        if not _loads(staging, items):
            raise ValueError(
                f"trial {trial}'s {artifact_name(key)} does not hold {items} finite "
                "difficulties and an accuracy"
            )
        os.replace(staging, root / f"{key}.npz")
    finally:
        staging.unlink(missing_ok=True)
    log.info("crowd difficulties %s: downloaded from trial %d", key, trial)


def _loads(path: Path, items: int) -> bool:
    """Whether ``path`` holds ``items`` finite difficulties and the crowd's accuracy."""
    try:
        with np.load(path) as f:
            values = np.asarray(f["difficulty"], dtype=np.float64)
            float(f["accuracy"])
    except (OSError, KeyError, ValueError, TypeError):
        return False
    return values.shape == (items,) and bool(np.isfinite(values).all())


def _failed(what: str, name: str, e: Exception) -> str:
    why = f"could not {what} {name}: {type(e).__name__}: {e}"
    log.warning("crowd difficulties not shared (the trial fits them itself if needed): %s", why)
    return why


def _fields(d: Difficulties) -> dict[str, Any]:
    return {f.name: getattr(d, f.name) for f in dataclasses.fields(Difficulties)}
