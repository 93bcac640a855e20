"""Utilisation-based schedulability for a set of request classes sharing one server.

Class i arrives at ``rate_rps`` and costs ``service_ms`` of server time per request, so it keeps the
server busy a fraction ``U_i = rate_rps * service_ms / 1000``; ``U = sum_i U_i``.

* EDF test, ``U <= 1``: for periodic tasks with deadlines equal to their periods this is exact
  (Liu & Layland 1973); for any arrival process ``U < 1`` is necessary for a stable queue.
* Rate-monotonic bound, ``U <= n (2^{1/n} - 1)``: sufficient (not necessary) for fixed-priority
  scheduling of n periodic classes; it falls towards ln 2 ~ 0.693 as n grows.

With Poisson arrivals these are stability/feasibility screens, not latency guarantees; the
simulator measures the latencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["utilization", "rm_bound", "edf_schedulable", "schedulability"]


def utilization(service_ms: Sequence[float] | np.ndarray, rate_rps: Sequence[float] | np.ndarray) -> float:
    """``U = sum_i service_i [s] * rate_i [1/s]``."""
    s = np.asarray(service_ms, dtype=float).ravel()
    r = np.asarray(rate_rps, dtype=float).ravel()
    if s.shape != r.shape:
        raise ValueError(f"utilization: {s.size} service times but {r.size} rates")
    if s.size == 0:
        raise ValueError("utilization: no request classes")
    if not (np.isfinite(s).all() and np.isfinite(r).all()) or (s < 0).any() or (r < 0).any():
        raise ValueError("utilization: service times and rates must be finite and non-negative")
    return float(np.sum(s / 1000.0 * r))


def rm_bound(n: int) -> float:
    """Liu & Layland's rate-monotonic utilisation bound ``n (2^{1/n} - 1)`` for n classes."""
    if int(n) != n or n < 1:
        raise ValueError(f"rm_bound: n must be a positive integer, got {n!r}")
    return float(n * (2.0 ** (1.0 / n) - 1.0))


def edf_schedulable(u: float) -> bool:
    """EDF utilisation test ``U <= 1``."""
    if not math.isfinite(u) or u < 0:
        raise ValueError(f"edf_schedulable: utilisation must be finite and >= 0, got {u!r}")
    return u <= 1.0


def schedulability(classes: pd.DataFrame) -> pd.Series:
    """Summary for a table of classes with columns ``rate_rps`` and ``service_ms`` (one row each):
    ``U``, ``n``, ``rm_bound``, ``rm_schedulable`` (sufficient test), ``edf_schedulable``, and
    ``headroom`` = 1 - U (the fraction of the server left idle)."""
    missing = [c for c in ("rate_rps", "service_ms") if c not in classes.columns]
    if missing:
        raise ValueError(f"schedulability: classes table has no column(s) {missing}")
    u = utilization(classes["service_ms"].to_numpy(), classes["rate_rps"].to_numpy())
    n = len(classes)
    bound = rm_bound(n)
    return pd.Series({"U": u, "n": n, "rm_bound": bound, "rm_schedulable": u <= bound,
                      "edf_schedulable": edf_schedulable(u), "headroom": 1.0 - u})
