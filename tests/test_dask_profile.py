"""Profiling on a real Dask cluster: one sweep per machine, into that machine's own folder, closed cleanly.

Two worker processes on 127.0.0.1 share one host, so exactly one of them profiles (two sweeps on
one machine would disturb each other's timings). The toy zoo with one runtime and short timing
rules keeps a sweep to seconds; the serial run of the same sweep is the reference for the tables.
"""

from __future__ import annotations

import json

import pandas as pd
import psutil
import pytest

from planner import cluster, config
from planner.cli import main
from planner.cluster import DaskPool, hosts
from planner.paths import machine_tag
from planner.profile.sweep import run_sweep, sweep_per_machine

# the quick preset's space with short timing rules: a later `planner profile --preset quick` finds it all done
TINY = config.preset("quick").profile.model_copy(update=dict(
    warmup=2, min_passes=20, max_passes=20, ci_rel_halfwidth=0.5, check_every=10, n_bootstrap=50, agreement_sample=8,
    roofline_seconds=0.01))
TABLES = ("profiles.csv", "latency_profiles.csv", "accuracy_profiles.csv")


@pytest.fixture(scope="module")
def env():
    """The toy zoo for this process and for the workers (they inherit the environment at start)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
        mp.setenv("PLANNER_TOY_VARIANTS", "torch/fp32")
        yield mp


@pytest.fixture(scope="module")
def pool(env):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with DaskPool(workers=2, announce=None) as pool:
        yield pool
    # multiprocessing's resource tracker, started with the first spawned worker, lives as long as this process
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and "multiprocessing.resource_tracker" not in " ".join(p.cmdline())]
    _, alive = psutil.wait_procs(left, timeout=15)
    assert not alive, f"processes left after the cluster closed: {[p.pid for p in alive]}"


@pytest.mark.timeout(300)
def test_one_sweep_per_machine_into_its_tag_with_the_serial_tables(pool, env, tmp_path, capsys):
    assert len(pool.client.scheduler_info()["workers"]) == 2
    assert len(hosts(pool.client)) == 1  # both workers on 127.0.0.1: one machine

    env.setenv("PLANNER_RESULTS_DIR", str(tmp_path / "serial"))
    serial = run_sweep(["sst2"], "quick", ["cpu"], profile=TINY, progress=False)["cpu"]
    # the workers read PLANNER_RESULTS_DIR as it was when they started, so point them via the task instead
    done = pool.client.run(_set_results, str(tmp_path / "dask"))
    assert len(done) == 2
    table = sweep_per_machine(pool.client, ["sst2"], "quick", ["cpu"], profile=TINY)

    tag = machine_tag("cpu")
    assert list(table["machine_tag"]) == [tag] and list(table["host"]) == ["127.0.0.1"]  # ran exactly once
    assert table["configurations"].iloc[0] == len(serial)
    folders = list((tmp_path / "dask" / "quick" / "profiles").iterdir())
    assert [f.name for f in folders] == [tag]
    assert len(json.loads((folders[0] / "environment.json").read_text())["runs"]) == 1

    # the command: the same sweep on the same cluster by its address resumes (nothing left to do), prints the tags
    address = pool.client.scheduler.address
    assert main(["profile", "--task", "sst2", "--preset", "quick", "--device", "cpu", "--scheduler", address]) == 0
    assert f"profiled machine tags: {tag}" in capsys.readouterr().out
    assert pool.client.status == "running"  # an existing cluster stays up after the command
    assert [f.name for f in (tmp_path / "dask" / "quick" / "profiles").iterdir()] == [tag]
    latency = pd.read_csv(folders[0] / "latency_profiles.csv")
    assert not latency["config_id"].duplicated().any()  # no second sweep appended to the same folder
    for name in TABLES:
        ours = pd.read_csv(folders[0] / name)
        reference = pd.read_csv(tmp_path / "serial" / "quick" / "profiles" / tag / name)
        assert list(ours.columns) == list(reference.columns), name
        assert sorted(ours["config_id"]) == sorted(reference["config_id"]), name


def _set_results(path: str) -> None:
    import os

    os.environ["PLANNER_RESULTS_DIR"] = path


class _QuickPool(cluster.DaskPool):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "connect_timeout_s": 1})


def test_unreachable_scheduler_is_one_clear_error(capsys, monkeypatch):
    monkeypatch.setattr(cluster, "DaskPool", _QuickPool)  # fail in a second, not the default 30
    assert main(["profile", "--task", "sst2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in err


def test_bad_scheduler_address_and_machine_tag_with_a_sweep_are_refused(capsys):
    assert main(["profile", "--task", "sst2", "--scheduler", "127.0.0.1:8786"]) == 2
    assert "tcp://HOST:PORT" in capsys.readouterr().err
    assert main(["profile", "--task", "sst2", "--machine-tag", "other-box"]) == 2
    assert "--machine-tag other-box goes with --rehash" in capsys.readouterr().err
