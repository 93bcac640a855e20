"""Small simulated experiments behind the failure and theory chapters, measured on a profile bundle.

Each function builds seeded traces the way :mod:`planner.evaluation.grid` does (mean rate = load x the
capacity of the planner's choice), runs policies through :func:`planner.serving.simulator.simulate` on the
measured latency samples and per-example predictions, and returns a tidy frame. Notebooks call
these and plot; nothing here is a constant or an assumed outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import pandas as pd

from planner.plan import policies
from planner.config import EvaluatePreset
from planner.plan import DeadlinePlanner, Oracle
from planner.plan.anytime import anytime
from planner.schema import ProfileBundle, measured
from planner.splits import example_ids
from planner.serving.simulator import prepare, simulate
from planner.serving.outcomes import run_metrics
from planner.workloads import make_trace, rate_for_load


def trace_for(bundle: ProfileBundle, task: str, deadline_ms: float, rate_rps: float, n: int, seed: int,
              kind: str = "poisson", **params) -> pd.DataFrame:
    """A seeded trace drawing the scored examples every measured configuration has predictions for."""
    return make_trace(kind, rate_rps, n, float(deadline_ms), example_ids(bundle, task), int(seed), **params)


def _run(trace, policy, catalog, settings: EvaluatePreset, seed: int, task: str) -> pd.DataFrame:
    return simulate(trace, policy, catalog, servers=settings.servers, queue=settings.queue, seed=int(seed),
                    drop_expired=settings.drop_expired, task=task)


def infeasible_deadlines(bundle: ProfileBundle, task: str, settings: EvaluatePreset, fractions: Iterable[float],
                         load: float, seeds: Iterable[int]) -> pd.DataFrame:
    """Deadlines at fractions of the fastest configuration's latency percentile: the planner's reason
    code and expected miss, and the hit-rate and effective accuracy it measures in simulation."""
    planner = DeadlinePlanner(settings.percentile).fit(bundle.profiles)
    catalog = prepare(bundle)
    column = f"lat_p{settings.percentile}_ms"
    fastest = float(bundle.profiles.loc[measured(bundle.profiles, task), column].min())
    rows = []
    for fraction in fractions:
        deadline = fraction * fastest
        decision = planner.select(task, deadline)
        rate = rate_for_load(bundle.profiles, decision.config_id, load, settings.servers)
        for seed in seeds:
            trace = trace_for(bundle, task, deadline, rate, settings.n_requests, seed)
            metrics = run_metrics(_run(trace, policies.static(planner, task, None, name="planner"), catalog,
                                       settings, seed, task))
            rows.append({"task": task, "fraction_of_fastest": float(fraction), "deadline_ms": deadline,
                         "seed": int(seed), "config_id": decision.config_id, "reason": str(decision.reason),
                         "expected_miss_ms": decision.expected_miss_ms, "hit_rate": metrics["hit_rate"],
                         "effective_accuracy": metrics["effective_accuracy"]})
    return pd.DataFrame(rows)


def crash_fallback(bundle: ProfileBundle, task: str, settings: EvaluatePreset, deadlines: Iterable[float], load: float,
                   seeds: Iterable[int]) -> pd.DataFrame:
    """At each deadline, inject a crash of the planner's choice and serve the same trace with its
    fallback: what the failure costs, measured against the configuration that crashed."""
    planner = DeadlinePlanner(settings.percentile).fit(bundle.profiles)
    catalog = prepare(bundle)
    rows = []
    for deadline in deadlines:
        first = planner.select(task, float(deadline))
        second = planner.fallback(task, float(deadline), {first.config_id})
        rate = rate_for_load(bundle.profiles, first.config_id, load, settings.servers)
        for seed in seeds:
            trace = trace_for(bundle, task, deadline, rate, settings.n_requests, seed)
            for role, decision in (("chosen", first), ("fallback", second)):
                metrics = run_metrics(_run(trace, policies.fixed(decision.config_id, role), catalog, settings,
                                           seed, task))
                rows.append({"task": task, "deadline_ms": float(deadline), "seed": int(seed), "role": role,
                             "config_id": decision.config_id, "reason": str(decision.reason),
                             "hit_rate": metrics["hit_rate"], "effective_accuracy": metrics["effective_accuracy"]})
    return pd.DataFrame(rows)


def spike_timeline(bundle: ProfileBundle, task: str, settings: EvaluatePreset, deadline_ms: float, load: float, seed: int,
                   spike: dict, window: int) -> pd.DataFrame:
    """Per-request outcomes of the seed's static rule and the anytime policy on one load-spike trace,
    with a rolling hit-rate over ``window`` requests."""
    planner = DeadlinePlanner(settings.percentile).fit(bundle.profiles)
    choice = planner.select(task, float(deadline_ms), "bursty").config_id
    rate = rate_for_load(bundle.profiles, choice, load, settings.servers)
    trace = trace_for(bundle, task, deadline_ms, rate, settings.n_requests, seed, kind="spike", **spike)
    catalog = prepare(bundle)
    frames = []
    for name, policy in (("seed_p95", policies.static(planner, task, "bursty", name="seed_p95")),
                         ("anytime", anytime(bundle, task))):
        result = _run(trace, policy, catalog, settings, seed, task).assign(method=name)
        result["rolling_hit_rate"] = result["hit"].astype(float).rolling(window, min_periods=1).mean()
        frames.append(result)
    return pd.concat(frames, ignore_index=True)


def _drifted(bundle: ProfileBundle, factor: float) -> ProfileBundle:
    """The bundle with every latency sample (and latency column) multiplied by ``factor``."""
    samples = bundle.samples.assign(latency_ms=bundle.samples["latency_ms"] * factor)
    profiles = bundle.profiles.copy()
    for column in [c for c in profiles.columns if c.startswith("lat_") and c.endswith("_ms")]:
        profiles[column] = profiles[column] * factor
    profiles["throughput_items_s"] = profiles["throughput_items_s"] / factor
    return replace(bundle, samples=samples, profiles=profiles)


def latency_drift(bundle: ProfileBundle, task: str, settings: EvaluatePreset, deadlines: Iterable[float],
                  factors: Iterable[float], load: float, seeds: Iterable[int]) -> pd.DataFrame:
    """Serve with latencies slowed by each factor: a planner fitted on the stale profiles against one
    re-fitted on re-measured (drifted) profiles, on the same traces (rate fixed before the drift)."""
    stale = DeadlinePlanner(settings.percentile).fit(bundle.profiles)
    rows = []
    for factor in factors:
        drifted = _drifted(bundle, float(factor))
        fresh = DeadlinePlanner(settings.percentile).fit(drifted.profiles)
        catalog = prepare(drifted)
        for deadline in deadlines:
            rate = rate_for_load(bundle.profiles, stale.select(task, float(deadline)).config_id, load, settings.servers)
            for seed in seeds:
                trace = trace_for(bundle, task, deadline, rate, settings.n_requests, seed)
                for name, planner in (("stale profiles", stale), ("re-profiled", fresh)):
                    metrics = run_metrics(_run(trace, policies.static(planner, task, None, name=name), catalog,
                                               settings, seed, task))
                    rows.append({"task": task, "drift": float(factor), "deadline_ms": float(deadline),
                                 "seed": int(seed), "planner": name, "hit_rate": metrics["hit_rate"],
                                 "effective_accuracy": metrics["effective_accuracy"]})
    return pd.DataFrame(rows)


def oracle_runs(bundle: ProfileBundle, task: str, settings: EvaluatePreset, deadline_ms: float, load: float, seed: int,
                kind: str = "poisson", **params) -> dict[str, pd.DataFrame]:
    """Per-request results of the seed's static rule, the anytime policy and the best fixed
    configuration in hindsight (by effective accuracy) on one trace, for the competitive ratio."""
    planner = DeadlinePlanner(settings.percentile).fit(bundle.profiles)
    rate = rate_for_load(bundle.profiles, planner.select(task, float(deadline_ms)).config_id, load, settings.servers)
    trace = trace_for(bundle, task, deadline_ms, rate, settings.n_requests, seed, kind=kind, **params)
    catalog = prepare(bundle)
    scored: dict[str, pd.DataFrame] = {}

    def score(config_id: str) -> float:
        scored[config_id] = _run(trace, policies.fixed(config_id, "best_fixed_hindsight"), catalog, settings, seed, task)
        value = run_metrics(scored[config_id])["effective_accuracy"]
        return float(value) if np.isfinite(value) else -1.0

    oracle = Oracle(score, settings.percentile).fit(bundle.profiles, task=task)
    best = oracle.select_for_trace(task).config_id
    workload = "steady" if kind == "poisson" else "bursty"
    return {
        "seed_p95": _run(trace, policies.static(planner, task, workload, name="seed_p95"), catalog, settings, seed,
                         task),
        "anytime": _run(trace, anytime(bundle, task), catalog, settings, seed, task),
        "best_fixed_hindsight": scored[best],
    }
