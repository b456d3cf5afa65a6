"""FlexiBERT architectures as computational graphs (FlexiBERT paper, section "Transformer2vec").

The construction follows the reference ``graph_util.model_dict_to_graph`` exactly, so that
graph edit distances, hashes and embeddings are comparable with the published library:

* node ``"input"``;
* per layer ``i``: ``n_i`` head nodes labelled ``f"{o_i}_h{h_i}_p-{p_i}"``, an ``"add_norm"``
  node, one node per feed-forward layer labelled ``f"f{dim}"`` and a second ``"add_norm"``;
* edges: previous output -> every head -> first add_norm; previous output -> first add_norm
  (residual); first add_norm -> f_1 -> ... -> f_k -> second add_norm; first add_norm -> second
  add_norm (residual);
* the last add_norm -> ``"output"``.

Nodes are the integers ``0 .. N-1`` in construction order (the reference's adjacency-matrix
order) and carry the string attribute ``label``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from archsearch.spaces._errors import SpecError

INPUT = "input"
OUTPUT = "output"
ADD_NORM = "add_norm"
#: Spacer in :func:`ordered_labels`; it makes the index gap between label groups.
SPACER = ""

#: Parameters of the linear-transform and self-attention operations, in the reference's order.
LINEAR_PARAMS = ("dft", "dct")
ATTENTION_PARAMS = ("sdp", "wma")

#: Rounds of neighbourhood hashing in :func:`graph_hash` (the reference uses 5).
HASH_ROUNDS = 5


def head_label(op: str, hidden: int, param: str) -> str:
    """The label of one operation head, e.g. ``head_label("sa", 256, "sdp") == "sa_h256_p-sdp"``."""
    return f"{op}_h{hidden}_p-{param}"


def ff_label(dim: int) -> str:
    """The label of one feed-forward layer, e.g. ``ff_label(512) == "f512"``."""
    return f"f{dim}"


def _layer_lists(arch: Mapping[str, Any]) -> tuple[int, list[Any], list[Any], list[Any], list[Any]]:
    """Checks the shape of ``arch`` just enough to build a graph; returns (l, o, p, h, n)."""
    if not isinstance(arch, Mapping):
        raise SpecError("architecture", "must be a JSON object with keys l, o, p, h, n, f")
    missing = [k for k in ("l", "o", "p", "h", "n", "f") if k not in arch]
    if missing:
        raise SpecError(f"architecture.{missing[0]}", "missing", "keys are l, o, p, h, n, f")
    layers = arch["l"]
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise SpecError("architecture.l", f"must be a positive int, got {layers!r}")
    for key in ("o", "p", "h", "n", "f"):
        values = arch[key]
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != layers:
            raise SpecError(f"architecture.{key}", f"must be a list of {layers} values")
    for i, (heads, stack) in enumerate(zip(arch["n"], arch["f"], strict=True)):
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise SpecError(f"architecture.n[{i}]", f"must be a positive int, got {heads!r}")
        if not isinstance(stack, Sequence) or isinstance(stack, str) or not stack:
            raise SpecError(f"architecture.f[{i}]", "must be a non-empty list of widths")
    return layers, list(arch["o"]), list(arch["p"]), list(arch["h"]), list(arch["n"])


def architecture_graph(arch: Mapping[str, Any]) -> nx.DiGraph:
    """Builds the computational graph of a FlexiBERT architecture.

    Args:
        arch: architecture in the FlexiBERT format ``{"l", "o", "p", "h", "n", "f"}``. Only its
            shape is checked here (lengths, positive head counts, non-empty FF stacks); use
            ``FlexiBertSpace.validate`` to check that the values belong to a space.

    Returns:
        A DAG whose nodes are ``0 .. N-1`` in construction order, each with a ``label``.
        ``N = 2 + sum_i (n_i + len(f_i) + 2)`` and the edge count is
        ``1 + sum_i (2 n_i + len(f_i) + 3)``.

    Raises:
        SpecError: when ``arch`` is not shaped like a FlexiBERT architecture.
    """
    layers, ops, params, hidden, heads = _layer_lists(arch)
    graph = nx.DiGraph()

    def add(label: str) -> int:
        node = graph.number_of_nodes()
        graph.add_node(node, label=label)
        return node

    prev_out = add(INPUT)
    for i in range(layers):
        label = head_label(str(ops[i]), int(hidden[i]), str(params[i]))
        head_nodes = [add(label) for _ in range(heads[i])]
        add_norm1 = add(ADD_NORM)
        for head in head_nodes:
            graph.add_edge(prev_out, head)
            graph.add_edge(head, add_norm1)
        graph.add_edge(prev_out, add_norm1)  # residual around the operation block
        chain = [add_norm1] + [add(ff_label(int(dim))) for dim in arch["f"][i]]
        add_norm2 = add(ADD_NORM)
        chain.append(add_norm2)
        nx.add_path(graph, chain)
        graph.add_edge(add_norm1, add_norm2)  # residual around the feed-forward stack
        prev_out = add_norm2
    graph.add_edge(prev_out, add(OUTPUT))
    return graph


def node_labels(graph: nx.DiGraph) -> list[str]:
    """The node labels of ``graph`` in node order (the reference's ``ops`` list)."""
    return [str(graph.nodes[node]["label"]) for node in sorted(graph.nodes)]


def ordered_labels(
    hidden_sizes: Iterable[int], ff_dims: Iterable[int], kernels: Iterable[int]
) -> list[str]:
    """The label vocabulary in the order whose indices define graph-edit costs.

    The reference (``generate_dissimilarity_matrix``) places labels in the list
    ``[input, output, add_norm, '', f-dims..., '', l_h*_p-dft/dct..., '', sa_h*_p-sdp/wma...,
    '', c_h*_p-k...]``; substituting label a by b costs ``|index(a) - index(b)|`` and inserting
    or deleting a node costs its label's index. The empty strings are spacers that widen the
    gap between groups, so swapping an operation type costs more than changing a width.

    The reference iterates Python sets of ints for widths, whose order is an accident of
    hashing; here every numeric group is ascending, which is what that order was meant to be.

    Args:
        hidden_sizes: hidden sizes of the space (every operation type uses the same set).
        ff_dims: feed-forward widths of the space.
        kernels: convolution kernel sizes of the space.

    Returns:
        The labels with spacers, e.g. for hidden {128}, FF {512}, kernels {5}:
        ``['input', 'output', 'add_norm', '', 'f512', '', 'l_h128_p-dft', 'l_h128_p-dct', '',
        'sa_h128_p-sdp', 'sa_h128_p-wma', '', 'c_h128_p-5']``.
    """
    hidden = sorted({int(h) for h in hidden_sizes})
    labels = [INPUT, OUTPUT, ADD_NORM, SPACER]
    labels += [ff_label(d) for d in sorted({int(d) for d in ff_dims})]
    labels.append(SPACER)
    labels += [head_label("l", h, p) for h in hidden for p in LINEAR_PARAMS]
    labels.append(SPACER)
    labels += [head_label("sa", h, p) for h in hidden for p in ATTENTION_PARAMS]
    labels.append(SPACER)
    kernel_sizes = sorted({int(k) for k in kernels})
    labels += [head_label("c", h, str(k)) for h in hidden for k in kernel_sizes]
    return labels


def graph_hash(graph: nx.DiGraph, algo: str = "sha256", rounds: int = HASH_ROUNDS) -> str:
    """The reference's Weisfeiler-Lehman-style graph hash (``graph_util.hash_graph``).

    Every node starts with ``H(str((out_degree, in_degree, label)))``; then, for ``rounds``
    rounds, a node's hash becomes ``H(sorted in-neighbour hashes joined |
    sorted out-neighbour hashes joined | own hash)``; the fingerprint is
    ``H(str(sorted(node hashes)))``. Isomorphic labelled graphs get equal hashes.

    This is written out rather than taken from ``networkx.weisfeiler_lehman_graph_hash``
    because the two are not the same equivalence on DiGraphs: networkx aggregates successors
    only and starts from the bare label, so it ignores in-neighbours and degrees; and with the
    reference's exact strings ``algo="md5"`` reproduces the hashes stored in the FlexiBERT
    tables (checked in the tests), which makes de-duplication against them possible.

    Args:
        graph: labelled DAG (node attribute ``label``), e.g. from :func:`architecture_graph`.
        algo: a ``hashlib`` algorithm; the library uses ``"sha256"``, the published tables
            ``"md5"``.
        rounds: neighbourhood rounds; the library uses 5 (:data:`HASH_ROUNDS`), the first
            FlexiBERT tables used the node count.

    Returns:
        The hex digest.
    """
    if algo not in hashlib.algorithms_available:
        raise ValueError(f"unknown hash algorithm {algo!r}; use one hashlib offers, e.g. sha256")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}; the library uses {HASH_ROUNDS}")

    def digest(text: str) -> str:
        return hashlib.new(algo, text.encode("utf-8")).hexdigest()

    nodes = sorted(graph.nodes)
    hashes = {
        v: digest(str((graph.out_degree(v), graph.in_degree(v), graph.nodes[v]["label"])))
        for v in nodes
    }
    for _ in range(rounds):
        hashes = {
            v: digest(
                "".join(sorted(hashes[u] for u in graph.predecessors(v)))
                + "|"
                + "".join(sorted(hashes[w] for w in graph.successors(v)))
                + "|"
                + hashes[v]
            )
            for v in nodes
        }
    return digest(str(sorted(hashes.values())))


# Fill colours per node kind for the picture (operation heads by type).
_COLOURS = {
    "sa": "#9ecae1",
    "l": "#a1d99b",
    "c": "#fdae6b",
    "f": "#fee391",
    ADD_NORM: "#d9d9d9",
    INPUT: "#ffffff",
    OUTPUT: "#ffffff",
}


def _colour(label: str) -> str:
    if label in _COLOURS:
        return _COLOURS[label]
    prefix = label.split("_", 1)[0]
    if prefix in _COLOURS:
        return _COLOURS[prefix]
    return _COLOURS["f"]


def _layered_positions(graph: nx.DiGraph) -> dict[int, tuple[float, float]]:
    """Top-to-bottom layout: one row per topological generation, rows centred."""
    positions: dict[int, tuple[float, float]] = {}
    for depth, generation in enumerate(nx.topological_generations(graph)):
        row = sorted(generation)
        for k, node in enumerate(row):
            positions[node] = (k - (len(row) - 1) / 2.0, -float(depth))
    return positions


def graph_image(arch: Mapping[str, Any], title: str | None = None, dpi: int = 100) -> bytes:
    """A PNG picture of the architecture's graph, laid out top (input) to bottom (output).

    Heads of one layer sit side by side; residual edges are drawn as arcs so they stay
    visible next to the straight feed-forward chain. Colours: attention blue, linear
    transform green, convolution orange, feed-forward yellow, add_norm grey.

    Args:
        arch: architecture in the FlexiBERT format.
        title: optional caption (e.g. ``FlexiBertSpace.describe(arch)``).
        dpi: resolution of the PNG.

    Returns:
        The PNG file's bytes.
    """
    # The object-oriented Figure API needs no pyplot global state, so this is safe to call
    # from server threads.
    from matplotlib.figure import Figure

    graph = architecture_graph(arch)
    positions = _layered_positions(graph)
    depth = 1 + int(-min(y for _, y in positions.values()))
    width = 1 + max(int(2 * abs(x)) for x, _ in positions.values())
    fig = Figure(figsize=(max(4.0, 1.7 * width), max(3.0, 0.6 * depth + 0.8)), dpi=dpi)
    ax = fig.add_subplot()
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    straight = [(u, v) for u, v in graph.edges if positions[u][1] - positions[v][1] <= 1.0]
    skips = [(u, v) for u, v in graph.edges if positions[u][1] - positions[v][1] > 1.0]
    common = {"ax": ax, "arrows": True, "arrowsize": 8, "node_size": 700, "width": 0.8}
    nx.draw_networkx_edges(graph, positions, edgelist=straight, edge_color="#555555", **common)
    nx.draw_networkx_edges(
        graph,
        positions,
        edgelist=skips,
        edge_color="#b03030",
        connectionstyle="arc3,rad=0.45",
        **common,
    )
    for node, (x, y) in positions.items():
        label = str(graph.nodes[node]["label"])
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=7,
            bbox={"boxstyle": "round,pad=0.3", "fc": _colour(label), "ec": "#333333", "lw": 0.6},
        )
    xs = [x for x, _ in positions.values()]
    ax.set_xlim(min(xs) - 1.0, max(xs) + 1.0)
    ax.set_ylim(-depth + 0.4, 0.6)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def graph_png(arch: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Writes :func:`graph_image` of ``arch`` to ``path`` and returns the path."""
    out = Path(path)
    out.write_bytes(graph_image(arch, title=title))
    return out
