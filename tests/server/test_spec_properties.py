"""Property tests: the spec validator answers any JSON, and any table file, with SpecError only.

``SearchSpec.from_dict``/``from_json`` is what ``LaunchSearch`` and ``archsearch launch`` run on
a person's input; any other exception becomes INTERNAL on the server and a traceback in the CLI.
Hypothesis generates arbitrary JSON values, mutations of valid specs at every key path, and
table files of every shape (bytes, wrong JSON shapes, mutated real rows).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _procs import TABLE, cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.server._spec import _KNOWN, MAX_SPEC_DEPTH, SearchSpec
from archsearch.spaces import SpecError, load_table

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TABLE_SETTINGS = settings(SETTINGS, max_examples=150)  # each example reads a file

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "sst2", "bert", "median", "tpe", "boshnas", "flexibert-small", "²"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(sorted(_KNOWN)), children, max_size=4
        )
    ),
    max_leaves=12,
)

SMALL_TABLE: dict[str, Any] | None = None


def _small_table() -> dict[str, Any]:
    """The first rows of the real FlexiBERT table, as a valid small table to mutate."""
    global SMALL_TABLE
    if SMALL_TABLE is None:
        raw = json.loads(Path(TABLE).read_text())
        SMALL_TABLE = {"model_dicts": raw["model_dicts"][:6], "accuracies": raw["accuracies"][:6]}
    return SMALL_TABLE


def valid_specs(table: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "b",
            "space": "bert",
            "n_trials": 3,
            "loop": "tpe",
            "pruner": {"type": "median", "n_startup_trials": 2},
            "objectives": ["accuracy:max", "params:min"],
            "recipe": {
                "max_steps": 10,
                "eval_every": 5,
                "distill": {"mode": "logits", "alpha": 0.5},
            },
            "data": {"task": "sst2", "train_subset": 100},
            "space_options": {"hidden_size": [128], "num_attention_heads": [2, 4]},
        },
        {
            "name": "f",
            "space": "flexibert",
            "n_trials": 3,
            "loop": "random",
            "tasks": ["sst2", "rte"],
            # a multi-task trial reports <task>.<metric> (plain "accuracy" is refused)
            "objectives": ["sst2.accuracy:max"],
            "space_options": {"variant": "test", "hierarchical": True},
            "loop_options": {},
        },
        {
            "name": "l",
            "space": "flexibert",
            "n_trials": 3,
            "loop": "boshnas",
            "space_options": {"hierarchical": True},
            "loop_options": {
                "library_size": 10,
                "features": "both",
                "embedding": {"partners": 4, "max_epochs": 200, "ged_timeout": 1.0},
                "n_init": 2,
                "surrogate_options": {},
                "gobi_options": {},
                "acquisition_search": "scan",
            },
        },
        {
            "name": "g",
            "space": "flexibert-small",
            "loop": "embedding-gp",
            "n_trials": 3,
            "loop_options": {"library_size": 10, "n_init": 2, "mc_samples": 16},
        },
        {
            "name": "t",
            "space": "flexibert-small",
            "trainer": "table",
            "n_trials": 3,
            "pruner": "none",
            "space_options": {"table": table, "task": "sst2"},
        },
    ]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a JSON value (dict keys and list indices), the value's own first."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = replaced(copy[head], rest, new, delete)
    return copy


def only_spec_errors(obj: Any) -> None:
    with contextlib.suppress(SpecError):
        SearchSpec.from_dict(obj)
    try:
        text = json.dumps(obj)
    except (ValueError, TypeError):
        return
    with contextlib.suppress(SpecError):
        SearchSpec.from_json(text)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("table") / "small.json"
    path.write_text(json.dumps(_small_table()))
    return str(path)


@SETTINGS
@given(obj=json_values)
def test_any_json_value(obj: Any) -> None:
    only_spec_errors(obj)


@SETTINGS
@given(text=st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_any_text(text: str) -> None:
    with contextlib.suppress(SpecError):
        SearchSpec.from_json(text)


@SETTINGS
@given(extra=st.dictionaries(st.sampled_from(sorted(_KNOWN)), json_values, max_size=6))
def test_known_fields_with_any_value(extra: dict[str, Any]) -> None:
    only_spec_errors({"name": "x", "space": "bert", "n_trials": 2, **extra})


@SETTINGS
@given(data=st.data(), new=json_values, delete=st.booleans())
def test_mutated_valid_spec(small_table: str, data: st.DataObject, new: Any, delete: bool) -> None:
    base = data.draw(st.sampled_from(valid_specs(small_table)))
    path = data.draw(st.sampled_from(paths(base)))
    only_spec_errors(replaced(base, path, new, delete and bool(path)))


def test_valid_specs_pass(small_table: str) -> None:
    for spec in valid_specs(small_table):
        SearchSpec.from_dict(spec)


@pytest.mark.parametrize("depth", [MAX_SPEC_DEPTH + 1, 5_000, 200_000])
def test_deep_nesting(small_table: str, depth: int) -> None:
    """Nested JSON under the size limit: json.loads or any later recursion must not escape."""
    text = "[" * depth + "]" * depth
    with pytest.raises(SpecError):
        SearchSpec.from_json(text)
    with pytest.raises(SpecError, match="nested"):
        SearchSpec.from_json(f'{{"name": "x", "space": "bert", "n_trials": 2, "recipe": {text}}}')
    deep: Any = 1
    for _ in range(min(depth, 50_000)):
        deep = {"a": deep}
    for base in valid_specs(small_table):
        for key in ("recipe", "loop_options", "space_options", "data", "pruner"):
            with pytest.raises(SpecError) as e:
                SearchSpec.from_dict({**base, key: deep})
            assert key in str(e.value)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"tasks": 5}, "tasks"),
        ({"task": "sst2", "tasks": 5}, "tasks"),
        ({"data": {"task": "sst2"}, "tasks": "sst2"}, "tasks"),
        ({"tasks": {"a": 1}}, "tasks"),
        ({"tasks": [["sst2"]]}, "tasks"),
        ({"task": ["sst2"]}, "task"),
        ({"pruner": {"type": ["median"]}}, "pruner.type"),
        ({"pruner": {"type": {"a": 1}}}, "pruner.type"),
        ({"loop": ["tpe"]}, "loop"),
        ({"trainer": {"x": 1}}, "trainer"),
        ({"space": "flexibert", "space_options": {"variant": ["test"]}}, "space_options.variant"),
        ({"objectives": [{"metric": "accuracy", "direction": ["max"]}]}, "direction"),
        ({"recipe": {"precision": ["fp32"]}}, "recipe.precision"),
        ({"data": {"tasks": 5}}, "data.tasks"),
        # kept unchecked by Optuna until the first ask or report: refused at launch instead
        ({"loop_options": {"n_startup_trials": "x"}}, "loop_options.n_startup_trials"),
        ({"loop_options": {"gamma": 0.1}}, "loop_options.gamma"),
        ({"pruner": {"type": "median", "n_warmup_steps": 1.5}}, "pruner.n_warmup_steps"),
        ({"pruner": {"type": "median", "n_startup_trials": "2"}}, "pruner.n_startup_trials"),
    ],
)
def test_wrong_types_name_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({"name": "x", "space": "bert", "n_trials": 2, **patch})
    assert field in str(e.value)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"embedding": {"bogus": 1}}, "loop_options.embedding"),
        ({"embedding": {"dim": 3}}, "loop_options.embedding.dim"),
        ({"embedding": {"ged_timeout": [1]}}, "loop_options.embedding.ged_timeout"),
        ({"embedding": {"lr": "fast"}}, "loop_options.embedding"),
        ({"library_seed": -1}, "loop_options.embedding"),
        ({"features": ["both"]}, "loop_options.features"),
    ],
)
def test_library_loop_options(small_table: str, options: dict[str, Any], field: str) -> None:
    """Options the library's embedder reads only when it is built are checked at launch."""
    spec = valid_specs(small_table)[2]
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({**spec, "loop_options": {"library_size": 10, **options}})
    assert field in str(e.value)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"task": ["sst2"]}, "space_options.task"),
        ({"task": {"a": 1}}, "space_options.task"),
        ({"table": ["x"]}, "space_options.table"),
    ],
)
def test_table_space_options(small_table: str, options: dict[str, Any], field: str) -> None:
    spec = valid_specs(small_table)[-1]
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({**spec, "space_options": {"table": small_table, **options}})
    assert field in str(e.value)


# ------------------------------------------------------------------------------- table files

table_shapes = st.fixed_dictionaries(
    {},
    optional={
        "model_dicts": json_values | st.lists(json_values, max_size=4),
        "accuracies": json_values | st.lists(json_values, max_size=4),
    },
)


def _check_table(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "table.json"
    path.write_bytes(content)
    load_table.cache_clear()  # the cache is per path; every example rewrites the same file
    spec = {
        "name": "t",
        "space": "flexibert-small",
        "trainer": "table",
        "n_trials": 2,
        "space_options": {"table": str(path)},
    }
    try:
        SearchSpec.from_dict(spec)
    except SpecError as e:
        assert e.field.startswith("space_options.table") or e.field == "table", e


@TABLE_SETTINGS
@given(content=st.binary(max_size=64))
def test_table_any_bytes(tmp_path: Path, content: bytes) -> None:
    _check_table(tmp_path, content)


@TABLE_SETTINGS
@given(obj=json_values | table_shapes)
def test_table_wrong_shapes(tmp_path: Path, obj: Any) -> None:
    _check_table(tmp_path, json.dumps(obj).encode())


@TABLE_SETTINGS
@given(data=st.data(), new=json_values, delete=st.booleans())
def test_table_mutated_rows(tmp_path: Path, data: st.DataObject, new: Any, delete: bool) -> None:
    base = _small_table()
    path = data.draw(st.sampled_from(paths(base)))
    _check_table(tmp_path, json.dumps(replaced(base, path, new, delete and bool(path))).encode())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (json.dumps({"model_dicts": 5, "accuracies": []}).encode(), "model_dicts"),
        (
            json.dumps(
                {
                    "model_dicts": [
                        {"l": 2, "a": [2, 2], "h": [128, 128], "s": ["sdp", "sdp"], "f": [512, 512]}
                    ],
                    "accuracies": [{"SST-2": "high"}],
                }
            ).encode(),
            "score",
        ),
    ],
)
def test_table_errors_say_what(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(content)
    load_table.cache_clear()
    with pytest.raises(SpecError) as e:
        load_table(str(path))
    assert problem in str(e.value)


def test_cli_launch_wrong_type_is_one_line(tmp_path: Path) -> None:
    """`archsearch launch --set tasks=5` names the field; exit 2, no traceback, no server needed
    (the CLI validates before connecting)."""
    r = subprocess.run(
        [
            *cli("launch", "--name", "x", "--space", "bert", "--trials", "2", "--task", "sst2"),
            "--set",
            "tasks=5",
            "--server",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch: invalid search spec"), r.stderr
    assert "tasks" in lines[0] and "Traceback" not in r.stderr
