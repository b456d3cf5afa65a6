"""A fake server for one study's artifacts, and a tiny separable task, shared by the tests of
difficulties shared through artifacts and of the study's trials as crowd subjects."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from archsearch.server.client import ClientError
from archsearch.worker._trainer import TrainContext

#: A two-subject TF-IDF crowd on two folds: fast enough for every test.
OPTIONS = {"difficulty": "irt", "crowd": ["tfidf-lr:0.3", "tfidf-lr:3:0.5"], "folds": 2}


def separable_task(n: int = 40) -> tuple[list[str], list[int]]:
    """``n`` texts whose words give away their label, and the labels."""
    rng = np.random.default_rng(0)
    labels = [int(i % 2) for i in range(n)]
    words = (["dull", "bad", "awful"], ["great", "fine", "superb"])
    texts = [" ".join(rng.choice(words[y], 4)) + f" item{i}" for i, y in enumerate(labels)]
    return texts, labels


class FakeServer:
    """The artifacts of study ``"s"``, ``(trial, name) -> bytes``; ``fail`` names the calls
    that raise the error given; ``calls`` records every call."""

    def __init__(self) -> None:
        self.files: dict[tuple[int, str], bytes] = {}
        self.fail: dict[str, Exception] = {}
        self.calls: list[str] = []

    def context(
        self,
        trial: int,
        should_stop: Callable[[], bool] | None = None,
        report: Callable[[int, float], bool] | None = None,
    ) -> TrainContext:
        """The TrainContext of trial ``trial`` of the study (``should_stop`` and ``report`` as
        TrainContext's)."""

        def upload(path: Path, name: str) -> str:
            self._call("upload")
            self.files[trial, name] = Path(path).read_bytes()
            return "id"

        def download(study: str, number: int, name: str, dest: Path) -> None:
            self._call("download")
            assert study == "s"
            if (number, name) not in self.files:
                raise ClientError(grpc.StatusCode.NOT_FOUND, "no such artifact", "Download")
            Path(dest).write_bytes(self.files[number, name])

        def find(study: str, name: str) -> int | None:
            self._call("find")
            assert study == "s"
            return min((n for n, m in self.files if m == name), default=None)

        def holders(study: str, name: str, limit: int) -> list[tuple[int, str]]:
            self._call("holders")
            found = sorted(
                (n, hashlib.sha256(b).hexdigest()) for (n, m), b in self.files.items() if m == name
            )
            return found[:limit]

        return TrainContext(
            report=report,
            should_stop=should_stop,
            upload=upload,
            download=download,
            find=find,
            holders=holders,
            study_name="s",
            trial_number=trial,
        )

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if what in self.fail:
            raise self.fail[what]
