"""The written contracts stay in step with the registries: the proto's spec comment names every
space, loop and trainer of archsearch's own, and each base class lists its implementations and
its suite. Plugins installed beside archsearch (README: `pip install -e examples/mlp_plugin`)
are not archsearch's to document: they are left out, so installing one keeps this green."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from archsearch.search import LOOPS, SearchLoop, make_loop
from archsearch.server._trainers import ENTRY_POINT_GROUP, installed_trainers
from archsearch.spaces import SPACES, DesignSpace
from archsearch.worker import Trainer

PROTO = Path(__file__).resolve().parents[2] / "proto" / "archsearch" / "v1" / "archsearch.proto"
SUITES = Path(__file__).resolve().parent


def spec_json_comment() -> str:
    """The comment above ``LaunchSearchRequest.spec_json``, without the ``//`` markers."""
    text = PROTO.read_text()
    block = re.search(r"message LaunchSearchRequest \{\n((?:\s*//.*\n)+)\s*string spec_json", text)
    assert block, "LaunchSearchRequest.spec_json lost its comment"
    return " ".join(line.strip().removeprefix("//").strip() for line in block[1].splitlines())


def quoted(comment: str, key: str) -> set[str]:
    """The quoted names in ``key (...)`` of the spec comment (up to its ';' or ')')."""
    found = re.search(rf"\b{key} \(string(?:, required)?: ([^;)]*)", comment) or re.search(
        rf"\b{key} \(([^;)]*)", comment
    )
    assert found, f"the spec comment does not describe {key!r}"
    return set(re.findall(r'"([^"]+)"', found[1]))


def own(registry: Mapping[str, Any]) -> set[str]:
    """The names of ``registry`` that archsearch itself implements (not installed plugins',
    nor a test's temporary ones)."""
    return {
        n
        for n, obj in registry.items()
        if getattr(getattr(obj, "func", obj), "__module__", "").startswith("archsearch.")
    }


def own_trainers() -> set[str]:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name for ep in eps if ep.value.startswith("archsearch.")}


def test_the_proto_names_every_space_loop_and_trainer() -> None:
    comment = spec_json_comment()
    assert quoted(comment, "space") == own(SPACES)
    assert quoted(comment, "loop") == own(LOOPS)
    assert quoted(comment, "trainer") == own_trainers()
    assert own_trainers() <= {i.name for i in installed_trainers()}


def implementations(base: type) -> tuple[set[str], set[str]]:
    """The registry names and the class names of ``base``'s implementations."""
    if base is SearchLoop:
        return own(LOOPS), {type(make_loop(name, 0, 1)).__name__ for name in own(LOOPS)}
    if base is DesignSpace:
        return own(SPACES), {SPACES[name].__name__ for name in own(SPACES)}
    from archsearch.worker import AutodistilTrainer, BertTrainer, LoraTrainer, TableTrainer

    trainers = {c.name: c for c in (AutodistilTrainer, BertTrainer, LoraTrainer, TableTrainer)}
    assert set(trainers) == own_trainers(), "a new trainer: add it here and to Trainer's docstring"
    return set(trainers), {cls.__name__ for cls in trainers.values()}


@pytest.mark.parametrize(
    ("base", "suite"),
    [(SearchLoop, "loop_suite.py"), (DesignSpace, "space_suite.py"), (Trainer, "trainer_suite.py")],
)
def test_base_classes_list_their_implementations_and_suite(base: type, suite: str) -> None:
    doc = base.__doc__ or ""
    names, classes = implementations(base)
    missing = sorted(c for c in classes if c not in doc) + sorted(
        n for n in names if f"``{n}``" not in doc
    )
    assert not missing, f"{base.__name__}'s docstring does not list {missing}"
    assert f"tests/conformance/{suite}" in doc and (SUITES / suite).exists()
