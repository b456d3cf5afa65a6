"""``archsearch replay``: which search loop would have found your best architectures soonest?

Replays registered loops on a table of architectures you have already measured (a FlexiBERT
table, a ``nas-tables`` JSON, a CSV of parameters and scores, or the completed trials of an
existing study), in-process with the server's own loop code (``server/_replay.py``), and prints
per loop the median evaluations to the top k% over seeds with a 90% bootstrap interval, how
many seeds reached it, the median regret after 25/50/100 evaluations, and random search's exact
median; a regret plot is written as PNG. With ``--server HOST:PORT`` each search of a FlexiBERT
table runs as a study on that server instead, with ``--parallel`` workers of this process
(``server/_service_replay.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archsearch.server._cli_common import EXIT_FAILED, CliError, _token, json_text

DEFAULT_LOOPS = "random,tpe,boshnas,numeric-gp"
GRAPHLESS_LOOPS = "random,tpe,numeric-gp"


def add_replay_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Adds ``replay`` to the CLI (``command(name, help)`` makes a subparser)."""
    r = command(
        "replay",
        "replay loops on a table of measured architectures: evaluations to the top k percent",
    )
    r.add_argument(
        "table",
        help="a table file (FlexiBERT or nas-tables JSON, CSV) or an Optuna storage URL "
        "(sqlite:///FILE.db, postgresql://...) with --study",
    )
    r.add_argument(
        "--format",
        help="flexibert | nas-tables | csv | optuna; default: guessed (a URL is a study, .csv "
        "a CSV, JSON with model_dicts FlexiBERT's, other JSON nas-tables)",
    )
    r.add_argument("--study", help="with a storage URL: the study whose COMPLETE trials are read")
    r.add_argument(
        "--table-option",
        action="append",
        metavar="KEY=VALUE",
        help="a reader option, repeatable: task=cola (flexibert), metric=test_ppl (nas-tables), "
        "score=acc and direction=minimize (csv), objective=1 (optuna), padded=true (all but "
        "flexibert: every layer's parameters in every trial, for gp)",
    )
    r.add_argument(
        "--loops",
        help=f"registered loops, comma-separated (NAME@LABEL: NAME with the --loop-options "
        f"keyed NAME@LABEL); default: {DEFAULT_LOOPS} ({GRAPHLESS_LOOPS} on spaces without "
        "architecture graphs)",
    )
    r.add_argument("--loop-options", default="{}", help="JSON: loop name -> its options")
    r.add_argument("--seeds", type=int, default=10, help="searches per loop")
    r.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+N-1")
    r.add_argument("--evals", type=int, default=100, help="distinct evaluations per search")
    r.add_argument("--top", type=float, default=1.0, help="the target: the top K percent of rows")
    r.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="simulated workers: N candidates in flight, the oldest told and one asked at a time",
    )
    r.add_argument(
        "--rounds",
        action="store_true",
        help="with --parallel N: rounds of N asks before N tells, instead of asynchronous",
    )
    r.add_argument(
        "--count-repeats",
        action="store_true",
        help="a suggestion of a row already evaluated costs an evaluation (default: free, as the "
        "service reuses the earlier result)",
    )
    r.add_argument("--jobs", type=int, default=1, help="searches run at once, in processes")
    r.add_argument("--plot", default="replay-regret.png", help="regret plot PNG to write")
    r.add_argument("--quiet", action="store_true", help="no line per search")
    r.add_argument("--json", action="store_true", help="print the report as JSON (implies --quiet)")
    r.add_argument(
        "--server",
        help="HOST:PORT of a running archsearch server: each search is a study there, its "
        "candidates leased by --parallel workers of this process (FlexiBERT tables; the server "
        "must read the table at the same path). Default: in-process",
    )
    r.add_argument(
        "--token-file",
        help="with --server: file whose first line is the token (default: $ARCHSEARCH_TOKEN)",
    )
    r.add_argument("--tls", action="store_true", help="with --server: TLS, system roots")
    r.add_argument("--tls-ca", help="with --server: the server's CA certificate (PEM)")
    r.set_defaults(func=cmd_replay)


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _table_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in args.table_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--table-option {item!r} is not KEY=VALUE (e.g. metric=test_ppl)")
        options[key] = _option_value(value)
    if args.study is not None:
        options["study"] = args.study
    return options


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--seeds", args.seeds),
        ("--evals", args.evals),
        ("--parallel", args.parallel),
        ("--jobs", args.jobs),
    ):
        if value < 1:
            raise CliError(f"{flag} must be at least 1, got {value}")
    if args.first_seed < 0:
        raise CliError(f"--first-seed must be >= 0, got {args.first_seed}")
    if not 0 < args.top <= 100:
        raise CliError(f"--top is a percentage in (0, 100], got {args.top:g}")
    if args.server:
        for flag, used in (
            ("--rounds", args.rounds),
            ("--count-repeats", args.count_repeats),
            ("--jobs", args.jobs > 1),
        ):
            if used:
                raise CliError(
                    f"{flag} is for in-process replay: a service's workers are asynchronous, "
                    "it answers repeats itself, and its searches run one at a time; drop "
                    f"{flag} or --server"
                )
    elif args.token_file or args.tls or args.tls_ca:
        raise CliError("--token-file, --tls and --tls-ca go with --server HOST:PORT")


def cmd_replay(args: argparse.Namespace) -> int:
    from archsearch.server._replay import ReplayError, run_replay
    from archsearch.spaces import GraphSpace, SpecError, read_table

    _check_numbers(args)
    try:
        loop_options = json.loads(args.loop_options)
    except json.JSONDecodeError as e:
        raise CliError(f"--loop-options is not JSON: {e}") from e
    if not isinstance(loop_options, dict):
        raise CliError('--loop-options must be a JSON object: {"loop": {"option": value}}')
    try:
        table = read_table(args.table, args.format, **_table_options(args))
    except SpecError as e:
        own = {"format": "--format", "table_options.study": "--study"}  # flags of their own
        flag = own.get(e.field) or ("--table-option" if "." in e.field else "")
        # a problem that names the table itself is not prefixed with it again
        said = f"{e.problem}" + (f" ({e.fix})" if e.fix else "")
        what = said if e.field == "table" and str(args.table) in e.problem else f"{e}"
        where = "" if what is said else f" {args.table}"
        raise CliError(
            f"cannot read the table{where}: {what}" + (f" (see {flag})" if flag else "")
        ) from e
    default = DEFAULT_LOOPS if isinstance(table.space, GraphSpace) else GRAPHLESS_LOOPS
    given = default if args.loops is None else args.loops
    loops = [n.strip() for n in given.split(",")]
    if not all(loops):
        raise CliError(
            f"--loops {given!r} names an empty loop; give LOOP,LOOP,... (e.g. {default})"
        )
    t = table
    print(  # the JSON report is stdout's alone: this goes to stderr then
        f"table {t.source}: {len(t.architectures)} rows, {t.metric} ({t.direction})"
        + (f", {_rows(t.unscored)} without a {t.metric} score left out" if t.unscored else "")
        + (
            f", {t.derived} derived trial(s) left out (DyLoRA ranks, AutoDistil students' "
            "proxy scores)"
            if t.derived
            else ""
        )
        + (f", {_rows(t.repeated)} repeated dropped" if t.repeated else "")
        + (f" ({t.conflicting} with another score: the first row's kept)" if t.conflicting else "")
        + f"; {args.evals} evaluations x {args.seeds} seeds, "
        + (
            "one at a time"
            if args.parallel == 1
            else f"{args.parallel} workers in " + ("rounds" if args.rounds else "flight")
        ),
        flush=True,
        file=sys.stderr if args.json else sys.stdout,
    )
    search = None
    if args.server:
        search = _service_search(args, table, loop_options)
    folder = Path(args.plot).absolute().parent  # said now, not after every search has run
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CliError(f"cannot write the plot {args.plot}: {folder} is not a writable folder")
    suffix = Path(args.plot).suffix.lower().lstrip(".")
    if suffix:  # none: matplotlib writes PNG
        from matplotlib.backend_bases import FigureCanvasBase

        kinds = FigureCanvasBase.get_supported_filetypes()
        if suffix not in kinds:
            raise CliError(
                f"--plot {args.plot}: matplotlib writes {', '.join(sorted(kinds))}, not "
                f".{suffix}; name the file with one of them"
            )
    try:
        report = run_replay(
            table,
            loops,
            range(args.first_seed, args.first_seed + args.seeds),
            args.evals,
            top=args.top,
            jobs=args.jobs,
            progress=None if args.quiet or args.json else lambda line: print(line, flush=True),
            loop_options=loop_options,
            parallel=args.parallel,
            asynchronous=not args.rounds,
            count_repeats=args.count_repeats,
            search=search,
        )
    except ReplayError as e:  # the table or the loops (2); a search that failed as it ran (1)
        from archsearch.server._replay import ReplayLoopFailed
        from archsearch.server._service_replay import ServiceReplayFailed

        failed = isinstance(e, ServiceReplayFailed | ReplayLoopFailed)
        raise CliError(str(e), EXIT_FAILED if failed else 2) from e
    tg = report.targets
    plot = Path(args.plot)
    if args.json:
        _plot(report, plot, t.source)
        print(json_text(_report_dict(report, t, args.top, plot)))
        return 0
    print(
        f"\nbest {tg.best:.4f}; top {args.top:g}% = best {tg.k} -> {t.metric} "
        f"{'>=' if t.direction == 'maximize' else '<='} {tg.threshold:.4f} "
        f"({tg.count} rows counting ties)\n"
    )
    print(report.markdown())
    for note in report.notes():
        print(note)
    _plot(report, plot, t.source)
    print(f"regret plot: {plot}")
    return 0


def _rows(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def _plot(report: Any, plot: Path, source: str) -> None:
    from archsearch.server._replay_stats import regret_plot

    tg = report.targets
    try:
        regret_plot(report.runs, tg.best, report.evals, plot, f"{Path(source).name}: regret")
    except OSError as e:
        raise CliError(f"cannot write the plot {plot}: {e.strerror} (pass --plot PATH)") from e


def _report_dict(report: Any, table: Any, top: float, plot: Path) -> dict[str, Any]:
    """``replay --json``: the targets, each loop's summary (a median past the budget is
    ``median_reached: false``), the exact random baseline, the notes and the plot's path."""
    tg = report.targets
    return {
        "table": str(table.source),
        "metric": table.metric,
        "direction": table.direction,
        "top_percent": top,
        "targets": {
            "threshold": tg.threshold,
            "k": tg.k,
            "rows_at_or_past": tg.count,
            "best": tg.best,
            "rows": tg.rows,
        },
        "rows": len(table.architectures),
        "rows_without_score": table.unscored,
        "derived_trials": table.derived,
        "repeated_rows": table.repeated,
        "evals": report.evals,
        "exact_random_median_evals": report.exact_random,
        "loops": {
            name: {**s, "median_reached": s["median_evals"] <= report.evals}
            for name, s in report.summary.items()
        },
        "notes": list(report.notes()),
        "plot": str(plot),
    }


def _service_search(
    args: argparse.Namespace, table: Any, loop_options: dict[str, Any]
) -> Callable[[str, int], Any]:
    """``run_replay``'s ``search``: each search a study on ``--server`` (CliError when the
    table cannot be served)."""
    from archsearch.server._replay import ReplayError
    from archsearch.server._service_replay import check_service_table, service_replay_search

    try:
        check_service_table(table)
    except ReplayError as e:
        raise CliError(str(e)) from e
    client = {"token": _token(args), "tls_ca": args.tls_ca, "tls": args.tls}

    def search(loop: str, seed: int) -> Any:
        return service_replay_search(
            args.server,
            table,
            loop,
            seed,
            args.evals,
            loop_options=loop_options,
            parallel=args.parallel,
            client_options=client,
        )

    return search
