"""Architecture pictures as optuna-dashboard artifacts.

With ``archsearch serve --artifact-dir DIR`` every trial of a space that draws its graphs
(a ``GraphImageSpace``: the FlexiBERT spaces) gets a PNG of its architecture graph, stored in an
Optuna ``FileSystemArtifactStore`` at ``DIR`` and listed on the trial the way
``optuna.artifacts.upload_artifact`` lists it, so ``optuna-dashboard STORAGE --artifact-dir
DIR`` shows it on the trial's page (the compact description is the ``arch`` user attribute).

Drawing takes tens of milliseconds of matplotlib, so it happens on one background thread,
never on the acquire path. ``upload_artifact`` refuses finished trials (Optuna's
``check_trial_is_updatable``), and a fast worker can finish a trial before its picture is drawn,
so the artifact's attribute row is inserted directly through Optuna's own model: the row is
exactly what ``upload_artifact`` writes. A picture that fails to draw is logged and skipped; it
never affects the trial.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from optuna.storages import RDBStorage

from archsearch.server import _storage
from archsearch.spaces import GraphImageSpace

log = logging.getLogger(__name__)

#: Prefix Optuna uses for artifact attributes (its artifact upload module).
ARTIFACTS_ATTR_PREFIX = "artifacts:"


class GraphArtifacts:
    """Draws trial architectures and stores them as artifacts (see the module docstring).

    Args:
        root: The artifact folder (created when missing; not made again once serving: a
            vanished folder is said by uploads, ``_artifact_disk``, and its pictures skipped).
        rdb: The server's storage.
    """

    def __init__(self, root: str | Path, rdb: RDBStorage) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._store = FileSystemArtifactStore(str(self.root))
        self._rdb = rdb
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="artifacts")
        self._closed = threading.Event()

    def submit(self, space: Any, trial_id: int, number: int, architecture: dict[str, Any]) -> None:
        """Queues the picture of one trial's architecture (no-op for spaces without one)."""
        if not isinstance(space, GraphImageSpace) or self._closed.is_set():
            return
        self._pool.submit(self._upload, space.graph_image, trial_id, number, architecture)

    def _upload(self, draw: Any, trial_id: int, number: int, architecture: dict[str, Any]) -> None:
        try:
            png = draw(architecture)
            artifact_id = str(uuid.uuid4())
            self._store.write(artifact_id, io.BytesIO(png))
            meta = {
                "artifact_id": artifact_id,
                "filename": f"trial-{number}-architecture.png",
                "mimetype": "image/png",
                "encoding": None,
            }
            _storage.insert_trial_system_attr(
                self._rdb, trial_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(meta)
            )
        except OSError as e:  # the folder full, unwritable or gone: said by uploads too
            log.warning("architecture picture of trial %d not stored: %s", number, e)
        except Exception:  # a picture must never take the server down
            log.exception("could not store the architecture picture of trial %d", number)

    def close(self, wait: bool = True) -> None:
        """Stops accepting pictures; with ``wait``, finishes the queued ones."""
        self._closed.set()
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
