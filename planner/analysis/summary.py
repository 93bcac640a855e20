"""Summaries over seeds: per-seed means over a deadline sweep, mean and CI per cell, and the shared
hypervolume reference point.

The statistics chapter, the workloads chapter, the README table and ``planner evaluate`` all
summarise runs through these, so the unit of replication (the seed) is chosen in one place.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from planner.analysis.stats import describe
from planner.metrics import RUN_METRICS

CELL_KEYS = ["task", "workload", "load", "deadline_ms", "method"]


def summarize_runs(runs: pd.DataFrame, metrics: list[str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Mean, SD and t-based CI over seeds per (task, workload, load, deadline, method) and metric.

    Uses :func:`planner.analysis.stats.describe`. A metric with fewer than 2 finite values in a group (e.g.
    latency when every request was dropped) is left out of that group's summary.
    """
    by = CELL_KEYS
    parts = []
    for metric in metrics or RUN_METRICS:
        finite = runs[np.isfinite(runs[metric].astype(float))]
        enough = finite.groupby(by)[metric].transform("size") >= 2
        if enough.any():
            parts.append(describe(finite[enough], by, [metric], confidence))
    if not parts:
        raise ValueError("nothing to summarise: every group has fewer than 2 seeds with finite metrics")
    return pd.concat(parts, ignore_index=True).sort_values(by + ["metric"], kind="stable").reset_index(drop=True)


def per_seed_means(runs: pd.DataFrame, metric: str, by: tuple[str, ...] = ("task", "method")) -> pd.DataFrame:
    """Average ``metric`` over deadlines within each seed: one value per (by..., seed) for paired tests."""
    if metric not in runs.columns:
        raise ValueError(f"runs have no column {metric!r}")
    return runs.groupby([*by, "seed"], as_index=False)[metric].mean()


def hypervolume_reference(latency_ms: pd.Series | np.ndarray, margin: float = 0.05) -> tuple[float, float]:
    """The reference point shared by every method's front in one (task, load) panel.

    ``(max latency seen by any method x (1 + margin), accuracy 0)``: every observed point lies strictly
    inside it, so no method's hypervolume is clipped, and methods are compared on one scale.
    """
    values = np.asarray(latency_ms, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("hypervolume_reference: no finite latency")
    if not margin > 0:
        raise ValueError(f"hypervolume_reference: margin must be positive, got {margin!r}")
    return float(values.max()) * (1.0 + margin), 0.0
