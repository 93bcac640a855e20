"""Per-example accuracy: prediction, confidence (max softmax), correctness and cascade stage.

A variant's predictions do not depend on the batch size except through float reduction order, so
the sweep computes them once (at the preset's largest batch size) and shares them across its batch
sizes; :func:`batch_agreement` measures, on a sample, how often batch-1 and batch-max predictions
agree, and the sweep records it next to the accuracy. A cascade's per-example outcome is composed
exactly from its members' predictions (:func:`compose_cascade`), which is what the cascade computes:
stage 1 answers when the small model's confidence reaches tau, otherwise the large model answers.

Accuracy is split (:mod:`planner.splits`): a configuration's ``accuracy`` is the mean correctness
over the evaluation set's *scored* part, its ``calibration_accuracy`` the mean over the
*calibration* part, which is the only accuracy a method may choose by. Both are computed here, from
the per-example predictions, by :func:`split_means` (one configuration) and :func:`split_accuracy`
(a whole predictions table); predictions always cover every evaluation example, so the split can be
applied to (or changed on) stored profiles without running a model again.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from planner.schema import PREDICTION_COLUMNS, measured, validate
from planner.splits import CALIBRATION, SCORED, Split, labels_by_example, partition, predictions_split, task_of

# per-variant prediction parts: the prediction columns without config_id
PART_COLUMNS = {k: v for k, v in PREDICTION_COLUMNS.items() if k != "config_id"}


class NonFiniteOutputs(ValueError):
    """A variant answered with NaN or inf: its predictions cannot be scored (the sweep records it infeasible)."""


def prediction_frame(probs: np.ndarray, labels: np.ndarray, stage: int | np.ndarray = 1) -> pd.DataFrame:
    """Per-example outcome from class probabilities (rows = examples in evaluation order)."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"expected probabilities (n, classes) for {len(labels)} labels, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)):
        bad = int((~np.isfinite(probs)).any(axis=1).sum())
        raise NonFiniteOutputs(f"probabilities contain NaN or inf ({bad} of {len(probs)} examples)")
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


# the accuracy columns a split gives each measured configuration: part -> column
SPLIT_COLUMNS: dict[str, str] = {SCORED: "accuracy", CALIBRATION: "calibration_accuracy"}


def split_means(frame: pd.DataFrame, split: Split) -> dict[str, float]:
    """``accuracy`` (scored part) and ``calibration_accuracy`` of one configuration's prediction frame."""
    ids = frame["example_id"].to_numpy()
    if len(ids) and (ids.min() < 0 or ids.max() >= split.n_examples):
        raise ValueError(f"example ids outside the {split.n_examples} examples of the {split.task} split")
    correct = frame["correct"].to_numpy(dtype=bool)
    calibration = split.mask(CALIBRATION)[ids]
    return {SPLIT_COLUMNS[SCORED]: float(correct[~calibration].mean()),
            SPLIT_COLUMNS[CALIBRATION]: float(correct[calibration].mean())}


def summary(frame: pd.DataFrame, task: str) -> dict[str, float]:
    """Split accuracies (:func:`split_means`), coverage (fraction answered by stage 1, over every
    evaluation example: a cost, not a score) and size of one configuration's prediction frame."""
    split = partition(task, labels_by_example(frame, f"{task} prediction frame"))
    return {**split_means(frame, split), "coverage": float((frame["stage"] == 1).mean()), "n_eval": int(len(frame))}


def split_accuracy(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per ``config_id`` of a predictions table (any tasks): ``accuracy`` and ``calibration_accuracy``.

    Each task's split comes from its predictions' labels (:func:`planner.splits.predictions_split`),
    so the numbers depend only on the stored predictions and the protocol's split.
    """
    frames = []
    tasks = task_of(predictions["config_id"])
    for task in sorted(tasks.unique()):
        rows = predictions[tasks == task]
        calibration = predictions_split(rows, task).mask(CALIBRATION)[rows["example_id"].to_numpy()]
        part = np.where(calibration, SPLIT_COLUMNS[CALIBRATION], SPLIT_COLUMNS[SCORED])
        frames.append(rows.assign(_part=part).groupby(["config_id", "_part"])["correct"].mean().unstack("_part"))
    if not frames:
        return pd.DataFrame(columns=list(SPLIT_COLUMNS.values()), dtype=float).rename_axis("config_id")
    out = pd.concat(frames)[list(SPLIT_COLUMNS.values())].astype(float)
    out.columns.name = None
    return out


def apply_split(rows: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (profile or accuracy rows) with both accuracy columns recomputed from ``predictions``
    for every measured row (NaN for ``unavailable`` ones); a measured row without predictions is an error."""
    means = split_accuracy(predictions)
    is_measured = measured(rows).to_numpy()
    missing = sorted(set(rows.loc[is_measured, "config_id"]) - set(means.index))
    if missing:
        raise ValueError(f"no predictions for measured configuration(s) {missing[:5]}")
    out = rows.copy()
    for column in SPLIT_COLUMNS.values():
        out[column] = np.where(is_measured, out["config_id"].map(means[column]).to_numpy(dtype=float), np.nan)
    return out


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


# a lower-precision configuration is compared with the fp32 one sharing these (its "fp32 peer")
FP32_PEER_KEYS = ["task", "model", "runtime", "device", "batch_size"]


def precision_deltas(rows: pd.DataFrame) -> pd.Series:
    """Accuracy minus the same model/runtime/device/batch's fp32 accuracy (NaN when none)."""
    keys = FP32_PEER_KEYS
    fp32 = rows.loc[rows["precision"] == "fp32", keys + ["accuracy"]].rename(columns={"accuracy": "_fp32"})
    merged = rows[keys].merge(fp32, on=keys, how="left")
    return pd.Series(rows["accuracy"].to_numpy() - merged["_fp32"].to_numpy(), index=rows.index,
                     name="accuracy_delta_vs_fp32")


def calibration_correct(predictions: pd.DataFrame, task: str, config_ids: Sequence[str]) -> np.ndarray:
    """(len(config_ids), calibration examples) correctness of each configuration on the calibration
    part of ``task``'s split, rows in ``config_ids`` order; a configuration without predictions is an
    error (naming it)."""
    rows = predictions[predictions["config_id"].isin(list(config_ids))]
    missing = sorted(set(config_ids) - set(rows["config_id"]))
    if missing:
        raise ValueError(f"no predictions for configuration(s) {missing[:5]}")
    split = predictions_split(predictions, task)
    table = rows.pivot(index="config_id", columns="example_id", values="correct").reindex(list(config_ids))
    calibration = table.columns.intersection(split.part(CALIBRATION))
    if table[calibration].isna().to_numpy().any():
        raise ValueError(f"{task}: predictions do not cover every calibration example for every configuration")
    return table[calibration].to_numpy(dtype=bool)


def paired_difference_se(correct: np.ndarray) -> np.ndarray:
    """(C, C) standard error of the paired accuracy difference between configurations ``i`` and ``j``
    scored on the same examples (rows of ``correct``): ``sd(c_i - c_j) / sqrt(n)``, the denominator of
    a paired t-test. Why paired: two configurations that agree on most examples differ by far less
    noise than two independent accuracies, so this says which differences the examples resolve.
    For 0/1 outcomes ``(c_i - c_j)^2 = c_i + c_j - 2 c_i c_j``, so every pair comes from one Gram
    matrix, without a (C, C, n) array of differences."""
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 2 or correct.shape[1] < 2:
        raise ValueError(f"expected (configurations, examples >= 2) correctness, got shape {correct.shape}")
    if not np.isin(correct, (0.0, 1.0)).all():
        raise ValueError("correctness must be 0/1 (or boolean)")
    n = correct.shape[1]
    mean = correct.mean(axis=1)
    squared = mean[:, None] + mean[None, :] - 2.0 * (correct @ correct.T) / n   # mean of (c_i - c_j)^2
    variance = (squared - (mean[:, None] - mean[None, :]) ** 2) * n / (n - 1)
    return np.sqrt(np.clip(variance, 0.0, None) / n)


def median_pair_se(correct: np.ndarray) -> float:
    """Median over distinct pairs of :func:`paired_difference_se`: the size of an accuracy difference
    between two of these configurations that the examples typically resolve at one standard error."""
    se = paired_difference_se(correct)
    return float(np.median(se[np.triu_indices(len(se), k=1)]))
