"""Measured competitive ratio of an online policy against the hindsight oracle on one trace.

Online algorithms are judged by ALG / OPT on an input. Here both come from measurements: the
per-request results of the policy and of the oracle (the best fixed configuration in hindsight,
``planner.plan.Oracle``) simulated on the same trace. The per-request outcome is a benefit
(higher is better), by default "effective": on time *and* correct. Nothing is assumed: there is
no closed-form or "expected" ratio here, only what the two runs produced.

An adaptive policy can beat the best *fixed* configuration, so a ratio above 1 is possible and is
reported as measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = ["request_outcome", "competitive_ratio", "windowed_competitive_ratio"]

Outcome = str | Callable[[pd.DataFrame], pd.Series]
_OUTCOMES = {
    "effective": lambda r: (r["hit"].astype(bool) & r["correct"].astype(bool)).astype(float),
    "hit": lambda r: r["hit"].astype(float),
    "correct": lambda r: r["correct"].astype(float),
}


def request_outcome(results: pd.DataFrame, outcome: Outcome = "effective") -> pd.Series:
    """Per-request benefit indexed by ``request_id``: "effective" (hit and correct), "hit",
    "correct", or a callable mapping the results frame to one value per row."""
    if "request_id" not in results.columns:
        raise ValueError("request_outcome: results have no 'request_id' column")
    if results["request_id"].duplicated().any():
        raise ValueError("request_outcome: duplicated request_id; pass one method's results at a time")
    if "method" in results.columns and results["method"].nunique() > 1:
        raise ValueError(f"request_outcome: results mix methods {sorted(results['method'].unique())}")
    if callable(outcome):
        values = pd.Series(outcome(results), dtype=float)
    elif outcome in _OUTCOMES:
        needed = {"effective": ["hit", "correct"], "hit": ["hit"], "correct": ["correct"]}[outcome]
        missing = [c for c in needed if c not in results.columns]
        if missing:
            raise ValueError(f"request_outcome: results have no column(s) {missing}")
        values = _OUTCOMES[outcome](results)
    else:
        raise ValueError(f"unknown outcome {outcome!r}; use one of {sorted(_OUTCOMES)} or a callable")
    values = pd.Series(np.asarray(values, dtype=float), index=results["request_id"].to_numpy())
    if len(values) != len(results) or values.isna().any() or np.isinf(values).any():
        raise ValueError("request_outcome: the outcome must give one finite value per request")
    return values.sort_index()


def _aligned(policy: pd.DataFrame, oracle: pd.DataFrame, outcome: Outcome) -> tuple[pd.Series, pd.Series]:
    alg, opt = request_outcome(policy, outcome), request_outcome(oracle, outcome)
    if not alg.index.equals(opt.index):
        only = sorted(set(alg.index) ^ set(opt.index))[:5]
        raise ValueError(f"competitive ratio needs the same trace for both runs; request ids differ, e.g. {only}")
    if alg.empty:
        raise ValueError("competitive ratio: no requests")
    return alg, opt


def _ratio(alg: float, opt: float) -> float:
    """ALG / OPT; both zero -> 1 (equally bad); OPT zero and ALG positive -> inf."""
    if opt == 0.0:
        return 1.0 if alg == 0.0 else math.copysign(math.inf, alg)
    return alg / opt


def competitive_ratio(policy_results: pd.DataFrame, oracle_results: pd.DataFrame,
                      outcome: Outcome = "effective") -> pd.Series:
    """``policy_total``, ``oracle_total``, ``ratio = policy_total / oracle_total`` and ``n_requests``
    for one trace, from the two runs' per-request results."""
    alg, opt = _aligned(policy_results, oracle_results, outcome)
    a, o = float(alg.sum()), float(opt.sum())
    return pd.Series({"policy_total": a, "oracle_total": o, "ratio": _ratio(a, o), "n_requests": len(alg)})


def windowed_competitive_ratio(policy_results: pd.DataFrame, oracle_results: pd.DataFrame, window: int,
                               outcome: Outcome = "effective") -> pd.DataFrame:
    """The ratio on consecutive windows of ``window`` requests (in request_id order; the last window
    may be shorter). Its minimum is the worst sub-trace the policy met: an empirical, measured
    stand-in for the worst-case competitive ratio. The oracle's configuration is the one fixed for
    the whole trace, not re-chosen per window."""
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    alg, opt = _aligned(policy_results, oracle_results, outcome)
    block = np.arange(len(alg)) // int(window)
    frame = pd.DataFrame({"window": block, "request_id": alg.index, "alg": alg.to_numpy(), "opt": opt.to_numpy()})
    grouped = frame.groupby("window", sort=True).agg(first_request_id=("request_id", "first"),
                                                     n_requests=("alg", "size"),
                                                     policy_total=("alg", "sum"), oracle_total=("opt", "sum"))
    grouped["ratio"] = [_ratio(a, o) for a, o in zip(grouped["policy_total"], grouped["oracle_total"])]
    return grouped.reset_index()
