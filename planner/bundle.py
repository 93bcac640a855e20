"""Synthetic and hand-made profile bundles for tests, benchmarks and examples.

They return the real :class:`planner.profile.store.ProfileBundle`, with the real schema, so code
tested on them runs unchanged on measured profiles. Nothing built here is ever reported as a
measurement.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from planner.profile.store import ProfileBundle
from planner.schema import (LATENCY_SAMPLE_COLUMNS, PREDICTION_COLUMNS, PROFILE_COLUMNS, config_id, validate,
                            validate_profiles)
from planner.synthetic import synthetic_predictions, synthetic_profiles

__all__ = ["ProfileBundle", "synthetic_bundle", "toy_bundle"]


def synthetic_bundle(n_configs: int = 12, task: str = "sst2", seed: int = 0, n_examples: int = 500,
                     n_samples: int = 200) -> ProfileBundle:
    """Synthetic profiles, samples and predictions (planner.synthetic) packed as a bundle."""
    profiles, samples = synthetic_profiles(n_configs, task, seed, n_samples)
    predictions = synthetic_predictions(profiles, n_examples, seed=seed)
    return ProfileBundle(profiles, samples, predictions, {"machine_tag": "synthetic"})


def toy_bundle(task: str, specs: list[dict]) -> ProfileBundle:
    """A hand-made bundle from explicit samples and per-example outcomes (for tests and examples).

    Each spec: ``model``, ``batch_size``, ``samples_ms`` (array), ``correct`` (bool array by example
    id), optional ``confidence`` (array), ``runtime``/``precision``/``device`` and, for a cascade,
    ``cascade=(small, large, tau)`` (its members must be specs too, with the same batch size).
    Profile statistics are computed from the samples.
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
            throughput_items_s=1000.0 * spec["batch_size"] / draws.mean(), accuracy=float(correct.mean()),
            accuracy_source="measured", coverage=np.nan, flops_per_item=np.nan, pct_roofline=np.nan,
            machine_tag="toy", cpu_model="toy", n_threads=1, torch_version="n/a", profiled_at="1970-01-01T00:00:00",
        ))
        samples.append(pd.DataFrame({"config_id": cid, "call_index": np.arange(len(draws)), "latency_ms": draws}))
        preds.append(pd.DataFrame({
            "config_id": cid, "example_id": np.arange(len(correct)), "label": 0,
            "prediction": np.where(correct, 0, 1), "confidence": confidence, "correct": correct, "stage": 1,
        }))
    profiles = validate_profiles(pd.DataFrame(rows, columns=list(PROFILE_COLUMNS)), "toy profiles")
    return ProfileBundle(profiles, validate(pd.concat(samples, ignore_index=True), LATENCY_SAMPLE_COLUMNS, "toy samples"),
                         validate(pd.concat(preds, ignore_index=True), PREDICTION_COLUMNS, "toy predictions"),
                         {"machine_tag": "toy"})
