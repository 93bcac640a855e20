"""Describe a trace by the numbers that matter for queueing: rate, variability, burstiness.

- ``cv``: coefficient of variation of inter-arrival gaps (1 for Poisson, ~CV for the Gamma generator);
- ``burstiness``: Goh & Barabasi (2008) index ``B = (sigma - mu) / (sigma + mu)`` of the gaps,
  in [-1, 1]: -1 periodic, 0 Poisson, towards 1 bursty;
- ``idc``: index of dispersion of counts (variance / mean of arrivals per window), 1 for Poisson,
  larger when arrivals cluster on the window's time scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from planner.workloads.generators import WorkloadError


def analyze(trace: pd.DataFrame, window_s: float | None = None) -> pd.Series:
    """Rate, gap CV, burstiness index and IDC of one trace.

    ``window_s`` is the IDC counting window; by default the time 50 requests take at the mean rate,
    so the statistic has the same meaning whatever the absolute rate.
    """
    if "arrival_s" not in trace.columns:
        raise WorkloadError("trace has no 'arrival_s' column")
    arrivals = np.sort(trace["arrival_s"].to_numpy(dtype=float))
    n = len(arrivals)
    if n < 3:
        raise WorkloadError(f"need at least 3 arrivals to describe a trace, got {n}")
    gaps = np.diff(arrivals)
    mean, sd = float(gaps.mean()), float(gaps.std(ddof=1))
    duration = float(arrivals[-1] - arrivals[0])
    rate = (n - 1) / duration if duration > 0 else float("inf")
    if window_s is None:
        window_s = 50.0 / rate if np.isfinite(rate) else 1.0
    if not window_s > 0:
        raise WorkloadError(f"window_s must be positive, got {window_s!r}")
    n_windows = max(int(duration // window_s), 1)
    counts = np.bincount(np.minimum(((arrivals - arrivals[0]) // window_s).astype(np.int64), n_windows - 1),
                         minlength=n_windows)[:n_windows]
    idc = float(counts.var(ddof=1) / counts.mean()) if n_windows > 1 and counts.mean() > 0 else float("nan")
    return pd.Series({
        "n": n, "duration_s": duration, "rate_rps": rate, "cv": sd / mean if mean > 0 else float("inf"),
        "burstiness": (sd - mean) / (sd + mean) if sd + mean > 0 else float("nan"),
        "idc": idc, "idc_window_s": float(window_s),
    })


def analyze_traces(traces: list[pd.DataFrame] | dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per trace (labelled by its workload and seed columns when present)."""
    items = traces.items() if isinstance(traces, dict) else enumerate(traces)
    rows = []
    for key, trace in items:
        row = analyze(trace)
        label = {c: trace[c].iloc[0] for c in ("workload", "seed", "load") if c in trace.columns}
        rows.append({"trace": key, **label, **row.to_dict()})
    return pd.DataFrame(rows)
