"""Per-example accuracy: prediction, confidence (max softmax), correctness and cascade stage.

A variant's predictions do not depend on the batch size except through float reduction order, so
the sweep computes them once (at the preset's largest batch size) and shares them across its batch
sizes; :func:`batch_agreement` measures, on a sample, how often batch-1 and batch-max predictions
agree, and the sweep records it next to the accuracy. A cascade's per-example outcome is composed
exactly from its members' predictions (:func:`compose_cascade`), which is what the cascade computes:
stage 1 answers when the small model's confidence reaches tau, otherwise the large model answers.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from planner.schema import PREDICTION_COLUMNS, validate

# per-variant prediction parts: the prediction columns without config_id
PART_COLUMNS = {k: v for k, v in PREDICTION_COLUMNS.items() if k != "config_id"}


def prediction_frame(probs: np.ndarray, labels: np.ndarray, stage: int | np.ndarray = 1) -> pd.DataFrame:
    """Per-example outcome from class probabilities (rows = examples in evaluation order)."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"expected probabilities (n, classes) for {len(labels)} labels, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probabilities contain NaN or inf")
    prediction = probs.argmax(axis=1)
    frame = pd.DataFrame({
        "example_id": np.arange(len(labels)), "label": labels.astype(np.int64),
        "prediction": prediction.astype(np.int64), "confidence": probs.max(axis=1).astype(np.float64),
        "correct": prediction == labels, "stage": np.broadcast_to(np.asarray(stage, dtype=np.int64), len(labels)),
    })
    return validate(frame, PART_COLUMNS, "predictions")


def compose_cascade(small: pd.DataFrame, large: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The cascade's per-example outcome: small's answer when its confidence >= tau, else large's."""
    if not small["example_id"].equals(large["example_id"]):
        raise ValueError("cascade members were evaluated on different examples")
    stage1 = small["confidence"].to_numpy() >= threshold
    out = large.copy()
    for column in ("prediction", "confidence", "correct"):
        out[column] = np.where(stage1, small[column].to_numpy(), large[column].to_numpy())
    out["stage"] = np.where(stage1, 1, 2).astype(np.int64)
    return validate(out, PART_COLUMNS, "cascade predictions")


def summary(frame: pd.DataFrame) -> dict[str, float]:
    """Accuracy and coverage (fraction answered by stage 1) of a prediction frame."""
    return {"accuracy": float(frame["correct"].mean()), "coverage": float((frame["stage"] == 1).mean()),
            "n_eval": int(len(frame))}


def take(inputs: Sequence[Any] | np.ndarray, index: np.ndarray) -> Any:
    """A subset of evaluation inputs (a list of sentences or an image array)."""
    return inputs[index] if isinstance(inputs, np.ndarray) else [inputs[i] for i in index]


def sample_index(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A fixed random sample of example positions, sorted."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))


def batch_agreement(predictor: Any, inputs: Sequence[Any] | np.ndarray, index: np.ndarray,
                    batch_sizes: tuple[int, int]) -> dict[str, float]:
    """Agreement of argmax predictions and the largest probability gap between two batch sizes."""
    subset = take(inputs, index)
    a = np.asarray(predictor.predict(subset, batch_sizes[0]), dtype=np.float64)
    b = np.asarray(predictor.predict(subset, batch_sizes[1]), dtype=np.float64)
    return {"batch_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "batch_max_abs_diff": float(np.abs(a - b).max()), "agreement_n": int(len(index))}


def cascade_check(cascade: Any, inputs: Sequence[Any] | np.ndarray, index: np.ndarray, batch_size: int,
                  composed: pd.DataFrame) -> float:
    """Fraction of sampled examples where the real cascade's stage and prediction match the composition."""
    probs, _confidence, stage = cascade.predict_with_stages(take(inputs, index), batch_size)
    expected = composed.iloc[index]
    same = (np.asarray(stage) == expected["stage"].to_numpy()) & \
        (np.asarray(probs).argmax(1) == expected["prediction"].to_numpy())
    return float(same.mean())


def precision_deltas(rows: pd.DataFrame) -> pd.Series:
    """Accuracy minus the same model/runtime/device/batch's fp32 accuracy (NaN when none)."""
    keys = ["task", "model", "runtime", "device", "batch_size"]
    fp32 = rows.loc[rows["precision"] == "fp32", keys + ["accuracy"]].rename(columns={"accuracy": "_fp32"})
    merged = rows[keys].merge(fp32, on=keys, how="left")
    return pd.Series(rows["accuracy"].to_numpy() - merged["_fp32"].to_numpy(), index=rows.index,
                     name="accuracy_delta_vs_fp32")
