"""The calibration split (issue #17): methods choose on the calibration part, are scored on the rest.

The partition is fixed, stratified and the same everywhere; a method's choice depends on the
calibration part's predictions only; traces never draw a calibration example.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundles import synthetic_bundle, toy_bundle
from planner import config, splits
from planner.config import ConfigError
from planner.evaluation import grid
from planner.plan.policies import PolicyContext
from planner.plan.registry import METHODS, method_params, with_role
from planner.profile.accuracy import apply_split
from planner.schema import ProfileBundle
from planner.workloads import WorkloadError, make_trace, spec_trace


# ------------------------------------------------------------------ the partition
@pytest.mark.parametrize("labels", [np.arange(872) % 2, np.repeat(np.arange(10), 37), np.array([0, 0, 1, 1, 1, 2])])
def test_partition_is_disjoint_complete_sorted_and_stratified(labels):
    split = splits.partition("cifar10", labels)
    both = np.concatenate([split.calibration, split.scored])
    assert len(np.intersect1d(split.calibration, split.scored)) == 0
    assert np.array_equal(np.sort(both), np.arange(len(labels)))
    assert np.all(np.diff(split.calibration) > 0) and np.all(np.diff(split.scored) > 0)
    share = config.protocol().calibration.share
    for label in np.unique(labels):
        n = int((labels == label).sum())
        assert int((labels[split.calibration] == label).sum()) == int(np.floor(share * n + 0.5))
    assert split.mask("calibration").sum() == len(split.calibration) and not split.mask("scored")[split.calibration].any()


def test_partition_is_pinned_deterministic_and_task_specific():
    """sha256-ordered, so these ids hold on every machine and library version; a change here changes
    every reported accuracy and must be deliberate (and documented in the accuracy chapter)."""
    labels = np.arange(20) % 2
    assert splits.partition("sst2", labels).calibration.tolist() == [0, 2, 5, 6, 7, 9, 10, 17, 18, 19]
    assert splits.partition("cifar10", np.arange(30) % 3, share=0.3, seed=5).calibration.tolist() == \
        [3, 4, 5, 12, 14, 22, 23, 24, 28]
    big = np.arange(1000) % 2
    assert np.array_equal(splits.partition("sst2", big).calibration, splits.partition("sst2", big.copy()).calibration)
    assert not np.array_equal(splits.partition("sst2", big).calibration, splits.partition("cifar10", big).calibration)
    assert not np.array_equal(splits.partition("sst2", big, seed=1).calibration, splits.partition("sst2", big).calibration)


def test_partition_refuses_what_cannot_be_split():
    with pytest.raises(ConfigError, match="share"):
        splits.partition("sst2", np.arange(10) % 2, share=1.0)
    with pytest.raises(splits.SplitError, match="at least 2 labels"):
        splits.partition("sst2", np.array([1]))
    with pytest.raises(splits.SplitError, match="integers"):
        splits.partition("sst2", np.array([0.5, 1.0]))
    with pytest.raises(splits.SplitError, match="scored part empty"):
        splits.partition("sst2", np.array([0, 1]), share=0.9)
    with pytest.raises(ConfigError, match="unknown task"):
        splits.partition("imagenet", np.arange(10) % 2)


def test_labels_come_from_predictions_and_must_agree():
    preds = pd.DataFrame({"config_id": ["sst2/a"] * 3 + ["sst2/b"] * 3, "example_id": [0, 1, 2] * 2,
                          "label": [1, 0, 1, 1, 0, 1]})
    assert splits.labels_by_example(preds).tolist() == [1, 0, 1]
    with pytest.raises(splits.SplitError, match=r"example id\(s\) \[2\] carry different labels"):
        splits.labels_by_example(preds.assign(label=[1, 0, 1, 1, 0, 0]))
    with pytest.raises(splits.SplitError, match="without gaps"):
        splits.labels_by_example(preds.assign(example_id=[0, 1, 3] * 2))


# ------------------------------------------------------------------ choices use calibration only
N_EX = 200


def _bundle(correct: dict[str, np.ndarray]) -> ProfileBundle:
    latency = {"fast": 1.0, "mid": 2.5, "big": 6.0}
    batch = {"fast": 1, "mid": 4, "big": 8}
    rng = np.random.default_rng(0)
    return toy_bundle("sst2", [dict(model=m, batch_size=batch[m], samples_ms=latency[m] * rng.lognormal(0, 0.1, 60),
                                    correct=correct[m]) for m in latency])


def _choices(bundle: ProfileBundle) -> dict[str, list[str]]:
    """Every online method's choices: static ones at several deadlines, queue-aware ones in several contexts."""
    out = {}
    for name in with_role("proposed", "baseline", "ablation"):
        entry = METHODS[name]
        state = entry.fit(bundle, "sst2", 95, method_params(name, None))
        picks = []
        for deadline in (0.5, 1.5, 3.0, 5.0, 8.0, 50.0):
            policy = entry.policy(state, grid.TraceContext("sst2", deadline, "steady", pd.DataFrame(), None, None))
            for queue in (1, 8, 40):
                slack = tuple(float(deadline) - 0.1 * i for i in range(queue))
                ctx = PolicyContext(0.0, "sst2", queue, slack[0], deadline, 0, 1, 1, 100.0, slack)
                picks.append(policy.config_for(deadline) if policy.needs.static else policy(ctx))
        out[name] = picks
    return out


def _with_predictions(bundle: ProfileBundle, predictions: pd.DataFrame) -> ProfileBundle:
    return ProfileBundle(apply_split(bundle.profiles, predictions), bundle.samples, predictions, bundle.environment)


def test_a_choice_ignores_the_scored_part_and_follows_the_calibration_part():
    rng = np.random.default_rng(3)
    base = _bundle({"fast": rng.random(N_EX) < 0.6, "mid": rng.random(N_EX) < 0.75, "big": rng.random(N_EX) < 0.9})
    split = splits.predictions_split(base.predictions, "sst2")
    before = _choices(base)

    # every scored outcome reversed: the reported accuracies move, no choice does
    scored = base.predictions["example_id"].isin(split.scored)
    flipped = base.predictions.assign(correct=np.where(scored, ~base.predictions["correct"], base.predictions["correct"]))
    after = _with_predictions(base, flipped)
    assert not np.allclose(after.profiles["accuracy"], base.profiles["accuracy"])
    assert np.array_equal(after.profiles["calibration_accuracy"], base.profiles["calibration_accuracy"])
    assert _choices(after) == before

    # the most accurate configuration made wrong on the calibration part: the choices change
    big = base.predictions["config_id"].str.contains("/big/")
    calibration = base.predictions["example_id"].isin(split.calibration)
    worse = base.predictions.assign(correct=base.predictions["correct"] & ~(big & calibration))
    changed = _choices(_with_predictions(base, worse))
    assert changed["seed_p95"] != before["seed_p95"] and changed["static_large"] != before["static_large"]
    assert changed["anytime"] != before["anytime"]


@pytest.mark.parametrize("labels", [np.arange(872) % 2, np.repeat(np.arange(10), 37)])
def test_development_halves_cut_the_calibration_part_in_two_stratified_and_fixed(labels):
    split = splits.partition("cifar10", labels)
    fit, score = splits.development_halves(split, labels)
    assert len(np.intersect1d(fit, score)) == 0
    assert np.array_equal(np.sort(np.concatenate([fit, score])), split.calibration)
    for label in np.unique(labels):
        assert abs(int((labels[fit] == label).sum()) - int((labels[score] == label).sum())) <= 1
    again = splits.development_halves(splits.partition("cifar10", labels), labels)
    assert np.array_equal(fit, again[0]) and np.array_equal(score, again[1])
    with pytest.raises(splits.SplitError, match="one label per example id"):
        splits.development_halves(split, labels[:-1])


# ------------------------------------------------------------------ traces draw the scored part only
def test_traces_draw_only_scored_examples():
    bundle = synthetic_bundle(n_configs=6, n_examples=300)
    ids = splits.example_ids(bundle, "sst2")
    split = splits.predictions_split(bundle.predictions, "sst2")
    assert np.array_equal(ids, split.scored)
    trace = make_trace("gamma", 500.0, 5000, 5.0, ids, seed=1, cv=3)
    assert set(trace["example_id"]) <= set(split.scored) and len(set(trace["example_id"])) > 0.9 * len(ids)
    spec = config.WorkloadSpec.model_validate({"kind": "gamma", "params": {"cv": 2},
                                               "deadline_classes": {"a": {"share": 0.5, "scale": 1.0},
                                                                    "b": {"share": 0.5, "scale": 3.0}}})
    assert set(spec_trace(spec, 50.0, 2000, 5.0, ids, seed=2)["example_id"]) <= set(split.scored)
    # an integer still means every id 0..n-1 (synthetic traces), with the same draws as before
    assert make_trace("poisson", 10.0, 50, 5.0, 300, seed=1)["example_id"].max() < 300
    with pytest.raises(WorkloadError, match="distinct"):
        make_trace("poisson", 10.0, 50, 5.0, [1, 1, 2], seed=1)


def test_the_evaluation_serves_and_credits_scored_examples_only():
    bundle = synthetic_bundle(n_configs=6, n_examples=300)
    calibration = set(splits.predictions_split(bundle.predictions, "sst2").calibration)
    settings = config.EvaluatePreset.model_validate({
        "n_requests": 300, "seeds": [42], "loads": [0.8], "workloads": {"steady": {"kind": "poisson"}},
        "deadlines": {"sst2": [5.0]}, "methods": ["seed_p95", "anytime"]})
    cell = grid.Cell("steady", 0.8, 5.0, 42)
    result = grid.run_cell(bundle, cell, "sst2", settings, keep_requests=True)
    assert len(result.requests) == 2 * 300 and not set(result.requests["example_id"]) & calibration
