"""Runtimes offered only where they pay off: drop a configuration some other one dominates.

Issue 8 asks for ``torch.compile`` "kept only where it is not dominated". Dominance is the Pareto
order the planner itself uses: among configurations of the same task, batch size and device, B
dominates A when B's accuracy is at least A's and B's p95 latency at most A's, one of them strictly.
A planner maximising accuracy under a deadline never needs a dominated configuration (B is as
accurate and meets every deadline A meets, also under queueing, since B's batch is served faster).
Where accuracy was not measured (latency-only models), only the same model at a lower p95 dominates.
Pruning is a choice, so it compares ``calibration_accuracy`` (:mod:`planner.splits`), never the
scored ``accuracy`` that the study reports.
Dominated rows leave ``profiles.csv`` for ``dominated.csv`` with the id of their dominator; their
samples and predictions stay on disk, so nothing measured is lost.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from planner.schema import PLANNING_ACCURACY

PRUNED_RUNTIMES: tuple[str, ...] = ("torch_compile",)
GROUP = ["task", "batch_size", "device"]


def dominated_by(profiles: pd.DataFrame, runtimes: Sequence[str] = PRUNED_RUNTIMES,
                 latency: str = "lat_p95_ms", accuracy: str = PLANNING_ACCURACY) -> pd.Series:
    """For each row of ``runtimes``: the config_id of its fastest dominator, else None (other rows: None)."""
    out = pd.Series([None] * len(profiles), index=profiles.index, dtype=object)
    for _, group in profiles.groupby(GROUP, sort=False):
        acc = group[accuracy].to_numpy(dtype=float)
        lat = group[latency].to_numpy(dtype=float)
        models = group["model"].to_numpy()
        ids = group["config_id"].to_numpy()
        order = np.argsort(lat, kind="stable")
        for i in np.flatnonzero(group["runtime"].isin(list(runtimes)).to_numpy()):
            for j in order:  # fastest first: the reported dominator is the fastest one
                if j == i or lat[j] > lat[i]:
                    continue
                if np.isnan(acc[i]) or np.isnan(acc[j]):
                    better = models[j] == models[i] and np.isnan(acc[i]) and lat[j] < lat[i]
                else:
                    better = acc[j] >= acc[i] and (acc[j] > acc[i] or lat[j] < lat[i])
                if better:
                    out.loc[group.index[i]] = ids[j]
                    break
    return out


def split_dominated(profiles: pd.DataFrame, runtimes: Sequence[str] = PRUNED_RUNTIMES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept profiles, dominated rows with a ``dominated_by`` column)."""
    by = dominated_by(profiles, runtimes)
    mask = by.notna().to_numpy()
    dominated = profiles[mask].assign(dominated_by=by[mask].astype(str))
    return profiles[~mask].reset_index(drop=True), dominated.reset_index(drop=True)


def compile_comparison(profiles: pd.DataFrame, dominated: pd.DataFrame | None,
                       runtime: str = "torch_compile", reference: str = "torch") -> pd.DataFrame:
    """Every measured ``runtime`` configuration beside its ``reference`` twin (same model, precision,
    batch, device): p95 of both, the speed-up (reference / runtime p95), the accuracy change, and
    whether it was kept or which configuration dominated it. Single models only."""
    frames = [profiles.assign(dominated_by=None)]
    if dominated is not None and len(dominated):
        frames.append(dominated)
    allrows = pd.concat(frames, ignore_index=True)
    single = allrows[allrows["cascade_small"].isna()] if "cascade_small" in allrows else allrows
    key = ["task", "model", "precision", "batch_size", "device"]
    tried = single[single["runtime"] == runtime]
    twin = single[single["runtime"] == reference][key + ["lat_p95_ms", "accuracy"]]
    out = tried[key + ["config_id", "lat_p95_ms", "accuracy", "dominated_by"]].merge(
        twin, on=key, how="left", suffixes=("", "_" + reference))
    out["speedup_vs_" + reference] = out["lat_p95_ms_" + reference] / out["lat_p95_ms"]
    out["accuracy_change"] = out["accuracy"] - out["accuracy_" + reference]
    out["kept"] = out["dominated_by"].isna()
    return out.sort_values(key).reset_index(drop=True)
