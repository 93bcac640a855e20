"""Baselines: each rule against a brute-force reference, reasons, oracle scoring, fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.plan import (
    DeadlinePlanner,
    INFaaSStyle,
    InvalidDeadlineError,
    Oracle,
    PlannerError,
    ReasonCode,
    StaticLarge,
    StaticSmall,
    ThroughputAutotuner,
)
from planner.schema import config_id, validate_profiles
from bundles import synthetic_profiles

TEMPLATE = synthetic_profiles(1, seed=0)[0].iloc[0].to_dict()


def make_profiles(rows: list[dict]) -> pd.DataFrame:
    out = []
    for i, r in enumerate(rows):
        lat, acc, batch = float(r["lat"]), r.get("acc"), int(r.get("batch", 1))
        row = dict(TEMPLATE)
        row.update(
            config_id=config_id("sst2", f"m{i}", "torch", "fp32", batch, "cpu"), model=f"m{i}", batch_size=batch,
            lat_p50_ms=lat * 0.8, lat_p95_ms=lat, lat_p99_ms=lat * 1.2, lat_mean_ms=lat * 0.85,
            throughput_items_s=float(r.get("thr", 1000.0 * batch / (lat * 0.85))),
            # methods choose by calibration accuracy; the scored accuracy is reversed on purpose, so a
            # method that read it would fail every reference below
            calibration_accuracy=np.nan if acc is None else float(acc),
            accuracy=np.nan if acc is None else 1.0 - float(acc),
            accuracy_source="unavailable" if acc is None else "measured",
        )
        out.append(row)
    return validate_profiles(pd.DataFrame(out))


def records(frame: pd.DataFrame) -> list[dict]:
    return [r for r in frame.to_dict("records") if r["accuracy_source"] == "measured"]


def fastest(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: (r["lat_p95_ms"], -r["calibration_accuracy"], r["config_id"]))


row_strategy = st.fixed_dictionaries({
    "lat": st.one_of(st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0]), st.floats(0.1, 10.0)),
    "acc": st.one_of(st.sampled_from([None, 0.6, 0.7, 0.7 + 1e-9, 0.705, 0.8, 0.9]), st.floats(0.0, 1.0)),
    "batch": st.sampled_from([1, 4, 8]),
    "thr": st.one_of(st.sampled_from([100.0, 500.0, 1000.0]), st.floats(10.0, 5000.0)),
})
profiles_strategy = st.lists(row_strategy, min_size=1, max_size=15).filter(
    lambda rows: any(r["acc"] is not None for r in rows))
deadline_strategy = st.one_of(st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0]), st.floats(0.05, 12.0))
FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(rows=profiles_strategy, deadline=deadline_strategy)
def test_static_baselines_ignore_the_deadline(rows, deadline):
    frame = make_profiles(rows)
    measured = records(frame)
    small = StaticSmall().fit(frame).select("sst2", deadline)
    large = StaticLarge().fit(frame).select("sst2", deadline)
    assert small.config_id == fastest(measured)["config_id"]
    assert large.config_id == min(measured, key=lambda r: (-r["calibration_accuracy"], r["lat_p95_ms"], r["config_id"]))["config_id"]
    for d in (small, large):
        late = d.expected_latency_ms > deadline
        assert d.reason is (ReasonCode.DEADLINE_IGNORED if late else ReasonCode.OK)
        assert d.expected_miss_ms == pytest.approx(max(0.0, d.expected_latency_ms - deadline))


@FAST
@given(rows=profiles_strategy, deadline=deadline_strategy)
def test_throughput_autotuner_matches_brute_force(rows, deadline):
    frame = make_profiles(rows)
    measured = records(frame)
    feasible = [r for r in measured if r["lat_p95_ms"] <= deadline]
    d = ThroughputAutotuner().fit(frame).select("sst2", deadline, "steady")
    if feasible:
        best = min(feasible, key=lambda r: (-r["throughput_items_s"], -r["batch_size"], r["lat_p95_ms"], r["config_id"]))
        assert (d.config_id, d.reason) == (best["config_id"], ReasonCode.OK)
    else:
        assert (d.config_id, d.reason) == (fastest(measured)["config_id"], ReasonCode.NO_FEASIBLE)


@FAST
@given(rows=profiles_strategy, deadline=deadline_strategy, margin=st.sampled_from([0.0, 0.05, 0.2, 1.0]),
       cost=st.sampled_from(["cpu_time", "latency"]))
def test_infaas_matches_brute_force(rows, deadline, margin, cost):
    frame = make_profiles(rows)
    measured = records(frame)
    floor = max(0.0, max(r["calibration_accuracy"] for r in measured) - margin) if measured else 0.0
    feasible = [r for r in measured if r["lat_p95_ms"] <= deadline]
    good = [r for r in feasible if r["calibration_accuracy"] >= floor]
    infaas = INFaaSStyle(margin, cost=cost).fit(frame)
    if measured:
        assert infaas.accuracy_floor_["sst2"] == pytest.approx(floor)  # learned by fit from the margin
    d = infaas.select("sst2", deadline)
    if good:
        key = (lambda r: (-r["throughput_items_s"], -r["batch_size"], r["lat_p95_ms"], r["config_id"])) \
            if cost == "cpu_time" else (lambda r: (r["lat_p95_ms"], -r["calibration_accuracy"], r["config_id"]))
        assert (d.config_id, d.reason) == (min(good, key=key)["config_id"], ReasonCode.OK)
    elif feasible:
        best = min(feasible, key=lambda r: (-r["calibration_accuracy"], r["lat_p95_ms"], r["config_id"]))
        assert (d.config_id, d.reason) == (best["config_id"], ReasonCode.ACCURACY_FLOOR_UNMET)
    else:
        assert (d.config_id, d.reason) == (fastest(measured)["config_id"], ReasonCode.NO_FEASIBLE)


def test_infaas_with_zero_floor_is_the_throughput_autotuner():
    profiles, _ = synthetic_profiles(60, seed=5)
    infaas, tuner = INFaaSStyle(accuracy_margin=1.0).fit(profiles), ThroughputAutotuner().fit(profiles)
    for deadline in np.linspace(0.1, 12, 40):
        assert infaas.select("sst2", deadline) == tuner.select("sst2", deadline)


def test_oracle_scores_every_measured_config_once_and_picks_the_best():
    frame = make_profiles([{"lat": 1.0, "acc": 0.6}, {"lat": 2.0, "acc": 0.7}, {"lat": 4.0, "acc": 0.9},
                           {"lat": 0.5, "acc": None}])
    calls: list[str] = []
    scores = dict(zip(frame["config_id"], [0.5, 0.8, 0.8, 1.0]))

    def score(cid: str) -> float:
        calls.append(cid)
        return scores[cid]

    oracle = Oracle(score).fit(frame)  # fit scores; select only looks up
    assert sorted(calls) == sorted(frame["config_id"][frame["accuracy_source"] == "measured"])
    d = oracle.select("sst2", 3.0)
    assert d.expected_latency_ms == 2.0 and d.reason is ReasonCode.OK  # tie on score -> lower latency
    assert oracle.select("sst2", 1.0).reason is ReasonCode.DEADLINE_IGNORED
    assert oracle.select_for_trace("sst2").config_id == d.config_id
    assert len(calls) == 3  # scores are cached per task
    assert oracle.scores_["sst2"][d.config_id] == 0.8
    after = oracle.fallback("sst2", 3.0, {d.config_id})
    assert after.expected_latency_ms == 4.0 and after.reason is ReasonCode.FALLBACK_NO_FEASIBLE
    scores[d.config_id] = 0.0  # a refit forgets the old scores
    assert oracle.fit(frame).select("sst2", 3.0).expected_latency_ms == 4.0


def test_oracle_pruned_by_an_upper_bound_picks_the_same_configuration():
    profiles, _ = synthetic_profiles(40, seed=11)
    rng = np.random.default_rng(0)
    scores = dict(zip(profiles["config_id"], rng.uniform(0.1, 0.9, len(profiles))))
    bounds = {c: v + 0.05 for c, v in scores.items()}  # never below the score
    full = Oracle(scores.__getitem__).fit(profiles, task="sst2")
    pruned = Oracle(scores.__getitem__, upper_bound_fn=bounds.__getitem__).fit(profiles, task="sst2")
    assert pruned.select_for_trace("sst2") == full.select_for_trace("sst2")
    assert pruned.n_scored_["sst2"] < full.n_scored_["sst2"] == len(profiles)
    with pytest.raises(PlannerError, match="not 'cifar10'|unknown task"):
        pruned.select_for_trace("cifar10")


def test_oracle_rejects_bad_scores_and_arguments():
    frame = make_profiles([{"lat": 1.0, "acc": 0.6}])
    with pytest.raises(PlannerError, match="finite"):
        Oracle(lambda cid: float("nan")).fit(frame).select("sst2", 2.0)
    with pytest.raises(PlannerError, match="callable"):
        Oracle(0.5)  # type: ignore[arg-type]
    with pytest.raises(PlannerError, match="workload"):
        Oracle(lambda cid: 1.0).fit(frame).select("sst2", 2.0, "sometimes")


METHODS = [StaticSmall, StaticLarge, ThroughputAutotuner, DeadlinePlanner, lambda: INFaaSStyle(0.1),
           lambda: Oracle(lambda cid: 1.0)]


@pytest.mark.parametrize("cls", METHODS)
def test_every_method_shares_the_interface_and_skips_unavailable(cls):
    frame = make_profiles([{"lat": 0.2, "acc": None}, {"lat": 1.0, "acc": 0.6}, {"lat": 3.0, "acc": 0.8}])
    method = cls().fit(frame)
    for workload in (None, "steady", "bursty"):
        for deadline in (0.1, 0.5, 2.0, 10.0):
            assert method.select("sst2", deadline, workload).config_id != frame["config_id"][0]
    first = method.select("sst2", 10.0)
    assert method.fallback("sst2", 10.0, {first.config_id}).config_id not in {first.config_id, frame["config_id"][0]}



@pytest.mark.parametrize("cls", METHODS)
def test_every_method_falls_back_after_the_deadline_passed(cls):
    """fallback is shared: a spent budget (<= 0 ms) still gets an answer, the fastest measured one
    left, whatever the method's rule, flagged with how late it will be."""
    frame = make_profiles([{"lat": 0.2, "acc": None}, {"lat": 1.0, "acc": 0.6}, {"lat": 2.0, "acc": 0.7},
                           {"lat": 3.0, "acc": 0.8}])
    method = cls().fit(frame)
    crashed = method.select("sst2", 10.0).config_id
    fastest_left = 2.0 if crashed == frame["config_id"][1] else 1.0
    for budget in (0.0, -1.5):
        decision = method.fallback("sst2", budget, {crashed})
        assert decision.reason is ReasonCode.FALLBACK_NO_FEASIBLE
        assert decision.expected_latency_ms == fastest_left
        assert decision.expected_miss_ms == pytest.approx(fastest_left - budget)


@pytest.mark.parametrize("cls", METHODS)
def test_every_method_names_bad_deadlines_and_failed_sets(cls):
    frame = make_profiles([{"lat": 1.0, "acc": 0.6}, {"lat": 3.0, "acc": 0.8}])
    method = cls().fit(frame)
    for bad in (True, np.array([5.0]), float("nan"), "5"):
        with pytest.raises(InvalidDeadlineError, match="deadline_ms"):
            method.select("sst2", bad)
        with pytest.raises(InvalidDeadlineError, match="deadline_ms"):
            method.fallback("sst2", bad, set())
    assert method.select("sst2", np.float64(5.0)) == method.select("sst2", 5.0)
    assert method.select("sst2", np.int64(5)) == method.select("sst2", 5)
    with pytest.raises(PlannerError, match="failed must be a collection of config ids.*None"):
        method.fallback("sst2", 5.0, None)

def test_bad_parameters_raise():
    with pytest.raises(PlannerError, match="accuracy_margin"):
        INFaaSStyle(1.5)
    with pytest.raises(PlannerError, match="cost"):
        INFaaSStyle(0.5, cost="dollars")  # type: ignore[arg-type]
    with pytest.raises(PlannerError, match="percentile"):
        StaticSmall(percentile=42)
