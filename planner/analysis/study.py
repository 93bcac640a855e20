"""The study's one family of comparisons: the proposed method against every other online method and the
hindsight reference, in every (task, workload, load) cell of the evaluation, tested once and
Holm-corrected once.

Why this design (the statistics chapter says it to readers too):

* **Pairing unit: the seed.** Within a seed every method serves the same arrivals and draws the same
  service times (common random numbers), so differences are paired. Deadlines are fixed levels of
  the design, not replications: traces of one seed at different deadlines share their random stream,
  so they are not independent. A method's score for a seed is its mean over the deadline sweep; with
  the full preset's 10 seeds each comparison has 10 pairs.
* **Tests.** Paired t on the 10 per-seed differences and the two-sided Wilcoxon signed-rank test.
  Any test that only permutes the signs of 10 pairs cannot give a p-value below 2 / 2**10 = 0.00195,
  so under Holm over m comparisons it can reject only if m × 0.00195 < alpha (m < 26 at alpha 0.05).
  The family here is far larger, so the primary test is the paired t (its per-seed means average
  thousands of requests, so their differences are close to normal); the Wilcoxon p-values, Holm-adjusted
  over the same family, are kept to show what a rank test alone can and cannot say.
* **One family.** Holm runs over every row at once (all tasks x workloads x loads x opponents), so
  the book's claims together keep the family-wise error rate at alpha; no chapter builds its own.
* **Effect sizes that mean something across traces.** The mean difference in points of effective
  accuracy (with a t interval over seeds); the share of individual traces (deadline x seed) on which
  the proposed method beats the opponent (probability of superiority, ties counted half); and each
  method's score as a fraction of the clairvoyant bound on the same traces. ``d_z`` is kept only as a
  column: its denominator is the SD of per-seed means, each an average over 9 deadlines x 2,000
  requests, so it measures how repeatable the simulator is, and grows without limit as traces lengthen,
  not how large or how general an advantage is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from planner.analysis.stats import holm, paired_statistics
from planner.config import protocol
from planner.plan import registry

__all__ = ["CELL", "FAMILY_COLUMNS", "study_family", "closest_opponents", "opponent_tally"]

# the pre-registered family (configs/experimental_protocol.yaml, `family`): cells and opponents' roles
CELL = list(protocol().family.cells)
TRACE = ["deadline_ms", "seed"]
Test = Literal["paired_t", "wilcoxon"]
# roles that are compared with the proposed method (everything except itself and the upper bounds)
OPPONENT_ROLES = tuple(protocol().family.opponent_roles)
FAMILY_COLUMNS = [
    *CELL, "opponent", "role", "n_seeds", "n_traces", "proposed_mean", "opponent_mean",
    "diff_pts", "ci_low_pts", "ci_high_pts", "win_share", "wins", "ties", "losses",
    "proposed_of_bound", "opponent_of_bound", "t", "p_t", "w", "p_wilcoxon", "d_z",
    "p_holm_t", "p_holm_wilcoxon", "p_holm", "significant", "outcome",
]


def _cell_label(key: tuple) -> dict:
    return dict(zip(CELL, key))


def _check_runs(runs: pd.DataFrame, metric: str, proposed: str) -> list[str]:
    """Validate the frame; return the opponents present, in registry order."""
    missing = [c for c in [*CELL, "method", *TRACE, metric] if c not in runs.columns]
    if missing:
        raise ValueError(f"study_family: runs have no column(s) {missing}")
    if runs.empty:
        raise ValueError("study_family: runs are empty")
    present = list(dict.fromkeys(runs["method"].tolist()))
    for name in present:
        registry.method(name)  # an unknown method is an error, not a silent opponent
    if proposed not in present:
        raise ValueError(f"study_family: no runs of the proposed method {proposed!r}; methods in the runs: {present}")
    dup = runs.duplicated([*CELL, "method", *TRACE])
    if dup.any():
        example = runs.loc[dup, [*CELL, "method", *TRACE]].iloc[0].to_dict()
        raise ValueError(f"study_family: several runs per trace and method, e.g. {example}")
    if runs[metric].isna().any():
        bad = runs.loc[runs[metric].isna(), [*CELL, "method", *TRACE]].iloc[0].to_dict()
        raise ValueError(f"study_family: {metric!r} is NaN, e.g. in {bad}")
    opponents = [m for m in registry.order(present) if registry.method(m).role in OPPONENT_ROLES]
    if not opponents:
        raise ValueError(f"study_family: nothing to compare {proposed!r} with; methods in the runs: {present} "
                         f"(opponents have a registry role in {OPPONENT_ROLES})")
    return opponents


def _traces(part: pd.DataFrame, method: str, metric: str) -> pd.Series:
    """One method's metric in one cell, indexed by (deadline_ms, seed)."""
    return part.loc[part["method"] == method].set_index(TRACE)[metric].sort_index()


def _paired(proposed: pd.Series, other: pd.Series, name: str, proposed_name: str, label: dict) -> None:
    """Raise unless ``other`` covers exactly the traces of ``proposed``."""
    lacks = proposed.index.difference(other.index).tolist()
    extra = other.index.difference(proposed.index).tolist()
    if lacks or extra:
        raise ValueError(f"study_family[{label}]: {name!r} cannot be paired with {proposed_name!r}: it lacks the "
                         f"(deadline_ms, seed) traces {lacks[:5]} and has {extra[:5]} that {proposed_name!r} lacks; "
                         "each seed must hold the same deadlines for both")


def _row(label: dict, proposed: pd.Series, other: pd.Series, bound: pd.Series | None, name: str,
         confidence: float, tie_tol: float) -> dict:
    x = proposed.groupby(level="seed").mean()
    y = other.groupby(level="seed").mean().reindex(x.index)
    if len(x) < 2:
        raise ValueError(f"study_family[{label}]: {len(x)} seed(s); paired tests over seeds need at least 2")
    tests = paired_statistics(x.to_numpy(), y.to_numpy(), confidence)
    diff = proposed.to_numpy() - other.to_numpy()
    wins, losses = int((diff > tie_tol).sum()), int((diff < -tie_tol).sum())
    ties = diff.size - wins - losses
    bound_mean = float(bound.mean()) if bound is not None else np.nan
    of_bound = (lambda v: v / bound_mean) if bound_mean > 0 else (lambda v: np.nan)
    return {
        **label, "opponent": name, "role": registry.method(name).role, "n_seeds": len(x), "n_traces": diff.size,
        "proposed_mean": float(proposed.mean()), "opponent_mean": float(other.mean()),
        "diff_pts": 100 * tests["mean_diff"], "ci_low_pts": 100 * tests["ci_low"], "ci_high_pts": 100 * tests["ci_high"],
        "win_share": (wins + 0.5 * ties) / diff.size, "wins": wins, "ties": ties, "losses": losses,
        "proposed_of_bound": of_bound(float(proposed.mean())), "opponent_of_bound": of_bound(float(other.mean())),
        "t": tests["t"], "p_t": tests["p_t"], "w": tests["w"], "p_wilcoxon": tests["p_wilcoxon"], "d_z": tests["d_z"],
    }


def study_family(runs: pd.DataFrame, metric: str | None = None, proposed: str | None = None,
                 test: Test | None = None, alpha: float | None = None, confidence: float | None = None,
                 tie_tol: float = 0.0) -> pd.DataFrame:
    """The proposed method against every opponent in every (task, workload, load) cell, Holm over all rows.

    ``runs``: evaluation runs (``results.load_runs``), one row per (task, workload, load, method,
    deadline_ms, seed) with ``metric``. ``proposed`` defaults to the registry's proposed method; the
    opponents are the methods in ``runs`` whose registry role is baseline, ablation or hindsight (bounds
    are not opponents: a bound present in a cell gives the ``*_of_bound`` ratios, else they are NaN).
    Every opponent must be in every cell and cover the proposed method's (deadline, seed) traces exactly.

    One row per (cell, opponent), sign ``proposed - opponent``: per-seed means over deadlines
    (``proposed_mean``/``opponent_mean`` are over all traces), ``diff_pts`` and its t interval in points,
    the per-trace ``wins/ties/losses`` (``|diff| <= tie_tol`` is a tie) and ``win_share`` (ties count
    half), paired t and Wilcoxon over seeds, ``d_z`` (not a headline; see the module docstring),
    both tests' p-values Holm-adjusted across the whole family (``p_holm_t``, ``p_holm_wilcoxon``),
    ``p_holm`` of ``test`` (the primary test), ``significant`` (``p_holm < alpha``) and ``outcome``
    (``win``, ``loss`` or ``n.s.``). ``metric``, ``test`` (the primary one), ``alpha`` and ``confidence``
    default to configs/experimental_protocol.yaml, whose ``family`` also fixes the cells and the
    opponents' roles: the family is pre-registered there, not chosen per call.
    """
    proposed = proposed or registry.proposed()
    family_spec = protocol().family
    metric = family_spec.metric if metric is None else metric
    test = family_spec.primary_test if test is None else test
    if test not in ("paired_t", "wilcoxon"):
        raise ValueError(f"study_family: test must be 'paired_t' or 'wilcoxon', got {test!r}")
    alpha = protocol().alpha if alpha is None else float(alpha)
    confidence = protocol().confidence if confidence is None else float(confidence)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"study_family: alpha must lie in (0, 1), got {alpha!r}")
    if not tie_tol >= 0.0:
        raise ValueError(f"study_family: tie_tol must be >= 0, got {tie_tol!r}")
    opponents = _check_runs(runs, metric, proposed)
    bounds = registry.with_role("bound")
    rows = []
    for key, part in runs.groupby(CELL, sort=True):
        label = _cell_label(key)
        methods = set(part["method"])
        if proposed not in methods:
            raise ValueError(f"study_family[{label}]: no runs of the proposed method {proposed!r}; methods in this "
                             f"cell: {registry.order(methods)}")
        absent = [m for m in opponents if m not in methods]
        if absent:
            raise ValueError(f"study_family[{label}]: opponent(s) {absent} have no runs in this cell; the family "
                             "is the same opponents in every cell")
        mine = _traces(part, proposed, metric)
        bound_name = next((b for b in bounds if b in methods), None)
        bound = None
        if bound_name is not None:
            bound = _traces(part, bound_name, metric)
            _paired(mine, bound, bound_name, proposed, label)
        for name in opponents:
            other = _traces(part, name, metric)
            _paired(mine, other, name, proposed, label)
            rows.append(_row(label, mine, other, bound, name, confidence, tie_tol))
    family = pd.DataFrame(rows)
    family["p_holm_t"] = holm(family["p_t"].to_numpy())
    family["p_holm_wilcoxon"] = holm(family["p_wilcoxon"].to_numpy())
    family["p_holm"] = family["p_holm_t" if test == "paired_t" else "p_holm_wilcoxon"]
    family["significant"] = family["p_holm"] < alpha
    family["outcome"] = np.where(~family["significant"], "n.s.", np.where(family["diff_pts"] > 0, "win", "loss"))
    return family[FAMILY_COLUMNS]


def closest_opponents(family: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the family row of the opponent with the smallest margin (``diff_pts``): the tightest race."""
    missing = [c for c in [*CELL, "diff_pts"] if c not in family.columns]
    if missing:
        raise ValueError(f"closest_opponents: family has no column(s) {missing}")
    index = family.groupby(CELL, sort=True)["diff_pts"].idxmin()
    return family.loc[index.to_numpy()].reset_index(drop=True)


def opponent_tally(family: pd.DataFrame, by: Sequence[str] = ("opponent",)) -> pd.DataFrame:
    """Per opponent (or ``by``): comparisons, significant wins and losses of the proposed method, the rest,
    and the smallest and median margin in points. Rows in registry order of the opponent."""
    by = list(by)
    missing = [c for c in [*by, "outcome", "diff_pts"] if c not in family.columns]
    if missing:
        raise ValueError(f"opponent_tally: family has no column(s) {missing}")
    tally = family.groupby(by, sort=False).agg(
        comparisons=("outcome", "size"), wins=("outcome", lambda s: int((s == "win").sum())),
        losses=("outcome", lambda s: int((s == "loss").sum())), not_significant=("outcome", lambda s: int((s == "n.s.").sum())),
        min_diff_pts=("diff_pts", "min"), median_diff_pts=("diff_pts", "median"),
    ).reset_index()
    if "opponent" in by:  # registry order, so the table reads like the legends
        rank = {m: i for i, m in enumerate(registry.order(tally["opponent"]))}
        tally = tally.iloc[np.argsort(tally["opponent"].map(rank).to_numpy(), kind="stable")]
    return tally.reset_index(drop=True)
