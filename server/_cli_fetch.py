"""``archsearch fetch STUDY N``: a trial's kept checkpoint, downloaded from the server (the
work is :func:`archsearch.server.fetch.fetch_checkpoint`'s; this adds the command and what it
prints: the weights' step and dev value, and how to load each kind of checkpoint)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from archsearch.server._cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    CliError,
    _add_conn,
    _token,
    json_text,
    whole_number,
)
from archsearch.server.fetch import (
    ADAPTER_CONFIG,
    BadFetchRequest,
    Fetched,
    FetchError,
    NoSuchTrial,
    fetch_checkpoint,
    fetch_files,
    no_files,
    trial_files,
)
from archsearch.spaces._checkpoint_names import DYLORA_FILE, FLEXIBERT_CONFIG_FILE, NOTE_FILE


def add_fetch_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Adds ``fetch`` to the CLI (``command(name, help)`` makes a subparser)."""
    f = command("fetch", "download a trial's kept checkpoint (a DyLoRA rank: its adapter)")
    _add_conn(f)
    f.add_argument("name", help="study name")
    f.add_argument(
        "trial", type=whole_number(0, 2**31 - 1), help="trial number (as `show` lists it)"
    )
    f.add_argument(
        "--out",
        help="folder to create (default: STUDY-trialN, with -rB for --rank B on a training "
        "trial); must not exist or be empty",
    )
    f.add_argument(
        "--rank",
        type=whole_number(1),
        help="a LoRA trainer's training trial: write its adapter as a plain rank-B LoRA "
        "(default: a rank trial's own rank; a training trial's DyLoRA adapter at r_max)",
    )
    which = f.add_mutually_exclusive_group()
    which.add_argument(
        "--artifact",
        action="append",
        metavar="NAME",
        help="download this file of the trial as it was uploaded (repeatable; a trainer of "
        "your own's context.upload); default: the kept checkpoint",
    )
    which.add_argument("--all", action="store_true", help="download every file of the trial")
    which.add_argument(
        "--list", action="store_true", help="list the trial's files and sizes; download nothing"
    )
    f.add_argument(
        "--json",
        action="store_true",
        help="print what was written (or, with --list, the files) as JSON",
    )
    f.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    if args.artifact or args.all or args.list:
        return _files(args)
    try:
        got = fetch_checkpoint(
            args.server,
            args.name,
            args.trial,
            args.out,
            rank=args.rank,
            token=_token(args),
            tls_ca=args.tls_ca,
            tls=args.tls,
        )
    except FetchError as e:
        raise _fetch_error(e) from e
    if args.json:
        print(
            json_text(
                {
                    "out": str(got.out),
                    "trial": got.trial,
                    "source_trial": got.source,
                    "rank": got.rank,
                    "folders": [str(f) for f in got.folders],
                }
            )
        )
    else:
        print(_summary(got))
    return 0


def _files(args: argparse.Namespace) -> int:
    """``--list``, ``--artifact NAME``, ``--all``: the trial's files as uploaded."""
    if args.rank is not None:
        raise CliError("--rank cuts a kept adapter; it does not apply to --artifact/--all/--list")
    conn = {"token": _token(args), "tls_ca": args.tls_ca, "tls": args.tls}
    try:
        if args.list:
            held = trial_files(args.server, args.name, args.trial, **conn)
            if args.json:
                print(json_text([{"name": n, "size_bytes": b} for n, b in sorted(held.items())]))
                return 0
            if not held:
                print(no_files(args.server, args.name, args.trial, **conn))
            for name, size in sorted(held.items()):
                print(f"{size:>12,}  {name}")
            return 0
        out, names = fetch_files(
            args.server, args.name, args.trial, args.artifact, args.out, **conn
        )
    except FetchError as e:
        raise _fetch_error(e) from e
    if args.json:
        print(json_text({"out": str(out), "trial": args.trial, "files": names}))
    else:
        print(f"trial {args.trial}: {len(names)} file(s) in {out}: {', '.join(names)}")
    return 0


def _summary(got: Fetched) -> str:
    out, rank = got.out, got.rank
    via = "" if got.source == got.trial else f" (rank {rank} of #{got.source})"
    lines = [f"trial {got.trial}{via}: checkpoint in {out}" + (f", at rank {rank}" if rank else "")]
    for folder in got.folders:
        where = "" if folder == out else f"{folder.name}: "
        adapter = (folder / ADAPTER_CONFIG).is_file()
        note_file = folder / NOTE_FILE
        if note_file.is_file():
            note = json.loads(note_file.read_text())
            if note.get("final"):
                lines.append(
                    f"  {where}weights of the final step {note['step']}, on which every rank was "
                    "scored: the rank trials' scores are theirs"
                )
            elif note.get("value") is not None:
                task = f"{note['task']} " if "task" in note else ""
                lines.append(
                    f"  {where}weights of step {note['step']}, the best {task}dev {note['metric']} "
                    f"{note['value']:.4g}{' at r_max' if adapter else ''}; the trial's scores "
                    "are its final step's"
                )
        if adapter:
            base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
            kind = f"a rank-{rank} LoRA adapter" if rank else f"{_adapter_kind(folder)} at r_max"
            lines.append(
                f"  {where}{kind} for {base}: load it with peft's PeftModel.from_pretrained(base "
                "sequence classifier, folder)"
            )
        elif (folder / FLEXIBERT_CONFIG_FILE).is_file():
            lines.append(
                f"  {where}a FlexiBERT classifier: load it with archsearch.worker."
                "FlexiBertForSequenceClassification.from_pretrained(folder)"
            )
        elif (folder / "config.json").is_file():
            lines.append(
                f"  {where}a transformers {_head_kind(folder)}: load it with "
                "AutoModelForSequenceClassification.from_pretrained(folder)"
            )
    return "\n".join(lines)


def _head_kind(folder: Path) -> str:
    """"regression model" for a checkpoint whose config says so (STS-B, a custom regression
    task: one output, scores not classes), else "classifier"."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return "classifier"
    regression = isinstance(config, dict) and config.get("problem_type") == "regression"
    return "regression model" if regression else "classifier"


def _adapter_kind(folder: Path) -> str:
    """ "a DyLoRA adapter" or "a LoRA adapter" (plain LoRA, mode lora), from the settings the
    worker wrote beside it."""
    try:
        spec = json.loads((folder / DYLORA_FILE).read_text()).get("spec", {})
    except (OSError, ValueError, AttributeError):
        return "a LoRA adapter"
    return "a DyLoRA adapter" if spec.get("mode", "dylora") == "dylora" else "a LoRA adapter"


def _fetch_error(e: FetchError) -> CliError:
    """The CLI's error for ``e``: 4 for a missing study, trial or file, 2 for a request that
    does not apply (an ``--out`` that exists, a ``--rank`` that was never scored), 1 for a
    trial with nothing to fetch (it kept nothing, failed, or is a job)."""
    if isinstance(e, NoSuchTrial):
        return CliError(str(e), EXIT_NOT_FOUND)
    return CliError(str(e), EXIT_BAD_INPUT if isinstance(e, BadFetchRequest) else EXIT_FAILED)
