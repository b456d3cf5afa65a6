"""The FlexiBERT heterogeneous design space (Tuli et al., JAIR 2023).

Every encoder layer picks its own operation and operation parameter (self-attention with
scaled dot-product or weighted multiplicative scores, an FNet-style linear transform by DFT or
DCT, or a dynamic span-based convolution with kernel k), hidden size, number of heads and
feed-forward stack (1..3 layers, each with its own width). Architectures use the reference
``model_dict`` format::

    {"l": 4, "o": ["sa", "sa", "l", "l"], "p": ["sdp", "sdp", "dct", "dct"],
     "h": [256, 256, 128, 128], "n": [2, 2, 4, 4],
     "f": [[512, 512, 512], [512, 512, 512], [1024], [1024]]}

Variants (``design_space_test.yaml`` and ``design_space.yaml`` of the reference):

======== ======== ============== =========== =========== ===================== ========
variant  layers   hidden         heads       FF depth    FF widths             kernels
======== ======== ============== =========== =========== ===================== ========
test     2, 4     128, 256       2, 4        1, 3        512, 1024             5, 9
large    2, 4, 6  128, 256, 512  2, 4, 8     1, 2, 3     512, 1024, 2048, 4096 5, 9, 13
======== ======== ============== =========== =========== ===================== ========

The test variant has 240 choices per layer and 240**2 + 240**4 = 3,317,817,600 architectures.
With ``hierarchical`` (level 1 of the paper's search) consecutive pairs of layers share every
choice and feed-forward stacks are homogeneous: 96 choices per pair, 96 + 96**2 = 9,312
architectures, small enough to enumerate and embed as a library.

Optuna parameters are per layer (``l{i}.op`` ...) or, in hierarchical mode, per stack of two
layers (``s{k}.op`` ...); see :meth:`FlexiBertSpace.suggest`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from archsearch.spaces._base import SPACES, DesignSpace
from archsearch.spaces._errors import SpecError
from archsearch.spaces._flexibert_format import (
    check_architecture,
    flexibert_to_small,
    small_to_flexibert,
)
from archsearch.spaces._flexibert_variants import VARIANTS, FlexiBertVariant, LayerChoice
from archsearch.spaces._graph import architecture_graph, graph_hash, graph_image, ordered_labels
from archsearch.spaces._options import reject_unknown
from archsearch.spaces._protocols import (
    EnumerableSpace,
    FlexiBertConvertible,
    GraphImageSpace,
    GraphSpace,
    MutableSpace,
)

if TYPE_CHECKING:
    import networkx as nx
    import optuna

#: ``enumerate()`` lists a space only up to this many architectures (a library must fit in
#: memory and be embedded pairwise); bigger spaces are sampled instead.
ENUMERATE_LIMIT = 100_000


@SPACES.register("flexibert")
class FlexiBertSpace(
    DesignSpace, GraphSpace, EnumerableSpace, FlexiBertConvertible, GraphImageSpace, MutableSpace
):
    """FlexiBERT's heterogeneous design space (see the module docstring).

    Options:
        variant: ``"test"`` (default; the paper's space) or ``"large"``.
        hierarchical: default False. True: consecutive pairs of layers share every choice
            (the paper's level-1 search, ``layers_per_stack=2``), and feed-forward stacks are
            homogeneous unless ``heterogeneous_ff`` is set explicitly.
        heterogeneous_ff: each feed-forward layer picks its own width (True) or one width is
            repeated through the stack (False). Default: ``not hierarchical``.
    """

    name = "flexibert"

    def __init__(self, **options: Any) -> None:
        reject_unknown(options, {"variant", "hierarchical", "heterogeneous_ff"})
        variant = options.get("variant", "test")
        if not isinstance(variant, str) or variant not in VARIANTS:
            raise SpecError(
                "space_options.variant",
                f"unknown variant {variant!r}",
                f"one of {', '.join(VARIANTS)}",
            )
        hierarchical = options.get("hierarchical", False)
        if not isinstance(hierarchical, bool):
            raise SpecError(
                "space_options.hierarchical", f"must be true or false, not {hierarchical!r}"
            )
        heterogeneous_ff = options.get("heterogeneous_ff", not hierarchical)
        if not isinstance(heterogeneous_ff, bool):
            raise SpecError(
                "space_options.heterogeneous_ff", f"must be true or false, not {heterogeneous_ff!r}"
            )
        self.variant_name: str = variant
        self.variant: FlexiBertVariant = VARIANTS[variant]
        self.hierarchical = hierarchical
        self.heterogeneous_ff = heterogeneous_ff
        #: Layers that share one choice (the reference's ``layers_per_stack``).
        self.layers_per_stack = 2 if hierarchical else 1
        for layers in self.variant.layers:
            # Every variant's layer counts are even; keep the invariant explicit for new ones.
            if layers % self.layers_per_stack:
                raise SpecError("space_options.hierarchical", f"{layers} layers cannot be paired")
        #: Every choice of one layer (or stack), in enumeration order.
        self.unit_choices: list[LayerChoice] = list(self._unit_choices())

    def options(self) -> dict[str, Any]:
        return {
            "variant": self.variant_name,
            "hierarchical": self.hierarchical,
            "heterogeneous_ff": self.heterogeneous_ff,
        }

    # -- the choice sets ------------------------------------------------------------------

    def _ff_stacks(self, depth: int) -> Iterator[tuple[int, ...]]:
        widths = self.variant.ff_widths
        if self.heterogeneous_ff:
            yield from itertools.product(widths, repeat=depth)
        else:
            for w in widths:
                yield (w,) * depth

    def _unit_choices(self) -> Iterator[LayerChoice]:
        v = self.variant
        for operation in v.operations:
            op, param = operation.split("-", 1)
            for hidden in v.hidden:
                for heads in v.heads:
                    for depth in v.ff_depths:
                        for ff in self._ff_stacks(depth):
                            yield LayerChoice(op, param, hidden, heads, ff)

    def size(self) -> int:
        """The number of architectures in the space (exact)."""
        per_unit = len(self.unit_choices)
        return sum(per_unit ** (layers // self.layers_per_stack) for layers in self.variant.layers)

    def iter_architectures(self) -> Iterator[dict[str, Any]]:
        """Every architecture, lazily, in a deterministic order.

        Order: by layer count, then lexicographically over the units' choices in
        :attr:`unit_choices` order (operation, hidden, heads, FF depth, FF widths).
        """
        for layers in self.variant.layers:
            units = layers // self.layers_per_stack
            for combo in itertools.product(self.unit_choices, repeat=units):
                yield self._build(combo)

    def enumerate(self) -> Iterator[dict[str, Any]]:
        """Every architecture when the space has at most :data:`ENUMERATE_LIMIT` (hierarchical
        mode: 9,312 in the test variant); nothing otherwise, so that library loops sample
        instead of listing billions. :meth:`iter_architectures` lists any space."""
        if self.size() <= ENUMERATE_LIMIT:
            yield from self.iter_architectures()

    def _build(self, units: Sequence[LayerChoice]) -> dict[str, Any]:
        layers = [u for u in units for _ in range(self.layers_per_stack)]
        return {
            "l": len(layers),
            "o": [u.op for u in layers],
            "p": [u.param for u in layers],
            "h": [u.hidden for u in layers],
            "n": [u.heads for u in layers],
            "f": [list(u.ff) for u in layers],
        }

    def units(self, architecture: dict[str, Any]) -> list[LayerChoice]:
        """The per-unit (layer, or stack in hierarchical mode) choices of a valid architecture."""
        a = self.validate(architecture)
        return [
            LayerChoice(a["o"][i], a["p"][i], a["h"][i], a["n"][i], tuple(a["f"][i]))
            for i in range(0, a["l"], self.layers_per_stack)
        ]

    def neighbours(self, architecture: dict[str, Any]) -> list[dict[str, Any]]:
        """The architectures one parameter away (see :class:`MutableSpace`), in this order:
        the other layer counts (the shared units kept, new ones repeating the last), then per
        unit (layer, or stack in hierarchical mode) its operation, hidden size, heads, FF depth
        (widths kept, a new FF layer repeating the last width) and FF width(s)."""
        units = self.units(architecture)
        v = self.variant
        out: list[tuple[LayerChoice, ...]] = []
        for layers in v.layers:
            n = layers // self.layers_per_stack
            if n != len(units):
                out.append(tuple(units[:n]) + (units[-1],) * max(0, n - len(units)))
        for k, u in enumerate(units):
            changed: list[LayerChoice] = []
            for operation in v.operations:
                op, param = operation.split("-", 1)
                if operation != u.operation:
                    changed.append(LayerChoice(op, param, u.hidden, u.heads, u.ff))
            changed += [
                LayerChoice(u.op, u.param, h, u.heads, u.ff) for h in v.hidden if h != u.hidden
            ]
            changed += [
                LayerChoice(u.op, u.param, u.hidden, n, u.ff) for n in v.heads if n != u.heads
            ]
            for depth in v.ff_depths:
                if depth != len(u.ff):
                    ff = u.ff[:depth] + (u.ff[-1],) * max(0, depth - len(u.ff))
                    changed.append(LayerChoice(u.op, u.param, u.hidden, u.heads, ff))
            positions = range(len(u.ff)) if self.heterogeneous_ff else [None]
            for j in positions:
                for w in v.ff_widths:
                    if w == u.ff[j or 0]:
                        continue
                    ff = (w,) * len(u.ff) if j is None else (*u.ff[:j], w, *u.ff[j + 1 :])
                    changed.append(LayerChoice(u.op, u.param, u.hidden, u.heads, ff))
            out += [(*tuple(units[:k]), c, *tuple(units[k + 1 :])) for c in changed]
        return [self._build(combo) for combo in out]

    # -- DesignSpace ----------------------------------------------------------------------

    def _prefix(self, unit: int) -> str:
        return f"s{unit}" if self.hierarchical else f"l{unit}"

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Chooses an architecture with readable, conditional per-layer parameters.

        ``num_layers``; then per layer ``i`` (hierarchical mode: per stack ``k`` of two layers,
        prefix ``s{k}``): ``l{i}.op`` (``"sa-sdp"``, ``"sa-wma"``, ``"l-dft"``, ``"l-dct"``,
        ``"c-5"``, ...), ``l{i}.hidden``, ``l{i}.heads``, ``l{i}.ff_depth`` and either
        ``l{i}.ff{j}`` for each FF layer ``j`` (heterogeneous FF) or one ``l{i}.ff_width``.
        Each name always has the same choices, whatever the other values are.
        """
        v = self.variant
        layers = int(trial.suggest_categorical("num_layers", list(v.layers)))
        units: list[LayerChoice] = []
        for k in range(layers // self.layers_per_stack):
            u = self._prefix(k)
            operation = str(trial.suggest_categorical(f"{u}.op", list(v.operations)))
            op, param = operation.split("-", 1)
            hidden = int(trial.suggest_categorical(f"{u}.hidden", list(v.hidden)))
            heads = int(trial.suggest_categorical(f"{u}.heads", list(v.heads)))
            depth = int(trial.suggest_categorical(f"{u}.ff_depth", list(v.ff_depths)))
            if self.heterogeneous_ff:
                ff = tuple(
                    int(trial.suggest_categorical(f"{u}.ff{j}", list(v.ff_widths)))
                    for j in range(depth)
                )
            else:
                ff = (int(trial.suggest_categorical(f"{u}.ff_width", list(v.ff_widths))),) * depth
            units.append(LayerChoice(op, param, hidden, heads, ff))
        return self.validate(self._build(units))

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        arch = self.validate(architecture)
        params: dict[str, Any] = {"num_layers": arch["l"]}
        for k, unit in enumerate(self.units(arch)):
            u = self._prefix(k)
            params[f"{u}.op"] = unit.operation
            params[f"{u}.hidden"] = unit.hidden
            params[f"{u}.heads"] = unit.heads
            params[f"{u}.ff_depth"] = len(unit.ff)
            if self.heterogeneous_ff:
                for j, width in enumerate(unit.ff):
                    params[f"{u}.ff{j}"] = width
            else:
                params[f"{u}.ff_width"] = unit.ff[0]
        return params

    def validate(self, architecture: Any) -> dict[str, Any]:
        """Checks ``architecture`` against this space and returns its normalised copy.

        Normalisation: lists become fresh lists, a kernel given as an int becomes its string
        (``9`` -> ``"9"``). Errors name the first offending field, e.g. ``architecture.p[2]``
        or ``architecture.f[1][0]``.
        """
        return check_architecture(
            architecture,
            self.variant,
            heterogeneous_ff=self.heterogeneous_ff,
            hierarchical=self.hierarchical,
        )

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """Draws an architecture: the layer count uniformly, then each layer's (or stack's)
        choice uniformly among :attr:`unit_choices` (240 in the test variant).

        So every architecture with a given layer count is equally likely; the space as a whole
        is not sampled uniformly (each 4-layer architecture is 240**2 times rarer than each
        2-layer one), as in the reference, which draws the layer count first.
        """
        layers = rng.choice(self.variant.layers)
        units = [rng.choice(self.unit_choices) for _ in range(layers // self.layers_per_stack)]
        return self._build(units)

    def describe(self, architecture: dict[str, Any]) -> str:
        """``L4[2x256 sa-sdp f512-512-512 | ... | 4x128 l-dct f1024]``: the layer count, then
        per layer heads x hidden, the operation and its parameter, and the FF widths."""
        a = architecture
        layers = " | ".join(
            LayerChoice(
                a["o"][i], str(a["p"][i]), a["h"][i], a["n"][i], tuple(a["f"][i])
            ).describe()
            for i in range(a["l"])
        )
        return f"L{a['l']}[{layers}]"

    # -- identity and graphs --------------------------------------------------------------

    def fingerprint(self, architecture: dict[str, Any]) -> str:
        """sha256 of the normalised architecture's canonical JSON (sorted keys, no spaces)."""
        canonical = json.dumps(self.validate(architecture), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def graph(self, architecture: dict[str, Any]) -> nx.DiGraph:
        """The computational graph of ``architecture`` (``spaces._graph``)."""
        return architecture_graph(self.validate(architecture))

    def graph_hash(self, architecture: dict[str, Any]) -> str:
        """The reference's sha256 Weisfeiler-Lehman hash of the architecture's graph."""
        return graph_hash(self.graph(architecture))

    def graph_labels(self) -> list[str]:
        """The graph-label vocabulary of this space, in the order that defines edit costs."""
        v = self.variant
        return ordered_labels(v.hidden, v.ff_widths, v.kernels)

    def to_flexibert(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """The architecture in the FlexiBERT format (this space's own: validated)."""
        return self.validate(architecture)

    def graph_image(self, architecture: dict[str, Any]) -> bytes:
        """A PNG picture of the architecture's graph, captioned with ``describe``."""
        arch = self.validate(architecture)
        return graph_image(arch, title=self.describe(arch))

    # -- the flexibert-small table format -------------------------------------------------

    def from_small(self, table_architecture: dict[str, Any]) -> dict[str, Any]:
        """Converts a ``flexibert-small`` architecture ``{"l", "a", "h", "s", "f"}``.

        The result is ``o="sa"``, ``p=s``, ``n=a``, ``f=[[f]]`` per layer, validated against
        this space: a small-table FF width of 2048 exists only in the large variant.
        """
        return self.validate(small_to_flexibert(table_architecture))

    def to_small(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """Converts to the ``flexibert-small`` format; SpecError when that format cannot
        express it (an operation other than self-attention, more than one FF layer, or a
        value outside the small space)."""
        return flexibert_to_small(self.validate(architecture))
