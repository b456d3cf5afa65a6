"""An autodistil study's spec: sub-spaces, teacher, top_n, budget and the job settings are
validated at launch, each bad one refused with the field that is wrong and the fix."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _autodistil import AUTODISTIL, CATALOGUE

from archsearch.server import cli
from archsearch.server._spec import SearchSpec
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError, SearchClient
from archsearch.spaces import AutoDistilSpace, SpecError

SPEC: dict[str, Any] = {
    "name": "ad",
    "space": "autodistil",
    "loop": "autodistil",
    "trainer": "autodistil",
    "n_trials": 9,
    "task": "sst2",
    "space_options": {"subspaces": "minilm-k3"},
    "loop_options": {
        "top_n": 3,
        "budget": {"flops": 1e9},
        "supernet": {"steps": 20, "batch_size": 8, "loss": "kl"},
        "rank": {"proxy_steps": 10},
    },
}


def spec_with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return spec


def test_a_good_spec_round_trips() -> None:
    spec = SearchSpec.from_dict(SPEC, CATALOGUE)
    assert spec.loop == "autodistil" and spec.loop_options == SPEC["loop_options"]
    again = SearchSpec.from_dict(spec.to_dict(), CATALOGUE)
    assert again == spec
    space = spec.build_space()
    assert isinstance(space, AutoDistilSpace) and len(space.student_keys) == 24


@pytest.mark.parametrize(
    ("path", "value", "field", "says"),
    [
        ("n_trials", 8, "n_trials", "at least 9"),
        ("space_options.subspaces", "minilm-k7", "space_options.subspaces", "minilm-k3"),
        ("space_options.subspaces", [], "space_options.subspaces", "preset name"),
        (
            "space_options.subspaces",
            [{"name": "x", "layers": [2.0], "heads": [0.5], "mlp_ratio": [2.0]}],
            "space_options.subspaces[0].layers",
            "above 1",
        ),
        (
            "space_options.subspaces",
            [{"name": "x", "layers": "1/6,2/6,0", "heads": [0.5], "mlp_ratio": [2.0]}],
            "space_options.subspaces[0].layers",
            "start <= end",
        ),
        (
            "space_options.subspaces",
            [{"name": "x", "layers": [0.5], "heads": [0.5], "mlp_ratio": [2.0]}] * 2,
            "space_options.subspaces",
            "share a name",
        ),
        ("space_options.teacher", "my-teacher", "space_options.teacher", "teacher_shape"),
        ("space_options.teacher_shape", {"layers": 2}, "space_options.teacher_shape", "missing"),
        ("loop_options.top_n", "3", "loop_options.top_n", "an int"),
        ("loop_options.budget", {"flops": -1}, "loop_options.budget.flops", "positive"),
        ("loop_options.budget", {"memory": 5}, "loop_options.budget", '{"flops": N}'),
        ("loop_options.budget", {"params": 10**6}, "loop_options.budget.params", "cheapest"),
        ("loop_options.supernet", {"loss": "js"}, "loop_options.supernet.loss", "kl, mse"),
        ("loop_options.supernet", {"lr": "big"}, "loop_options.supernet.lr", "must be int"),
        ("loop_options.rank", {"supernet": "a/1"}, "loop_options.rank.supernet", "set by"),
        ("loop_options.teacher", "x", "loop_options.teacher", "known: top_n"),
        ("pruner", {"type": "median"}, "pruner", 'drop "pruner" from the spec'),
        ("pruner", "hyperband", "pruner", "the top_n students the ranking picked"),
    ],
)
def test_bad_settings_name_the_field_and_the_fix(
    path: str, value: Any, field: str, says: str
) -> None:
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict(spec_with(path, value), CATALOGUE)
    assert e.value.field == field, str(e.value)
    assert says in str(e.value)


def test_the_loop_needs_the_autodistil_space() -> None:
    spec = {**SPEC, "space": "bert", "space_options": {}, "trainer": "any"}
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict(spec, CATALOGUE)
    assert e.value.field == "space" and 'use "space": "autodistil"' in str(e.value)


def test_the_space_needs_the_autodistil_loop() -> None:
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({**SPEC, "loop": "tpe", "loop_options": {}}, CATALOGUE)
    assert e.value.field == "loop" and 'use "loop": "autodistil"' in str(e.value)


def test_any_teacher_with_its_shape() -> None:
    shape = {
        "layers": 4,
        "hidden": 256,
        "heads": 4,
        "intermediate": 1024,
        "vocab_size": 1000,
        "max_positions": 128,
    }
    spec = spec_with("space_options", {"teacher": "/models/t", "teacher_shape": shape})
    space = SearchSpec.from_dict(spec, CATALOGUE).build_space()
    assert isinstance(space, AutoDistilSpace) and space.teacher.head_dim == 64


def _teacher_folder(folder: Path, drop: str = "", **config: Any) -> str:
    folder.mkdir()
    base = {
        "model_type": "bert",
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "vocab_size": 1000,
        "max_position_embeddings": 128,
        "type_vocab_size": 2,
    }
    base.pop(drop, None)
    (folder / "config.json").write_text(json.dumps({**base, **config}))
    return str(folder)


def test_a_teacher_folder_says_its_shape_and_the_study_keeps_it(tmp_path: Path) -> None:
    folder = _teacher_folder(tmp_path / "t")
    spec = SearchSpec.from_dict(spec_with("space_options", {"teacher": folder}), CATALOGUE)
    space = spec.build_space()
    assert isinstance(space, AutoDistilSpace)
    assert (space.teacher.layers, space.teacher.hidden, space.teacher.head_dim) == (4, 256, 64)
    # stored with the study: a restart serves it when the folder is gone
    (tmp_path / "t" / "config.json").unlink()
    again = SearchSpec.from_dict(spec.to_dict(), CATALOGUE).build_space()
    assert isinstance(again, AutoDistilSpace) and again.teacher == space.teacher


def test_a_given_shape_of_a_known_teacher_is_kept() -> None:
    shape = {"layers": 4, "hidden": 256, "heads": 4, "intermediate": 1024}
    shape |= {"vocab_size": 1000, "max_positions": 128}
    opts = {"teacher": "bert-base-uncased", "teacher_shape": shape}
    spec = SearchSpec.from_dict(spec_with("space_options", opts), CATALOGUE)
    again = SearchSpec.from_dict(spec.to_dict(), CATALOGUE).build_space()
    assert isinstance(again, AutoDistilSpace) and again.teacher.hidden == 256


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"model_type": "roberta"}, "'roberta' model"),
        ({"num_attention_heads": 3}, "not a multiple of 3 heads"),
        ({"drop": "hidden_size"}, "missing fields ['hidden']"),
    ],
)
def test_a_bad_teacher_folder_is_named(tmp_path: Path, config: dict[str, Any], says: str) -> None:
    folder = _teacher_folder(tmp_path / "t", **config)
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict(spec_with("space_options", {"teacher": folder}), CATALOGUE)
    assert e.value.field.startswith("space_options.teacher") and says in str(e.value)
    assert "config.json" in str(e.value)


def test_a_folder_without_config_still_asks_for_the_shape(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict(
            spec_with("space_options", {"teacher": str(tmp_path / "t")}), CATALOGUE
        )
    assert "teacher_shape" in str(e.value) and "config.json" in str(e.value)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    srv = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 's.db'}", port=0))
    srv.manager.trainers.remember(AUTODISTIL)  # as a connected autodistil worker describes it
    srv.start()
    yield srv
    srv.stop(0)


def test_the_rpc_and_the_cli_name_the_bad_setting(
    server: ArchsearchServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = spec_with("loop_options.budget", {"flops": 0})
    with SearchClient(server.address) as client, pytest.raises(ClientError) as e:
        client.launch(bad)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "loop_options.budget.flops: must be a positive number, got 0" in e.value.details
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec_with("space_options.subspaces", "minilm-k9")))
    code = cli.main(["launch", "--spec", str(path), "--server", server.address])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("archsearch: ") and "Traceback" not in err
    assert "space_options.subspaces: unknown preset 'minilm-k9'" in err
    with SearchClient(server.address) as client:
        assert [s.name for s in client.list_studies()] == []  # nothing was created


def test_a_pruner_is_refused_at_launch_with_the_fix(server: ArchsearchServer) -> None:
    """It pruned the picked students against the supernets' losses, and the study ended with
    no result ("failed (retries spent)")."""
    bad = spec_with("pruner", {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    with SearchClient(server.address) as client, pytest.raises(ClientError) as e:
        client.launch(bad)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details.startswith("pruner: loop autodistil takes no pruner")
    assert '"pruner": "none"' in e.value.details
    with SearchClient(server.address) as client:
        assert client.launch(spec_with("pruner", {"type": "none"}))  # the fix it names
