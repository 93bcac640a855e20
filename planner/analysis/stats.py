"""Statistics for the evaluation: t-based confidence intervals, paired tests, effect sizes, Holm.

Every function returns plain floats or tidy DataFrames. Degenerate inputs are handled explicitly
rather than leaking NaN: fewer than 2 values (no spread, no CI) raise a ``ValueError`` naming the
group; NaN values raise unless ``nan_policy="omit"``; when every paired difference is zero the
tests report ``t = 0, p = 1, W = 0, p_wilcoxon = 1`` and the effect sizes are 0; when the
differences are a nonzero constant (up to floating-point rounding of ``x - y``) the t statistic
and d_z are ±inf with ``p_t = 0`` (no spread, so as significant as data can be).

Note: with n pairs the smallest two-sided exact Wilcoxon p-value is 2 / 2**n (0.0625 for n = 5),
so with 5 seeds the signed-rank test can never reach p < 0.05 on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

from planner.config import protocol

__all__ = [
    "COHEN_BANDS", "mean_ci", "describe", "paired_statistics", "paired_comparison", "paired_comparisons", "holm",
    "cohen_magnitude", "mcnemar_exact",
]

NanPolicy = Literal["raise", "omit"]

# Cohen (1988) conventions for |d|: below 0.2 negligible, then small, medium (0.5), large (0.8).
COHEN_BANDS: tuple[tuple[float, str], ...] = ((0.2, "negligible"), (0.5, "small"), (0.8, "medium"), (math.inf, "large"))


def _values(values: Sequence[float] | np.ndarray | pd.Series, nan_policy: NanPolicy, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    if np.isinf(arr).any():
        raise ValueError(f"{what}: infinite values")
    nan = np.isnan(arr)
    if nan.any():
        if nan_policy == "raise":
            raise ValueError(f"{what}: {int(nan.sum())} NaN value(s); clean them or pass nan_policy='omit'")
        arr = arr[~nan]
    return arr


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return float(confidence)


def _t_interval(mean: float, sd: float, n: int, confidence: float) -> tuple[float, float]:
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def mean_ci(values: Sequence[float] | np.ndarray | pd.Series, confidence: float = 0.95,
            nan_policy: NanPolicy = "raise") -> pd.Series:
    """Mean, sample SD (ddof=1), n and the two-sided t-based CI ``mean ± t_{n-1} sd / sqrt(n)``.

    Needs at least 2 values (one value has no spread, so no interval).
    """
    confidence = _check_confidence(confidence)
    arr = _values(values, nan_policy, "mean_ci")
    n = arr.size
    if n < 2:
        raise ValueError(f"mean_ci needs at least 2 values for a confidence interval, got {n}")
    if np.ptp(arr) == 0.0:  # identical values: exact mean, no spread (avoid 1e-16 rounding noise)
        mean, sd = float(arr[0]), 0.0
    else:
        mean, sd = float(arr.mean()), float(arr.std(ddof=1))
    low, high = _t_interval(mean, sd, n, confidence)
    return pd.Series({"mean": mean, "sd": sd, "n": n, "ci_low": low, "ci_high": high})


def describe(frame: pd.DataFrame, by: list[str], metrics: list[str], confidence: float = 0.95,
             nan_policy: NanPolicy = "raise") -> pd.DataFrame:
    """Tidy summary: one row per group and metric, columns ``[*by, metric, mean, sd, n, ci_low, ci_high]``."""
    missing = [c for c in [*by, *metrics] if c not in frame.columns]
    if missing:
        raise ValueError(f"describe: frame has no column(s) {missing}")
    if not metrics:
        raise ValueError("describe: no metrics given")
    if frame.empty:
        raise ValueError("describe: frame is empty")
    rows = []
    groups = frame.groupby(by, sort=True, dropna=False) if by else [((), frame)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            label = f"describe[{dict(zip(by, key))}, metric={metric!r}]"
            try:
                summary = mean_ci(group[metric], confidence, nan_policy)
            except ValueError as exc:
                raise ValueError(f"{label}: {exc}") from None
            rows.append({**dict(zip(by, key)), "metric": metric, **summary.to_dict()})
    out = pd.DataFrame(rows, columns=[*by, "metric", "mean", "sd", "n", "ci_low", "ci_high"])
    return out.astype({"n": "int64"})


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending, ``p_adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; reject where
    ``p_adj < alpha``. Controls the family-wise error rate with no independence assumption.
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    if p.size == 0:
        return p.copy()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm: p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def cohen_magnitude(d: float) -> str:
    """Cohen's band for an effect size: negligible / small / medium / large (by ``|d|``)."""
    if math.isnan(d):
        raise ValueError("cohen_magnitude: effect size is NaN")
    for upper, name in COHEN_BANDS:
        if abs(d) < upper:
            return name
    return COHEN_BANDS[-1][1]


def _ratio(num: float, den: float) -> float:
    """num / den with the degenerate cases made explicit: 0/0 -> 0, x/0 -> ±inf."""
    if den > 0:
        return num / den
    if num == 0:
        return 0.0
    return math.copysign(math.inf, num)


def paired_statistics(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Tests and effect sizes for paired samples x (method) and y (baseline), at least 2 pairs.

    ``n, mean_diff, sd_diff, ci_low, ci_high`` (t interval of the mean of ``x - y``), paired t
    (``t, p_t``), Wilcoxon signed-rank (``w, p_wilcoxon``; zero differences dropped, exact when scipy
    can), ``d_z``, ``d_pooled`` and ``magnitude``, with the degenerate cases of the module docstring.
    One implementation, so every comparison table in the book computes its tests the same way.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_statistics: {x.size} values against {y.size}; pairs need equal lengths")
    if x.size < 2:
        raise ValueError(f"paired_statistics: {x.size} pair(s); need at least 2")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired_statistics: NaN or infinite values")
    confidence = _check_confidence(confidence)
    diff = x - y
    n = diff.size
    mean_diff = float(diff.mean())
    sd_diff = float(diff.std(ddof=1))
    # differences that vary only by floating-point rounding of x - y are constant
    scale = max(float(np.abs(x).max()), float(np.abs(y).max()))
    if np.ptp(diff) <= 16 * np.finfo(float).eps * scale:
        sd_diff = 0.0
    low, high = _t_interval(mean_diff, sd_diff, n, confidence)
    if sd_diff == 0.0:  # constant differences: scipy would divide by zero
        t_stat = _ratio(mean_diff, 0.0)
        p_t = 1.0 if mean_diff == 0.0 else 0.0
    else:
        res = sps.ttest_rel(x, y)
        t_stat, p_t = float(res.statistic), float(res.pvalue)
    if np.all(diff == 0.0):  # signed-rank test has no non-zero differences to rank
        w, p_w = 0.0, 1.0
    else:
        res = sps.wilcoxon(x, y)
        w, p_w = float(res.statistic), float(res.pvalue)
    pooled_sd = math.sqrt((float(x.var(ddof=1)) + float(y.var(ddof=1))) / 2.0)
    d_z = _ratio(mean_diff, sd_diff)
    return {
        "n": n, "mean_diff": mean_diff, "sd_diff": sd_diff, "ci_low": low, "ci_high": high,
        "t": t_stat, "p_t": p_t, "w": w, "p_wilcoxon": p_w,
        "d_z": d_z, "d_pooled": _ratio(mean_diff, pooled_sd), "magnitude": cohen_magnitude(d_z),
    }


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test of two classifiers scored on the same examples.

    Why: two variants of one model (fp32 and int8) agree on most examples, so their accuracies are
    paired; only the discordant examples carry evidence. ``a_only`` (a right, b wrong) and ``b_only``
    count them; under "same accuracy" each discordant example is a fair coin, so ``p`` is the two-sided
    binomial test of ``a_only`` out of ``a_only + b_only`` (1 when there is none).
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"mcnemar_exact: {a.size} examples against {b.size}; pairs need equal lengths")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(sps.binomtest(a_only, n, 0.5).pvalue)
    return {"n": int(a.size), "a_only": a_only, "b_only": b_only, "p": p}


Test = Literal["paired_t", "wilcoxon"]
COMPARISON_COLUMNS = ["metric", "method", "baseline", "n", "mean_diff", "sd_diff", "ci_low", "ci_high", "t", "p_t",
                      "w", "p_wilcoxon", "d_z", "d_pooled", "magnitude", "p_holm", "significant"]


def _check_alpha_test(alpha: float | None, test: str) -> float:
    if alpha is None:
        alpha = protocol().alpha
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if test not in ("paired_t", "wilcoxon"):
        raise ValueError(f"test must be 'paired_t' or 'wilcoxon', got {test!r}")
    return float(alpha)


def _adjust(out: pd.DataFrame, alpha: float, test: Test) -> pd.DataFrame:
    """Holm over every row of ``out`` (one family) and the reject decision at ``alpha``."""
    family = out["p_t" if test == "paired_t" else "p_wilcoxon"].to_numpy(dtype=float)
    out["p_holm"] = holm(family)
    out["significant"] = out["p_holm"] < alpha
    return out


def paired_comparison(frame: pd.DataFrame, metric: str, baseline: str, method_col: str = "method",
                      pair_col: str | list[str] = "seed", confidence: float = 0.95,
                      alpha: float | None = None, test: Test = "paired_t") -> pd.DataFrame:
    """Each method against ``baseline`` on ``metric``, paired by ``pair_col`` (e.g. the seed).

    One row per method: ``mean_diff`` (method - baseline) with its t CI, paired t (``t``, ``p_t``),
    Wilcoxon signed-rank (``w``, ``p_wilcoxon``), ``d_z`` (mean diff / SD of diffs),
    ``d_pooled`` (mean diff / pooled SD of the two samples), ``magnitude`` (Cohen band of d_z),
    and ``p_holm`` / ``significant``: the ``test``'s p-values Holm-adjusted across the family of
    methods, compared with ``alpha`` (default: the protocol's alpha from configs/).
    """
    confidence = _check_confidence(confidence)
    alpha = _check_alpha_test(alpha, test)
    pairs = [pair_col] if isinstance(pair_col, str) else list(pair_col)
    missing = [c for c in [metric, method_col, *pairs] if c not in frame.columns]
    if missing:
        raise ValueError(f"paired_comparison: frame has no column(s) {missing}")
    dup = frame.duplicated([method_col, *pairs])
    if dup.any():
        example = frame.loc[dup, [method_col, *pairs]].iloc[0].to_dict()
        raise ValueError(f"paired_comparison: several rows per ({method_col}, {pairs}), e.g. {example}; "
                         "filter or aggregate first, or pair on more columns")
    if frame[metric].isna().any():
        raise ValueError(f"paired_comparison: metric {metric!r} has NaN values")
    methods = list(dict.fromkeys(frame[method_col].tolist()))
    if baseline not in methods:
        raise ValueError(f"paired_comparison: baseline {baseline!r} not among methods {methods}")
    wide = frame.pivot(index=pairs, columns=method_col, values=metric)
    rows = []
    for method in methods:
        if method == baseline:
            continue
        both = wide[[method, baseline]]
        unpaired = both.index[both.isna().any(axis=1)].tolist()
        if unpaired:
            raise ValueError(f"paired_comparison: {method!r} and {baseline!r} are not both present for "
                             f"{pairs}={unpaired[:5]}")
        n = len(both)
        if n < 2:
            raise ValueError(f"paired_comparison: {method!r} vs {baseline!r} has {n} pair(s); need at least 2")
        x = both[method].to_numpy(dtype=float)
        y = both[baseline].to_numpy(dtype=float)
        rows.append({"metric": metric, "method": method, "baseline": baseline, **paired_statistics(x, y, confidence)})
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS[:-2])
    return _adjust(out, alpha, test)[COMPARISON_COLUMNS]


def paired_comparisons(frame: pd.DataFrame, metric: str, baseline: str, groups: Sequence[str],
                       pair_col: str | list[str] = "seed", method_col: str = "method", confidence: float = 0.95,
                       alpha: float | None = None, test: Test = "paired_t") -> pd.DataFrame:
    """:func:`paired_comparison` within each group (e.g. ``["task", "load"]``), Holm-corrected once over all.

    The family is every comparison in the returned table (all groups x methods): ``p_holm`` and
    ``significant`` are the ``test``'s p-values Holm-adjusted across that whole family, not within a
    group, so a report that reads the table as one set of claims keeps its family-wise error rate.
    Returns the group columns followed by :func:`paired_comparison`'s columns, one row per (group,
    method), groups sorted. A group whose only method is ``baseline`` adds no rows; an empty
    ``frame`` gives an empty table. Errors inside a group name the group.
    """
    confidence = _check_confidence(confidence)
    alpha = _check_alpha_test(alpha, test)
    groups = [groups] if isinstance(groups, str) else list(groups)
    if not groups:
        raise ValueError("paired_comparisons: no group columns given; use paired_comparison for one family")
    missing = [c for c in groups if c not in frame.columns]
    if missing:
        raise ValueError(f"paired_comparisons: frame has no group column(s) {missing}")
    pairs = [pair_col] if isinstance(pair_col, str) else list(pair_col)
    clash = [c for c in groups if c in COMPARISON_COLUMNS or c == method_col or c in pairs]
    if clash:
        raise ValueError(f"paired_comparisons: group column(s) {clash} clash with the method, pair or output columns")
    parts = []
    for key, part in frame.groupby(groups, sort=True, dropna=False):
        label = dict(zip(groups, key))
        try:
            cmp = paired_comparison(part, metric, baseline, method_col=method_col, pair_col=pair_col,
                                    confidence=confidence, alpha=alpha, test=test)
        except ValueError as exc:
            raise ValueError(f"paired_comparisons[{label}]: {exc}") from None
        if len(cmp):
            parts.append(cmp.assign(**label))
    columns = [*groups, *COMPARISON_COLUMNS]
    if not parts:
        return pd.DataFrame(columns=columns).astype(frame[groups].dtypes.to_dict())
    out = pd.concat(parts, ignore_index=True).astype(frame[groups].dtypes.to_dict())
    return _adjust(out, alpha, test)[columns]
