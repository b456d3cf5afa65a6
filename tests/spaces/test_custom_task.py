"""A user's task declaration (``data.custom_task``): checked without reading any file."""

from __future__ import annotations

from typing import Any

import pytest

from archsearch.spaces import CustomTask, SpecError, validate_custom_task

GOOD: dict[str, Any] = {
    "name": "reviews",
    "train": "/data/train.csv",
    "dev": "/data/dev.csv",
    "text_fields": ["review"],
    "label_field": "stars",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "data.custom_task.colour"),
        ({"name": None}, "data.custom_task.name"),
        ({"name": "sst2"}, "data.custom_task.name"),
        ({"name": "my.task"}, "data.custom_task.name"),
        ({"train": ""}, "data.custom_task.train"),
        ({"dev": 3}, "data.custom_task.dev"),
        ({"format": "xml"}, "data.custom_task.format"),
        ({"dev": "/data/dev.parquet"}, "data.custom_task.format"),
        ({"text_fields": []}, "data.custom_task.text_fields"),
        ({"text_fields": ["a", "b", "c"]}, "data.custom_task.text_fields"),
        ({"text_fields": ["a", "a"]}, "data.custom_task.text_fields"),
        ({"text_fields": "review"}, "data.custom_task.text_fields"),
        ({"label_field": "review"}, "data.custom_task.label_field"),
        ({"label_field": ""}, "data.custom_task.label_field"),
        ({"type": "ranking"}, "data.custom_task.type"),
        ({"labels": ["only"]}, "data.custom_task.labels"),
        ({"labels": ["a", "a"]}, "data.custom_task.labels"),
        ({"type": "regression", "labels": ["a", "b"]}, "data.custom_task.labels"),
        ({"metrics": ["pearson"]}, "data.custom_task.metrics"),
        ({"metrics": []}, "data.custom_task.metrics"),
        ({"labels": ["a", "b", "c"], "metrics": ["f1"]}, "data.custom_task.metrics"),
    ],
)
def test_bad_declaration_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_custom_task({**GOOD, **change})
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_declaration_must_be_an_object() -> None:
    with pytest.raises(SpecError, match=r"^data\.custom_task: must be a JSON object"):
        validate_custom_task(["reviews"])
    missing = {k: v for k, v in GOOD.items() if k != "label_field"}
    with pytest.raises(SpecError, match=r"^data\.custom_task\.label_field"):
        validate_custom_task(missing)


def test_custom_task_is_a_frozen_dataclass() -> None:
    task = validate_custom_task(GOOD)
    assert isinstance(task, CustomTask)
    with pytest.raises(AttributeError):
        task.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="resolve_custom_task"):
        _ = task.num_labels
