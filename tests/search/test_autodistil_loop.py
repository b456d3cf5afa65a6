"""The autodistil loop's stages, read from a study's trials alone (a fake snapshot)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from _autodistil import SPACE

from archsearch.search import LoopSnapshot, NoSuggestion, TrialView, make_loop
from archsearch.search._autodistil_loop import JOB_ATTR, PICKED_FROM_ATTR, STUDENT_ATTR
from archsearch.spaces import SpecError
from archsearch.spaces._students import is_tied


def loop(**options: Any) -> Any:
    return make_loop("autodistil", 0, 1, {"top_n": 2, **options})


def job(number: int, kind: str, state: str, name: str, **kw: Any) -> TrialView:
    sub = SPACE.subspace(name)
    arch = SPACE.subspace_arch(sub)
    return TrialView(
        number=number,
        state=state,
        params=SPACE.to_params(arch),
        values=(-math.inf,) if state == "COMPLETE" else None,
        architecture=arch,
        attrs={JOB_ATTR: kind},
        info={},
        kind=kind,
        **kw,
    )


def student(
    number: int, key: str, sub: str, supernet: int, proxy: float, **metrics: float
) -> TrialView:
    return TrialView(
        number=number,
        state="COMPLETE",
        params={"target": "student", "student": key, "subspace": sub},
        values=(proxy,),
        architecture=None,
        attrs={
            STUDENT_ATTR: {"key": key, "subspace": sub, "rank_trial": 0, "supernet_trial": supernet}
        },
        info={},
        metrics={"accuracy": proxy, "relation_loss": 1 - proxy, **metrics},
    )


def train(number: int, key: str, state: str) -> TrialView:
    arch = SPACE.student_arch(SPACE.student(key))
    return TrialView(number, state, SPACE.to_params(arch), None, arch, {}, {}, kind="train")


def snap(*trials: TrialView, directions: tuple[str, ...] = ("maximize",)) -> LoopSnapshot:
    return LoopSnapshot("s", directions, SPACE, load_trials=lambda: trials)


KEYS = [st.key() for st in SPACE.students["a"]] + [st.key() for st in SPACE.students["b"]]
#: Both supernets trained (#0, #1) and ranked (#2, #3), their students recorded (#4-#7).
RANKED = (
    job(0, "supernet", "COMPLETE", "a"),
    job(1, "supernet", "COMPLETE", "b"),
    job(2, "rank", "COMPLETE", "a"),
    job(3, "rank", "COMPLETE", "b"),
    student(4, KEYS[0], "a", 0, 0.70),
    student(5, KEYS[1], "a", 0, 0.80),
    student(6, KEYS[2], "b", 1, 0.90),
    student(7, KEYS[3], "b", 1, 0.85),
)


def test_stage_one_asks_a_supernet_per_subspace_then_waits() -> None:
    got = loop(supernet={"steps": 5, "loss": "mse"}).suggest(snap(), 2)
    assert [s.kind for s in got] == ["supernet", "supernet"]
    assert [s.architecture["subspace"]["name"] for s in got] == ["a", "b"]
    assert got[0].recipe == {"supernet": {"steps": 5, "loss": "mse"}}
    assert SPACE.validate(dict(got[0].architecture)) == got[0].architecture
    both = snap(job(0, "supernet", "RUNNING", "a"), job(1, "supernet", "WAITING", "b"))
    with pytest.raises(NoSuggestion) as e:
        loop().suggest(both, 1)
    assert not e.value.finished


def test_a_trained_supernet_gets_its_rank_job_while_the_other_trains() -> None:
    trials = snap(job(0, "supernet", "RUNNING", "a"), job(1, "supernet", "COMPLETE", "b"))
    (rank,) = loop(rank={"proxy_steps": 3}).suggest(trials, 1)
    assert rank.kind == "rank" and rank.architecture["subspace"]["name"] == "b"
    assert rank.recipe == {"rank": {"proxy_steps": 3, "supernet": "trial:s:1", "cost_seq_len": 128}}
    with pytest.raises(NoSuggestion):  # one rank job only: nothing else to give
        loop().suggest(trials, 2)


def test_stage_three_trains_the_top_n_from_their_supernets() -> None:
    got = loop().suggest(snap(*RANKED), 2)
    assert [s.kind for s in got] == ["train", "train"]
    assert [dict(s.architecture["student"]) for s in got] == [
        SPACE.student(KEYS[2]).to_dict(),
        SPACE.student(KEYS[3]).to_dict(),
    ]
    # the student's costs counted as its proxy row's (FLOPs at the space's seq_len)
    student = {"cost_seq_len": SPACE.seq_len}
    assert got[0].recipe == {"init": {"supernet": "trial:s:1"}, "student": student}
    assert got[0].attrs[PICKED_FROM_ATTR] == 6


def test_no_stage_three_before_every_subspace_is_ranked() -> None:
    running = (*RANKED[:3], job(3, "rank", "RUNNING", "b"), *RANKED[4:6])
    with pytest.raises(NoSuggestion) as e:
        loop().suggest(snap(*running), 1)
    assert not e.value.finished


def test_the_budget_is_applied_when_choosing() -> None:
    costs = {k: SPACE.flops(SPACE.student(k)) for k in KEYS}
    # below the two b students: the best a student, then the other
    budget = max(costs[KEYS[0]], costs[KEYS[1]])
    assert budget < min(costs[KEYS[2]], costs[KEYS[3]])
    got = loop(budget={"flops": budget}).suggest(snap(*RANKED), 2)
    assert [SPACE.to_params(dict(s.architecture))["student"] for s in got] == [KEYS[1], KEYS[0]]
    params = SPACE.params(SPACE.student(KEYS[0]))
    (only,) = loop(budget={"params": params}).suggest(snap(*RANKED), 1)
    assert SPACE.to_params(dict(only.architecture))["student"] == KEYS[0]


def test_a_budget_nothing_fits_finishes_with_the_reason() -> None:
    with pytest.raises(NoSuggestion) as e:
        loop(budget={"flops": 10}).suggest(snap(*RANKED), 1)
    assert e.value.finished
    assert "no ranked student fits the budget flops <= 10" in e.value.reason
    assert "budget.flops" in e.value.reason


def test_ties_break_on_cost_then_key_and_a_proxy_metric_can_rank() -> None:
    tied = (
        *RANKED[:4],
        *(student(4 + i, k, "ab"[i // 2], i // 2, 0.5) for i, k in enumerate(KEYS)),
    )
    got = loop(top_n=4).suggest(snap(*tied), 4)
    costs = [SPACE.flops(SPACE.student(k)) for k in KEYS]
    order = [k for _, k in sorted(zip(costs, KEYS, strict=True))]
    assert [SPACE.to_params(dict(s.architecture))["student"] for s in got] == order
    # relation loss (minimised): the 0.90 student has the least
    (best,) = loop(top_n=1, proxy="relation_loss").suggest(snap(*RANKED), 1)
    assert SPACE.to_params(dict(best.architecture))["student"] == KEYS[2]


def picked(got: list[Any]) -> list[str]:
    return [SPACE.to_params(dict(s.architecture))["student"] for s in got]


def test_tied_proxies_break_on_the_mean_dev_loss_before_the_cost() -> None:
    # all four at the same accuracy (the majority class); their dev losses differ
    losses = [0.61, 0.58, 0.70, 0.59]
    tied = (
        *RANKED[:4],
        *(
            student(4 + i, k, "ab"[i // 2], i // 2, 0.5, dev_loss=loss)
            for i, (k, loss) in enumerate(zip(KEYS, losses, strict=True))
        ),
    )
    by_loss = [k for _, k in sorted(zip(losses, KEYS, strict=True))]
    assert picked(loop(top_n=4).suggest(snap(*tied), 4)) == by_loss
    costs = [SPACE.flops(SPACE.student(k)) for k in KEYS]
    by_cost = [k for _, k in sorted(zip(costs, KEYS, strict=True))]
    assert by_cost != by_loss  # the test tells the two rules apart
    assert picked(loop(top_n=4, tie_break="cost").suggest(snap(*tied), 4)) == by_cost
    # the loss only breaks ties: a better proxy wins whatever its loss
    ahead = (*tied[:-1], student(7, KEYS[3], "b", 1, 0.6, dev_loss=9.0))
    assert picked(loop(top_n=1).suggest(snap(*ahead), 1)) == [KEYS[3]]


def test_several_tasks_tie_break_on_the_mean_of_their_dev_losses() -> None:
    a = {"sst2.dev_loss": 0.2, "mrpc.dev_loss": 0.9}  # mean 0.55
    b = {"sst2.dev_loss": 0.5, "mrpc.dev_loss": 0.5}  # mean 0.50
    tied = (
        *RANKED[:4],
        student(4, KEYS[0], "a", 0, 0.5, **a),
        student(5, KEYS[2], "b", 1, 0.5, **b),
        # no dev loss (a worker before the metric existed): after those with one
        student(6, KEYS[1], "a", 0, 0.5),
    )
    assert picked(loop(top_n=3).suggest(snap(*tied), 3)) == [KEYS[2], KEYS[0], KEYS[1]]
    # the dev loss as the proxy itself: the same mean, lowest first; none, not ranked
    by_loss = loop(top_n=3, proxy="dev_loss").suggest(snap(*tied), 2)
    assert picked(by_loss) == [KEYS[2], KEYS[0]]
    with pytest.raises(NoSuggestion):
        loop(top_n=3, proxy="dev_loss").suggest(snap(*tied), 3)


def test_an_unknown_tie_break_is_refused() -> None:
    with pytest.raises(SpecError) as e:
        loop(tie_break="loss")
    assert e.value.field == "loop_options.tie_break" and "dev_loss, cost" in str(e.value)


def test_trained_picks_finish_the_study_and_failed_jobs_are_not_asked_again() -> None:
    done = (*RANKED, train(8, KEYS[2], "COMPLETE"), train(9, KEYS[3], "FAIL"))
    with pytest.raises(NoSuggestion) as e:
        loop().suggest(snap(*done), 1)
    assert e.value.finished
    assert e.value.reason.endswith(
        f"students trained stand-alone: {KEYS[2]}; failed (retries spent; see show): {KEYS[3]}"
    )  # it said both were trained
    in_flight = (*RANKED, train(8, KEYS[2], "COMPLETE"), train(9, KEYS[3], "RUNNING"))
    with pytest.raises(NoSuggestion) as e:
        loop().suggest(snap(*in_flight), 1)
    assert not e.value.finished
    # a sub-space whose supernet failed for good is left out; the other goes on
    failed = snap(job(0, "supernet", "FAIL", "a"), job(1, "supernet", "COMPLETE", "b"))
    (rank,) = loop().suggest(failed, 1)
    assert rank.architecture["subspace"]["name"] == "b"
    nothing = snap(job(0, "supernet", "FAIL", "a"), job(1, "supernet", "FAIL", "b"))
    with pytest.raises(NoSuggestion) as e:
        loop().suggest(nothing, 1)
    assert e.value.finished and "no student was ranked" in e.value.reason


def test_a_trial_without_a_stored_candidate_is_read_from_its_parameters() -> None:
    bare = TrialView(
        0,
        "RUNNING",
        {"target": "subspace", "subspace": "a"},
        None,
        None,
        {JOB_ATTR: "supernet"},
        {},
    )
    (nxt,) = loop().suggest(snap(bare), 1)
    assert nxt.kind == "supernet" and nxt.architecture["subspace"]["name"] == "b"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"top_n": -1}, "loop_options.top_n"),
        ({"top_n": True}, "loop_options.top_n"),
        ({"budget": {"flops": 0}}, "loop_options.budget.flops"),
        ({"budget": {"latency": 5}}, "loop_options.budget"),
        ({"budget": {"flops": 1, "params": 1}}, "loop_options.budget"),
        ({"supernet": {"loss": "l1"}}, "loop_options.supernet.loss"),
        ({"supernet": {"steps": 0}}, "loop_options.supernet.steps"),
        ({"supernet": {"stepz": 3}}, "loop_options.supernet.stepz"),
        ({"supernet": {"sandwich": 1}}, "loop_options.supernet.sandwich"),
        ({"supernet": {"weight_decay": -0.1}}, "loop_options.supernet.weight_decay"),
        ({"supernet": []}, "loop_options.supernet"),
        ({"rank": {"supernet": "s/1"}}, "loop_options.rank.supernet"),
        ({"rank": {"heldout": [1]}}, "loop_options.rank.heldout"),
        ({"rank": {"heldout": 0}}, "loop_options.rank.heldout"),
        ({"rank": {"cost_seq_len": 64}}, "loop_options.rank.cost_seq_len"),
        ({"rank": {"proxy_stepz": 3}}, "loop_options.rank.proxy_stepz"),
        ({"rank": {"loss": "l2"}}, "loop_options.rank.loss"),
        ({"rank": {"max_seq_length": 2}}, "loop_options.rank.max_seq_length"),
        ({"supernet": {"max_seq_length": 1024}}, "loop_options.supernet.max_seq_length"),
        ({"proxy": "relation_loss", "proxy_direction": "up"}, "loop_options.proxy_direction"),
        ({"subspaces": "minilm-k3"}, "loop_options.subspaces"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        make_loop("autodistil", 0, 1, options)
    assert e.value.field == field, str(e.value)


def test_untied_students_are_ranked_but_never_picked_for_stand_alone_training() -> None:
    """The paper's sub-spaces vary hidden apart from the heads (hidden != heads x head size):
    such a student has no plain-BERT form, so every stand-alone job of one failed, after all
    the supernet and rank work. They are ranked, never picked; with none that can be trained
    and top_n > 0, launch refuses."""
    from archsearch.spaces import make_space

    untied = {"name": "u", "layers": [1.0], "heads": [0.5], "hidden": [0.75], "mlp_ratio": [2.0]}
    space = make_space("autodistil", {"subspaces": [untied]})
    assert len(space.student_keys) == 1
    with pytest.raises(SpecError) as e:
        loop().check_study(space, 10)
    assert e.value.field == "loop_options.top_n"
    assert "set loop_options.top_n to 0 to rank the students only" in str(e.value)
    loop(top_n=0).check_study(space, 10)  # ranking only: fine
    # in a snapshot, an untied student with the best proxy is passed over
    tied = {**untied, "name": "t", "hidden": None}
    mixed = make_space("autodistil", {"subspaces": [untied, tied]})
    keys = sorted(mixed.student_keys)
    assert len(keys) == 2
    ranked = [
        TrialView(
            number=4 + i,
            state="COMPLETE",
            params={"target": "student", "student": k, "subspace": "u"},
            values=(0.9 if not is_tied(mixed.teacher, mixed.student(k)) else 0.6,),
            architecture=None,
            attrs={STUDENT_ATTR: {"key": k, "subspace": "u", "supernet_trial": 0}},
            info={},
            metrics={"accuracy": 0.5},
        )
        for i, k in enumerate(keys)
    ]
    picks = loop(top_n=2).pick(mixed, LoopSnapshot("s", ("maximize",), mixed, lambda: ()), ranked)
    assert [p.key for p in picks] == [k for k in keys if is_tied(mixed.teacher, mixed.student(k))]
    # the tied student lacks the proxy, the untied one has it, no budget: the study ends
    # with the reason (this reached an assert on the budget)
    untied_key = next(k for k in keys if not is_tied(mixed.teacher, mixed.student(k)))
    only_untied = [
        TrialView(
            number=t.number,
            state=t.state,
            params=t.params,
            values=t.values,
            architecture=None,
            attrs=t.attrs,
            info={},
            metrics={"relation_loss": 0.1} if t.params["student"] == untied_key else {},
        )
        for t in ranked
    ]
    snap_ = LoopSnapshot("s", ("maximize",), mixed, lambda: ())
    assert loop(top_n=1, proxy="relation_loss").pick(mixed, snap_, only_untied) == []
    reason = loop(top_n=1, proxy="relation_loss")._nothing_fits(mixed, snap_, only_untied)
    assert reason.startswith("autodistil: no ranked student with a proxy can be trained")
