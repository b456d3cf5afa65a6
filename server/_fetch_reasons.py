"""Why a trial has nothing to fetch, in words that say what it is and where the files are:
a running, failed or repeated trial, an AutoDistil job or scored-only student, a DyLoRA rank
trial (its training trial holds the weights), a checkpoint kept on a worker's disk only."""

from __future__ import annotations

import json
from typing import Any

from archsearch.v1 import archsearch_pb2 as pb


def no_files(server: str, study: str, trial: int, **conn: Any) -> str:
    """Why trial ``trial`` holds no files, and where the files are: a DyLoRA rank trial's
    are its training trial's, an AutoDistil student's (scored only) nowhere."""
    from archsearch.server._trial_notes import rank_trials_of
    from archsearch.server.client import SearchClient
    from archsearch.server.fetch import trial_files

    with SearchClient(server, **conn) as client:
        trials = client.list_trials(study)
    of_rank = rank_trials_of(trials).get(trial)
    if of_rank is not None:
        b, training = of_rank
        kept = trial_files(server, study, training.number, **conn)
        if not kept:
            return (
                f"trial {trial} is rank {b} of #{training.number} and holds no files; "
                f"#{training.number} kept no checkpoint either (launch the study with --set "
                "recipe.keep_checkpoint=true)"
            )
        return (
            f"trial {trial} is rank {b} of #{training.number} and holds no files: its weights "
            f"are #{training.number}'s (`archsearch fetch {study} {trial}` writes its rank-{b} "
            f"adapter; `--list` on #{training.number} names the files)"
        )
    this = next((t for t in trials if t.number == trial), None)
    if this is not None and this.HasField("derived_from"):
        return scored_only(this, trials)
    return f"trial {trial} of {study!r} holds no files"


def nothing_kept(
    source: Any,
    asked: int,
    trials: list[Any],
    others: tuple[str, ...] | list[str] = (),
) -> str:
    via = "" if source.number == asked else f" (rank trial {asked}'s training trial)"
    job = _job_kind(source)
    if job in ("supernet", "rank") and source.state == pb.COMPLETE:
        what = (
            "its supernet's files are the trial's: `--list` names them, `--all` fetches them"
            if others
            else "a rank job scores students and keeps no model"
        )
        return (
            f"trial {source.number} is an AutoDistil {job} job, not a model to fine-tune: "
            f"{what}; the students worth using are the stand-alone trained ones "
            "(`archsearch show` lists them)"
        )
    if source.HasField("derived_from") and not via:  # an AutoDistil student, scored only
        return scored_only(source, trials)
    if source.state in (pb.RUNNING, pb.WAITING):
        return f"trial {source.number}{via} has not finished: its checkpoint comes when it ends"
    if source.duplicate_of >= 0:  # a repeat: the earlier trial trained it, and kept it
        return (
            f"trial {source.number}{via} repeats trial {source.duplicate_of} (its result, not "
            f"trained again): fetch {source.duplicate_of}"
        )
    if source.state != pb.COMPLETE:
        state = pb.TrialState.Name(source.state).lower()
        retries = [
            t.number for t in trials if t.HasField("retry_of") and t.retry_of == source.number
        ]
        again = f"; it was retried as trial {retries[0]}: fetch that one" if retries else ""
        return f"trial {source.number}{via} ended {state}: only a completed trial keeps one{again}"
    info = dict(source.info)
    where = f"{info.get('checkpoint')} on worker {source.worker_id or '?'}"
    if "checkpoint_upload_error" in info and "checkpoint" in info:
        return (
            f"trial {source.number}{via} kept its checkpoint, but its upload failed "
            f"({info['checkpoint_upload_error'][:200]}): the files are in {where}; copy them "
            "from there"
        )
    if "checkpoint" in info:
        return (
            f"trial {source.number}{via} kept its checkpoint on its worker's disk only "
            f"({where}: a worker without a server, or older than this version); copy it from "
            "there"
        )
    if info.get("table"):  # the table trainer's answer: a looked-up score
        return (
            f"trial {source.number}{via} was scored from a table ({info['table']}): the table "
            "trainer trains no model, so there is nothing to fetch"
        )
    if others:  # a trainer of the user's own: its files are what it kept
        return (
            f"trial {source.number}{via} kept no checkpoint of archsearch's; it holds "
            f"{', '.join(others[:8])}: fetch them with --all or --artifact NAME"
        )
    return (
        f"trial {source.number}{via} kept no checkpoint (launch the study with --set "
        "recipe.keep_checkpoint=true)"
    )


def _job_kind(trial: Any) -> str:
    """The kind of job a trial's candidate is (``train``, or an AutoDistil ``supernet`` or
    ``rank`` job); ``train`` for one without a stored candidate."""
    try:
        return str(json.loads(trial.candidate_json or "{}").get("kind", "train"))
    except (ValueError, AttributeError):
        return "train"


def scored_only(trial: Any, trials: list[Any]) -> str:
    """An AutoDistil student trial: scored by its rank job, never trained, so it holds no
    files; the model is its stand-alone training trial's, when the pick chose it."""
    said = (
        f"trial {trial.number} is a student scored by rank job #{trial.derived_from}, not trained"
    )
    key = _params(trial).get("student")
    trained = [
        t
        for t in trials
        if key is not None
        and not t.HasField("derived_from")
        and _job_kind(t) == "train"
        and _params(t).get("student") == key
    ]
    done = [t.number for t in trained if t.state == pb.COMPLETE]
    if done:
        return f"{said}; trial {done[-1]} trained it stand-alone: fetch {done[-1]}"
    if trained:
        return f"{said}; its stand-alone training is trial {trained[-1].number} (not completed)"
    return (
        f"{said}: only its stand-alone training trial (when the pick chose it) keeps a model; "
        "`archsearch show` lists them"
    )


def _params(trial: Any) -> dict[str, Any]:
    try:
        params = json.loads(trial.params_json or "{}")
    except ValueError:
        return {}
    return params if isinstance(params, dict) else {}
