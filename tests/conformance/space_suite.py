"""The conformance suite every design space runs.

A new space registers itself in ``archsearch.spaces.SPACES`` and adds, in
``tests/conformance/test_spaces.py``, a subclass of :class:`SpaceConformance` that provides:

* ``make_space()``: the space with the options under test (a table-backed variant is its own
  subclass);
* ``invalid_architectures``: a few ``(architecture, field)`` pairs outside the space, each
  with the field ``validate`` must name (``SpecError.field``).

Each test checks one clause of the contract in ``archsearch/spaces/_base.py``: suggestions only
through ``trial.suggest_*``, ``validate`` normalises or raises ``SpecError`` naming the field,
``to_params`` + ``enqueue_trial`` + ``suggest`` rebuilds an architecture, ``sample`` stays in
the space, a parameter's distribution never changes, ``describe`` is one line, the options
round-trip through ``options()``, a :class:`~archsearch.spaces.MutableSpace`'s neighbours
are distinct members other than the architecture itself, and a
:class:`~archsearch.spaces.RawFeatureSpace`'s raw parameters are its feature parameters unbinned.

A plugin (a package of its own) does the same in its own test file and runs it with this
folder importable: ``PYTHONPATH=<archsearch checkout>/tests pytest`` (see the README's
"Your own trainer and search space" and ``examples/mlp_plugin``).
"""

from __future__ import annotations

import json
import random
from typing import Any, ClassVar

import optuna
import pytest

from archsearch.spaces import (
    SPACES,
    DesignSpace,
    FeatureSpace,
    MutableSpace,
    RawFeatureSpace,
    SpecError,
    make_space,
)

#: Trial user attribute a space that maps suggestions to members sets (see the contract).
MAPPED_FROM = "mapped_from"


class SuggestOnlyTrial:
    """A trial proxy that lets a space call ``trial.suggest_*`` (and set the ``mapped_from``
    user attribute) and fails the test on anything else (``trial.params``, the study, ...)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial

    def __getattr__(self, name: str) -> Any:
        if name.startswith("suggest_"):
            return getattr(self._trial, name)
        raise AssertionError(f"a space's suggest may only call trial.suggest_*, not {name}")

    def set_user_attr(self, key: str, value: Any) -> None:
        assert key == MAPPED_FROM, f"suggest may set only the {MAPPED_FROM} user attribute"
        self._trial.set_user_attr(key, value)


class SpaceConformance:
    """What every :class:`~archsearch.spaces.DesignSpace` must do. See the module docstring."""

    #: Architectures outside the space, with the ``SpecError.field`` validate must name.
    invalid_architectures: ClassVar[list[tuple[Any, str]]] = []
    #: Random trials per test.
    n_trials: ClassVar[int] = 30

    def make_space(self) -> DesignSpace:
        raise NotImplementedError

    def _study(self, seed: int = 0) -> optuna.Study:
        return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))

    def _samples(self, space: DesignSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        return [space.sample(rng) for _ in range(n)]

    def test_is_registered(self) -> None:
        space = self.make_space()
        assert SPACES[space.name] is type(space)

    def test_suggest_uses_only_trial_suggest(self) -> None:
        space, study = self.make_space(), self._study()
        for _ in range(self.n_trials):
            trial = study.ask()
            arch = space.suggest(SuggestOnlyTrial(trial))  # type: ignore[arg-type]
            assert space.validate(arch) == arch
            if trial.params != space.to_params(arch):
                # only a space that maps suggestions to members may differ, and says so
                assert MAPPED_FROM in trial.user_attrs, (trial.params, arch)
            study.tell(trial, 0.0)

    def test_validate_normalises(self) -> None:
        space = self.make_space()
        for arch in self._samples(space, self.n_trials):
            once = space.validate(arch)
            assert space.validate(once) == once
            assert json.loads(json.dumps(once)) == once  # a candidate is JSON

    @pytest.mark.parametrize("bad", [[], "x", 3, None, {}])
    def test_validate_refuses_non_architectures(self, bad: Any) -> None:
        with pytest.raises(SpecError) as e:
            self.make_space().validate(bad)
        assert e.value.field.startswith("architecture")

    def test_validate_names_the_wrong_field(self) -> None:
        space = self.make_space()
        for arch, field in self.invalid_architectures:
            with pytest.raises(SpecError) as e:
                space.validate(arch)
            assert e.value.field == field, f"{arch}: {e.value}"
        # A sampled architecture with one key replaced by junk names that key.
        arch = space.sample(random.Random(1))
        for key in arch:
            with pytest.raises(SpecError) as e:
                space.validate({**arch, key: "junk"})
            assert e.value.field.startswith(f"architecture.{key}"), str(e.value)

    def test_to_params_and_enqueue_rebuild_the_architecture(self) -> None:
        space, study = self.make_space(), self._study(1)
        for arch in self._samples(space, self.n_trials, seed=2):
            study.enqueue_trial(space.to_params(arch))
            trial = study.ask()
            assert space.suggest(trial) == arch
            assert trial.params == space.to_params(arch)
            assert MAPPED_FROM not in trial.user_attrs
            study.tell(trial, 0.0)

    def test_sample_is_in_the_space(self) -> None:
        space = self.make_space()
        archs = self._samples(space, self.n_trials, seed=3)
        assert all(space.validate(a) == a for a in archs)
        assert self._samples(space, 5, seed=3) == archs[:5]  # seeded, reproducible
        assert len({json.dumps(a, sort_keys=True) for a in archs}) > 1

    def test_a_parameters_distribution_never_changes(self) -> None:
        space, study = self.make_space(), self._study(4)
        for arch in self._samples(space, 10, seed=5):  # enqueued: every branch of the space
            study.enqueue_trial(space.to_params(arch))
        seen: dict[str, Any] = {}
        for _ in range(10 + self.n_trials):
            trial = study.ask()
            space.suggest(trial)
            study.tell(trial, 0.0)
        for t in study.get_trials():
            for name, dist in t.distributions.items():
                assert seen.setdefault(name, dist) == dist, name

    def test_describe_is_one_line(self) -> None:
        space = self.make_space()
        descriptions = [space.describe(a) for a in self._samples(space, self.n_trials)]
        assert all(isinstance(d, str) and d and "\n" not in d for d in descriptions)

    def test_options_round_trip(self) -> None:
        space = self.make_space()
        options = space.options()
        assert json.loads(json.dumps(options)) == options
        again = make_space(space.name, options)
        assert again.options() == options
        for arch in self._samples(space, 10, seed=6):
            assert again.validate(arch) == arch and again.to_params(arch) == space.to_params(arch)

    def test_unknown_options_are_refused(self) -> None:
        space = self.make_space()
        with pytest.raises(SpecError) as e:
            make_space(space.name, {**space.options(), "no_such_option": 1})
        assert e.value.field.startswith("space_options")

    def test_neighbours_are_other_members(self) -> None:
        """``neighbours`` (a MutableSpace): validated members, distinct, never the
        architecture itself, in a fixed order, and a walk through them stays in the space."""
        space = self.make_space()
        if not isinstance(space, MutableSpace):
            pytest.skip(f"the {space.name} space does not mutate architectures")
        rng = random.Random(7)
        for arch in self._samples(space, 10, seed=8):
            for _ in range(5):  # a short random walk from each sample
                found = space.neighbours(arch)
                assert found, f"{space.describe(arch)} has no neighbours"
                keys = [json.dumps(n, sort_keys=True) for n in found]
                assert len(set(keys)) == len(keys), "a neighbour is listed twice"
                assert json.dumps(arch, sort_keys=True) not in keys
                assert all(space.validate(n) == n for n in found)
                assert space.neighbours(arch) == found  # a pure function of the architecture
                arch = rng.choice(found)

    def test_raw_feature_params_are_feature_params_unbinned(self) -> None:
        """``raw_feature_params`` (a RawFeatureSpace): the same names as ``feature_params``,
        the same values wherever those are not bins of a number, and numbers where they are."""
        space = self.make_space()
        if not isinstance(space, RawFeatureSpace):
            pytest.skip(f"the {space.name} space has no raw feature parameters")
        assert isinstance(space, FeatureSpace)
        for arch in self._samples(space, 10, seed=9):
            raw, shown = space.raw_feature_params(arch), space.feature_params(arch)
            assert set(raw) == set(shown)
            for name, value in raw.items():
                assert value == shown[name] or (
                    isinstance(value, int | float) and isinstance(shown[name], str)
                ), f"{name}: {value!r} vs {shown[name]!r}"
