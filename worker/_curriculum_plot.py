"""The curriculum of a trial as a picture on its optuna-dashboard page.

A study's intermediate values stay its objective's (Optuna keeps one series per trial, and the
pruners read it: :mod:`~archsearch.worker._curriculum`), so the curriculum is shown as an
artifact instead. After a curriculum run on a worker connected to a server, the trainer
uploads ``curriculum.png`` (:func:`upload_curriculum_plots`) through the same path as
checkpoints (``TrainContext.upload``: the server stores it with
``optuna.artifacts.upload_artifact``, mimetype ``image/png``), so optuna-dashboard lists it
under the trial's artifacts with an image preview; the trial's info ``curriculum_plot`` names
it. The picture, per epoch against the optimiser steps taken before it: the ability θ̂ and
the DDS-MAE bound (``pudf``) or the competency c(t) (``competency``) on the left axis, the
selected-set size on the right one, as stored in :attr:`Curriculum.trace
<archsearch.worker._curriculum.Curriculum.trace>`.

A trainer run without a server uploads nothing and draws nothing. matplotlib (the ``server``
extra; imported only here, only when drawing) missing, a drawing failure or a refused upload
never fails the trial: it is logged and recorded as ``curriculum_plot_error``.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsearch.worker._trainer import TrainContext

if TYPE_CHECKING:
    from archsearch.worker._curriculum import Curriculum

__all__ = ["INFO_KEY", "PLOT_NAME", "curriculum_png", "upload_curriculum_plots"]

log = logging.getLogger("archsearch.worker.curriculum")

#: The artifact's name (single-task trials; ``curriculum-<task>.png`` per task otherwise).
PLOT_NAME = "curriculum.png"
#: ``info`` key naming the uploaded picture (``<task>.curriculum_plot`` per task otherwise).
INFO_KEY = "curriculum_plot"
#: ``info`` key saying why no picture was uploaded although a server was there.
ERROR_KEY = "curriculum_plot_error"

_BLUE, _GREEN, _ORANGE, _GREY = "#1f5fa8", "#2a8a3e", "#d9781e", "#888888"


def curriculum_png(
    trace: Sequence[Mapping[str, float]],
    method: str,
    *,
    total_items: int | None = None,
    last_step: float | None = None,
    title: str = "",
    dpi: int = 100,
) -> bytes:
    """The PNG of a curriculum's per-epoch ``trace`` (see the module docstring).

    Args:
        trace: One entry per epoch: ``step``, ``examples`` and ``ability`` and ``bound``
            (``pudf``) or ``competency``.
        method: ``pudf`` or ``competency`` (which of the left axis' series to draw).
        total_items: The training items the curriculum chooses from (a dotted line on the
            right axis; for pudf, those not held out); None: not drawn.
        last_step: Where the last epoch's set ends on the step axis (the run's steps); None:
            one epoch-length past its start.
        title: The caption.
        dpi: The resolution.

    Raises:
        ValueError: An empty trace.
        ImportError: matplotlib is not installed.
    """
    if not trace:
        raise ValueError("an empty curriculum trace has nothing to draw")
    # The object-oriented API on an explicit Agg canvas: no pyplot state, safe on any thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [float(e["step"]) for e in trace]
    sizes = [float(e["examples"]) for e in trace]
    width = max(steps[-1] - steps[-2], 1.0) if len(steps) > 1 else 1.0
    end = last_step if last_step is not None and last_step > steps[-1] else steps[-1] + width
    edges = [*steps, end]  # each epoch's set holds from its start to the next epoch's

    fig = Figure(figsize=(6.4, 3.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sets = ax.twinx()
    handles: list[Any] = []
    if method == "pudf":
        ability = [float(e["ability"]) for e in trace]
        bound = [float(e["bound"]) for e in trace]
        handles += ax.plot(steps, ability, "o-", color=_BLUE, ms=4, lw=1.2, label="ability θ̂")
        handles += ax.step(
            edges,
            [*bound, bound[-1]],
            where="post",
            color=_BLUE,
            ls="--",
            lw=1.2,
            label="difficulty bound",
        )
        ax.set_ylabel("ability / bound (IRT difficulty scale)")
    else:
        share = [float(e["competency"]) for e in trace]
        handles += ax.step(
            edges, [*share, share[-1]], where="post", color=_GREEN, lw=1.5, label="competency c(t)"
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("competency (share of easiest items)")
    # the selected set as a shaded area behind the left axis' lines (which are drawn on top)
    handles.append(
        sets.fill_between(
            edges,
            [*sizes, sizes[-1]],
            step="post",
            color=_ORANGE,
            alpha=0.3,
            lw=1.2,
            edgecolor=_ORANGE,
            label="selected items",
        )
    )
    ax.set_zorder(sets.get_zorder() + 1)
    ax.patch.set_visible(False)
    if total_items:
        handles.append(
            sets.axhline(total_items, color=_GREY, ls=":", lw=1, label="all training items")
        )
    sets.set_ylim(0, 1.05 * max([*sizes, float(total_items or 0)]))
    sets.set_ylabel("items this epoch")
    ax.set_xlabel("optimiser steps")
    ax.set_xlim(edges[0], edges[-1])
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.85)
    ax.set_title(title or f"curriculum: {method} ({len(trace)} epochs)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def upload_curriculum_plots(
    context: TrainContext,
    curricula: Mapping[str, Curriculum | None],
    last_step: float | None = None,
) -> dict[str, str]:
    """Draws and uploads each task's curriculum as an artifact of this trial; the ``info`` to
    add: ``curriculum_plot`` (the artifact's name; ``<task>.curriculum_plot`` for each task
    of a multi-task trial), or ``curriculum_plot_error``. Empty without a server or without
    a curriculum (see the module docstring).

    Args:
        context: The trial's context (its ``upload``).
        curricula: Task id -> its curriculum (None: the task had none).
        last_step: The run's optimiser steps (where the last epoch ends on the step axis).
    """
    ran = {task: c for task, c in curricula.items() if c is not None and c.trace}
    if not ran or not context.has_server:
        return {}
    from archsearch.server.client import ClientError

    several = len(curricula) > 1
    info: dict[str, str] = {}
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="curriculum-plot-") as tmp:
        for task, curriculum in ran.items():
            name = f"curriculum-{_safe(task)}.png" if several else PLOT_NAME
            title = (
                f"{task}: {curriculum.method} curriculum "
                f"({curriculum.scheduler}, {curriculum.difficulties.kind} difficulty)"
            )
            try:
                png = curriculum_png(
                    curriculum.trace,
                    curriculum.method,
                    total_items=len(curriculum.train_indices),
                    last_step=last_step,
                    title=title,
                )
                path = Path(tmp) / name
                path.write_bytes(png)
                context.upload(path, name)
            except (ClientError, OSError, ImportError, ValueError) as e:
                why = str(e)
                if isinstance(e, ImportError):  # the worker extra does not pull matplotlib
                    why = f"matplotlib is missing on this worker (pip install matplotlib): {e}"
                log.warning("curriculum plot of %s not uploaded: %s", task, why)
                errors.append(f"{task}: {why}" if several else why)
                continue
            info[f"{task}.{INFO_KEY}" if several else INFO_KEY] = name
    if errors:
        info[ERROR_KEY] = "; ".join(errors)[:500]
    return info


def _safe(task: str) -> str:
    """An artifact-name fragment of a task id (names are ``[A-Za-z0-9._-]``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", task)[:80] or "_"
