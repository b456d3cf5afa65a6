"""The progress files of a candidate's earlier attempts, removed once it completes.

A trial that is handed back (SIGTERM, preemption) or lost uploads its progress (weights,
optimiser state, where the data order is: ``progress-<trainer>-<fingerprint>-<task>.pt``, often
hundreds of MB) so that its retry continues it. Once a retry of that candidate completes,
nothing will read them again (a repeated candidate reuses the result), so the server removes
them: the bytes from the artifact store and the records from the earlier attempts' trials.
Only the completed candidate's own progress files are touched (its fingerprint is in their
names); kept checkpoints, shared pre-training and everything else stay.
"""

from __future__ import annotations

import logging

from archsearch.server import _storage
from archsearch.server._leases import parse_lease_id
from archsearch.server._stored_defaults import stored_candidate
from archsearch.server._trial_artifacts import SHA_ATTR_PREFIX, TrialArtifacts
from archsearch.spaces import SpecError

log = logging.getLogger("archsearch.server")

#: How a progress file's artifact name starts (``worker/_task_training.py: progress_artifact``).
PROGRESS_PREFIX = "progress-"


def drop_progress_of_retries(artifacts: TrialArtifacts, lease_id: str) -> int:
    """Removes the progress files the earlier attempts of a just-completed trial uploaded.

    Args:
        artifacts: The server's artifacts.
        lease_id: The completed trial's lease.

    Returns:
        How many files were removed (0 for a first attempt, or without an artifact store).
    """
    if artifacts.store is None:
        return 0
    rdb = artifacts.rdb
    study_id, trial_id = parse_lease_id(lease_id)
    done = rdb.get_trial(trial_id)
    history = done.system_attrs.get("retry_history") or []
    if not history:
        return 0
    try:
        fingerprint = stored_candidate(done.user_attrs.get("candidate") or {}).fingerprint()
    except (SpecError, ValueError, KeyError, TypeError):
        return 0
    removed = 0
    for number in history:
        try:
            tid = rdb.get_trial_id_from_study_id_trial_number(study_id, int(number))
        except (KeyError, TypeError, ValueError):
            continue
        for a in artifacts.infos(rdb.get_trial(tid)):
            if not (a.name.startswith(PROGRESS_PREFIX) and f"-{fingerprint}-" in a.name):
                continue
            keys = [_storage.ARTIFACT_META_PREFIX + a.artifact_id, SHA_ATTR_PREFIX + a.artifact_id]
            _storage.delete_trial_system_attrs(rdb, tid, keys)
            try:
                artifacts.store.remove(a.artifact_id)
            except Exception as e:  # the record is gone; a leftover file only costs disk
                log.warning("progress file %s of trial %s not removed: %s", a.name, number, e)
            removed += 1
    if removed:
        log.info("removed %d progress file(s) of trial %d's earlier attempts", removed, done.number)
    return removed
