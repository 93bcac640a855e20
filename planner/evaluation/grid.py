"""Trace-driven evaluation: methods x workloads x loads x deadlines x seeds through the simulator.

For every cell (workload, load, deadline, seed) one trace is generated; its mean rate is ``load``
times the capacity of the deadline planner's choice at that deadline, so "load 0.8" means the
planner's own configuration runs at 80 % utilisation on average. Every method then serves the
same trace with the same seed: service draws are keyed by (seed, config), so two methods that run
the same configuration see the same draws (common random numbers, which the paired statistics
need). Methods come from the one registry (:mod:`planner.plan.registry`); a hindsight method may
replay the trace with fixed configurations, which are simulated once per trace and shared.

One cell is one call of :func:`run_cell`, a pure function of the bundle, the settings and the cell;
the serial runner calls it in a loop, and with ``workers``/``scheduler`` each cell is a Dask task
(:mod:`planner.cluster`) and the rows come back as cells finish. Either way runs are
appended to a CSV per cell (whole rows, fsynced: :func:`planner.tables.append_rows`) by this process
and skipped when the file already has them, so an interrupted evaluation resumes where it stopped; a
row torn by a kill mid-write is cut off on resume and run again. Sorted by their keys, the rows are
the same whichever way the cells ran.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from planner.config import EvaluatePreset
from planner.metrics import RUN_METRICS
from planner.plan import policies
from planner.plan.planner import DeadlinePlanner
from planner.plan.registry import METHODS, TraceContext, check_method_params, check_methods, method_params
from planner.schema import ProfileBundle
from planner.splits import example_ids
from planner.tables import append_rows, atomic_write_text, read_rows
from planner.serving.outcomes import run_metrics
from planner.serving.replay import harness_overhead
from planner.evaluation.clairvoyant import clairvoyant_bound
from planner.cluster import DaskPool, stream
from planner.serving.simulator import Catalog, SimulationError, prepare, simulate
from planner.workloads import analyze, rate_for_load, spec_trace, workload_class

KEY_COLUMNS = ["task", "method", "workload", "load", "deadline_ms", "seed", "n_requests", "servers", "queue",
               "drop_expired"]
# the columns of runs_<task>.csv, in order (a bound's row has NaN run metrics and its effective accuracy)
RUN_COLUMNS = [c for c in KEY_COLUMNS if c != "method"] + ["method", "kind", "target_rate_rps", "main_config", "n_configs_used",
               "mean_batch", "dispatch_overhead_ms", *RUN_METRICS]


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


def _key(frame: pd.DataFrame) -> pd.Series:
    parts = [frame[c].map(lambda v: f"{float(v):.9g}") if c in ("load", "deadline_ms") else frame[c].astype(str)
             for c in KEY_COLUMNS]
    out = parts[0]
    for part in parts[1:]:
        out = out + "|" + part
    return out


class Cell(NamedTuple):
    """One cell of the grid: one generated trace, served by every method with the same seed."""

    workload: str
    load: float
    deadline_ms: float
    seed: int


def grid_cells(settings: EvaluatePreset, deadlines: list[float]) -> list[Cell]:
    """The grid's cells in the order the serial runner visits them (workload, load, deadline, seed)."""
    return [Cell(w, float(load), float(d), int(seed)) for w in settings.workloads for load in settings.loads
            for d in deadlines for seed in settings.seeds]


@dataclass
class CellResult:
    """What one cell produces: a row per method run, the trace's description, optionally the requests."""

    cell: Cell
    runs: pd.DataFrame                    # one row per method, columns RUN_COLUMNS
    trace: dict[str, Any]                 # one row of traces_<task>.csv
    requests: pd.DataFrame | None = None  # per-request tables of the runs, when asked for
    seconds: float = math.nan             # wall time of the cell where it ran (never written: not reproducible)


@dataclass
class EvaluationResult:
    runs: pd.DataFrame                   # one row per (method, workload, load, deadline, seed)
    traces: pd.DataFrame                 # one row per generated trace: rate, CV, burstiness
    requests: pd.DataFrame | None = None  # per-request tables, when asked for
    cell_seconds: list[float] = field(default_factory=list)  # wall time of each cell run now, where it ran


@dataclass(frozen=True)
class _Fitted:
    """Everything a cell needs that does not depend on the cell: fitted once per process and settings."""

    methods: list[str]
    catalog: Catalog
    fitted: dict[str, Any]
    ids: np.ndarray
    reference: DeadlinePlanner  # the load reference: the static deadline planner's choice


# (id(bundle), task, settings, overhead) -> (bundle, fitted); the bundle is held so its id stays unique
_FITTED: OrderedDict[tuple, tuple[ProfileBundle, _Fitted]] = OrderedDict()
_FITTED_KEEP = 2


def _fit(bundle: ProfileBundle, task: str, settings: EvaluatePreset, dispatch_overhead_ms: float,
         refit: bool = False, example_pool: np.ndarray | None = None) -> _Fitted:
    """The methods of ``settings`` fitted on ``bundle`` for ``task``, cached per process.

    A Dask worker fits once and reuses the fit for every cell it runs (the scattered bundle is the
    same object each time); ``refit`` forces a new fit (the serial runner, once per evaluation, so
    a bundle changed in place between two evaluations is never served a stale fit).
    """
    pool = None if example_pool is None else np.asarray(example_pool, dtype=np.int64)
    key = (id(bundle), task, settings.model_dump_json(), float(dispatch_overhead_ms),
           None if pool is None else pool.tobytes())
    hit = _FITTED.get(key)
    if hit is not None and hit[0] is bundle and not refit:
        _FITTED.move_to_end(key)
        return hit[1]
    methods = check_methods(settings.methods)
    given = check_method_params(settings.method_params)  # every entry, also of methods not run now
    params = {m: given.get(m) or method_params(m, None) for m in methods}
    fitted = _Fitted(methods, prepare(bundle, dispatch_overhead_ms=float(dispatch_overhead_ms)),
                     {m: METHODS[m].fit(bundle, task, settings.percentile, params[m]) for m in methods},
                     example_ids(bundle, task) if pool is None else pool,
                     fit_load_reference(bundle, settings.percentile))
    _FITTED[key] = (bundle, fitted)
    _FITTED.move_to_end(key)
    while len(_FITTED) > _FITTED_KEEP:
        _FITTED.popitem(last=False)
    return fitted


def _base(task: str, settings: EvaluatePreset, cell: Cell) -> dict[str, Any]:
    return {"task": task, "workload": cell.workload, "load": float(cell.load), "deadline_ms": float(cell.deadline_ms),
            "seed": int(cell.seed), "n_requests": settings.n_requests, "servers": settings.servers,
            "queue": settings.queue, "drop_expired": settings.drop_expired}


def fit_load_reference(bundle: ProfileBundle, percentile: int) -> DeadlinePlanner:
    """The seed rule fitted on ``bundle``: its choice at a cell's deadline sets what the cell's load
    means (a share of that configuration's capacity). The one place a load gets its reference; a
    development run fits it on the scored bundle and passes it to :func:`run_cell`."""
    return DeadlinePlanner(percentile).fit(bundle.profiles)


def _cell_trace(bundle: ProfileBundle, state: _Fitted, cell: Cell, task: str, settings: EvaluatePreset,
                load_reference: DeadlinePlanner | None = None) -> tuple[pd.DataFrame, float, str]:
    """(trace, arrival rate, reference configuration) of a cell: the load is a share of the seed
    rule's configuration's capacity at the cell's deadline (the rule ``load_reference``, default the
    one fitted on ``bundle``)."""
    reference = state.reference if load_reference is None else load_reference
    ref_config = reference.select(task, float(cell.deadline_ms)).config_id
    rate = rate_for_load(bundle.profiles, ref_config, float(cell.load), settings.servers)
    trace = spec_trace(settings.workloads[cell.workload], rate, settings.n_requests, float(cell.deadline_ms),
                       state.ids, int(cell.seed), name=cell.workload)
    return trace, rate, ref_config


def cell_trace(bundle: ProfileBundle, cell: Cell, task: str, settings: EvaluatePreset,
               dispatch_overhead_ms: float = 0.0) -> tuple[pd.DataFrame, Catalog, np.ndarray]:
    """The trace :func:`run_cell` serves for ``cell``, the catalog it serves it with and the example
    pool it draws from: what a bound on the cell's runs needs, without running them."""
    state = _fit(bundle, task, settings, dispatch_overhead_ms)
    return _cell_trace(bundle, state, cell, task, settings)[0], state.catalog, state.ids


def run_cell(bundle: ProfileBundle, cell: Cell, task: str, settings: EvaluatePreset, dispatch_overhead_ms: float = 0.0,
             methods: Sequence[str] | None = None, keep_requests: bool = False,
             example_pool: np.ndarray | None = None, load_reference: DeadlinePlanner | None = None) -> CellResult:
    """Generate the cell's trace and serve it with every method (``methods``: a subset, e.g. on resume).

    ``example_pool``: the example ids the trace draws from; by default the scored part
    (:func:`example_ids`). A development run (:mod:`planner.analysis.tuning`) passes its own.
    ``load_reference``: the fitted seed rule whose choice at the cell's deadline defines the load
    (default: the one fitted on ``bundle``). A development run passes the one fitted on the scored
    bundle (:func:`fit_load_reference`): its bundle's planning accuracies come from
    half the calibration part, on which the rule can choose another configuration and so set another
    arrival rate for the same load.

    A pure function of its arguments: the trace and every service draw are seeded by the cell's seed
    (and the configuration), so the same cell gives the same rows in any process, in any order. The
    serial runner and every Dask worker call it; fitted methods are cached per process (:func:`_fit`).
    """
    start = time.perf_counter()
    state = _fit(bundle, task, settings, dispatch_overhead_ms, example_pool=example_pool)
    todo = state.methods if methods is None else list(methods)
    unknown = [m for m in todo if m not in state.fitted]
    if unknown:
        raise ValueError(f"methods {unknown} are not among the settings' methods {state.methods}")
    spec = settings.workloads[cell.workload]
    base = _base(task, settings, cell)
    trace, rate, ref_config = _cell_trace(bundle, state, cell, task, settings, load_reference)
    mix = None if not spec.deadline_classes else json.dumps(
        {k: [c.share, c.scale] for k, c in spec.deadline_classes.items()})
    trace_row = {**base, "kind": spec.kind, "target_rate_rps": rate, "reference_config": ref_config,
                 "deadline_classes": mix, **analyze(trace).to_dict()}

    def run(policy: policies.OnlinePolicy) -> pd.DataFrame:
        return simulate(trace, policy, state.catalog, servers=settings.servers, queue=settings.queue,
                        seed=int(cell.seed), drop_expired=settings.drop_expired, task=task)

    scores = _TraceScores(run, state.catalog, trace["example_id"].to_numpy())

    def upper_bound() -> float:
        return clairvoyant_bound(trace, state.catalog, task, servers=settings.servers).effective_accuracy

    context = TraceContext(task, float(cell.deadline_ms), workload_class(spec.kind), trace, scores.score,
                           scores.correct_fraction, upper_bound)
    deadlines_of_trace = np.unique(trace["deadline_ms"].to_numpy())
    rows, request_tables = [], []
    for name in todo:
        fitted = state.fitted[name]
        common = {**base, "method": name, "kind": spec.kind, "target_rate_rps": rate,
                  "dispatch_overhead_ms": float(dispatch_overhead_ms)}
        if METHODS[name].bound is not None:  # a number per trace, not a run
            value = float(METHODS[name].bound(fitted, context))
            rows.append({**common, "main_config": None, "n_configs_used": 0, "mean_batch": np.nan,
                         **{m: np.nan for m in RUN_METRICS}, "effective_accuracy": value})
            continue
        policy = METHODS[name].policy(fitted, context)
        single = _single_config(policy, deadlines_of_trace) if settings.queue == "fifo" else None
        results = scores.table(single).copy() if single is not None else run(policy)
        results["method"] = name
        used = results["config_id"].value_counts()
        rows.append({**common, "main_config": used.index[0] if len(used) else None, "n_configs_used": len(used),
                     "mean_batch": float(results.groupby("batch_id").size().loc[lambda s: s.index >= 0].mean()),
                     **run_metrics(results)})
        if keep_requests:
            request_tables.append(results.assign(workload=cell.workload, load=float(cell.load), seed=int(cell.seed)))
    frame = pd.DataFrame(rows)
    # one column order and float metrics whatever methods the cell ran, so a cell's CSV lines are the
    # same bytes whether it ran alone, on resume, or in another process
    frame = frame[RUN_COLUMNS + [c for c in frame.columns if c not in RUN_COLUMNS]]
    frame[RUN_METRICS + ["mean_batch"]] = frame[RUN_METRICS + ["mean_batch"]].astype(float)
    return CellResult(cell, frame, trace_row, pd.concat(request_tables, ignore_index=True) if request_tables else None,
                      time.perf_counter() - start)


def _run_job(bundle: ProfileBundle, job: tuple[Cell, tuple[str, ...]], task: str, settings: EvaluatePreset,
             dispatch_overhead_ms: float, keep_requests: bool) -> CellResult:
    """:func:`run_cell` of one ``(cell, methods to run)`` job (the task a Dask worker runs)."""
    return run_cell(bundle, job[0], task, settings, dispatch_overhead_ms, job[1], keep_requests)


def _previous_runs(out_csv: Path | None, dispatch_overhead_ms: float) -> pd.DataFrame | None:
    """Whole rows already in ``out_csv`` (None if none), after checking they simulated the same server."""
    if out_csv is None or not Path(out_csv).exists():
        return None
    # whole rows only: a row torn by a kill mid-write is cut off here (and rerun), never spliced
    previous = read_rows(out_csv, KEY_COLUMNS)
    if not len(previous):
        return None
    earlier = previous["dispatch_overhead_ms"] if "dispatch_overhead_ms" in previous else pd.Series(0.0, index=previous.index)
    if not np.allclose(earlier.fillna(0.0), float(dispatch_overhead_ms)):
        raise ValueError(f"{out_csv}: earlier runs simulated a dispatch overhead of "
                         f"{sorted(set(earlier.fillna(0.0).round(4)))} ms, this run {dispatch_overhead_ms:.4f} ms; "
                         "rerun with --fresh (or move the file) instead of mixing two servers")
    return previous


def evaluate(bundle: ProfileBundle, task: str, settings: EvaluatePreset, deadlines: list[float],
             out_csv: Path | None = None, keep_requests: bool = False, progress: bool = True,
             dispatch_overhead_ms: float = 0.0, traces_csv: Path | None = None, *, workers: int | None = 0,
             scheduler: str | None = None, pool: DaskPool | None = None,
             cells: Sequence[Cell] | None = None) -> EvaluationResult:
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

    Where the cells run: ``workers=0`` (default) here, one after another; ``workers=N`` (None: one
    per core) on a local Dask cluster on 127.0.0.1 started for this call; ``scheduler``
    (``tcp://HOST:PORT``) on an existing Dask cluster; ``pool`` on an open :class:`DaskPool` (left
    open). Each cell is one task; rows reach ``out_csv`` as cells finish, in any order, and are the
    same rows as the serial run's (every cell is seeded). ``cells`` runs a slice of the grid
    (default: all of :func:`grid_cells`).
    """
    if not deadlines:
        raise ValueError("no deadlines to evaluate")
    state = _fit(bundle, task, settings, dispatch_overhead_ms, refit=True)  # checks methods and parameters too
    previous = _previous_runs(out_csv, dispatch_overhead_ms)
    done_keys = set(_key(previous)) if previous is not None else set()
    cells = grid_cells(settings, deadlines) if cells is None else [Cell(*c) for c in cells]
    jobs = []
    for cell in cells:
        base = _base(task, settings, cell)
        todo = tuple(m for m in state.methods if _key(pd.DataFrame([{**base, "method": m}])).iloc[0] not in done_keys)
        if todo:
            jobs.append((cell, todo))
    own = pool is None and (scheduler is not None or workers is None or workers > 0)
    if own:
        pool = DaskPool(workers, scheduler)
    order = {cell: i for i, cell in enumerate(cells)}
    results: dict[int, CellResult] = {}
    bar = tqdm(total=len(cells), initial=len(cells) - len(jobs), desc=f"evaluate {task}", disable=not progress,
               unit="cell")
    try:
        if pool is None or not jobs:
            finished = ((job, run_cell(bundle, job[0], task, settings, dispatch_overhead_ms, job[1], keep_requests))
                        for job in jobs)
        else:
            finished = stream(pool.client, _run_job, bundle, jobs, task, settings, float(dispatch_overhead_ms),
                              keep_requests)
        for _, result in finished:
            if out_csv is not None:
                Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
                append_rows(out_csv, result.runs)  # whole rows, flushed and fsynced per cell
            if traces_csv is not None:
                append_rows(traces_csv, pd.DataFrame([result.trace]))
            results[order[result.cell]] = result
            bar.update(1)
    finally:
        bar.close()
        if own:
            pool.close()
    done = [results[i] for i in sorted(results)]  # grid order, however the cells finished
    frames = ([previous] if previous is not None else []) + [r.runs for r in done]
    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RUN_COLUMNS)
    requests = [r.requests for r in done if r.requests is not None]
    return EvaluationResult(runs, pd.DataFrame([r.trace for r in done]),
                            pd.concat(requests, ignore_index=True) if requests else None, [r.seconds for r in done])


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
    overhead = harness_overhead()
    record_dispatch_overhead(out_dir, overhead["harness_lat_p50_ms"],
                             "planner.serving.replay.harness_overhead (median no-op request latency)", **overhead)
    return float(overhead["harness_lat_p50_ms"])


def record_dispatch_overhead(out_dir: Path, dispatch_overhead_ms: float, source: str, **details: float) -> Path:
    """Store the per-batch cost an evaluation simulated with in ``out_dir/dispatch_overhead.json``.

    Written atomically: a resume reads either the previous file or this one, never a torn one. The
    notebooks read it back (a run without it would make them measure one mid-report)."""
    path = Path(out_dir) / "dispatch_overhead.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"dispatch_overhead_ms": float(dispatch_overhead_ms), **details,
                                        "source": source}, indent=2))
    return path
