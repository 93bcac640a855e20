"""A synthetic results folder with the real layout, for testing the notebooks, the book and the README.

Everything here is made up (random latencies and predictions) and is written only to a temporary
``PLANNER_RESULTS_DIR``; it is never a measurement and never goes under ``results/``.
The evaluation tables come from the real :func:`planner.evaluation.grid.evaluate` run on the fake bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from planner import config
from planner.profile.accuracy import apply_split
from planner.profile.store import FILES, ProfileBundle
from planner.tables import refresh_manifest, write_manifest
from planner.schema import (LATENCY_SAMPLE_COLUMNS, PREDICTION_COLUMNS, PROFILE_COLUMNS, config_id, validate,
                            validate_profiles)

MACHINE_TAG = "cpu-synthetic-test-2c"
# task -> (n_classes, n_examples, {model: (base latency ms, accuracy)})
TASKS = {
    "sst2": (2, 200, {"small": (1.0, 0.80), "large": (4.0, 0.90)}),
    "cifar10": (10, 300, {"small": (0.4, 0.70), "large": (1.5, 0.85)}),
}
RUNTIME_FACTOR = {"torch": 1.0, "onnxruntime": 0.5}
PRECISION = {"fp32": (1.0, 0.0), "int8": (0.6, -0.01)}  # latency factor, accuracy delta
BATCHES = (1, 8)
THRESHOLDS = (0.7, 0.9)
N_SAMPLES = 120


def _row(task, model, runtime, precision, batch, draws, accuracy, cascade=None, coverage=np.nan):
    p50, p95, p99 = np.percentile(draws, [50, 95, 99])
    return dict(
        config_id=config_id(task, model, runtime, precision, batch, "cpu", cascade), task=task,
        model=model if cascade is None else f"cascade:{cascade[0]}>{cascade[1]}@{cascade[2]:g}",
        runtime=runtime, precision=precision, batch_size=batch, device="cpu",
        cascade_small=cascade[0] if cascade else None, cascade_large=cascade[1] if cascade else None,
        threshold=cascade[2] if cascade else np.nan, lat_p50_ms=p50, lat_p95_ms=p95, lat_p99_ms=p99,
        lat_mean_ms=float(draws.mean()), lat_p95_ci_low_ms=p95 * 0.97, lat_p95_ci_high_ms=p95 * 1.03,
        n_samples=len(draws), throughput_items_s=1000.0 * batch / float(draws.mean()), accuracy=accuracy,
        accuracy_source="measured" if accuracy == accuracy else "unavailable", coverage=coverage,
        flops_per_item=1e8 if model == "small" else 6e8, pct_roofline=np.nan, machine_tag=MACHINE_TAG,
        cpu_model="synthetic CPU", n_threads=2, torch_version="synthetic", profiled_at="1970-01-01T00:00:00",
    )


def fake_bundle(seed: int = 0) -> ProfileBundle:
    """Plain configurations, cascades routed from their members, and one accuracy-unavailable model."""
    rng = np.random.default_rng(seed)
    rows, samples, preds = [], [], []

    def add(row, draws, pred):
        rows.append(row)
        samples.append(pd.DataFrame({"config_id": row["config_id"], "call_index": np.arange(len(draws)),
                                     "latency_ms": draws}))
        if pred is not None:
            preds.append(pred.assign(config_id=row["config_id"]))

    for task, (n_classes, n_examples, models) in TASKS.items():
        labels = rng.integers(0, n_classes, n_examples)
        member = {}
        for model, (base, acc) in models.items():
            for runtime, rt in RUNTIME_FACTOR.items():
                for precision, (pf, delta) in PRECISION.items():
                    correct = rng.random(n_examples) < acc + delta
                    confidence = np.where(correct, rng.uniform(0.6, 1.0, n_examples), rng.uniform(0.4, 0.9, n_examples))
                    wrong = (labels + rng.integers(1, n_classes, n_examples)) % n_classes
                    pred = pd.DataFrame({"example_id": np.arange(n_examples), "label": labels,
                                         "prediction": np.where(correct, labels, wrong), "confidence": confidence,
                                         "correct": correct, "stage": 1})
                    for batch in BATCHES:
                        draws = base * rt * pf * (1 + 0.35 * (batch - 1)) * rng.lognormal(0, 0.12, N_SAMPLES)
                        add(_row(task, model, runtime, precision, batch, draws, float(correct.mean())), draws, pred)
                        member[(model, runtime, precision, batch)] = (draws, pred)
        for runtime in RUNTIME_FACTOR:
            for batch in BATCHES:
                (s_draws, s_pred), (l_draws, l_pred) = (member[("small", runtime, "fp32", batch)],
                                                        member[("large", runtime, "fp32", batch)])
                for tau in THRESHOLDS:
                    stage1 = s_pred["confidence"].to_numpy() >= tau
                    pred = s_pred.copy()
                    for column in ("prediction", "correct"):
                        pred[column] = np.where(stage1, s_pred[column], l_pred[column])
                    pred["stage"] = np.where(stage1, 1, 2)
                    escalate = rng.random(N_SAMPLES) > stage1.mean()
                    draws = s_draws + np.where(escalate, l_draws, 0.0)
                    add(_row(task, "small", runtime, "fp32", batch, draws, float(pred["correct"].mean()),
                             cascade=("small", "large", tau), coverage=float(stage1.mean())), draws, pred)
        if task == "sst2":  # like DistilBERT without a fine-tuned checkpoint: latency only
            for batch in BATCHES:
                draws = 9.0 * (1 + 0.35 * (batch - 1)) * rng.lognormal(0, 0.12, N_SAMPLES)
                add(_row(task, "unavailable-model", "torch", "fp32", batch, draws, np.nan), draws, None)

    predictions = validate(pd.concat(preds, ignore_index=True), PREDICTION_COLUMNS, "fake predictions")
    # both accuracy columns from the predictions over the protocol's calibration split, as in real profiles
    profiles = validate_profiles(apply_split(pd.DataFrame(rows, columns=list(PROFILE_COLUMNS)), predictions),
                                 "fake profiles")
    profiles["pct_roofline"] = 100 * profiles["flops_per_item"] * profiles["throughput_items_s"] / 2.7e11
    return ProfileBundle(
        profiles,
        validate(pd.concat(samples, ignore_index=True), LATENCY_SAMPLE_COLUMNS, "fake samples"),
        predictions,
        {"machine_tag": MACHINE_TAG, "device": "cpu", "cpu_model": "synthetic CPU", "logical_cpus": 2,
         "torch_threads": 2, "torch_version": "synthetic", "onnxruntime_version": "synthetic",
         "python_version": "3.11", "platform": "synthetic", "date": "1970-01-01T00:00:00+00:00"},
    )


def write_fake_results(root: Path, preset: str = "quick", n_requests: int = 300, n_deadlines: int = 4,
                       seed: int = 0) -> Path:
    """Write a fake ``<root>/<preset>/`` (profiles + evaluation runs); returns that folder."""
    out = Path(root) / preset
    tag_dir = out / "profiles" / MACHINE_TAG
    tag_dir.mkdir(parents=True, exist_ok=True)
    bundle = fake_bundle(seed)
    bundle.profiles.to_csv(tag_dir / FILES["profiles"], index=False)
    bundle.samples.to_parquet(tag_dir / FILES["samples"], index=False)
    bundle.predictions.to_parquet(tag_dir / FILES["predictions"], index=False)
    (tag_dir / FILES["environment"]).write_text(json.dumps(bundle.environment, indent=2))
    pd.DataFrame([{"task": "sst2", "model": "small", "runtime": "torch", "precision": "fp16", "device": "cpu",
                   "batch_size": 1, "cascade_small": None, "cascade_large": None, "threshold": np.nan,
                   "config_id": config_id("sst2", "small", "torch", "fp16", 1, "cpu"),
                   "reason": "fp16 is not run on CPU (synthetic example)"}]).to_csv(tag_dir / FILES["infeasible"], index=False)
    write_manifest(tag_dir, [FILES[n] for n in ("profiles", "samples", "predictions", "environment", "infeasible")])

    from planner.evaluation.grid import evaluate, record_dispatch_overhead

    settings = config.preset(preset).evaluate.model_copy(update={"n_requests": n_requests})
    deadlines = config.deadlines().deadlines
    for task in TASKS:
        chosen = deadlines[task][:: max(1, len(deadlines[task]) // n_deadlines)][:n_deadlines]
        evaluate(bundle, task, settings, chosen, out_csv=out / "eval" / f"runs_{task}.csv", progress=False)
    # the dispatch overhead the runs above were simulated with (none), where `planner evaluate` records its
    # own: without it a notebook that resolves the overhead measures one and writes it mid-report
    record_dispatch_overhead(out / "eval", 0.0, "synthetic: the fake runs were simulated without a dispatch overhead")
    # live-vs-simulated points in the layout of `planner validate-sim` (made-up numbers)
    rng = np.random.default_rng(seed)
    sim_hit, sim_p95 = rng.uniform(0.6, 1.0, 6), rng.uniform(1.0, 10.0, 6)
    live_hit, live_p95 = np.clip(sim_hit + rng.normal(0, 0.01, 6), 0, 1), sim_p95 * rng.uniform(0.92, 1.08, 6)
    table = pd.DataFrame({"point": [f"p{i}" for i in range(6)], "task": ["sst2"] * 3 + ["cifar10"] * 3,
                          "config_id": bundle.profiles["config_id"].iloc[:6].to_numpy(), "workload": "steady",
                          "load": 0.5, "sim_hit_rate": sim_hit, "live_hit_rate": live_hit,
                          "hit_rate_diff_pp": 100 * np.abs(live_hit - sim_hit), "sim_lat_p95_ms": sim_p95,
                          "live_lat_p95_ms": live_p95, "p95_rel_diff": (live_p95 - sim_p95) / sim_p95})
    table["meets_goal"] = (table["hit_rate_diff_pp"] <= 2) & (table["p95_rel_diff"].abs() <= 0.10)
    table.to_csv(out / "eval" / "simulator_validation.csv", index=False)
    refresh_manifest(out / "eval")
    return out
