"""``archsearch wait``: block until a study is no longer running, for scripts and CI jobs.

Exit status 0 when it completed with a best trial (a completed trial with measured, finite
values), 1 when it was stopped or ended without one (every trial failed; an AutoDistil study
that trained no student), 124 when ``--timeout`` ran out (as ``timeout(1)``),
and the CLI's usual statuses for a missing study (4) or a server that cannot be reached (3).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from archsearch.server._cli_common import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    CliError,
    _add_conn,
    _search_client,
    json_text,
    seconds,
)


def add_wait_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    w = command(
        "wait",
        "wait until a study is no longer running; exit 0 when it completed with a result",
    )
    _add_conn(w)
    w.add_argument("name", help="study name")
    w.add_argument(
        "--timeout",
        type=seconds(allow_zero=False),
        help="give up after this many seconds (exit 124); default: wait for ever",
    )
    w.add_argument(
        "--interval",
        type=seconds(allow_zero=False),
        default=5.0,
        help="seconds between two looks at the study (default 5)",
    )
    w.add_argument(
        "--json", action="store_true", help="print the study as `show --json` does, less trials"
    )
    w.set_defaults(func=cmd_wait)


def cmd_wait(args: argparse.Namespace) -> int:
    from archsearch.server._format_json import study_dict
    from archsearch.v1 import archsearch_pb2 as pb

    with _search_client(args) as client:
        client.get_study(args.name)  # no such study, no server: said now, not after a wait
        try:
            study = client.wait(args.name, args.timeout, args.interval)
        except TimeoutError as e:
            raise CliError(f"{e} (--timeout)", EXIT_TIMEOUT) from None
    if args.json:
        print(json_text(study_dict(study)))
    else:
        print(summary(study))
    if study.state == pb.STUDY_COMPLETED and study.best_trials:
        return 0
    # no best trial: none completed with measured, finite values (an AutoDistil study's jobs
    # and scored-only students complete without one)
    if study.state == pb.STUDY_STOPPED and study.best_trials:  # it has a result, not the end
        print(
            f"archsearch: study {study.name} was stopped before its budget was spent (its "
            f"best so far is above); `archsearch resume {study.name}` goes on",
            file=sys.stderr,
        )
        return EXIT_FAILED
    why = "it was stopped" if study.state == pb.STUDY_STOPPED else "no trial has a measured score"
    print(
        f"archsearch: study {study.name} ended without a result ({why}); "
        f"`archsearch show {study.name}` says why",
        file=sys.stderr,
    )
    return EXIT_FAILED


def summary(study: Any) -> str:
    """One line: the state, why it ended, the counts and the best trial's values."""
    from archsearch.server._format import STUDY_STATE_NAMES

    s = study
    reason = f" ({s.completed_reason})" if s.completed_reason else ""
    counts = f"{s.n_complete} complete, {s.n_pruned} pruned, {s.n_fail} failed"
    if s.n_running:  # a stopped study's leased trials run on (a cancelled one ends soon)
        counts += f", {s.n_running} still running"
    best = ""
    if s.best_trials:
        names = [o.metric for o in s.objectives]
        if len(s.best_trials) == 1:
            t = s.best_trials[0]
            shown = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, t.values, strict=False))
            best = f"; best trial #{t.number}: {shown}"
        else:
            best = f"; Pareto front: {len(s.best_trials)} trials"
    return f"{s.name} {STUDY_STATE_NAMES[s.state]}{reason}: {counts}{best}"
