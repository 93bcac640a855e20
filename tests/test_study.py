"""The study's one family of comparisons (planner.analysis.study) on synthetic runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner.analysis import study
from planner.analysis.stats import holm

SEEDS = list(range(42, 52))  # 10 seeds, as in the full preset
DEADLINES = [5.0, 20.0]


def _runs(scores: dict[str, object], cells=(("sst2", "steady", 0.8),), seeds=SEEDS, deadlines=DEADLINES,
          seed: int = 0) -> pd.DataFrame:
    """One row per (cell, method, deadline, seed); ``scores[method](base, deadline, seed) -> value``.

    ``base`` is a per-trace level shared by every method of the trace (common random numbers).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for task, workload, load in cells:
        for d in deadlines:
            for s in seeds:
                base = rng.uniform(0.4, 0.6)
                for method, score in scores.items():
                    rows.append({"task": task, "workload": workload, "load": load, "method": method,
                                 "deadline_ms": d, "seed": s, "effective_accuracy": score(base, d, s)})
    return pd.DataFrame(rows)


def _noisy(shift: float, sd: float, seed: int):
    rng = np.random.default_rng(seed)
    return lambda base, d, s: base + shift + rng.normal(0.0, sd)


def test_holm_runs_across_the_whole_family():
    # cell A: a modest effect; cell B (another workload) is irrelevant to A: no effect at all
    a = _runs({"anytime": _noisy(0.01, 0.02, 1), "seed_p95": lambda b, d, s: b}, seed=3)
    b = _runs({"anytime": _noisy(0.0, 0.02, 2), "seed_p95": lambda b, d, s: b},
              cells=(("sst2", "bursty-cv8", 0.8),), seed=4)
    alone = study.study_family(a, alpha=0.05)
    both = study.study_family(pd.concat([a, b], ignore_index=True), alpha=0.05)
    assert len(alone) == 1 and len(both) == 2
    row_a = both.set_index("workload").loc["steady"]
    p_a, p_b = alone["p_t"].iloc[0], both.set_index("workload").loc["bursty-cv8", "p_t"]
    assert row_a["p_t"] == pytest.approx(p_a)  # the raw test of A does not depend on B
    assert alone["p_holm"].iloc[0] == pytest.approx(p_a)  # a family of one: no correction
    assert p_a < p_b  # A is the smaller p-value, so Holm multiplies it by the family size, 2
    assert row_a["p_holm"] == pytest.approx(min(1.0, 2 * p_a))
    assert both["p_holm_t"].tolist() == pytest.approx(holm(both["p_t"]).tolist())
    assert both["p_holm_wilcoxon"].tolist() == pytest.approx(holm(both["p_wilcoxon"]).tolist())


def test_family_spans_tasks_workloads_loads_and_every_non_bound_opponent():
    cells = [(t, w, load) for t in ("sst2", "cifar10") for w in ("steady", "bursty-cv2") for load in (0.5, 1.3)]
    scores = {"anytime": _noisy(0.05, 0.01, 5), "seed_p95": lambda b, d, s: b, "infaas": lambda b, d, s: b + 0.01,
              "slack_aware": lambda b, d, s: b + 0.02, "best_fixed_hindsight": lambda b, d, s: b - 0.01,
              "clairvoyant": lambda b, d, s: 1.0}
    family = study.study_family(_runs(scores, cells=cells), alpha=0.05)
    # 8 cells x 4 opponents (the bound is not an opponent), in registry order within a cell
    assert len(family) == 32
    assert set(family["opponent"]) == {"seed_p95", "infaas", "slack_aware", "best_fixed_hindsight"}
    assert set(family["role"]) == {"baseline", "ablation", "hindsight"}
    assert family[["n_seeds", "n_traces"]].drop_duplicates().values.tolist() == [[10, 20]]
    # the adjusted p-values are one Holm over all 32 rows
    assert family["p_holm"].tolist() == pytest.approx(holm(family["p_t"]).tolist())
    assert (family["outcome"] == "win").all()


def test_effects_are_per_seed_differences_in_points_and_ratios_to_the_bound():
    runs = _runs({"anytime": _noisy(0.03, 0.01, 6), "infaas": lambda b, d, s: b, "clairvoyant": lambda b, d, s: 0.8})
    row = study.study_family(runs, alpha=0.05).iloc[0]
    wide = runs.pivot_table(index=["seed", "deadline_ms"], columns="method", values="effective_accuracy")
    per_seed = (wide["anytime"] - wide["infaas"]).groupby(level="seed").mean()
    assert row["diff_pts"] == pytest.approx(100 * per_seed.mean())
    assert row["ci_low_pts"] < row["diff_pts"] < row["ci_high_pts"]
    assert row["proposed_of_bound"] == pytest.approx(wide["anytime"].mean() / 0.8)
    assert row["opponent_of_bound"] == pytest.approx(wide["infaas"].mean() / 0.8)
    no_bound = study.study_family(runs[runs["method"] != "clairvoyant"], alpha=0.05).iloc[0]
    assert np.isnan(no_bound["proposed_of_bound"]) and no_bound["diff_pts"] == pytest.approx(row["diff_pts"])


def test_win_share_counts_ties_as_half():
    # at deadline 5 the proposed method ties on every seed; at deadline 20 it wins on seeds 42-48, loses on 49-51
    def proposed(base, d, s):
        return base if d == 5.0 else base + (0.1 if s < 49 else -0.1)

    row = study.study_family(_runs({"anytime": proposed, "seed_p95": lambda b, d, s: b}), alpha=0.05).iloc[0]
    assert (row["wins"], row["ties"], row["losses"]) == (7, 10, 3)
    assert row["win_share"] == pytest.approx((7 + 0.5 * 10) / 20)
    # a tolerance turns near-equal traces into ties
    near = _runs({"anytime": lambda b, d, s: b + 1e-4, "seed_p95": lambda b, d, s: b})
    assert study.study_family(near, alpha=0.05, tie_tol=1e-3)["win_share"].iloc[0] == 0.5
    assert study.study_family(near, alpha=0.05)["win_share"].iloc[0] == 1.0


def test_ten_seeds_and_a_constant_shift_let_wilcoxon_reject():
    runs = _runs({"anytime": lambda b, d, s: b + 0.02 + 0.001 * (s % 3), "seed_p95": lambda b, d, s: b})
    row = study.study_family(runs, test="wilcoxon", alpha=0.05).iloc[0]
    assert row["p_wilcoxon"] == pytest.approx(2 / 2**10)  # every seed positive: the exact test's floor
    assert row["significant"] and row["outcome"] == "win"
    assert row["p_holm"] == row["p_holm_wilcoxon"]


def test_wilcoxon_alone_cannot_reject_a_large_family_with_ten_seeds():
    # 30 comparisons, each a clear win on every seed: the rank test's floor 2/2**10 times 30 exceeds alpha,
    # which is why the paired t over seeds is the primary test
    cells = [("sst2", f"w{i}", 0.8) for i in range(30)]
    runs = _runs({"anytime": _noisy(0.05, 0.01, 7), "seed_p95": lambda b, d, s: b}, cells=cells)
    family = study.study_family(runs, alpha=0.05)
    assert (family["p_holm_wilcoxon"] >= min(1.0, 30 * 2 / 2**10) - 1e-12).all()
    assert not study.study_family(runs, test="wilcoxon", alpha=0.05)["significant"].any()
    assert family["significant"].all()


def test_clear_errors_for_a_missing_proposed_method_or_pairing():
    good = _runs({"anytime": _noisy(0.01, 0.01, 8), "seed_p95": lambda b, d, s: b},
                 cells=(("sst2", "steady", 0.8), ("sst2", "bursty-cv2", 0.8)))
    with pytest.raises(ValueError, match="no runs of the proposed method 'anytime'"):
        study.study_family(good[good["method"] != "anytime"])
    one_cell = good[~((good["method"] == "anytime") & (good["workload"] == "bursty-cv2"))]
    with pytest.raises(ValueError, match=r"'workload': 'bursty-cv2'.*no runs of the proposed method"):
        study.study_family(one_cell)
    lost_seed = good[~((good["method"] == "seed_p95") & (good["seed"] == 47) & (good["deadline_ms"] == 20.0))]
    with pytest.raises(ValueError, match=r"'seed_p95' cannot be paired with 'anytime'.*\(20\.0, 47\)"):
        study.study_family(lost_seed)
    no_opponent = good[~((good["method"] == "seed_p95") & (good["workload"] == "steady"))]
    with pytest.raises(ValueError, match=r"'steady'.*opponent\(s\) \['seed_p95'\] have no runs"):
        study.study_family(no_opponent)
    with pytest.raises(ValueError, match="unknown method 'mystery'"):
        study.study_family(good.replace({"method": {"seed_p95": "mystery"}}))
    with pytest.raises(ValueError, match="several runs per trace"):
        study.study_family(pd.concat([good, good.iloc[:1]]))
    with pytest.raises(ValueError, match="need at least 2"):
        study.study_family(good[good["seed"] == 42])
    with pytest.raises(ValueError, match="no column"):
        study.study_family(good.drop(columns="seed"))


def test_closest_opponent_and_tally():
    scores = {"anytime": _noisy(0.05, 0.002, 9), "seed_p95": lambda b, d, s: b, "infaas": lambda b, d, s: b + 0.04,
              "static_small": lambda b, d, s: b + 0.08}
    family = study.study_family(_runs(scores, cells=(("sst2", "steady", 0.8), ("cifar10", "steady", 0.8))), alpha=0.05)
    closest = study.closest_opponents(family)
    assert len(closest) == 2 and (closest["opponent"] == "static_small").all()  # the one that beats it
    tally = study.opponent_tally(family).set_index("opponent")
    assert list(tally.index) == ["seed_p95", "infaas", "static_small"]  # registry order
    assert tally.loc["static_small", ["comparisons", "wins", "losses", "not_significant"]].tolist() == [2, 0, 2, 0]
    assert tally.loc["seed_p95", "wins"] == 2 and tally["comparisons"].sum() == len(family)
