"""The ``archsearch`` subcommands people use on studies: launch, studies, show, stop, resume,
delete, demo (the spec a launch builds from its flags is ``_cli_spec.py``'s)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import IO, Any

from archsearch.server._cli_common import (
    EXIT_BAD_INPUT,
    CliError,
    _search_client,
    hint,
    json_text,
    worker_flags,
)
from archsearch.server._cli_custom_check import custom_task_problem
from archsearch.server._cli_spec import build_spec, check_here, method_hint


def cmd_launch(args: argparse.Namespace) -> int:
    import grpc

    from archsearch.server._format_json import study_dict
    from archsearch.server._spec import check_known_fields
    from archsearch.server._worker_note import worker_note
    from archsearch.server.client import ClientError
    from archsearch.spaces import SpecError

    spec = build_spec(args)
    try:  # a misspelt field first: `n_trial` was reported as "launch needs --trials N"
        check_known_fields(spec)
    except SpecError as e:
        raise CliError(f"invalid search spec: {e}", EXIT_BAD_INPUT) from None
    for key, flag, example in (
        ("name", "--name NAME", "--name sst2-tpe"),
        ("n_trials", "--trials N", "--trials 20"),
        ("space", "--space SPACE", "--space bert"),
    ):
        if key not in spec:
            raise CliError(
                f"launch needs {flag} (or {key!r} in --spec FILE), for example {example}"
            )
    if problem := custom_task_problem(spec):  # the files, where they are here
        raise CliError(
            f"invalid search spec: data.custom_task: {problem} (read here; every worker reads "
            "the same files)",
            EXIT_BAD_INPUT,
        )
    # The server validates the spec (with the trainers its workers offer, plugins too). It has
    # the search libraries loaded: building a BOSHNAS or GP loop here to check it cost the
    # command 4-7 s of imports. Only a server that cannot be reached has it checked here.
    with _search_client(args) as client:
        try:
            study = client.launch(spec)
        except ClientError as e:
            if e.code == grpc.StatusCode.INVALID_ARGUMENT:
                field = e.details.partition(":")[0]
                fix = method_hint(field, e.details, spec, args.set)
                raise CliError(f"invalid search spec: {e.details}{fix}", EXIT_BAD_INPUT) from None
            if e.transient:
                check_here(spec, args)
            raise
    if args.json:
        print(json_text(study_dict(study)))
    else:
        print(
            f"launched {study.name}: {study.n_trials} trials; watch it with "
            + hint(args, f"show {shlex.quote(study.name)}")
        )
        note = worker_note(study, *worker_flags(args))
        if note:
            print(note)
    return 0


def _no_result(study: Any) -> bool:
    """A study that ended (completed) with no completed trial: nothing to fetch or rank."""
    from archsearch.v1 import archsearch_pb2 as pb

    return bool(study.state == pb.STUDY_COMPLETED and study.n_complete == 0)


def cmd_studies(args: argparse.Namespace) -> int:
    from archsearch.server._format import STUDY_STATE_NAMES, table
    from archsearch.server._format_json import study_dict
    from archsearch.server._worker_note import worker_note
    from archsearch.v1 import archsearch_pb2 as pb

    unserved: dict[str, str] = {}
    with _search_client(args) as client:
        studies = client.list_studies(unserved)
    if args.json:  # the list's shape stays what scripts read; the note goes to stderr
        print(json_text([study_dict(s, best=False) for s in studies]))
        _say_unserved(unserved, sys.stderr)
        return 0
    if not studies and not unserved:
        print("no studies yet; start one with `archsearch launch`")
        return 0
    if not studies:
        _say_unserved(unserved, sys.stdout)
        return 0
    rows = [
        [
            s.name,
            STUDY_STATE_NAMES[s.state]
            + (" (no result)" if _no_result(s) else "")
            + (" (loop failed)" if _loop_failed(s) else ""),
            json.loads(s.spec_json).get("space", ""),
            json.loads(s.spec_json).get("loop", ""),
            json.loads(s.spec_json).get("trainer", ""),
            # done: every finished trial (complete, pruned or failed: retries and recorded
            # repeats included), then "+N" trials a completed job added (DyLoRA ranks,
            # AutoDistil students: not trained); budget: distinct candidates (n_trials)
            # (a trial a worker handed back is not done: its candidate is queued again)
            f"{_done(s)}" + (f" +{s.n_derived}" if s.n_derived else ""),
            s.n_trials,
            s.n_running,
            s.n_pruned,
            f"{s.n_fail - s.n_unrun - s.n_handed_back}"
            + (f" +{s.n_unrun} unrun" if s.n_unrun else "")
            + (f" +{s.n_handed_back} handed back" if s.n_handed_back else ""),
            s.workers_for_trainer if s.state == pb.STUDY_RUNNING else "",
        ]
        for s in studies
    ]
    headers = ["study", "state", "space", "loop", "trainer", "done", "budget", "running", "pruned"]
    print(table([*headers, "failed", "workers"], rows))
    if any(_no_result(s) for s in studies):
        print(
            "(no result: the study ended with no completed trial, every one failed or was "
            "pruned; `archsearch show STUDY` says why)"
        )
    if any(_loop_failed(s) for s in studies):
        print(
            "(loop failed: the server stopped the study, its loop raised or proposed what "
            "cannot be a trial; `archsearch show STUDY` says how, `archsearch resume STUDY` "
            "once it is fixed)"
        )
    if any(s.n_derived for s in studies):
        print(
            "(done +N: trials a completed job added, DyLoRA ranks or AutoDistil students, "
            "not trained and not counted in the budget)"
        )
    if any(s.n_unrun for s in studies):
        print(
            "(failed +N unrun: candidates a stop ended before they ran, not failures; "
            "`archsearch resume STUDY` queues them again)"
        )
    if any(s.n_handed_back for s in studies):
        print(
            "(failed +N handed back: trials a worker gave back, stopped or lacking the data; "
            "each candidate is queued again, not counted against its retries)"
        )
    _say_unserved(unserved, sys.stdout)
    if any(_done(s) > s.n_trials for s in studies):
        print(
            "(done counts every finished trial: a failed trial and its retry are two, a "
            "repeated candidate one more; the budget counts distinct candidates)"
        )
    flags, after = worker_flags(args)
    notes = [n for s in studies if (n := worker_note(s, flags, after))]
    if notes:
        print()
        print("\n".join(notes))
    return 0


def _say_unserved(unserved: dict[str, str], out: IO[str]) -> None:
    """Names the stored studies the server cannot serve (a plugin that is missing or broken
    there), which ``studies`` left out without a word ("no studies yet")."""
    if not unserved:
        return
    names = sorted(unserved)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    n = len(names)
    print(
        f"{n} stored stud{'y' if n == 1 else 'ies'} this server cannot serve: {shown} "
        "(`archsearch show NAME` says why; start the server where their plugins load)",
        file=out,
    )


def _done(s: Any) -> int:
    """Finished trials: complete (not derived), pruned, failed (not handed back)."""
    return s.n_complete - s.n_derived + s.n_pruned + s.n_fail - s.n_handed_back


def cmd_show(args: argparse.Namespace) -> int:
    from archsearch.server._format import format_study
    from archsearch.server._format_json import study_dict, trial_dict
    from archsearch.server._importance import format_importance, importance_dict, study_space
    from archsearch.server._trial_notes import rank_trials_of
    from archsearch.server._worker_note import worker_note

    with _search_client(args) as client:
        study = client.get_study(args.name)
        trials = client.list_trials(args.name)
    # parameter importance (architecture and data parameters) on the first objective
    first = study.objectives[0].metric if study.objectives else "value"
    space = study_space(study.spec_json)  # a table study: importance over the rows scored
    if args.json:
        out = study_dict(study)
        ranks = rank_trials_of(trials)
        out["trials"] = [trial_dict(t, ranks.get(t.number)) for t in trials]
        out["importance"] = importance_dict(trials, first, space)
        print(json_text(out))
    else:
        print(format_study(study, trials, limit=args.limit))
        print(f"\n{format_importance(trials, first, space)}")
        note = worker_note(study, *worker_flags(args))
        if note:
            print(f"\n{note}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from archsearch.v1 import archsearch_pb2 as pb

    with _search_client(args) as client:
        before = client.get_study(args.name).state
        study = client.stop(args.name, args.cancel_running)
    if study.state == pb.STUDY_COMPLETED:
        print(f"{study.name} had already completed: nothing to stop")
    elif before == pb.STUDY_STOPPED and not args.cancel_running:
        more = " (stop --cancel-running ends them now)" if study.n_running else ""
        print(
            f"{study.name} was already stopped; {study.n_running} running trial(s) will "
            f"finish{more}"
        )
    elif args.cancel_running and study.n_running:
        print(
            f"stopped {study.name}: no new trials; {study.n_running} running trial(s) are told "
            "to stop at their next heartbeat and end failed (cancelled)"
        )
    else:
        more = " (stop --cancel-running ends them now)" if study.n_running else ""
        print(
            f"stopped {study.name}: no new trials; {study.n_running} running trial(s) will "
            f"finish{more}"
        )
    return 0


def _loop_failed(s: Any) -> bool:
    """The server stopped the study: its loop failed (``show`` says how)."""
    from archsearch.v1 import archsearch_pb2 as pb

    return bool(s.state == pb.STUDY_STOPPED and s.completed_reason.startswith("loop "))


def cmd_resume(args: argparse.Namespace) -> int:
    from archsearch.server._worker_note import worker_note
    from archsearch.v1 import archsearch_pb2 as pb

    with _search_client(args) as client:
        resp = client.resume(args.name, args.n_trials)
        # One listing, so the counts agree with each other (repeats recorded while it ran
        # made "3 complete, 2 repeats" of 4 distinct and 1 repeat): a recorded repeat and a
        # trial a job added (DyLoRA ranks, students) are complete but no distinct candidate.
        done = list(client.iter_trials(args.name, states=[pb.COMPLETE]))
    repeats = sum(t.duplicate_of >= 0 for t in done)
    derived = sum(t.HasField("derived_from") for t in done)
    study = resp.study
    again = (
        f"; {resp.requeued} candidate(s) prepared before the stop queued again"
        if resp.requeued
        else ""
    )
    trained = len(done) - derived - repeats
    added = f", +{derived} derived" if derived else ""
    added += f", {repeats} recorded repeat{'s' * (repeats != 1)}" if repeats else ""
    print(
        f"resumed {study.name}: budget {study.n_trials} distinct candidates "
        f"({trained} distinct complete, {study.n_running} running{added}){again}; watch it with "
        + hint(args, f"show {shlex.quote(study.name)}")
    )
    note = worker_note(study, *worker_flags(args))
    if note:
        print(note)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _search_client(args) as client:
        if not args.yes:
            study = client.get_study(args.name)  # NOT_FOUND first, then what would go
            done = study.n_complete + study.n_pruned + study.n_fail
            raise CliError(
                f"deleting {study.name} removes its {done} finished trial(s) and their files "
                f"for good; pass --yes to delete it: "
                + hint(args, f"delete {shlex.quote(study.name)} --yes")
            )
        resp = client.delete(args.name)
    print(f"deleted {args.name}: {resp.n_trials} trial(s), {resp.n_files} file(s)")
    if resp.n_files_missing:  # a wrong --artifact-dir: the study's files are elsewhere
        where = resp.artifact_dir or "the artifact store"
        print(
            f"{resp.n_files_missing} recorded file(s) were not found in {where}; if the server "
            "runs with the wrong --artifact-dir, they are still in the right one"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from archsearch.server._demo import run_demo

    return run_demo(args)
