"""A user's own CSV, TSV or JSONL file as spreadsheets and pandas write it: read as written, or
refused naming the file and line; never a shifted column read as the label
(``worker/_custom_files.py``, ``worker/_custom_tables.py``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from archsearch.spaces import validate_custom_task
from archsearch.worker._custom_files import label_info, load_custom_split, resolve_custom_task

SPAM = {"name": "mail", "text_fields": ["text"], "label_field": "label"}


def _task(path: Path, **more: Any) -> Any:
    return resolve_custom_task(
        validate_custom_task({**SPAM, "train": str(path), "dev": str(path), **more})
    )


def _texts(path: Path) -> list[str]:
    return [e.texts[0] for e in load_custom_split(_task(path), "train")]


def _refused(path: Path, line: int, said: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}:{line}: {said}')}"):
        _task(path)


def test_a_comma_in_an_unquoted_text_is_refused_not_read_as_the_label(tmp_path: Path) -> None:
    """300 good rows and 3 with "great, fantastic product,ham" trained a 5-class model: the
    row's extra field was dropped, and " fantastic product" became a class."""
    path = tmp_path / "mail.csv"
    good = ["buy now,spam", "hello,ham"] * 150
    path.write_text("text,label\n" + "\n".join([*good, "great, fantastic product,ham"]) + "\n")
    with pytest.raises(ValueError) as e:
        _task(path)
    assert str(e.value).startswith(
        f"{path}:302: 3 fields where the header names 2 (text, label): "
        "['great', ' fantastic product', 'ham']; a comma inside a text splits it: put that "
        'field in double quotes ("great, fantastic product"'
    )
    path.write_text('text,label\n"great, fantastic product",ham\nbuy now,spam\n')
    assert _texts(path) == ["great, fantastic product", "buy now"]
    path.write_text("text,label\nhello,ham\nbuy now\n")  # short: as refused, never padded
    _refused(path, 3, "1 fields where the header names 2 (text, label): ['buy now']; every row")


def test_a_tsv_pandas_wrote_is_read_as_written(tmp_path: Path) -> None:
    """pandas quotes a text holding a tab or a quote; the TSV reader took every '"' as text,
    so "tab<TAB>here" split in two and the quotes came doubled."""
    texts = ['He said "free money" now', "tab\there", '"quoted" start', "plain ham"]
    path = tmp_path / "mail.tsv"
    frame = pd.DataFrame({"text": texts, "label": ["spam", "spam", "ham", "ham"]})
    frame.to_csv(path, sep="\t", index=False)
    assert '"He said ""free money"" now"' in path.read_text()  # as pandas quotes it
    assert _texts(path) == texts


def test_a_glue_like_tsv_keeps_its_quotes_as_text(tmp_path: Path) -> None:
    """GLUE's TSVs are not quoted: a sentence may start with a quote it never closes at a
    tab; such a file is read with every '"' as text."""
    texts = ['"Hello," he said.', 'the "best" film', 'a 12" record', "fine"]
    path = tmp_path / "glue.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(texts)))
    task = resolve_custom_task(
        validate_custom_task(
            {**SPAM, "train": str(path), "dev": str(path), "text_fields": ["sentence"]}
        )
    )
    assert [e.texts[0] for e in load_custom_split(task, "train")] == texts
    assert task.labels == ("0", "1")


def test_a_tsv_quoted_only_in_part_is_refused(tmp_path: Path) -> None:
    """A quoted field in a file that does not parse quoted would keep its quotes doubled."""
    path = tmp_path / "mixed.tsv"
    path.write_text('text\tlabel\n"Hi," he said\tham\n"He said ""free"" now"\tspam\n')
    with pytest.raises(ValueError) as e:
        _task(path)
    assert str(e.value).startswith(
        f'{path}:3: field \'"He said ""free"" now"\' is quoted as pandas and spreadsheets '
        "quote one, but the file is not read with quoting because a field of line 2 starts "
        "with '\"' and does not end with one at a tab; quote such fields throughout"
    )


@pytest.mark.parametrize(
    ("name", "content", "line", "said"),
    [
        ("empty.csv", "text,label\nhello,\nhi bob,ham\nwin,spam\n", 2, "column 'label' is empty"),
        ("empty.jsonl", '{"text": "a", "label": "ham"}\n{"text": "b", "label": " "}\n', 2, ""),
        (
            "null.jsonl",  # it said "missing column 'label' (it has: 'text', 'label')"
            '{"text": "a", "label": "ham"}\n\n{"text": "b", "label": null}\n',
            3,
            "column 'label' is null; give it a value",
        ),
        ("nulltext.jsonl", '{"text": null, "label": "ham"}\n', 1, "column 'text' is null"),
        (
            "twice.csv",  # the last 'text' column was read
            "text,text,label\na,b,ham\nc,d,spam\n",
            1,
            "the header names column 'text' 2 times (columns 1, 2); rename all but the one",
        ),
    ],
)
def test_rows_without_a_usable_value_are_refused(
    tmp_path: Path, name: str, content: str, line: int, said: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    _refused(path, line, said or "column 'label' is empty")


def test_a_column_the_task_does_not_read_may_be_named_twice(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text("note,text,note,label\nx,hello,y,ham\nx,buy,y,spam\n")
    assert _texts(path) == ["hello", "buy"]


def test_a_class_of_few_rows_is_warned_of_in_the_trials_info(tmp_path: Path) -> None:
    """A class of 1 row in 301 is the usual sign of a misread row (here a typo); a trial's
    info says which and where, as the other data warnings, for show to list."""
    path = tmp_path / "mail.csv"
    rows = ["buy now,spam", "hello,ham"] * 150
    path.write_text("text,label\n" + "\n".join([*rows[:7], "win cash,spma", *rows[7:]]) + "\n")
    info = label_info(_task(path))
    assert info["custom_task_warning"] == (
        f"rare class among the 301 rows of {path}: 'spma' (1 of them, line 9); a class this "
        "rare is often a misread row (a separator in an unquoted text)"
    )
    declared = _task(path, labels=["ham", "spam", "spma", "unseen"])
    assert "rare classes among the 301 rows" in label_info(declared)["custom_task_warning"]
    assert "'unseen' (none)" in label_info(declared)["custom_task_warning"]
    path.write_text("text,label\n" + "\n".join([*rows[:20], "win cash,spma"]) + "\n")
    assert "custom_task_warning" not in label_info(_task(path))  # 1 in 21: a small file
