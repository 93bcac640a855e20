"""Start-up re-timing: scale a stored profile to the machine at hand before the first request.

Profiles go stale between days: the same ResNet18 ORT fp32 b1 ran at 0.28 ms (median) on a quiet
machine of identical fingerprint against 1.06 ms in the committed profile. The reference is a few
of the profile's own configurations (cheap ones a live server loads anyway), whose profiled median
``lat_p50_ms`` is already in ``profiles.csv``, so the stored profile needs no re-profiling. At
start-up the server times each reference configuration again on real inputs after a warm-up; the
ratio of each re-timed median to its profiled median says how much faster or slower this machine is
now, and their geometric mean (ratios multiply, so the mean is taken in log space) is the one
machine-wide factor the online estimator starts from
(:class:`planner.plan.anytime.ServiceTimeEstimator`'s ``startup_scale``).

This module holds the arithmetic and the choice of reference; timing the live models is the
serving side's job (:func:`planner.evaluation.live_fault.retime_reference`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import gmean

REFERENCE_COLUMNS = ["config_id", "profiled_p50_ms", "retimed_p50_ms", "n_calls", "ratio"]
VARIANT = ["task", "model", "runtime", "precision", "device"]


class ReferenceTimingError(ValueError):
    """The reference timings cannot give a start-up scale (the message names the configuration and value)."""


@dataclass(frozen=True)
class StartupScale:
    """The machine-wide factor (re-timed over profiled median, geometric mean over the reference)
    and the per-configuration table it came from (:data:`REFERENCE_COLUMNS`)."""

    scale: float
    table: pd.DataFrame


def pick_reference(profiles: pd.DataFrame, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` cheap reference configurations among ``candidates``: plain (no cascade, whose
    time depends on how many inputs escalate), with a positive profiled median, the cheapest of each
    variant (task, model, runtime, precision, device), cheapest variants first."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ReferenceTimingError(f"the reference needs n >= 1 configurations, got n={n!r}")
    wanted = list(dict.fromkeys(candidates))
    rows = profiles[profiles["config_id"].isin(wanted)]
    unknown = sorted(set(wanted) - set(rows["config_id"]))
    if unknown:
        raise ReferenceTimingError(f"reference candidates not in the profiles: {unknown[:5]}")
    plain = rows[rows["cascade_small"].isna() | (rows["cascade_small"].astype(str) == "")]
    plain = plain[np.isfinite(plain["lat_p50_ms"].astype(float)) & (plain["lat_p50_ms"].astype(float) > 0)]
    if plain.empty:
        raise ReferenceTimingError(f"none of the {len(wanted)} candidates is a plain configuration with a positive "
                                   "profiled lat_p50_ms; a reference needs at least one")
    cheapest = plain.sort_values(["lat_p50_ms", "config_id"]).drop_duplicates(VARIANT)
    return cheapest["config_id"].head(int(n)).tolist()


def startup_scale(profiles: pd.DataFrame, timings_ms: Mapping[str, Sequence[float] | np.ndarray]) -> StartupScale:
    """Ratio of each re-timed median to the configuration's profiled ``lat_p50_ms``; their geometric mean.

    ``timings_ms`` maps a reference configuration to the service times (ms) of its re-timed calls
    (warm-up excluded). Empty input, a configuration missing from ``profiles``, and a non-positive
    or non-finite time on either side are errors naming the configuration and value.
    """
    if not timings_ms:
        raise ReferenceTimingError("no reference timings: re-time at least one configuration")
    if "lat_p50_ms" not in profiles.columns:
        raise ReferenceTimingError(f"profiles have no lat_p50_ms column (columns: {list(profiles.columns)[:10]}...)")
    profiled = profiles.drop_duplicates("config_id").set_index("config_id")["lat_p50_ms"]
    rows = []
    for config_id, calls in timings_ms.items():
        if config_id not in profiled.index:
            raise ReferenceTimingError(f"reference {config_id!r} is not in the profiles")
        p50 = float(profiled.loc[config_id])
        if not (math.isfinite(p50) and p50 > 0):
            raise ReferenceTimingError(f"reference {config_id!r}: profiled lat_p50_ms must be positive, got {p50!r}")
        times = np.asarray(calls, dtype=float).ravel()
        if times.size == 0:
            raise ReferenceTimingError(f"reference {config_id!r}: no re-timed calls")
        bad = times[~(np.isfinite(times) & (times > 0))]
        if bad.size:
            raise ReferenceTimingError(f"reference {config_id!r}: re-timed service times must be positive ms, "
                                       f"got {bad[:3].tolist()}")
        median = float(np.median(times))
        rows.append({"config_id": config_id, "profiled_p50_ms": p50, "retimed_p50_ms": median,
                     "n_calls": int(times.size), "ratio": median / p50})
    table = pd.DataFrame(rows, columns=REFERENCE_COLUMNS)
    return StartupScale(float(gmean(table["ratio"].to_numpy())), table)
