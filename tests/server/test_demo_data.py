"""Where the demo's SST-2 comes from, checked before a server or worker starts: a local
glue_data folder that has SST-2's train and dev files, else the hub when online. A fresh clone
without ``../shared`` used to stop at once, with no word of the hub; an empty folder was
"used", and every trial failed while the demo said "completed" and exited 0."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from archsearch.server import _demo
from archsearch.server._cli_common import CliError
from archsearch.server._cli_machines import _say_glue_dir
from archsearch.worker import _glue_dir, _hub
from archsearch.worker._glue_dir import GLUE_DIR_ENV, GlueDataMissing, resolve_glue_dir


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No GLUE folder anywhere: no variable, the fallbacks point at missing folders."""
    monkeypatch.delenv(GLUE_DIR_ENV, raising=False)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    missing = tmp_path / "shared" / "data" / "glue"
    monkeypatch.setattr(
        _glue_dir, "default_glue_dirs", lambda: [(missing, "next to"), (missing, "relative")]
    )
    return missing


def sst2(folder: Path, *files: str) -> Path:
    (folder / "SST-2").mkdir(parents=True)
    for name in files:
        (folder / "SST-2" / name).write_text("sentence\tlabel\ngood\t1\n")
    return folder


def test_a_folder_without_sst2s_files_is_refused_before_anything_starts(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CliError, match=r"has no SST-2/train\.tsv or SST-2/dev\.tsv; give the demo"):
        _demo.demo_data(str(empty))
    half = sst2(tmp_path / "half", "train.tsv")
    with pytest.raises(
        CliError, match=r"^the GLUE folder .* \(given by --glue-dir\) has no SST-2/dev"
    ):
        _demo.demo_data(str(half))
    whole = sst2(tmp_path / "whole", "train.tsv", "dev.tsv")
    assert _demo.demo_data(str(whole)) == (
        whole,
        f"using GLUE data from {whole} (given by --glue-dir)",
    )


def test_a_file_or_one_tasks_folder_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = sst2(tmp_path / "glue_data", "train.tsv", "dev.tsv")
    with pytest.raises(
        GlueDataMissing, match=r"dev\.tsv \(from --glue-dir\) is a file, not a folder"
    ):
        resolve_glue_dir(str(whole / "SST-2" / "dev.tsv"))
    with pytest.raises(GlueDataMissing, match=f"one task's folder .*: --glue-dir {whole}$"):
        resolve_glue_dir(str(whole / "SST-2"))
    monkeypatch.setenv(GLUE_DIR_ENV, str(whole / "SST-2"))  # the fix is said as set
    with pytest.raises(GlueDataMissing, match=f"above it: {GLUE_DIR_ENV}={whole}$"):
        resolve_glue_dir(None)


def test_the_places_looked_at_are_named_once(nowhere: Path) -> None:
    with pytest.raises(GlueDataMissing) as info:
        resolve_glue_dir(None)
    assert str(info.value).count(str(nowhere)) == 1
    with pytest.raises(GlueDataMissing, match=r"^--glue-dir is empty; pass --glue-dir"):
        resolve_glue_dir(" ")  # said as such, not as "--glue-dir not given"


def test_offline_without_a_folder_says_the_hub_was_not_tried(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(_hub, "load_hub_split", lambda *a, **k: pytest.fail("hub read"))
    with pytest.raises(CliError) as info:
        _demo.demo_data(None)
    text = str(info.value)
    assert text.startswith("no GLUE data folder found")
    assert "The hub (nyu-mll/glue) was not tried because HF_HUB_OFFLINE=1 is set" in text
    assert f"`{GLUE_DIR_ENV}=/path/to/glue_data make demo`" in text


def test_online_without_a_folder_the_demo_reads_the_hub_once_up_front(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    read: list[tuple[str, str]] = []
    monkeypatch.setattr(_hub, "load_hub_split", lambda task, split, **k: read.append((task, split)))
    folder, how = _demo.demo_data(None)
    assert folder is None and read == [("sst2", "train"), ("sst2", "dev")]
    assert how == "SST-2 from the hub (nyu-mll/glue, in the datasets cache)"
    assert "reading SST-2 from the hub" in capsys.readouterr().out
    # its workers run offline: the spec reads the hub's copy, which the cache answers
    assert _demo.demo_spec("d", 2, 10, hub=True)["data"] == {
        "train_subset": 20000,
        "eval_subset": 0,
        "source": "hub",
    }

    def unreachable(*args: object, **kwargs: object) -> None:
        raise _hub.HubUnavailableError("could not load GLUE sst2 train from the hub: ...")

    monkeypatch.setattr(_hub, "load_hub_split", unreachable)
    with pytest.raises(CliError, match=r"^no GLUE data folder found.* Then: could not load GLUE"):
        _demo.demo_data(None)


def test_a_named_folder_is_never_swapped_for_the_hub(
    nowhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_hub, "load_hub_split", lambda *a, **k: pytest.fail("hub read"))
    with pytest.raises(CliError, match=r"^--glue-dir is empty; pass --glue-dir") as info:
        _demo.demo_data("")
    assert "hub" not in str(info.value)  # one message, with no word of the hub
    monkeypatch.setenv(GLUE_DIR_ENV, str(tmp_path / "gone"))
    with pytest.raises(CliError, match=f"from \\${GLUE_DIR_ENV}\\) does not exist"):
        _demo.demo_data(None)


def test_the_workers_first_lines_say_what_its_glue_folder_holds(
    nowhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="archsearch")
    empty = tmp_path / "empty"
    empty.mkdir()
    _say_glue_dir(str(empty), {"bert": None})
    assert caplog.records[-1].levelno == logging.WARNING
    assert "holds no GLUE task folder with a train.tsv" in caplog.records[-1].getMessage()
    _say_glue_dir(str(sst2(tmp_path / "g", "train.tsv")), {"bert": None})
    assert caplog.records[-1].getMessage().endswith("(given by --glue-dir): SST-2")
    _say_glue_dir(None, {"bert": None})
    assert "candidates with data.source auto read the hub" in caplog.records[-1].getMessage()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _say_glue_dir(None, {"bert": None})
    last = caplog.records[-1]
    assert last.levelno == logging.WARNING
    assert (
        "is off because HF_HUB_OFFLINE=1 is set, so every GLUE trial here fails"
        in last.getMessage()
    )


def test_a_demo_where_no_trial_completes_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its folder has SST-2's files, but not GLUE's columns: no trial can train (each worker
    lacks usable data: it hands its trial back and exits 2), and the demo says why."""
    from archsearch.server import cli

    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "glue" / "SST-2" / name).write_text("text\tx\nhello\t1\n")
    argv = ["demo", "--glue-dir", str(tmp_path / "glue"), "--trials", "1", "--steps", "2"]
    assert cli.main([*argv, "--workers", "1", "--workdir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("archsearch: every worker exited (see the worker-*.log files")
    assert "this worker lacks its data" in err and "lacks column(s) ['sentence', 'label']" in err
