"""Cascade routing, coverage and per-class thresholds on a toy pair of models (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.models.cascade import Cascade, coverage_of, escalate_mask, fit_per_class_thresholds
from planner.models.base import Predictor, VariantSpec


class Toy:
    """Returns stored probabilities for integer-id inputs and records what it was asked."""

    def __init__(self, model: str, probs: np.ndarray, available: bool = True):
        self.spec = VariantSpec("sst2", model, "torch", "fp32", "cpu")
        self.accuracy_available = available
        self.probs = probs.astype(np.float32)
        self.seen: list[int] = []
        self.calls: list[int] = []

    def predict(self, inputs, batch_size):
        ids = [int(i) for i in inputs]
        self.seen.extend(ids)
        self.calls.extend(len(ids[s : s + batch_size]) for s in range(0, len(ids), batch_size))
        return self.probs[ids]


SMALL = np.array([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.99, 0.01]])
LARGE = np.array([[0.9, 0.1], [0.1, 0.9], [0.3, 0.7], [0.8, 0.2], [0.7, 0.3]])


def test_only_low_confidence_inputs_reach_the_large_model():
    small, large = Toy("s", SMALL), Toy("l", LARGE)
    cascade = Cascade(small, large, threshold=0.7)
    probs, conf, stage = cascade.predict_with_stages(list(range(5)), batch_size=2)
    assert small.seen == [0, 1, 2, 3, 4]
    assert large.seen == [1, 3]  # confidences 0.6 and 0.55 < 0.7
    assert stage.tolist() == [1, 2, 1, 2, 1]
    np.testing.assert_allclose(probs[[1, 3]], LARGE[[1, 3]])
    np.testing.assert_allclose(probs[[0, 2, 4]], SMALL[[0, 2, 4]])
    np.testing.assert_allclose(conf, probs.max(1))
    assert coverage_of(stage) == pytest.approx(0.6)
    assert cascade.coverage(list(range(5)), 2) == pytest.approx(0.6)
    assert all(c <= 2 for c in large.calls)
    assert isinstance(cascade, Predictor)
    assert cascade.spec.model == "cascade:s>l@0.7"


def test_threshold_extremes_and_no_escalation_skips_large():
    small, large = Toy("s", SMALL), Toy("l", LARGE)
    _, _, stage = Cascade(small, large, 0.0).predict_with_stages(list(range(5)), 4)
    assert stage.tolist() == [1] * 5 and large.seen == []
    _, _, stage = Cascade(small, large, 1.0).predict_with_stages(list(range(5)), 4)
    assert stage.tolist() == [2] * 5


def test_per_class_threshold_routes_by_predicted_class():
    # class 0 predicted for rows 0,1,4 (conf .95,.6,.99); class 1 for rows 2,3 (conf .8,.55)
    mask = escalate_mask(SMALL, {0: 0.97, 1: 0.5})
    assert mask.tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="lack predicted class"):
        escalate_mask(SMALL, {0: 0.9})


def test_numpy_inputs_are_subset_with_fancy_indexing():
    small, large = Toy("s", SMALL), Toy("l", LARGE)
    probs = Cascade(small, large, 0.7).predict(np.arange(5), 8)
    assert probs.shape == (5, 2) and large.seen == [1, 3]


def test_bad_thresholds_and_mismatched_members_fail_clearly():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Cascade(Toy("s", SMALL), Toy("l", LARGE), 1.5)
    other = Toy("l", LARGE)
    other.spec = VariantSpec("sst2", "l", "onnxruntime", "fp32", "cpu")
    with pytest.raises(ValueError, match="must share"):
        Cascade(Toy("s", SMALL), other, 0.5)


def test_accuracy_available_only_when_both_members_have_it():
    assert not Cascade(Toy("s", SMALL), Toy("l", LARGE, available=False), 0.5).accuracy_available


def test_fit_per_class_thresholds_respects_budget_and_improves_accuracy():
    rng = np.random.default_rng(0)
    n = 400
    conf = rng.uniform(0.5, 1.0, n)
    pred = rng.integers(0, 2, n)
    probs = np.where(pred[:, None] == 0, np.c_[conf, 1 - conf], np.c_[1 - conf, conf])
    # class-1 predictions are unreliable when unconfident; class-0 ones are fine
    small_correct = np.where((pred == 1) & (conf < 0.8), rng.random(n) < 0.3, rng.random(n) < 0.95)
    large_correct = rng.random(n) < 0.9
    taus = fit_per_class_thresholds(probs, small_correct, large_correct, max_escalation=0.3)
    esc = escalate_mask(probs, taus)
    assert esc.mean() <= 0.3
    base = small_correct.mean()
    assert np.where(esc, large_correct, small_correct).mean() > base
    assert taus[1] > taus[0]
