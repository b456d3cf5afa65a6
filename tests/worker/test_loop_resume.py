"""A TrainingLoop run that was stopped, or lost after a periodic save, continues where it was
and ends exactly where an uninterrupted run ends (weights, predictions, reports), on the 1 x 32
BERT with dropout, gradient accumulation and a stateful data schedule."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _loop_data import DEV, N_TRAIN, TASK, TRAIN, model, recipe

from archsearch.worker import CandidateError, TrainContext, TrialPruned, TrialStopped
from archsearch.worker._batches import epoch_batches
from archsearch.worker._loop import TrainingHooks, TrainingLoop, model_loss
from archsearch.worker._progress import ProgressFile

STEPS = dict(max_steps=8, eval_every=2, gradient_accumulation_steps=2, weight_decay=0.1)


class RandomHalves:
    """A data schedule with its own generator: each epoch, a random half of the examples."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(11)
        self.asked: list[int] = []

    def __call__(self, epoch: int) -> np.ndarray:
        self.asked.append(epoch)
        return np.sort(self.rng.permutation(N_TRAIN)[: N_TRAIN // 2])

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class Context(TrainContext):
    """Records reports; asks the trial to stop at its ``stop_at``-th check (0: never), or
    prunes at the report of step ``prune_at``."""

    def __init__(self, stop_at: int = 0, prune_at: int = 0) -> None:
        self.reports: list[tuple[int, float]] = []
        self.checks = 0

        def report(step: int, value: float) -> bool:
            self.reports.append((step, value))
            return step == prune_at

        def should_stop() -> bool:
            self.checks += 1
            return self.checks == stop_at

        super().__init__(report=report, should_stop=should_stop)


def run(
    folder: Path | None,
    context: TrainContext | None = None,
    schedule: RandomHalves | None = None,
    clock: Any = None,
    **changes: Any,
) -> TrainingLoop:
    progress = None
    if folder is not None:
        progress = ProgressFile(folder, 10.0, **({"clock": clock} if clock else {}))
    hooks = TrainingHooks(
        data_schedule=schedule, stateful=(schedule,) if schedule is not None else ()
    )
    loop = TrainingLoop(
        model(),
        TASK,
        recipe(**{**STEPS, **changes}),
        context or Context(),
        "accuracy",
        0,
        hooks=hooks,
        select_metric="accuracy",
        resume=progress,
    )
    loop.run(TRAIN, DEV)
    return loop


def ticking() -> Any:
    """A clock on which ten minutes pass between any two readings: a save after every step."""
    now = [0.0]

    def clock() -> float:
        now[0] += 1000.0
        return now[0]

    return clock


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# two checks a step (one per micro-batch) and one after each report (steps 2, 4, 6, 8):
# the 7th is inside step 3, the 9th inside step 4, the 10th right after step 4's report
@pytest.mark.parametrize("stop_at", [7, 9, 10])
def test_a_stopped_run_continues_to_exactly_the_uninterrupted_result(
    tmp_path: Path, stop_at: int
) -> None:
    whole = Context()
    uninterrupted = run(None, whole, RandomHalves())

    first = Context(stop_at=stop_at)
    with pytest.raises(TrialStopped):
        run(tmp_path, first, RandomHalves())
    assert (tmp_path / "progress.pt").exists()

    second, schedule = Context(), RandomHalves()
    resumed = run(tmp_path, second, schedule)
    assert resumed.resumed_from is not None and 0 < resumed.resumed_from < 8
    assert same_weights(resumed.model, uninterrupted.model)
    assert np.array_equal(resumed.predict(DEV), uninterrupted.predict(DEV))
    assert resumed.best_step == uninterrupted.best_step
    assert torch.equal(
        resumed.best_state["classifier.weight"],  # type: ignore[index]
        uninterrupted.best_state["classifier.weight"],  # type: ignore[index]
    )
    # the retry repeats the values reported before the stop, then reports the rest
    assert second.reports == whole.reports
    # the schedule was not asked again for the epochs drawn before the stop
    assert schedule.asked[0] > 0
    assert not (tmp_path / "progress.pt").exists()  # finished: cleared


def test_without_the_schedules_state_a_resumed_run_would_differ(tmp_path: Path) -> None:
    """The check above can fail: forgetting a stateful hook changes the result."""
    uninterrupted = run(None, Context(), RandomHalves())
    with pytest.raises(TrialStopped):
        run(tmp_path, Context(stop_at=5), RandomHalves())
    forgetful = RandomHalves()
    forgetful.load_state_dict = lambda state: None  # type: ignore[method-assign]
    resumed = run(tmp_path, Context(), forgetful)
    assert not same_weights(resumed.model, uninterrupted.model)


def test_a_lost_run_continues_from_its_last_periodic_save(tmp_path: Path) -> None:
    uninterrupted = run(None, Context())
    calls: list[int] = []

    def crash(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 11:  # the first micro-batch of step 6: the machine dies
            raise KeyboardInterrupt
        return model_loss(m, batch)

    progress = ProgressFile(tmp_path, 10.0, clock=ticking())
    lost = TrainingLoop(
        model(),
        TASK,
        recipe(**STEPS),
        Context(),
        "accuracy",
        0,
        hooks=TrainingHooks(loss_fn=crash),
        resume=progress,
    )
    with pytest.raises(KeyboardInterrupt):
        lost.run(TRAIN, DEV)
    assert ProgressFile(tmp_path)._read_note()["step"] == 5  # the last whole step saved

    resumed = run(tmp_path, Context(), clock=ticking())
    assert resumed.resumed_from == 5
    assert same_weights(resumed.model, uninterrupted.model)


def test_a_pruned_or_diverged_run_leaves_nothing_to_continue(tmp_path: Path) -> None:
    with pytest.raises(TrialPruned):
        run(tmp_path, Context(prune_at=4), clock=ticking())  # saved after every step
    assert not (tmp_path / "progress.pt").exists()

    def nan_loss(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model_loss(m, batch) * float("nan")

    with pytest.raises(TrialStopped):
        run(tmp_path, Context(stop_at=5))
    assert (tmp_path / "progress.pt").exists()
    loop = TrainingLoop(
        model(),
        TASK,
        recipe(**STEPS),
        Context(),
        "accuracy",
        0,
        hooks=TrainingHooks(loss_fn=nan_loss),
        resume=ProgressFile(tmp_path),
    )
    with pytest.raises(CandidateError, match="diverged"):
        loop.run(TRAIN, DEV)
    assert not (tmp_path / "progress.pt").exists()


def test_progress_of_another_run_is_ignored(tmp_path: Path, caplog) -> None:
    with pytest.raises(TrialStopped):
        run(tmp_path, Context(stop_at=5))
    fresh = run(None, Context(), max_steps=12)
    with caplog.at_level("WARNING", logger="archsearch.worker"):
        longer = run(tmp_path, Context(), max_steps=12)  # a 12-step run: starts over
    assert longer.resumed_from is None
    assert "ignoring the saved progress" in caplog.text
    assert same_weights(longer.model, fresh.model)


def test_epoch_batches_continue_from_their_saved_position() -> None:
    whole = epoch_batches(N_TRAIN, 5, 3, RandomHalves())
    expected = [next(whole) for _ in range(20)]
    first_schedule = RandomHalves()
    first = epoch_batches(N_TRAIN, 5, 3, first_schedule)
    for _ in range(9):  # 7 batches of epoch 0 (32 examples), 2 of epoch 1
        next(first)
    schedule = RandomHalves()
    schedule.load_state_dict(first_schedule.state_dict())
    later = epoch_batches(N_TRAIN, 5, 3, schedule)
    later.load_state_dict(first.state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(expected[9:], later, strict=False))
    assert schedule.asked[0] == 2  # epochs 0 and 1 (32 examples each) were not asked again
    with pytest.raises(ValueError, match="outside a split of 10"):
        epoch_batches(10, 5, 3).load_state_dict(first.state_dict())


def test_a_save_that_fails_is_logged_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    uninterrupted = run(None, Context())
    real_save = torch.save
    attempts: list[int] = []

    def full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        if len(attempts) > 2:  # the first two saves land, then the disk is full
            real_save(obj, f, *args, **kwargs)  # partly written, like a full disk
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with caplog.at_level("WARNING", logger="archsearch.worker"), pytest.raises(TrialStopped):
        run(tmp_path, Context(stop_at=13), clock=ticking())  # inside step 5
    assert "progress not saved" in caplog.text and "No space left" in caplog.text
    assert not list(tmp_path.glob(".*tmp*"))  # the partial file is removed
    assert ProgressFile(tmp_path)._read_note()["step"] == 2  # the last save that landed
    monkeypatch.setattr(torch, "save", real_save)
    resumed = run(tmp_path, Context())
    assert resumed.resumed_from == 2
    assert same_weights(resumed.model, uninterrupted.model)


def test_a_state_that_fits_only_in_part_changes_nothing(tmp_path: Path, caplog) -> None:
    """The weights, optimiser and batches load, then a hook's state does not: all of it is put
    back and the run starts over, ending where a fresh run ends."""
    uninterrupted = run(None, Context(), RandomHalves())
    with pytest.raises(TrialStopped):
        run(tmp_path, Context(stop_at=9), RandomHalves())

    class Foreign(RandomHalves):
        refused = False

        def load_state_dict(self, state: Mapping[str, Any]) -> None:
            if not self.refused:  # the saved state: another kind of schedule's
                self.refused = True
                raise KeyError("generator")
            super().load_state_dict(state)  # its own, put back

    with caplog.at_level("WARNING", logger="archsearch.worker"):
        fresh = run(tmp_path, Context(), Foreign())
    assert fresh.resumed_from is None
    assert "does not fit this training" in caplog.text
    assert same_weights(fresh.model, uninterrupted.model)
