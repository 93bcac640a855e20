"""Live fault injection: the proposed method against ``seed_p95`` and the best baseline on real models,
with a background process taking one core for a while in the middle of the replay.

The experiment, per task:

1. **Candidates.** Loading real models is slow, so only a candidate set is loaded: the anytime
   policy's dominance front at scale 1 (the configurations it can pick at all) plus each static
   method's choice at the deadline. Queue-aware methods (``anytime``, ``slack_aware``) are fitted on
   the profiles of the candidates only, so they never pick an unloaded configuration; static methods
   are fitted on the whole profile (their one choice is a candidate).
2. **Start-up re-timing.** After a warm-up, a few reference configurations (the cheapest plain
   candidate of each variant, :func:`planner.profile.reference.pick_reference`) are timed again;
   :func:`planner.profile.reference.startup_scale` turns those timings into the factor the anytime
   policy starts from (its ``startup_scale``). The other methods do not use it.
3. **One trace.** Poisson arrivals at ``load`` times the capacity of the seed rule's choice at the
   deadline (as the evaluation grid sets its rate), on the machine at hand: the profiled capacity
   divided by the start-up scale, so "load 0.8" means 0.8 of what this machine serves now
   (``rate_basis="profile"``: of the profiled capacity, as in the grid). The trace is fixed by the
   first run and reused on resume.
4. **Replay with a fault.** The same trace is replayed once per method
   (:func:`planner.serving.replay.replay`). A separate process (:func:`cpu_hog`) busy-spins on one
   core for ``fault_duration_s`` seconds starting at ``fault_start_s`` of trace time; it is killed
   when the replay ends, also on error. Its actual start and end are recorded per method.

Outputs in ``out_dir`` (``results/<preset>/eval/``): ``live_fault_<task>.parquet`` (one row per
sent request and method), ``live_fault_<task>_summary.csv`` (attainment before/during/after the
fault per method) and ``live_fault_<task>.json`` (trace, fault window, baseline, candidates,
reference timings and start-up scale, per-method run records). The rows are parquet, not CSV: at
~1,000-3,000 requests/s a 36 s trace is ~10^5 rows per method, ~150 bytes a row as CSV against ~25
in parquet (the project's live per-request rows, ``simulator_validation_live.parquet``, are parquet
too). After each method the whole rows file is replaced atomically, then the record, so the file
only ever holds finished methods: a finished method is skipped on resume, and rows a record does not
vouch for (a kill between the two writes) are dropped and the method runs again. The per-request
table carries no ``workload``/``load``/``seed`` columns, so it is never mistaken for evaluation runs.
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from planner.evaluation.provenance import recorded_params
from planner.evaluation.validation import TaskData, calibrate, check_labels
from planner.plan import policies
from planner.plan.anytime import AnytimePolicy
from planner.plan.planner import DeadlinePlanner
from planner.plan.registry import (METHODS, MethodParams, TraceContext, method_params, params_record,
                                   proposed, with_role)
from planner.profile.fingerprint import announced_host_record
from planner.profile.reference import StartupScale, pick_reference, startup_scale
from planner.schema import ProfileBundle, is_cascade_id, model_of
from planner.splits import example_ids
from planner.serving.replay import LiveConfig, ReplayLimits, replay, warm_up
from planner.serving.revision import SERVING_REVISION, serving_revision, stale_serving_note
from planner.serving.staged import initial_second_stage_ms
from planner.tables import atomic_write, atomic_write_text
from planner.workloads import poisson, rate_for_load, workload_class

PHASES = ("before", "during", "after")
ROW_COLUMNS = ["task", "method", "request_id", "arrival_s", "deadline_ms", "example_id", "config_id", "start_s",
               "finish_s", "latency_ms", "status", "hit", "correct", "batch_id", "batch_n", "service_ms",
               "sent_lag_ms", "abandoned", "phase"]
SUMMARY_COLUMNS = ["task", "method", "phase", "n_requests", "hit_rate", "effective_accuracy", "accuracy",
                   "late_rate", "shed_rate", "dropped_rate", "lat_p95_ms", "startup_scale"]
# what must match for a stored trace to be resumed (anything else: start afresh)
_TRACE_KEYS = ("task", "deadline_ms", "load", "rate_basis", "duration_s", "seed", "servers", "queue", "drop_expired",
               "fault_start_s", "fault_duration_s")


class LiveFaultError(ValueError):
    """The live fault experiment cannot run as asked (the message says why)."""


class LiveFaultSettings(BaseModel):
    """Typed settings of one live fault experiment (defaults: the issue's design, ~36 s per method)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # trace length (s of arrivals); the fault sits in its middle unless fault_start_s says otherwise
    duration_s: float = Field(default=36.0, gt=0)
    load: float = Field(default=0.8, gt=0)
    # capacity the load refers to: "machine" = the profiled capacity over the start-up scale (what this
    # machine serves now), "profile" = the profiled capacity as the evaluation grid uses it
    rate_basis: Literal["machine", "profile"] = "machine"
    deadline_ms: float | None = Field(default=None, gt=0)   # None: the middle of the task's deadline sweep
    fault_start_s: float | None = Field(default=None, ge=0)  # None: centred in the trace
    fault_duration_s: float = Field(default=10.0, gt=0)
    # CPU the hog is pinned to (None: the last CPU this process may use; -1: not pinned)
    hog_cpu: int | None = None
    reference_n: int = Field(default=3, ge=1)        # reference configurations re-timed at start-up
    reference_calls: int = Field(default=40, ge=1)   # timed calls per reference configuration
    warmup_calls: int = Field(default=10, ge=1)      # per loaded configuration, once before the re-timing
    rewarm_calls: int = Field(default=2, ge=0)       # per loaded configuration, before each method's replay
    seed: int = Field(default=0, ge=0)
    servers: int = Field(default=1, ge=1)
    queue: Literal["fifo", "edf"] = "fifo"
    drop_expired: bool = False
    percentile: Literal[50, 95, 99] = 95
    wall_margin_s: float = Field(default=15.0, gt=0)  # a replay stops by itself this long after the last arrival
    lead_s: float = Field(default=0.05, gt=0)

    def fault_window(self) -> tuple[float, float]:
        """Planned (start, end) of the fault in trace seconds."""
        start = self.fault_start_s if self.fault_start_s is not None \
            else max(0.0, (self.duration_s - self.fault_duration_s) / 2.0)
        return float(start), float(start + self.fault_duration_s)


def middle_deadline(deadlines: Sequence[float]) -> float:
    """The middle of a deadline sweep (the failure chapter's convention)."""
    if not deadlines:
        raise LiveFaultError("no deadlines to choose the middle one from")
    ordered = sorted(float(d) for d in deadlines)
    return ordered[len(ordered) // 2]


# ---------------------------------------------------------------- which methods, which configurations

def best_baseline(summary: pd.DataFrame, workload: str, load: float,
                  exclude: Sequence[str] = ("seed_p95",)) -> tuple[str, float]:
    """The best online comparison method (registry role ``baseline`` or ``ablation``; the proposed
    method, hindsight references and bounds excluded) by effective accuracy averaged over the
    deadline sweep, at one workload and load of an evaluation summary (``summary_<task>.csv``)."""
    need = {"workload", "load", "method", "metric", "mean"}
    if not need <= set(summary.columns):
        raise LiveFaultError(f"evaluation summary lacks column(s) {sorted(need - set(summary.columns))}")
    eligible = [m for m in with_role("baseline", "ablation") if m not in set(exclude)]
    part = summary[(summary["metric"] == "effective_accuracy") & (summary["workload"] == workload)
                   & np.isclose(summary["load"].astype(float), float(load)) & summary["method"].isin(eligible)]
    if part.empty:
        raise LiveFaultError(f"no effective_accuracy rows of methods {eligible} at workload {workload!r}, load "
                             f"{load:g} in the evaluation summary (workloads {sorted(set(summary['workload']))}, "
                             f"loads {sorted(set(summary['load']))})")
    means = part.groupby("method")["mean"].mean().sort_values(ascending=False, kind="stable")
    return str(means.index[0]), float(means.iloc[0])


def restrict(bundle: ProfileBundle, config_ids: Sequence[str]) -> ProfileBundle:
    """The bundle with only ``config_ids`` (profiles, samples, predictions): what a live server loaded."""
    keep = set(config_ids)
    return ProfileBundle(bundle.profiles[bundle.profiles["config_id"].isin(keep)].reset_index(drop=True),
                         bundle.samples[bundle.samples["config_id"].isin(keep)].reset_index(drop=True),
                         bundle.predictions[bundle.predictions["config_id"].isin(keep)].reset_index(drop=True),
                         dict(bundle.environment))


def _context(task: str, deadline_ms: float) -> TraceContext:
    def online_only(*_: Any) -> float:
        raise LiveFaultError("a live replay runs online methods only; hindsight scores are not available")

    return TraceContext(task, float(deadline_ms), workload_class("poisson"), pd.DataFrame(), online_only, online_only)


def live_method_params(methods: Sequence[str], given: Mapping[str, MethodParams] | None) -> dict[str, MethodParams]:
    """Each method's parameters as a live run uses them: ``given``, else its defaults (a live stack
    stops calls at the deadline as the simulator does, so the parameters are the simulator's)."""
    given = dict(given or {})
    return {m: given.get(m) or method_params(m, None) for m in methods}


def check_methods(methods: Sequence[str]) -> list[str]:
    """Distinct registered online methods (a hindsight reference or a bound cannot be replayed)."""
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    offline = [m for m in methods if m in METHODS and METHODS[m].role in ("hindsight", "bound")]
    if not methods or unknown or offline or len(set(methods)) != len(methods):
        raise LiveFaultError(f"methods must be distinct registered online methods; got {methods} "
                             f"(unknown {unknown}, not online {offline})")
    return methods


def candidate_configs(bundle: ProfileBundle, task: str, deadline_ms: float, methods: Sequence[str],
                      params: Mapping[str, MethodParams] | None = None, percentile: int = 95) -> list[str]:
    """The configurations a live run loads: the anytime policy's dominance front at scale 1 (all it can
    pick) plus each static method's choice at ``deadline_ms``; fastest-profiled first."""
    methods = check_methods(methods)
    params = live_method_params([*methods, proposed()], params)
    chosen = AnytimePolicy(task, **params[proposed()].model_dump()).fit(bundle).front_ids()
    context = _context(task, deadline_ms)
    for name in methods:
        policy = METHODS[name].policy(METHODS[name].fit(bundle, task, percentile, params[name]), context)
        if policy.needs.static:
            chosen.append(policy.config_for(float(deadline_ms)))
    p50 = bundle.profiles.set_index("config_id")["lat_p50_ms"]
    return sorted(dict.fromkeys(chosen), key=lambda c: (float(p50[c]), c))


def build_policies(bundle: ProfileBundle, task: str, deadline_ms: float, methods: Sequence[str],
                   candidates: Sequence[str], scale: float, params: Mapping[str, MethodParams] | None = None,
                   percentile: int = 95) -> dict[str, policies.OnlinePolicy]:
    """Each method's policy for the live trace: the proposed method starts from ``scale``; queue-aware
    methods see only the candidates; a static method's choice must be a candidate."""
    methods = check_methods(methods)
    params = live_method_params(methods, params)
    loaded = restrict(bundle, candidates)
    context = _context(task, deadline_ms)
    out = {}
    for name in methods:
        entry, p = METHODS[name], params[name]
        p = scaled_params(p, scale)
        state = entry.fit(bundle, task, percentile, p)
        policy = entry.policy(state, context)
        if policy.needs.static:
            choice = policy.config_for(float(deadline_ms))
            if choice not in set(candidates):
                raise LiveFaultError(f"{name} chooses {choice!r} at {deadline_ms:g} ms, which is not loaded")
        else:  # queue-aware: fitted on the loaded configurations only
            policy = entry.policy(entry.fit(loaded, task, percentile, p), context)
        out[name] = policy
    return out


# ---------------------------------------------------------------- start-up re-timing

def retime_reference(bundle: ProfileBundle, configs: Mapping[str, LiveConfig], inputs: Sequence[Any] | np.ndarray,
                     n: int = 3, calls: int = 40, seed: int = 0) -> StartupScale:
    """Time the reference configurations (chosen among ``configs``) ``calls`` times each, back to back on
    random full batches of real inputs (the caller warmed them up), and scale them to their profile."""
    reference = pick_reference(bundle.profiles, list(configs), n)
    timings = {cid: calibrate(configs[cid], inputs, calls, gap_s=0.0, seed=seed + i) for i, cid in enumerate(reference)}
    return startup_scale(bundle.profiles, timings)


def takes_startup_scale(params: MethodParams) -> bool:
    """Whether the method of ``params`` starts from a start-up scale (the proposed method's parameters
    have one; the others plan from the profile as it is)."""
    return "startup_scale" in type(params).model_fields


def scaled_params(params: MethodParams, scale: float) -> MethodParams:
    """``params`` starting from ``scale`` where the method takes a start-up scale, else unchanged."""
    return params.model_copy(update={"startup_scale": float(scale)}) if takes_startup_scale(params) else params


def with_startup_scale(params: MethodParams, bundle: ProfileBundle, configs: Mapping[str, LiveConfig],
                       inputs: Sequence[Any] | np.ndarray) -> tuple[MethodParams, StartupScale | None]:
    """``params`` with the re-timed start-up scale (:func:`retime_reference` over ``configs``, which the
    caller loaded and warmed up) where the method takes one, and that scale; ``(params, None)`` for a
    method that plans from the profile as it is (nothing is timed). Why: the server command started
    the anytime policy at the profile's speed, so a machine faster or slower than the one that timed
    the profile was learned batch by batch from live traffic instead of before it."""
    if not takes_startup_scale(params):
        return params, None
    scale = retime_reference(bundle, configs, inputs)
    return scaled_params(params, scale.scale), scale


# ---------------------------------------------------------------- the fault

_HOG = """
import os, sys, time
start, duration, cpu = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
if cpu >= 0 and hasattr(os, "sched_setaffinity"):
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass
while True:
    left = start - time.monotonic()
    if left <= 0:
        break
    time.sleep(min(left, 0.05))
begin = time.monotonic()
print("start", begin, flush=True)
end = begin + duration
while time.monotonic() < end:
    pass
print("end", time.monotonic(), flush=True)
"""


@dataclass
class HogWindow:
    """When the hog actually spun (``time.monotonic`` readings; NaN when it never started/ended)."""

    planned_start: float
    cpu: int
    pid: int = -1
    start: float = math.nan
    end: float = math.nan
    killed: bool = False


def default_hog_cpu() -> int:
    """The last CPU this process may run on (-1 where affinity is not available)."""
    try:
        return max(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return -1


@contextmanager
def cpu_hog(start_in_s: float, duration_s: float, cpu: int | None = None) -> Iterator[HogWindow]:
    """A separate process that busy-spins on one core (pinned to ``cpu`` unless -1) for ``duration_s``
    seconds, starting ``start_in_s`` seconds from now (``time.monotonic``). Leaving the block stops it,
    also on error; the yielded window then holds its actual start and end."""
    if not (math.isfinite(start_in_s) and start_in_s >= 0 and math.isfinite(duration_s) and duration_s > 0):
        raise LiveFaultError(f"the hog needs start_in_s >= 0 and duration_s > 0, got {start_in_s!r}, {duration_s!r}")
    cpu = default_hog_cpu() if cpu is None else int(cpu)
    window = HogWindow(time.monotonic() + start_in_s, cpu)
    proc = subprocess.Popen([sys.executable, "-c", _HOG, repr(window.planned_start), repr(float(duration_s)), str(cpu)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    window.pid = proc.pid
    try:
        yield window
    finally:
        if proc.poll() is None:
            proc.kill()
            window.killed = True
        out, _ = proc.communicate()
        stopped = time.monotonic()
        for line in out.splitlines():
            word, _, value = line.partition(" ")
            if word in ("start", "end"):
                setattr(window, word, float(value))
        if math.isfinite(window.start) and not math.isfinite(window.end):
            window.end = stopped  # killed mid-spin: it spun until now


# ---------------------------------------------------------------- rows, summary, files

def paths(out_dir: Path, task: str) -> tuple[Path, Path, Path]:
    """(per-request rows, summary, record) of one task's experiment."""
    out_dir = Path(out_dir)
    return (out_dir / f"live_fault_{task}.parquet", out_dir / f"live_fault_{task}_summary.csv",
            out_dir / f"live_fault_{task}.json")


def phase_of(arrival_s: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """``before``/``during``/``after`` the fault by arrival time (all ``before`` if it never ran)."""
    arrival_s = np.asarray(arrival_s, dtype=float)
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        return np.full(len(arrival_s), "before", dtype=object)
    return np.where(arrival_s < start_s, "before", np.where(arrival_s < end_s, "during", "after")).astype(object)


def request_rows(live: pd.DataFrame, task: str, method: str, window: tuple[float, float]) -> pd.DataFrame:
    """The replay's per-request table, trimmed to :data:`ROW_COLUMNS`, with the fault phase of each request."""
    rows = live.assign(task=task, method=method, phase=phase_of(live["arrival_s"], *window))
    return rows[ROW_COLUMNS].reset_index(drop=True)


def summarize(rows: pd.DataFrame, scales: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Per method and phase (and ``all``): requests, deadline attainment (hit-rate), effective accuracy
    (correct and on time), accuracy of answered requests, late/shed/dropped fractions, p95 latency."""
    if rows.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    frames = [rows, rows.assign(phase="all")]
    data = pd.concat(frames, ignore_index=True)
    status = data["status"]
    answered = status.isin(["served", "late", "degraded"])
    data = data.assign(eff=data["hit"].astype(bool) & data["correct"].astype(bool),
                       late=status.eq("late"), shed=status.eq("shed"), dropped=status.eq("dropped"),
                       answered=answered, correct_answered=answered & data["correct"].astype(bool),
                       lat=data["latency_ms"].where(answered))
    grouped = data.groupby(["task", "method", "phase"], sort=False)
    out = grouped.agg(n_requests=("request_id", "size"), hit_rate=("hit", "mean"), effective_accuracy=("eff", "mean"),
                      late_rate=("late", "mean"), shed_rate=("shed", "mean"), dropped_rate=("dropped", "mean"),
                      n_answered=("answered", "sum"), n_correct=("correct_answered", "sum"),
                      lat_p95_ms=("lat", lambda s: float(np.nanpercentile(s, 95)) if s.notna().any() else math.nan))
    out["accuracy"] = out["n_correct"] / out["n_answered"].where(out["n_answered"] > 0)
    out = out.reset_index()
    out["startup_scale"] = out["method"].map(dict(scales or {})).astype(float)
    method_rank = out["method"].map({m: i for i, m in enumerate(dict.fromkeys(rows["method"]))})
    phase_rank = out["phase"].map({p: i for i, p in enumerate((*PHASES, "all"))})
    out = out.assign(_m=method_rank, _p=phase_rank).sort_values(["_m", "_p"], kind="stable")
    return out[SUMMARY_COLUMNS].reset_index(drop=True)


def shared_service(rows: pd.DataFrame, phase: str = "before") -> pd.DataFrame:
    """Per configuration that more than one method served in ``phase``: the median service time of
    its batches under each method (``task, config_id, method, n_batches, service_median_ms``, and
    ``method_configs``: how many configurations that method served in the phase; 1 = it never switched).

    Why: the same configuration can serve slower inside one method's run than inside another's on
    the same trace and machine; a method that switches configurations pays cache misses that one
    which never switches does not (``benchmarks/bench_switch_cost.py`` measures that cost alone)."""
    served = rows[(rows["phase"] == phase) & rows["batch_id"].ge(0) & rows["config_id"].notna()]
    batches = served.drop_duplicates(["method", "batch_id"])  # one service time per batch
    shared = batches.groupby("config_id")["method"].nunique()
    used = batches.groupby("method")["config_id"].nunique()
    batches = batches[batches["config_id"].isin(shared.index[shared > 1])]
    out = batches.groupby(["task", "config_id", "method"], sort=False).agg(
        n_batches=("batch_id", "size"), service_median_ms=("service_ms", "median")).reset_index()
    return out.assign(method_configs=out["method"].map(used).astype(int))


def attainment_timeline(rows: pd.DataFrame, window_s: float = 1.0, step_s: float = 0.25) -> pd.DataFrame:
    """Rolling deadline attainment: per method, the hit-rate of the requests that arrived in the last
    ``window_s`` seconds, every ``step_s`` seconds of trace time (``method, t_s, hit_rate, n``)."""
    if not (window_s > 0 and step_s > 0):
        raise LiveFaultError(f"window_s and step_s must be positive, got {window_s!r}, {step_s!r}")
    out = []
    for method, part in rows.groupby("method", sort=False):
        part = part.sort_values("arrival_s", kind="stable")
        arrival = part["arrival_s"].to_numpy(dtype=float)
        hits = np.concatenate([[0], np.cumsum(part["hit"].to_numpy(dtype=bool))])
        t = np.arange(window_s, arrival.max() + step_s, step_s)
        hi = np.searchsorted(arrival, t, side="right")
        lo = np.searchsorted(arrival, t - window_s, side="right")
        n = hi - lo
        rate = np.where(n > 0, (hits[hi] - hits[lo]) / np.maximum(n, 1), np.nan)
        out.append(pd.DataFrame({"method": method, "t_s": t, "hit_rate": rate, "n": n}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["method", "t_s", "hit_rate", "n"])


@dataclass
class LiveFaultResult:
    rows: pd.DataFrame                      # one row per sent request and method
    summary: pd.DataFrame                   # per method and phase
    record: dict[str, Any] = field(default_factory=dict)  # the JSON record (trace, fault, scale, runs)


def ran_params(out_dir: Path, record: Mapping[str, Any]) -> dict[str, dict]:
    """``{method: parameters}`` each replay of ``record`` ran with: the run's own entry, else (a run
    recorded before runs named their parameters) the :data:`planner.evaluation.provenance.METHOD_PARAMS_FILE`
    beside the results; a method neither names is left out."""
    beside = recorded_params(Path(out_dir))
    out = {}
    for name, run in record.get("runs", {}).items():
        params = run.get("params", beside.get(name))
        if params is not None:
            out[name] = params
    return out


def serving_text(results: Mapping[str, LiveFaultResult], out_dir: Path) -> str:
    """Which changes of the live serving stacks the stored experiments (per task) predate
    (:mod:`planner.serving.revision`), with how many requests a cascade answered for each method with
    early answers (the runs' ``configs_used``); empty when they predate none."""
    if not results:
        return ""
    revision = min(serving_revision(r.record.get("startups", [])) for r in results.values())
    staged = {}
    for task, result in results.items():
        params = ran_params(out_dir, result.record)
        for method, run in result.record.get("runs", {}).items():
            if params.get(method, {}).get("early_answers"):
                staged[f"`{method}` on {task}"] = sum(n for c, n in run.get("configs_used", {}).items() if is_cascade_id(c))
    return stale_serving_note(revision, "The live fault replays", staged)


# reference configurations whose start-up ratios differ by more than this factor moved apart on this host
UNEVEN_REFERENCE = 1.25


def _answered(rows: pd.DataFrame, method: str, phase: str) -> pd.DataFrame:
    """``method``'s rows in ``phase`` that a configuration answered (not shed)."""
    return rows[(rows["method"] == method) & (rows["phase"] == phase) & (rows["status"] != "shed")]


def model_mix(rows: pd.DataFrame, method: str, phase: str = "before") -> pd.Series:
    """Share of ``method``'s answered requests in ``phase`` per model (a cascade counts as one model,
    ``cascade:small>large@t``), largest first. Why: live, two methods can meet their deadlines alike
    and still differ in accuracy by which models they served."""
    mine = _answered(rows, method, phase)
    if mine.empty:
        return pd.Series(dtype=float)
    return mine["config_id"].map(model_of).value_counts(normalize=True).sort_values(ascending=False, kind="stable")


def before_fault_text(task: str, result: LiveFaultResult, proposed: str, max_light_late_rate: float) -> str | None:
    """One paragraph comparing the proposed method with the run's baseline before the fault: deadlines
    met, effective accuracy, the models each served, late and shed shares, and how unevenly the
    start-up re-timing found the reference configurations moved against their profile. ``None`` when
    either method was not replayed. Why: the simulator ranks methods on the profile's timings; live,
    on a host where the configurations' speeds moved apart, a method can keep its deadlines and lose
    accuracy by serving the smaller model more."""
    before = result.summary[result.summary["phase"] == "before"].set_index("method")
    base = result.record.get("baseline", {}).get("name")
    if proposed not in before.index or base not in before.index:
        return None
    a, b = before.loc[proposed], before.loc[base]

    def verdict(x: float, y: float) -> str:
        return "below" if x < y else "above" if x > y else "equal to"

    def mix(method: str) -> str:
        return ", ".join(f"{model} {share:.0%}" for model, share in model_mix(result.rows, method).items())

    served = _answered(result.rows, proposed, "before")
    text = (f"On {task}, before the fault, the proposed method met {a['hit_rate']:.1%} of deadlines against "
            f"{b['hit_rate']:.1%} for `{base}`, at an effective accuracy of {a['effective_accuracy']:.3f} "
            f"({verdict(a['effective_accuracy'], b['effective_accuracy'])} `{base}`'s "
            f"{b['effective_accuracy']:.3f}), at {result.record['trace']['rate_rps']:.0f} requests/s: it served "
            f"{served['config_id'].nunique()} configurations (models: {mix(proposed)}; `{base}`: {mix(base)}), "
            f"answered {a['late_rate']:.2%} late and shed {a['shed_rate']:.2%}, where the simulated grid at loads "
            f"up to 1 has it at most {max_light_late_rate:.2%} late.")
    reference = (result.record.get("startups") or [{}])[-1].get("reference") or []
    ratios = {model_of(r["config_id"]): float(r["ratio"]) for r in reference if math.isfinite(r.get("ratio", math.nan))}
    if len(ratios) > 1 and max(ratios.values()) / min(ratios.values()) > UNEVEN_REFERENCE:
        text += (" At start-up the reference configurations ran at " +
                 ", ".join(f"{ratio:.2f}x ({model})" for model, ratio in ratios.items()) +
                 " of their profiled medians: the host moved the models apart, which one machine-wide start-up "
                 "scale cannot carry; the online estimator learns each configuration's own factor only from the "
                 "batches it serves (and shrinks it toward the machine's), while the baseline keeps the profile's "
                 "ranking of the models.")
    return text


def read_results(out_dir: Path, task: str) -> LiveFaultResult | None:
    """A task's stored experiment, or None when it has not been run (no record or rows)."""
    rows_file, summary_csv, record_json = paths(out_dir, task)
    if not (rows_file.exists() and record_json.exists()):
        return None
    record = json.loads(record_json.read_text())
    rows = _read_rows(rows_file)
    rows = rows[rows["method"].isin(list(record.get("runs", {})))].reset_index(drop=True)
    summary = pd.read_csv(summary_csv) if summary_csv.exists() else summarize(rows, _scales(record))
    return LiveFaultResult(rows, summary, record)


def fault_span(record: Mapping[str, Any]) -> tuple[float, float]:
    """The fault window over all recorded runs (earliest start, latest end, trace seconds; NaN if none)."""
    runs = [r for r in record.get("runs", {}).values() if math.isfinite(r.get("fault_start_s", math.nan))]
    if not runs:
        return math.nan, math.nan
    return min(r["fault_start_s"] for r in runs), max(r["fault_end_s"] for r in runs)


def _scales(record: Mapping[str, Any]) -> dict[str, float]:
    return {m: float(r["startup_scale"]) for m, r in record.get("runs", {}).items()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_rows(path: Path) -> pd.DataFrame:
    rows = pd.read_parquet(path)
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise LiveFaultError(f"{path}: missing column(s) {missing}; move it away or rerun with --fresh")
    return rows[ROW_COLUMNS]


def _write_rows(path: Path, rows: pd.DataFrame) -> None:
    """Replace the rows file atomically (compact types: float32 milliseconds, int32 ids, zstd)."""
    rows = rows.astype({"request_id": "int32", "example_id": "int32", "batch_id": "int32", "batch_n": "int32",
                        "deadline_ms": "float32", "latency_ms": "float32", "service_ms": "float32",
                        "sent_lag_ms": "float32", "hit": bool, "correct": bool, "abandoned": bool})
    atomic_write(path, lambda tmp: rows.to_parquet(tmp, index=False, compression="zstd"))


def _write_record(path: Path, record: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False, default=float) + "\n")


def _resume(rows_file: Path, record_json: Path,
            trace_spec: Mapping[str, Any]) -> tuple[dict[str, Any] | None, set[str]]:
    """The stored record if it describes the same trace, and the methods whose rows are complete; rows of
    any other method (a run killed mid-way) are cut from the file."""
    if not record_json.exists():
        rows_file.unlink(missing_ok=True)  # rows without a record cannot be trusted to belong to this trace
        return None, set()
    record = json.loads(record_json.read_text())
    stored = {k: record.get("trace", {}).get(k) for k in _TRACE_KEYS}
    if stored != {k: trace_spec[k] for k in _TRACE_KEYS}:
        raise LiveFaultError(f"{record_json}: an earlier experiment used another trace ({stored}); this one asks for "
                             f"{ {k: trace_spec[k] for k in _TRACE_KEYS} }: rerun with --fresh (or move the files)")
    rows = _read_rows(rows_file) if rows_file.exists() else pd.DataFrame(columns=ROW_COLUMNS)
    counts = rows["method"].value_counts().to_dict()
    runs = record.get("runs", {})
    done = {m for m, run in runs.items() if counts.get(m, 0) == int(run["n_rows"])}
    record["runs"] = {m: runs[m] for m in runs if m in done}
    if set(counts) - done:
        kept = rows[rows["method"].isin(done)]
        _write_rows(rows_file, kept)
    return record, done


# ---------------------------------------------------------------- the experiment

def run_live_fault(bundle: ProfileBundle, task: str, methods: Sequence[str], settings: LiveFaultSettings,
                   out_dir: Path, load: Callable[[list[str]], tuple[Mapping[str, LiveConfig], TaskData]],
                   deadline_ms: float, params: Mapping[str, MethodParams] | None = None, threads: int | None = None,
                   baseline: Mapping[str, Any] | None = None, fresh: bool = False,
                   report: Callable[[str], None] | None = None) -> LiveFaultResult:
    """Run (or resume) the experiment of the module docstring for ``methods`` on one task.

    ``load(candidate_ids) -> (configs, data)`` loads the live configurations and the task's evaluation
    inputs; it is called only when some method still has to run. ``deadline_ms`` is the trace's
    deadline (``settings.deadline_ms`` takes precedence when set); ``baseline`` (name, score, source)
    is recorded as given.
    """
    say = report or (lambda _: None)
    methods = check_methods(methods)
    params = live_method_params(methods, params)
    deadline = float(settings.deadline_ms or deadline_ms)
    fault_start, fault_end = settings.fault_window()
    if fault_end > settings.duration_s:
        raise LiveFaultError(f"the fault ({fault_start:g}-{fault_end:g} s) must end within the trace "
                             f"({settings.duration_s:g} s)")
    rows_file, summary_csv, record_json = paths(out_dir, task)
    if fresh:
        for path in (rows_file, summary_csv, record_json):
            path.unlink(missing_ok=True)
    spec = {"task": task, "deadline_ms": deadline, "load": float(settings.load), "rate_basis": settings.rate_basis,
            "duration_s": float(settings.duration_s),
            "seed": int(settings.seed), "servers": int(settings.servers), "queue": settings.queue,
            "drop_expired": bool(settings.drop_expired), "fault_start_s": fault_start,
            "fault_duration_s": float(settings.fault_duration_s)}
    record, done = _resume(rows_file, record_json, spec)
    todo = [m for m in methods if m not in done]
    if done:
        say(f"resuming: {sorted(done)} already replayed")
    if todo:
        record = _run_methods(bundle, task, methods, todo, settings, spec, params, record, out_dir, load, threads,
                              baseline, say)
    result = read_results(out_dir, task)
    assert result is not None
    summary = summarize(result.rows, _scales(result.record))
    atomic_write(summary_csv, lambda tmp: summary.to_csv(tmp, index=False, lineterminator="\n"))
    return LiveFaultResult(result.rows, summary, result.record)


def _run_methods(bundle: ProfileBundle, task: str, methods: list[str], todo: list[str], settings: LiveFaultSettings,
                 spec: dict[str, Any], params: dict[str, MethodParams], record: dict[str, Any] | None, out_dir: Path,
                 load: Callable[[list[str]], tuple[Mapping[str, LiveConfig], TaskData]], threads: int | None,
                 baseline: Mapping[str, Any] | None, say: Callable[[str], None]) -> dict[str, Any]:
    rows_file, _, record_json = paths(out_dir, task)
    deadline = spec["deadline_ms"]
    candidates = candidate_configs(bundle, task, deadline, methods, params, settings.percentile)
    say(f"loading {len(candidates)} candidate configuration(s) for {task}: {candidates}")
    configs, data = load(candidates)
    missing = [c for c in candidates if c not in configs]
    if missing:
        raise LiveFaultError(f"the loader returned no live configuration for {missing}")
    check_labels(bundle, candidates[0], data)
    warm_up([configs[c] for c in candidates], data.inputs, settings.warmup_calls, seed=settings.seed)
    scale = retime_reference(bundle, {c: configs[c] for c in candidates}, data.inputs, settings.reference_n,
                             settings.reference_calls, seed=settings.seed)
    say(f"start-up scale {scale.scale:.3f} (re-timed median / profiled p50, geometric mean over "
        f"{len(scale.table)} reference configuration(s))")
    host = announced_host_record(bundle.environment, say)
    ids = example_ids(bundle, task)
    if record is None:  # the first run fixes the trace
        reference = DeadlinePlanner(settings.percentile).fit(bundle.profiles).select(task, deadline).config_id
        profiled_rate = rate_for_load(bundle.profiles, reference, settings.load, settings.servers)
        rate = profiled_rate / scale.scale if settings.rate_basis == "machine" else profiled_rate
        record = {"trace": {**spec, "kind": "poisson", "workload": "steady", "rate_rps": rate,
                            "profiled_rate_rps": profiled_rate, "rate_reference_config": reference,
                            "n_requests": int(max(10, math.ceil(rate * settings.duration_s))),
                            "fault_end_s": spec["fault_start_s"] + spec["fault_duration_s"]},
                  "methods": methods, "baseline": dict(baseline or {}), "candidates": candidates,
                  "settings": settings.model_dump(), "startups": [], "runs": {}}
    record["methods"] = list(dict.fromkeys([*record.get("methods", []), *methods]))
    record["candidates"] = candidates
    record["startups"] = [*record.get("startups", []), {
        "at": _now(), **host, "startup_scale": scale.scale, "serving_revision": SERVING_REVISION,
        "reference": scale.table.to_dict(orient="records")}]
    _write_record(record_json, record)
    tr = record["trace"]
    trace = poisson(float(tr["rate_rps"]), int(tr["n_requests"]), deadline, len(ids), int(tr["seed"]))
    trace["example_id"] = ids[trace["example_id"].to_numpy()]
    policies_ = build_policies(bundle, task, deadline, methods, candidates, scale.scale, params, settings.percentile)
    limits = ReplayLimits(len(trace) + 1, float(trace["arrival_s"].max()) + settings.wall_margin_s)
    indexed = bundle.profiles.drop_duplicates("config_id").set_index("config_id")
    second_ms = {c: initial_second_stage_ms(indexed, c) * scale.scale for c in candidates if configs[c].stages is not None}
    for name in todo:
        warm_up([configs[c] for c in candidates], data.inputs, settings.rewarm_calls, seed=settings.seed + 1)
        gc.collect()
        say(f"{name}: replaying {len(trace)} requests at {tr['rate_rps']:.1f} req/s, deadline {deadline:g} ms, "
            f"fault {tr['fault_start_s']:g}-{tr['fault_end_s']:g} s")
        began = time.perf_counter()
        with cpu_hog(settings.lead_s + tr["fault_start_s"], tr["fault_duration_s"], settings.hog_cpu) as hog:
            live = replay(trace, policies_[name], configs, data.inputs, data.labels, settings.servers, settings.queue,
                          drop_expired=settings.drop_expired, method=name, task=task, limits=limits,
                          lead_s=settings.lead_s, threads=threads, clock=time.monotonic, second_stage_ms=second_ms)
        wall = time.perf_counter() - began
        origin = float(live.attrs["clock_origin"])
        window = (hog.start - origin, hog.end - origin)
        rows = request_rows(live, task, name, window)
        earlier = _read_rows(rows_file) if rows_file.exists() else None
        _write_rows(rows_file, pd.concat([earlier, rows], ignore_index=True) if earlier is not None else rows)
        record["runs"][name] = {
            "n_rows": len(rows), "finished_at": _now(), "wall_s": wall, "startup_scale": scale.scale,
            "fault_start_s": window[0], "fault_end_s": window[1], "hog_cpu": hog.cpu, "hog_killed": hog.killed,
            "n_abandoned": int(live.attrs.get("n_abandoned", 0)),
            "n_after_wall": int(live.attrs.get("n_after_wall", 0)),
            "stopped_by_wall": bool(live.attrs.get("stopped_by_wall", False)),
            "configs_used": {str(c): int(k) for c, k in rows["config_id"].dropna().value_counts().items()},
            "params": params_record([name], params)[name]}
        _write_record(record_json, record)
        hit = rows.groupby("phase")["hit"].mean().reindex(list(PHASES))
        say(f"{name}: hit-rate before {hit['before']:.3f}, during {hit['during']:.3f}, after {hit['after']:.3f} "
            f"({wall:.1f} s)")
    return record

