"""Dask scaling of the evaluation grid: one fixed slice of the full grid on 1 and 2 workers, in one run.

The slice: ``--cells`` cells (default 16) of one task's full-preset grid, evenly spaced through it
(so it mixes workloads, loads, deadlines and seeds), all of the preset's methods in each, on the
committed full profiles (``load_bundle("full", None)``) and the committed dispatch overhead. For
each worker count a local cluster (127.0.0.1) is started and imports the project (timed apart:
``start_s``), runs the slice through :func:`planner.evaluation.grid.evaluate` (the bundle scattered
once, every fit per worker, rows appended to a fresh CSV as cells finish, as ``planner evaluate``
does), measures the per-task scheduling cost with trivial tasks, and is closed. The rows of every
run are checked to be the same bytes (sorted); with ``--repeat`` the worker counts take turns and
the fastest slice of each counts. Reported: wall time of the slice, mean time of one cell where it
ran, speed-up and efficiency against one worker, scheduling cost per task, start-up time.
``--out [PATH]`` writes the table (default ``results/full/benchmarks/dask_benchmark.csv``), which
the reproducibility appendix turns into a cluster size for the full grid. Timing only.

    nice -n 5 .venv/bin/python benchmarks/bench_dask.py --out --repeat 3   # a few minutes on 2 idle cores
    .venv/bin/python benchmarks/bench_dask.py --cells 2                 # a quick check that it runs

The 2-worker speed-up is only meaningful on 2 otherwise idle cores.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from planner import config
from planner.cluster import DaskPool, default_workers, task_overhead
from planner.evaluation.grid import evaluate, grid_cells, resolve_dispatch_overhead
from planner.paths import cpu_model, results_dir
from planner.plan.registry import check_methods
from planner.profile.store import load_bundle

DEFAULT_OUT = results_dir("full") / "benchmarks" / "dask_benchmark.csv"


def _sorted_bytes(path: Path) -> list[bytes]:
    header, *rows = path.read_bytes().splitlines(keepends=True)
    return [header, *sorted(rows)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2", choices=list(config.TASKS))
    parser.add_argument("--cells", type=int, default=16, help="cells in the slice (evenly spaced through the grid)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, the first is the reference")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the worker counts in turn this many times; the fastest slice of each is kept")
    parser.add_argument("--overhead-tasks", type=int, default=200, help="trivial tasks timed per worker count")
    parser.add_argument("--out", nargs="?", const=str(DEFAULT_OUT), default=None, metavar="PATH",
                        help=f"write the table as CSV (default path: {DEFAULT_OUT})")
    args = parser.parse_args()
    if args.cells < 1 or args.repeat < 1 or not args.workers or min(args.workers) < 1:
        parser.error("--cells, --repeat and every --workers count must be >= 1")

    settings = config.preset("full").evaluate
    deadlines = list((settings.deadlines or config.deadlines().deadlines)[args.task])
    everything = grid_cells(settings, deadlines)
    stride = max(1, len(everything) // args.cells)
    cells = everything[::stride][: args.cells]
    start = time.perf_counter()
    bundle = load_bundle("full", None)
    load_s = time.perf_counter() - start
    overhead_ms = resolve_dispatch_overhead(settings, results_dir("full") / "eval")  # the committed measurement
    methods = check_methods(settings.methods)
    print(f"{args.task}: {len(cells)} of {len(everything)} cells (every {stride}th), {len(methods)} methods, "
          f"{settings.n_requests} requests per trace; bundle loaded in {load_s:.1f} s; "
          f"{default_workers()} cores here")

    load_avg = os.getloadavg()[0]  # other work on the machine skews the ratio: recorded with it
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for run, workers in enumerate(w for _ in range(args.repeat) for w in args.workers):  # interleaved: 1 2 1 2
            start = time.perf_counter()
            with DaskPool(workers, announce=None) as pool:
                # start the cluster and import the project on every worker outside the timed slice
                pool.client.run(importlib.import_module, "planner.evaluation.grid")
                start_s = time.perf_counter() - start
                out = Path(tmp) / f"runs_{run}.csv"  # a fresh file: nothing to resume
                start = time.perf_counter()
                result = evaluate(bundle, args.task, settings, deadlines, out_csv=out, progress=False,
                                  dispatch_overhead_ms=overhead_ms, pool=pool, cells=cells)
                grid_s = time.perf_counter() - start
                overhead = task_overhead(pool.client, args.overhead_tasks)
            same = _sorted_bytes(out)
            reference = reference if reference is not None else same
            row = {"task": args.task, "workers": workers, "cells": len(cells), "methods": len(methods),
                   "n_requests": settings.n_requests, "start_s": start_s, "grid_s": grid_s,
                   "cell_s_mean": sum(result.cell_seconds) / len(result.cell_seconds),
                   "cell_s_max": max(result.cell_seconds),
                   "task_throughput_ms": 1000 * overhead["throughput_s"],
                   "task_round_trip_ms": 1000 * overhead["round_trip_s"],
                   "rows_identical_to_first": same == reference}
            rows.append(row)
            print(pd.DataFrame([row]).to_string(index=False, float_format="%.3f"), flush=True)
    table = pd.DataFrame(rows)
    table = table.loc[table.groupby("workers", sort=False)["grid_s"].idxmin()].reset_index(drop=True)
    table.insert(table.columns.get_loc("grid_s") + 1, "repeats", args.repeat)
    first = table.iloc[0]
    table["speedup"] = first["grid_s"] / table["grid_s"] * 1.0
    table["efficiency"] = table["speedup"] * first["workers"] / table["workers"]
    table = table.assign(cpu_model=cpu_model(), cores=default_workers(), python=platform.python_version(),
                         load_avg_1m_before=load_avg, measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    print()
    print(table[["workers", "grid_s", "cell_s_mean", "speedup", "efficiency", "task_throughput_ms",
                 "task_round_trip_ms", "start_s", "rows_identical_to_first"]].to_string(index=False, float_format="%.3f"))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        print(f"wrote {path}")
    return 0 if table["rows_identical_to_first"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
