"""Optional capabilities a design space declares, beyond :class:`DesignSpace`.

Loops and the server ask ``isinstance(space, GraphSpace)`` instead of probing attributes: a
space that has a capability subclasses its protocol (so the declaration is in the class
statement, and mypy checks the signatures), and any other object with the same methods also
passes the run-time check.

* :class:`GraphSpace`: architecture graphs and their label vocabulary (what Transformer2vec
  embeds; the library loops need it);
* :class:`EnumerableSpace`: every member, listed (a library loop's library);
* :class:`FeatureSpace`: readable per-layer parameters for a surrogate's one-hot features,
  when the Optuna parameters are not those;
* :class:`RawFeatureSpace`: those parameters with numbers unbinned (``numeric`` features);
* :class:`FlexiBertConvertible`: the architecture in FlexiBERT's format (weight transfer);
* :class:`GraphImageSpace`: a PNG picture of an architecture (the dashboard's artifact);
* :class:`MutableSpace`: the architectures one change away (evolution and local search).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import networkx as nx


@runtime_checkable
class GraphSpace(Protocol):
    """A space whose architectures are graphs (``FlexiBertSpace``, ``FlexiBertSmallSpace``)."""

    def graph(self, architecture: dict[str, Any]) -> nx.DiGraph:
        """The architecture's computational graph (labelled nodes)."""
        ...

    def graph_labels(self) -> list[str]:
        """Every node label :meth:`graph` can produce, in a fixed order."""
        ...


@runtime_checkable
class EnumerableSpace(Protocol):
    """A space that can list its members (a table's rows, a small space's product set)."""

    def enumerate(self) -> Iterator[dict[str, Any]]:
        """Every member, in a fixed order (empty when the space is too large to list)."""
        ...


@runtime_checkable
class FeatureSpace(Protocol):
    """A space with readable per-layer parameters other than its Optuna parameters."""

    def feature_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """Parameter name -> value, one entry per layer-level choice."""
        ...


@runtime_checkable
class RawFeatureSpace(Protocol):
    """A :class:`FeatureSpace` whose ``feature_params`` bins numbers for one-hot codes; this
    gives the values themselves (a library loop's ``numeric`` features)."""

    def raw_feature_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """``feature_params`` with every number as it is."""
        ...


@runtime_checkable
class FlexiBertConvertible(Protocol):
    """A space whose architectures have a FlexiBERT form (weight transfer, overlap)."""

    def to_flexibert(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """The architecture in FlexiBERT's format."""
        ...


@runtime_checkable
class GraphImageSpace(Protocol):
    """A space that draws its architectures (the dashboard's picture of a trial)."""

    def graph_image(self, architecture: dict[str, Any]) -> bytes:
        """A PNG of the architecture's graph."""
        ...


@runtime_checkable
class MutableSpace(Protocol):
    """A space that can change one choice of an architecture (regularised evolution mutates
    with it, local search walks it). Spaces whose members are not a product set (a table's
    rows) return members only."""

    def neighbours(self, architecture: dict[str, Any]) -> list[dict[str, Any]]:
        """The members one change away from ``architecture``, in a fixed order: each differs
        in one parameter (a layer count change keeps the shared layers, and a new layer
        repeats the last one). Never ``architecture`` itself, no duplicates, each as
        ``validate`` returns it. A restricted space with no member one change away returns
        its nearest members instead, so a walk never gets stuck."""
        ...
