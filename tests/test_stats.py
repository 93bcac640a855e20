"""Statistics: agreement with scipy and hand-computed values, explicit degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from planner.analysis.stats import (cohen_magnitude, describe, holm, mcnemar_exact, mean_ci, paired_comparison,
                                    paired_comparisons)


def test_mean_ci_hand_computed():
    s = mean_ci([1, 2, 3, 4, 5])
    # mean 3, sd sqrt(2.5) = 1.5811388, t_{0.975, 4} = 2.7764451 -> half-width 1.9632432
    assert s["mean"] == 3.0 and s["n"] == 5
    assert s["sd"] == pytest.approx(1.5811388300841898)
    assert s["ci_low"] == pytest.approx(1.0367568, abs=1e-6)
    assert s["ci_high"] == pytest.approx(4.9632432, abs=1e-6)
    assert list(s.index) == ["mean", "sd", "n", "ci_low", "ci_high"]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=30), confidence=st.sampled_from([0.9, 0.95, 0.99]))
def test_mean_ci_matches_scipy_interval(values, confidence):
    arr = np.asarray(values)
    s = mean_ci(arr, confidence)
    if arr.std(ddof=1) == 0:
        assert s["ci_low"] == s["ci_high"] == s["mean"]
        return
    low, high = sps.t.interval(confidence, len(arr) - 1, loc=arr.mean(), scale=sps.sem(arr))
    assert s["ci_low"] == pytest.approx(low, rel=1e-9, abs=1e-9)
    assert s["ci_high"] == pytest.approx(high, rel=1e-9, abs=1e-9)


def test_mean_ci_degenerate_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([1.0])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, np.nan, 2.0])
    assert mean_ci([1.0, np.nan, 3.0], nan_policy="omit")["n"] == 2
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)
    constant = mean_ci([0.7, 0.7, 0.7])
    assert (constant["sd"], constant["ci_low"], constant["ci_high"]) == (0.0, 0.7, 0.7)


def test_describe_is_tidy():
    frame = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "deadline": [5, 5, 5, 10, 10, 10],
                          "hit_rate": [0.9, 0.8, 1.0, 0.5, 0.6, 0.7], "accuracy": [0.7, 0.7, 0.7, 0.8, 0.9, 1.0]})
    out = describe(frame, ["method"], ["hit_rate", "accuracy"])
    assert list(out.columns) == ["method", "metric", "mean", "sd", "n", "ci_low", "ci_high"]
    assert len(out) == 4 and not out.isna().any().any()
    row = out[(out["method"] == "b") & (out["metric"] == "accuracy")].iloc[0]
    assert row["mean"] == pytest.approx(0.9) and row["n"] == 3
    assert describe(frame, [], ["hit_rate"])["n"].tolist() == [6]
    with pytest.raises(ValueError, match="method.*'a'.*at least 2"):
        describe(frame.iloc[[0, 3, 4]], ["method"], ["hit_rate"])
    with pytest.raises(ValueError, match="no column"):
        describe(frame, ["seed"], ["hit_rate"])


def _runs(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "seed": 40 + i, "effective_accuracy": v}
                         for m, vs in values.items() for i, v in enumerate(vs)])


def test_paired_comparison_matches_scipy_and_hand_values():
    base = [0.61, 0.64, 0.58, 0.66, 0.60]
    a = [0.70, 0.71, 0.69, 0.74, 0.66]
    b = [0.60, 0.66, 0.57, 0.67, 0.62]
    out = paired_comparison(_runs({"base": base, "a": a, "b": b}), "effective_accuracy", "base", alpha=0.05)
    assert out["method"].tolist() == ["a", "b"]
    for method, x in (("a", a), ("b", b)):
        row = out.set_index("method").loc[method]
        diff = np.subtract(x, base)
        t = sps.ttest_rel(x, base)
        w = sps.wilcoxon(x, base)
        assert row["t"] == pytest.approx(t.statistic) and row["p_t"] == pytest.approx(t.pvalue)
        assert row["w"] == pytest.approx(w.statistic) and row["p_wilcoxon"] == pytest.approx(w.pvalue)
        assert row["mean_diff"] == pytest.approx(diff.mean())
        assert row["d_z"] == pytest.approx(diff.mean() / diff.std(ddof=1))
        pooled = math.sqrt((np.var(x, ddof=1) + np.var(base, ddof=1)) / 2)
        assert row["d_pooled"] == pytest.approx(diff.mean() / pooled)
    # hand-computed for a: diffs 0.09, 0.07, 0.11, 0.08, 0.06 -> mean 0.082, sd 0.0192354
    row = out.set_index("method").loc["a"]
    assert row["mean_diff"] == pytest.approx(0.082)
    assert row["d_z"] == pytest.approx(0.082 / 0.019235384061671, rel=1e-9)
    assert row["magnitude"] == "large"
    assert row["p_holm"] == pytest.approx(min(1.0, 2 * min(out["p_t"])))
    assert list(out.columns)[-2:] == ["p_holm", "significant"]


def test_paired_comparison_all_zero_and_constant_differences():
    base = [0.5, 0.6, 0.7]
    out = paired_comparison(_runs({"base": base, "same": base, "shift": [v + 0.25 for v in base]}),
                            "effective_accuracy", "base", alpha=0.05).set_index("method")
    same = out.loc["same"]
    assert (same["t"], same["p_t"], same["w"], same["p_wilcoxon"], same["d_z"], same["d_pooled"]) == (0, 1, 0, 1, 0, 0)
    assert same["magnitude"] == "negligible" and not same["significant"]
    shift = out.loc["shift"]
    assert shift["mean_diff"] == pytest.approx(0.25)
    assert not out[["t", "p_t", "p_wilcoxon", "d_z", "p_holm"]].isna().any().any()
    # constant differences (up to float rounding of x - y): no spread, infinitely strong evidence
    assert (shift["t"], shift["p_t"], shift["d_z"], shift["magnitude"]) == (math.inf, 0.0, math.inf, "large")


def test_paired_comparison_rejects_bad_frames():
    good = _runs({"base": [0.5, 0.6], "a": [0.6, 0.7]})
    with pytest.raises(ValueError, match="baseline"):
        paired_comparison(good, "effective_accuracy", "nobody", alpha=0.05)
    with pytest.raises(ValueError, match="not both present"):
        paired_comparison(good.iloc[:3], "effective_accuracy", "base", alpha=0.05)
    with pytest.raises(ValueError, match="several rows"):
        paired_comparison(pd.concat([good, good]), "effective_accuracy", "base", alpha=0.05)
    with pytest.raises(ValueError, match="at least 2"):
        paired_comparison(_runs({"base": [0.5], "a": [0.6]}), "effective_accuracy", "base", alpha=0.05)
    bad = good.copy()
    bad.loc[0, "effective_accuracy"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        paired_comparison(bad, "effective_accuracy", "base", alpha=0.05)


def test_paired_comparison_default_alpha_comes_from_protocol():
    from planner.config import protocol

    frame = _runs({"base": [0.5, 0.6, 0.55], "a": [0.6, 0.72, 0.64]})
    out = paired_comparison(frame, "effective_accuracy", "base")
    assert bool(out["significant"].iloc[0]) == bool(out["p_holm"].iloc[0] < protocol().alpha)


def test_paired_comparison_pairs_on_several_columns():
    rows = [{"method": m, "seed": s, "deadline": d, "x": v + (0.1 if m == "a" else 0.0) + 0.01 * s * d}
            for m in ("base", "a") for s in (1, 2, 3) for d, v in ((5, 0.5), (10, 0.7))]
    out = paired_comparison(pd.DataFrame(rows), "x", "base", pair_col=["seed", "deadline"], alpha=0.05)
    assert out["n"].iloc[0] == 6 and out["mean_diff"].iloc[0] == pytest.approx(0.1)


def _grouped_runs() -> pd.DataFrame:
    """Three (task, load) cells; each cell's method beats the baseline with p_t about 0.022, 0.022, 0.063."""
    base = [0.60, 0.62, 0.58, 0.65, 0.61]
    better = {("sst2", 0.5): [0.62, 0.64, 0.58, 0.68, 0.64], ("sst2", 0.9): [0.62, 0.64, 0.58, 0.68, 0.64],
              ("cifar10", 0.5): [0.63, 0.62, 0.60, 0.70, 0.62]}
    return pd.concat([_runs({"base": base, "a": a}).assign(task=t, load=load) for (t, load), a in better.items()],
                     ignore_index=True)


def test_paired_comparisons_holm_across_the_family():
    frame = _grouped_runs()
    out = paired_comparisons(frame, "effective_accuracy", "base", groups=["task", "load"], alpha=0.05)
    assert list(out.columns[:3]) == ["task", "load", "metric"]
    assert list(zip(out["task"], out["load"])) == [("cifar10", 0.5), ("sst2", 0.5), ("sst2", 0.9)]
    assert out["load"].dtype == frame["load"].dtype
    # the family is every row: Holm on the concatenated p-values, not within each cell
    assert out["p_holm"].tolist() == pytest.approx(holm(out["p_t"]).tolist())
    assert out["significant"].tolist() == (out["p_holm"] < 0.05).tolist()
    per_group = pd.concat([paired_comparison(part, "effective_accuracy", "base", alpha=0.05)
                           for _, part in frame.groupby(["task", "load"])], ignore_index=True)
    # one comparison per cell: per-cell Holm corrects nothing, so two cells pass at 0.05 ...
    assert per_group["p_holm"].tolist() == pytest.approx(per_group["p_t"].tolist())
    assert per_group["significant"].sum() == 2
    # ... while over the family of three, 3 x 0.022 > 0.05 and none does
    assert out["p_t"].tolist() == pytest.approx(per_group["p_t"].tolist())
    assert not out["significant"].any()
    assert out["p_holm"].min() == pytest.approx(3 * out["p_t"].min())


def test_paired_comparisons_family_spans_methods_and_wilcoxon():
    frame = pd.concat([_grouped_runs(), _runs({"b": [0.61, 0.62, 0.59, 0.66, 0.63]}).assign(task="sst2", load=0.5)],
                      ignore_index=True)
    out = paired_comparisons(frame, "effective_accuracy", "base", groups=["task", "load"], alpha=0.05,
                             test="wilcoxon")
    assert len(out) == 4 and sorted(out["method"]) == ["a", "a", "a", "b"]
    assert out["p_holm"].tolist() == pytest.approx(holm(out["p_wilcoxon"]).tolist())
    # a cell with only the baseline adds no rows; no rows at all gives an empty table with the columns
    only_base = frame[~((frame["task"] == "cifar10") & (frame["method"] == "a"))]
    assert len(paired_comparisons(only_base, "effective_accuracy", "base", groups=["task", "load"], alpha=0.05)) == 3
    empty = paired_comparisons(frame.iloc[:0], "effective_accuracy", "base", groups=["task", "load"], alpha=0.05)
    assert empty.empty and list(empty.columns[:2]) == ["task", "load"] and "p_holm" in empty.columns


def test_paired_comparisons_rejects_bad_groups():
    frame = _grouped_runs()
    with pytest.raises(ValueError, match="no group column"):
        paired_comparisons(frame, "effective_accuracy", "base", groups=["workload"], alpha=0.05)
    with pytest.raises(ValueError, match="no group columns given"):
        paired_comparisons(frame, "effective_accuracy", "base", groups=[], alpha=0.05)
    with pytest.raises(ValueError, match="clash"):
        paired_comparisons(frame, "effective_accuracy", "base", groups=["seed"], alpha=0.05)
    # an error inside one cell names the cell
    broken = frame[~((frame["task"] == "cifar10") & (frame["method"] == "base"))]
    with pytest.raises(ValueError, match=r"'task': 'cifar10'.*baseline 'base' not among"):
        paired_comparisons(broken, "effective_accuracy", "base", groups=["task", "load"], alpha=0.05)


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, max(0.06, 1*0.04)=0.06
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])
    assert holm([]).size == 0
    with pytest.raises(ValueError):
        holm([0.1, np.nan])


@settings(max_examples=100, deadline=None)
@given(p=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_properties(p):
    adj = holm(p)
    assert (adj >= np.asarray(p) - 1e-15).all() and (adj <= 1.0).all()
    order = np.argsort(p, kind="stable")
    assert (np.diff(adj[order]) >= -1e-15).all()  # monotone in the p-value order
    assert adj.min() == pytest.approx(min(1.0, len(p) * min(p)))


@pytest.mark.parametrize("d,band", [(0.0, "negligible"), (0.19, "negligible"), (0.2, "small"), (-0.49, "small"),
                                    (0.5, "medium"), (0.79, "medium"), (0.8, "large"), (-3.0, "large"),
                                    (math.inf, "large")])
def test_cohen_bands(d, band):
    assert cohen_magnitude(d) == band


def test_mcnemar_exact_tests_only_the_discordant_examples():
    # 8 examples only a gets right, none only b: two-sided p = 2 * 0.5**8
    a = np.array([True] * 8 + [True] * 50 + [False] * 10)
    b = np.array([False] * 8 + [True] * 50 + [False] * 10)
    out = mcnemar_exact(a, b)
    assert (out["n"], out["a_only"], out["b_only"]) == (68, 8, 0)
    assert out["p"] == pytest.approx(2 * 0.5 ** 8)
    # adding agreeing examples changes nothing; swapping the roles mirrors the counts, same p
    more = mcnemar_exact(np.r_[a, [True] * 100], np.r_[b, [True] * 100])
    assert more["p"] == pytest.approx(out["p"])
    swapped = mcnemar_exact(b, a)
    assert (swapped["a_only"], swapped["b_only"], swapped["p"]) == (0, 8, pytest.approx(out["p"]))
    assert mcnemar_exact(a, a)["p"] == 1.0
    assert mcnemar_exact(np.r_[a, False], np.r_[b, True])["p"] == pytest.approx(
        sps.binomtest(8, 9, 0.5).pvalue)
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar_exact(a, b[:-1])
