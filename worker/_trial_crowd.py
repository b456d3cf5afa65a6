"""A study's own trials as subjects of the IRT crowd (``data.curriculum.crowd_trials``).

A study's trials are already a crowd of models trained on the same task, so beyond PUDF's
artificial crowd (``worker/_difficulty.py``) they can answer the items too:

1. **Answers.** A bert trial whose curriculum has ``crowd_trials: N`` (N >= 1), on a worker
   connected to a server, records after training its model's answer on every training item
   (one batched inference pass over the training split, 1 right, 0 wrong, in the order the
   difficulty code indexes the items: the training split as encoded) and uploads them as an
   artifact of its own trial, ``answers-<items key>.npz`` (:func:`answers_name`; the key is a
   sha256 of the task and the items, so only trials that saw the very same items answer
   together). These are **in-sample** answers: the model was trained on these items, so a
   trial still wrong on an item after training on it marks a hard item, the training-dynamics
   signal of dataset cartography (Swayamdipta et al., EMNLP 2020), not a held-out answer like
   the cross-fitted subjects'. The dev split is never read. Info ``curriculum_answers`` names
   the artifact (``curriculum_answers_error`` when the upload failed; the trial stands).
2. **Crowd.** When such a trial builds its IRT difficulties (before training), it asks the
   server for the study's trials holding that artifact (FindArtifact with a limit: the
   **lowest-numbered** N, itself excluded), downloads their answers (sha256 checked; each must
   hold one 0/1 answer per item) and adds them as subjects beside the cross-fitted ones; the
   1PL is fitted on all (:func:`with_trial_subjects`). The lowest-numbered trials, not the
   latest, so that once N trials have answered the crowd stops changing: every later trial
   reads the same difficulties (one cache file, one shared artifact) instead of refitting.
   The cache key (:func:`crowd_key`) covers the cross-fitted crowd's key and each answering
   trial's number and answers' sha256, so a trial that finds more answering trials refits
   rather than reading a stale cache. Info ``curriculum_crowd_trials`` lists the trials used
   (``none``: the study's first trials, or no server; the cross-fitted crowd alone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.worker._irt import fit_1pl
from archsearch.worker._trainer import TrainContext

__all__ = [
    "ANSWERS_INFO_KEY",
    "TRIALS_INFO_KEY",
    "TrialAnswers",
    "answers_name",
    "crowd_key",
    "fetch_trial_answers",
    "items_key",
    "training_answers",
    "upload_answers",
    "with_trial_subjects",
]

log = logging.getLogger("archsearch.worker.curriculum")

#: Info key naming the uploaded answers artifact.
ANSWERS_INFO_KEY = "curriculum_answers"
#: Info key saying why the answers were not uploaded.
ANSWERS_ERROR_KEY = "curriculum_answers_error"
#: Info key listing the trials whose answers joined the crowd (``none`` when none did).
TRIALS_INFO_KEY = "curriculum_crowd_trials"
# Bump when what an answers file means changes (older files then stop matching).
_ANSWERS_VERSION = 1
_ERROR_CHARS = 300


def items_key(task: str, texts: Sequence[str], labels: Sequence[int]) -> str:
    """A sha256 prefix of the task and its training items (text and label, in order): trials
    whose answers share it answered the same items in the same order."""
    h = hashlib.sha256(json.dumps({"answers": _ANSWERS_VERSION, "task": task}).encode())
    for text, label in zip(texts, labels, strict=True):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()[:24]


def answers_name(key: str) -> str:
    """The artifact name of a trial's answers on the items of :func:`items_key` ``key``."""
    return f"answers-{key}.npz"


def crowd_key(base_key: str, trials: Sequence[tuple[int, str]]) -> str:
    """The cache key of the cross-fitted crowd of ``base_key`` plus the answers of ``trials``
    ((trial number, answers' sha256), in order); ``base_key`` itself when there are none."""
    if not trials:
        return base_key
    head = {"crowd": base_key, "trials": [[int(n), str(sha)] for n, sha in trials]}
    return hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()[:24]


def training_answers(predict: Any, train: Any) -> np.ndarray:
    """The 0/1 answers (uint8) of ``predict`` (``TrainingLoop.predict``) on every item of the
    encoded training split ``train``, in its order."""
    return np.asarray(predict(train) == train.labels, dtype=np.uint8)


def upload_answers(
    context: TrainContext, answers: Mapping[str, tuple[str, np.ndarray]]
) -> dict[str, str]:
    """Uploads each task's answers (task id -> (artifact name, answers)) as artifacts of this
    trial; the info to add (``curriculum_answers``, prefixed by the task when there are
    several; ``curriculum_answers_error`` when the server refused). Nothing without a server."""
    if not answers or not context.has_server:
        return {}
    from archsearch.server.client import ClientError

    out: dict[str, str] = {}
    for task, (name, values) in answers.items():
        prefix = "" if len(answers) == 1 else f"{task}."
        with tempfile.TemporaryDirectory(prefix="archsearch-answers-") as tmp:
            path = Path(tmp) / name
            np.savez(path, answers=np.asarray(values, dtype=np.uint8))
            try:
                context.upload(path, name)
            except (ClientError, OSError, RuntimeError) as e:
                log.warning("could not upload the training answers %s: %s", name, e)
                out[f"{prefix}{ANSWERS_ERROR_KEY}"] = f"{type(e).__name__}: {e}"[:_ERROR_CHARS]
                continue
        log.info("uploaded the training answers as %s", name)
        out[f"{prefix}{ANSWERS_INFO_KEY}"] = name
    return out


@dataclasses.dataclass(frozen=True)
class TrialAnswers:
    """Other trials' answers on this trial's items.

    Attributes:
        trials: (trial number, answers' sha256) of each answering trial, by trial number.
        responses: Trials × items, 1 right, 0 wrong (float64, as ``fit_1pl`` reads them).
        errors: Why holders were left out (a failed download, a file of the wrong shape).
    """

    trials: tuple[tuple[int, str], ...] = ()
    responses: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    errors: tuple[str, ...] = ()

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(n for n, _ in self.trials)


def answering_trials(context: TrainContext, key: str, limit: int) -> list[tuple[int, str]]:
    """(trial number, sha256) of the lowest-numbered ``limit`` trials of the study, this trial
    excluded, holding answers on the items of ``key``.

    Raises:
        archsearch.server.client.ClientError, RuntimeError: The server refused or is away.
    """
    found = context.artifact_holders(answers_name(key), limit + 1)
    return [(n, sha) for n, sha in found if n != context.trial_number][:limit]


def fetch_trial_answers(
    context: TrainContext, key: str, holders: Sequence[tuple[int, str]], items: int
) -> TrialAnswers:
    """Downloads the answers of ``holders`` (sha256 checked by the client); a holder whose
    file fails to download or does not hold ``items`` answers of 0 or 1 is left out (and
    said why in ``errors``)."""
    rows: list[np.ndarray] = []
    used: list[tuple[int, str]] = []
    errors: list[str] = []
    name = answers_name(key)
    with tempfile.TemporaryDirectory(prefix="archsearch-answers-") as tmp:
        for number, sha in holders:
            dest = Path(tmp) / f"{number}.npz"
            try:
                context.download(number, name, dest)
                values = _load_answers(dest, items)
            except Exception as e:  # one trial's file: leave it out, keep the others
                why = f"trial {number}'s {name}: {type(e).__name__}: {e}"
                log.warning("answers left out of the crowd: %s", why)
                errors.append(why)
                continue
            rows.append(values)
            used.append((number, sha))
    responses = np.stack(rows) if rows else np.zeros((0, items))
    return TrialAnswers(tuple(used), responses, tuple(errors))


def _load_answers(path: Path, items: int) -> np.ndarray:
    """The answers in ``path`` as float64.

    Raises:
        ValueError: Not one 0/1 answer per item.
    """
    with np.load(path) as f:
        values = np.asarray(f["answers"])
    if values.shape != (items,) or not np.isin(values, (0, 1)).all():
        raise ValueError(f"does not hold {items} answers of 0 or 1 (shape {values.shape})")
    return values.astype(np.float64)


def with_trial_subjects(
    base_responses: np.ndarray, answers: TrialAnswers, key: str, root: Path
) -> tuple[np.ndarray, float, float, bool]:
    """The 1PL difficulties of the cross-fitted crowd's ``base_responses`` plus ``answers``'
    rows, cached as ``root/<key>.npz`` (the same layout as the cross-fitted crowd's cache:
    ``difficulty``, ``responses``, ``accuracy``, and ``trials``); returns (difficulties, the
    whole crowd's accuracy, seconds spent, whether read from the cache)."""
    path = root / f"{key}.npz"
    try:
        with np.load(path) as f:
            return np.asarray(f["difficulty"]), float(f["accuracy"]), 0.0, True
    except (OSError, KeyError, ValueError):  # absent or damaged: fit again and overwrite
        pass
    start = time.perf_counter()
    responses = np.concatenate([base_responses, answers.responses])
    _, difficulty = fit_1pl(responses)
    accuracy = float(responses.mean())
    root.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(
        staging,
        difficulty=difficulty,
        responses=responses,
        accuracy=accuracy,
        trials=np.array(answers.numbers, dtype=np.int64),
    )
    os.replace(staging, path)
    return difficulty, accuracy, time.perf_counter() - start, False
