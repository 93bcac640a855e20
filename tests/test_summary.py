"""Seed summaries, per-deadline points and the hypervolume/coverage table the statistics chapter shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner.analysis.summary import deadline_points, hypervolume_reference, hypervolume_table, per_seed_means


def _runs() -> pd.DataFrame:
    rows = [  # method, seed, deadline_ms, effective_accuracy, hit_rate
        ("a", 1, 10.0, 0.5, 0.9), ("a", 1, 20.0, 0.7, 1.0),
        ("a", 2, 10.0, 0.4, 0.8), ("a", 2, 20.0, np.nan, 0.6),
        ("b", 1, 10.0, 0.9, 0.5), ("b", 1, 20.0, 0.8, 0.7),
    ]
    frame = pd.DataFrame(rows, columns=["method", "seed", "deadline_ms", "effective_accuracy", "hit_rate"])
    return frame.assign(task="sst2")


def test_per_seed_means_hand_computed():
    out = per_seed_means(_runs(), "effective_accuracy")
    assert list(out.columns) == ["task", "method", "seed", "effective_accuracy"]
    assert list(zip(out["method"], out["seed"])) == [("a", 1), ("a", 2), ("b", 1)]
    # a/1: (0.5 + 0.7) / 2; a/2: the NaN run (nothing served) is skipped, leaving 0.4; b/1: (0.9 + 0.8) / 2
    assert out["effective_accuracy"].tolist() == pytest.approx([0.6, 0.4, 0.85])
    both = per_seed_means(_runs(), ["effective_accuracy", "hit_rate"], by=["method"])
    assert list(both.columns) == ["method", "seed", "effective_accuracy", "hit_rate"]
    assert both["hit_rate"].tolist() == pytest.approx([0.95, 0.7, 0.6])
    with pytest.raises(ValueError, match="no column"):
        per_seed_means(_runs(), "lat_p95_ms")
    with pytest.raises(ValueError, match="no column"):
        per_seed_means(_runs(), "hit_rate", by=["task", "load"])


def test_deadline_points_average_over_seeds_and_drop_unplaced_runs():
    runs = _runs().assign(load=0.5, lat_p95_ms=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    points = deadline_points(runs)
    assert list(points.columns) == ["task", "load", "method", "deadline_ms", "lat_p95_ms", "effective_accuracy"]
    a = points[points["method"] == "a"].set_index("deadline_ms")
    # deadline 10: seeds 1 and 2 average to (2.0, 0.45); deadline 20: seed 2 has no accuracy, so seed 1 alone
    assert a.loc[10.0, ["lat_p95_ms", "effective_accuracy"]].tolist() == pytest.approx([2.0, 0.45])
    assert a.loc[20.0, ["lat_p95_ms", "effective_accuracy"]].tolist() == pytest.approx([2.0, 0.7])
    with pytest.raises(ValueError, match="no column"):
        deadline_points(runs.drop(columns="load"))


def _points() -> pd.DataFrame:
    rows = [
        # panel (sst2, 0.5): planner front (1, .6), (2, .8), (4, .9); x front (1.5, .5), (4, .7)
        ("sst2", 0.5, "planner", 1.0, 0.6), ("sst2", 0.5, "planner", 2.0, 0.8), ("sst2", 0.5, "planner", 4.0, 0.9),
        ("sst2", 0.5, "x", 1.5, 0.5), ("sst2", 0.5, "x", 4.0, 0.7),
        # panel (sst2, 0.9): x is faster at the same accuracy
        ("sst2", 0.9, "planner", 2.0, 0.5), ("sst2", 0.9, "x", 1.0, 0.5),
        # panel (cifar10, 0.5): the planner's only point has accuracy 0, so it dominates no area
        ("cifar10", 0.5, "planner", 1.0, 0.0), ("cifar10", 0.5, "x", 1.0, 0.5),
    ]
    return pd.DataFrame(rows, columns=["task", "load", "method", "lat_p95_ms", "effective_accuracy"])


def test_hypervolume_table_hand_computed():
    table = hypervolume_table(_points(), baseline="planner", margin=0.25)
    assert list(table.columns) == ["task", "load", "method", "ref_latency_ms", "hypervolume", "planner_covers_method",
                                   "method_covers_planner", "hv_relative_to_planner"]
    rows = table.set_index(["task", "load", "method"])
    # one reference per panel, shared by both methods: max latency of any method x 1.25, accuracy 0
    assert rows.loc[("sst2", 0.5), "ref_latency_ms"].tolist() == [5.0, 5.0]
    assert rows.loc[("sst2", 0.9), "ref_latency_ms"].tolist() == [2.5, 2.5]
    # (2-1)0.6 + (4-2)0.8 + (5-4)0.9 = 3.1 and (4-1.5)0.5 + (5-4)0.7 = 1.95
    p, x = rows.loc[("sst2", 0.5, "planner")], rows.loc[("sst2", 0.5, "x")]
    assert (p["hypervolume"], x["hypervolume"]) == pytest.approx((3.1, 1.95))
    assert (p["hv_relative_to_planner"], x["hv_relative_to_planner"]) == pytest.approx((1.0, 1.95 / 3.1))
    # the planner's (1, .6) and (2, .8) cover both of x's points; no point of x covers one of the planner's
    assert (x["planner_covers_method"], x["method_covers_planner"]) == (1.0, 0.0)
    p, x = rows.loc[("sst2", 0.9, "planner")], rows.loc[("sst2", 0.9, "x")]
    assert (p["hypervolume"], x["hypervolume"]) == pytest.approx((0.5 * 0.5, 1.5 * 0.5))
    assert x["hv_relative_to_planner"] == pytest.approx(3.0)
    assert (x["planner_covers_method"], x["method_covers_planner"]) == (0.0, 1.0)
    # a baseline with no area has no relative hypervolume
    assert rows.loc[("cifar10", 0.5), "hv_relative_to_planner"].isna().all()
    assert list(zip(table["task"], table["load"])) == [("cifar10", 0.5)] * 2 + [("sst2", 0.5)] * 2 + [("sst2", 0.9)] * 2


def test_hypervolume_table_names_columns_after_the_baseline_and_rejects_bad_points():
    table = hypervolume_table(_points(), baseline="x", margin=0.25)
    assert {"x_covers_method", "method_covers_x", "hv_relative_to_x"} <= set(table.columns)
    with pytest.raises(ValueError, match=r"'task': 'sst2'.*baseline 'y'"):
        hypervolume_table(_points()[lambda f: f["task"] == "sst2"], baseline="y")
    bad = _points()
    bad.loc[0, "effective_accuracy"] = np.nan
    with pytest.raises(ValueError, match="finite"):
        hypervolume_table(bad, baseline="planner")
    with pytest.raises(ValueError, match="no column"):
        hypervolume_table(_points().drop(columns="load"), baseline="planner")
    with pytest.raises(ValueError, match="no points"):
        hypervolume_table(_points().iloc[:0], baseline="planner")


def test_hypervolume_reference_rule():
    assert hypervolume_reference(pd.Series([1.0, 4.0, 2.0])) == pytest.approx((4.2, 0.0))
    assert hypervolume_reference([1.0, np.nan, 2.0], margin=0.5) == pytest.approx((3.0, 0.0))
    for values in ([], [np.nan], [np.inf, -np.inf]):
        with pytest.raises(ValueError, match="no finite latency"):
            hypervolume_reference(values)
    for margin in (0.0, -0.1, np.nan):
        with pytest.raises(ValueError, match="margin"):
            hypervolume_reference([1.0], margin=margin)


def test_describe_available_skips_rows_without_the_metric():
    from planner.analysis.summary import describe_available

    frame = pd.DataFrame({"method": ["a", "a", "bound", "bound"], "seed": [1, 2, 1, 2],
                          "hit_rate": [0.5, 0.7, np.nan, np.nan], "effective_accuracy": [0.4, 0.6, 0.9, 0.9]})
    out = describe_available(frame, ["method"], ["hit_rate", "effective_accuracy"])
    assert set(zip(out["method"], out["metric"])) == {("a", "hit_rate"), ("a", "effective_accuracy"),
                                                      ("bound", "effective_accuracy")}
    assert out.loc[(out["method"] == "a") & (out["metric"] == "hit_rate"), "mean"].item() == pytest.approx(0.6)


def test_class_outcomes_split_a_mixed_trace_by_deadline_class():
    from planner.analysis.summary import class_outcomes
    requests = pd.DataFrame({
        "method": ["a"] * 6,
        "deadline_ms": [5.0, 5.0, 30.0, 30.0, 30.0, 5.0],
        "status": ["served", "shed", "served", "late", "served", "degraded"],
        "hit": [True, False, True, False, True, True],
        "correct": [True, False, False, True, True, True],
    })
    out = class_outcomes(requests, 10.0, {"tight": 0.5, "relaxed": 3.0}).set_index("deadline_class")
    assert list(out.index) == ["tight", "relaxed"]  # in deadline order
    assert out.loc["tight", "requests"] == 3 and out.loc["relaxed", "requests"] == 3
    assert out.loc["tight", "effective_accuracy"] == pytest.approx(2 / 3)
    assert out.loc["tight", "shed_share"] == pytest.approx(1 / 3) and out.loc["tight", "degraded_share"] == pytest.approx(1 / 3)
    assert out.loc["relaxed", "late_share"] == pytest.approx(1 / 3)
    assert out.loc["relaxed", "effective_accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="match no class"):
        class_outcomes(requests.assign(deadline_ms=7.0), 10.0, {"tight": 0.5, "relaxed": 3.0})


def test_summarize_runs_does_not_depend_on_the_order_runs_arrive_in():
    """A resume reads runs in file order, a parallel run gets them in completion order: the same runs
    must give the same summary to the last digit, or a resume rewrites committed summaries."""
    from planner.analysis.summary import summarize_runs

    values = [0.2997, 0.4227, 0.0283, 0.1243, 0.6706, 0.6472]  # their sum differs in the last bit by order
    runs = pd.DataFrame({"task": "sst2", "workload": "steady", "load": 0.5, "deadline_ms": 10.0, "method": "a",
                         "seed": range(len(values)), "effective_accuracy": values})
    forward = summarize_runs(runs, ["effective_accuracy"])
    for order in ([5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]):
        again = summarize_runs(runs.iloc[order], ["effective_accuracy"])
        pd.testing.assert_frame_equal(again, forward, check_exact=True)
