"""A trial's kept checkpoint, downloaded from the server (``archsearch fetch``, or in Python).

A trial that kept its checkpoint (``recipe.keep_checkpoint``) uploaded its folder's files
(``spaces/_checkpoint_names.py``); :func:`fetch_checkpoint` downloads them into a new folder,
one subfolder per task for a multi-task trial. For a DyLoRA rank trial (``rank b of #N`` in
``show``), or with ``rank`` on a LoRA trainer's training trial, it downloads the training
trial's adapter and writes it as a plain peft LoRA adapter of that rank
(:func:`adapter_at_rank`), which ``PeftModel.from_pretrained`` loads without archsearch::

    from archsearch.server.fetch import fetch_checkpoint

    got = fetch_checkpoint("127.0.0.1:50051", "dylora", 12)   # token=..., tls_ca=...
    print(got.out, got.rank)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from archsearch.server import _client_args as args
from archsearch.server._fetch_reasons import no_files, nothing_kept
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


class FetchError(ValueError):
    """What stops a fetch, in words that say what to do (nothing was written)."""


class NoSuchTrial(FetchError):
    """No such study, trial or file of the trial (the CLI exits 4, as for any missing
    study)."""


class BadFetchRequest(FetchError):
    """The request itself cannot be met as given: an ``out`` that exists or cannot be made, a
    ``rank`` that does not apply (the CLI exits 2, as for any bad input)."""


@dataclasses.dataclass(frozen=True)
class Fetched:
    """What :func:`fetch_checkpoint` wrote.

    Attributes:
        out: The new folder.
        trial: The trial asked for.
        source: The trial whose checkpoint it is (a rank trial's training trial).
        rank: The LoRA rank the adapter was cut to; None when not cut.
        folders: The checkpoint folders in ``out``: ``out`` itself, or one per task.
    """

    out: Path
    trial: int
    source: int
    rank: int | None
    folders: tuple[Path, ...]


def fetch_checkpoint(
    server: str,
    study: str,
    trial: int,
    out: str | Path | None = None,
    *,
    rank: int | None = None,
    token: str | None = None,
    tls_ca: str | None = None,
    tls: bool = False,
) -> Fetched:
    """Downloads trial ``trial``'s kept checkpoint into the new folder ``out`` (default
    ``STUDY-trialN``, with ``-rB`` for ``rank`` on a training trial).

    Raises:
        FetchError: No such study or trial (:class:`NoSuchTrial`), one that kept nothing
            or has not completed, an ``out`` that exists or cannot be written, a rank that
            does not apply.
        ClientError: The server refused or cannot be reached.
        TypeError, ValueError: ``trial`` not an int >= 0, ``rank`` not an int >= 1.
    """
    from archsearch.server._trial_notes import rank_trials_of
    from archsearch.server.client import SearchClient, WorkerClient

    trial = args.whole(trial, "trial")
    if rank is not None:
        rank = args.whole(rank, "rank", 1)
    with (
        _not_found_is_no_such_trial(),
        SearchClient(server, token=token, tls_ca=tls_ca, tls=tls) as client,
    ):
        trials = {t.number: t for t in client.list_trials(study)}
    if trial not in trials:
        span = f"numbered 0-{max(trials)}" if trials else "none yet"
        raise NoSuchTrial(f"study {study!r} has no trial {trial} (its trials: {span})")
    source = trials[trial]
    of_rank = rank_trials_of(list(trials.values())).get(trial)
    if of_rank is not None:  # a rank trial holds no weights: its training trial does
        source = of_rank[1]
        if rank is not None and rank != of_rank[0]:
            raise BadFetchRequest(
                f"--rank {rank}: trial {trial} is rank {of_rank[0]} of #{source.number} "
                f"(fetch #{source.number} --rank {rank}, or leave --rank out)"
            )
        rank = of_rank[0]
    out = Path(out or _default_out(study, trial, None if of_rank else rank))
    _check_out(out)
    with WorkerClient(server, token=token, tls_ca=tls_ca, tls=tls) as worker_client:
        names = [a.name for a in worker_client.list_artifacts(study, source.number)]
        files = {n: p for n in names if (p := parse_checkpoint_artifact(n)) is not None}
        if source.state != pb.COMPLETE or not files:  # a running trial may be uploading
            others = [n for n in names if n not in files]
            raise FetchError(nothing_kept(source, trial, list(trials.values()), others))
        with _staged(out) as staging:
            for name, (task, file) in sorted(files.items()):
                folder = staging / task if task else staging
                folder.mkdir(parents=True, exist_ok=True)
                worker_client.download_artifact(study, source.number, name, folder / file)
            folders = sorted({staging / t if t else staging for t, _ in files.values()})
            for folder in folders:
                _check_whole(folder, source.number)
                if rank is not None:
                    adapter_at_rank(folder, rank)
    shown = tuple(out / f.relative_to(staging) for f in folders)
    return Fetched(out, trial, source.number, rank, shown)


def fetch_files(
    server: str,
    study: str,
    trial: int,
    names: list[str] | None = None,
    out: str | Path | None = None,
    *,
    token: str | None = None,
    tls_ca: str | None = None,
    tls: bool = False,
) -> tuple[Path, list[str]]:
    """Downloads the artifacts ``names`` of trial ``trial`` (None: every one, a trainer of
    your own's files too) into the new folder ``out`` (default ``STUDY-trialN``), each under
    its name, sha256 checked; returns the folder and the names written.

    Raises:
        FetchError: No such study, trial or artifact (:class:`NoSuchTrial` for the first
            two), nothing to fetch, an ``out`` that exists or cannot be written (nothing was
            written).
        ClientError: The server refused or cannot be reached.
    """
    from archsearch.server.client import WorkerClient

    trial = args.whole(trial, "trial")
    if isinstance(names, str):  # iterating it would ask for each of its characters
        raise TypeError(f"names must be a list of artifact names, got the str {names!r}")
    with _not_found_is_no_such_trial():
        held = trial_files(server, study, trial, token=token, tls_ca=tls_ca, tls=tls)
    if not held:
        raise FetchError(no_files(server, study, trial, token=token, tls_ca=tls_ca, tls=tls))
    missing = [n for n in names or () if n not in held]
    if missing:
        raise NoSuchTrial(
            f"trial {trial} holds no file {missing[0]!r} (it holds: {', '.join(sorted(held))})"
        )
    wanted = sorted(set(names or held))
    out = Path(out or _default_out(study, trial, None))
    _check_out(out)
    with (
        _staged(out) as staging,
        WorkerClient(server, token=token, tls_ca=tls_ca, tls=tls) as client,
    ):
        for name in wanted:
            client.download_artifact(study, trial, name, staging / name)
    return out, wanted


@contextlib.contextmanager
def _not_found_is_no_such_trial() -> Iterator[None]:
    """The server's NOT_FOUND (no such study or trial) as :class:`NoSuchTrial`, a
    :class:`FetchError` like every other reason a fetch cannot be made."""
    import grpc

    from archsearch.server.client import ClientError

    try:
        yield
    except ClientError as e:
        if e.code == grpc.StatusCode.NOT_FOUND:
            raise NoSuchTrial(e.details) from None
        raise


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A staging folder beside ``out``, renamed to ``out`` when the block ends well and
    removed whatever happens: nothing half-written is ever at ``out``.

    Raises:
        FetchError: a folder that cannot be written (the reason and the fix).
    """
    staging = out.with_name(f".{out.name}.part-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except OSError as e:
        raise FetchError(
            f"cannot write {out}: {e.strerror or e} (pass --out a folder you can create)"
        ) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def trial_files(
    server: str,
    study: str,
    trial: int,
    *,
    token: str | None = None,
    tls_ca: str | None = None,
    tls: bool = False,
) -> dict[str, int]:
    """The files (artifacts) trial ``trial`` holds on the server: name to size in bytes.

    Raises:
        ClientError: No such study or trial (NOT_FOUND), or the server cannot be reached.
    """
    from archsearch.server.client import WorkerClient

    with WorkerClient(server, token=token, tls_ca=tls_ca, tls=tls) as client:
        return {a.name: a.size_bytes for a in client.list_artifacts(study, trial)}


def _check_out(out: Path) -> None:
    """Refuses an ``--out`` that would overwrite something or cannot be created."""
    if out.exists() and not out.is_dir():
        raise BadFetchRequest(f"{out} is a file, not a folder (pass --out NEW_FOLDER)")
    if out.exists() and any(out.iterdir()):
        raise BadFetchRequest(
            f"{out} exists and is not empty (pass --out NEW_FOLDER, or remove it)"
        )
    parent = out.absolute().parent
    if not parent.is_dir():
        raise BadFetchRequest(f"cannot write {out}: {parent} is not a folder (create it first)")


#: Files of a checkpoint archsearch's own trainers keep (a plugin's may hold none of them).
_MODEL_FILES = (NOTE_FILE, DYLORA_FILE, ADAPTER_CONFIG, "config.json", FLEXIBERT_CONFIG_FILE)


def _check_whole(folder: Path, number: int) -> None:
    """Refuses a downloaded model checkpoint without its weights (an upload refused
    part-way); a plugin trainer's own files (no model description) are taken as they are."""
    if not any((folder / f).is_file() for f in _MODEL_FILES):
        return
    if not any((folder / w).is_file() for w in WEIGHTS_FILES):
        raise FetchError(
            f"trial {number}'s checkpoint on the server lacks its weights (one of "
            f"{list(WEIGHTS_FILES)}): its upload stopped part-way (see the trial's "
            "checkpoint_upload_error in optuna-dashboard); nothing was written (a trainer of "
            "your own that keeps other files: fetch them with --all)"
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
        FetchError: ``folder`` holds no LoRA trainer's adapter, a rank above its r_max, or
            adapter settings peft would scale differently; or safetensors is missing.
    """
    config_file, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not (folder / DYLORA_FILE).is_file() or not config_file.is_file() or not weights.is_file():
        raise BadFetchRequest(
            "--rank applies to a lora trainer's adapter; this checkpoint is a whole model "
            "(fetch it without --rank)"
        )
    config = json.loads(config_file.read_text())
    r_max = int(config["r"])
    scored = _scored_ranks(folder / DYLORA_FILE, r_max)
    if rank <= r_max and rank not in scored:
        raise BadFetchRequest(
            f"--rank {rank} was never trained or scored: this adapter is plain LoRA trained at "
            f"r_max {r_max}, scored at rank(s) {scored} (launch with recipe.lora.eval_ranks to "
            "score its truncations, or use mode dylora)"
        )
    if rank > r_max:
        raise BadFetchRequest(
            f"--rank {rank} is above the adapter's r_max {r_max} (pass 1-{r_max})"
        )
    if config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise FetchError(
            "this adapter sets use_rslora or per-module ranks: fetch it without --rank"
        )
    try:
        from safetensors import safe_open
        from safetensors.numpy import save_file
    except ImportError as e:
        raise FetchError(
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


def _scored_ranks(settings: Path, r_max: int) -> list[int]:
    """The ranks a lora trial scored: every rank for DyLoRA (each was trained), those of
    ``eval_ranks`` for plain LoRA (default: r_max alone)."""
    spec = json.loads(settings.read_text()).get("spec", {})
    if spec.get("mode", "dylora") == "dylora":
        return list(range(1, r_max + 1))
    return sorted(int(b) for b in spec.get("eval_ranks") or [r_max])
