"""Command-line values of some benchmark scripts, checked as argparse parses them.

Each function here is an argparse ``type=``: a bad value is refused before any work starts,
in one line that names the option (``prog: error: argument --steps: expected a whole number
>= 1, got '0'``, exit status 2). A list or path value is returned as given, so what a script
records or compares (a runs file's settings) stays the same. :func:`parser_for` makes a parser
whose ``--help`` is the script's whole docstring and a quick command.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path


def parser_for(doc: str | None, quick: str, notes: str = "") -> argparse.ArgumentParser:
    """A parser whose ``--help`` shows ``doc`` as written (not cut or re-wrapped), then
    ``notes`` (e.g. the goal, where the docstring states none) and the ``quick`` command."""
    epilog = f"{notes}\n\n" if notes else ""
    epilog += f"Run it small (a smoke test, not a measurement):\n\n{quick}"
    return argparse.ArgumentParser(
        description=doc,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def whole(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """A whole number in ``minimum..maximum`` (the CLI's own check)."""
    from archsearch.server._cli_common import whole_number

    return whole_number(minimum, maximum)


def number(*, allow_zero: bool = False, maximum: float | None = None) -> Callable[[str], float]:
    """A finite number > 0 (>= 0 with ``allow_zero``), at most ``maximum``."""
    span = (">= 0" if allow_zero else "> 0") + ("" if maximum is None else f" and <= {maximum:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        bad = not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero)
        if bad or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected a number {span}, got {text!r}")
        return value

    return parse


def whole_list(minimum: int = 0) -> Callable[[str], str]:
    """Comma-separated whole numbers >= ``minimum`` (``0,1,2``); returned as given."""

    def parse(text: str) -> str:
        items = text.split(",")
        if not all(item.strip().isdigit() and int(item) >= minimum for item in items):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated whole numbers >= {minimum} (e.g. 0,1), got {text!r}"
            )
        return text

    return parse


def names(known: Iterable[str], what: str = "") -> Callable[[str], str]:
    """Comma-separated names out of ``known``, each once; returned as given."""
    choices = list(known)

    def parse(text: str) -> str:
        items = text.split(",")
        unknown = [item for item in items if item not in choices]
        if unknown or len(set(items)) < len(items):
            said = ", ".join(map(repr, unknown)) if unknown else f"{text!r} repeats a name"
            raise argparse.ArgumentTypeError(
                f"{said}: expected comma-separated {what or 'names'} out of {', '.join(choices)}"
            )
        return text

    return parse


def glue_tasks(text: str) -> str:
    """Comma-separated GLUE task ids (``sst2,mrpc``); returned as given."""
    from archsearch.spaces import GLUE_TASK_IDS

    return names(GLUE_TASK_IDS, "GLUE task ids")(text)


def glue_task(text: str) -> str:
    """One GLUE task id (``sst2``)."""
    from archsearch.spaces import GLUE_TASK_IDS

    if text not in GLUE_TASK_IDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a GLUE task id out of {', '.join(GLUE_TASK_IDS)}"
        )
    return text


def existing_file(text: str) -> str:
    """The path of a file that exists."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def each(check: Callable[[str], object]) -> Callable[[str], str]:
    """Comma-separated values that each pass ``check``; returned as given."""

    def parse(text: str) -> str:
        for item in text.split(","):
            check(item)
        return text

    return parse


def json_file(text: str) -> str:
    """The path of a JSON file that exists and parses."""
    try:
        json.loads(Path(existing_file(text)).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a readable JSON file: {e}") from None
    return text


#: Comma-separated paths of JSON files that exist and parse.
json_files = each(json_file)


def existing_dir(text: str) -> str:
    """The path of a folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return text


def json_out(text: str) -> str:
    """The path of a JSON file to write, and to continue when it exists: its folder exists, and
    the file, if any, parses."""
    path = Path(text)
    if path.is_dir() or not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: not a file in an existing folder")
    return json_file(text) if path.exists() else text


def torch_device(text: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    try:
        kind = torch.device(text).type
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:N], got {text!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: torch sees no CUDA device here; use cpu")
    if kind not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:N], got {text!r}")
    return text


def base_model(text: str) -> str:
    """A base model the ``lora`` trainer can read: a local folder, or a hub name while the hub
    may be used (as ``recipe.lora.model``)."""
    from archsearch.worker._lora_model import resolve_base
    from archsearch.worker._trainer import CandidateError

    try:
        resolve_base(text)
    except CandidateError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a model folder here nor a hub name this machine may "
            "download; leave the option out for the packaged all-MiniLM-L6-v2"
        ) from None
    return text


def seq_length(text: str) -> int:
    """A benchmark's ``max_seq_length``: 5 (its tasks may be pairs: [CLS], a token of each text,
    two [SEP]) to 512 (BERT's position embeddings)."""
    from archsearch.spaces._recipe import MIN_PAIR_SEQ_LENGTH

    return whole(MIN_PAIR_SEQ_LENGTH, 512)(text)


def no_train_split(tasks: Iterable[str], glue_dir: str | None = None) -> str | None:
    """What keeps ``tasks`` from training on this machine's GLUE data (no folder, or a task's
    train split missing), or None."""
    from archsearch.worker._glue_dir import GlueDataMissing, resolve_glue_dir, split_path

    try:
        folder = resolve_glue_dir(glue_dir)[0]
    except GlueDataMissing as e:
        return str(e)
    missing = [t for t in tasks if not split_path(t, "train", folder).is_file()]
    return f"no train split of {', '.join(missing)} in {folder}" if missing else None
