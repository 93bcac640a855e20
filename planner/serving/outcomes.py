"""Run metrics from a per-request table: the same numbers for the simulator, the replay and the server.

Any table with :data:`planner.schema.REQUEST_RESULT_COLUMNS` gives the metrics named in
:mod:`planner.metrics`, so a metric is computed in one place whichever server produced the rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from planner.metrics import METRICS
from planner.schema import REQUEST_RESULT_COLUMNS, REQUEST_STATUSES, SchemaError


class OutcomeError(SchemaError):
    """A per-request table cannot be scored (missing columns, no rows, unknown status)."""


def run_metrics(results: pd.DataFrame) -> dict[str, float]:
    """Per-run metrics keyed by :data:`planner.metrics.METRICS` names.

    - ``hit_rate``: on-time requests / all requests; ``effective_accuracy``: correct and on time / all;
    - ``accuracy``: correct / requests that got a model's answer (served, late or degraded);
    - latency percentiles over those requests (dropped and shed ones have no model answer; see
      ``n_dropped`` and ``n_shed``); ``late_rate``: late / all requests;
    - ``throughput_rps``: answered requests / (last finish - first arrival among them);
    - ``cpu_s_per_request``: busy server-seconds (sum of batch service times, a batch stopped at the
      deadline until it stopped) / all requests.
    Works on any table with the per-request columns; ``batch_id`` (when present) identifies batches,
    otherwise a batch is a distinct ``(config_id, start_s, finish_s)``.
    """
    missing = [c for c in REQUEST_RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise OutcomeError(f"per-request results miss column(s) {missing}")
    n = len(results)
    if n == 0:
        raise OutcomeError("per-request results are empty")
    bad = set(results["status"].unique()) - set(REQUEST_STATUSES)
    if bad:
        raise OutcomeError(f"unknown status value(s) {sorted(bad)}")
    status = results["status"]
    answered = status.isin(["served", "late", "degraded"]).to_numpy()
    hit = results["hit"].to_numpy(dtype=bool)
    correct = results["correct"].to_numpy(dtype=bool)
    latency = results["latency_ms"].to_numpy(dtype=float)[answered]
    finish = results["finish_s"].to_numpy(dtype=float)[answered]
    if answered.any():
        p50, p95, p99 = np.percentile(latency, [50, 95, 99])
        span = finish.max() - (finish - latency / 1000.0).min()
        throughput = answered.sum() / span if span > 0 else math.nan
    else:
        p50 = p95 = p99 = throughput = math.nan
    if "batch_id" in results.columns:  # a batch lasts until its last answer (early answers leave sooner)
        # or, where the server stopped it at the deadline, until then (its requests shed, in the batch)
        in_batch = answered | ((status == "shed").to_numpy() & (results["batch_id"].to_numpy() >= 0))
        busy = _busy_s(results["batch_id"].to_numpy()[in_batch], results["start_s"].to_numpy(dtype=float)[in_batch],
                       results["finish_s"].to_numpy(dtype=float)[in_batch])
    elif answered.any():
        batches = results.loc[answered].drop_duplicates(["config_id", "start_s", "finish_s"])
        busy = float((batches["finish_s"] - batches["start_s"]).sum())
    else:
        busy = 0.0
    out = {
        "hit_rate": float(hit.mean()),
        "accuracy": float(correct[answered].mean()) if answered.any() else math.nan,
        "effective_accuracy": float((hit & correct).mean()),
        "lat_p50_ms": float(p50), "lat_p95_ms": float(p95), "lat_p99_ms": float(p99),
        "throughput_rps": float(throughput),
        "n_late": int((status == "late").sum()),
        "n_dropped": int((status == "dropped").sum()),
        "n_shed": int((status == "shed").sum()),
        "n_degraded": int((status == "degraded").sum()),
        "late_rate": float((status == "late").mean()),
        "cpu_s_per_request": busy / n,
    }
    unknown = set(out) - set(METRICS)
    if unknown:  # a metric must be registered in planner.metrics before any server reports it
        raise OutcomeError(f"unregistered metric(s) {sorted(unknown)}")
    return out


def _busy_s(batch_id: np.ndarray, start_s: np.ndarray, finish_s: np.ndarray) -> float:
    """Server-seconds of the batches (id >= 0): each from its first start to its last finish, summed
    in batch-id order (numpy instead of a pandas groupby: this runs once per simulated trace)."""
    keep = batch_id >= 0
    if not keep.any():
        return 0.0
    order = np.argsort(batch_id[keep], kind="stable")
    ids, start, finish = batch_id[keep][order], start_s[keep][order], finish_s[keep][order]
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return float((np.maximum.reduceat(finish, first) - np.minimum.reduceat(start, first)).sum())
