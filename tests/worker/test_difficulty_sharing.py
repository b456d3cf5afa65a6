"""IRT difficulties shared by a study's trials through artifacts (``worker/_difficulty_sharing``),
against a fake server: a study's artifact found is downloaded and no crowd is fitted; none
found, the crowd is fitted and uploaded; any failure of the server is a warning, and the trial
fits the crowd itself."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from _fake_artifacts import OPTIONS, FakeServer, separable_task

from archsearch.server.client import ClientError
from archsearch.worker import _difficulty
from archsearch.worker._difficulty_sharing import (
    SOURCE_KEY,
    artifact_name,
    shared_item_difficulties,
)
from archsearch.worker._trainer import TrainContext


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the crowd fits (each one a call of ``crowd_responses``)."""
    counted: list[int] = []
    real = _difficulty.crowd_responses

    def counting(*args: Any, **kw: Any) -> np.ndarray:
        counted.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(_difficulty, "crowd_responses", counting)
    return counted


def _difficulties(context: TrainContext | None, cache: Path) -> Any:
    texts, labels = separable_task()
    return shared_item_difficulties(
        texts, labels, OPTIONS, task="t", context=context, cache_dir=cache
    )


def test_missing_then_fitted_and_uploaded_then_downloaded_on_another_machine(
    tmp_path: Path, fits: list[int]
) -> None:
    server = FakeServer()
    first = _difficulties(server.context(0), tmp_path / "a")
    assert first.info()[SOURCE_KEY] == "fitted" and len(fits) == 1
    name = artifact_name(first.key)
    assert name == f"difficulties-{first.key}.npz"
    assert server.calls == ["find", "upload"]
    assert server.files[0, name] == (tmp_path / "a" / f"{first.key}.npz").read_bytes()
    # another machine (another cache folder): downloads trial 0's, fits nothing
    server.calls.clear()
    second = _difficulties(server.context(5), tmp_path / "b")
    assert len(fits) == 1 and server.calls == ["find", "download"]
    assert second.cached and second.seconds == 0
    info = second.info()
    assert info[SOURCE_KEY] == "trial:0" and "curriculum_share_error" not in info
    np.testing.assert_array_equal(second.values, first.values)
    assert second.crowd_accuracy == first.crowd_accuracy
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]  # no staging
    # the same machine again: its own cache, nothing moved
    server.calls.clear()
    third = _difficulties(server.context(6), tmp_path / "b")
    assert third.info()[SOURCE_KEY] == "local cache" and server.calls == ["find"]
    assert len(fits) == 1


def test_a_local_cache_the_study_lacks_is_uploaded(tmp_path: Path, fits: list[int]) -> None:
    alone = _difficulties(None, tmp_path)  # no server: the plain local cache
    assert alone.info()[SOURCE_KEY] == "fitted" and len(fits) == 1
    server = FakeServer()
    shared = _difficulties(server.context(2), tmp_path)
    assert shared.info()[SOURCE_KEY] == "local cache" and len(fits) == 1
    assert server.calls == ["find", "upload"] and (2, artifact_name(shared.key)) in server.files
    # without a server: no lookup, no source beyond the cache
    assert _difficulties(TrainContext(), tmp_path).info()[SOURCE_KEY] == "local cache"


@pytest.mark.parametrize(
    "failing, expected_calls",
    [
        ("find", ["find", "upload"]),  # the lookup failed: still offers its fit
        ("upload", ["find", "upload"]),
    ],
)
def test_a_failing_server_is_a_warning_and_the_crowd_is_fitted(
    failing: str,
    expected_calls: list[str],
    tmp_path: Path,
    fits: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeServer()
    server.fail[failing] = ClientError(grpc.StatusCode.UNAVAILABLE, "server down", "X")
    with caplog.at_level(logging.WARNING, logger="archsearch.worker.curriculum"):
        got = _difficulties(server.context(1), tmp_path)
    assert len(fits) == 1 and server.calls == expected_calls
    info = got.info()
    assert info[SOURCE_KEY] == "fitted" and "server down" in info["curriculum_share_error"]
    assert "not shared" in caplog.text and "server down" in caplog.text


@pytest.mark.parametrize("broken", ["download", "bytes", "length"])
def test_a_bad_download_falls_back_to_a_local_fit(
    broken: str, tmp_path: Path, fits: list[int]
) -> None:
    server = FakeServer()
    good = _difficulties(server.context(0), tmp_path / "a")
    name = artifact_name(good.key)
    if broken == "download":
        server.fail["download"] = ClientError(grpc.StatusCode.DATA_LOSS, "sha256 differs", "D")
    elif broken == "bytes":
        server.files[0, name] = b"not an npz"
    else:  # a file of the same key holding another number of items
        short = tmp_path / "short.npz"
        np.savez(short, difficulty=np.zeros(3), accuracy=0.5)
        server.files[0, name] = short.read_bytes()
    server.calls.clear()
    got = _difficulties(server.context(1), tmp_path / "b")
    assert len(fits) == 2 and server.calls == ["find", "download"]  # no upload: trial 0 has it
    info = got.info()
    assert info[SOURCE_KEY] == "fitted" and "trial 0" in info["curriculum_share_error"]
    np.testing.assert_array_equal(got.values, good.values)
    assert [p.name for p in (tmp_path / "b").iterdir()] == [f"{good.key}.npz"]


def test_a_context_without_lookup_still_trains(tmp_path: Path, fits: list[int]) -> None:
    """A context with upload and download but no ``find`` (a trainer's own test harness):
    a warning, a fit, and the fit offered to the study."""
    uploaded: list[str] = []

    def upload(path: Path, name: str) -> str:
        uploaded.append(name)
        return "id"

    context = TrainContext(upload=upload, download=lambda *a: None, study_name="s")
    got = _difficulties(context, tmp_path)
    assert got.info()[SOURCE_KEY] == "fitted" and uploaded == [artifact_name(got.key)]
    assert "RuntimeError" in got.info()["curriculum_share_error"]


def test_heuristic_difficulties_are_never_shared(tmp_path: Path) -> None:
    server = FakeServer()
    texts, labels = separable_task()
    got = shared_item_difficulties(
        texts, labels, {"difficulty": "length"}, task="t", context=server.context(0)
    )
    assert server.calls == [] and SOURCE_KEY not in got.info()
    assert got.info() == {"curriculum_difficulty": "length"}
