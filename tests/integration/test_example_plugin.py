"""README "Your own trainer and search space", run as written: the example plugin
(examples/mlp_plugin) installed as pip would install it, `archsearch serve`, two `archsearch
worker --trainer mlp`, a TPE study with a median pruner over the plugin's own space, and the
best trial's model fetched with `archsearch fetch --artifact` and used."""

from __future__ import annotations

import os
import pickle
import subprocess
import tomllib
from pathlib import Path

import pytest
from _procs import REPO, Proc, cli, free_port, wait_for, wait_study

from archsearch.server.client import ClientError, SearchClient
from archsearch.v1 import archsearch_pb2 as pb

pytestmark = pytest.mark.timeout(300)
PLUGIN = REPO / "examples" / "mlp_plugin"


def installed(site: Path) -> dict[str, str]:
    """The plugin as `pip install` leaves it: its module on the path and a dist-info whose
    entry points are the example's pyproject.toml's; the environment that finds both."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    dist = site / "archsearch_mlp_plugin-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
             for group, eps in project["entry-points"].items()]  # fmt: skip
    (dist / "entry_points.txt").write_text("\n".join(lines))
    return {"PYTHONPATH": f"{PLUGIN}:{site}"}


def test_the_example_plugin_searches_its_own_space(tmp_path: Path) -> None:
    env = installed(tmp_path / "site")
    port = free_port()
    address = f"127.0.0.1:{port}"
    db = f"sqlite:///{tmp_path / 'mlp.db'}"
    server = Proc(cli("serve", "--storage", db, "--port", str(port)), tmp_path / "s.log", env)
    worker = cli(
        "worker", "--server", address, "--trainer", "mlp", "--poll-seconds", "1",
        "--study", "digits", "--idle-exit", "60",
    )  # fmt: skip
    workers = [Proc(worker, tmp_path / f"w{i}.log", env) for i in range(2)]
    launch = cli(
        "launch", "--server", address, "--name", "digits", "--space", "mlp", "--trainer", "mlp",
        "--loop", "tpe", "--trials", "8", "--pruner", "median",
        "--set", "pruner.n_startup_trials=3", "--set", "recipe.max_steps=8",
    )  # fmt: skip
    try:
        server.start()

        def launched() -> subprocess.CompletedProcess[str] | None:
            done = subprocess.run(launch, capture_output=True, text=True, env={**os.environ, **env})
            return None if "no archsearch server answers" in done.stderr else done

        done = wait_for(launched, 60, "the server to answer")
        assert done.returncode == 0, done.stderr
        for w in workers:
            w.start()
        with SearchClient(address) as c:
            study = wait_study(c, "digits", 240, [server, *workers])
            trials = c.list_trials("digits")
        assert study.state == pb.STUDY_COMPLETED
        assert {t.state for t in trials} <= {pb.COMPLETE, pb.PRUNED}
        best = study.best_trials[0]
        assert dict(best.metrics)["accuracy"] > 0.5
        assert "lr=" in best.description  # the plugin space's describe()
        out = tmp_path / "best"
        fetched = subprocess.run(
            cli("fetch", "digits", str(best.number), "--server", address,
                "--artifact", "model.pkl", "--out", str(out)),
            capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        model = pickle.loads((out / "model.pkl").read_bytes())
        assert model.hidden_layer_sizes == (best_arch(best)["width"],) * best_arch(best)["layers"]
        for w in workers:
            assert w.wait(90) == 0  # their --study ended
    except ClientError:
        raise AssertionError(server.output()[-3000:]) from None
    finally:
        for w in workers:
            w.stop()
        server.stop()
    for log in [tmp_path / "s.log", *(tmp_path / f"w{i}.log" for i in range(2))]:
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def best_arch(trial: pb.Trial) -> dict:  # type: ignore[type-arg]
    import json

    return json.loads(trial.candidate_json)["architecture"]  # type: ignore[no-any-return]


def test_an_unknown_option_of_a_plugin_space_is_one_line() -> None:
    """The example space takes its options as arguments and checks none itself: an unknown
    one was a TypeError (INTERNAL from the server, a traceback from the CLI)."""
    import sys

    from archsearch.spaces import SpecError, make_space

    sys.path.insert(0, str(PLUGIN))
    try:
        import mlp_plugin  # noqa: F401  (registers the mlp space)

        with pytest.raises(SpecError) as e:
            make_space("mlp", {"bogus": 1})
        assert e.value.field == "space_options.bogus"
        assert "not accepted by the mlp space" in str(e.value)
        assert "known: layers, width, lr" in str(e.value)
    finally:  # the rest of this process never saw the plugin
        sys.path.remove(str(PLUGIN))
        sys.modules.pop("mlp_plugin", None)
        from archsearch.spaces import SPACES
        from archsearch.worker._registry import TRAINERS

        for registry in (SPACES, TRAINERS):
            if "mlp" in registry:
                registry.unregister("mlp")


def test_the_example_plugin_passes_archsearchs_conformance_suites() -> None:
    """README: a plugin runs the project's suites on its own classes, from a checkout, as
    `PYTHONPATH=<checkout>/tests pytest examples/mlp_plugin` (the example failed two of them:
    its validate named no field, and its trainer raised no CandidateError)."""
    import sys

    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}:{PLUGIN}"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN)],
        capture_output=True,
        text=True,
        env=env,
        cwd=PLUGIN,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "21 passed" in done.stdout, done.stdout[-500:]
