"""GLUE data access: the shared files' row counts, parsing quirks, errors and folder lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from archsearch.worker import GLUE_DIR_ENV, _glue_dir, load_split, resolve_glue_dir, take_subset

SHARED_GLUE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue").resolve()

# ../shared/data/README.md's table: every labelled split that is available there.
README_COUNTS = [
    ("cola", "train", 8551),
    ("cola", "dev", 1043),
    ("sst2", "train", 67349),
    ("sst2", "dev", 872),
    ("mrpc", "train", 3668),
    ("mrpc", "dev", 408),
    ("stsb", "train", 5749),
    ("stsb", "dev", 1500),
    ("qnli", "dev", 5463),
    ("rte", "train", 2490),
    ("rte", "dev", 277),
    ("wnli", "train", 635),
    ("wnli", "dev", 71),
]


@pytest.mark.parametrize(("task", "split", "count"), README_COUNTS)
def test_row_counts_equal_readme_table(task: str, split: str, count: int) -> None:
    assert len(load_split(task, split, SHARED_GLUE)) == count


def test_labels_and_texts_are_parsed() -> None:
    cola = load_split("cola", "train", SHARED_GLUE)  # headerless
    assert cola[0].texts == (
        "Our friends won't buy this analysis, let alone the next one we propose.",
    )
    assert cola[0].label == 1
    mrpc = load_split("mrpc", "train", SHARED_GLUE)  # header starts with a byte-order mark
    assert mrpc[0].texts[0].startswith("Amrozi accused his brother")
    assert mrpc[0].label == 1
    rte = load_split("rte", "dev", SHARED_GLUE)
    assert {e.label for e in rte} == {0, 1}
    stsb = load_split("stsb", "dev", SHARED_GLUE)
    assert stsb[0].label == 5.0 and all(0.0 <= float(e.label) <= 5.0 for e in stsb)
    assert {len(e.texts) for e in stsb} == {2}


def test_stray_quotes_are_text() -> None:
    # With csv quoting on, this opening quote would swallow the following lines.
    mrpc_dev = load_split("mrpc", "dev", SHARED_GLUE)
    assert mrpc_dev[0].texts[1].startswith('"The foodservice pie business')


def test_missing_split_names_the_exact_path() -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_split("qnli", "train", SHARED_GLUE)
    message = str(info.value)
    assert str(SHARED_GLUE / "QNLI" / "train.tsv") in message
    assert GLUE_DIR_ENV in message


def test_missing_task_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist either") as info:
        load_split("qqp", "dev", tmp_path)
    assert str(tmp_path.resolve() / "QQP" / "dev.tsv") in str(info.value)


def test_unknown_task_and_split() -> None:
    with pytest.raises(ValueError, match="known tasks: cola"):
        load_split("squad", "train", SHARED_GLUE)
    with pytest.raises(ValueError, match="known splits: train, dev"):
        load_split("sst2", "validation", SHARED_GLUE)


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_mnli_dev_splits(tmp_path: Path) -> None:
    header = "index\tsentence1\tsentence2\tgold_label"
    _write(tmp_path / "MNLI" / "dev_matched.tsv", [header, "0\ta\tb\tneutral"])
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", [header, "0\tc\td\tcontradiction"])
    assert load_split("mnli", "dev", tmp_path)[0].label == 1
    assert load_split("mnli", "dev_matched", tmp_path)[0].texts == ("a", "b")
    assert load_split("mnli", "dev_mismatched", tmp_path)[0].label == 2


def test_short_rows_fail_except_where_official_files_have_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path / "RTE" / "train.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tonly one"])
    with pytest.raises(ValueError, match=r"train.tsv:2: 2 columns"):
        load_split("rte", "train", tmp_path)
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    _write(tmp_path / "QQP" / "train.tsv", [header, "0\t1\t2\tq1\tq2\t1", "1\t3\t4\tbroken"])
    with caplog.at_level("WARNING", logger="archsearch.worker"):
        assert len(load_split("qqp", "train", tmp_path)) == 1
    # said, not silent: a dev set then differs from GLUE's own count
    assert "train.tsv: skipped 1 row(s) with fewer than 6 columns (line 3)" in caplog.text
    assert "1 examples read" in caplog.text


def test_unknown_label_is_reported(tmp_path: Path) -> None:
    _write(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tmaybe"])
    with pytest.raises(ValueError, match=r"dev.tsv:2: label 'maybe'"):
        load_split("rte", "dev", tmp_path)


def test_take_subset_is_reproducible() -> None:
    items = list(range(100))
    first = take_subset(items, 10, seed=3)
    assert first == take_subset(items, 10, seed=3)
    assert first != take_subset(items, 10, seed=4)
    assert len(set(first)) == 10
    assert take_subset(items, 20, seed=3)[:10] == first  # a larger slice extends a smaller one
    assert take_subset(items, 0, seed=3) == items
    assert take_subset(items, 500, seed=3) == items


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(GLUE_DIR_ENV, raising=False)
    return monkeypatch


def _fake_defaults(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    defaults = [(p, f"default #{i}") for i, p in enumerate(paths)]
    monkeypatch.setattr(_glue_dir, "default_glue_dirs", lambda: defaults)


def test_resolve_order(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    explicit, env, shared = (tmp_path / name for name in ("explicit", "env", "shared"))
    for folder in (explicit, env, shared):
        folder.mkdir()
    _fake_defaults(no_env, tmp_path / "absent", shared)
    assert resolve_glue_dir(None) == (shared, f"using GLUE data from {shared} (default #1)")
    no_env.setenv(GLUE_DIR_ENV, str(env))
    path, source = resolve_glue_dir(None)
    assert path == env and GLUE_DIR_ENV in source
    path, source = resolve_glue_dir(str(explicit))
    assert path == explicit and "--glue-dir" in source


def test_named_folder_that_is_missing_is_an_error(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    _fake_defaults(no_env, SHARED_GLUE)
    with pytest.raises(FileNotFoundError, match="from --glue-dir"):
        resolve_glue_dir(str(tmp_path / "nope"))
    no_env.setenv(GLUE_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=f"from \\${GLUE_DIR_ENV}"):
        resolve_glue_dir(None)


def test_nothing_found_lists_every_place(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _fake_defaults(no_env, first, second)
    with pytest.raises(FileNotFoundError) as info:
        resolve_glue_dir(None)
    message = str(info.value)
    for expected in (str(first), str(second), "--glue-dir", GLUE_DIR_ENV):
        assert expected in message


def test_default_places() -> None:
    places = [path.resolve() for path, _ in _glue_dir.default_glue_dirs()]
    assert places[0] == SHARED_GLUE
    assert places[1] == (Path.cwd() / ".." / "shared" / "data" / "glue").resolve()
