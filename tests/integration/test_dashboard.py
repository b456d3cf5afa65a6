"""optuna-dashboard on a real archsearch study, rendered by a real headless Chromium (issue 11).

A 20-trial flexibert-small study (table-restricted space, TPE loop) runs through the project's
own ``StudyManager`` with the ``table`` trainer in-process, so the stored attributes are the
real ones; ``optuna-dashboard`` serves its storage, and Chromium renders the study page and a
trial page (``--dump-dom``). Checked: the study page names the metric, a trial page shows a
row per metric (``metric.accuracy``), and the JSON the page fetches stays small.

Chromium comes from the Debian package: when it is missing and the tests run as root it is
installed with ``apt-get install -y chromium`` (as ``_postgres`` installs PostgreSQL); when it
cannot be installed, or ``ARCHSEARCH_SKIP_BROWSER=1``, these tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from _procs import TABLE, free_port, table_spec

from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.worker._table_trainer import TableTrainer
from archsearch.worker._trainer import TrainContext

SKIP_ENV = "ARCHSEARCH_SKIP_BROWSER"
N_TRIALS = 20
#: The JSON a study page fetches for 20 flexibert-small trials: about 131 kB (1.45 MB when
#: every trial carried a 620-choice distribution of all table rows).
PAGE_DATA_LIMIT = 200_000
INSTALL_TIMEOUT_S = 900
BROWSER_TIMEOUT_S = 90


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _install_chromium() -> str:
    """The Chromium binary, installing the Debian package when missing; skips with the reason
    when that is impossible."""
    found = _find_chromium()
    if found:
        return found
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"chromium not found and {SKIP_ENV}=1: not installing it")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium not found; install it (apt-get install -y chromium) to run this")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    output = ""
    for argv in (
        ["install", "-y", "--no-install-recommends", "chromium"],
        ["update"],  # a fresh machine has no package lists yet
        ["install", "-y", "--no-install-recommends", "chromium"],
    ):
        try:
            result = subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            pytest.skip(f"installing chromium timed out: {e}")
        output = result.stdout + result.stderr
        found = _find_chromium()
        if found:
            return found
    pytest.skip(f"apt-get install -y chromium left no chromium binary:\n{output[-1500:]}")


@pytest.fixture(scope="module")
def chromium() -> str:
    return _install_chromium()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, optuna.trial.FrozenTrial]:
    """A finished 20-trial study: (storage URL, study id, its best trial)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'study.db'}"
    manager = StudyManager(url, lease_duration_s=60, heartbeat_interval_s=10)
    try:
        manager.launch(SearchSpec.from_dict(table_spec("dash", N_TRIALS, loop="tpe", seed=0)))
        trainer = TableTrainer(TABLE)
        while (g := manager.acquire("w", ("table",))) is not None:
            result = trainer.train(g.candidate, TrainContext(objective_metrics=g.objective_metrics))
            manager.complete(g.lease_id, result.metrics, result.info)
    finally:
        manager.close()
    loaded = optuna.load_study(study_name="dash", storage=url)
    # n_trials counts distinct candidates; recorded repeats come on top
    assert len([t for t in loaded.trials if "duplicate_of" not in t.user_attrs]) == N_TRIALS
    return url, loaded._study_id, loaded.best_trial


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


@pytest.fixture(scope="module")
def dashboard(
    study: tuple[str, int, optuna.trial.FrozenTrial], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``optuna-dashboard`` serving the study on 127.0.0.1; its base URL. Always stopped."""
    script = Path(sys.executable).with_name("optuna-dashboard")
    argv = [str(script) if script.exists() else "optuna-dashboard"]
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, study[0], "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/meta", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _render(chromium: str, url: str, profile: Path, *extra: str) -> str:
    """The page's DOM after its scripts ran (``--dump-dom``), as visible text: tags dropped,
    whitespace collapsed. Chromium and its helpers run in their own process group, which is
    killed whatever happens."""
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",  # lets the page fetch its data and render
        *extra,
        "--dump-dom",
        url,
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        dom, _ = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # helpers left behind
    assert proc.returncode == 0, f"chromium exited with {proc.returncode} on {url}"
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom.decode(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def test_the_page_data_stays_small(
    dashboard: str, study: tuple[str, int, optuna.trial.FrozenTrial]
) -> None:
    """What the study page fetches: the study with all its trials (``?after=0``) and the
    parameter importances. Per-layer parameters of at most 3 choices each, not one
    categorical over the 620 table rows."""
    detail = _get(f"{dashboard}/api/studies/{study[1]}?after=0")
    importances = _get(f"{dashboard}/api/studies/{study[1]}/param_importances")
    assert len(detail) + len(importances) < PAGE_DATA_LIMIT, (len(detail), len(importances))
    data = json.loads(detail)
    # every trial of the study is on the page (recorded repeats too)
    assert len(data["trials"]) == len(optuna.load_study(study_name="dash", storage=study[0]).trials)
    assert len(data["trials"]) >= N_TRIALS
    for param in data["union_search_space"]:
        assert len(param["distribution"].get("choices", [])) <= 3, param["name"]
    names = {p["name"] for p in json.loads(importances)["param_importances"][0]}
    assert "num_layers" in names  # the importance plot ranks readable per-layer choices


def test_the_study_page_names_the_metric(
    chromium: str,
    dashboard: str,
    study: tuple[str, int, optuna.trial.FrozenTrial],
    tmp_path: Path,
) -> None:
    text = _render(chromium, f"{dashboard}/dashboard/studies/{study[1]}", tmp_path / "profile")
    assert "dash (id=" in text, text[:500]
    assert "accuracy" in text  # the history plot's axis: the study's metric name
    assert "Hyperparameter Importance" in text and "num_layers" in text


def test_a_trial_page_shows_a_row_per_metric(
    chromium: str,
    dashboard: str,
    study: tuple[str, int, optuna.trial.FrozenTrial],
    tmp_path: Path,
) -> None:
    best = study[2]
    url = f"{dashboard}/dashboard/studies/{study[1]}/trials?numbers={best.number}"
    text = _render(chromium, url, tmp_path / "profile")
    assert f"Trial {best.number} (trial_id=" in text, text[:500]
    accuracy = best.user_attrs["metrics"]["accuracy"]
    # Each metric is its own row: name, then the number (not a JSON object cut off).
    assert re.search(rf"metric\.accuracy {re.escape(str(accuracy))}\b", text), text[-2000:]
    assert re.search(r"metric\.score \d", text)
    assert f"arch {best.user_attrs['arch']}" in text
