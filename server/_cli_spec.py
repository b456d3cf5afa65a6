"""The spec ``archsearch launch`` builds from its flags (``--spec``, ``--set``, the shortcuts),
checked here before any call where it can be."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from archsearch.server._cli_common import EXIT_BAD_INPUT, CliError

# A bare word where JSON wants a string: a key or value the shell (or the user) left unquoted.
_BARE_WORD = re.compile(r"(?<=[{\[,:])\s*([A-Za-z_][\w.\-/]*)\s*(?=[:,}\]])")


def _parse_value(key: str, text: str) -> Any:
    """A ``--set`` value: JSON, else the text as a string; an object or list that is not valid
    JSON (``{method:dsir}``: the shell ate its quotes, or they were never there) is an error
    that shows the value as JSON."""
    from archsearch.server._spec_objectives import unique_keys

    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError) as e:
        if not isinstance(e, (json.JSONDecodeError, RecursionError)):  # 4300+ digits
            raise CliError(f"--set {key}: {str(e).split(';')[0]}") from None
        if not text.lstrip().startswith(("{", "[")):
            return text
        why = f"{e.msg} at character {e.pos}" if isinstance(e, json.JSONDecodeError) else "too deep"
        raise CliError(
            f"--set {key}={text}: the value is not valid JSON ({why}); keys and strings need "
            "double quotes, and the whole --set value single quotes so that the shell keeps "
            f"them: --set '{key}={_as_json(text)}'"
        ) from None


def _as_json(text: str) -> str:
    """``text`` as the JSON it was most likely meant to be (bare words quoted), else an
    example of the quoting."""
    quoted = _BARE_WORD.sub(
        lambda m: m[1] if m[1] in ("true", "false", "null") else json.dumps(m[1]),
        text.replace("'", '"'),
    )
    example = '{"key": "text", "n": 1}'
    try:
        meant = json.dumps(json.loads(quoted))
    except (ValueError, RecursionError):
        return example
    return meant if "'" not in meant else example


def _set_path(spec: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = spec
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise CliError(f"--set {dotted}: {k} is not an object in the spec")
        cur = nxt
    cur[keys[-1]] = value


def check_here(spec: dict[str, Any], args: argparse.Namespace) -> None:
    """The server's validation of ``spec``, run here (for a server that cannot be reached:
    a mistake in the spec is said before the connection's), with the trainers installed
    here; a trainer that is not may be a plugin a remote worker offers, so left to the server.

    Raises:
        CliError: The spec is invalid (exit 2).
    """
    from archsearch.server._spec import SearchSpec
    from archsearch.server._trainers import TrainerCatalogue
    from archsearch.spaces import SpecError

    local = TrainerCatalogue.installed()
    trainer = spec.get("trainer", "bert")
    if isinstance(trainer, str) and local.get(trainer) is None:
        return
    try:
        SearchSpec.from_dict(spec, local)
    except SpecError as e:
        said = str(e).replace(" (the server log has the traceback)", "")  # no server here
        hint = method_hint(e.field, said, spec, args.set)
        raise CliError(f"invalid search spec: {said}{hint}", EXIT_BAD_INPUT) from e


def method_hint(field: str, said: str, spec: dict[str, Any], items: list[str] | None) -> str:
    """When ``--set P.FIELD=V`` made an object ``P`` with no ``method`` (``data.selection``:
    method "none", which reads no field): say to set ``P.method`` too, or the whole object."""
    from archsearch.spaces import PRETRAIN_SELECTION_METHODS, SELECTION_METHODS

    if "method 'none'" not in said:
        return ""
    for item in items or []:
        parent = item.partition("=")[0].rpartition(".")[0]
        obj: Any = spec if parent else None
        for k in parent.split(".") if parent else []:
            obj = obj.get(k) if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or "method" in obj or not field.startswith(f"{parent}."):
            continue
        pretrain = parent.endswith("pretrain_selection")
        methods = PRETRAIN_SELECTION_METHODS if pretrain else SELECTION_METHODS
        method = next((m for m, reads in methods.items() if obj.keys() <= reads.keys()), "METHOD")
        whole = json.dumps({"method": method, **obj})
        return (
            f"; set {parent}.method too, e.g. --set {parent}.method={method}, or give the whole "
            f"object: --set '{parent}={whole}'"
        )
    return ""


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The search spec from ``--spec FILE`` and the flags (flags win)."""
    spec: dict[str, Any] = {}
    if args.spec:
        try:
            from archsearch.server._spec_objectives import unique_keys

            text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
            if not text.strip():
                raise CliError(
                    f"--spec {'- (standard input)' if args.spec == '-' else args.spec} is empty; "
                    "it must hold the search spec as a JSON object"
                )
            spec = json.loads(text, object_pairs_hook=unique_keys)
        except OSError as e:
            raise CliError(f"cannot read --spec {args.spec}: {e.strerror}") from e
        except (ValueError, RecursionError) as e:  # ValueError: bad UTF-8, huge integers too
            why = str(e).split(";")[0]  # not Python's advice on set_int_max_str_digits
            raise CliError(f"--spec {args.spec} is not valid JSON: {why}") from e
        if not isinstance(spec, dict):
            raise CliError(f"--spec {args.spec} must hold a JSON object")
    flags: dict[str, str] = {}  # spec key -> the flag that set it
    for key in ("name", "space", "loop", "task", "trainer", "seed"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
            flags[key] = f"--{key}"
    if args.trials is not None:
        spec["n_trials"] = args.trials
        flags["n_trials"] = "--trials"
    if args.objective:
        spec["objectives"] = list(args.objective)
        flags["objectives"] = "--objective"
    if args.pruner:
        spec["pruner"] = {"type": args.pruner}
        flags["pruner"] = flags["pruner.type"] = "--pruner"
    if args.table:
        spec.setdefault("space_options", {})["table"] = args.table
        flags["space_options.table"] = "--table"
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(
                f"--set {item!r}: expected KEY=VALUE, for example --set recipe.max_steps=300"
            )
        # one would be lost without a word: the same key, or a whole object over a field
        # given before (--table, then --set space_options={...})
        for given, by in flags.items():
            if given == key or given.startswith(f"{key}."):
                raise CliError(f"--set {key}=... would replace {given} set by {by}; give it once")
        _set_path(spec, key, _parse_value(key, value))
        flags[key] = f"--set {key}=..."
    # A table path is read by the server: make a local relative path absolute.
    table = (
        spec.get("space_options", {}).get("table")
        if isinstance(spec.get("space_options"), dict)
        else None
    )
    if isinstance(table, str) and not os.path.isabs(table) and os.path.exists(table):
        spec["space_options"]["table"] = os.path.abspath(table)
    return spec
