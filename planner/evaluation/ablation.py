"""Ablations: re-run the planner with one dimension of the configuration space removed.

Each restriction keeps the part of the profiles a planner without that dimension could choose from
(batch 1 only, one model, fp32 only, CPU only, no cascades, PyTorch only). The restricted planner's
choice at each deadline is scored on the measured data of the chosen configuration: its measured
accuracy and the fraction of its measured latency samples within the deadline. That isolates the
value of the dimension from queueing, which the workload chapter covers with the simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from planner.plan import DeadlinePlanner


def _smallest_model(profiles: pd.DataFrame) -> pd.DataFrame:
    """Keep, per task, only the plain model with the lowest median p95 (no cascades)."""
    plain = profiles[profiles["cascade_small"].isna()]
    keep = plain.groupby(["task", "model"])["lat_p95_ms"].median().reset_index()
    smallest = keep.loc[keep.groupby("task")["lat_p95_ms"].idxmin(), ["task", "model"]]
    return plain.merge(smallest, on=["task", "model"])


# name -> function that keeps the configurations a planner without that dimension can choose.
RESTRICTIONS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "full space": lambda p: p,
    "batch 1 only": lambda p: p[p["batch_size"] == 1],
    "one model (fastest)": _smallest_model,
    "fp32 only": lambda p: p[p["precision"] == "fp32"],
    "CPU only": lambda p: p[p["device"] == "cpu"],
    "no cascades": lambda p: p[p["cascade_small"].isna()],
    "PyTorch only (no ONNX Runtime)": lambda p: p[p["runtime"] != "onnxruntime"],
}


def restrict(profiles: pd.DataFrame, name: str) -> pd.DataFrame:
    """The profiles a planner without dimension ``name`` sees; an unknown name is a clear error."""
    if name not in RESTRICTIONS:
        raise KeyError(f"unknown ablation {name!r}; known: {list(RESTRICTIONS)}")
    out = RESTRICTIONS[name](profiles)
    return out.reset_index(drop=True)


def hit_fraction(samples: pd.DataFrame, config_id: str, deadline_ms: float) -> float:
    """Fraction of a configuration's measured latency samples that finish within ``deadline_ms``."""
    values = samples.loc[samples["config_id"] == config_id, "latency_ms"].to_numpy()
    if values.size == 0:
        raise ValueError(f"no latency samples for {config_id!r}")
    return float(np.mean(values <= deadline_ms))


def rerun(profiles: pd.DataFrame, samples: pd.DataFrame, task: str, deadlines: Iterable[float],
          names: Iterable[str] | None = None, percentile: float = 95) -> pd.DataFrame:
    """Fit a :class:`planner.plan.DeadlinePlanner` on each restricted space and score its choices.

    Returns one row per (ablation, deadline): the chosen ``config_id``, the reason code, its measured
    accuracy, its measured hit fraction, and ``isolated_effective_accuracy`` = accuracy × hit fraction
    (correctness and latency are independent for a fixed configuration on isolated requests).
    """
    rows = []
    for name in names or RESTRICTIONS:
        space = restrict(profiles[profiles["task"] == task], name)
        space = space[space["accuracy"].notna()]
        if space.empty:
            rows.extend({"ablation": name, "task": task, "deadline_ms": float(d), "n_configs": 0,
                         "config_id": None, "reason": "empty space", "accuracy": np.nan, "hit_fraction": np.nan,
                         "isolated_effective_accuracy": np.nan} for d in deadlines)
            continue
        planner = DeadlinePlanner(percentile=percentile).fit(space)
        for deadline in deadlines:
            decision = planner.select(task, float(deadline))
            accuracy = float(space.loc[space["config_id"] == decision.config_id, "accuracy"].iloc[0])
            hit = hit_fraction(samples, decision.config_id, float(deadline))
            rows.append({"ablation": name, "task": task, "deadline_ms": float(deadline), "n_configs": len(space),
                         "config_id": decision.config_id, "reason": str(getattr(decision.reason, "name", decision.reason)),
                         "accuracy": accuracy, "hit_fraction": hit, "isolated_effective_accuracy": accuracy * hit})
    return pd.DataFrame(rows)
