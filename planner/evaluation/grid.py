"""Trace-driven evaluation: methods x workloads x loads x deadlines x seeds through the simulator.

For every cell (workload, load, deadline, seed) one trace is generated; its mean rate is ``load``
times the capacity of the deadline planner's choice at that deadline, so "load 0.8" means the
planner's own configuration runs at 80 % utilisation on average. Every method then serves the
same trace with the same seed: service draws are keyed by (seed, config), so two methods that run
the same configuration see the same draws (common random numbers, which the paired statistics
need). Methods come from the one registry (:mod:`planner.plan.registry`); a hindsight method may
replay the trace with fixed configurations, which are simulated once per trace and shared.

Runs are appended to a CSV as they finish (whole rows, fsynced: :func:`planner.tables.append_rows`)
and skipped when the file already has them, so an interrupted evaluation resumes where it stopped; a
row torn by a kill mid-write is cut off on resume and run again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from planner.config import EvaluatePreset
from planner.metrics import RUN_METRICS
from planner.plan import policies
from planner.plan.planner import DeadlinePlanner
from planner.plan.registry import METHODS, TraceContext, check_method_params, check_methods, method_params
from planner.schema import ProfileBundle
from planner.tables import append_rows, read_rows
from planner.serving.outcomes import run_metrics
from planner.serving.replay import harness_overhead
from planner.evaluation.clairvoyant import clairvoyant_bound
from planner.serving.simulator import Catalog, SimulationError, prepare, simulate
from planner.workloads import analyze, rate_for_load, spec_trace, workload_class

KEY_COLUMNS = ["task", "method", "workload", "load", "deadline_ms", "seed", "n_requests", "servers", "queue",
               "drop_expired"]


class _TraceScores:
    """Fixed configurations simulated on one trace, kept so a method that runs one of them (the
    hindsight choice, or a static method's single configuration) reuses the very same table."""

    def __init__(self, run: Callable[[policies.OnlinePolicy], pd.DataFrame], catalog: Catalog,
                 example_ids: np.ndarray):
        self._run, self._catalog, self._ids = run, catalog, example_ids
        self.tables: dict[str, pd.DataFrame] = {}

    def table(self, config_id: str) -> pd.DataFrame:
        if config_id not in self.tables:
            self.tables[config_id] = self._run(policies.fixed(config_id, "fixed"))
        return self.tables[config_id]

    def score(self, config_id: str, metric: str) -> float:
        value = run_metrics(self.table(config_id))[metric]
        return value if math.isfinite(value) else -1e300

    def correct_fraction(self, config_id: str) -> float:
        return float(self._catalog.resolve(config_id).outcome(self._ids)[0].mean())


def _single_config(policy: policies.OnlinePolicy, deadlines: np.ndarray) -> str | None:
    """The one configuration a static policy runs for every deadline of a trace, else None."""
    if not policy.needs.static or policy.needs.observes:
        return None
    choices = {policy.config_for(float(d)) for d in deadlines}
    return choices.pop() if len(choices) == 1 else None


def example_ids(bundle: ProfileBundle, task: str) -> np.ndarray:
    """Example ids every measured configuration of ``task`` has a prediction for (traces draw from these)."""
    profiles = bundle.profiles
    measured = profiles.loc[(profiles["task"] == task) & (profiles["accuracy_source"] == "measured"), "config_id"]
    preds = bundle.predictions[bundle.predictions["config_id"].isin(measured)]
    if preds.empty:
        raise SimulationError(f"no predictions for any measured {task} configuration")
    counts = preds.groupby("example_id")["config_id"].nunique()
    common = np.sort(counts.index[counts == preds["config_id"].nunique()].to_numpy(dtype=np.int64))
    if len(common) == 0:
        raise SimulationError(f"the measured {task} configurations share no example id")
    return common


def _key(frame: pd.DataFrame) -> pd.Series:
    parts = [frame[c].map(lambda v: f"{float(v):.9g}") if c in ("load", "deadline_ms") else frame[c].astype(str)
             for c in KEY_COLUMNS]
    out = parts[0]
    for part in parts[1:]:
        out = out + "|" + part
    return out


@dataclass
class EvaluationResult:
    runs: pd.DataFrame                   # one row per (method, workload, load, deadline, seed)
    traces: pd.DataFrame                 # one row per generated trace: rate, CV, burstiness
    requests: pd.DataFrame | None = None  # per-request tables, when asked for


def evaluate(bundle: ProfileBundle, task: str, settings: EvaluatePreset, deadlines: list[float],
             out_csv: Path | None = None, keep_requests: bool = False, progress: bool = True,
             dispatch_overhead_ms: float = 0.0, traces_csv: Path | None = None) -> EvaluationResult:
    """Run the preset's methods over workloads x loads x deadlines x seeds; tidy per-run metrics.

    Methods come from the registry (:mod:`planner.plan.registry`): ``settings.methods`` names them
    (None: the registry's defaults) and ``settings.method_params`` sets their typed parameters.

    ``dispatch_overhead_ms`` is the simulated server's per-batch cost (already resolved from
    ``settings.dispatch_overhead``, see :func:`resolve_dispatch_overhead`); it is recorded per run.

    With ``out_csv``, finished runs are appended there and runs already in it are skipped (the
    returned ``runs`` then holds old and new rows). ``keep_requests`` also returns every
    per-request table (memory grows with runs x requests; meant for small evaluations).
    ``traces_csv`` gets each generated trace's description appended with its cell's runs, so a
    killed run keeps them too (a cell rerun after a kill may append its trace row twice).
    """
    if not deadlines:
        raise ValueError("no deadlines to evaluate")
    methods = check_methods(settings.methods)
    given = check_method_params(settings.method_params)  # every entry, also of methods not run now
    params = {m: given.get(m) or method_params(m, None) for m in methods}
    catalog = prepare(bundle, dispatch_overhead_ms=float(dispatch_overhead_ms))
    fitted = {m: METHODS[m].fit(bundle, task, settings.percentile, params[m]) for m in methods}
    ids = example_ids(bundle, task)
    # the load reference: the static deadline planner's choice at each deadline (once per deadline)
    reference_planner = DeadlinePlanner(settings.percentile).fit(bundle.profiles)
    reference = {float(d): reference_planner.select(task, float(d)).config_id for d in deadlines}
    done_keys: set[str] = set()
    previous = None
    if out_csv is not None and Path(out_csv).exists():
        # whole rows only: a row torn by a kill mid-write is cut off here (and rerun), never spliced
        previous = read_rows(out_csv, KEY_COLUMNS)
    if previous is not None and len(previous):
        earlier = previous["dispatch_overhead_ms"] if "dispatch_overhead_ms" in previous else pd.Series(0.0, index=previous.index)
        if len(previous) and not np.allclose(earlier.fillna(0.0), float(dispatch_overhead_ms)):
            raise ValueError(f"{out_csv}: earlier runs simulated a dispatch overhead of "
                             f"{sorted(set(earlier.fillna(0.0).round(4)))} ms, this run {dispatch_overhead_ms:.4f} ms; "
                             "rerun with --fresh (or move the file) instead of mixing two servers")
        done_keys = set(_key(previous))
    else:
        previous = None
    cells = [(w, load, d, seed) for w in settings.workloads for load in settings.loads
             for d in deadlines for seed in settings.seeds]
    new_rows, trace_rows, request_tables = [], [], []
    bar = tqdm(total=len(cells) * len(methods), desc=f"evaluate {task}", disable=not progress, unit="run")
    for wname, load, deadline, seed in cells:
        spec = settings.workloads[wname]
        base = {"task": task, "workload": wname, "load": float(load), "deadline_ms": float(deadline),
                "seed": int(seed), "n_requests": settings.n_requests, "servers": settings.servers,
                "queue": settings.queue, "drop_expired": settings.drop_expired}
        todo = [m for m in methods if _key(pd.DataFrame([{**base, "method": m}])).iloc[0] not in done_keys]
        bar.update(len(methods) - len(todo))
        if not todo:
            continue
        ref_config = reference[float(deadline)]
        rate = rate_for_load(bundle.profiles, ref_config, float(load), settings.servers)
        trace = spec_trace(spec, rate, settings.n_requests, float(deadline), len(ids), int(seed), name=wname)
        trace["example_id"] = ids[trace["example_id"].to_numpy()]
        mix = None if not spec.deadline_classes else json.dumps(
            {k: [c.share, c.scale] for k, c in spec.deadline_classes.items()})
        trace_row = {**base, "kind": spec.kind, "target_rate_rps": rate, "reference_config": ref_config,
                     "deadline_classes": mix, **analyze(trace).to_dict()}
        trace_rows.append(trace_row)

        def run(policy: policies.OnlinePolicy) -> pd.DataFrame:
            return simulate(trace, policy, catalog, servers=settings.servers, queue=settings.queue, seed=int(seed),
                            drop_expired=settings.drop_expired, task=task)

        scores = _TraceScores(run, catalog, trace["example_id"].to_numpy())

        def upper_bound() -> float:
            return clairvoyant_bound(trace, catalog, task, servers=settings.servers).effective_accuracy

        context = TraceContext(task, float(deadline), workload_class(spec.kind), trace, scores.score,
                               scores.correct_fraction, upper_bound)
        deadlines_of_trace = np.unique(trace["deadline_ms"].to_numpy())
        rows = []
        for name in todo:
            if METHODS[name].bound is not None:  # a number per trace, not a run
                value = float(METHODS[name].bound(fitted[name], context))
                rows.append({**base, "method": name, "kind": spec.kind, "target_rate_rps": rate, "main_config": None,
                             "n_configs_used": 0, "mean_batch": np.nan, "dispatch_overhead_ms": float(dispatch_overhead_ms),
                             **{m: np.nan for m in RUN_METRICS}, "effective_accuracy": value})
                bar.update(1)
                continue
            policy = METHODS[name].policy(fitted[name], context)
            single = _single_config(policy, deadlines_of_trace) if settings.queue == "fifo" else None
            results = scores.table(single).copy() if single is not None else run(policy)
            results["method"] = name
            used = results["config_id"].value_counts()
            rows.append({**base, "method": name, "kind": spec.kind, "target_rate_rps": rate,
                         "main_config": used.index[0] if len(used) else None, "n_configs_used": len(used),
                         "mean_batch": float(results.groupby("batch_id").size().loc[lambda s: s.index >= 0].mean()),
                         "dispatch_overhead_ms": float(dispatch_overhead_ms),
                         **run_metrics(results)})
            if keep_requests:
                request_tables.append(results.assign(workload=wname, load=float(load), seed=int(seed)))
            bar.update(1)
        frame = pd.DataFrame(rows)
        if out_csv is not None:
            Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
            append_rows(out_csv, frame)  # whole rows, flushed and fsynced per cell
        if traces_csv is not None:
            append_rows(traces_csv, pd.DataFrame([trace_row]))
        new_rows.append(frame)
    bar.close()
    runs = pd.concat(([previous] if previous is not None else []) + new_rows, ignore_index=True) \
        if (previous is not None or new_rows) else pd.DataFrame(columns=KEY_COLUMNS + RUN_METRICS)
    return EvaluationResult(runs, pd.DataFrame(trace_rows),
                            pd.concat(request_tables, ignore_index=True) if request_tables else None)


def resolve_dispatch_overhead(settings: EvaluatePreset, out_dir: Path, fresh: bool = False) -> float:
    """The per-batch dispatch cost (ms) of ``settings.dispatch_overhead``.

    ``"harness"`` measures the live replay's no-op median once (:func:`planner.serving.replay.harness_overhead`,
    about a second) and stores it in ``out_dir/dispatch_overhead.json``, so a resumed evaluation
    simulates the same server; ``fresh`` measures again.
    """
    value = settings.dispatch_overhead
    if value == "none":
        return 0.0
    if value != "harness":
        return float(value)
    path = Path(out_dir) / "dispatch_overhead.json"
    if path.exists() and not fresh:
        try:
            return float(json.loads(path.read_text())["dispatch_overhead_ms"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: malformed ({exc}); delete it to measure again") from None
    measured = harness_overhead()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dispatch_overhead_ms": measured["harness_lat_p50_ms"], **measured,
                                "source": "planner.serving.replay.harness_overhead (median no-op request latency)"}, indent=2))
    return float(measured["harness_lat_p50_ms"])
