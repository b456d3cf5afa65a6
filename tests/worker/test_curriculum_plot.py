"""The curriculum picture (worker/_curriculum_plot.py): a valid PNG of a synthetic trace, and
its upload as a trial artifact only when a server is there."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from archsearch.spaces import validate_curriculum
from archsearch.worker._curriculum import Curriculum
from archsearch.worker._curriculum_plot import curriculum_png, upload_curriculum_plots
from archsearch.worker._difficulty import Difficulties
from archsearch.worker._trainer import TrainContext

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RECIPE = {"max_steps": 60, "batch_size": 10, "seed": 3}

PUDF_TRACE = [
    {"epoch": 0, "step": 0.0, "ability": -1.2, "bound": -1.2, "examples": 50},
    {"epoch": 1, "step": 5.0, "ability": -0.4, "bound": -0.4, "examples": 120},
    {"epoch": 2, "step": 17.0, "ability": -0.6, "bound": -0.3, "examples": 140},
    {"epoch": 3, "step": 31.0, "ability": 0.8, "bound": 0.8, "examples": 260},
]
COMPETENCY_TRACE = [
    {"epoch": 0, "step": 0.0, "competency": 0.1, "examples": 30},
    {"epoch": 1, "step": 3.0, "competency": 0.45, "examples": 135},
    {"epoch": 2, "step": 17.0, "competency": 0.8, "examples": 240},
    {"epoch": 3, "step": 41.0, "competency": 1.0, "examples": 300},
]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@pytest.mark.parametrize("trace, method", [(PUDF_TRACE, "pudf"), (COMPETENCY_TRACE, "competency")])
def test_a_synthetic_trace_draws_a_valid_png(
    trace: list[dict[str, float]], method: str, tmp_path: Path
) -> None:
    from matplotlib.image import imread

    png = curriculum_png(trace, method, total_items=300, last_step=60, title="rte: test")
    assert len(png) > 10_000  # axes, three series, labels: not a blank picture
    assert _png_size(png) == (640, 360)
    path = tmp_path / "curriculum.png"
    path.write_bytes(png)
    pixels = imread(str(path))  # matplotlib decodes it
    assert pixels.shape[:2] == (360, 640)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20  # drawn lines


def test_one_epoch_and_an_empty_trace() -> None:
    assert curriculum_png(PUDF_TRACE[:1], "pudf")[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="empty"):
        curriculum_png([], "pudf")


def _run_curriculum(method: str, epochs: int = 4) -> Curriculum:
    values = np.linspace(-2, 2, 200)
    options = validate_curriculum({"method": method, "min_examples": 20})
    curriculum = Curriculum(options, Difficulties(values, options["difficulty"]), RECIPE)
    curriculum.answer = lambda items: values[items] < 0.5
    for epoch in range(epochs):
        curriculum(epoch)
    return curriculum


class _Uploads:
    """A fake server: what ``TrainContext.upload`` would store."""

    def __init__(self, fail: bool = False) -> None:
        self.stored: dict[str, bytes] = {}
        self.fail = fail

    def context(self) -> TrainContext:
        return TrainContext(upload=self.upload, download=lambda *a: None, study_name="s")

    def upload(self, path: Path, name: str) -> str:
        if self.fail:
            raise OSError("disk full")
        self.stored[name] = path.read_bytes()
        return f"id-{name}"


def test_uploaded_with_a_server_and_named_in_the_info() -> None:
    uploads = _Uploads()
    info = upload_curriculum_plots(uploads.context(), {"rte": _run_curriculum("pudf")}, 60)
    assert info == {"curriculum_plot": "curriculum.png"}
    assert uploads.stored["curriculum.png"][:8] == PNG_SIGNATURE


def test_a_multi_task_trial_uploads_one_picture_per_curriculum() -> None:
    uploads = _Uploads()
    curricula: dict[str, Curriculum | None] = {
        "rte": _run_curriculum("pudf"),
        "my task": _run_curriculum("competency"),
        "wnli": None,  # no curriculum on this task
    }
    info = upload_curriculum_plots(uploads.context(), curricula)
    assert info == {
        "rte.curriculum_plot": "curriculum-rte.png",
        "my task.curriculum_plot": "curriculum-my_task.png",
    }
    assert sorted(uploads.stored) == ["curriculum-my_task.png", "curriculum-rte.png"]


def test_nothing_without_a_server_or_a_curriculum(monkeypatch: pytest.MonkeyPatch) -> None:
    import archsearch.worker._curriculum_plot as plot

    def never(*args: Any, **kw: Any) -> bytes:
        raise AssertionError("drew a picture nobody can see")

    monkeypatch.setattr(plot, "curriculum_png", never)
    assert upload_curriculum_plots(TrainContext(), {"rte": _run_curriculum("pudf")}) == {}
    assert upload_curriculum_plots(_Uploads().context(), {"rte": None}) == {}
    assert upload_curriculum_plots(_Uploads().context(), {"rte": _run_curriculum("pudf", 0)}) == {}


def test_a_refused_upload_is_recorded_not_raised() -> None:
    info = upload_curriculum_plots(_Uploads(fail=True).context(), {"rte": _run_curriculum("pudf")})
    assert info == {"curriculum_plot_error": "disk full"}


def test_a_worker_without_matplotlib_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import archsearch.worker._curriculum_plot as plot

    def missing(*args: Any, **kw: Any) -> bytes:
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(plot, "curriculum_png", missing)
    uploads = _Uploads()
    info = upload_curriculum_plots(uploads.context(), {"rte": _run_curriculum("pudf")})
    assert info["curriculum_plot_error"].startswith("matplotlib is missing on this worker")
    assert uploads.stored == {}
