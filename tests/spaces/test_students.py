"""AutoDistil students, sub-spaces and the cost model (spaces/_students.py)."""

from __future__ import annotations

import json

import pytest

from archsearch.spaces._errors import SpecError
from archsearch.spaces._students import (
    BERT_BASE,
    MINILM_L6,
    Student,
    TeacherShape,
    flops,
    is_tied,
    params,
)
from archsearch.spaces._subspaces import PRESETS, SubSpace, preset


def test_paper_subspaces_have_256_students_each_with_bert_base() -> None:
    spaces = preset("autodistil-k3", BERT_BASE)
    assert [s.name for s in spaces] == ["tiny", "small", "base"]
    for space in spaces:
        students = space.students(BERT_BASE)
        assert len(students) == 256
        costs = [params(BERT_BASE, s) for s in students]
        assert costs == sorted(costs)
    tiny = spaces[0].students(BERT_BASE)
    assert {s.layers for s in tiny} == {4, 5, 6, 7}
    assert {s.heads for s in tiny} == {7, 8, 9, 10}
    assert {s.hidden for s in tiny} == {128, 160, 192, 224}
    assert {s.intermediate / s.hidden for s in tiny} == {2.0, 2.5, 3.0, 3.5}
    assert len(preset("autodistil-k1", BERT_BASE)[0].students(BERT_BASE)) == 13824


def test_minilm_subspaces_have_8_tied_students_each() -> None:
    spaces = preset("minilm-k3", MINILM_L6)
    for space in spaces:
        students = space.students(MINILM_L6)
        assert len(students) == 8
        assert all(is_tied(MINILM_L6, s) for s in students)
    assert [s.key() for s in spaces[0].students(MINILM_L6)][:2] == [
        "L2_A4_H128_I256",
        "L2_A4_H128_I384",
    ]
    base = {s.key() for s in spaces[2].students(MINILM_L6)}
    assert "L6_A12_H384_I1536" in base  # the teacher itself is the largest student
    union = preset("minilm-k1", MINILM_L6)[0].students(MINILM_L6)
    assert len(union) == 125
    assert all(s in union for space in spaces for s in space.students(MINILM_L6))


def test_cost_model_matches_known_models() -> None:
    # BertModel(bert-base-uncased) and all-MiniLM-L6-v2 have exactly these many parameters.
    assert params(BERT_BASE, Student(12, 12, 768, 3072)) == 109_482_240
    assert params(MINILM_L6, Student(6, 12, 384, 1536)) == 22_713_216
    # The paper's 11.2 GFLOPs for BERT-base count multiply-adds; ours are 2x multiply-adds.
    assert flops(BERT_BASE, Student(12, 12, 768, 3072)) / 2 / 1e9 == pytest.approx(11.2, abs=0.05)
    small = Student(2, 4, 128, 256)
    assert flops(MINILM_L6, small, seq_len=64) < flops(MINILM_L6, small)
    with pytest.raises(ValueError, match="seq_len"):
        flops(MINILM_L6, small, seq_len=0)


def test_untied_students_cost_their_attention_width() -> None:
    # AutoDistil keeps head size 64: 7 heads are 448 units wide whatever H is.
    s = Student(4, 7, 128, 256)
    assert not is_tied(BERT_BASE, s)
    wider = Student(4, 8, 128, 256)
    per_head = 4 * (4 * 128 * 64 + 3 * 64)  # Q/K/V/output weights and Q/K/V biases of a head
    assert params(BERT_BASE, wider) - params(BERT_BASE, s) == per_head


def test_round_trips_are_json_safe() -> None:
    for name in PRESETS:
        for space in preset(name, MINILM_L6):
            again = SubSpace.from_dict(json.loads(json.dumps(space.to_dict())))
            assert again == space
    s = Student(3, 6, 192, 576)
    assert s.key() == "L3_A6_H192_I576"
    assert Student.from_dict(json.loads(json.dumps(s.to_dict())), MINILM_L6) == s
    assert TeacherShape.from_dict(MINILM_L6.to_dict()) == MINILM_L6
    assert MINILM_L6.head_dim == 32 and BERT_BASE.head_dim == 64


def test_teacher_from_config() -> None:
    class Config:
        num_hidden_layers, hidden_size, num_attention_heads = 6, 384, 12
        intermediate_size, vocab_size, max_position_embeddings, type_vocab_size = (
            1536,
            30522,
            512,
            2,
        )

    assert TeacherShape.from_config(Config()) == MINILM_L6


def test_yaml_style_ranges() -> None:
    space = SubSpace.from_dict(
        {
            "name": "tiny",
            "layers": "4/12,7/12,4",
            "heads": "7/12,10/12,4",
            "hidden": "4/24,7/24,4",
            "mlp_ratio": "2.0,3.5,4",
        }
    )
    assert space == preset("autodistil-k3", BERT_BASE)[0]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"layers": 2, "heads": 4, "hidden": 128}, "missing fields \\['intermediate'\\]"),
        ({"layers": 2, "heads": 4, "hidden": 128, "intermediate": 0}, "student.intermediate"),
        ({"layers": 2.0, "heads": 4, "hidden": 128, "intermediate": 9}, "student.layers"),
        ({"layers": 2, "heads": 4, "hidden": 128, "intermediate": 9, "x": 1}, "unknown"),
        ({"layers": 7, "heads": 4, "hidden": 128, "intermediate": 9}, "exceeds the teacher's 6"),
        ({"layers": 2, "heads": 4, "hidden": 128, "intermediate": 2000}, "intermediate"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_student_from_dict_errors(data: object, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        Student.from_dict(data, MINILM_L6)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"layers": []}, "subspace.layers: must not be empty"),
        ({"layers": [0.5, 1.5]}, "subspace.layers: 1.5 is above 1"),
        ({"heads": [0.5, 0.5]}, "subspace.heads: has duplicates"),
        ({"heads": "1,2"}, "is not 'start,end,count'"),
        ({"heads": "0.5,0.25,2"}, "start <= end"),
        ({"mlp_ratio": [-1]}, "subspace.mlp_ratio: -1 is not a positive number"),
        ({"name": "a/b"}, "subspace.name"),
        ({"depth": [1]}, "unknown fields \\['depth'\\]"),
        ({"hidden": "x"}, "subspace.hidden"),
        # a launch hung building 10^15 students, a server thread spinning for ever
        ({"layers": "0.1,1,100000"}, "count 100000 is above 64"),
        ({"layers": [k / 100 for k in range(1, 101)]}, "has 100 values, more than 64"),
        (
            {"layers": "0.5,1,32", "heads": "0.5,1,32", "mlp_ratio": "1,4,32"},
            "its knobs make 32768 students, more than 20000",
        ),
    ],
)
def test_subspace_from_dict_errors(change: dict[str, object], match: str) -> None:
    data = {**preset("minilm-k3", MINILM_L6)[0].to_dict(), **change}
    with pytest.raises(SpecError, match=match):
        SubSpace.from_dict(data)


def test_subspaces_that_do_not_fit_the_teacher_are_refused() -> None:
    space = SubSpace("big", (1.0,), (1.0,), None, (5.0,))  # I = 5H > the teacher's 4H
    with pytest.raises(SpecError, match=r"subspace 'big'.*intermediate"):
        space.students(MINILM_L6)
    tiny = SubSpace("tiny", (0.01,), (1.0,), None, (1.0,))
    with pytest.raises(SpecError, match="layers multiplier gives 0"):
        tiny.students(MINILM_L6)
    with pytest.raises(SpecError, match=r"unknown preset 'x'.*minilm-k3"):
        preset("x", MINILM_L6)
