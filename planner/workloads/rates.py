"""Load as a fraction of capacity: the one conversion from a load to a trace's mean arrival rate."""

from __future__ import annotations

import math

import pandas as pd

from planner.workloads.generators import WorkloadError, capacity_rps


def rate_for_load(profiles: pd.DataFrame, config_id: str, load: float, servers: int = 1) -> float:
    """Mean arrival rate (req/s) at which ``config_id`` on ``servers`` servers runs at ``load``.

    ``load`` is a fraction of the configuration's capacity (``throughput_items_s`` x servers, full
    batches): 0.5 keeps it half busy on average, above 1 overloads it.
    """
    if isinstance(load, bool) or not isinstance(load, (int, float)) or not (math.isfinite(load) and load > 0):
        raise WorkloadError(f"load must be a positive finite fraction of capacity, got {load!r}")
    return float(load) * capacity_rps(profiles, config_id, servers)
