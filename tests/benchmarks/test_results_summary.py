"""``benchmarks/_results.py``: the summary at the top of RESULTS.md keeps one row per benchmark."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _results


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "RESULTS.md"
    monkeypatch.setattr(_results, "RESULTS", path)
    return path


def _summary_rows(text: str) -> list[str]:
    block = text.split(_results.SUMMARY_START, 1)[1].split(_results.SUMMARY_END, 1)[0]
    return [ln for ln in block.splitlines() if ln.startswith("| ")][1:]


def test_latest_figure_replaces_the_row_and_history_keeps_every_run(results: Path) -> None:
    _results.append_section("nas_table", "first run body", summary=("ratio 0.40", "FAIL"))
    _results.append_section("service_overhead (quiet)", "other body", summary=("p99 31 ms", "pass"))
    # "name: what" titles keep the row of "name"
    _results.append_section(
        "nas_table: per layer", "second run body", summary=("ratio 0.31", "pass")
    )
    _results.append_section("nas_table", "a run without a verdict")
    text = results.read_text()
    rows = _summary_rows(text)
    assert len(rows) == 2
    (nas,) = [r for r in rows if r.startswith("| nas_table |")]
    assert "ratio 0.31" in nas and "| pass |" in nas and "ratio 0.40" not in nas
    assert any(r.startswith("| service_overhead | p99 31 ms | pass |") for r in rows)
    # The history below the summary keeps every section, in order.
    history = text.split(_results.SUMMARY_END, 1)[1]
    assert history.index("first run body") < history.index("second run body")
    assert "a run without a verdict" in history
    assert text.index(_results.SUMMARY_END) < text.index("## nas_table")


def test_table_cells_cannot_break_the_summary(results: Path) -> None:
    _results.update_summary("x", "a | b\nc", "pass", cmd="python x.py --a '|'")
    (row,) = _summary_rows(results.read_text())
    cells = re.split(r"(?<!\\)\|", row)[1:-1]  # split on unescaped pipes only
    assert len(cells) == 5
    assert cells[1].strip() == "a \\| b c"


def test_the_project_results_file_has_its_summary() -> None:
    text = (Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md").read_text()
    rows = _summary_rows(text)
    names = {r.split("|")[1].strip() for r in rows}
    assert {"nas_table", "service_overhead", "suggest_time"} <= names
