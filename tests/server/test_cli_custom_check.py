"""``archsearch launch`` reads a custom task's files where they are on the launching machine
and refuses what a worker would refuse with the file and line (a misspelt label_field was
found by the first worker, after the study had started); where they are not, it says
nothing (the workers may have them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archsearch.server import cli


def _launch(tmp_path: Path, custom: dict) -> int:
    spec = {
        "name": "own",
        "space": "bert",
        "n_trials": 2,
        "data": {"task": "spam", "custom_task": custom},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return cli.main(["launch", "--spec", str(path), "--server", "127.0.0.1:9"])


def _files(tmp_path: Path, dev_label: str = "ham") -> dict:
    (tmp_path / "train.csv").write_text("text,label\nwin money,spam\nlunch?,ham\n")
    (tmp_path / "dev.csv").write_text(f"text,label\nfree,spam\nsee you,{dev_label}\n")
    return {
        "name": "spam",
        "train": str(tmp_path / "train.csv"),
        "dev": str(tmp_path / "dev.csv"),
        "text_fields": ["text"],
        "label_field": "label",
    }


def test_a_misspelt_label_field_is_refused_at_launch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _launch(tmp_path, {**_files(tmp_path), "label_field": "lable"}) == 2
    err = capsys.readouterr().err
    assert err.startswith("archsearch: invalid search spec: data.custom_task: ")
    assert "lable" in err and "read here" in err and "Traceback" not in err


def test_a_dev_label_the_training_file_lacks_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _launch(tmp_path, _files(tmp_path, dev_label="phish")) == 2
    assert "dev.csv:3: label 'phish'" in capsys.readouterr().err


def test_files_that_are_not_here_or_read_fine_go_to_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # good files: the launch goes on to the server (none listens on port 9: exit 3)
    assert _launch(tmp_path, _files(tmp_path)) == 3
    elsewhere = {**_files(tmp_path), "dev": "/nowhere/dev.csv"}
    assert _launch(tmp_path, {**elsewhere, "label_field": "lable"}) == 3
    assert "custom_task" not in capsys.readouterr().err
