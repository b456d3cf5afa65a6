"""The ``archsearch`` command line: serve, worker, launch, studies, show, wait, stop, resume,
delete, demo, replay, fetch, fleet.

This module builds the parser and runs a subcommand; the subcommands live by group in
``_cli_machines`` (serve, worker), ``_cli_studies`` (launch, studies, show, stop, resume,
delete, demo), ``_cli_replay`` (replay), ``_cli_fetch`` (fetch) and ``_cli_wait`` (wait),
what they share in ``_cli_common``.

Every error is one line, ``archsearch: <problem> (<fix>)``, and exits non-zero (the statuses
are ``_cli_common.EXIT_*``: 2 bad input, 3 no server, 4 not found, 5 exists, 1 otherwise);
never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any


def _quiet_grpc_core(argv: Sequence[str]) -> None:
    """Keeps gRPC's C-core log (``E1206 ... dns_resolver.cc:554] ...``, ``I1206 ...
    ssl_transport_security.cc ... Handshake failed``) out of the command's output, where our
    own one-line error says what went wrong: ``GRPC_VERBOSITY=NONE`` unless the user set
    GRPC_VERBOSITY or asked for ``-v``/``--verbose`` (before or after the command's name, not
    past a ``--``, after which a fleet command passes its workers' own arguments). C-core reads
    it when grpc is first imported, so this runs before this module imports grpc; worker and
    server processes the command starts inherit it."""
    for arg in argv:
        if arg == "--":
            break
        if arg in ("-v", "--verbose"):
            return
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


# The `archsearch` console script and `python -m archsearch.server.cli`, not a program that
# imports this module (its own grpc log is its own business).
if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "archsearch":
    _quiet_grpc_core(sys.argv[1:])

from archsearch.server._cli_common import (  # noqa: E402 - after GRPC_VERBOSITY is set
    CliError,
    _add_conn,
    _explain,
    _setup_logging,
    _split_set_hint,
    whole_number,
)
from archsearch.server._cli_fetch import add_fetch_command  # noqa: E402
from archsearch.server._cli_machines import add_serve_command, add_worker_command  # noqa: E402
from archsearch.server._cli_replay import add_replay_command  # noqa: E402
from archsearch.server._cli_studies import (  # noqa: E402
    cmd_delete,
    cmd_demo,
    cmd_launch,
    cmd_resume,
    cmd_show,
    cmd_stop,
    cmd_studies,
)
from archsearch.server._cli_wait import add_wait_command  # noqa: E402
from archsearch.server.client import ClientError  # noqa: E402

DESCRIPTION = (
    "archsearch: neural-architecture search as a service. A server runs the search loops "
    "against an Optuna storage; workers train the candidates it hands out."
)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless it has none to show (no default, a
    flag) or already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" not in text
            and action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line with the CLI's one prefix."""

    def error(self, message: str) -> Any:
        self.exit(
            2, f"archsearch: {message}{_split_set_hint(message)} (see `{self.prog} --help`)\n"
        )


class _Version(argparse.Action):
    """``--version``: the package version and the source digest (``server/_source.py``: every
    build said 0.1.0), computed only when asked (it reads archsearch's source files)."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from archsearch.server._source import code_label

        print(f"archsearch {code_label()}")
        parser.exit()


VERBOSE = "log debug messages"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="archsearch", description=DESCRIPTION, formatter_class=_HelpFormatter)
    p.add_argument("--version", action=_Version)
    p.add_argument("-v", "--verbose", action="store_true", help=VERBOSE)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=_HelpFormatter
        )
        # after the command too (`archsearch show X -v`); no default here: the top level's
        c.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE
        )
        return c

    add_serve_command(command)
    add_worker_command(command)

    la = command("launch", "launch a search")
    _add_conn(la)
    la.add_argument(
        "--spec", help="JSON file with the search spec, - for standard input (flags override it)"
    )
    la.add_argument("--name", help="study name (required, here or in --spec)")
    la.add_argument(
        "--space",
        help="bert | flexibert | flexibert-small | lora | autodistil (required, here or in --spec)",
    )
    la.add_argument(
        "--loop",
        help="random | tpe | nsga2 | gp | boshnas | embedding-gp | numeric-gp | evolution | "
        "local-search | "
        "autodistil (space autodistil: supernets, ranking, budgeted pick; settings in --spec); "
        "default: tpe",
    )
    la.add_argument("--task", help="GLUE task id, e.g. sst2; default: sst2")
    la.add_argument(
        "--trials",
        type=int,
        help="number of candidates to evaluate (required, here or as n_trials in --spec)",
    )
    la.add_argument(
        "--trainer",
        help="bert (real training) | lora (LoRA/DyLoRA fine-tuning, space lora) | autodistil "
        "(supernets and students, space autodistil) | table (look-up; needs --table); "
        "default: bert",
    )
    la.add_argument("--seed", type=int, help="sampler seed; default: 0")
    la.add_argument(
        "--table",
        help="flexibert-small: keep only architectures this table scores (required with "
        "--trainer table: the table the workers use)",
    )
    la.add_argument(
        "--objective",
        action="append",
        help="METRIC:max|min, repeatable (e.g. --objective accuracy:max --objective "
        "params:min); default: the task's own metric (accuracy for SST-2, f1 for MRPC, "
        "pearson for STS-B, mcc for CoLA)",
    )
    la.add_argument(
        "--pruner",
        choices=["none", "median", "successive_halving", "hyperband"],
        help="stop unpromising trials early; default: none",
    )
    la.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any spec field by dotted path, value as JSON (e.g. recipe.max_steps=300)",
    )
    la.add_argument("--json", action="store_true", help="print the launched study as JSON")
    la.set_defaults(func=cmd_launch)

    st = command("studies", "list studies")
    _add_conn(st)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_studies)

    sh = command("show", "show a study's trials and best result")
    _add_conn(sh)
    sh.add_argument("name", help="study name")
    sh.add_argument("--json", action="store_true", help="print JSON, every trial")
    sh.add_argument(
        "--limit",
        type=whole_number(1),
        default=50,
        help="trials to print (the most recent; jobs before the rows their completion added)",
    )
    sh.set_defaults(func=cmd_show)

    sp = command("stop", "stop handing out a study's trials")
    _add_conn(sp)
    sp.add_argument("name", help="study name")
    sp.add_argument(
        "--cancel-running",
        action="store_true",
        help="also end the trials running now (their workers stop at the next heartbeat; "
        "the trials end failed and are not retried)",
    )
    sp.set_defaults(func=cmd_stop)

    rs = command("resume", "run a stopped or completed study again, or change its budget")
    _add_conn(rs)
    rs.add_argument("name", help="study name")
    rs.add_argument(
        "--n-trials",
        type=whole_number(1, 100_000),
        default=0,
        help="the new budget of distinct candidates (at least those already asked); "
        "default: keep it (a stopped study)",
    )
    rs.set_defaults(func=cmd_resume)

    de = command("delete", "delete a stopped or completed study, its trials and their files")
    _add_conn(de)
    de.add_argument("name", help="study name")
    de.add_argument("--yes", action="store_true", help="really delete it (there is no undo)")
    de.set_defaults(func=cmd_delete)

    d = command("demo", "run an end-to-end search on this machine")
    d.add_argument("--workdir", default="demo-output", help="where the SQLite file and logs go")
    d.add_argument("--trials", type=whole_number(1), default=10, help="candidates to evaluate")
    d.add_argument("--workers", type=whole_number(1), default=2, help="CPU worker processes")
    d.add_argument(
        "--steps", type=whole_number(1), default=300, help="training steps per candidate"
    )
    d.add_argument(
        "--glue-dir",
        help="glue_data folder with SST-2/{train,dev}.tsv; default: $ARCHSEARCH_GLUE_DIR, then "
        "../shared/data/glue; with none, SST-2 from the hub (nyu-mll/glue) when online",
    )
    d.set_defaults(func=cmd_demo)

    add_replay_command(command)
    add_fetch_command(command)
    add_wait_command(command)

    from archsearch.fleet.cli import add_fleet_command  # its own package: SLURM, Ray, k8s

    add_fleet_command(sub, command)
    return p


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``archsearch show X --json | head -1``): stop
    quietly, as other command-line tools do, instead of a traceback at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CliError as e:  # a --server (or $ARCHSEARCH_SERVER) no client could dial
        parser.exit(e.code, f"archsearch: {e}\n")
    _setup_logging(args.verbose)
    if getattr(args, "tls_ca", None):
        args.tls = True
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except CliError as e:
        print(f"archsearch: {e}", file=sys.stderr)
        return e.code
    except ClientError as e:
        err = _explain(e, args)
        print(f"archsearch: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # `python -m archsearch.server.cli`: the package's module, so that its CliError (raised
    # by the fleet commands' own module) is the one main catches, not a __main__ copy.
    from archsearch.server.cli import main as _main

    sys.exit(_main())
