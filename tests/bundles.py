"""Test fixtures: synthetic and hand-made profiles, predictions and bundles.

They use the real schema and return the real :class:`planner.schema.ProfileBundle`, so code tested
on them runs unchanged on measured profiles. Nothing built here is ever reported as a measurement.
Tests import this module directly (``tests/`` is on ``sys.path`` under pytest); benchmarks add
``tests/`` to ``sys.path`` first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from planner.profile.accuracy import apply_split
from planner.tables import write_manifest
from planner.schema import (LATENCY_SAMPLE_COLUMNS, PREDICTION_COLUMNS, PROFILE_COLUMNS, ProfileBundle, config_id,
                            validate, validate_profiles)

__all__ = ["synthetic_profiles", "synthetic_predictions", "synthetic_bundle", "toy_bundle", "write_bundle_folder"]


def synthetic_profiles(n_configs: int = 40, task: str = "sst2", seed: int = 0,
                       n_samples: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random but plausible ``(profiles, latency_samples)``: bigger models are slower and more accurate
    (``calibration_accuracy`` equals ``accuracy``: there are no per-example outcomes to split)."""
    rng = np.random.default_rng(seed)
    rows, samples = [], []
    runtimes, precisions, batches = ["torch", "onnxruntime"], ["fp32", "bf16", "int8"], [1, 4, 8]
    for i in range(n_configs):
        size = rng.uniform(0.2, 3.0)
        runtime, precision = runtimes[i % 2], precisions[(i // 2) % 3]
        batch = batches[(i // 6) % 3]
        model = f"m{i}"
        base = size * (1.0 + 0.4 * batch) * (0.6 if precision == "int8" else 1.0)
        draws = base * rng.lognormal(0.0, 0.15, n_samples)
        acc = float(np.clip(0.55 + 0.12 * np.log1p(size) + rng.normal(0, 0.02), 0.0, 1.0))
        cid = config_id(task, model, runtime, precision, batch, "cpu")
        p95 = float(np.percentile(draws, 95))
        rows.append(dict(
            config_id=cid, task=task, model=model, runtime=runtime, precision=precision,
            batch_size=batch, device="cpu", cascade_small=None, cascade_large=None, threshold=np.nan,
            lat_p50_ms=float(np.percentile(draws, 50)), lat_p95_ms=p95,
            lat_p99_ms=float(np.percentile(draws, 99)), lat_mean_ms=float(draws.mean()),
            lat_p95_ci_low_ms=p95 * 0.97, lat_p95_ci_high_ms=p95 * 1.03, n_samples=n_samples,
            throughput_items_s=1000.0 * batch / float(draws.mean()), accuracy=acc, calibration_accuracy=acc,
            accuracy_source="measured", coverage=np.nan, flops_per_item=np.nan, pct_roofline=np.nan,
            machine_tag="synthetic", cpu_model="synthetic", n_threads=2, torch_version="synthetic",
            profiled_at="1970-01-01T00:00:00",
        ))
        samples.append(pd.DataFrame({"config_id": cid, "call_index": np.arange(n_samples), "latency_ms": draws}))
    profiles = validate_profiles(pd.DataFrame(rows, columns=list(PROFILE_COLUMNS)), "synthetic profiles")
    return profiles, validate(pd.concat(samples, ignore_index=True), LATENCY_SAMPLE_COLUMNS, "synthetic samples")


def synthetic_predictions(profiles: pd.DataFrame, n_examples: int = 500, n_classes: int = 2,
                          seed: int = 0) -> pd.DataFrame:
    """Per-example predictions whose mean correctness matches each profile's accuracy."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_examples)
    frames = []
    for row in profiles.itertuples(index=False):
        acc = row.accuracy if row.accuracy == row.accuracy else 0.5
        correct = rng.random(n_examples) < acc
        wrong = (labels + rng.integers(1, n_classes, n_examples)) % n_classes if n_classes > 1 else labels
        prediction = np.where(correct, labels, wrong)
        confidence = np.where(correct, rng.uniform(0.6, 1.0, n_examples), rng.uniform(1.0 / n_classes, 0.9, n_examples))
        frames.append(pd.DataFrame({
            "config_id": row.config_id, "example_id": np.arange(n_examples), "label": labels,
            "prediction": prediction, "confidence": confidence, "correct": prediction == labels, "stage": 1,
        }))
    return validate(pd.concat(frames, ignore_index=True), PREDICTION_COLUMNS, "synthetic predictions")



def synthetic_bundle(n_configs: int = 12, task: str = "sst2", seed: int = 0, n_examples: int = 500,
                     n_samples: int = 200) -> ProfileBundle:
    """Synthetic profiles, samples and predictions (bundles) packed as a bundle."""
    profiles, samples = synthetic_profiles(n_configs, task, seed, n_samples)
    predictions = synthetic_predictions(profiles, n_examples, seed=seed)
    return ProfileBundle(profiles, samples, predictions, {"machine_tag": "synthetic"})


def toy_bundle(task: str, specs: list[dict]) -> ProfileBundle:
    """A hand-made bundle from explicit samples and per-example outcomes (for tests and examples).

    Each spec: ``model``, ``batch_size``, ``samples_ms`` (array), ``correct`` (bool array by example
    id), optional ``confidence`` (array), ``runtime``/``precision``/``device`` and, for a cascade,
    ``cascade=(small, large, tau)`` (its members must be specs too, with the same batch size).
    Profile statistics are computed from the samples, and both accuracy columns from ``correct`` over
    the protocol's calibration split (:func:`planner.profile.accuracy.apply_split`), as in real profiles.
    """
    rows, samples, preds = [], [], []
    for spec in specs:
        runtime, precision, device = spec.get("runtime", "torch"), spec.get("precision", "fp32"), spec.get("device", "cpu")
        cascade = spec.get("cascade")
        cid = config_id(task, spec["model"], runtime, precision, spec["batch_size"], device, cascade)
        draws = np.asarray(spec["samples_ms"], dtype=float)
        correct = np.asarray(spec["correct"], dtype=bool)
        confidence = np.asarray(spec.get("confidence", np.full(len(correct), 0.9)), dtype=float)
        p50, p95, p99 = np.percentile(draws, [50, 95, 99])
        rows.append(dict(
            config_id=cid, task=task, model=cid.split("/")[1], runtime=runtime, precision=precision,
            batch_size=spec["batch_size"], device=device,
            cascade_small=cascade[0] if cascade else None, cascade_large=cascade[1] if cascade else None,
            threshold=cascade[2] if cascade else np.nan, lat_p50_ms=p50, lat_p95_ms=p95, lat_p99_ms=p99,
            lat_mean_ms=draws.mean(), lat_p95_ci_low_ms=p95, lat_p95_ci_high_ms=p95, n_samples=len(draws),
            throughput_items_s=1000.0 * spec["batch_size"] / draws.mean(), accuracy=np.nan,
            calibration_accuracy=np.nan, accuracy_source="measured", coverage=np.nan, flops_per_item=np.nan, pct_roofline=np.nan,
            machine_tag="toy", cpu_model="toy", n_threads=1, torch_version="n/a", profiled_at="1970-01-01T00:00:00",
        ))
        samples.append(pd.DataFrame({"config_id": cid, "call_index": np.arange(len(draws)), "latency_ms": draws}))
        preds.append(pd.DataFrame({
            "config_id": cid, "example_id": np.arange(len(correct)), "label": 0,
            "prediction": np.where(correct, 0, 1), "confidence": confidence, "correct": correct, "stage": 1,
        }))
    predictions = validate(pd.concat(preds, ignore_index=True), PREDICTION_COLUMNS, "toy predictions")
    profiles = apply_split(pd.DataFrame(rows, columns=list(PROFILE_COLUMNS)), predictions)
    return ProfileBundle(validate_profiles(profiles, "toy profiles"),
                         validate(pd.concat(samples, ignore_index=True), LATENCY_SAMPLE_COLUMNS, "toy samples"),
                         predictions, {"machine_tag": "toy"})


def fast_and_accurate_bundle(task: str, n_examples: int, fast_ms: tuple[float, float, float],
                              slow_ms: tuple[float, float, float]) -> ProfileBundle:
    """Two batch-1 text models: ``minilm-l3`` 80 % correct and ``mpnet-l12`` 90 % correct, latencies
    drawn normal (mean, sd) and clipped below at the third value (seeded: the same bundle every call)."""
    rng = np.random.default_rng(0)
    ids = np.arange(n_examples)
    return toy_bundle(task, [
        {"model": "minilm-l3", "batch_size": 1, "correct": ids % 10 < 8,
         "samples_ms": rng.normal(fast_ms[0], fast_ms[1], 300).clip(fast_ms[2])},
        {"model": "mpnet-l12", "batch_size": 1, "correct": ids % 10 < 9,
         "samples_ms": rng.normal(slow_ms[0], slow_ms[1], 300).clip(slow_ms[2])},
    ])


def write_bundle_folder(root: Path, bundle: ProfileBundle, profiles: pd.DataFrame | None = None,
                        environment: dict | None = None) -> Path:
    """Store ``bundle`` as a profile folder ``load_bundle`` accepts (manifest included); returns ``root``.

    ``profiles`` replaces the bundle's rows (samples and predictions are cut to its configurations);
    the accuracy columns are the calibration split's own means, as ``load_bundle`` checks them.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    table = apply_split(bundle.profiles, bundle.predictions) if profiles is None else profiles
    ids = set(table["config_id"])
    # synthetic rows carry torch_version "n/a", which read_csv would parse as missing
    table.assign(torch_version="synthetic").to_csv(root / "profiles.csv", index=False)
    bundle.samples[bundle.samples["config_id"].isin(ids)].to_parquet(root / "latency_samples.parquet", index=False)
    bundle.predictions[bundle.predictions["config_id"].isin(ids)].to_parquet(root / "predictions.parquet", index=False)
    (root / "environment.json").write_text(json.dumps(environment or {"machine_tag": root.name}))
    write_manifest(root, ["profiles.csv", "latency_samples.parquet", "predictions.parquet", "environment.json"])
    return root
