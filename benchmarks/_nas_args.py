"""The command line of ``nas_table.py``: every value checked before any search starts
(argparse's one-line error, exit status 2), the loop options built once with each loop."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _argtypes import existing_file, glue_task, parser_for, whole

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TABLE = REPO.parent / "shared" / "data" / "flexibert-small" / "dataset_small_sst2.json"
DEFAULT_LOOPS = "numeric-gp,boshnas,random,tpe,gp,embedding-gp"
QUICK = """\
    python benchmarks/nas_table.py --loops random,tpe --seeds 2 --evals 20 --no-record"""


def loop_names(text: str) -> str:
    """``--loops``: registered loops, each ``NAME`` or ``NAME@LABEL``, each once; as given."""
    from archsearch.search import LOOPS

    items = text.split(",")
    unknown = [
        item
        for item in items
        if item.split("@")[0] not in LOOPS.names() or item.endswith("@") or item.count("@") > 1
    ]
    if unknown or len(set(items)) < len(items) or not all(items):
        said = ", ".join(map(repr, unknown)) if unknown else f"{text!r} repeats or omits a name"
        raise argparse.ArgumentTypeError(
            f"{said}: expected comma-separated loops, each NAME or NAME@LABEL, NAME out of "
            f"{', '.join(LOOPS.names())}"
        )
    return text


def loop_options(text: str) -> dict[str, dict[str, Any]]:
    """``--loop-options``: a JSON object of loop (``NAME`` or ``NAME@LABEL``) -> its options."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of loop -> options object, e.g. "
            f'\'{{"boshnas": {{"batch_size": 1}}}}\', got {text!r}'
        )
    return value


def seeds_for(text: str) -> dict[str, int]:
    """``--seeds-for``: ``LOOP=N,...`` with N >= 1."""
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        loop, sep, n = item.partition("=")
        if not loop or not sep or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected LOOP=N,... (e.g. gp=8), N >= 1 seeds"
            )
        out[loop] = int(n)
    return out


def parse_args(doc: str | None, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``doc``: the script's docstring, its help); ``loop_options`` and
    ``seeds_for`` come back parsed (a dict each)."""
    p = parser_for(doc, QUICK)
    p.add_argument("--table", default=str(DEFAULT_TABLE), type=existing_file)
    p.add_argument("--task", default="sst2", type=glue_task)
    p.add_argument("--seeds", type=whole(), default=20)
    p.add_argument(
        "--first-seed", type=whole(0), default=0, help="seeds are FIRST..FIRST+N-1 (fresh seeds)"
    )
    p.add_argument(
        "--jobs",
        type=whole(),
        default=1,
        help="searches run at once in separate processes (for machines with more cores)",
    )
    p.add_argument("--evals", type=whole(), default=100)
    p.add_argument(
        "--seeds-for",
        default={},
        type=seeds_for,
        metavar="LOOP=N,...",
        help="fewer (or more) seeds for some loops, e.g. gp=8 (shown in the table's seeds column)",
    )
    p.add_argument("--loops", default=DEFAULT_LOOPS, type=loop_names)
    p.add_argument(
        "--loop-options",
        default={},
        type=loop_options,
        help='JSON: loop name -> options, e.g. \'{"boshnas": {"batch_size": 1}}\'; a loop '
        "named NAME@LABEL in --loops is loop NAME with the options keyed NAME@LABEL",
    )
    p.add_argument(
        "--parallel",
        type=whole(),
        default=4,
        help="workers per round in-process: asks before tells (default 4, the service run's)",
    )
    p.add_argument(
        "--asynchronous",
        action="store_true",
        help="with --parallel N: N candidates stay in flight, the oldest is told and one is "
        "asked at a time (instead of rounds of N asks before N tells)",
    )
    p.add_argument(
        "--table-params",
        choices=("rows", "layers"),
        default="layers",
        help="the in-process loops' parameters: layers (the service's per-layer parameters, "
        "mapped to the nearest row, as a user runs the samplers) or rows (one categorical over "
        "the table's rows, the default before issue 17) (default: layers)",
    )
    p.add_argument("--service", action="store_true", help="also run BOSHNAS through the service")
    p.add_argument("--workers", type=whole(), default=4)
    p.add_argument(
        "--plot",
        default=None,
        help="where to draw the regret plot (default: the committed "
        "benchmarks/nas_table_regret.png when the run is recorded, none otherwise)",
    )
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    loops = args.loops.split(",")
    if stray := [loop for loop in args.seeds_for if loop not in loops]:
        p.error(f"argument --seeds-for: {', '.join(stray)}: not in --loops {args.loops}")
    run = [*loops, "boshnas"] if args.service else loops
    if stray := [loop for loop in args.loop_options if loop not in run]:
        p.error(f"argument --loop-options: {', '.join(stray)}: not in --loops {args.loops}")
    from archsearch.search import make_loop
    from archsearch.spaces import SpecError

    for name, options in args.loop_options.items():  # a bad option now, not minutes in
        try:
            make_loop(name.split("@")[0], 0, 1, dict(options))
        except SpecError as e:
            p.error(f"argument --loop-options: {name}: {e}")
    return args
