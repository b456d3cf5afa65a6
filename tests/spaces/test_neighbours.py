"""``neighbours`` of the spaces that mutate architectures (``MutableSpace``)."""

from __future__ import annotations

import random
from typing import Any

from _procs import TABLE

from archsearch.spaces import BertSpace, FlexiBertSmallSpace, FlexiBertSpace


def _changed(space: Any, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    pa, pb = space.to_params(a), space.to_params(b)
    return sorted(k for k in pa.keys() | pb.keys() if pa.get(k) != pb.get(k))


def test_bert_neighbours_change_one_parameter() -> None:
    space = BertSpace()
    arch = {
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 2,
        "intermediate_size": 512,
    }
    found = space.neighbours(arch)
    assert len(found) == 2 + 2 + 2 + 2  # the other values of each of the four parameters
    assert all(len(_changed(space, arch, n)) == 1 for n in found)
    # A new hidden size keeps the feed-forward ratio (intermediate = ratio x hidden).
    assert {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 2,
            "intermediate_size": 256} in found  # fmt: skip


def test_bert_neighbour_hidden_size_takes_the_nearest_valid_head_count() -> None:
    space = BertSpace(hidden_size=[128, 96], num_attention_heads=[4, 8, 3])
    arch = {
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 8,
        "intermediate_size": 128,
    }
    (wider,) = [n for n in space.neighbours(arch) if n["hidden_size"] == 96]
    assert wider["num_attention_heads"] == 8 and wider["intermediate_size"] == 96
    arch["num_attention_heads"] = 4
    (other,) = [n for n in space.neighbours(arch) if n["hidden_size"] == 96]
    assert other["num_attention_heads"] == 4


def test_flexibert_neighbours_count_and_one_parameter_each() -> None:
    space = FlexiBertSpace()
    arch = {
        "l": 2,
        "o": ["sa", "c"],
        "p": ["sdp", "9"],
        "h": [256, 128],
        "n": [2, 4],
        "f": [[512, 1024, 512], [1024]],
    }
    found = space.neighbours(arch)
    # 1 layer count; per layer 5 other operations, 1 hidden, 1 heads, 1 FF depth, and one
    # other width per FF layer (3 for the first layer, 1 for the second).
    assert len(found) == 1 + (8 + 3) + (8 + 1)
    same_layers = [n for n in found if n["l"] == 2]
    one_value = [n for n in same_layers if len(_changed(space, arch, n)) == 1]
    depth_changes = [n for n in same_layers if [len(f) for f in n["f"]] != [3, 1]]
    assert len(one_value) + len(depth_changes) == len(same_layers)
    assert {"l": 2, "o": ["sa", "c"], "p": ["sdp", "9"], "h": [256, 128], "n": [2, 4],
            "f": [[512, 1024, 512], [1024, 1024, 1024]]} in found  # fmt: skip
    (deeper,) = [n for n in found if n["l"] == 4]
    assert deeper["o"] == ["sa", "c", "c", "c"] and deeper["f"][3] == [1024]


def test_hierarchical_flexibert_neighbours_change_a_whole_stack() -> None:
    space = FlexiBertSpace(hierarchical=True)
    for arch in (space.sample(random.Random(s)) for s in range(5)):
        for n in space.neighbours(arch):
            assert space.validate(n) == n  # stacks stay paired


def test_small_table_neighbours_are_the_rows_one_choice_away_or_the_nearest() -> None:
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    assert space.members is not None
    rows = list(space.members.values())

    def distance(a: dict[str, Any], b: dict[str, Any]) -> int:
        return sum(a[k][i] != b[k][i] for k in "ahsf" for i in range(a["l"]))

    fallback = 0
    for row in rows:
        found = space.neighbours(row)
        same = [r for r in rows if r["l"] == row["l"] and r != row]
        one_away = [r for r in same if distance(row, r) == 1]
        other_count = [  # the other layer count: shared layers kept, new ones repeat the last
            r for r in rows if r["l"] != row["l"] and all(
                r[k] == (row[k] + [row[k][-1]] * 2 if row["l"] == 2 else row[k][:2])
                for k in "ahsf")
        ]  # fmt: skip
        if one_away or other_count:
            assert sorted(map(space.describe, found)) == sorted(
                map(space.describe, one_away + other_count)
            )
        else:
            fallback += 1
            nearest = min(distance(row, r) for r in same)
            assert sorted(map(space.describe, found)) == sorted(
                space.describe(r) for r in same if distance(row, r) == nearest
            )
    assert fallback > 0  # the table has rows with no row one choice away


def test_small_space_without_a_table_has_every_one_choice_change() -> None:
    space = FlexiBertSmallSpace()
    arch = {"l": 2, "a": [2, 4], "h": [128, 256], "s": ["sdp", "wma"], "f": [512, 2048]}
    found = space.neighbours(arch)
    assert len(found) == 1 + 2 * (1 + 1 + 1 + 2)
    assert all(len(_changed(space, arch, n)) == 1 for n in found if n["l"] == 2)
