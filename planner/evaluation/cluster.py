"""Sizing the evaluation's Dask cluster from a measured per-cell cost.

The cluster plumbing itself (:class:`~planner.cluster.DaskPool`, :func:`~planner.cluster.stream`,
:func:`~planner.cluster.task_overhead`) lives in :mod:`planner.cluster`, shared with the profiler.
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["workers_needed", "size_from_benchmark"]


def workers_needed(n_cells: int, seconds_per_cell: float, budget_s: float = 600.0, overhead_s_per_cell: float = 0.0,
                   startup_s: float = 0.0, efficiency: float = 1.0) -> int:
    """Workers (one core each) that run ``n_cells`` cells within ``budget_s`` of wall time.

    Cells are the unit of work and never split, so the answer is at least 1 and never more than
    ``n_cells``; ``efficiency`` (measured speed-up / workers, <= 1) discounts what each added
    worker delivers, ``startup_s`` is paid once. Raises when one cell alone exceeds the budget.
    """
    if n_cells < 1 or not (seconds_per_cell > 0 and math.isfinite(seconds_per_cell)):
        raise ValueError(f"need n_cells >= 1 and a finite seconds_per_cell > 0, got {n_cells}, {seconds_per_cell}")
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency is a measured speed-up per worker in (0, 1], got {efficiency}")
    per_cell = seconds_per_cell + overhead_s_per_cell
    left = budget_s - startup_s
    if per_cell > left:
        raise ValueError(f"one cell takes {per_cell:.1f} s, more than the {left:.1f} s left of the budget")
    return min(n_cells, max(1, math.ceil(n_cells * per_cell / (left * efficiency))))


def size_from_benchmark(bench: pd.DataFrame, n_cells: int, budget_s: float = 600.0) -> dict[str, float]:
    """The cluster that runs ``n_cells`` cells in ``budget_s``, from ``benchmarks/bench_dask.py``'s table.

    Per-cell cost: the mean cell time with one worker; efficiency: the speed-up per worker at the
    largest worker count measured (assumed to hold for more workers); per-cell scheduling cost and
    start-up time: measured at that count. Returns those numbers and ``workers`` (one core each).
    """
    missing = [c for c in ("workers", "cell_s_mean", "speedup", "task_throughput_ms", "start_s") if c not in bench]
    if missing:
        raise ValueError(f"not a bench_dask table: missing column(s) {missing}")
    if not (bench["workers"] == 1).any():
        raise ValueError(f"the bench_dask table has no 1-worker row (workers: {sorted(bench['workers'])})")
    one = bench[bench["workers"] == 1].iloc[0]
    most = bench.loc[bench["workers"].idxmax()]
    efficiency = float(min(1.0, most["speedup"] / most["workers"]))
    per_cell = float(one["cell_s_mean"])
    overhead = float(most["task_throughput_ms"]) / 1000.0
    workers = workers_needed(n_cells, per_cell, budget_s, overhead, float(most["start_s"]), efficiency)
    return {"n_cells": n_cells, "seconds_per_cell": per_cell, "efficiency": efficiency,
            "overhead_s_per_cell": overhead, "startup_s": float(most["start_s"]),
            "cpu_hours": n_cells * per_cell / 3600.0, "workers": workers}
