"""Trace-driven evaluation: methods x workloads x loads x deadlines x seeds through the simulator.

For every cell (workload, load, deadline, seed) one trace is generated; its mean rate is ``load``
times the capacity of the deadline planner's choice at that deadline, so "load 0.8" means the
planner's own configuration runs at 80 % utilisation on average. Every method then serves the
same trace with the same seed: service draws are keyed by (seed, config), so two methods that run
the same configuration see the same draws (common random numbers, which the paired statistics
need). The oracle scores every measured configuration on the trace and keeps the best in hindsight.

Runs are appended to a CSV as they finish and skipped when the file already has them, so an
interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from planner.plan import policies
from planner.config import EvaluatePreset
from planner.metrics import RUN_METRICS
from planner.plan import (DeadlinePlanner, INFaaSStyle, Oracle, StaticLarge, StaticSmall,
                          ThroughputAutotuner)
from planner.serving.replay import harness_overhead
from planner.serving.simulator import Catalog, SimulationError, prepare, simulate
from planner.serving.outcomes import run_metrics
from planner.workloads import analyze, capacity_rps, make_trace, workload_class

KEY_COLUMNS = ["task", "method", "workload", "load", "deadline_ms", "seed", "n_requests", "servers", "queue",
               "drop_expired"]


@dataclass(frozen=True)
class Cell:
    """Everything a method may use to build its policy for one trace."""

    bundle: Any
    catalog: Catalog
    task: str
    deadline_ms: float
    workload_class: str
    trace: pd.DataFrame
    seed: int
    settings: EvaluatePreset
    fitted: dict[str, Any]
    precomputed: dict[str, pd.DataFrame] = field(default_factory=dict)  # method -> results already simulated


def _static(key: str) -> Callable[[Cell], policies.Policy]:
    def build(cell: Cell) -> policies.Policy:
        return policies.static(cell.fitted[key], cell.task, cell.workload_class, name=key)
    return build


def _fitted(key: str) -> Callable[[Cell], policies.Policy]:
    return lambda cell: cell.fitted[key]


def _oracle(cell: Cell) -> policies.Policy:
    """Best fixed configuration for this very trace, by the preset's oracle metric.

    Exact pruning for ``effective_accuracy``: a configuration's score cannot exceed the fraction of
    the trace's requests it answers correctly, so configurations are simulated in decreasing order
    of that bound and the rest are skipped once the bound falls below the best score found. A
    skipped configuration is scored with its bound, which is below the best, so the oracle's
    choice is the same as with every configuration simulated.
    """
    metric = cell.settings.oracle_metric
    profiles = cell.bundle.profiles
    measured = profiles.loc[(profiles["task"] == cell.task) & (profiles["accuracy_source"] == "measured"),
                            "config_id"].tolist()
    example_ids = cell.trace["example_id"].to_numpy()
    scored: dict[str, pd.DataFrame] = {}
    scores: dict[str, float] = {}

    def simulate_score(config_id: str) -> float:
        scored[config_id] = _simulate(cell, policies.fixed(config_id, "oracle"))
        value = run_metrics(scored[config_id])[metric]
        return value if math.isfinite(value) else -1e300

    if metric == "effective_accuracy":
        bounds = {c: float(cell.catalog.resolve(c).outcome(example_ids)[0].mean()) for c in measured}
        best = -math.inf
        for c in sorted(measured, key=lambda c: -bounds[c]):
            scores[c] = simulate_score(c) if bounds[c] >= best else bounds[c]
            best = max(best, scores[c])
    oracle = Oracle(lambda c: scores[c] if c in scores else simulate_score(c), cell.settings.percentile)
    choice = oracle.fit(profiles).select_for_trace(cell.task).config_id
    if choice in scored:  # the oracle already simulated its own choice
        cell.precomputed["oracle"] = scored[choice]
    return policies.fixed(choice, "oracle")


METHODS: dict[str, Callable[[Cell], policies.Policy]] = {
    "planner": _static("planner"),
    "static_small": _static("static_small"),
    "static_large": _static("static_large"),
    "throughput_autotuner": _static("throughput_autotuner"),
    "infaas": _static("infaas"),
    "slack_aware": _fitted("slack_aware"),
    "slack_aware_drain": _fitted("slack_aware_drain"),
    "oracle": _oracle,
}


def _fit_methods(bundle: Any, task: str, settings: EvaluatePreset) -> dict[str, Any]:
    """Fit each planner-like method once per evaluation (its select is then O(log n))."""
    p, profiles = settings.percentile, bundle.profiles
    return {
        "planner": DeadlinePlanner(p).fit(profiles),
        "static_small": StaticSmall(p).fit(profiles),
        "static_large": StaticLarge(p).fit(profiles),
        "throughput_autotuner": ThroughputAutotuner(p).fit(profiles),
        "infaas": INFaaSStyle(infaas_floor(profiles, task, settings.infaas_accuracy_margin), p).fit(profiles),
        "slack_aware": policies.slack_aware(bundle, task, p, "slack_aware", "value", settings.slack_lookahead),
        "slack_aware_drain": policies.slack_aware(bundle, task, p, "slack_aware_drain", "drain"),
    }


def infaas_floor(profiles: pd.DataFrame, task: str, margin: float) -> float:
    """The INFaaS baseline's accuracy target: the task's best measured accuracy minus ``margin``."""
    measured = profiles.loc[(profiles["task"] == task) & (profiles["accuracy_source"] == "measured"), "accuracy"]
    if measured.dropna().empty:
        raise SimulationError(f"task {task!r} has no configuration with measured accuracy")
    return float(max(0.0, measured.max() - margin))


def _simulate(cell: Cell, policy: policies.Policy) -> pd.DataFrame:
    s = cell.settings
    return simulate(cell.trace, policy, cell.catalog, servers=s.servers, queue=s.queue, seed=cell.seed,
                    drop_expired=s.drop_expired, task=cell.task)


def example_ids(bundle: Any, task: str) -> np.ndarray:
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


def evaluate(bundle: Any, task: str, settings: EvaluatePreset, deadlines: list[float],
             out_csv: Path | None = None, keep_requests: bool = False, progress: bool = True,
             dispatch_overhead_ms: float = 0.0) -> EvaluationResult:
    """Run ``settings.methods`` over workloads x loads x deadlines x seeds; tidy per-run metrics.

    ``dispatch_overhead_ms`` is the simulated server's per-batch cost (already resolved from
    ``settings.dispatch_overhead``, see :func:`resolve_dispatch_overhead`); it is recorded per run.

    With ``out_csv``, finished runs are appended there and runs already in it are skipped (the
    returned ``runs`` then holds old and new rows). ``keep_requests`` also returns every
    per-request table (memory grows with runs x requests; meant for small evaluations).
    """
    if not deadlines:
        raise ValueError("no deadlines to evaluate")
    catalog = prepare(bundle, dispatch_overhead_ms=float(dispatch_overhead_ms))
    fitted = _fit_methods(bundle, task, settings)
    ids = example_ids(bundle, task)
    done_keys: set[str] = set()
    previous = None
    if out_csv is not None and Path(out_csv).exists() and Path(out_csv).stat().st_size > 0:
        previous = pd.read_csv(out_csv)
        missing = [c for c in KEY_COLUMNS if c not in previous.columns]
        if missing:
            raise ValueError(f"{out_csv}: not an evaluation runs file (missing {missing}); move it away or use a fresh path")
        earlier = previous["dispatch_overhead_ms"] if "dispatch_overhead_ms" in previous else pd.Series(0.0, index=previous.index)
        if len(previous) and not np.allclose(earlier.fillna(0.0), float(dispatch_overhead_ms)):
            raise ValueError(f"{out_csv}: earlier runs simulated a dispatch overhead of "
                             f"{sorted(set(earlier.fillna(0.0).round(4)))} ms, this run {dispatch_overhead_ms:.4f} ms; "
                             "rerun with --fresh (or move the file) instead of mixing two servers")
        done_keys = set(_key(previous))
    cells = [(w, load, d, seed) for w in settings.workloads for load in settings.loads
             for d in deadlines for seed in settings.seeds]
    new_rows, trace_rows, request_tables = [], [], []
    bar = tqdm(total=len(cells) * len(settings.methods), desc=f"evaluate {task}", disable=not progress,
               unit="run")
    for wname, load, deadline, seed in cells:
        spec = settings.workloads[wname]
        base = {"task": task, "workload": wname, "load": float(load), "deadline_ms": float(deadline),
                "seed": int(seed), "n_requests": settings.n_requests, "servers": settings.servers,
                "queue": settings.queue, "drop_expired": settings.drop_expired}
        todo = [m for m in settings.methods
                if _key(pd.DataFrame([{**base, "method": m}])).iloc[0] not in done_keys]
        bar.update(len(settings.methods) - len(todo))
        if not todo:
            continue
        reference = fitted["planner"].select(task, float(deadline), None).config_id
        rate = float(load) * capacity_rps(bundle.profiles, reference, settings.servers)
        trace = make_trace(spec.kind, rate, settings.n_requests, float(deadline), len(ids), int(seed),
                           name=wname, **spec.params)
        trace["example_id"] = ids[trace["example_id"].to_numpy()]
        trace_rows.append({**base, "kind": spec.kind, "target_rate_rps": rate, "reference_config": reference,
                           **analyze(trace).to_dict()})
        cell = Cell(bundle, catalog, task, float(deadline), workload_class(spec.kind), trace, int(seed),
                    settings, fitted)
        rows = []
        for method in todo:
            policy = METHODS[method](cell)
            results = cell.precomputed.pop(method, None)
            results = _simulate(cell, policy) if results is None else results
            results["method"] = method
            used = results["config_id"].value_counts()
            rows.append({**base, "method": method, "kind": spec.kind, "target_rate_rps": rate,
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
            header = not Path(out_csv).exists() or Path(out_csv).stat().st_size == 0
            frame.to_csv(out_csv, mode="a", header=header, index=False)
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
