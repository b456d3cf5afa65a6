"""Which archsearch code a process runs: a digest of its source, beside the package version.

Every build called itself "0.1.0" (the package version never changed), so trials trained by an
old worker and a new one read the same, and a fleet that mixed versions could not be told
apart: an old worker took a new study's candidates it could not read and failed them for good.
The digest is the sha256 of archsearch's own Python and protocol files (its packages, found
where they are imported from: a checkout, an editable install or site-packages alike), so two
processes running the same code agree whatever the install, and any change differs.

The worker sends it when it registers (``WorkerCapabilities.source``); the server sends its own
back (``RegisterWorkerResponse.server_source``), and both say when they differ.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

from archsearch.server import __version__

#: archsearch's packages (the ``v1`` protocol stubs included).
PACKAGES = ("fleet", "search", "server", "spaces", "surrogates", "worker", "v1")


@functools.cache
def source_digest() -> str:
    """12 hex digits of the sha256 of every ``.py`` and ``.proto`` file of :data:`PACKAGES`,
    by path relative to its package (hidden and unreadable files left out: a stray one made
    every worker fail to register); "" when none is found. Computed once per process."""
    digest = hashlib.sha256()
    found = False
    for name in PACKAGES:
        spec = importlib.util.find_spec(f"archsearch.{name}")
        locations = list(spec.submodule_search_locations or []) if spec else []
        for location in locations:
            root = Path(location).resolve()
            files = [*root.rglob("*.py"), *root.rglob("*.proto")]
            for path in sorted(p for p in files if _counted(p.relative_to(root))):
                try:  # an editor's lock file is a dangling link; a file may be unreadable
                    text = path.read_bytes()
                except OSError:
                    continue
                digest.update(f"{name}/{path.relative_to(root).as_posix()}\0".encode())
                digest.update(text)
                found = True
    return digest.hexdigest()[:12] if found else ""


def _counted(relative: Path) -> bool:
    """Whether a file is archsearch's source: not a cache, not a hidden file (an editor's
    ``.#name.py`` lock or backup)."""
    return not any(part == "__pycache__" or part.startswith(".") for part in relative.parts)


def code_label() -> str:
    """The package version and the source digest: ``0.1.0+src.1a2b3c4d5e6f``."""
    digest = source_digest()
    return f"{__version__}+src.{digest}" if digest else __version__


def mismatch(mine: str, theirs: str, who: str) -> str:
    """One line when ``theirs`` (another process's :func:`code_label`) is not ``mine``, naming
    ``who`` it is; "" when they agree. An empty ``theirs`` is a version from before labels."""
    if theirs == mine:
        return ""
    said = theirs or "an archsearch from before code labels (2026-12-07)"
    return (
        f"{who} runs other archsearch code ({said}) than this process ({mine}): candidates "
        "one writes may train differently, or fail, on the other; run the same archsearch "
        "on the server and every worker"
    )
