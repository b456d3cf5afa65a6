"""``archsearch fetch STUDY N``: a trial's kept checkpoint, downloaded from the server.

A trial that kept its checkpoint (``recipe.keep_checkpoint``) uploaded its folder's files
(``spaces/_checkpoint_names.py``); ``fetch`` downloads them into a new folder, one subfolder
per task for a multi-task trial. For a DyLoRA rank trial (``rank b of #N`` in ``show``), or
with ``--rank B`` on a LoRA trainer's trial, it downloads the training trial's adapter and
writes it as a plain peft LoRA adapter of that rank (:func:`adapter_at_rank`), which
``PeftModel.from_pretrained`` loads without archsearch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archsearch.server._cli_common import CliError, _add_conn, _search_client, _token, whole_number
from archsearch.spaces._checkpoint_names import (
    DYLORA_FILE,
    FLEXIBERT_CONFIG_FILE,
    NOTE_FILE,
    parse_checkpoint_artifact,
)
from archsearch.v1 import archsearch_pb2 as pb

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: A checkpoint folder holds one of these (a LoRA adapter's, or a whole model's).
WEIGHTS_FILES = (ADAPTER_WEIGHTS, "model.safetensors")


def add_fetch_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Adds ``fetch`` to the CLI (``command(name, help)`` makes a subparser)."""
    f = command("fetch", "download a trial's kept checkpoint (a DyLoRA rank: its adapter)")
    _add_conn(f)
    f.add_argument("name", help="study name")
    f.add_argument("trial", type=whole_number(0), help="trial number (as `show` lists it)")
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
    f.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    from archsearch.server._format import rank_trials_of
    from archsearch.server.client import WorkerClient

    with _search_client(args) as client:
        trials = {t.number: t for t in client.list_trials(args.name)}
    if args.trial not in trials:
        span = f"numbered 0-{max(trials)}" if trials else "none yet"
        raise CliError(f"study {args.name!r} has no trial {args.trial} (its trials: {span})")
    source, rank = trials[args.trial], args.rank
    of_rank = rank_trials_of(list(trials.values())).get(args.trial)
    if of_rank is not None:  # a rank trial holds no weights: its training trial does
        source = of_rank[1]
        if rank is not None and rank != of_rank[0]:
            raise CliError(
                f"--rank {rank}: trial {args.trial} is rank {of_rank[0]} of #{source.number} "
                f"(fetch #{source.number} --rank {rank}, or leave --rank out)"
            )
        rank = of_rank[0]
    out = Path(args.out or _default_out(args.name, args.trial, None if of_rank else rank))
    _check_out(out)
    with WorkerClient(
        args.server, token=_token(args), tls_ca=args.tls_ca, tls=args.tls
    ) as worker_client:
        names = [a.name for a in worker_client.list_artifacts(args.name, source.number)]
        files = {n: p for n in names if (p := parse_checkpoint_artifact(n)) is not None}
        if source.state != pb.COMPLETE or not files:  # a running trial may be uploading
            raise CliError(_nothing_kept(source, args.trial))
        staging = out.with_name(f".{out.name}.part-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for name, (task, file) in sorted(files.items()):
                folder = staging / task if task else staging
                folder.mkdir(parents=True, exist_ok=True)
                worker_client.download_artifact(args.name, source.number, name, folder / file)
            folders = sorted({staging / t if t else staging for t, _ in files.values()})
            for folder in folders:
                _check_whole(folder, source.number)
                if rank is not None:
                    adapter_at_rank(folder, rank)
            if out.exists():
                out.rmdir()
            os.replace(staging, out)
        except OSError as e:
            raise CliError(
                f"cannot write {out}: {e.strerror or e} (pass --out a folder you can create)"
            ) from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    via = "" if source.number == args.trial else f" (rank {rank} of #{source.number})"
    shown = [out / f.relative_to(staging) for f in folders]
    print(_summary(out, f"trial {args.trial}{via}", rank, shown))
    return 0


def _check_out(out: Path) -> None:
    """Refuses an ``--out`` that would overwrite something or cannot be created."""
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} is a file, not a folder (pass --out NEW_FOLDER)")
    if out.exists() and any(out.iterdir()):
        raise CliError(f"{out} exists and is not empty (pass --out NEW_FOLDER, or remove it)")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise CliError(f"cannot write {out}: {parent} is not a folder (create it first)")


def _check_whole(folder: Path, number: int) -> None:
    """Refuses a downloaded checkpoint without its weights (an upload refused part-way)."""
    if not any((folder / w).is_file() for w in WEIGHTS_FILES):
        raise CliError(
            f"trial {number}'s checkpoint on the server lacks its weights (one of "
            f"{list(WEIGHTS_FILES)}): its upload stopped part-way (see the trial's "
            "checkpoint_upload_error in optuna-dashboard); nothing was written"
        )


def _nothing_kept(source: Any, asked: int) -> str:
    via = "" if source.number == asked else f" (rank trial {asked}'s training trial)"
    if source.state in (pb.RUNNING, pb.WAITING):
        return f"trial {source.number}{via} has not finished: its checkpoint comes when it ends"
    if source.state != pb.COMPLETE:
        state = pb.TrialState.Name(source.state).lower()
        return f"trial {source.number}{via} ended {state}: only a completed trial keeps one"
    return (
        f"trial {source.number}{via} kept no checkpoint on the server (launch the study with "
        "--set recipe.keep_checkpoint=true; a worker older than this version kept it on its "
        "own disk only: see the trial's `checkpoint` in optuna-dashboard)"
    )


def _default_out(study: str, number: int, rank: int | None) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study)[:100] or "study"
    return f"{safe}-trial{number}" + (f"-r{rank}" if rank is not None else "")


def adapter_at_rank(folder: Path, rank: int) -> None:
    """Rewrites the LoRA trainer's adapter in ``folder`` (peft's files and ``dylora.json``) as
    a plain peft LoRA adapter of rank ``rank``: the leading ``rank`` rows of every ``lora_A``
    and columns of every ``lora_B``, ``r`` = ``rank`` and ``lora_alpha`` kept, so that peft's
    scale α/r is the α/b the DyLoRA trainer applies at rank b; ``dylora.json`` goes (the folder
    no longer holds the r_max factors).

    Raises:
        CliError: ``folder`` holds no LoRA trainer's adapter, a rank above its r_max, or
            adapter settings peft would scale differently; or safetensors is missing.
    """
    config_file, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not (folder / DYLORA_FILE).is_file() or not config_file.is_file() or not weights.is_file():
        raise CliError(
            "--rank applies to a lora trainer's adapter; this checkpoint is a whole model "
            "(fetch it without --rank)"
        )
    config = json.loads(config_file.read_text())
    r_max = int(config["r"])
    if rank > r_max:
        raise CliError(f"--rank {rank} is above the adapter's r_max {r_max} (pass 1-{r_max})")
    if config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise CliError("this adapter sets use_rslora or per-module ranks: fetch it without --rank")
    try:
        from safetensors import safe_open
        from safetensors.numpy import save_file
    except ImportError as e:
        raise CliError(
            f"--rank needs the safetensors package ({e}; pip install 'archsearch[worker]')"
        ) from e
    with safe_open(str(weights), "np") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not iterable)
    for key, value in tensors.items():
        if ".lora_A." in key:
            tensors[key] = value[:rank].copy()
        elif ".lora_B." in key:
            tensors[key] = value[:, :rank].copy()
    staging = weights.with_name(f".{weights.name}.tmp")
    save_file(tensors, str(staging), metadata=metadata)
    os.replace(staging, weights)
    config["r"] = rank
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    (folder / DYLORA_FILE).unlink()


def _summary(out: Path, what: str, rank: int | None, folders: list[Path]) -> str:
    lines = [f"{what}: checkpoint in {out}" + (f", at rank {rank}" if rank else "")]
    for folder in folders:
        where = "" if folder == out else f"{folder.name}: "
        adapter = (folder / ADAPTER_CONFIG).is_file()
        note_file = folder / NOTE_FILE
        if note_file.is_file():
            note = json.loads(note_file.read_text())
            if note.get("value") is not None:
                task = f"{note['task']} " if "task" in note else ""
                lines.append(
                    f"  {where}weights of step {note['step']}, the best {task}dev {note['metric']} "
                    f"{note['value']:.4g}{' at r_max' if adapter else ''}; the trial's scores "
                    "are its final step's"
                )
        if adapter:
            base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
            kind = f"a rank-{rank} LoRA adapter" if rank else "a DyLoRA adapter at r_max"
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
                f"  {where}a transformers classifier: load it with "
                "AutoModelForSequenceClassification.from_pretrained(folder)"
            )
    return "\n".join(lines)
