"""The ``autodistil`` loop: AutoDistil's three stages as jobs of one study.

1. **Supernets**: one ``supernet`` job per sub-space of the study's ``autodistil`` space (the
   worker trains a weight-sharing supernet by task-agnostic relation distillation and uploads
   it as its trial's artifacts).
2. **Ranking**: one ``rank`` job per trained supernet (``recipe.rank.supernet`` names the
   supernet's trial). When it completes, the server records one COMPLETE trial per student
   with its proxy scores and costs (``server/_student_trials.py``).
3. **Stand-alone training**: once every sub-space is ranked, the ``top_n`` students by proxy
   among those within the ``budget`` (FLOPs or parameters, from the shared cost model of
   ``spaces/_students.py``), each a ``train`` job extracted from its supernet
   (``recipe.init.supernet``); the server stores its true scores beside the student's proxy.

The loop keeps no state: each call derives the stages from the stored trials, so a restarted
server continues where the last one stopped. A job the server gave up on (its retries spent),
or that a pruner stopped (a study launched before launch refused pruners here), is not asked
again: its sub-space, or its student, is left out, and the completed reason says so. When the
loop waits for jobs in flight it raises ``NoSuggestion``; once every picked student is trained,
or nothing can be picked (no student fits the budget), it raises
``NoSuggestion(finished=True)`` with the reason, which becomes the study's completed reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from archsearch.search._autodistil_options import budget_option, rank_options, supernet_options
from archsearch.search._autodistil_students import Student, job_status, mean_dev_loss, stand_alone
from archsearch.search._base import (
    LOOPS,
    LoopSnapshot,
    NoSuggestion,
    SearchLoop,
    Suggestion,
    TrialView,
)
from archsearch.spaces import DEV_LOSS, DesignSpace, SpecError
from archsearch.spaces._autodistil import AutoDistilSpace

#: System attribute of each job trial: its job kind (a retry keeps it in its candidate).
JOB_ATTR = "autodistil:job"
#: System attribute of each student trial the server records: where the student comes from
#: (``{"key", "subspace", "rank_trial", "supernet_trial"}``).
STUDENT_ATTR = "autodistil:student"
#: System attribute of a ``train`` job: the number of the student trial it was picked from.
PICKED_FROM_ATTR = "autodistil:picked_from"
_OPTIONS = ("top_n", "budget", "proxy", "proxy_direction", "tie_break", "supernet", "rank")
#: What ``tie_break`` may name: the students' mean dev loss over tasks, or only the cost.
_TIE_BREAKS = (DEV_LOSS, "cost")


@LOOPS.register("autodistil")
class AutoDistilLoop(SearchLoop):
    """AutoDistil's stages (module docstring). Options (``loop_options``):

    * ``top_n`` (default 3): students to fine-tune stand-alone;
    * ``budget``: ``{"flops": N}`` or ``{"params": N}``, the most a picked student may cost
      (FLOPs of one ``space_options.seq_len``-token sequence; none by default);
    * ``proxy`` (default ``"objective"``: the student trial's first objective value) or a
      metric of the student trials (``relation_loss``, ``teacher_relation_loss``,
      ``dev_loss``: with several proxy tasks, the mean of their ``<task>.dev_loss``), with
      ``proxy_direction`` (default ``minimize`` for a ``*loss`` metric, else ``maximize``);
    * ``tie_break`` (default ``"dev_loss"``): students with equal proxies are ordered by their
      mean dev loss over the proxy tasks (lower first: a short proxy fine-tuning leaves many
      small students at the majority class, where their accuracies tie but their losses
      differ), then by the smaller cost; ``"cost"``: by the cost alone;
    * ``supernet``: the supernet jobs' ``recipe.supernet`` (:data:`SUPERNET_FIELDS`);
    * ``rank``: the rank jobs' ``recipe.rank`` (``proxy_steps``, ``heldout``, ...).
    """

    name = "autodistil"
    # No promise about architectures: a sub-space is asked twice, as its supernet job and
    # then as its rank job. It never asks the same job twice (a trial of each is enough).
    avoids_known = False
    plans_its_budget = True
    refuses_pruner = (
        "the autodistil loop trains no candidate a pruner could compare: its supernet and "
        "rank jobs have no learning curve of the objective, and its only trained trials are "
        "the top_n students the ranking picked as the result, too few for a median and each "
        "one wanted whole (a pruned student would end with no true score)"
    )

    def __init__(self, seed: int | None, n_objectives: int, options: dict[str, Any] | None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise SpecError(
                f"loop_options.{unknown[0]}", "unknown option", f"known: {', '.join(_OPTIONS)}"
            )
        top_n = options.get("top_n", 3)
        if isinstance(top_n, bool) or not isinstance(top_n, int) or not 0 <= top_n <= 1000:
            raise SpecError("loop_options.top_n", f"must be an int in 0..1000, got {top_n!r}")
        self.top_n = top_n
        self.budget = budget_option(options.get("budget"))
        proxy = options.get("proxy", "objective")
        if not isinstance(proxy, str) or not proxy:
            raise SpecError("loop_options.proxy", f"must be a metric name, got {proxy!r}")
        self.proxy = proxy
        default = "minimize" if proxy.endswith("loss") else "maximize"
        direction = options.get("proxy_direction", default)
        if direction not in ("maximize", "minimize") or (
            proxy == "objective" and ("proxy_direction" in options)
        ):
            raise SpecError(
                "loop_options.proxy_direction",
                f"must be maximize or minimize for a proxy metric, got {direction!r}",
                "the objective proxy takes the study's direction",
            )
        self.proxy_direction = direction
        tie_break = options.get("tie_break", DEV_LOSS)
        if tie_break not in _TIE_BREAKS:
            raise SpecError(
                "loop_options.tie_break",
                f"must be one of {', '.join(_TIE_BREAKS)}, got {tie_break!r}",
            )
        self.tie_break = tie_break
        self.supernet = supernet_options(options.get("supernet", {}))
        self.rank = rank_options(options.get("rank", {}))

    def check_metrics(self, produced: Sequence[str]) -> None:
        """An unknown ``proxy`` ended the study only after every supernet and rank job."""
        if self.proxy in ("objective", DEV_LOSS) or self.proxy in produced:
            return
        task = produced[0] if produced else "accuracy"  # the trainer lists its task's first
        raise SpecError(
            "loop_options.proxy",
            f"no trial reports {self.proxy!r}, so no student could be picked",
            f"use objective (the default), {task}, {DEV_LOSS} or relation_loss",
        )

    def check_study(self, space: DesignSpace, n_trials: int) -> None:
        if not isinstance(space, AutoDistilSpace):
            raise SpecError(
                "space",
                f"the autodistil loop searches the autodistil space, not {space.name}",
                'use "space": "autodistil"',
            )
        if self.budget is not None:
            kind, limit = self.budget
            cost = space.flops if kind == "flops" else space.params
            keys = stand_alone(space, space.student_keys) or space.student_keys
            cheapest = min(cost(space.student(k)) for k in keys)
            if cheapest > limit:
                raise SpecError(
                    f"loop_options.budget.{kind}",
                    f"no student of the space fits {limit:.4g}: the cheapest needs {cheapest}",
                    f"raise it to at least {cheapest}, or add smaller students",
                )
        if self.top_n and not stand_alone(space, space.student_keys):
            raise SpecError(
                "loop_options.top_n",
                f"{self.top_n} students would be trained stand-alone, but no student of the "
                f"space can be: each has hidden != heads x {space.teacher.head_dim} (untied, as "
                "most of the paper's sub-spaces), which a plain BERT cannot hold",
                "set loop_options.top_n to 0 to rank the students only, or use sub-spaces "
                "with 'hidden': null (hidden tied to the heads)",
            )
        jobs = 2 * len(space.subspaces) + self.top_n
        if n_trials < jobs:
            raise SpecError(
                "n_trials",
                f"the autodistil loop runs {len(space.subspaces)} supernet, "
                f"{len(space.subspaces)} rank and {self.top_n} train jobs; got {n_trials}",
                f"set n_trials to at least {jobs}",
            )

    # ------------------------------------------------------------------------- stages

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        space = snapshot.space
        if not isinstance(space, AutoDistilSpace):
            raise SpecError("space", "the autodistil loop needs the autodistil space")
        jobs: dict[tuple[str, str], list[TrialView]] = {}
        students: list[TrialView] = []
        for t in snapshot.trials:
            if STUDENT_ATTR in t.attrs:
                students.append(t)
                continue
            job = self._job(space, t)
            if job is not None:
                jobs.setdefault(job, []).append(t)
        pending: list[Suggestion] = []  # supernets first: the long jobs start soonest
        ranks: list[Suggestion] = []
        unsettled = False
        for sub in space.subspaces:
            supernet = job_status(jobs.get(("supernet", sub.name), []))
            if supernet == "todo":
                pending.append(self._supernet_job(space, sub.name))
            if supernet in ("todo", "active"):
                unsettled = True
                continue
            if supernet in ("failed", "pruned"):
                continue
            rank = job_status(jobs.get(("rank", sub.name), []))
            if rank == "todo":
                ranks.append(self._rank_job(space, sub.name, snapshot.study_name, supernet))
            unsettled = unsettled or rank in ("todo", "active")
        pending += ranks
        if not unsettled:
            pending = self._train_jobs(space, snapshot, students, jobs)
        if len(pending) < count:
            raise NoSuggestion("waiting for the supernet and rank jobs in flight")
        return pending[:count]

    def _job(self, space: AutoDistilSpace, t: TrialView) -> tuple[str, str] | None:
        """(kind, sub-space name or student key) of a job trial; None for anything else."""
        arch: Mapping[str, Any] | None = t.architecture
        kind = t.kind if arch is not None else t.attrs.get(JOB_ATTR)
        if arch is None:
            try:
                arch = space.from_params(t.params)
            except (SpecError, ValueError, KeyError):
                return None
        if "subspace" in arch and kind in ("supernet", "rank"):
            return str(kind), str(arch["subspace"]["name"])
        if "student" in arch and kind == "train":
            return "train", space.to_params(dict(arch))["student"]
        return None

    def _supernet_job(self, space: AutoDistilSpace, name: str) -> Suggestion:
        return Suggestion(
            architecture=space.subspace_arch(space.subspace(name)),
            recipe={"supernet": dict(self.supernet)},
            kind="supernet",
            attrs={JOB_ATTR: "supernet"},
        )

    def _rank_job(self, space: AutoDistilSpace, name: str, study: str, supernet: str) -> Suggestion:
        return Suggestion(
            architecture=space.subspace_arch(space.subspace(name)),
            recipe={
                "rank": {
                    **self.rank,
                    "supernet": f"trial:{study}:{supernet}",
                    "cost_seq_len": space.seq_len,
                }
            },
            kind="rank",
            attrs={JOB_ATTR: "rank"},
        )

    def _train_jobs(
        self,
        space: AutoDistilSpace,
        snapshot: LoopSnapshot,
        students: list[TrialView],
        jobs: dict[tuple[str, str], list[TrialView]],
    ) -> list[Suggestion]:
        """Stage 3: the picked students no trial holds yet."""
        picks = self.pick(space, snapshot, students)
        if self.top_n and not picks:
            raise NoSuggestion(self._nothing_fits(space, snapshot, students), finished=True)
        pending = []
        active = False
        ended: dict[str, list[str]] = {"failed": [], "pruned": []}
        for s in picks:
            status = job_status(jobs.get(("train", s.key), []))
            active = active or status == "active"
            if status in ended:
                ended[status].append(s.key)
            if status == "todo":
                pending.append(
                    Suggestion(
                        architecture=space.student_arch(space.student(s.key)),
                        recipe={
                            "init": {"supernet": f"trial:{snapshot.study_name}:{s.supernet_trial}"},
                            # its params and flops as its proxy row counts them
                            "student": {"cost_seq_len": space.seq_len},
                        },
                        kind="train",
                        attrs={JOB_ATTR: "train", PICKED_FROM_ATTR: s.number},
                    )
                )
        if not pending and not active:
            untrained = ended["failed"] + ended["pruned"]
            trained = ", ".join(s.key for s in picks if s.key not in untrained)
            said = trained or ("none (top_n is 0)" if not picks else "none")
            if ended["pruned"]:  # a stored study's pruner stopped these: no true score
                said += f"; pruned (no true score): {', '.join(ended['pruned'])}"
            if ended["failed"]:  # the server gave up on these: say so, not "trained"
                said += f"; failed (retries spent; see show): {', '.join(ended['failed'])}"
            raise NoSuggestion(
                f"autodistil: every stage done; students trained stand-alone: {said}",
                finished=True,
            )
        return pending

    # ------------------------------------------------------------------------- the pick

    def pick(
        self, space: AutoDistilSpace, snapshot: LoopSnapshot, students: list[TrialView]
    ) -> list[Student]:
        """The ``top_n`` students within the budget, best proxy first, among those a plain
        BERT can hold (``hidden = heads x head size``: an untied student of the paper's
        sub-spaces is ranked, never trained stand-alone, which it cannot be).

        Ties break on the lower mean dev loss (``tie_break``), then the smaller cost, then the
        student key, then the sub-space name, so the pick is a function of the stored trials
        alone. A student in several sub-spaces is picked at most once (its best-scored copy).
        """
        sign = 1.0
        if self.proxy == "objective":
            sign = -1.0 if snapshot.directions[0] == "maximize" else 1.0
        elif self.proxy_direction == "maximize":
            sign = -1.0
        scored = []
        for t in students:
            s = self._student(space, t)
            if s is None or not stand_alone(space, [s.key]):
                continue  # untied: no plain-BERT form to train stand-alone
            if self.budget is None or s.cost <= self.budget[1]:
                scored.append(s)
        scored.sort(key=lambda s: (sign * s.proxy, s.tie, s.cost, s.key, s.subspace))
        out: list[Student] = []
        for s in scored:
            if len(out) < self.top_n and all(o.key != s.key for o in out):
                out.append(s)
        return out

    def _student(self, space: AutoDistilSpace, t: TrialView) -> Student | None:
        info = t.attrs.get(STUDENT_ATTR)
        if t.state != "COMPLETE" or not isinstance(info, Mapping):
            return None
        if self.proxy == "objective":
            proxy = t.values[0] if t.values else None
        elif self.proxy == DEV_LOSS:  # several proxy tasks: their mean
            proxy = mean_dev_loss(t.metrics)
        else:
            proxy = t.metrics.get(self.proxy)
        try:
            student = space.student(str(info["key"]))
        except KeyError:
            return None
        if proxy is None or not math.isfinite(proxy):
            return None
        kind = self.budget[0] if self.budget else "flops"
        cost = space.flops(student) if kind == "flops" else space.params(student)
        return Student(
            t.number,
            student.key(),
            str(info.get("subspace", "")),
            int(info["supernet_trial"]),
            float(proxy),
            float(cost),
            mean_dev_loss(t.metrics) if self.tie_break == DEV_LOSS else math.inf,
        )

    def _nothing_fits(
        self, space: AutoDistilSpace, snapshot: LoopSnapshot, students: list[TrialView]
    ) -> str:
        if not students:
            return "autodistil: no student was ranked (every supernet or rank job failed)"
        scored = [s for t in students if (s := self._student(space, t)) is not None]
        if not scored:
            if self.proxy == "objective":
                return "autodistil: no ranked student has a finite objective value"
            names = sorted({m for t in students for m in t.metrics})
            return (
                f"autodistil: no student trial has the proxy {self.proxy!r}; the student "
                f"trials have {', '.join(names)} (set loop_options.proxy to one of them)"
            )
        tied = stand_alone(space, [s.key for s in scored])
        if not tied:
            return (
                "autodistil: no ranked student with a proxy can be trained stand-alone (each "
                f"has hidden != heads x {space.teacher.head_dim}); their ranking is the result"
            )
        assert self.budget is not None  # stand-alone students with a proxy, none picked
        kind, limit = self.budget
        cost = space.flops if kind == "flops" else space.params
        smallest = min(cost(space.student(k)) for k in tied)
        return (
            f"autodistil: no ranked student fits the budget {kind} <= {limit:.4g} "
            f"(the cheapest that can be trained stand-alone needs {smallest:.4g}); raise "
            f"loop_options.budget.{kind}"
        )
