"""Simulator validation: the same trace through :func:`planner.serving.simulator.simulate` and through live replay.

At each point (configuration x load x workload) one trace is generated with mean rate ``load x``
the configuration's capacity and a deadline of ``deadline_x_p95 x`` its profiled p95, or the
``deadline_sim_quantile`` of its simulated latency (see :func:`point_trace`). The trace is
replayed live on the real models (:func:`planner.serving.replay.replay`), then simulated with the profiled
latency samples and per-example predictions of the same configuration, ``sim_seeds`` times (seeds
0..sim_seeds-1 of the service draws) on exactly the requests the replay sent. The table compares
hit-rate, p95 latency and accuracy; the simulated side is the mean over seeds, and its standard
deviation over seeds is reported next to it as the simulator's own run-to-run spread. The
replay's own per-request latency (:func:`planner.serving.replay.harness_overhead`, a no-op model) is, by
default, charged by the simulated side as a per-batch dispatch cost (``dispatch_overhead``); it and the
live median of full-batch calls next to the profiled median help attribute a gap: harness, a CPU
slower or busier than when profiled, or the simulator's model.

Goal (issue 6): |hit-rate difference| <= ``goal_hit_rate_pp`` percentage points and |relative p95
difference| <= ``goal_p95_rel``. Whether a point meets it is a column, never an assumption.

Second simulated side (``fresh_*`` columns, ``calibration_calls`` > 0): the point's configuration is
timed again just before its replay (:func:`calibrate`) and the same requests are simulated on those
service times. The profiled side answers "does the evaluation's simulator predict live serving?";
the fresh side answers "is the simulator's queueing and batching model right, given today's
service times?" -- on a machine whose speed drifts, the two differ. Third side (``replayed_*``):
the live batches' own service times fed to the simulator in order, plus the measured back-to-back
gap between batches, with each request queued when the live producer enqueued it -- a check of the queueing and batching mechanics alone; ``live_service_drift``
measures how far the server's speed moved during the replay.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from planner.plan import policies
from planner.config import ValidationPoint, ValidationPreset
from planner.schema import ProfileBundle
from planner.serving.replay import LiveConfig, ReplayLimits, harness_overhead, replay, take, warm_up
from planner.serving.simulator import Catalog, prepare, simulate
from planner.serving.outcomes import run_metrics
from planner.workloads import make_trace, rate_for_load

# beside simulator_validation.csv: the host the points were replayed on (fingerprint.host_record) and when
HOST_FILE = "simulator_validation_host.json"

VALIDATION_COLUMNS = [
    "point", "task", "config_id", "workload", "load", "rate_rps", "deadline_ms", "n_requests",
    "sim_hit_rate", "live_hit_rate", "hit_rate_diff_pp", "sim_hit_rate_sd_pp",
    "sim_lat_p95_ms", "live_lat_p95_ms", "p95_rel_diff", "sim_lat_p95_sd_ms",
    "sim_lat_p50_ms", "live_lat_p50_ms", "sim_accuracy", "live_accuracy",
    "profile_lat_p50_ms", "live_full_batch_p50_ms", "live_sent_lag_p50_ms", "live_sent_lag_p99_ms",
    "harness_lat_p50_ms", "harness_lat_p95_ms", "sim_dispatch_overhead_ms", "n_abandoned", "n_after_wall", "live_wall_s",
    "meets_hit_goal", "meets_p95_goal", "meets_goal",
    "fresh_service_p50_ms", "fresh_sim_hit_rate", "fresh_hit_rate_diff_pp", "fresh_sim_lat_p95_ms",
    "fresh_p95_rel_diff", "fresh_meets_goal",
    "live_service_drift", "live_b2b_gap_ms", "replayed_sim_hit_rate", "replayed_hit_rate_diff_pp",
    "replayed_sim_lat_p95_ms", "replayed_p95_rel_diff", "replayed_meets_goal",
]


class ValidationError(ValueError):
    """A validation point cannot be run on this bundle (the message says why)."""


@dataclass(frozen=True)
class TaskData:
    """A task's evaluation inputs and labels, indexed by the profiles' example ids."""

    inputs: Sequence[Any] | np.ndarray
    labels: np.ndarray


def check_labels(bundle: ProfileBundle, config_id: str, data: TaskData) -> None:
    """The live inputs must be the examples the profiler predicted: same count, same labels by id."""
    preds = bundle.predictions[bundle.predictions["config_id"] == config_id]
    if preds.empty:
        raise ValidationError(f"{config_id}: no per-example predictions in the bundle (accuracy unavailable?)")
    ids = preds["example_id"].to_numpy()
    if len(ids) != len(data.labels) or ids.max() >= len(data.labels):
        raise ValidationError(f"{config_id}: the profiles hold predictions for {len(ids)} examples but "
                              f"{len(data.labels)} evaluation inputs were loaded (different eval_subset?)")
    wrong = np.flatnonzero(preds["label"].to_numpy() != data.labels[ids])
    if len(wrong):
        raise ValidationError(f"{config_id}: labels of example ids {ids[wrong][:5].tolist()} differ between the "
                              "profiles' predictions and the loaded evaluation inputs")


def point_trace(point: ValidationPoint, settings: ValidationPreset, bundle: ProfileBundle, n_examples: int, seed: int,
                catalog: Catalog | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The point's trace: rate = load x capacity; the deadline by the point's rule.

    ``deadline_x_p95``: that multiple of the profiled p95 of one batch call.
    ``deadline_sim_quantile``: that quantile of the simulated end-to-end latency of this very trace
    (all ``sim_seeds`` seeds pooled, no request dropped), fixed before anything runs live.
    """
    profiles = bundle.profiles
    rows = profiles[profiles["config_id"] == point.config]
    if rows.empty:
        raise ValidationError(f"point {point.name!r}: config {point.config!r} is not in the profiles")
    row = rows.iloc[0]
    task = str(row["task"])
    rate = rate_for_load(profiles, point.config, point.load, settings.servers)
    n = int(min(settings.max_requests, max(10, math.ceil(rate * settings.duration_s))))
    spec = settings.workloads[point.workload]
    trace = make_trace(spec.kind, rate, n, 1.0, n_examples, seed, name=point.workload, **spec.params)
    if point.deadline_x_p95 is not None:
        deadline = point.deadline_x_p95 * float(row["lat_p95_ms"])
    else:
        policy = policies.fixed(point.config, "fixed")
        catalog = catalog or prepare(bundle)
        latencies = np.concatenate([
            simulate(trace, policy, catalog, settings.servers, settings.queue, seed=s, task=task)["latency_ms"].to_numpy()
            for s in range(settings.sim_seeds)])
        deadline = float(np.quantile(latencies, point.deadline_sim_quantile))
    trace["deadline_ms"] = deadline
    info = {"point": point.name, "task": task, "config_id": point.config, "workload": point.workload,
            "load": point.load, "rate_rps": rate, "deadline_ms": deadline,
            "profile_lat_p50_ms": float(row["lat_p50_ms"]), "batch_size": int(row["batch_size"])}
    return trace, info


def compare(info: Mapping[str, Any], live: pd.DataFrame, sims: Sequence[pd.DataFrame],
            settings: ValidationPreset) -> dict[str, Any]:
    """One row of the validation table from a live replay and the simulations of the same requests."""
    lm = run_metrics(live)
    sm = pd.DataFrame([run_metrics(s) for s in sims])
    sd = (lambda c: float(sm[c].std(ddof=1))) if len(sm) > 1 else (lambda c: math.nan)
    sim_hit, sim_p95 = float(sm["hit_rate"].mean()), float(sm["lat_p95_ms"].mean())
    hit_diff_pp = abs(lm["hit_rate"] - sim_hit) * 100.0
    p95_rel = (lm["lat_p95_ms"] - sim_p95) / sim_p95 if sim_p95 > 0 else math.nan
    batches = live[live["batch_id"] >= 0].drop_duplicates("batch_id")
    full = batches.loc[batches["batch_n"] == info["batch_size"], "service_ms"]
    lag = live["sent_lag_ms"].to_numpy(dtype=float)
    row = {k: v for k, v in info.items() if k in VALIDATION_COLUMNS}
    row.update({
        "n_requests": len(live),
        "sim_hit_rate": sim_hit, "live_hit_rate": lm["hit_rate"], "hit_rate_diff_pp": hit_diff_pp,
        "sim_hit_rate_sd_pp": sd("hit_rate") * 100.0,
        "sim_lat_p95_ms": sim_p95, "live_lat_p95_ms": lm["lat_p95_ms"], "p95_rel_diff": p95_rel,
        "sim_lat_p95_sd_ms": sd("lat_p95_ms"),
        "sim_lat_p50_ms": float(sm["lat_p50_ms"].mean()), "live_lat_p50_ms": lm["lat_p50_ms"],
        "sim_accuracy": float(sm["accuracy"].mean()), "live_accuracy": lm["accuracy"],
        "live_full_batch_p50_ms": float(full.median()) if len(full) else math.nan,
        "live_sent_lag_p50_ms": float(np.median(lag)), "live_sent_lag_p99_ms": float(np.percentile(lag, 99)),
        "n_abandoned": int(live.attrs.get("n_abandoned", int(live["abandoned"].sum()))),
        "n_after_wall": int(live.attrs.get("n_after_wall", 0)),
        "meets_hit_goal": bool(hit_diff_pp <= settings.goal_hit_rate_pp),
        "meets_p95_goal": bool(abs(p95_rel) <= settings.goal_p95_rel),
    })
    row["meets_goal"] = row["meets_hit_goal"] and row["meets_p95_goal"]
    return row


@dataclass
class ValidationResult:
    """The tidy table (one row per point) and every live per-request row (with a ``point`` column)."""

    table: pd.DataFrame
    live_requests: pd.DataFrame


def calibrate(config: LiveConfig, inputs: Sequence[Any] | np.ndarray, calls: int, gap_s: float,
              seed: int = 0) -> np.ndarray:
    """Fresh service times (ms) of ``config`` on random real batches, each call after an idle gap.

    Why: this machine's speed drifts (a model measured at 9.8 ms took 17.4 ms twenty seconds later,
    closed loop, nothing else running here), so samples profiled hours earlier mix that drift into
    the validation. Timed just before the replay, with the gap a server at the point's load sits idle
    between batches (ONNX Runtime's spinning worker threads park in such gaps and are slower to
    wake), these samples let the validation test the simulator's queueing model on its own.
    """
    rng = np.random.default_rng(seed)
    n = len(inputs)
    out = np.empty(int(calls))
    for i in range(int(calls)):
        if gap_s > 0:
            time.sleep(gap_s)
        batch = take(inputs, rng.integers(0, n, config.batch_size))
        start = time.perf_counter()
        config.run(batch)
        out[i] = (time.perf_counter() - start) * 1000.0
    return out


def with_samples(bundle: ProfileBundle, config_id: str, samples_ms: np.ndarray) -> ProfileBundle:
    """A bundle-like view whose only samples for ``config_id`` are ``samples_ms`` (served as measured)."""
    from types import SimpleNamespace

    own = pd.DataFrame({"config_id": config_id, "call_index": np.arange(len(samples_ms)), "latency_ms": samples_ms})
    samples = pd.concat([bundle.samples[bundle.samples["config_id"] != config_id], own], ignore_index=True)
    return SimpleNamespace(profiles=bundle.profiles, samples=samples, predictions=bundle.predictions)


def live_service(live: pd.DataFrame) -> tuple[np.ndarray, float, float]:
    """From a replay: its batches' service times (ms) in start order, the median back-to-back gap
    between a batch's finish and the next start when that batch's requests were already waiting
    (the server's per-batch cost outside ``service_ms``), and the drift of the service time (90th
    over 10th percentile of per-second medians of full batches; 1.0 for a stationary server)."""
    batches = live[live["batch_id"] >= 0].groupby("batch_id").agg(
        start=("start_s", "first"), finish=("finish_s", "first"), service=("service_ms", "first"),
        n=("batch_n", "first"), first_arrival=("arrival_s", "min")).sort_values("start")
    if batches.empty:
        return np.zeros(0), math.nan, math.nan
    nxt = batches.iloc[1:]
    prev_finish = batches["finish"].to_numpy()[:-1]
    busy = nxt["first_arrival"].to_numpy() <= prev_finish
    gaps = (nxt["start"].to_numpy() - prev_finish)[busy] * 1000.0
    full = batches[batches["n"] == batches["n"].max()]
    per_second = full.groupby(np.floor(full["start"]))["service"].median()
    drift = float(np.percentile(per_second, 90) / np.percentile(per_second, 10)) if len(per_second) >= 3 else math.nan
    return batches["service"].to_numpy(dtype=float), float(np.median(gaps)) if len(gaps) else 0.0, drift


def dispatch_overhead_ms(settings: ValidationPreset, harness: Mapping[str, float]) -> float:
    """The per-batch dispatch cost the simulated side charges (see ValidationPreset.dispatch_overhead)."""
    if settings.dispatch_overhead == "none":
        return 0.0
    if settings.dispatch_overhead == "harness":
        value = harness.get("harness_lat_p50_ms")
        if value is None or not math.isfinite(value):
            raise ValidationError("dispatch_overhead='harness' needs the harness measurement (measure_harness=True)")
        return float(value)
    return float(settings.dispatch_overhead)


def run_validation(bundle: ProfileBundle, settings: ValidationPreset, configs: Mapping[str, LiveConfig],
                   data: Mapping[str, TaskData], points: Sequence[str] | None = None, threads: int | None = None,
                   report: Callable[[dict[str, Any]], None] | None = None,
                   measure_harness: bool = True) -> ValidationResult:
    """Run each point live, then simulate its sent requests; ``configs`` hold the loaded predictors.

    ``data`` maps each task to its evaluation inputs (checked against the profiles' labels).
    ``report`` (if given) is called with each finished row, e.g. to print progress.
    ``measure_harness`` first replays a no-op model (:func:`planner.serving.replay.harness_overhead`, ~1 s).
    """
    chosen = [p for p in settings.points if points is None or p.name in points]
    if points is not None:
        unknown = sorted(set(points) - {p.name for p in settings.points})
        if unknown:
            raise ValidationError(f"unknown validation point(s) {unknown}; known: {[p.name for p in settings.points]}")
    for point in chosen:  # every check before anything runs
        task = point.config.split("/")[0]
        if task not in data:
            raise ValidationError(f"point {point.name!r}: no evaluation inputs loaded for task {task!r}")
        if point.config not in configs:
            raise ValidationError(f"point {point.name!r}: config {point.config!r} is not loaded for live replay")
        check_labels(bundle, point.config, data[task])
    harness = harness_overhead() if measure_harness else {}  # the replay's own per-request latency
    overhead = dispatch_overhead_ms(settings, harness)
    catalog: Catalog = prepare(bundle, dispatch_overhead_ms=overhead)
    rows, frames = [], []
    for index, point in enumerate(chosen):
        task = point.config.split("/")[0]
        task_data = data[task]
        trace, info = point_trace(point, settings, bundle, len(task_data.labels), settings.trace_seed + index, catalog)
        policy = policies.fixed(point.config, "fixed")
        warm_up([configs[point.config]], task_data.inputs, settings.warmup_calls)
        fresh = None
        if settings.calibration_calls:
            idle = max(0.0, info["batch_size"] / info["rate_rps"] - info["profile_lat_p50_ms"] / 1000.0)
            fresh = calibrate(configs[point.config], task_data.inputs, settings.calibration_calls, idle, seed=index)
        gc.collect()
        start = time.perf_counter()
        live = replay(trace, policy, configs, task_data.inputs, task_data.labels, settings.servers, settings.queue,
                      drop_expired=settings.drop_expired, task=task, pad_partial=settings.pad_partial,
                      limits=ReplayLimits(settings.max_requests, settings.max_wall_s), threads=threads)
        wall = time.perf_counter() - start
        sent = trace[trace["request_id"].isin(live["request_id"])]
        sims = [simulate(sent, policy, catalog, settings.servers, settings.queue, seed=s,
                         drop_expired=settings.drop_expired, task=task) for s in range(settings.sim_seeds)]
        row = compare(info, live, sims, settings)
        row["live_wall_s"] = wall
        if fresh is not None:  # the same requests, simulated on service times measured just now
            fresh_catalog = prepare(with_samples(bundle, point.config, fresh), cascade_mode="measured",
                                    dispatch_overhead_ms=overhead)
            fresh_sims = [simulate(sent, policy, fresh_catalog, settings.servers, settings.queue, seed=s,
                                   drop_expired=settings.drop_expired, task=task) for s in range(settings.sim_seeds)]
            again = compare(info, live, fresh_sims, settings)
            row.update({"fresh_service_p50_ms": float(np.median(fresh)), "fresh_sim_hit_rate": again["sim_hit_rate"],
                        "fresh_hit_rate_diff_pp": again["hit_rate_diff_pp"],
                        "fresh_sim_lat_p95_ms": again["sim_lat_p95_ms"], "fresh_p95_rel_diff": again["p95_rel_diff"],
                        "fresh_meets_goal": again["meets_goal"]})
        # the mechanics check: the same requests simulated on the live batches' own service times, in order
        sequence, gap, drift = live_service(live)
        if len(sequence):
            replayed_catalog = prepare(with_samples(bundle, point.config, sequence), cascade_mode="measured",
                                       dispatch_overhead_ms=max(gap, 0.0))
            replayed_catalog.ordered_samples = True
            # requests join the simulated queue when the live producer actually enqueued them; the
            # deadline and the latency still count from the scheduled arrival, as live
            lag_ms = live.set_index("request_id")["sent_lag_ms"].reindex(sent["request_id"]).to_numpy(dtype=float)
            as_sent = sent.assign(arrival_s=sent["arrival_s"] + lag_ms / 1000.0,
                                  deadline_ms=np.maximum(sent["deadline_ms"] - lag_ms, 1e-6))
            mech = simulate(as_sent, policy, replayed_catalog, settings.servers, settings.queue, seed=0,
                            drop_expired=settings.drop_expired, task=task)
            mech["latency_ms"] = mech["latency_ms"] + pd.Series(lag_ms, index=as_sent["request_id"].to_numpy()
                                                                ).reindex(mech["request_id"]).to_numpy()
            replayed = compare(info, live, [mech], settings)
            row.update({"live_service_drift": drift, "live_b2b_gap_ms": gap,
                        "replayed_sim_hit_rate": replayed["sim_hit_rate"],
                        "replayed_hit_rate_diff_pp": replayed["hit_rate_diff_pp"],
                        "replayed_sim_lat_p95_ms": replayed["sim_lat_p95_ms"],
                        "replayed_p95_rel_diff": replayed["p95_rel_diff"], "replayed_meets_goal": replayed["meets_goal"]})
        row.update({k: harness.get(k, math.nan) for k in ("harness_lat_p50_ms", "harness_lat_p95_ms")})
        row["sim_dispatch_overhead_ms"] = overhead
        rows.append(row)
        frames.append(live.assign(point=point.name))
        if report is not None:
            report(row)
    table = pd.DataFrame(rows, columns=VALIDATION_COLUMNS)
    return ValidationResult(table, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())


def summary_lines(table: pd.DataFrame, settings: ValidationPreset) -> list[str]:
    """Plain-language verdict: how many points meet the goal and the largest differences."""
    if table.empty:
        return ["no validation points were run"]
    met = int(table["meets_goal"].sum())
    return [
        f"{met}/{len(table)} points within {settings.goal_hit_rate_pp:g} pp hit-rate and "
        f"{settings.goal_p95_rel:.0%} p95 (hit-rate goal met at {int(table['meets_hit_goal'].sum())}, "
        f"p95 goal at {int(table['meets_p95_goal'].sum())})",
        f"hit-rate |diff|: median {table['hit_rate_diff_pp'].median():.2f} pp, max {table['hit_rate_diff_pp'].max():.2f} pp; "
        f"p95 relative diff: median {table['p95_rel_diff'].median():+.1%}, "
        f"max |.| {table['p95_rel_diff'].abs().max():.1%}",
    ] + ([f"on service times measured just before each replay: {int(table['fresh_meets_goal'].fillna(False).sum())}/"
          f"{int(table['fresh_meets_goal'].notna().sum())} points within the goal; hit-rate |diff| median "
          f"{table['fresh_hit_rate_diff_pp'].median():.2f} pp, p95 relative diff median {table['fresh_p95_rel_diff'].median():+.1%}"]
         if "fresh_meets_goal" in table and table["fresh_meets_goal"].notna().any() else []) \
      + ([f"on the live batches' own service times in order (the queueing model alone): "
          f"{int(table['replayed_meets_goal'].fillna(False).sum())}/{int(table['replayed_meets_goal'].notna().sum())} "
          f"points within the goal; live service drift (p90/p10 of per-second medians) median "
          f"{table['live_service_drift'].median():.2f}"]
         if "replayed_meets_goal" in table and table["replayed_meets_goal"].notna().any() else [])


def format_row(row: Mapping[str, Any]) -> str:
    """One line per finished point, for progress output."""
    return (f"{row['point']}: hit sim {row['sim_hit_rate']:.3f} live {row['live_hit_rate']:.3f} "
            f"({row['hit_rate_diff_pp']:.2f} pp); p95 sim {row['sim_lat_p95_ms']:.2f} live {row['live_lat_p95_ms']:.2f} ms "
            f"({row['p95_rel_diff']:+.1%}); n={row['n_requests']}, {row['live_wall_s']:.1f} s"
            + ("" if row["meets_goal"] else "  [outside goal]")
            + (f" | fresh service p50 {row['fresh_service_p50_ms']:.2f} ms: hit sim {row['fresh_sim_hit_rate']:.3f} "
               f"({row['fresh_hit_rate_diff_pp']:.2f} pp), p95 sim {row['fresh_sim_lat_p95_ms']:.2f} ms "
               f"({row['fresh_p95_rel_diff']:+.1%})" if row.get("fresh_sim_hit_rate") is not None else ""))
