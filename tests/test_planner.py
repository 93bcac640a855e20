"""DeadlinePlanner: brute-force agreement on random profiles, workload batch choice, failure handling."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.analysis.pareto import pareto_front
from planner.plan import (
    DeadlinePlanner,
    Decision,
    InvalidDeadlineError,
    NoConfigurationLeftError,
    NotFittedError,
    PlannerError,
    ReasonCode,
    UnknownTaskError,
    select_config,
)
from planner.schema import DeadlineError, SchemaError, config_id
from bundles import synthetic_profiles

TEMPLATE = synthetic_profiles(1, seed=0)[0].iloc[0].to_dict()


def make_profiles(rows: list[dict], task: str = "sst2") -> pd.DataFrame:
    """Profiles from small dicts: lat (p95), acc (None = unavailable), batch, thr, model, task."""
    out = []
    for i, r in enumerate(rows):
        lat, acc, batch = float(r["lat"]), r.get("acc"), int(r.get("batch", 1))
        t = r.get("task", task)
        model = r.get("model", f"m{i}")
        row = dict(TEMPLATE)
        row.update(
            config_id=config_id(t, model, r.get("runtime", "torch"), "fp32", batch, "cpu"), task=t, model=model,
            runtime=r.get("runtime", "torch"), precision="fp32", batch_size=batch,
            lat_p50_ms=r.get("p50", lat * 0.8), lat_p95_ms=lat, lat_p99_ms=r.get("p99", lat * 1.2),
            lat_mean_ms=lat * 0.85, lat_p95_ci_low_ms=lat * 0.97, lat_p95_ci_high_ms=lat * 1.03,
            throughput_items_s=float(r.get("thr", 1000.0 * batch / (lat * 0.85))),
            # methods choose by calibration accuracy; the scored accuracy is reversed on purpose, so a
            # method that read it would fail every reference below
            calibration_accuracy=np.nan if acc is None else float(acc),
            accuracy=np.nan if acc is None else 1.0 - float(acc),
            accuracy_source="unavailable" if acc is None else "measured",
        )
        out.append(row)
    return pd.DataFrame(out)  # fit() validates it (and the error tests rely on that)


def brute_force(frame: pd.DataFrame, deadline: float, workload=None, tolerance: float = 0.0,
                latency: str = "lat_p95_ms", exclude: frozenset = frozenset()) -> tuple[str, bool]:
    """Reference rule, written independently of the planner: (config_id, on_time)."""
    rows = [r for r in frame.to_dict("records") if r["config_id"] not in exclude]
    measured = [r for r in rows if r["accuracy_source"] == "measured"]
    if not measured:
        best = min(rows, key=lambda r: (r[latency], r["config_id"]))
        return best["config_id"], best[latency] <= deadline
    feasible = [r for r in measured if r[latency] <= deadline]
    if not feasible:
        best = min(measured, key=lambda r: (r[latency], -r["calibration_accuracy"], r["config_id"]))
        return best["config_id"], False
    top = max(r["calibration_accuracy"] for r in feasible)
    tol = tolerance if workload else 0.0
    level = [r for r in feasible if r["calibration_accuracy"] >= top - tol]
    key = {
        None: lambda r: (r[latency], r["config_id"]),
        "steady": lambda r: (-r["throughput_items_s"], -r["batch_size"], r[latency], r["config_id"]),
        "bursty": lambda r: (r["batch_size"], r[latency], r["config_id"]),
    }[workload]
    return min(level, key=key)["config_id"], True


def same_decision(a: Decision, b: Decision) -> bool:
    """Field-wise equality that treats NaN accuracies (unavailable) as equal."""
    nan_ok = a.expected_accuracy == b.expected_accuracy or (
        math.isnan(a.expected_accuracy) and math.isnan(b.expected_accuracy))
    return nan_ok and (a.config_id, a.expected_latency_ms, a.reason, a.expected_miss_ms) == (
        b.config_id, b.expected_latency_ms, b.reason, b.expected_miss_ms)


LATS = [0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0]
# every level has a near-twin, so off-by-a-little rules meet a near-tie at the top
ACCS = [None, 0.6, 0.6 + 1e-9, 0.7, 0.7 + 1e-9, 0.705, 0.8, 0.8 - 1e-12, 0.9, 0.9 + 1e-9]
row_strategy = st.fixed_dictionaries({
    # mostly drawn from small pools so ties and near-ties are common; sometimes any float
    "lat": st.one_of(st.sampled_from(LATS), st.sampled_from(LATS), st.floats(0.1, 10.0)),
    "acc": st.one_of(st.sampled_from(ACCS), st.sampled_from(ACCS), st.sampled_from(ACCS), st.floats(0.0, 1.0)),
    "batch": st.sampled_from([1, 4, 8]),
    "thr": st.floats(10.0, 5000.0),
})
deadline_strategy = st.one_of(st.sampled_from(LATS), st.floats(0.05, 12.0))
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(rows=st.lists(row_strategy, min_size=1, max_size=12), deadlines=st.lists(deadline_strategy, min_size=1, max_size=6),
       workload=st.sampled_from([None, "steady", "bursty"]), tolerance=st.sampled_from([0.0, 0.05]))
def test_select_matches_brute_force(rows, deadlines, workload, tolerance):
    frame = make_profiles(rows)
    planner = DeadlinePlanner(accuracy_tolerance=tolerance).fit(frame)
    lat = dict(zip(frame["config_id"], frame["lat_p95_ms"]))
    for deadline in deadlines:
        decision = planner.select("sst2", deadline, workload)
        expected, on_time = brute_force(frame, deadline, workload, tolerance)
        assert decision.config_id == expected
        assert decision.expected_latency_ms == lat[expected]
        assert decision.expected_miss_ms == pytest.approx(max(0.0, lat[expected] - deadline))
        if on_time and (frame["accuracy_source"] == "measured").any():
            assert decision.reason is ReasonCode.OK and decision.expected_latency_ms <= deadline
    # the plain-function form applies the same rule without the precomputed table
    direct = select_config(frame, "sst2", deadlines[0], workload=workload, accuracy_tolerance=tolerance)
    assert same_decision(direct, planner.select("sst2", deadlines[0], workload))


@FAST
@given(rows=st.lists(row_strategy, min_size=1, max_size=12), deadline=deadline_strategy)
def test_select_never_violates_deadline_when_feasible_and_is_most_accurate(rows, deadline):
    frame = make_profiles(rows)
    decision = DeadlinePlanner().fit(frame).select("sst2", deadline)
    measured = frame[frame["accuracy_source"] == "measured"]
    feasible = measured[measured["lat_p95_ms"] <= deadline]
    if not feasible.empty:
        assert decision.expected_latency_ms <= deadline
        assert decision.expected_accuracy == feasible["calibration_accuracy"].max()
        same = feasible[feasible["calibration_accuracy"] == feasible["calibration_accuracy"].max()]
        assert decision.expected_latency_ms == same["lat_p95_ms"].min()
        assert decision.reason is ReasonCode.OK
    elif not measured.empty:
        assert decision.reason is ReasonCode.NO_FEASIBLE
        assert decision.expected_latency_ms == measured["lat_p95_ms"].min()
        assert decision.expected_miss_ms == pytest.approx(decision.expected_latency_ms - deadline)
        assert decision.expected_miss_ms > 0
    else:
        assert decision.reason is ReasonCode.ACCURACY_UNAVAILABLE
        assert math.isnan(decision.expected_accuracy)


@FAST
@given(rows=st.lists(row_strategy, min_size=2, max_size=15), deadline=deadline_strategy, data=st.data())
def test_fallback_excludes_failed_and_applies_rule_to_the_rest(rows, deadline, data):
    frame = make_profiles(rows)
    planner = DeadlinePlanner().fit(frame)
    ids = frame["config_id"].tolist()
    failed = frozenset(data.draw(st.lists(st.sampled_from(ids), max_size=len(ids) - 1)))
    decision = planner.fallback("sst2", deadline, failed)
    assert decision.config_id not in failed
    expected, on_time = brute_force(frame, deadline, exclude=failed)
    assert decision.config_id == expected
    measured_left = (frame["accuracy_source"].eq("measured") & ~frame["config_id"].isin(failed)).any()
    if not measured_left:
        assert decision.reason is ReasonCode.ACCURACY_UNAVAILABLE
    else:
        assert decision.reason is (ReasonCode.FALLBACK if on_time else ReasonCode.FALLBACK_NO_FEASIBLE)


def test_fallback_after_crash_gives_a_different_config_and_all_failed_raises():
    frame = make_profiles([{"lat": 1, "acc": 0.6}, {"lat": 2, "acc": 0.7}, {"lat": 3, "acc": 0.8}])
    planner = DeadlinePlanner().fit(frame)
    first = planner.select("sst2", 5.0)
    assert first.expected_accuracy == 0.8
    second = planner.fallback("sst2", 5.0, {first.config_id})
    assert second.reason is ReasonCode.FALLBACK and second.expected_accuracy == 0.7
    # remaining budget too small for anything left: the fastest remaining, flagged with its miss
    third = planner.fallback("sst2", 0.5, {first.config_id})
    assert third.reason is ReasonCode.FALLBACK_NO_FEASIBLE and third.expected_latency_ms == 1.0
    assert third.expected_miss_ms == pytest.approx(0.5)
    with pytest.raises(NoConfigurationLeftError):
        planner.fallback("sst2", 5.0, set(frame["config_id"]))
    with pytest.raises(PlannerError, match="not configurations of task"):
        planner.fallback("sst2", 5.0, {"sst2/nope/torch/fp32/b1/cpu"})
    with pytest.raises(PlannerError, match="single string"):
        planner.fallback("sst2", 5.0, first.config_id)


def test_workload_batch_choice_steady_prefers_larger_batch_bursty_smaller():
    # one variant at three batch sizes (same accuracy), plus a faster, less accurate model
    frame = make_profiles([
        {"lat": 2.0, "acc": 0.85, "batch": 1, "model": "big", "thr": 600.0},
        {"lat": 4.0, "acc": 0.85, "batch": 4, "model": "big", "thr": 1100.0},
        {"lat": 7.0, "acc": 0.85, "batch": 8, "model": "big", "thr": 1300.0},
        {"lat": 0.5, "acc": 0.70, "batch": 1, "model": "small", "thr": 2400.0},
    ])
    planner = DeadlinePlanner().fit(frame)
    batch = dict(zip(frame["config_id"], frame["batch_size"]))
    assert batch[planner.select("sst2", 10.0, "steady").config_id] == 8
    assert batch[planner.select("sst2", 5.0, "steady").config_id] == 4  # b8 no longer fits
    assert batch[planner.select("sst2", 2.5, "steady").config_id] == 1
    for deadline in (2.5, 5.0, 10.0):
        assert batch[planner.select("sst2", deadline, "bursty").config_id] == 1
        assert batch[planner.select("sst2", deadline).config_id] == 1  # None: lowest latency
        assert planner.select("sst2", deadline, "steady").expected_accuracy == 0.85
    # the faster model is never traded for throughput: accuracy comes first
    assert planner.select("sst2", 1.0, "steady").expected_accuracy == 0.70


def test_accuracy_tolerance_groups_noisy_batch_accuracies():
    frame = make_profiles([
        {"lat": 2.0, "acc": 0.851, "batch": 1, "model": "big", "thr": 600.0},
        {"lat": 7.0, "acc": 0.849, "batch": 8, "model": "big", "thr": 1300.0},
    ])
    exact = DeadlinePlanner().fit(frame)
    loose = DeadlinePlanner(accuracy_tolerance=0.005).fit(frame)
    assert exact.select("sst2", 10.0, "steady").expected_accuracy == 0.851
    assert loose.select("sst2", 10.0, "steady").expected_accuracy == 0.849
    assert loose.select("sst2", 10.0).expected_accuracy == 0.851  # tolerance never applies to None


def test_unavailable_accuracy_never_chosen_unless_nothing_else():
    frame = make_profiles([{"lat": 0.5, "acc": None}, {"lat": 3.0, "acc": None}, {"lat": 2.0, "acc": 0.7}])
    planner = DeadlinePlanner().fit(frame)
    for deadline in (0.6, 2.5, 10.0):
        assert planner.select("sst2", deadline).expected_accuracy == 0.7
    assert planner.select("sst2", 0.6).reason is ReasonCode.NO_FEASIBLE
    only = make_profiles([{"lat": 0.5, "acc": None}, {"lat": 3.0, "acc": None}])
    decision = DeadlinePlanner().fit(only).select("sst2", 1.0)
    assert decision.reason is ReasonCode.ACCURACY_UNAVAILABLE and decision.expected_latency_ms == 0.5
    late = DeadlinePlanner().fit(only).select("sst2", 0.2)
    assert late.reason is ReasonCode.ACCURACY_UNAVAILABLE and late.expected_miss_ms == pytest.approx(0.3)


def test_ties_go_to_lower_latency_and_deadline_boundary_is_inclusive():
    frame = make_profiles([{"lat": 3.0, "acc": 0.8}, {"lat": 2.0, "acc": 0.8}, {"lat": 1.0, "acc": 0.6}])
    planner = DeadlinePlanner().fit(frame)
    assert planner.select("sst2", 5.0).expected_latency_ms == 2.0
    assert planner.select("sst2", 2.0).expected_accuracy == 0.8  # latency == deadline is on time
    assert planner.select("sst2", np.nextafter(2.0, 0)).expected_accuracy == 0.6


def test_near_ties_still_go_to_the_more_accurate_config():
    frame = make_profiles([{"lat": 1.0, "acc": 0.7}, {"lat": 2.0, "acc": 0.7 + 1e-9}, {"lat": 0.5, "acc": 0.6}])
    planner = DeadlinePlanner().fit(frame)
    assert planner.select("sst2", 3.0).expected_latency_ms == 2.0
    assert planner.select("sst2", 3.0, "bursty").expected_latency_ms == 2.0  # tolerance 0: exact levels
    assert planner.select("sst2", 1.5).expected_latency_ms == 1.0


def test_percentile_selects_the_latency_column():
    frame = make_profiles([{"lat": 5.0, "p50": 1.0, "p99": 9.0, "acc": 0.9}, {"lat": 2.0, "acc": 0.6}])
    assert DeadlinePlanner(percentile=50).fit(frame).select("sst2", 3.0).expected_accuracy == 0.9
    assert DeadlinePlanner(percentile=95).fit(frame).select("sst2", 3.0).expected_accuracy == 0.6
    assert DeadlinePlanner(percentile=99).fit(frame).select("sst2", 6.0).expected_accuracy == 0.6
    with pytest.raises(PlannerError, match="percentile"):
        DeadlinePlanner(percentile=90)


def test_none_table_is_the_pareto_frontier():
    profiles, _ = synthetic_profiles(120, seed=3)
    planner = DeadlinePlanner().fit(profiles)
    table = planner.decision_table("sst2")
    front = pareto_front(profiles)
    assert table["expected_latency_ms"].tolist() == front["lat_p95_ms"].tolist()
    assert table["expected_accuracy"].is_monotonic_increasing and table["expected_accuracy"].is_unique
    assert table["config_id"].tolist() == front["config_id"].tolist()


def test_multiple_tasks_are_independent():
    a = make_profiles([{"lat": 1.0, "acc": 0.6}, {"lat": 4.0, "acc": 0.9}], task="sst2")
    b = make_profiles([{"lat": 0.2, "acc": 0.5}, {"lat": 0.8, "acc": 0.7}], task="cifar10")
    planner = DeadlinePlanner().fit(pd.concat([a, b], ignore_index=True))
    assert planner.select("sst2", 5.0).config_id.startswith("sst2/")
    assert planner.select("cifar10", 5.0).expected_accuracy == 0.7


def test_decision_is_frozen_and_prebuilt():
    frame = make_profiles([{"lat": 1.0, "acc": 0.6}])
    planner = DeadlinePlanner().fit(frame)
    d = planner.select("sst2", 2.0)
    assert isinstance(d, Decision) and d is planner.select("sst2", 3.0)
    with pytest.raises(AttributeError):
        d.config_id = "x"  # type: ignore[misc]


NON_POSITIVE = [0, -1.0, np.int64(0)]  # not a deadline, but a (spent) budget for fallback
NOT_A_NUMBER_OF_MS = [float("nan"), float("inf"), -float("inf"), None, "abc", "5", True, False, np.bool_(True),
                      np.array([5.0]), np.array(5.0), [5.0], np.float64("nan"), 1 + 0j]


@pytest.mark.parametrize("deadline", NON_POSITIVE + NOT_A_NUMBER_OF_MS, ids=repr)
def test_bad_deadlines_raise(deadline):
    planner = DeadlinePlanner().fit(make_profiles([{"lat": 1.0, "acc": 0.6}]))
    with pytest.raises(InvalidDeadlineError, match="deadline"):
        planner.select("sst2", deadline)
    with pytest.raises(InvalidDeadlineError):
        select_config(make_profiles([{"lat": 1.0, "acc": 0.6}]), "sst2", deadline)


@pytest.mark.parametrize("budget", NOT_A_NUMBER_OF_MS, ids=repr)
def test_fallback_refuses_a_budget_that_is_not_a_finite_number(budget):
    planner = DeadlinePlanner().fit(make_profiles([{"lat": 1.0, "acc": 0.6}]))
    with pytest.raises(InvalidDeadlineError, match="deadline_ms must be a"):
        planner.fallback("sst2", budget, set())


def test_invalid_deadline_is_also_the_schema_deadline_error():
    """One ``except DeadlineError`` catches a bad deadline from the config, the trace or the planner."""
    planner = DeadlinePlanner().fit(make_profiles([{"lat": 1.0, "acc": 0.6}]))
    with pytest.raises(DeadlineError, match="got True"):
        planner.select("sst2", True)
    assert issubclass(InvalidDeadlineError, PlannerError) and issubclass(InvalidDeadlineError, DeadlineError)


@pytest.mark.parametrize("deadline", [2.5, 2, np.float64(2.5), np.int64(2), np.float32(2.5), np.int32(2)],
                         ids=repr)
def test_numpy_and_python_numbers_are_the_same_deadline(deadline):
    planner = DeadlinePlanner().fit(make_profiles([{"lat": 1.0, "acc": 0.6}, {"lat": 2.0, "acc": 0.8},
                                                   {"lat": 3.0, "acc": 0.9}]))
    assert planner.select("sst2", deadline) == planner.select("sst2", float(deadline))
    assert planner.select("sst2", deadline).expected_accuracy == 0.8
    assert planner.select("sst2", deadline, "bursty") == planner.select("sst2", float(deadline), "bursty")


@pytest.mark.parametrize("budget", [0, 0.0, -0.5, -40, np.float64(-2.0)], ids=repr)
def test_fallback_after_the_deadline_passed_answers_with_the_fastest(budget):
    """A crash found after the budget is spent still needs an answer: the fastest measured one left."""
    frame = make_profiles([{"lat": 0.2, "acc": None}, {"lat": 1.0, "acc": 0.6}, {"lat": 2.0, "acc": 0.7},
                           {"lat": 3.0, "acc": 0.8}])
    planner = DeadlinePlanner().fit(frame)
    first = planner.select("sst2", 5.0)
    for workload in (None, "steady", "bursty"):
        decision = planner.fallback("sst2", budget, {first.config_id}, workload)
        assert decision.reason is ReasonCode.FALLBACK_NO_FEASIBLE
        assert decision.expected_latency_ms == 1.0 and decision.expected_accuracy == 0.6
        assert decision.expected_miss_ms == pytest.approx(1.0 - float(budget))
    # with no measured configuration left, the fastest unmeasured one, still with its miss
    measured = set(frame.loc[frame["accuracy_source"] == "measured", "config_id"])
    last = planner.fallback("sst2", budget, measured)
    assert last.reason is ReasonCode.ACCURACY_UNAVAILABLE
    assert last.expected_miss_ms == pytest.approx(0.2 - float(budget))


@pytest.mark.parametrize("failed", [None, 3, 2.5, [["a"]], object()], ids=["none", "int", "float", "nested-list", "object"])
def test_fallback_names_a_bad_failed_argument(failed):
    planner = DeadlinePlanner().fit(make_profiles([{"lat": 1.0, "acc": 0.6}, {"lat": 2.0, "acc": 0.7}]))
    with pytest.raises(PlannerError, match="failed must be a collection of config ids"):
        planner.fallback("sst2", 5.0, failed)


def test_fallback_names_unknown_failed_ids_of_any_type():
    planner = DeadlinePlanner().fit(make_profiles([{"lat": 1.0, "acc": 0.6}, {"lat": 2.0, "acc": 0.7}]))
    with pytest.raises(PlannerError, match="not configurations of task 'sst2'"):
        planner.fallback("sst2", 5.0, {"sst2/nope/torch/fp32/b1/cpu", 7, None})


def test_other_bad_inputs_raise_clear_errors():
    frame = make_profiles([{"lat": 1.0, "acc": 0.6}])
    planner = DeadlinePlanner().fit(frame)
    with pytest.raises(UnknownTaskError, match="cifar10"):
        planner.select("cifar10", 5.0)
    with pytest.raises(UnknownTaskError):
        select_config(frame, "cifar10", 5.0)
    with pytest.raises(PlannerError, match="workload"):
        planner.select("sst2", 5.0, "sometimes")
    with pytest.raises(NotFittedError):
        DeadlinePlanner().select("sst2", 5.0)
    with pytest.raises(SchemaError, match="no rows"):
        DeadlinePlanner().fit(frame.iloc[0:0])
    bad = frame.copy()
    bad.loc[0, "lat_p95_ms"] = np.nan
    with pytest.raises(SchemaError, match="lat_p95_ms"):
        DeadlinePlanner().fit(bad)
    bad = frame.copy()
    bad.loc[0, "throughput_items_s"] = 0.0
    with pytest.raises(SchemaError, match="throughput"):  # the profiles schema refuses it before the planner
        DeadlinePlanner().fit(bad)
    with pytest.raises(PlannerError, match="accuracy_tolerance"):
        DeadlinePlanner(accuracy_tolerance=-0.1)
