"""The fleet file: what ``fleet status`` and ``fleet stop`` need to find a fleet again.

One JSON file, ``<folder>/fleet.json``, next to submitit's job files: the backend, where it
runs (SLURM or local cluster; Ray address and namespace), and every submission's job ids or
actor names. Written atomically; each new submission is appended, so one folder can hold a
fleet grown by several ``fleet slurm`` calls.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

FILE_NAME = "fleet.json"


class FleetFileError(Exception):
    """No fleet file, or one this version cannot read."""


def fleet_file(folder: Path) -> Path:
    return folder / FILE_NAME


def load(folder: Path) -> dict[str, Any]:
    path = fleet_file(folder)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FleetFileError(
            f"no fleet in {folder} ({FILE_NAME} is missing); pass the --folder the fleet was "
            "started with"
        ) from None
    except (OSError, ValueError) as e:
        raise FleetFileError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict) or data.get("backend") not in ("slurm", "ray"):
        raise FleetFileError(f"{path} is not an archsearch fleet file")
    needed = ("server", "cluster") if data["backend"] == "slurm" else ("server", "address")
    if lacking := [k for k in (*needed, "submissions") if k not in data]:
        raise FleetFileError(
            f"{path} lacks {', '.join(lacking)} (edited by hand?); restore it, or start the "
            "fleet again in another --folder"
        )
    return data


def check(folder: Path, backend: str, where: dict[str, Any]) -> dict[str, Any]:
    """The folder's fleet so far (empty if new); refuses one of another backend or place.

    Called before submitting, so a wrong ``--folder`` starts no worker.
    """
    if not fleet_file(folder).exists():
        return {"backend": backend, **where, "submissions": []}
    old = load(folder)
    if old["backend"] != backend or any(old.get(k) != v for k, v in where.items()):
        raise FleetFileError(
            f"{folder} already holds a {old['backend']} fleet for another cluster or server; "
            "pass another --folder"
        )
    return old


def record(folder: Path, backend: str, where: dict[str, Any], members: list[str]) -> Path:
    """Appends one submission (job ids or actor names) to the folder's fleet file."""
    data = check(folder, backend, where)
    folder.mkdir(parents=True, exist_ok=True)
    path = fleet_file(folder)
    data["submissions"].append(
        {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "members": list(members)}
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def members(data: dict[str, Any]) -> list[str]:
    return [m for s in data.get("submissions", []) for m in s.get("members", [])]
