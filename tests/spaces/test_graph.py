"""FlexiBERT architecture graphs: construction, label vocabulary, hashes and pictures."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import networkx as nx
import pytest
from _procs import TABLE
from matplotlib.image import imread

from archsearch.spaces import SpecError, load_table
from archsearch.spaces._graph import (
    architecture_graph,
    graph_hash,
    graph_image,
    graph_png,
    node_labels,
    ordered_labels,
)

# Two layers: 2 sa-sdp heads at hidden 128 with FF stack [512, 1024, 512], then 4 c-9 heads at
# hidden 256 with one FF layer of 1024.
TWO_LAYERS: dict[str, Any] = {
    "l": 2,
    "o": ["sa", "c"],
    "p": ["sdp", "9"],
    "h": [128, 256],
    "n": [2, 4],
    "f": [[512, 1024, 512], [1024]],
}

MINI: dict[str, Any] = {
    "l": 4,
    "o": ["sa", "sa", "l", "l"],
    "p": ["sdp", "sdp", "dct", "dct"],
    "h": [256, 256, 128, 128],
    "n": [2, 2, 4, 4],
    "f": [[512, 512, 512], [512, 512, 512], [1024], [1024]],
}


def test_known_two_layer_graph_by_hand() -> None:
    # Nodes: input (0); layer 0: heads 1, 2, add_norm 3, f512 4, f1024 5, f512 6, add_norm 7;
    # layer 1: heads 8..11, add_norm 12, f1024 13, add_norm 14; output 15  -> 16 nodes.
    # Edges, layer 0: 0->1, 0->2, 1->3, 2->3, 0->3 (residual), 3->4->5->6->7, 3->7 (residual)
    #   = 2 + 2 + 1 + 4 + 1 = 10; layer 1: 7->8..11 (4), 8..11->12 (4), 7->12, 12->13->14,
    #   12->14 = 4 + 4 + 1 + 2 + 1 = 12; 14->15 = 1.  Total 23.
    g = architecture_graph(TWO_LAYERS)
    assert g.number_of_nodes() == 16
    assert g.number_of_edges() == 23
    assert node_labels(g) == [
        "input",
        "sa_h128_p-sdp",
        "sa_h128_p-sdp",
        "add_norm",
        "f512",
        "f1024",
        "f512",
        "add_norm",
        "c_h256_p-9",
        "c_h256_p-9",
        "c_h256_p-9",
        "c_h256_p-9",
        "add_norm",
        "f1024",
        "add_norm",
        "output",
    ]
    expected = {(0, 1), (0, 2), (1, 3), (2, 3), (0, 3), (3, 4), (4, 5), (5, 6), (6, 7), (3, 7)}
    expected |= {(7, h) for h in range(8, 12)} | {(h, 12) for h in range(8, 12)}
    expected |= {(7, 12), (12, 13), (13, 14), (12, 14), (14, 15)}
    assert set(g.edges) == expected


def test_graph_is_an_upper_triangular_dag_from_input_to_output() -> None:
    g = architecture_graph(MINI)
    # 2 + sum(n_i + len(f_i) + 2) = 2 + (2+3+2)*2 + (4+1+2)*2 = 30 nodes;
    # 1 + sum(2 n_i + len(f_i) + 3) = 1 + (4+3+3)*2 + (8+1+3)*2 = 45 edges.
    assert (g.number_of_nodes(), g.number_of_edges()) == (30, 45)
    assert nx.is_directed_acyclic_graph(g)
    assert all(u < v for u, v in g.edges)  # the reference's upper-triangular matrix order
    assert [v for v in g if g.in_degree(v) == 0] == [0]
    assert [v for v in g if g.out_degree(v) == 0] == [29]
    assert node_labels(g).count("l_h128_p-dct") == 8


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"h": [128]}, "architecture.h"),
        ({"n": [2, 0]}, "architecture.n[1]"),
        ({"f": [[512], []]}, "architecture.f[1]"),
        ({"l": 0}, "architecture.l"),
        ({"o": "sa"}, "architecture.o"),
    ],
)
def test_malformed_architectures_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        architecture_graph({**TWO_LAYERS, **change})
    assert err.value.field == field


def test_ordered_labels_follow_the_reference_order() -> None:
    labels = ordered_labels([256, 128], [1024, 512], [9, 5])
    assert labels == [
        "input",
        "output",
        "add_norm",
        "",
        "f512",
        "f1024",
        "",
        "l_h128_p-dft",
        "l_h128_p-dct",
        "l_h256_p-dft",
        "l_h256_p-dct",
        "",
        "sa_h128_p-sdp",
        "sa_h128_p-wma",
        "sa_h256_p-sdp",
        "sa_h256_p-wma",
        "",
        "c_h128_p-5",
        "c_h128_p-9",
        "c_h256_p-5",
        "c_h256_p-9",
    ]
    # Edit costs are index differences: a width change in one group is cheap, a type change
    # crosses a spacer and costs more.
    assert labels.index("f1024") - labels.index("f512") == 1
    assert labels.index("sa_h128_p-sdp") - labels.index("l_h256_p-dct") == 2
    # Every label a graph of these values can have is in the vocabulary.
    assert set(node_labels(architecture_graph(TWO_LAYERS))) <= set(labels)


def test_hash_is_equal_for_equal_graphs_and_invariant_to_node_numbering() -> None:
    g = architecture_graph(TWO_LAYERS)
    h = graph_hash(g)
    assert len(h) == 64  # sha256 hex
    assert graph_hash(architecture_graph(dict(TWO_LAYERS))) == h
    order = list(g.nodes)
    random.Random(0).shuffle(order)
    shuffled = nx.relabel_nodes(g, dict(zip(g.nodes, order, strict=True)))
    assert graph_hash(shuffled) == h


@pytest.mark.parametrize(
    "change",
    [
        {"n": [2, 2]},  # one head fewer
        {"f": [[512, 512, 1024], [1024]]},  # FF widths in another order
        {"p": ["wma", "9"]},  # another attention parameter
        {"h": [256, 256]},  # another hidden size
        {key: TWO_LAYERS[key][::-1] for key in "ophnf"},  # the two layers swapped
    ],
)
def test_hash_differs_for_different_architectures(change: dict[str, Any]) -> None:
    assert graph_hash(architecture_graph({**TWO_LAYERS, **change})) != graph_hash(
        architecture_graph(TWO_LAYERS)
    )


def _first_table_graph(row: dict[str, Any]) -> nx.DiGraph:
    """The graph of the first FlexiBERT library format, with which the published tables were
    hashed: ``a_h{h}_s-{s}`` heads, one FF layer, and no residual edges."""
    g = nx.DiGraph()

    def add(label: str) -> int:
        g.add_node(len(g), label=label)
        return len(g) - 1

    prev = add("input")
    for i in range(row["l"]):
        heads = [add(f"a_h{row['h'][i]}_s-{row['s'][i]}") for _ in range(row["a"][i])]
        add_norm = add("add_norm")
        for head in heads:
            g.add_edge(prev, head)
            g.add_edge(head, add_norm)
        ff = add(f"f{row['f'][i]}")
        prev = add("add_norm")
        nx.add_path(g, [add_norm, ff, prev])
    g.add_edge(prev, add("output"))
    return g


def test_hash_reproduces_the_published_table_hashes() -> None:
    # The table's md5 hashes came from the reference hash_graph with as many rounds as nodes;
    # recomputing them checks our hash function string for string.
    table = load_table(TABLE)
    with open(TABLE) as f:
        hashes = json.load(f)["hashes"]
    rows = list(zip(table.architectures, hashes, strict=True))
    for row, expected in random.Random(0).sample(rows, 100):
        g = _first_table_graph(row)
        assert graph_hash(g, algo="md5", rounds=g.number_of_nodes()) == expected


def test_hash_rejects_bad_settings() -> None:
    g = architecture_graph(TWO_LAYERS)
    with pytest.raises(ValueError, match="unknown hash algorithm"):
        graph_hash(g, algo="nope")
    with pytest.raises(ValueError, match="rounds"):
        graph_hash(g, rounds=-1)


def test_graph_image_is_a_png_that_grows_with_depth(tmp_path: Any) -> None:
    small = graph_image(TWO_LAYERS, title="two layers")
    assert small[:8] == b"\x89PNG\r\n\x1a\n"
    big = imread(io.BytesIO(graph_image(MINI)))
    assert big.shape[0] > imread(io.BytesIO(small)).shape[0]  # taller: more layers
    path = graph_png(TWO_LAYERS, tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
