"""Per-example accuracy: prediction frames, cascade composition (checked against the real Cascade)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner.models.base import VariantSpec
from planner.profile import accuracy as acc
from planner.profile import toy
from planner.splits import partition


def test_prediction_frame_takes_argmax_and_max_softmax():
    probs = np.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]])
    frame = acc.prediction_frame(probs, np.array([1, 1, 0]))
    assert frame["prediction"].tolist() == [1, 0, 0]
    assert frame["confidence"].tolist() == [0.9, 0.7, 0.5]
    assert frame["correct"].tolist() == [True, False, True]
    assert (frame["stage"] == 1).all() and frame["example_id"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="NaN"):
        acc.prediction_frame(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="shape"):
        acc.prediction_frame(np.ones((2, 2)), np.array([0, 1, 1]))


def test_compose_cascade_escalates_below_tau_only():
    small = acc.prediction_frame(np.array([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8]]), np.array([0, 1, 1]))
    large = acc.prediction_frame(np.array([[0.3, 0.7], [0.1, 0.9], [0.99, 0.01]]), np.array([0, 1, 1]))
    out = acc.compose_cascade(small, large, 0.8)
    assert out["stage"].tolist() == [1, 2, 1]
    assert out["prediction"].tolist() == [0, 1, 1]
    assert out["confidence"].tolist() == pytest.approx([0.95, 0.9, 0.8])
    s = acc.summary(out, "sst2")
    assert s["accuracy"] == s["calibration_accuracy"] == 1.0 and s["coverage"] == pytest.approx(2 / 3)


def _toy_pair(task):
    small, large = {"sst2": ("minilm-l3", "minilm-l6"), "cifar10": ("mobilenet_v2", "resnet18")}[task]
    return (toy.load_predictor(VariantSpec(task, small), "quick"), toy.load_predictor(VariantSpec(task, large), "quick"))


@pytest.mark.parametrize("task", ["sst2", "cifar10"])
@pytest.mark.parametrize("tau", [0.7, 0.9, 0.95])
def test_composition_equals_the_real_cascade(task, tau):
    from planner.models.cascade import Cascade

    inputs, labels = toy.eval_inputs(task)
    small, large = _toy_pair(task)
    composed = acc.compose_cascade(acc.prediction_frame(small.predict(inputs, 8), labels),
                                   acc.prediction_frame(large.predict(inputs, 8), labels), tau)
    assert 0 < (composed["stage"] == 2).sum() < len(labels)  # both stages exercised
    probs, confidence, stage = Cascade(small, large, tau).predict_with_stages(inputs, 8)
    np.testing.assert_array_equal(np.asarray(stage), composed["stage"].to_numpy())
    np.testing.assert_array_equal(np.asarray(probs).argmax(1), composed["prediction"].to_numpy())
    np.testing.assert_allclose(np.asarray(confidence), composed["confidence"].to_numpy(), rtol=1e-6)
    index = acc.sample_index(len(labels), 40)
    assert acc.cascade_check(Cascade(small, large, tau), inputs, index, 4, composed) == 1.0


def test_batch_agreement_reports_prediction_agreement_and_max_gap():
    inputs, _ = toy.eval_inputs("sst2")
    predictor = toy.load_predictor(VariantSpec("sst2", "minilm-l6"), "quick")
    out = acc.batch_agreement(predictor, inputs, acc.sample_index(len(inputs), 30), (1, 8))
    assert out == {"batch_agreement": 1.0, "batch_max_abs_diff": 0.0, "agreement_n": 30}

    class Drifting:
        calls = 0

        def predict(self, xs, batch_size):
            p = np.tile([0.51, 0.49], (len(xs), 1)) if batch_size == 1 else np.tile([0.49, 0.51], (len(xs), 1))
            return p

    out = acc.batch_agreement(Drifting(), inputs, np.arange(10), (1, 8))
    assert out["batch_agreement"] == 0.0 and out["batch_max_abs_diff"] == pytest.approx(0.02)


def test_precision_deltas_compare_with_the_same_model_runtime_and_batch():
    rows = pd.DataFrame({
        "task": "sst2", "model": ["m", "m", "m", "m", "n"], "runtime": ["torch", "torch", "onnxruntime", "onnxruntime", "torch"],
        "device": "cpu", "batch_size": 1, "precision": ["fp32", "int8", "fp32", "int8", "bf16"],
        "accuracy": [0.90, 0.88, 0.91, 0.905, 0.7]})
    delta = acc.precision_deltas(rows)
    assert delta.iloc[:4].tolist() == pytest.approx([0.0, -0.02, 0.0, -0.005])
    assert np.isnan(delta.iloc[4])  # no fp32 reference for model n


def test_split_accuracies_are_the_means_over_the_right_example_ids():
    """accuracy = mean of correct over the scored ids, calibration_accuracy over the calibration ids,
    per configuration and per task (each task with its own split)."""
    rng = np.random.default_rng(7)
    frames, expected = [], {}
    for task, n, classes in (("sst2", 60, 2), ("cifar10", 90, 10)):
        labels = rng.integers(0, classes, n)
        split = partition(task, labels)
        for model in ("a", "b"):
            correct = rng.random(n) < 0.7
            cid = f"{task}/{model}/torch/fp32/b1/cpu"
            frames.append(pd.DataFrame({"config_id": cid, "example_id": np.arange(n), "label": labels,
                                        "prediction": 0, "confidence": 0.9, "correct": correct, "stage": 1}))
            expected[cid] = (correct[split.scored].mean(), correct[split.calibration].mean())
            one = acc.summary(frames[-1], task)
            assert (one["accuracy"], one["calibration_accuracy"]) == pytest.approx(expected[cid])
    predictions = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=1)  # order does not matter
    table = acc.split_accuracy(predictions)
    for cid, (scored, calibration) in expected.items():
        assert table.loc[cid, "accuracy"] == pytest.approx(scored)
        assert table.loc[cid, "calibration_accuracy"] == pytest.approx(calibration)
    rows = pd.DataFrame({"config_id": list(expected) + ["sst2/c/torch/fp32/b1/cpu"],
                         "accuracy_source": ["measured"] * 4 + ["unavailable"]})
    applied = acc.apply_split(rows, predictions)
    assert applied["calibration_accuracy"].iloc[:4].tolist() == pytest.approx([v[1] for v in expected.values()])
    assert applied.iloc[4][["accuracy", "calibration_accuracy"]].isna().all()
    with pytest.raises(ValueError, match="no predictions for measured"):
        acc.apply_split(rows.assign(accuracy_source="measured"), predictions)


def test_precision_cost_pairs_each_variant_with_its_fp32_on_the_scored_examples():
    from bundles import toy_bundle

    from planner import splits
    from planner.analysis.results import precision_cost

    n = 400
    rng = np.random.default_rng(0)
    fp32 = rng.random(n) < 0.85
    int8 = fp32.copy()
    int8[np.flatnonzero(fp32)[:12]] = False  # the int8 model loses 12 examples the fp32 one got right
    samples = np.full(20, 5.0)
    specs = [dict(model="m", batch_size=b, precision=p, samples_ms=samples, correct=c)
             for b in (1, 4) for p, c in (("fp32", fp32), ("int8", int8 if b == 1 else fp32))]
    specs.append(dict(model="m", batch_size=8, precision="int8", samples_ms=samples, correct=int8))  # no fp32 peer
    bundle = toy_bundle("sst2", specs)
    split = splits.predictions_split(bundle.predictions, "sst2")
    table = precision_cost(bundle.profiles, bundle.predictions)
    assert list(table["batch_size"]) == [1, 4]  # one row per batch size with an fp32 peer
    b1, b4 = table.iloc[0], table.iloc[1]
    lost = int((fp32 & ~int8)[split.scored].sum())
    assert 0 < lost < 12  # some of the losses fall in the calibration part and are not counted
    assert (b1["n"], b1["fp32_only"], b1["variant_only"]) == (len(split.scored), lost, 0)
    assert b1["delta_points"] == pytest.approx(100 * (int8[split.scored].mean() - fp32[split.scored].mean()))
    assert b1["p"] == pytest.approx(2 * 0.5 ** lost)
    assert (b4["delta_points"], b4["p"]) == (0.0, 1.0)
    calibration = precision_cost(bundle.profiles, bundle.predictions, part="calibration").iloc[0]
    assert calibration["fp32_only"] == 12 - lost
    with pytest.raises(ValueError, match="part must be"):
        precision_cost(bundle.profiles, bundle.predictions, part="train")


def test_paired_difference_se_is_the_paired_t_tests_denominator_on_the_calibration_part():
    """calibration_correct picks each configuration's calibration examples (in the order asked);
    paired_difference_se equals mean difference / t of scipy's paired t-test and the evaluation's
    paired sd / sqrt(n) for every pair, and is 0 on the diagonal."""
    from scipy import stats

    from planner.analysis.stats import paired_statistics

    rng = np.random.default_rng(3)
    n = 80
    labels = rng.integers(0, 2, n)
    split = partition("sst2", labels)
    ids = [f"sst2/{m}/torch/fp32/b1/cpu" for m in ("a", "b", "c")]
    correct = {cid: rng.random(n) < p for cid, p in zip(ids, (0.6, 0.75, 0.9))}
    predictions = pd.concat([pd.DataFrame({"config_id": cid, "example_id": np.arange(n), "label": labels,
                                           "prediction": 0, "confidence": 0.9, "correct": c, "stage": 1})
                             for cid, c in correct.items()], ignore_index=True).sample(frac=1.0, random_state=2)
    matrix = acc.calibration_correct(predictions, "sst2", ids[::-1])
    assert matrix.shape == (3, len(split.calibration))
    assert (matrix[0] == correct[ids[2]][split.calibration]).all()
    se = acc.paired_difference_se(matrix)
    assert np.diag(se) == pytest.approx(0.0) and se == pytest.approx(se.T)
    x, y = matrix[0].astype(float), matrix[2].astype(float)
    t = stats.ttest_rel(x, y).statistic
    assert se[0, 2] == pytest.approx((x - y).mean() / t)
    for i in range(3):
        for j in range(3):
            if i != j:
                sd = paired_statistics(matrix[i].astype(float), matrix[j].astype(float))["sd_diff"]
                assert se[i, j] == pytest.approx(sd / np.sqrt(matrix.shape[1]))
    with pytest.raises(ValueError, match="0/1"):
        acc.paired_difference_se(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="no predictions for configuration"):
        acc.calibration_correct(predictions, "sst2", ["sst2/zzz/torch/fp32/b1/cpu"])
