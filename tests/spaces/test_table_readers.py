"""Every table reader runs :class:`TableReaderConformance`: rows and scores read exactly, a space
whose members are the rows, samplers' suggestions mapped onto rows, clear errors."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
from _procs import TABLE
from conformance.space_suite import SpaceConformance

from archsearch.spaces import (
    TABLE_READERS,
    DesignSpace,
    RowTableSpace,
    SpecError,
    guess_format,
    read_table,
)
from archsearch.spaces._row_table import row_key

NAS_TABLES = Path(TABLE).parents[1] / "nas-tables"

# Decoder-like rows: a layer count, per-layer lists, a choice with many values.
DECODERS = [
    {"n_layer": n, "d_model": d, "n_head": heads[:n], "d_inner": inner[:n], "bias": b}
    for n, d, heads, inner, b in [
        (2, 128, [2, 4], [512, 700], True),
        (2, 256, [4, 4], [900, 1200], False),
        (2, 128, [8, 2], [1500, 600], False),
        (3, 128, [2, 2, 8], [512, 800, 2048], True),
        (3, 256, [4, 8, 8], [1024, 1300, 1700], True),
        (3, 512, [8, 8, 4], [2000, 1900, 1000], False),
        (4, 512, [2, 4, 8, 2], [600, 900, 1100, 1400], True),
        (4, 64, [4, 4, 4, 4], [513, 1000, 1500, 1999], False),
    ]
]
DECODER_SCORES = [30.5, 28.0, 29.25, 26.0, 24.5, 22.0, 23.5, 31.0]


class TableReaderConformance:
    """What every registered :class:`~archsearch.spaces.TableReader` must do."""

    fmt: ClassVar[str] = ""

    def make(self, tmp_path: Path) -> tuple[str, dict[str, Any]]:
        """A source in the format and the reader's options for it."""
        raise NotImplementedError

    #: The rows the source holds, as (architecture, score), and its direction.
    expected: ClassVar[list[tuple[dict[str, Any], float]]] = []
    direction: ClassVar[str] = "maximize"

    def test_is_registered_and_guessed(self, tmp_path: Path) -> None:
        source, _ = self.make(tmp_path)
        assert self.fmt in TABLE_READERS
        assert guess_format(source) == self.fmt

    def test_rows_scores_and_direction(self, tmp_path: Path) -> None:
        source, options = self.make(tmp_path)
        table = read_table(source, self.fmt, **options)
        assert table.direction == self.direction
        got = {row_key(a): s for a, s in zip(table.architectures, table.scores, strict=True)}
        assert got == {row_key(a): s for a, s in self.expected}
        for arch, score in self.expected:
            assert table.score(arch) == score

    def test_the_space_is_the_rows(self, tmp_path: Path) -> None:
        source, options = self.make(tmp_path)
        table = read_table(source, self.fmt, **options)
        space = table.space
        members = {row_key(a) for a in space.enumerate()}  # type: ignore[attr-defined]
        assert members == {row_key(a) for a in table.architectures}
        study = optuna.create_study()
        for arch in table.architectures:  # a row's parameters rebuild it, unmapped
            study.enqueue_trial(space.to_params(arch))
            trial = study.ask()
            assert space.suggest(trial) == arch
            assert "mapped_from" not in trial.user_attrs
            study.tell(trial, 0.0)

    def test_sampled_parameters_map_to_rows(self, tmp_path: Path) -> None:
        source, options = self.make(tmp_path)
        table = read_table(source, self.fmt, **options)
        for sampler in (optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0)):
            study = optuna.create_study(sampler=sampler)
            for _ in range(15):
                trial = study.ask()
                arch = table.space.suggest(trial)
                study.tell(trial, table.score(arch))  # every suggestion is a scored row

    def test_a_missing_source_is_named(self, tmp_path: Path) -> None:
        _, options = self.make(tmp_path)
        missing = str(tmp_path / "missing.db" if self.fmt == "optuna" else tmp_path / "nope.json")
        if self.fmt == "optuna":
            missing = f"sqlite:///{missing}"
        with pytest.raises(SpecError) as e:
            read_table(missing, self.fmt, **options)
        assert e.value.field == "table"
        assert Path(missing.removeprefix("sqlite:///")).name in str(e.value)

    def test_an_unknown_option_is_refused(self, tmp_path: Path) -> None:
        source, options = self.make(tmp_path)
        with pytest.raises(SpecError) as e:
            read_table(source, self.fmt, **options, no_such_option=1)
        assert e.value.field == "table_options.no_such_option"
        assert "known:" in str(e.value)

    #: Whether the format searches a ``RowTableSpace`` and so takes the ``padded`` option.
    padded_option: ClassVar[bool] = True

    def test_padded_suggests_every_parameter_in_every_trial(self, tmp_path: Path) -> None:
        source, options = self.make(tmp_path)
        if not self.padded_option:
            with pytest.raises(SpecError) as e:
                read_table(source, self.fmt, **options, padded=True)
            assert e.value.field == "table_options.padded"
            return
        plain = read_table(source, self.fmt, **options).space
        table = read_table(source, self.fmt, **options, padded="true")  # as the CLI passes it
        space = table.space
        assert isinstance(space, RowTableSpace) and space.padded and not plain.padded  # type: ignore[attr-defined]
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        for arch in table.architectures:  # a row's (padded) parameters still rebuild it
            study.enqueue_trial(space.to_params(arch))
            trial = study.ask()
            assert space.suggest(trial) == arch and "mapped_from" not in trial.user_attrs
            assert set(space.suggested) <= set(trial.params)
            study.tell(trial, table.score(arch))
        for _ in range(10):
            trial = study.ask()
            arch = space.suggest(trial)
            assert set(space.suggested) <= set(trial.params)
            study.tell(trial, table.score(arch))  # every suggestion is a scored row
        with pytest.raises(SpecError) as e:
            read_table(source, self.fmt, **options, padded="yes")
        assert e.value.field == "table_options.padded" and "'yes'" in str(e.value)


def _flexibert_rows() -> list[tuple[dict[str, Any], float]]:
    return [
        ({"l": 2, "a": [2, 4], "h": [128, 256], "s": ["sdp", "wma"], "f": [512, 1024]}, 0.80),
        ({"l": 2, "a": [4, 4], "h": [256, 256], "s": ["sdp", "sdp"], "f": [2048, 512]}, 0.82),
        ({"l": 4, "a": [2] * 4, "h": [128] * 4, "s": ["wma"] * 4, "f": [512] * 4}, 0.79),
        ({"l": 4, "a": [4] * 4, "h": [256] * 4, "s": ["sdp"] * 4, "f": [1024] * 4}, 0.83),
    ]


class TestFlexiBertReader(TableReaderConformance):
    padded_option = False  # the flexibert-small space: every layer's parameters, no padding
    fmt = "flexibert"
    expected = _flexibert_rows()

    def make(self, tmp_path: Path) -> tuple[str, dict[str, Any]]:
        path = tmp_path / "flexi.json"
        rows = self.expected
        unscored = {"l": 2, "a": [2, 2], "h": [128, 128], "s": ["sdp", "sdp"], "f": [512, 512]}
        path.write_text(
            json.dumps(
                {
                    "model_dicts": [a for a, _ in rows] + [unscored],
                    "accuracies": [{"SST-2": s, "CoLA": None} for _, s in rows] + [None],
                }
            )
        )
        return str(path), {"task": "sst2"}


class TestNasTablesReader(TableReaderConformance):
    fmt = "nas-tables"
    direction = "minimize"
    expected: ClassVar[list[tuple[dict[str, Any], float]]] = list(
        zip(DECODERS, DECODER_SCORES, strict=True)
    )

    def make(self, tmp_path: Path) -> tuple[str, dict[str, Any]]:
        path = tmp_path / "decoders.json"
        rows = [
            {"id": i, "arch": a, "valid_ppl": s, "test_ppl": s + 1}
            for i, (a, s) in enumerate(self.expected)
        ]
        rows.append({"id": 99, "arch": {"n_layer": 2, "d_model": 64}, "valid_ppl": None})
        path.write_text(
            json.dumps({"metric": "valid_ppl", "direction": "minimize", "architectures": rows})
        )
        return str(path), {}

    def test_another_metric_says_its_direction(self, tmp_path: Path) -> None:
        """metric=accuracy on a file of perplexities kept the file's minimize: its "best"
        was the worst accuracy."""
        path, _ = self.make(tmp_path)
        with pytest.raises(SpecError, match=r"metric 'test_ppl' is not .* own \('valid_ppl'"):
            read_table(path, self.fmt, metric="test_ppl")
        table = read_table(path, self.fmt, metric="test_ppl", direction="maximize")
        assert table.direction == "maximize" and table.metric == "test_ppl"
        data = json.loads(Path(path).read_text())
        del data["direction"]
        Path(path).write_text(json.dumps(data))
        with pytest.raises(SpecError, match="says no direction for its metric 'valid_ppl'"):
            read_table(path, self.fmt)  # it was minimized without a word
        data["direction"] = "minimize"
        del data["metric"]  # a direction but no metric: the metric given takes it
        Path(path).write_text(json.dumps(data))
        assert read_table(path, self.fmt, metric="valid_ppl").direction == "minimize"

    def test_slots_past_the_layer_count_are_dropped(self, tmp_path: Path) -> None:
        # HW-GPT-Bench keeps 12 slots per list and uses the first sample_n_layer.
        path = tmp_path / "hw.json"
        arch = {"sample_n_layer": 2, "sample_layer_indices": [0, 1], "sample_n_head": [4, 8, 12]}
        path.write_text(
            json.dumps(
                {
                    "metric": "ppl",
                    "direction": "minimize",
                    "architectures": [{"arch": arch, "ppl": 3.0}],
                }
            )
        )
        table = read_table(str(path))
        assert table.architectures == [{"sample_n_layer": 2, "sample_n_head": [4, 8]}]

    def test_the_shared_decoder_tables_read(self) -> None:
        table = read_table(str(NAS_TABLES / "lts_gpt2_wt103.json"))
        assert (len(table.architectures), table.direction, table.metric) == (
            200,
            "minimize",
            "valid_ppl",
        )
        assert isinstance(table.space, RowTableSpace) and table.space.structural == ["n_layer"]


class TestCsvReader(TableReaderConformance):
    fmt = "csv"
    expected: ClassVar[list[tuple[dict[str, Any], float]]] = [
        ({"layers": 2, "width": 128, "act": "gelu", "lr": 0.001}, 0.5),
        ({"layers": 2, "width": 256, "act": "relu", "lr": 0.01}, 0.7),
        ({"layers": 4, "width": 512, "act": "gelu", "lr": 0.003}, 0.9),
        ({"layers": 4, "width": 128, "act": "relu"}, 0.6),  # an empty cell: no lr
    ]

    def make(self, tmp_path: Path) -> tuple[str, dict[str, Any]]:
        path = tmp_path / "runs.csv"
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, ["layers", "width", "act", "lr", "acc"])
            w.writeheader()
            for arch, score in self.expected:
                w.writerow({**arch, "acc": score})
        return str(path), {"score": "acc"}

    def test_a_missing_score_column_lists_the_columns(self, tmp_path: Path) -> None:
        source, _ = self.make(tmp_path)
        with pytest.raises(SpecError, match=r"no column 'score' \(layers, width, act, lr, acc\)"):
            read_table(source)


class TestOptunaStudyReader(TableReaderConformance):
    fmt = "optuna"
    direction = "minimize"
    expected: ClassVar[list[tuple[dict[str, Any], float]]] = [
        ({"depth": 1, "w0": 64}, 3.0),
        ({"depth": 1, "w0": 128}, 2.5),
        ({"depth": 2, "w0": 64, "w1": 32}, 2.0),
        ({"depth": 2, "w0": 128, "w1": 16}, 1.5),
    ]

    def make(self, tmp_path: Path) -> tuple[str, dict[str, Any]]:
        url = f"sqlite:///{tmp_path}/past.db"
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(storage=storage, study_name="past", direction="minimize")
        dists = {
            "depth": optuna.distributions.IntDistribution(1, 2),
            "w0": optuna.distributions.CategoricalDistribution([64, 128]),
            "w1": optuna.distributions.CategoricalDistribution([16, 32]),
        }
        for params, value in self.expected:
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions={k: dists[k] for k in params}, value=value
                )
            )
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
        # an archsearch repeat: another suggestion that mapped to a row tried already, with
        # that row's score (it made 34 "rows" of a study of 30 distinct architectures)
        params = {"depth": 1, "w0": 128}
        study.add_trial(
            optuna.trial.create_trial(
                params={"depth": 2, "w0": 64, "w1": 16},
                distributions={k: dists[k] for k in ("depth", "w0", "w1")},
                value=2.5,
                user_attrs={"duplicate_of": 1, "arch": params},
            )
        )
        storage.engine.dispose()
        return url, {"study": "past"}

    def test_an_unknown_study_lists_the_known_ones(self, tmp_path: Path) -> None:
        source, _ = self.make(tmp_path)
        with pytest.raises(SpecError, match=r"no study 'other'.*known: past"):
            read_table(source, study="other")


def test_an_unknown_format_lists_the_formats(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"unknown table format 'xml'.*csv, flexibert, nas-tables, optuna"
    ):
        read_table(TABLE, "xml")


def test_the_nearest_row_is_the_smallest_scaled_difference() -> None:
    space = RowTableSpace([a for a in DECODERS])
    # 3 layers: d_model 256 is nearest to row 4's; its lists match row 4 except one head.
    params = {
        "d_model": 250,
        "n_head.0": 4,
        "n_head.1": 8,
        "n_head.2": 4,
        "d_inner.0": 1024,
        "d_inner.1": 1300,
        "d_inner.2": 1700,
        "bias": True,
    }
    assert space.nearest_row("n_layer=3", params) == DECODERS[4]
    assert space.sample(random.Random(0)) in DECODERS


class TestRowTableSpace(SpaceConformance):
    """The generic table space keeps the space contract (it is built from a table's rows, not
    registered by name, so the registry and options clauses do not apply)."""

    invalid_architectures: ClassVar[list[tuple[Any, str]]] = [
        ({**DECODERS[0], "d_model": 96}, "architecture.d_model"),
        ({**DECODERS[0], "n_head": [2, 16]}, "architecture.n_head"),
        ({**DECODERS[0], "d_model": 512}, "architecture"),  # each value known; no such row
    ]

    def make_space(self) -> DesignSpace:
        return RowTableSpace(DECODERS)

    test_is_registered = None  # type: ignore[assignment]
    test_options_round_trip = None  # type: ignore[assignment]
    test_unknown_options_are_refused = None  # type: ignore[assignment]


class TestPaddedRowTableSpace(TestRowTableSpace):
    """The padded space keeps the same contract."""

    def make_space(self) -> DesignSpace:
        return RowTableSpace(DECODERS, padded=True)


def test_padding_lets_a_gp_model_every_layer_of_a_varying_depth() -> None:
    """Optuna's GP models the parameters every trial has: without padding, the ones all
    depths share; padded, every slot of the deepest structure."""
    shared = {"structure", "d_model", "bias", "n_head.0", "n_head.1", "d_inner.0", "d_inner.1"}
    for padded, modelled in ((False, shared), (True, {*shared, "n_head.3", "d_inner.3"})):
        space = RowTableSpace(DECODERS, padded=padded)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for arch in DECODERS:
            study.enqueue_trial(space.to_params(arch))
            trial = study.ask()
            space.suggest(trial)
            study.tell(trial, 0.0)
        common = optuna.search_space.intersection_search_space(study.get_trials())
        assert modelled <= set(common) and (padded or "n_head.2" not in common)
    # the unused slots do not change which row a suggestion maps to
    padded_space = RowTableSpace(DECODERS, padded=True)
    params = padded_space.to_params(DECODERS[4]) | {"n_head.3": 4, "d_inner.3": 1999}
    fixed = optuna.trial.FixedTrial(params)
    assert padded_space.suggest(fixed) == DECODERS[4]  # type: ignore[arg-type]


def test_neighbours_are_rows_one_change_away_else_the_nearest() -> None:
    rows = [
        {"n_layer": n, "d_model": d, "n_head": [h] * n}
        for n in (2, 3)
        for d in (64, 128, 256)
        for h in (2, 8)
    ]
    space = RowTableSpace(rows)
    first = {"n_layer": 2, "d_model": 64, "n_head": [2, 2]}
    # only d_model changes: the two other widths; (8, 8) heads change two slots
    assert space.neighbours(first) == [{**first, "d_model": 128}, {**first, "d_model": 256}]
    # no row of DECODERS differs in one parameter: the nearest, never the row itself
    decoders = RowTableSpace(DECODERS)
    near = decoders.neighbours(DECODERS[4])
    assert len(near) == len(DECODERS) - 1 and DECODERS[4] not in near
    assert near[0] == DECODERS[3]  # 3 layers, the same but for d_model, 2 heads, 2 widths


def test_a_repeated_architecture_keeps_its_first_score_in_every_format(tmp_path: Path) -> None:
    """FlexiBERT's format kept the last score of a repeated row (and counted it twice), the
    others the first; the scores they disagree on are counted."""
    raw = json.loads(Path(TABLE).read_text())
    first = raw["model_dicts"][0]
    flexi = tmp_path / "dup.json"
    flexi.write_text(
        json.dumps(
            {
                "model_dicts": [*raw["model_dicts"][:5], first],
                "accuracies": [*raw["accuracies"][:5], {"SST-2": 0.99}],
            }
        )
    )
    table = read_table(str(flexi), "flexibert")
    assert len(table.architectures) == 5 and (table.repeated, table.conflicting) == (1, 1)
    assert 0.99 not in table.scores
    # per task: a repeat that brings a score its first row lacks adds it (the best row of
    # the table was lost when the first row's scores were kept whole)
    unscored = next(i for i, a in enumerate(raw["accuracies"]) if not (a or {}).get("SST-2"))
    again = raw["model_dicts"][unscored]
    dicts = [*raw["model_dicts"][:5], again, again]
    accs = [*raw["accuracies"][:5], raw["accuracies"][unscored], {"SST-2": 0.95, "CoLA": 0.1}]
    later = tmp_path / "later.json"  # another path: tables are read once per process
    later.write_text(json.dumps({"model_dicts": dicts, "accuracies": accs}))
    table = read_table(str(later), "flexibert")
    assert 0.95 in table.scores and (table.repeated, table.conflicting) == (0, 0)
    csv = tmp_path / "dup.csv"
    csv.write_text("a,b,score\n1,2,0.5\n1,2,0.9\n3,4,0.7\n1,2,0.5\n")
    table = read_table(str(csv), "csv")
    assert sorted(table.scores) == [0.5, 0.7] and (table.repeated, table.conflicting) == (2, 1)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("a,b,score\n1,2,3\n4,5\n", "line 3 has 2 cells, the header 3"),  # was "score None ..."
        ("a,b,score\n", "has a header and no rows"),  # was "has no column 'score' (no rows)"
        ("a;b;score\n1;2;3\n", "is it comma-separated?"),
        ("a,b,score\n1,2,nan\n", "give it a score, or leave the row out"),
        # a parameter of nan or inf crashed the replay later (ZeroDivisionError)
        ("a,b,score\n1,nan,3\n", "line 2: parameter b 'nan' is not a finite number"),
        ("a,b,score\n1,2,3\n-inf,2,3\n", "line 3: parameter a '-inf' is not a finite number"),
    ],
)
def test_a_malformed_csv_says_what_is_wrong(tmp_path: Path, content: str, said: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(SpecError) as refused:
        read_table(str(path), "csv")
    assert said in str(refused.value)


def test_a_json_table_with_a_non_finite_parameter_names_it(tmp_path: Path) -> None:
    rows = [
        {"arch": {"n_layer": 1, "d": 8}, "acc": 0.5},
        {"arch": {"n_layer": 2, "d": float("nan")}, "acc": 0.7},
    ]
    path = tmp_path / "n.json"
    path.write_text(json.dumps({"metric": "acc", "direction": "maximize", "architectures": rows}))
    with pytest.raises(SpecError, match=r"field 'd' holds nan, not a finite number"):
        read_table(str(path), "nas-tables")


def test_nas_tables_rows_without_a_score_are_counted(tmp_path: Path) -> None:
    """Rows with a null (or non-finite) score for the metric were left out with nothing said."""
    rows = [
        {"arch": {"n_layer": 1, "d": 8}, "acc": 0.5},
        {"arch": {"n_layer": 2, "d": 8}, "acc": None},
        {"arch": {"n_layer": 3, "d": 8}, "acc": 0.7},
        {"arch": {"n_layer": 4, "d": 8}},
    ]
    path = tmp_path / "n.json"
    path.write_text(json.dumps({"metric": "acc", "direction": "maximize", "architectures": rows}))
    table = read_table(str(path), "nas-tables")
    assert sorted(table.scores) == [0.5, 0.7] and table.unscored == 2


@pytest.mark.parametrize(
    ("direction", "scores", "says"),
    [
        ("minimise", [1.0], "direction 'minimise' is not one of ['maximize', 'minimize']"),
        ("maximize", [float("nan")], "1 scores are not finite numbers (first nan)"),
        ("maximize", [], "1 rows and 0 scores"),
    ],
)
def test_a_plugin_readers_table_is_checked_as_the_built_in_ones(
    direction: str, scores: list[float], says: str
) -> None:
    """A plugin format's reader returning "minimise" made replay print Optuna's traceback,
    and a NaN score was replayed."""
    from archsearch.spaces import ReplayTable, RowTableSpace

    archs = [{"a": 1}]
    with pytest.raises(SpecError) as e:
        ReplayTable("mine.jsonl", archs, scores, direction, RowTableSpace(archs, label="m"))
    assert e.value.field == "table" and says in str(e.value)
