"""Live numbers over the network: the methods behind the HTTP server, driven by trace replay over loopback.

Per task, in one process (the server runs in a thread, the client in the calling thread's event loop):

1. **Candidates, loaded once.** The configurations any run can pick: the anytime policy's dominance
   front plus each static method's choice at every deadline of the experiment
   (:func:`planner.evaluation.live_fault.candidate_configs`), loaded by the caller, warmed up, and the
   reference configurations re-timed for the anytime policy's start-up scale (as ``live-fault``).
   Then every candidate is timed ``calibration_calls`` times: the validation's fresh service times.
2. **Runs.** For each method (``anytime``, ``seed_p95``, the best baseline) x load x deadline a
   :class:`~planner.serving.server.ServerThread` on 127.0.0.1 (ephemeral port) serves that method's
   freshly built policy; :func:`planner.serving.clients.replay_http` sends a Poisson trace open loop
   (each deadline as is, or less the path the client has measured with ``path_quantile``,
   :mod:`planner.serving.budget`)
   (rate: ``load`` x the capacity of the seed rule's choice at the deadline, on this machine unless
   ``rate_basis="profile"``; with ``server_capacity_rps`` set, ``load`` x the smaller of that and
   what the HTTP path sustains), bounded by count and wall time. One rows file per run, written
   atomically, so a finished run is skipped on resume.
3. **Overhead.** One configuration (the seed rule's choice at the first deadline) and one trace
   (``overhead_load``) replayed in-process (:func:`planner.serving.replay.replay`) and over HTTP;
   the added p50/p95 latency per request (difference of percentiles and the median paired difference).
4. **Validation.** The simulator against the server's rows of every run, with the three comparisons
   of ``planner validate-sim``: simulated on the profiled service times, on service times timed just
   before the runs (drift-corrected), and on the server's own batch service times (distinct
   ``(config_id, service_ms)`` of its answers; drawn, not in order, since a client does not see
   batch boundaries).
5. **Faults** (anytime, first load and deadline, a ``fault_trace_s`` trace): ``raise`` (the
   configuration anytime served most in its run raises for ``fault_raise_s``), ``hog`` (a process
   spins on one core for ``fault_hog_s``, :func:`planner.evaluation.live_fault.cpu_hog`), ``spike``
   (``spike_factor`` x the rate for ``fault_spike_s``, :func:`planner.workloads.spike`); windows
   centred. Counts sent, answered by outcome, lost (sent minus answered: must be 0), attainment per
   phase and over time.

Outputs in ``out_dir`` (``results/<preset>/live/``): ``server_<task>/`` (one parquet per run or fault),
``server_<task>.json`` (trace spec, candidates, start-up scale), ``server_summary_<task>.csv``,
``server_overhead_<task>.csv``, ``server_validation_<task>.csv``, ``server_faults_<task>.csv``,
``server_faults_timeline_<task>.csv``. Per-request rows are parquet (live rates give ~10^5 rows).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planner.config import LiveServerPreset
from planner.evaluation.loadgen import METHOD_PARAMS_FILE, recorded_params
from planner.evaluation.live_fault import (attainment_timeline, build_policies, candidate_configs,
                                           check_methods, cpu_hog, live_method_params, phase_of,
                                           retime_reference)
from planner.evaluation.validation import TaskData, calibrate, check_labels, with_samples
from planner.plan import policies
from planner.plan.planner import DeadlinePlanner
from planner.plan.registry import MethodParams, params_record, proposed
from planner.profile.fingerprint import announced_host_record
from planner.schema import ProfileBundle, is_cascade_id
from planner.splits import example_ids
from planner.serving.clients import ClientLimits, replay_http
from planner.serving.outcomes import run_metrics
from planner.serving.replay import LiveConfig, ReplayLimits, replay, warm_up
from planner.serving.revision import SERVING_REVISION, serving_revision, stale_serving_note
from planner.serving.server import Batcher, ServerSettings, ServerThread, create_app
from planner.serving.simulator import prepare, simulate
from planner.tables import atomic_write, atomic_write_text
from planner.workloads import poisson, rate_for_load, spike

FAULTS = ("raise", "hog", "spike")
OUTCOMES = ("on_time", "late", "degraded", "shed", "dropped")
# what must match for stored runs to be resumed
_SPEC_KEYS = ("task", "duration_s", "fault_wall_margin_s", "loads", "deadlines_ms", "rate_basis", "server_capacity_rps", "seed", "servers", "queue", "drop_expired",
              "fault_trace_s", "fault_raise_s", "fault_hog_s", "fault_spike_s", "spike_factor", "overhead_load",
              "method_params", "path_quantile")


class LiveServerError(ValueError):
    """The live server experiment cannot run as asked (the message says why)."""


@dataclass(frozen=True)
class Serving:
    """How the server batches (the evaluation's settings)."""

    servers: int = 1
    queue: str = "fifo"
    drop_expired: bool = False
    percentile: int = 95


def pick_deadlines(sweep: Sequence[float], quantiles: Sequence[float]) -> list[float]:
    """Deadlines of a sweep at positions ``q x (n - 1)`` (rounded) of the sorted sweep, distinct, in order."""
    ordered = sorted(float(d) for d in sweep)
    if not ordered:
        raise LiveServerError("no deadlines in the sweep to pick from")
    return list(dict.fromkeys(ordered[int(round(q * (len(ordered) - 1)))] for q in quantiles))


def run_name(method: str, load: float, deadline_ms: float) -> str:
    """File stem of one run (``anytime_load0.8_20ms``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{method}_load{load:g}_{deadline_ms:g}ms")


def paths(out_dir: Path, task: str) -> dict[str, Path]:
    """Where one task's outputs go (see the module docstring)."""
    out = Path(out_dir)
    return {"runs": out / f"server_{task}", "record": out / f"server_{task}.json",
            "summary": out / f"server_summary_{task}.csv", "overhead": out / f"server_overhead_{task}.csv",
            "validation": out / f"server_validation_{task}.csv", "faults": out / f"server_faults_{task}.csv",
            "timeline": out / f"server_faults_timeline_{task}.csv"}


def path_budget_text(out_dir: Path, tasks: Sequence[str]) -> str:
    """What the client told the server about the client-server path in the recorded runs of ``tasks``
    (their ``server_<task>.json``): nothing (every deadline sent as is), or the path quantile it took
    off each deadline; empty when no run was recorded. Why here: the record's layout is this module's."""
    sent = {t: json.loads(p.read_text()).get("spec", {}).get("path_quantile")
            for t in tasks if (p := paths(out_dir, t)["record"]).exists()}
    if not sent:
        return ""
    budgeted = {t: q for t, q in sent.items() if q is not None}
    if not budgeted:
        return "The client sent every deadline as is: the server's planner did not see the path."
    quantiles = " / ".join(f"{q:g}" for q in sorted(set(budgeted.values())))
    text = (f"In the method and fault runs the client sent each deadline less the {quantiles} quantile of the "
            "client-server path it measured on earlier answers (`planner/serving/budget.py`, as the LoadGen client "
            "below); the overhead run sent them as is.")
    as_is = [t for t in sent if t not in budgeted]
    if as_is:
        text = (f"On {', '.join(budgeted)}: " + text[0].lower() + text[1:]
                + f" On {', '.join(as_is)} the client sent every deadline as is.")
    return text


def serving_text(out_dir: Path, tasks: Sequence[str]) -> str:
    """Which changes of the live serving stacks the recorded server runs of ``tasks`` predate
    (:mod:`planner.serving.revision`), with how many requests each method had a cascade answer; empty
    when they predate none or none was recorded. Why here: the record's and the runs' layout is this
    module's."""
    revisions, staged = [], {}
    ran = recorded_params(Path(out_dir))
    for t in tasks:
        where = paths(out_dir, t)
        if not where["record"].exists():
            continue
        revisions.append(serving_revision(json.loads(where["record"].read_text()).get("startups", [])))
        rows = _read_runs(where["runs"], columns=["method", "config_id"])
        if rows.empty:
            continue
        cascade = rows["config_id"].map(is_cascade_id)
        for method in rows["method"].unique():
            if ran.get(method, {}).get("early_answers"):
                staged[f"`{method}` on {t}"] = int((cascade & (rows["method"] == method)).sum())
    return stale_serving_note(min(revisions), "The server runs", staged) if revisions else ""


def recorded_hosts(out_dir: Path, tasks: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """The host each task's server runs were measured on (the record's latest start-up), None for a
    record older than host records; tasks without a record are left out. Why here: the record's layout
    is this module's."""
    hosts = {}
    for t in tasks:
        if (record := paths(out_dir, t)["record"]).exists():
            startups = json.loads(record.read_text()).get("startups") or [{}]
            hosts[t] = startups[-1].get("host")
    return hosts


# ---------------------------------------------------------------- one server run

def serve_trace(policy: policies.OnlinePolicy, configs: Mapping[str, LiveConfig], bundle: ProfileBundle, task: str,
                data: TaskData, trace: pd.DataFrame, serving: Serving, method: str, wall_margin_s: float,
                lead_s: float = 0.2, on_start: Callable[[float], None] | None = None,
                path_quantile: float | None = None) -> pd.DataFrame:
    """Serve ``trace`` with ``policy`` behind a fresh loopback server; the client's per-request rows.

    ``on_start(origin)`` (if given) gets the trace's time 0 on ``time.monotonic`` from the client, once
    its connections are open (:func:`replay_http`'s ``on_origin``). ``path_quantile``: the client's
    deadline budget (:func:`replay_http`)."""
    batcher = Batcher(policy, configs, task, bundle.profiles,
                      ServerSettings(servers=serving.servers, queue=serving.queue, drop_expired=serving.drop_expired),
                      serving.percentile)
    limits = ClientLimits(max_requests=len(trace) + 1, max_wall_s=float(trace["arrival_s"].max()) + wall_margin_s)
    with ServerThread(create_app(batcher, data.inputs, {"method": method})) as server:
        rows = replay_http(server.url, trace, labels=data.labels, limits=limits, method=method, lead_s=lead_s,
                           on_origin=on_start, path_quantile=path_quantile)
    return rows


def _stamp(rows: pd.DataFrame, **columns: Any) -> pd.DataFrame:
    out = rows.assign(**columns)
    return out[[*columns, *[c for c in rows.columns if c not in columns]]]


def _write(path: Path, rows: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: rows.to_parquet(tmp, index=False, compression="zstd"))


def _read_runs(folder: Path, prefix: str = "", columns: list[str] | None = None) -> pd.DataFrame:
    files = sorted(folder.glob(f"{prefix}*.parquet")) if folder.exists() else []
    frames = [pd.read_parquet(f, columns=columns) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------- tables

def _server_counts(part: pd.DataFrame) -> dict[str, int]:
    """``n_server_<outcome>``: the answers by the server's own verdict (its clock, not the client's)."""
    return {f"n_server_{o}": int((part["server_outcome"] == o).sum()) for o in OUTCOMES}


def summarize_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per run: counts, lost requests, and :func:`run_metrics`. Two clocks judge a request:
    ``n_server_<outcome>`` counts the server's own verdict (from the moment it read the request), while
    :func:`run_metrics`' ``n_late``, ``n_shed``, ... and ``hit_rate`` come from the client's status (from
    the send to the answer's last byte). Why both, named apart: the path between them makes an answer
    the server delivered on time late at the client."""
    out = []
    for (task, method, load, deadline), part in rows.groupby(["task", "method", "load", "trace_deadline_ms"],
                                                              sort=False):
        answered = part["server_outcome"].isin(OUTCOMES)
        out.append({"task": task, "method": method, "load": load, "deadline_ms": deadline,
                    "rate_rps": float(part["rate_rps"].iloc[0]), "n_sent": len(part), "n_answered": int(answered.sum()),
                    "n_lost": int((~answered).sum()),
                    "n_client_wall_limit": int((part["reason"] == "client_wall_limit").sum()),
                    **_server_counts(part), **run_metrics(part)})
    return pd.DataFrame(out)


def fault_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per fault: requests sent, answered by the server's outcome (``n_server_<outcome>``, its own clock,
    named as in :func:`summarize_runs`), lost (sent - answered), answers by the fallback, and attainment
    (hit-rate, at the client) before, during and after the fault window."""
    out = []
    for (task, fault, method), part in rows.groupby(["task", "fault", "method"], sort=False):
        answered = part["server_outcome"].isin(OUTCOMES)
        hit = part.groupby("phase")["hit"].mean()
        out.append({"task": task, "fault": fault, "method": method, "deadline_ms": float(part["deadline_ms"].iloc[0]),
                    "fault_start_s": float(part["fault_start_s"].iloc[0]),
                    "fault_end_s": float(part["fault_end_s"].iloc[0]),
                    "n_sent": len(part), "n_answered": int(answered.sum()), "n_lost": int((~answered).sum()),
                    # of the lost: the client stopped waiting (its wall limit), not an error
                    "n_client_wall_limit": int((part["reason"] == "client_wall_limit").sum()),
                    **_server_counts(part),
                    "n_fallback": int(part["reason"].astype(str).str.startswith("fallback").sum()),
                    "n_during": int((part["phase"] == "during").sum()),
                    **{f"hit_rate_{p}": float(hit.get(p, math.nan)) for p in ("before", "during", "after")},
                    "hit_rate": float(part["hit"].mean())})
    return pd.DataFrame(out)


def fault_timeline(rows: pd.DataFrame, window_s: float = 0.5, step_s: float = 0.25) -> pd.DataFrame:
    """Attainment over time per fault (:func:`planner.evaluation.live_fault.attainment_timeline`)."""
    frames = []
    for (task, fault), part in rows.groupby(["task", "fault"], sort=False):
        line = attainment_timeline(part.assign(method=fault), window_s, step_s).rename(columns={"method": "fault"})
        frames.append(line.assign(task=task))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["fault", "t_s", "hit_rate", "n",
                                                                                      "task"])


def overhead_row(inproc: pd.DataFrame, http: pd.DataFrame) -> dict[str, Any]:
    """Added latency of the server over the in-process replay on the same trace: differences of the
    answered requests' p50/p95, and the median/p95 of per-request differences (same request ids)."""
    a = inproc[inproc["status"].isin(["served", "late", "degraded"])].set_index("request_id")["latency_ms"]
    b = http[http["status"].isin(["served", "late", "degraded"])].set_index("request_id")["latency_ms"]
    paired = (b - a.reindex(b.index)).dropna()
    pct = lambda s, q: float(np.percentile(s, q)) if len(s) else math.nan  # noqa: E731
    return {"n_requests": len(http), "inproc_lat_p50_ms": pct(a, 50), "inproc_lat_p95_ms": pct(a, 95),
            "http_lat_p50_ms": pct(b, 50), "http_lat_p95_ms": pct(b, 95),
            "added_p50_ms": pct(b, 50) - pct(a, 50), "added_p95_ms": pct(b, 95) - pct(a, 95),
            "paired_added_p50_ms": pct(paired, 50), "paired_added_p95_ms": pct(paired, 95),
            "inproc_hit_rate": float(inproc["hit"].mean()), "http_hit_rate": float(http["hit"].mean())}


def server_batches(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The server's batch service times per configuration: distinct ``(config_id, service_ms)`` of its
    model answers (a batch's members share them)."""
    answered = rows[rows["config_id"].notna() & rows["service_ms"].notna()]
    distinct = answered.drop_duplicates(["config_id", "service_ms"])
    return {str(c): part["service_ms"].to_numpy(dtype=float) for c, part in distinct.groupby("config_id")}


def _sim_metrics(trace: pd.DataFrame, make_policy: Callable[[], Any], source: Any, serving: Serving, task: str,
                 seeds: int) -> tuple[float, float]:
    catalog = prepare(source, cascade_mode="measured")
    sims = [run_metrics(simulate(trace, make_policy(), catalog, serving.servers, serving.queue, seed=s,
                                 drop_expired=serving.drop_expired, task=task))
            for s in range(seeds)]
    return float(np.mean([m["hit_rate"] for m in sims])), float(np.mean([m["lat_p95_ms"] for m in sims]))


def validate_run(rows: pd.DataFrame, trace: pd.DataFrame, make_policy: Callable[[], Any], bundle: ProfileBundle,
                 fresh: Mapping[str, np.ndarray], serving: Serving, task: str, seeds: int) -> dict[str, Any]:
    """The three comparisons of ``planner validate-sim`` for one server run: hit-rate (pp) and relative
    p95 difference against the simulator on profiled, freshly timed and the server's own service times."""
    live = run_metrics(rows)
    sent = trace[trace["request_id"].isin(rows["request_id"])]
    out: dict[str, Any] = {"live_hit_rate": live["hit_rate"], "live_lat_p95_ms": live["lat_p95_ms"]}
    sources: dict[str, Any] = {"profiled": bundle}
    for name, samples in (("fresh", fresh), ("served", server_batches(rows))):
        view: Any = bundle
        for cid, values in samples.items():
            if len(values):
                view = with_samples(view, cid, np.asarray(values, dtype=float))
        sources[name] = view
    for name, source in sources.items():
        hit, p95 = _sim_metrics(sent, make_policy, source, serving, task, seeds)
        out.update({f"{name}_sim_hit_rate": hit, f"{name}_hit_rate_diff_pp": abs(live["hit_rate"] - hit) * 100.0,
                    f"{name}_sim_lat_p95_ms": p95,
                    f"{name}_p95_rel_diff": (live["lat_p95_ms"] - p95) / p95 if p95 > 0 else math.nan})
    return out


# ---------------------------------------------------------------- faults

class RaisingConfig:
    """A configuration's ``run`` that raises while the trace clock is inside ``[start_s, end_s)``;
    the trace's time 0 is set by :meth:`arm` (``time.monotonic``). Records when it raised."""

    def __init__(self, config: LiveConfig, start_s: float, end_s: float):
        self.config, self.start_s, self.end_s = config, float(start_s), float(end_s)
        self.origin = math.inf
        self.raised: list[float] = []

    def arm(self, origin: float) -> None:
        self.origin = origin

    def run(self, inputs: Any) -> tuple[np.ndarray, np.ndarray | None]:
        t = time.monotonic() - self.origin
        if self.start_s <= t < self.end_s:
            self.raised.append(t)
            raise RuntimeError(f"injected fault: {self.config.config_id} raises at {t:.3f} s")
        return self.config.run(inputs)

    def live_config(self) -> LiveConfig:
        return LiveConfig(self.config.config_id, self.config.batch_size, self.run)  # no stages: whole batches


def centred(duration_s: float, window_s: float) -> tuple[float, float]:
    start = max(0.0, (duration_s - window_s) / 2.0)
    return start, start + window_s


def fault_trace(kind: str, rate: float, settings: LiveServerPreset, deadline_ms: float, n_examples: int,
                seed: int) -> tuple[pd.DataFrame, tuple[float, float]]:
    """The fault's trace (Poisson; the spike adds its window at ``spike_factor`` x the rate) and window."""
    length = {"raise": settings.fault_raise_s, "hog": settings.fault_hog_s, "spike": settings.fault_spike_s}[kind]
    window = centred(settings.fault_trace_s, length)
    if kind == "spike":
        n = int(math.ceil(rate * (settings.fault_trace_s + (settings.spike_factor - 1.0) * length)))
        trace = spike(rate, max(n, 10), deadline_ms, n_examples, seed, factor=settings.spike_factor,
                      start_s=window[0], duration_s=length)
    else:
        trace = poisson(rate, max(10, int(math.ceil(rate * settings.fault_trace_s))), deadline_ms, n_examples, seed)
    return trace, window


# ---------------------------------------------------------------- the experiment

@dataclass
class LiveServerResult:
    summary: pd.DataFrame
    overhead: pd.DataFrame
    validation: pd.DataFrame
    faults: pd.DataFrame
    timeline: pd.DataFrame


def run_live_server(bundle: ProfileBundle, task: str, methods: Sequence[str], settings: LiveServerPreset,
                    out_dir: Path, load: Callable[[list[str]], tuple[Mapping[str, LiveConfig], TaskData]],
                    deadlines: Sequence[float], serving: Serving = Serving(),
                    params: Mapping[str, MethodParams] | None = None, baseline: Mapping[str, Any] | None = None,
                    loadgen: Callable[[str, float, float], None] | None = None, fresh: bool = False,
                    report: Callable[[str], None] | None = None) -> LiveServerResult:
    """Run (or resume) the experiment of the module docstring on one task.

    ``load(candidate_ids) -> (configs, data)`` loads the live configurations and the evaluation
    inputs (called only when something is left to run). ``deadlines``: the picked deadlines.
    ``loadgen(url, rate, deadline_ms)``, if given, is called once with an anytime server running.
    """
    say = report or (lambda _: None)
    methods = check_methods(methods)
    if proposed() not in methods:
        raise LiveServerError(f"methods must include the proposed method {proposed()!r} (the faults run it), "
                              f"got {methods}")
    deadlines = [float(d) for d in deadlines]
    params = live_method_params(methods, params)
    where = paths(out_dir, task)
    if fresh:
        for f in where["runs"].glob("*.parquet") if where["runs"].exists() else []:
            f.unlink()
        for key in ("record", "summary", "overhead", "validation", "faults", "timeline"):
            where[key].unlink(missing_ok=True)
        # a record of the parameters earlier runs used no longer describes what this run writes
        (Path(out_dir) / METHOD_PARAMS_FILE).unlink(missing_ok=True)
    spec = {"task": task, "duration_s": float(settings.duration_s),
            "fault_wall_margin_s": float(settings.fault_wall_margin_s), "loads": [float(x) for x in settings.loads],
            "deadlines_ms": deadlines, "rate_basis": settings.rate_basis,
            "server_capacity_rps": settings.server_capacity_rps, "seed": int(settings.seed),
            "servers": serving.servers, "queue": serving.queue, "drop_expired": bool(serving.drop_expired),
            "fault_trace_s": float(settings.fault_trace_s), "fault_raise_s": float(settings.fault_raise_s),
            "fault_hog_s": float(settings.fault_hog_s), "fault_spike_s": float(settings.fault_spike_s),
            "spike_factor": float(settings.spike_factor), "overhead_load": float(settings.overhead_load),
            # the methods' parameters: a run names what it ran with, and a resume with others is refused
            "method_params": params_record(methods, params),
            # the client sends each deadline less this quantile of the path it measures (None: as is)
            "path_quantile": settings.path_quantile}
    record = json.loads(where["record"].read_text()) if where["record"].exists() else None
    if record is not None and {k: record["spec"].get(k) for k in _SPEC_KEYS} != {k: spec[k] for k in _SPEC_KEYS}:
        raise LiveServerError(f"{where['record']}: earlier runs used other settings ({record['spec']}); this run asks "
                              f"for {spec}: rerun with --fresh (or move the files)")
    # the parameters beside the stage's outputs too, for every table of the stage and for the LoadGen run
    # below, whose in-process server writes no self-description (loadgen.recorded_params reads them)
    record_path = Path(out_dir) / METHOD_PARAMS_FILE
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    stage_params = recorded_params(Path(out_dir)) if record_path.exists() else {}
    atomic_write_text(record_path, json.dumps({**stage_params, **spec["method_params"]}, indent=2, sort_keys=True) + "\n")
    runs = [(m, ld, d) for ld in spec["loads"] for d in deadlines for m in methods]
    done = {p.stem for p in where["runs"].glob("*.parquet")} if where["runs"].exists() else set()
    todo_runs = [r for r in runs if "run_" + run_name(*r) not in done]
    todo_faults = [f for f in FAULTS if f"fault_{f}" not in done]
    todo_overhead = "overhead_http" not in done or "overhead_inproc" not in done
    if todo_runs or todo_faults or todo_overhead or (loadgen is not None and not (record or {}).get("loadgen_done")):
        if done:
            say(f"resuming: {len(done)} file(s) done")
        record = _run(bundle, task, methods, settings, spec, record, where, load, deadlines, serving, params, baseline,
                      todo_runs, todo_faults, todo_overhead, loadgen, say)
    return _tables(where, task)


def _rate(bundle: ProfileBundle, task: str, deadline: float, load_: float, serving: Serving, scale: float,
          settings: LiveServerPreset) -> float:
    """``load_`` x the capacity of the seed rule's choice at ``deadline`` (on this machine unless
    ``rate_basis="profile"``), capped by ``server_capacity_rps`` x ``load_`` when that is set."""
    reference = DeadlinePlanner(serving.percentile).fit(bundle.profiles).select(task, deadline).config_id
    profiled = rate_for_load(bundle.profiles, reference, load_, serving.servers)
    rate = profiled / scale if settings.rate_basis == "machine" else profiled
    if settings.server_capacity_rps is not None:
        rate = min(rate, load_ * settings.server_capacity_rps)
    return rate


def _run(bundle: ProfileBundle, task: str, methods: list[str], settings: LiveServerPreset, spec: dict[str, Any],
         record: dict[str, Any] | None, where: dict[str, Path],
         load: Callable[[list[str]], tuple[Mapping[str, LiveConfig], TaskData]], deadlines: list[float],
         serving: Serving, params: Mapping[str, MethodParams] | None, baseline: Mapping[str, Any] | None,
         todo_runs: list[tuple[str, float, float]], todo_faults: list[str], todo_overhead: bool,
         loadgen: Callable[[str, float, float], None] | None, say: Callable[[str], None]) -> dict[str, Any]:
    candidates = list(dict.fromkeys(c for d in deadlines for c in candidate_configs(bundle, task, d, methods, params,
                                                                                      serving.percentile)))
    say(f"loading {len(candidates)} candidate configuration(s) for {task}")
    configs, data = load(candidates)
    missing = [c for c in candidates if c not in configs]
    if missing:
        raise LiveServerError(f"the loader returned no live configuration for {missing}")
    configs = {c: configs[c] for c in candidates}
    check_labels(bundle, candidates[0], data)
    warm_up(configs.values(), data.inputs, settings.warmup_calls, seed=settings.seed)
    scale = retime_reference(bundle, configs, data.inputs, seed=settings.seed).scale
    fresh = {c: calibrate(cfg, data.inputs, settings.calibration_calls, 0.0, seed=settings.seed + i)
             for i, (c, cfg) in enumerate(configs.items())} if settings.calibration_calls else {}
    say(f"start-up scale {scale:.3f}; {len(fresh)} configuration(s) re-timed for the validation")
    host = announced_host_record(bundle.environment, say)
    ids = example_ids(bundle, task)
    record = record or {"spec": spec, "runs": {}}
    record.update({"candidates": candidates, "baseline": dict(baseline or {}), "methods": methods})
    record.setdefault("startups", []).append({**host, "startup_scale": scale, "serving_revision": SERVING_REVISION,
                                              "fresh_p50_ms": {c: float(np.median(v)) for c, v in fresh.items()}})
    atomic_write_text(where["record"], json.dumps(record, indent=2, default=float) + "\n")
    where["runs"].mkdir(parents=True, exist_ok=True)

    def trace_for(rate: float, duration: float, deadline: float, seed: int) -> pd.DataFrame:
        trace = poisson(rate, max(10, int(math.ceil(rate * duration))), deadline, len(ids), seed)
        trace["example_id"] = ids[trace["example_id"].to_numpy()]
        return trace

    def policy_for(method: str, deadline: float) -> policies.OnlinePolicy:
        return build_policies(bundle, task, deadline, [method], candidates, scale, params, serving.percentile)[method]

    for method, load_, deadline in todo_runs:
        rate = _rate(bundle, task, deadline, load_, serving, scale, settings)
        trace = trace_for(rate, settings.duration_s, deadline, settings.seed)
        warm_up(configs.values(), data.inputs, 1, seed=settings.seed + 1)
        began = time.perf_counter()
        rows = serve_trace(policy_for(method, deadline), configs, bundle, task, data, trace, serving, method,
                           settings.wall_margin_s, path_quantile=settings.path_quantile)
        rows = _stamp(rows, task=task, load=load_, trace_deadline_ms=deadline, rate_rps=rate)
        _write(where["runs"] / f"run_{run_name(method, load_, deadline)}.parquet", rows)
        m = run_metrics(rows)
        say(f"{method} load {load_:g} deadline {deadline:g} ms: {len(rows)} requests at {rate:.0f}/s, hit-rate "
            f"{m['hit_rate']:.3f}, p95 {m['lat_p95_ms']:.2f} ms ({time.perf_counter() - began:.1f} s)")

    deadline0, load0 = deadlines[0], spec["loads"][0]
    if todo_overhead:
        seed_choice = DeadlinePlanner(serving.percentile).fit(bundle.profiles).select(task, deadline0).config_id
        config_id = seed_choice if seed_choice in configs else candidates[0]  # else the fastest loaded
        rate = _rate(bundle, task, deadline0, settings.overhead_load, serving, scale, settings)
        trace = trace_for(rate, settings.duration_s, deadline0, settings.seed + 7)
        fixed = policies.fixed(config_id, "fixed")
        inproc = replay(trace, fixed, configs, data.inputs, data.labels, serving.servers, serving.queue,
                        drop_expired=serving.drop_expired, method="fixed", task=task,
                        limits=ReplayLimits(len(trace) + 1, float(trace["arrival_s"].max()) + settings.wall_margin_s))
        # deadlines sent as is: this run measures the path itself, beside the in-process replay
        http = serve_trace(policies.fixed(config_id, "fixed"), configs, bundle, task, data, trace, serving, "fixed",
                           settings.wall_margin_s, path_quantile=None)
        for name, rows in (("overhead_inproc", inproc), ("overhead_http", http)):
            keep = rows[[c for c in rows.columns if c in set(http.columns) | {"batch_id", "batch_n", "service_ms"}]]
            _write(where["runs"] / f"{name}.parquet",
                   _stamp(keep, task=task, config_id_fixed=config_id, load=float(settings.overhead_load),
                          trace_deadline_ms=deadline0, rate_rps=rate))
        row = overhead_row(inproc, http)
        say(f"overhead ({config_id}, {rate:.0f}/s): added p50 {row['added_p50_ms']:.2f} ms, "
            f"p95 {row['added_p95_ms']:.2f} ms")

    base_rate = _rate(bundle, task, deadline0, load0, serving, scale, settings)
    runs = _read_runs(where["runs"], "run_")
    for kind in todo_faults:
        trace, window = fault_trace(kind, base_rate, settings, deadline0, len(ids), settings.seed + 11)
        trace["example_id"] = ids[trace["example_id"].to_numpy()]
        served = configs
        raising: RaisingConfig | None = None
        if kind == "raise":
            mine = runs[(runs["method"] == proposed()) & (runs["load"] == load0)
                        & (runs["trace_deadline_ms"] == deadline0)] if not runs.empty else runs
            used = mine["config_id"].dropna().value_counts() if not mine.empty else pd.Series(dtype=int)
            target = str(used.index[0]) if len(used) else candidates[0]
            raising = RaisingConfig(configs[target], *window)
            served = {**configs, target: raising.live_config()}
        hog = cpu_hog(0.2 + window[0], window[1] - window[0]) if kind == "hog" else nullcontext()
        origin: list[float] = []

        def armed(t0: float, raising: RaisingConfig | None = raising) -> None:
            origin.append(t0)
            if raising is not None:
                raising.arm(t0)

        with hog as hog_window:
            rows = serve_trace(policy_for(proposed(), deadline0), served, bundle, task, data, trace, serving,
                               proposed(), settings.fault_wall_margin_s, on_start=armed,
                               path_quantile=settings.path_quantile)
        actual = window
        if kind == "hog" and hog_window is not None and math.isfinite(hog_window.start):
            actual = (hog_window.start - origin[0], hog_window.end - origin[0])
        rows = _stamp(rows, task=task, fault=kind, load=load0, trace_deadline_ms=deadline0, rate_rps=base_rate,
                      fault_start_s=actual[0], fault_end_s=actual[1],
                      phase=phase_of(rows["arrival_s"].to_numpy(), *actual),
                      fault_config=(raising.config.config_id if raising else ""))
        _write(where["runs"] / f"fault_{kind}.parquet", rows)
        table = fault_table(rows)
        say(f"fault {kind}: " + table[["n_sent", "n_answered", "n_lost", "n_fallback", "hit_rate_before",
                                        "hit_rate_during", "hit_rate_after"]].round(3).to_dict("records")[0].__repr__())

    if loadgen is not None and not record.get("loadgen_done"):
        batcher = Batcher(policy_for(proposed(), deadline0), configs, task, bundle.profiles,
                          ServerSettings(servers=serving.servers, queue=serving.queue,
                                         drop_expired=serving.drop_expired), serving.percentile)
        with ServerThread(create_app(batcher, data.inputs, {"method": proposed()})) as server:
            loadgen(server.url, base_rate, deadline0)
        record["loadgen_done"] = True

    # the validation needs the policies again (fresh ones per simulation)
    validation = []
    runs = _read_runs(where["runs"], "run_")
    for (method, load_, deadline), rows in runs.groupby(["method", "load", "trace_deadline_ms"], sort=False):
        trace = trace_for(float(rows["rate_rps"].iloc[0]), settings.duration_s, deadline, settings.seed)
        row = validate_run(rows, trace, lambda m=method, d=deadline: policy_for(m, d), bundle, fresh, serving, task,
                           settings.sim_seeds)
        validation.append({"task": task, "method": method, "load": load_, "deadline_ms": deadline, **row})
    if validation:
        frame = pd.DataFrame(validation)
        atomic_write(where["validation"], lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))
    atomic_write_text(where["record"], json.dumps(record, indent=2, default=float) + "\n")
    return record


def _tables(where: dict[str, Path], task: str) -> LiveServerResult:
    """Rebuild the summary, overhead and fault tables from the stored rows (files replaced atomically)."""
    def csv(key: str, frame: pd.DataFrame) -> pd.DataFrame:
        if not frame.empty:
            atomic_write(where[key], lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))
        return frame

    runs = _read_runs(where["runs"], "run_")
    summary = csv("summary", summarize_runs(runs) if not runs.empty else pd.DataFrame())
    overhead = pd.DataFrame()
    inproc_file, http_file = where["runs"] / "overhead_inproc.parquet", where["runs"] / "overhead_http.parquet"
    if inproc_file.exists() and http_file.exists():
        inproc, http = pd.read_parquet(inproc_file), pd.read_parquet(http_file)
        overhead = csv("overhead", pd.DataFrame([{
            "task": task, "config_id": str(http["config_id_fixed"].iloc[0]), "load": float(http["load"].iloc[0]),
            "deadline_ms": float(http["trace_deadline_ms"].iloc[0]), "rate_rps": float(http["rate_rps"].iloc[0]),
            **overhead_row(inproc, http)}]))
    faults = _read_runs(where["runs"], "fault_")
    fault_summary = csv("faults", fault_table(faults) if not faults.empty else pd.DataFrame())
    timeline = csv("timeline", fault_timeline(faults) if not faults.empty else pd.DataFrame())
    validation = pd.read_csv(where["validation"]) if where["validation"].exists() else pd.DataFrame()
    return LiveServerResult(summary, overhead, validation, fault_summary, timeline)


__all__ = ["FAULTS", "LiveServerError", "LiveServerResult", "RaisingConfig", "Serving", "centred",
           "fault_table", "fault_timeline", "fault_trace", "overhead_row", "paths", "pick_deadlines",
           "recorded_hosts", "run_live_server", "run_name", "serve_trace", "server_batches", "summarize_runs",
           "validate_run"]
