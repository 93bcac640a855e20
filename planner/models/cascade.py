"""Two-stage small->large cascade with a max-softmax confidence threshold.

The small model answers every input; inputs whose max-softmax confidence is below the threshold tau
(one global tau, or one per class the small model predicts, as in FrugalML) are escalated, and only
that subset is sent to the large model. Coverage = fraction answered by stage 1.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from planner.models.base import Predictor, VariantSpec

Threshold = float | Mapping[int, float]


def _check_threshold(threshold: Threshold) -> Threshold:
    values = list(threshold.values()) if isinstance(threshold, Mapping) else [threshold]
    if not values:
        raise ValueError("a per-class threshold mapping must not be empty")
    for value in values:
        if not (isinstance(value, (int, float, np.floating)) and 0.0 <= float(value) <= 1.0):
            raise ValueError(f"cascade threshold must be a number in [0, 1], got {value!r}")
    return {int(k): float(v) for k, v in threshold.items()} if isinstance(threshold, Mapping) else float(threshold)


def escalate_mask(small_probs: np.ndarray, threshold: Threshold) -> np.ndarray:
    """True where the small model's max-softmax confidence is below its (global or per-class) tau."""
    threshold = _check_threshold(threshold)
    confidence = small_probs.max(axis=1)
    if isinstance(threshold, dict):
        predicted = small_probs.argmax(axis=1)
        missing = sorted(set(np.unique(predicted).tolist()) - set(threshold))
        if missing:
            raise ValueError(f"per-class thresholds lack predicted class(es) {missing}; given {sorted(threshold)}")
        taus = np.array([threshold[int(c)] for c in predicted], dtype=np.float64)
    else:
        taus = np.full(len(confidence), threshold)
    return confidence < taus


def combine(small_probs: np.ndarray, large_probs: np.ndarray, escalate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs, confidence, stage) given stage-1 probs, the escalated subset's stage-2 probs and the mask."""
    if large_probs.shape[0] != int(escalate.sum()):
        raise ValueError(f"{large_probs.shape[0]} stage-2 rows for {int(escalate.sum())} escalated inputs")
    probs = small_probs.astype(np.float32, copy=True)
    probs[escalate] = large_probs
    stage = np.where(escalate, 2, 1).astype(np.int8)
    return probs, probs.max(axis=1), stage


def coverage_of(stage: np.ndarray) -> float:
    """Fraction of inputs answered by stage 1."""
    stage = np.asarray(stage)
    return float((stage == 1).mean()) if stage.size else float("nan")


def _subset(inputs: Sequence[Any] | np.ndarray, index: np.ndarray):
    return inputs[index] if isinstance(inputs, np.ndarray) else [inputs[i] for i in index]


def threshold_label(threshold: Threshold) -> str:
    return "perclass" if isinstance(threshold, Mapping) else f"{float(threshold):g}"


class Cascade:
    """A Predictor built from two Predictors; only low-confidence inputs reach the large one."""

    def __init__(self, small: Predictor, large: Predictor, threshold: Threshold):
        self.small = small
        self.large = large
        self.threshold = _check_threshold(threshold)
        s, l_ = small.spec, large.spec
        if (s.task, s.runtime, s.precision, s.device) != (l_.task, l_.runtime, l_.precision, l_.device):
            raise ValueError(f"cascade members must share task/runtime/precision/device: {s.describe()} vs {l_.describe()}")
        self.spec = VariantSpec(s.task, f"cascade:{s.model}>{l_.model}@{threshold_label(self.threshold)}",
                                s.runtime, s.precision, s.device)
        self.accuracy_available = bool(small.accuracy_available and large.accuracy_available)

    def predict_with_stages(self, inputs: Sequence[Any] | np.ndarray, batch_size: int,
                            run_options: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probs, confidence of the answering stage, stage in {1, 2}) for every input. ``run_options``
        (ONNX Runtime members only) is passed to both stages' calls, so setting its ``terminate`` stops
        whichever runs."""
        stop = {} if run_options is None else {"run_options": run_options}
        small_probs = self.small.predict(inputs, batch_size, **stop)
        escalate = escalate_mask(small_probs, self.threshold)
        index = np.flatnonzero(escalate)
        if index.size:
            large_probs = self.large.predict(_subset(inputs, index), batch_size, **stop)
        else:
            large_probs = np.zeros((0, small_probs.shape[1]), dtype=np.float32)
        return combine(small_probs, large_probs, escalate)

    def predict(self, inputs: Sequence[Any] | np.ndarray, batch_size: int) -> np.ndarray:
        return self.predict_with_stages(inputs, batch_size)[0]

    def coverage(self, inputs: Sequence[Any] | np.ndarray, batch_size: int) -> float:
        """Fraction of ``inputs`` the small model answers alone."""
        return coverage_of(self.predict_with_stages(inputs, batch_size)[2])


def fit_per_class_thresholds(small_probs: np.ndarray, small_correct: np.ndarray, large_correct: np.ndarray,
                             max_escalation: float, grid: Sequence[float] = tuple(np.linspace(0.5, 1.0, 26))
                             ) -> dict[int, float]:
    """FrugalML-style per-predicted-class taus: maximise cascade accuracy on held-out predictions
    subject to escalating at most ``max_escalation`` of inputs (coordinate ascent over classes).

    Pass the rows of the evaluation set's calibration part only (``planner.splits``, e.g.
    ``small_probs[split.calibration]``) and report the cascade on the scored part; thresholds fitted
    on the examples they are scored on overstate the cascade's accuracy. (No profiled cascade uses
    per-class thresholds yet: the configured ones have one global tau.)"""
    if not 0.0 <= max_escalation <= 1.0:
        raise ValueError(f"max_escalation must be in [0, 1], got {max_escalation}")
    predicted = small_probs.argmax(axis=1)
    confidence = small_probs.max(axis=1)
    classes = range(small_probs.shape[1])
    taus = {int(c): 0.0 for c in classes}

    def score(t: dict[int, float]) -> tuple[float, float]:
        esc = confidence < np.array([t[int(c)] for c in predicted])
        return float(np.where(esc, large_correct, small_correct).mean()), float(esc.mean())

    best_acc, _ = score(taus)
    improved = True
    while improved:
        improved = False
        for c in classes:
            for tau in grid:
                trial = {**taus, int(c): float(tau)}
                acc, rate = score(trial)
                if rate <= max_escalation + 1e-12 and acc > best_acc + 1e-12:
                    taus, best_acc, improved = trial, acc, True
    return taus
