"""Summaries over seeds: per-seed means over a deadline sweep, mean and CI per cell, the per-deadline
mean points of each method, and the hypervolume/coverage table against a baseline on one shared
reference point per (task, load).

The statistics chapter, the workloads chapter, the README table and ``planner evaluate`` all
summarise runs through these, so the unit of replication (the seed) is chosen in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from planner.analysis.pareto import dominance_ratio, hypervolume
from planner.analysis.stats import describe
from planner.metrics import RUN_METRICS

CELL_KEYS = ["task", "workload", "load", "deadline_ms", "method"]


def summarize_runs(runs: pd.DataFrame, metrics: list[str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Mean, SD and t-based CI over seeds per (task, workload, load, deadline, method) and metric.

    Uses :func:`planner.analysis.stats.describe`. A metric with fewer than 2 finite values in a group (e.g.
    latency when every request was dropped) is left out of that group's summary.

    Runs are put in one order (cell, then seed) first. Why: a floating-point sum depends on its order,
    and runs arrive in completion order after a parallel run but in file order on a resume, so the same
    runs summed as they came moved the summaries' last digits from one invocation to the next.
    """
    by = CELL_KEYS
    order = [c for c in [*by, "seed"] if c in runs.columns]
    runs = runs.sort_values(order, kind="stable")
    parts = []
    for metric in metrics or RUN_METRICS:
        finite = runs[np.isfinite(runs[metric].astype(float))]
        enough = finite.groupby(by)[metric].transform("size") >= 2
        if enough.any():
            parts.append(describe(finite[enough], by, [metric], confidence))
    if not parts:
        raise ValueError("nothing to summarise: every group has fewer than 2 seeds with finite metrics")
    return pd.concat(parts, ignore_index=True).sort_values(by + ["metric"], kind="stable").reset_index(drop=True)


def per_seed_means(runs: pd.DataFrame, metric: str | Sequence[str],
                   by: Sequence[str] = ("task", "method")) -> pd.DataFrame:
    """Average ``metric`` (one name or several) over deadlines within each seed: one row per (by..., seed).

    The seed is the unit of replication, so these are the values paired tests and seed CIs take.
    NaN values (e.g. latency when every request was dropped) are skipped in a mean.
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    missing = [c for c in [*by, "seed", *metrics] if c not in runs.columns]
    if missing:
        raise ValueError(f"runs have no column(s) {missing}")
    if not metrics:
        raise ValueError("per_seed_means: no metric given")
    selected = metrics[0] if isinstance(metric, str) else metrics
    return runs.groupby([*by, "seed"], as_index=False)[selected].mean()


def deadline_points(runs: pd.DataFrame, latency: str = "lat_p95_ms", accuracy: str = "effective_accuracy",
                    by: Sequence[str] = ("task", "load", "method")) -> pd.DataFrame:
    """Each method's (latency, accuracy) outcome per deadline, averaged over seeds: the points of its front.

    One row per (by..., deadline_ms). Runs without a latency or an accuracy (nothing served) cannot be
    placed in the plane and are left out before averaging.
    """
    missing = [c for c in [*by, "deadline_ms", latency, accuracy] if c not in runs.columns]
    if missing:
        raise ValueError(f"runs have no column(s) {missing}")
    placed = runs.dropna(subset=[latency, accuracy])
    return placed.groupby([*by, "deadline_ms"], as_index=False)[[latency, accuracy]].mean()


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


def hypervolume_table(points: pd.DataFrame, baseline: str, latency: str = "lat_p95_ms",
                      accuracy: str = "effective_accuracy", panel: Sequence[str] = ("task", "load"),
                      margin: float = 0.05) -> pd.DataFrame:
    """Per panel (e.g. task and load) and method: hypervolume and coverage against ``baseline``.

    ``points`` are per-deadline points (:func:`deadline_points`). Each panel gets one reference point
    from :func:`hypervolume_reference` over every method's latencies, so hypervolumes in a panel share a
    scale. Columns: ``[*panel, method, ref_latency_ms, hypervolume, <baseline>_covers_method,
    method_covers_<baseline>, hv_relative_to_<baseline>]``; the coverage columns are Zitzler's C (the
    fraction of the second front's points weakly dominated by the first's), and the relative
    hypervolume is NaN where the baseline's hypervolume is 0. Rows sorted by panel, then method.
    """
    panel = list(panel)
    missing = [c for c in [*panel, "method", latency, accuracy] if c not in points.columns]
    if missing:
        raise ValueError(f"hypervolume_table: points have no column(s) {missing}")
    if points.empty:
        raise ValueError("hypervolume_table: no points")
    values = points[[latency, accuracy]].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError(f"hypervolume_table: {latency!r} and {accuracy!r} must be finite; "
                         "build the points with deadline_points")
    covers, covered = f"{baseline}_covers_method", f"method_covers_{baseline}"
    rows = []
    for key, part in points.groupby(panel, sort=True):
        label = dict(zip(panel, key))
        base = part[part["method"] == baseline]
        if base.empty:
            raise ValueError(f"hypervolume_table[{label}]: no points for baseline {baseline!r}; "
                             f"methods are {sorted(part['method'].unique())}")
        ref = hypervolume_reference(part[latency], margin)
        for method, pts in part.groupby("method", sort=True):
            rows.append({
                **label, "method": method, "ref_latency_ms": ref[0],
                "hypervolume": hypervolume(pts[latency], pts[accuracy], ref),
                covers: dominance_ratio(base[latency], base[accuracy], pts[latency], pts[accuracy]),
                covered: dominance_ratio(pts[latency], pts[accuracy], base[latency], base[accuracy]),
            })
    table = pd.DataFrame(rows)
    base_hv = table.loc[table["method"] == baseline, [*panel, "hypervolume"]].rename(
        columns={"hypervolume": "_base_hv"})
    table = table.merge(base_hv, on=panel, how="left")
    table[f"hv_relative_to_{baseline}"] = (table["hypervolume"] / table["_base_hv"]).where(table["_base_hv"] > 0)
    return table.drop(columns="_base_hv")


def describe_available(frame: pd.DataFrame, by: list[str], metrics: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """:func:`planner.analysis.stats.describe` of each metric over the rows that report it.

    A bound reports only effective accuracy (its other metrics are NaN), and a run that shed every
    request has no served accuracy: such rows leave that metric's summary instead of failing it.
    """
    parts = []
    for metric in metrics:
        rows = frame.dropna(subset=[metric])
        if len(rows):
            parts.append(describe(rows, by, [metric], confidence))
    if not parts:
        raise ValueError(f"describe_available: no finite values of {metrics}")
    return pd.concat(parts, ignore_index=True)


def class_outcomes(requests: pd.DataFrame, deadline_ms: float, classes: dict[str, float]) -> pd.DataFrame:
    """Per method and deadline class of a mixed-deadline trace: requests, on-time share, effective
    accuracy, and the shares shed, answered early (degraded) and late.

    ``requests`` is a per-request table with ``method``, ``deadline_ms``, ``status``, ``hit`` and
    ``correct`` (``evaluate(..., keep_requests=True)``); ``classes`` maps a class name to its deadline
    scale, so a request's class is the one whose ``deadline_ms x scale`` it carries. Shows whether a
    method serves the tight class or sacrifices it for the relaxed one.
    """
    missing = [c for c in ("method", "deadline_ms", "status", "hit", "correct") if c not in requests.columns]
    if missing:
        raise ValueError(f"class_outcomes: request table misses column(s) {missing}")
    if not classes:
        raise ValueError("class_outcomes: no deadline classes given")
    by_deadline = {float(deadline_ms) * float(scale): name for name, scale in classes.items()}
    keys = np.array(sorted(by_deadline))
    values = requests["deadline_ms"].to_numpy(dtype=float)
    nearest = keys[np.abs(values[:, None] - keys[None, :]).argmin(axis=1)]
    if not np.allclose(nearest, values, rtol=1e-9, atol=1e-9):
        raise ValueError(f"class_outcomes: request deadlines {sorted(set(values) - set(keys))[:3]} match no class "
                         f"of {classes} at {deadline_ms:g} ms")
    frame = requests.assign(deadline_class=[by_deadline[k] for k in nearest],
                            class_deadline_ms=nearest,
                            on_time_correct=requests["hit"].astype(bool) & requests["correct"].astype(bool))
    status = frame["status"]
    out = frame.assign(shed=status.eq("shed"), degraded=status.eq("degraded"), late=status.eq("late")).groupby(
        ["method", "deadline_class", "class_deadline_ms"], sort=False).agg(
        requests=("hit", "size"), hit_rate=("hit", "mean"), effective_accuracy=("on_time_correct", "mean"),
        shed_share=("shed", "mean"), degraded_share=("degraded", "mean"), late_share=("late", "mean")).reset_index()
    return out.sort_values(["method", "class_deadline_ms"], kind="stable").reset_index(drop=True)
