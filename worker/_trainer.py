"""The trainer interface: what a worker runs for one leased candidate.

:class:`Trainer` (its ``train`` given a :class:`~archsearch.spaces.Candidate` and a
:class:`TrainContext`), the :class:`TrainResult` it returns, and the exceptions that end a
trial early (:class:`TrialStopped`, :class:`TrialPruned`, :class:`TrialCancelled`) or fail the
candidate for good (:class:`CandidateError`). The contract a trainer keeps (reporting,
checking for a stop, what counts as whose failure, what a result holds) is the package's:
``help(archsearch.worker)``, "Writing a trainer".
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from archsearch.spaces import Candidate, TrainerInfo


class TrialStopped(Exception):
    """Raised inside a trainer to end a trial early (pruned, stopped or handed back)."""


class TrialPruned(TrialStopped):
    """The trial was pruned: it ends for good (no retry continues it)."""


class TrialCancelled(TrialStopped):
    """The study was stopped with its running trials (``stop --cancel-running``): the trial
    ends for good (nothing is saved to continue it)."""


class CandidateError(Exception):
    """The candidate cannot be trained by this trainer; retrying elsewhere would not help."""


@dataclasses.dataclass
class TrainResult:
    metrics: dict[str, float]
    info: dict[str, str] = dataclasses.field(default_factory=dict)


class TrainContext:
    """What a trainer may ask of the worker while it trains one candidate.

    Args:
        report: ``report(step, value) -> should_prune``; sends an intermediate value.
        should_stop: returns True once the trial must end (lease lost, study stopped, SIGTERM).
        intermediate_metric: name of the metric ``report`` expects (for example "accuracy").
        objective_metrics: metric names the final result must contain.
        device: torch device string the trainer should use ("cpu", "cuda", "cuda:1").
        upload: ``upload(path, name) -> artifact id``; stores a file on this trial through the
            server (``WorkerClient.upload_artifact``).
        download: ``download(study, trial_number, name, dest)``; fetches another trial's
            artifact through the server (``WorkerClient.download_artifact``).
        study_name: the study of the trial being trained.
        find: ``find(study, name) -> trial number or None``; which trial of a study holds a
            whole upload named ``name`` (``WorkerClient.find_artifact``; None when none does).
        holders: ``holders(study, name, limit) -> [(trial number, sha256), ...]``; up to
            ``limit`` trials of a study holding a whole upload named ``name``, lowest-numbered
            first (``WorkerClient.find_artifact`` with a limit; empty when none does).
        trial_number: the number of the trial being trained (None: run alone).
        cancelled: returns True once the server cancelled the trial (its study was stopped
            with ``--cancel-running``); :meth:`check` then raises :class:`TrialCancelled`.
    """

    def __init__(
        self,
        report: Callable[[int, float], bool] | None = None,
        should_stop: Callable[[], bool] | None = None,
        intermediate_metric: str = "",
        objective_metrics: tuple[str, ...] = (),
        device: str = "cpu",
        upload: Callable[[Path, str], str] | None = None,
        download: Callable[[str, int, str, Path], object] | None = None,
        study_name: str = "",
        find: Callable[[str, str], int | None] | None = None,
        holders: Callable[[str, str, int], list[tuple[int, str]]] | None = None,
        trial_number: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._report = report
        self._cancelled = cancelled
        self._should_stop = should_stop
        self.intermediate_metric = intermediate_metric
        self.objective_metrics = tuple(objective_metrics)
        self.device = device
        self._upload = upload
        self._download = download
        self.study_name = study_name
        self._find = find
        self._holders = holders
        self.trial_number = trial_number

    @property
    def has_server(self) -> bool:
        """True when artifacts can be uploaded and downloaded (a worker runs this trial)."""
        return self._upload is not None and self._download is not None

    def upload(self, path: str | Path, name: str = "") -> str:
        """Stores a file (a checkpoint) as an artifact of this trial; returns its artifact id.

        Raises:
            RuntimeError: No server behind this context (a trainer run on its own).
            archsearch.server.client.ClientError: The server refused it (the status says why).
        """
        if self._upload is None:
            raise RuntimeError("no server to upload artifacts to: this trial runs without a worker")
        path = Path(path)
        return self._upload(path, name or path.name)

    def download(self, trial_number: int, name: str, dest: str | Path, study: str = "") -> Path:
        """Fetches artifact ``name`` of trial ``trial_number`` (of ``study``, default this
        trial's study) into ``dest``, sha256 checked; returns ``dest``.

        Raises:
            RuntimeError: No server behind this context.
            archsearch.server.client.ClientError: Unknown study, trial or artifact (NOT_FOUND),
                corrupted bytes (DATA_LOSS), or the server is unreachable.
        """
        if self._download is None:
            raise RuntimeError("no server to download artifacts from: this trial runs alone")
        dest = Path(dest)
        self._download(study or self.study_name, trial_number, name, dest)
        return dest

    def find_artifact(self, name: str, study: str = "") -> int | None:
        """The number of the lowest-numbered trial of ``study`` (default this trial's) holding
        a whole upload named ``name``, any state, this trial included; None when none does.

        Raises:
            RuntimeError: No server behind this context (or none that can be asked).
            archsearch.server.client.ClientError: The server refused (a bad name:
                INVALID_ARGUMENT) or is unreachable.
        """
        if self._find is None:
            raise RuntimeError("no server to find artifacts on: this trial runs alone")
        return self._find(study or self.study_name, name)

    def artifact_holders(self, name: str, limit: int, study: str = "") -> list[tuple[int, str]]:
        """(trial number, sha256) of up to ``limit`` trials of ``study`` (default this trial's)
        holding a whole upload named ``name``, lowest-numbered first, any state, this trial
        included; empty when none does.

        Raises:
            RuntimeError: No server behind this context (or none that can be asked).
            archsearch.server.client.ClientError: The server refused (a bad name or limit:
                INVALID_ARGUMENT) or is unreachable.
        """
        if self._holders is None:
            raise RuntimeError("no server to find artifacts on: this trial runs alone")
        return self._holders(study or self.study_name, name, limit)

    def newest_holder(self, name: str) -> int | None:
        """The highest-numbered trial of this trial's study holding a whole upload named
        ``name`` (among the first 1,000 that do); None when none does.

        Raises:
            RuntimeError: No server behind this context (or none that can be asked).
            archsearch.server.client.ClientError: The server refused or is unreachable.
        """
        holders = self.artifact_holders(name, 1000)
        return max((number for number, _ in holders), default=None)

    def report(self, step: int, value: float) -> None:
        """Sends an intermediate value; raises TrialStopped when the trial must end.

        Raises:
            TrialPruned: the server pruned it.
            TrialStopped: the worker asked it to end (its lease lost: the report could not be
                delivered; SIGTERM): a job keeps its progress (a lost lease read as a prune
                deleted it, and the retry trained from step 0).
        """
        if self._report is not None and self._report(step, value):
            self.check()
            raise TrialPruned(f"pruned at step {step}")
        self.check()

    def stop_requested(self) -> bool:
        """Whether the worker asked the trial to end (lease lost, study stopped, SIGTERM)."""
        return self._should_stop is not None and self._should_stop()

    def check(self) -> None:
        """Raises TrialStopped when the worker asked the trial to end (TrialCancelled when
        the server cancelled it)."""
        if self._cancelled is not None and self._cancelled():
            raise TrialCancelled("cancelled by the server")
        if self.stop_requested():
            raise TrialStopped("stop requested")


class Trainer(abc.ABC):
    """Trains and evaluates one candidate.

    The contract (what ``train`` must do when the trial is pruned, stopped or cancelled, and
    what counts as the candidate's failure): ``help(archsearch.worker)``, "Writing a
    trainer"; README "Your own trainer and search space" has a whole plugin.

    Implementations today (the trainer names a spec's ``trainer`` selects):
        * :class:`~archsearch.worker.BertTrainer`: ``bert``, trains BERT and FlexiBERT
          candidates on GLUE or a user's task (distillation, pre-training, cost metrics);
        * :class:`~archsearch.worker.TableTrainer`: ``table``, answers with a NAS table's
          recorded score (load tests, fault tests, algorithm benchmarks);
        * :class:`~archsearch.worker.LoraTrainer`: ``lora``, LoRA and DyLoRA
          fine-tuning of a pretrained encoder, scored at every rank asked for;
        * :class:`~archsearch.worker.AutodistilTrainer`: ``autodistil``, AutoDistil's jobs
          (``supernet`` training, ``rank``-ing every student of a sub-space, and ``train``-ing
          a student extracted from its supernet).

    Each registers itself with ``archsearch.worker._registry.register_trainer`` where it is
    defined, and declares what it trains and reports in ``info`` (a
    :class:`~archsearch.spaces.TrainerInfo`, also published as an ``archsearch.trainers`` entry
    point so a server that has it installed knows it before any worker connects). In this
    repository a new trainer runs the conformance suite ``tests/conformance/trainer_suite.py``
    (``TrainerConformance``) with a subclass in ``tests/conformance/test_trainers.py``.
    """

    #: Name workers advertise and search specs select ("bert", "lora", "table").
    name: str = ""
    #: What it trains and the metrics it reports; a worker sends it when it registers, and the
    #: server validates studies against it. Publish it as an ``archsearch.trainers`` entry point
    #: too (pyproject.toml), so a server that has the trainer installed knows it before any
    #: worker connects. None: the server knows only the name (no study can select it).
    info: ClassVar[TrainerInfo | None] = None
    #: Job kinds this trainer does (``Candidate.kind``); the worker fails any other kind.
    kinds: tuple[str, ...] = ("train",)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Trainer:
        """A trainer built from a worker's options (``glue_dir``, ``table``, ``duration_s``,
        ...: each trainer reads its own); the default takes none.

        Raises:
            ValueError: A needed option is missing or bad; the message says what to give.
        """
        return cls()

    @abc.abstractmethod
    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        """Trains ``candidate`` and returns its metrics. See the module docstring's contract."""
