"""The evaluation grid on a real Dask cluster: the serial run's rows, byte for byte; resumable; closed cleanly.

Two worker processes on 127.0.0.1 (the project's own :class:`DaskPool`, one shared by the module and
one that :func:`evaluate` starts and closes itself); a tiny grid of 4 cells x 3 methods on 200
requests, one method per kind of work (an online policy, the hindsight oracle, the clairvoyant LP).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pandas as pd
import psutil
import pytest

from bundles import synthetic_bundle, write_bundle_folder
from planner import config
from planner.cli import main
from planner.config import EvaluatePreset
from planner.evaluation import grid
from planner.cluster import DaskPool
from planner.evaluation.cluster import size_from_benchmark, workers_needed
from planner.plan import registry

DEADLINES = [2.0, 5.0]


def settings(**overrides) -> EvaluatePreset:
    base = dict(n_requests=200, seeds=[42, 43], loads=[0.8], workloads={"steady": {"kind": "poisson"}},
                methods=["anytime", "best_fixed_hindsight", "clairvoyant"])
    return EvaluatePreset.model_validate({**base, **overrides})


def sorted_lines(path) -> list[bytes]:
    """The CSV's header, then its rows sorted as bytes: equal lists mean byte-identical sorted files."""
    header, *rows = path.read_bytes().splitlines(keepends=True)
    return [header, *sorted(rows)]


@pytest.fixture(scope="module")
def bundle():
    return synthetic_bundle(n_configs=10, n_examples=300)


@pytest.fixture(scope="module")
def serial(bundle, tmp_path_factory):
    """The serial run (``workers=0``): its runs CSV and result."""
    out = tmp_path_factory.mktemp("serial") / "runs.csv"
    result = grid.evaluate(bundle, "sst2", settings(), DEADLINES, out_csv=out, progress=False)
    return out, result


@pytest.fixture(scope="module")
def pool():
    with DaskPool(2, announce=None) as shared:
        yield shared


def _children() -> dict[int, psutil.Process]:
    out = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(proc.cmdline()):  # multiprocessing's, lives as long as we do
                out[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
    return out


def test_two_workers_write_the_serial_rows_and_close_their_cluster(bundle, serial, tmp_path, capsys):
    before = _children()
    out = tmp_path / "runs.csv"
    result = grid.evaluate(bundle, "sst2", settings(), DEADLINES, out_csv=out, progress=False, workers=2)
    assert sorted_lines(out) == sorted_lines(serial[0])
    # the returned tables are in grid order whatever order the cells finished in
    pd.testing.assert_frame_equal(result.runs, serial[1].runs)
    pd.testing.assert_frame_equal(result.traces, serial[1].traces)
    assert "local Dask cluster of 2 worker processes" in capsys.readouterr().out
    left = [p for pid, p in _children().items() if pid not in before]
    _, alive = psutil.wait_procs(left, timeout=15)
    assert not alive, f"processes left after the cluster closed: {[p.pid for p in alive]}"


def test_the_cluster_binds_loopback_only(pool):
    client = pool.client
    assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert all(w.startswith("tcp://127.0.0.1:") for w in client.scheduler_info()["workers"])


def test_same_slice_twice_is_byte_identical(bundle, serial, pool, tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    grid.evaluate(bundle, "sst2", settings(), DEADLINES, out_csv=first, progress=False, pool=pool)
    grid.evaluate(bundle, "sst2", settings(), DEADLINES, out_csv=second, progress=False,
                  scheduler=pool.client.scheduler.address)  # the same cluster, reached by its address
    assert sorted_lines(first) == sorted_lines(second) == sorted_lines(serial[0])
    assert pool.started  # an existing cluster stays up when an evaluation that connected to it ends


def test_a_different_seed_gives_different_draws(bundle, serial, pool):
    other = grid.evaluate(bundle, "sst2", settings(seeds=[44, 45]), DEADLINES, progress=False, pool=pool)
    keys = ["method", "deadline_ms"]
    mine = serial[1].runs.sort_values(keys + ["seed"]).reset_index(drop=True)
    theirs = other.runs.sort_values(keys + ["seed"]).reset_index(drop=True)
    online = mine["method"] == "anytime"
    assert (mine.loc[online, "lat_p50_ms"].to_numpy() != theirs.loc[online, "lat_p50_ms"].to_numpy()).all()
    assert set(serial[1].traces["rate_rps"]).isdisjoint(other.traces["rate_rps"])  # other arrival draws


def test_a_killed_run_resumes_to_the_same_table(bundle, serial, pool, tmp_path):
    """Two cells lost, and a kill mid-row: the resumed run on the cluster completes the very same file."""
    header, *rows = serial[0].read_bytes().splitlines(keepends=True)
    lost_cells = {b",2.0,42,", b",5.0,43,"}
    kept = [r for r in rows if not any(c in r for c in lost_cells)]
    assert len(rows) - len(kept) == 2 * 3
    out = tmp_path / "runs.csv"
    out.write_bytes(header + b"".join(kept[:-1]) + kept[-1][: len(kept[-1]) // 2])  # torn last line, no newline
    traces = tmp_path / "traces.csv"
    resumed = grid.evaluate(bundle, "sst2", settings(), DEADLINES, out_csv=out, progress=False, pool=pool,
                            traces_csv=traces)
    assert sorted_lines(out) == sorted_lines(serial[0])
    assert len(resumed.runs) == len(rows) and len(pd.read_csv(traces)) == 3  # 2 lost cells + the torn one
    again = grid.evaluate(bundle, "sst2", settings(), DEADLINES, out_csv=out, progress=False, pool=pool)
    assert again.traces.empty and sorted_lines(out) == sorted_lines(serial[0])  # nothing left to run


def test_cli_runs_on_an_existing_cluster(bundle, pool, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    write_bundle_folder(tmp_path / "quick" / "profiles" / "synthetic", bundle)
    small = settings(methods=["seed_p95", "slack_aware"], deadlines={"sst2": DEADLINES})
    monkeypatch.setattr(config, "preset", lambda name: SimpleNamespace(evaluate=small))
    args = ["evaluate", "--task", "sst2", "--preset", "quick", "--machine-tag", "synthetic", "--no-progress"]
    assert main(args + ["--scheduler", pool.client.scheduler.address]) == 0
    assert f"the Dask cluster at {pool.client.scheduler.address} (2 workers)" in capsys.readouterr().out
    runs = tmp_path / "quick" / "eval" / "runs_sst2.csv"
    assert len(pd.read_csv(runs)) == 2 * 2 * 2
    first = sorted_lines(runs)
    runs.unlink()
    assert main(args + ["--workers", "0"]) == 0  # the serial path writes the same file
    assert sorted_lines(runs) == first
    with pytest.raises(SystemExit):
        main(args + ["--workers", "-1"])


def test_pool_arguments_fail_clearly():
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        DaskPool(scheduler="127.0.0.1:8786")
    with pytest.raises(ValueError, match="workers >= 1"):
        DaskPool(0)
    with pytest.raises(RuntimeError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskPool(scheduler="tcp://127.0.0.1:9", connect_timeout_s=1, announce=None).client


def test_methods_are_fitted_once_per_process_not_per_cell(bundle, monkeypatch):
    calls = []
    entry = registry.METHODS["anytime"]
    monkeypatch.setitem(registry.METHODS, "anytime",
                        dataclasses.replace(entry, fit=lambda *a: calls.append(1) or entry.fit(*a)))
    s = settings(methods=["anytime"], dispatch_overhead=0.125)  # settings no other test fitted
    cells = grid.grid_cells(s, DEADLINES)
    first = grid.run_cell(bundle, cells[0], "sst2", s)
    for cell in cells[1:]:
        grid.run_cell(bundle, cell, "sst2", s)
    assert len(calls) == 1
    assert grid.run_cell(bundle, cells[0], "sst2", s).runs.equals(first.runs)  # cached fit, same rows


def test_workers_needed_for_a_budget():
    assert workers_needed(100, 6.0, budget_s=600) == 1
    assert workers_needed(1000, 6.0, budget_s=600) == 10
    assert workers_needed(1000, 6.0, budget_s=600, efficiency=0.8) == 13  # 12.5 rounded up
    assert workers_needed(3, 100.0, budget_s=600, startup_s=10) == 1
    assert workers_needed(4, 500.0, budget_s=600) == 4  # a cell never splits: one worker each at most
    with pytest.raises(ValueError, match="one cell takes 700.0 s"):
        workers_needed(4, 700.0, budget_s=600)


def test_cluster_size_from_a_benchmark_table():
    bench = pd.DataFrame({"workers": [1, 2], "cell_s_mean": [6.0, 6.2], "speedup": [1.0, 1.6],
                          "task_throughput_ms": [3.0, 2.0], "start_s": [3.0, 4.0]})
    size = size_from_benchmark(bench, n_cells=7200, budget_s=600)
    assert size["efficiency"] == pytest.approx(0.8) and size["seconds_per_cell"] == 6.0
    assert size["workers"] == workers_needed(7200, 6.0, 600, 0.002, 4.0, 0.8) == 91
    with pytest.raises(ValueError, match="no 1-worker row"):
        size_from_benchmark(bench[bench["workers"] == 2], 10)
