"""The design-space interface.

A design space turns Optuna suggestions into architectures and back, validates architectures
that come from elsewhere (a user's spec, a retry, another loop), samples uniformly, and names
its parameters so the dashboard is readable.

Contract for subclasses:
    * ``suggest(trial)`` uses only ``trial.suggest_*`` (define-by-run) and returns an architecture
      that ``validate`` accepts. Parameter names are stable across trials, and a name's
      distribution never changes (Optuna refuses dynamic value spaces), so conditional choices
      get their own names. A space whose members are not a product set (a table's rows) may
      map the suggestion to a member, as a pure function of the parameters, and record what
      it mapped in a trial user attribute (``mapped_from``).
    * ``validate(arch)`` returns the normalised architecture or raises ``SpecError`` naming the
      field.
    * ``to_params(arch)`` returns exactly the parameters ``suggest`` would have set for ``arch``,
      so ``enqueue_trial(to_params(arch))`` followed by ``suggest`` rebuilds ``arch``.
    * Options passed to the constructor are validated there (unknown option -> ``SpecError``).
    * Optional capabilities (graphs, an enumeration, a FlexiBERT form, a picture) are declared
      by subclassing the protocols of ``spaces/_protocols.py``; callers test them with
      ``isinstance``.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from archsearch.spaces._errors import SpecError
from archsearch.spaces._registry import Registry

if TYPE_CHECKING:
    import optuna


class DesignSpace(abc.ABC):
    """A space of architectures (the contract is in the module docstring).

    Implementations today (``archsearch.spaces.SPACES``):
        * :class:`~archsearch.spaces.BertSpace`: ``bert``, homogeneous BERT encoders;
        * :class:`~archsearch.spaces.FlexiBertSpace`: ``flexibert``, FlexiBERT's heterogeneous
          space (variants, hierarchical or not);
        * :class:`~archsearch.spaces.FlexiBertSmallSpace`: ``flexibert-small``, FlexiBERT's
          small space, optionally restricted to the rows a NAS table scores;
        * :class:`~archsearch.spaces.LoraSpace`: ``lora``, LoRA / DyLoRA fine-tuning settings
          (they go into the candidate's recipe, see ``candidate_parts``);
        * :class:`~archsearch.spaces.AutoDistilSpace`: ``autodistil``, AutoDistil's sub-spaces
          (supernet and rank jobs) and their students (train jobs).

    Replay's :class:`~archsearch.spaces.RowTableSpace` (the rows of a table of parameters) is
    built by ``archsearch replay``, not registered, and runs the same suite.

    A new space registers itself with ``@SPACES.register("name")`` (the registry of
    ``spaces/_registry.py``; ``make_space`` looks names up there), declares its optional
    capabilities with the protocols of ``spaces/_protocols.py``, and runs the conformance suite
    ``tests/conformance/space_suite.py`` (``SpaceConformance``) with a subclass in
    ``tests/conformance/test_spaces.py``.
    """

    #: Registry name used in search specs ("bert", "flexibert", "flexibert-small").
    name: str = ""

    @abc.abstractmethod
    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Chooses an architecture through ``trial.suggest_*`` calls."""

    @abc.abstractmethod
    def validate(self, architecture: Any) -> dict[str, Any]:
        """Returns the normalised architecture; raises SpecError when it is not in the space."""

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> dict[str, Any]:
        """Draws an architecture uniformly at random."""

    @abc.abstractmethod
    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """The Optuna parameters ``suggest`` would set for ``architecture``."""

    @abc.abstractmethod
    def describe(self, architecture: dict[str, Any]) -> str:
        """A compact one-line description for tables and the dashboard."""

    def from_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The architecture whose Optuna parameters are ``params`` (the inverse of
        :meth:`to_params`): ``suggest`` replayed on them.

        Raises:
            SpecError, ValueError, KeyError: ``params`` are not a member's parameters.
        """
        from optuna.trial import FixedTrial

        return self.suggest(FixedTrial(dict(params)))  # type: ignore[arg-type]

    def options(self) -> dict[str, Any]:
        """The options this space was built with (JSON-serialisable)."""
        return {}

    def describe_candidate(self, candidate: dict[str, Any]) -> str:
        """A one-line description of a candidate of this space (its ``to_dict()``): its
        architecture's, unless the space keeps its parameters elsewhere."""
        return self.describe(candidate["architecture"])

    #: Recipe keys this space sets on every candidate (the ``lora`` space's
    #: ``learning_rate``): a study's own value would be silently replaced, so a new study
    #: that gives one is refused (``space_options.<key>`` is where it goes).
    searched_recipe_keys: tuple[str, ...] = ()

    def check_recipe(self, recipe: dict[str, Any]) -> None:
        """Raises SpecError when a study's ``recipe`` sets what this space searches, or what
        its trainers ignore (here: ``recipe.lora``, read by the ``lora`` space's trainer only;
        ``lora`` checks its own)."""
        if "lora" in recipe:
            raise SpecError(
                "recipe.lora",
                f"LoRA settings apply to the lora space only, not {self.name}",
                "use space lora with trainer lora, or remove recipe.lora",
            )

    def candidate_parts(
        self, architecture: dict[str, Any], recipe: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The candidate's architecture and recipe for a suggested ``architecture`` and the
        study's ``recipe``: both unchanged here; a space whose parameters are training
        settings (``lora``) moves them into the recipe."""
        return architecture, recipe


#: Every design space by name, registered where each is defined (``@SPACES.register``).
SPACES: Registry[type[DesignSpace]] = Registry("space", plugins="archsearch.spaces")
