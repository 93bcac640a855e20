"""The chance bounds beside the clairvoyant one: the book's shares, the deadlines where it is lower,
what routing by correctness is credited with, the check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundles import toy_bundle
from planner.analysis.bounds import (chance_cells, chance_shares, chance_text, limited_margin_text, limited_margins,
                                     no_queue_text, work_cells, work_text)
from planner.splits import example_ids

TASK = "sst2"


@pytest.fixture
def bundle():
    """Half the draws take 1 ms, half 3 ms, every example right: the chance bound is 0.5 at 2 ms, 1 at 5 ms."""
    return toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[1.0, 3.0], correct=np.ones(200, bool))])


@pytest.fixture
def routed():
    """Two configurations right on complementary halves of the scored examples, draws as above: routing
    by correctness reaches 0.5 at 2 ms and 1 at 5 ms, the best configuration on average half that."""
    def bundle(halves: np.ndarray):
        return toy_bundle(TASK, [dict(model=name, batch_size=1, samples_ms=[1.0, 3.0], correct=right)
                                 for name, right in (("left", halves), ("right", ~halves))])
    scored = example_ids(bundle(np.ones(200, bool)), TASK)  # the split does not depend on the outcomes
    halves = np.isin(np.arange(200), scored[: len(scored) // 2])
    return bundle(halves)


def _runs(anytime_at_2ms: float = 0.4, anytime: tuple[float, float] | None = None,
          workloads: tuple[str, ...] = ("steady",), **others) -> pd.DataFrame:
    values = {"anytime": anytime or (anytime_at_2ms, 0.9), "seed_p95": (0.3, 0.8), "clairvoyant": (0.9, 1.0),
              "best_fixed_hindsight": (0.45, 0.95), **others}
    rows = [dict(task=TASK, workload=workload, load=0.5, deadline_ms=deadline, seed=seed, method=method,
                 effective_accuracy=value[i], dispatch_overhead_ms=0.0)
            for workload in workloads for method, value in values.items()
            for i, deadline in enumerate((2.0, 5.0)) for seed in (0, 1)]
    return pd.DataFrame(rows)


def test_the_lower_bound_per_deadline_and_the_shares_averaged_as_the_scorecard_does(bundle):
    cells = chance_cells(_runs(), bundle, TASK)
    by = cells.set_index("deadline_ms")
    assert by.loc[2.0, "chance"] == pytest.approx(0.5) and by.loc[5.0, "chance"] == pytest.approx(1.0)
    assert list(by["tighter"]) == pytest.approx([0.5, 1.0])
    assert list(by["best_other_online"]) == pytest.approx([0.3, 0.8])  # the hindsight method is not online
    text = chance_text(cells, TASK)
    # per cell over deadlines: anytime 0.65 of the clairvoyant 0.95 and of the lower bound 0.75
    assert "share of the clairvoyant bound is 0.684 and of the lower of the two bounds 0.867" in text
    assert "lower by more than 0.005 at 2 ms (0.500 against 0.900" in text
    assert "lowers the bound by 0.000 on average" in text  # one configuration: nothing to route
    assert "No online method's mean exceeds the example-blind bound" in text and "the closest is 0.100 below it" in text


def test_the_example_blind_bound_says_how_little_routing_by_correctness_adds(routed):
    runs = _runs(anytime=(0.2, 0.45)).assign(effective_accuracy=lambda r: np.where(
        r["method"] == "seed_p95", r["effective_accuracy"] / 2, r["effective_accuracy"]))
    cells = chance_cells(runs, routed, TASK)
    by = cells.set_index("deadline_ms")
    assert list(by["chance"]) == pytest.approx([0.5, 1.0]) and list(by["blind"]) == pytest.approx([0.25, 0.5])
    assert list(by["lowest"]) == pytest.approx([0.25, 0.5])
    shares = chance_shares(cells)
    # held to 1 % late: at 2 ms half the draws overrun, so at most 2 % of requests are served (0.005)
    assert list(by["late_limited"]) == pytest.approx([0.005, 0.5])
    assert tuple(shares) == pytest.approx((0.325 / 0.95, 0.325 / 0.75, 0.325 / 0.375, 0.325 / 0.2525, 1))
    text = chance_text(cells, TASK)
    # the bound drops by 0.375 of a 0.425 distance (0.75 - 0.325)
    assert "lower of that and the clairvoyant bound is 0.867" in text
    assert "lowers the bound by 0.375 on average over the cells (0.375 at most in one): 88% of" in text
    assert "No online method's mean exceeds the example-blind bound" in text and "the closest is 0.050 below it" in text
    assert "lower at 2 ms (0.005 against 0.250)" in text and "exceeds the late-limited bound by up to 0.195" in text


def test_the_late_limited_bound_is_held_to_the_proposed_method_s_own_late_share_where_higher(routed):
    runs = _runs(anytime=(0.02, 0.45)).assign(late_rate=lambda r: np.where(
        (r["method"] == "anytime") & (r["deadline_ms"] == 2.0), 0.05, 0.0))
    by = chance_cells(runs, routed, TASK).set_index("deadline_ms")
    assert list(by["late_share"]) == pytest.approx([0.05, 0.01])
    assert list(by["late_limited"]) == pytest.approx([0.025, 0.5])  # 10 % served at 2 ms, half of them late
    text = chance_text(chance_cells(runs, routed, TASK), TASK)
    assert "where that bound is above 0, its mean is at least 0.005 below it" in text


def test_a_mean_above_the_chance_bound_is_said(bundle):
    text = chance_text(chance_cells(_runs(anytime_at_2ms=0.6), bundle, TASK), TASK)
    assert "exceeds the example-blind bound by up to 0.100" in text


def test_runs_without_a_recorded_overhead_are_bounded_as_if_it_were_zero(bundle):
    cells = chance_cells(_runs().drop(columns="dispatch_overhead_ms"), bundle, TASK)
    assert list(cells.set_index("deadline_ms")["chance"]) == pytest.approx([0.5, 1.0])
    slower = chance_cells(_runs().assign(dispatch_overhead_ms=2.5), bundle, TASK)
    assert list(slower.set_index("deadline_ms")["chance"]) == pytest.approx([0.0, 0.5])  # 3.5 and 5.5 ms draws


def test_no_runs_of_the_bound_give_nothing(bundle):
    runs = _runs()
    assert chance_cells(runs[runs["method"] != "clairvoyant"], bundle, TASK).empty
    assert chance_text(pd.DataFrame(), TASK) == ""


def test_a_lead_taken_by_answering_late_is_cut_to_what_the_late_limit_allows(routed):
    """seed_p95 leads at 2 ms (0.3 against 0.004) only as a policy that answers half its requests late
    can: held to 1 % late, no policy expects more than 0.005 there. Cut to that, anytime is ahead."""
    kw = dict(seed_p95=(0.3, 0.48), best_fixed_hindsight=(0.25, 0.493))
    runs = _runs(anytime=(0.004, 0.5), **kw)
    margins = limited_margins(runs, chance_cells(runs, routed, TASK), TASK)
    row = margins.set_index("workload").loc["steady"]
    assert row["margin"] == pytest.approx(0.252 - 0.39) and row["limited_margin"] == pytest.approx(0.252 - 0.249)
    text = limited_margin_text(margins, TASK)
    assert "1 of the 1 cells that miss the margin are within it" in text
    assert "steady at load 0.5 goes from -0.138 to +0.003" in text
    behind = _runs(anytime=(0.004, 0.44), **kw)  # behind where the late limit does not bind
    text = limited_margin_text(limited_margins(behind, chance_cells(behind, routed, TASK),
                                               TASK), TASK)
    assert "0 of the 1" in text and "steady at load 0.5 stays at -0.027" in text
    ahead = _runs(anytime=(0.5, 0.96))
    assert limited_margin_text(limited_margins(ahead, chance_cells(ahead, routed, TASK), TASK),
                               TASK) == f"On {TASK} no cell misses the margin."
    assert limited_margin_text(pd.DataFrame(), TASK) == ""


def test_a_cell_that_mixes_deadlines_is_bounded_class_by_class(bundle):
    """Half the requests at the base deadline, half at 2.5 x it: at base 2 ms the classes' chance bounds
    are 0.5 (2 ms) and 1 (5 ms), so the mix's is 0.75; held to 1 % late, only the tight class's
    requests are limited (at most 2 % served there), so 0.01 + 0.5 = 0.51."""
    runs = _runs(workloads=("steady", "steady-mixed"))
    cells = chance_cells(runs, bundle, TASK, classes={"steady-mixed": [(0.5, 1.0), (0.5, 2.5)]})
    mixed = cells[cells["workload"] == "steady-mixed"].set_index("deadline_ms")
    assert mixed["mixed"].all() and not cells.loc[cells["workload"] == "steady", "mixed"].any()
    assert list(mixed["chance"]) == pytest.approx([0.75, 1.0]) and list(mixed["blind"]) == pytest.approx([0.75, 1.0])
    assert list(mixed["late_limited"]) == pytest.approx([0.51, 1.0])
    text = chance_text(cells, TASK)
    assert "over the 2 cells (1 with mixed deadlines, bounded class by class)" in text
    # by deadline over the single-deadline cell only: the chance bound's 0.5 at 2 ms, not the mix's 0.75
    assert "lower by more than 0.005 at 2 ms (0.500 against 0.900" in text
    unlisted = chance_cells(runs, bundle, TASK)  # not said to mix: its base deadline is taken for all
    assert list(unlisted[unlisted["workload"] == "steady-mixed"]["chance"]) == pytest.approx([0.5, 1.0])


def test_the_no_queue_share_is_set_beside_the_grid_s_on_the_same_workloads():
    def cells(load: float, proposed: tuple[float, float], workloads=("steady",)) -> pd.DataFrame:
        return pd.DataFrame([dict(workload=w, load=load, deadline_ms=d, mixed=False, proposed=p, limited_lowest=b)
                             for w in workloads for d, p, b in zip((2.0, 5.0), proposed, (0.5, 1.0))])
    light = cells(0.05, (0.4, 0.98))
    grid = pd.concat([cells(0.5, (0.3, 0.9), ("steady", "bursty")), cells(1.0, (0.2, 0.8))])
    text = no_queue_text(light, grid, TASK)
    # light: (0.4 + 0.98) / (0.5 + 1.0) = 0.92; the bursty cell of the grid is left out
    assert "(steady at load 0.05), anytime's share of the lowest bound is 0.920, against 0.800 at load 0.5, " \
           "0.667 at load 1 on the same workloads in the grid" in text
    assert "furthest below it at 2 ms (0.400 against 0.500), 5 ms (0.980 against 1.000)" in text
    assert no_queue_text(pd.DataFrame(), grid, TASK) == ""


def test_the_work_bound_is_set_beside_the_others_only_where_every_seed_was_bounded(bundle):
    cells = chance_cells(_runs(workloads=("steady", "bursty")), bundle, TASK)
    work = pd.DataFrame([dict(workload=w, load=0.5, deadline_ms=d, seed=s, work_bound=v + 0.02 * s)
                         for w, values in (("steady", (0.45, 0.99)), ("bursty", (0.42, 0.7)))
                         for d, v in zip((2.0, 5.0), values) for s in (0, 1)])
    both = work_cells(cells, work)
    by = both.set_index(["workload", "deadline_ms"])
    assert by.loc[("steady", 2.0), "work"] == pytest.approx(0.46)  # the mean over the seeds
    assert by.loc[("bursty", 5.0), "queue_lowest"] == pytest.approx(0.71)  # below the clairvoyant 1.0
    assert by.loc[("steady", 5.0), "queue_lowest"] == pytest.approx(1.0)   # the clairvoyant bound is lower
    text = work_text(both, TASK, 2)
    # steady: (0.4 + 0.9) / (0.46 + 1.0); bursty: (0.4 + 0.9) / (0.43 + 0.71)
    assert "over 2 cells" in text and f"is {(1.3 / 1.46 + 1.3 / 1.14) / 2:.3f}" in text
    assert "most on bursty (0.750 to 0.570)" in text
    # with the late-limited bound (1 % late at 2 ms allows 0.01): 1.3 / 1.01 and 1.3 / 0.72
    assert "from 1.287 on steady to 1.806 on bursty" in text
    assert "exceeds it by up to 0.190" in text  # anytime 0.9 at 5 ms against 0.71 (the check can fail)
    # a cell with a seed missing is left out, and the text says of how many cells
    partial = work_cells(cells, work[~((work["workload"] == "bursty") & (work["seed"] == 1) & (work["deadline_ms"] == 5.0))])
    assert set(partial["workload"]) == {"steady"}
    assert "the 1 of 2 cells whose traces were all bounded" in work_text(partial, TASK, 2)
    assert work_cells(cells, None).empty and work_text(pd.DataFrame(), TASK, 2) == ""


def test_a_work_bound_made_from_other_profiles_than_the_runs_is_not_set_beside_them(tmp_path, monkeypatch):
    import json

    from planner.analysis.bounds import read_work_bound, work_bound_dir
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    folder = work_bound_dir("full")
    folder.mkdir(parents=True)
    pd.DataFrame([dict(workload="steady", load=0.5, deadline_ms=2.0, seed=0, work_bound=0.4)]).to_csv(
        folder / "bounds_sst2.csv", index=False)
    (tmp_path / "full" / "eval").mkdir(parents=True)
    (tmp_path / "full" / "eval" / "inputs.json").write_text(json.dumps(
        {"runs_sst2.csv": {"profiles_sha256": "aaa", "profiles": "full/profiles/x"}}))
    with pytest.warns(UserWarning, match="record_sst2.json is missing"):
        assert read_work_bound("full", TASK) is None
    (folder / "record_sst2.json").write_text(json.dumps({"profiles_sha256": "bbb"}))
    with pytest.warns(UserWarning, match="computed from profiles bbb"):
        assert read_work_bound("full", TASK) is None
    (folder / "record_sst2.json").write_text(json.dumps({"profiles_sha256": "aaa"}))
    assert read_work_bound("full", TASK)["work_bound"].tolist() == [0.4]
    assert read_work_bound("full", "cifar10") is None  # never computed: no warning, nothing to read


def test_the_late_sample_says_where_holding_both_lowers_the_bound(tmp_path, monkeypatch):
    import json

    from planner.analysis.bounds import late_work_text, read_late_work_bound, work_bound_dir
    rows = pd.DataFrame([dict(workload=w, load=load, deadline_ms=d, seed=0, late_share=0.01, block=2,
                              work=work, late_work=late_work, late_limited=limited)
                         for w, load, d, work, late_work, limited in (
                             ("steady", 0.5, 3.0, 0.68, 0.05, 0.054),      # the late limit alone: lower by 0.004
                             ("steady-mixed", 0.5, 3.0, 0.60, 0.30, 0.40),  # both together: lower by 0.10
                             ("bursty-cv8", 1.0, 60.0, 0.80, 0.80, 0.95))])  # the queue alone
    text = late_work_text(rows, TASK)
    assert "(the first seed's trace of each cell at loads up to 1, 3 traces)" in text
    assert "by more than 0.005 on 1 of them, by up to 0.100 (steady-mixed at load 0.5, 3 ms: 0.400 to 0.300)" in text
    assert "On the bursty traces it is at most 0.0000 below the lower of the two." in text
    assert late_work_text(None, TASK) == "" and late_work_text(rows.iloc[:0], TASK) == ""
    # read only where its record names the runs' profiles
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    folder = work_bound_dir("full")
    folder.mkdir(parents=True)
    rows.to_csv(folder / "late_sst2.csv", index=False)
    (tmp_path / "full" / "eval").mkdir(parents=True)
    (tmp_path / "full" / "eval" / "inputs.json").write_text(json.dumps(
        {"runs_sst2.csv": {"profiles_sha256": "aaa", "profiles": "full/profiles/x"}}))
    with pytest.warns(UserWarning, match="late_record_sst2.json is missing"):
        assert read_late_work_bound("full", TASK) is None
    (folder / "late_record_sst2.json").write_text(json.dumps({"profiles_sha256": "aaa"}))
    assert len(read_late_work_bound("full", TASK)) == 3


def test_the_ceiling_is_the_share_of_the_clairvoyant_bound_the_work_bound_leaves_over_complete_cells():
    from planner.analysis.bounds import ceiling_cells, ceiling_text
    from planner.analysis.results import scorecard, grid_cells
    runs = _runs(workloads=("steady", "bursty"))  # clairvoyant 0.9 at 2 ms, 1.0 at 5 ms in both cells
    work = pd.DataFrame([dict(workload=w, load=0.5, deadline_ms=d, seed=s, work_bound=v + 0.02 * s)
                         for w, values in (("steady", (0.45, 0.99)), ("bursty", (0.42, 0.7)))
                         for d, v in zip((2.0, 5.0), values) for s in (0, 1)])
    ceilings = ceiling_cells(runs, work, TASK).set_index("workload")
    # steady: (0.46 + min(1.0, 1.0)) / 1.9; bursty: (0.43 + 0.71) / 1.9 (the mean over seeds, as the share's)
    assert ceilings.loc["steady", "ceiling"] == pytest.approx(1.46 / 1.9)
    assert ceilings.loc["bursty", "ceiling"] == pytest.approx(1.14 / 1.9)
    # a cell whose work bound misses a seed, or a deadline, is left out; no work bound, no ceiling
    partial = ceiling_cells(runs, work[~((work["workload"] == "bursty") & (work["seed"] == 1))], TASK)
    assert set(partial["workload"]) == {"steady"}
    gap = ceiling_cells(runs, work[~((work["workload"] == "bursty") & (work["deadline_ms"] == 5.0))], TASK)
    assert set(gap["workload"]) == {"steady"}
    assert ceiling_cells(runs, None, TASK).empty and ceiling_cells(runs, work, "cifar10").empty
    # the scorecard averages it over the same cells as the share, and the text says whether a target is open
    card = scorecard(grid_cells(runs.assign(late_rate=0.0)), ceiling_cells(runs, work, TASK))
    assert card.iloc[0]["mean_ceiling"] == pytest.approx((1.46 + 1.14) / 2 / 1.9)
    assert np.isnan(scorecard(grid_cells(runs.assign(late_rate=0.0)), gap.assign(task=TASK)).iloc[0]["mean_ceiling"])
    text = ceiling_text(card, ceiling_cells(runs, work, TASK), target=0.95)
    assert f"can expect at most {(1.46 + 1.14) / 3.8:.3f} of the clairvoyant bound" in text
    assert "from 0.600 on bursty at load 0.5 to 0.768 on steady at load 0.5" in text
    assert "out of reach of every such policy" in text
    # anytime's share: (0.4 + 0.9) / 1.9 in both cells, as a part of the ceiling
    assert f"anytime's 0.684 is {(1.3 / 1.9) / ((1.46 + 1.14) / 3.8):.1%} of that most" in text
    assert "within reach" in ceiling_text(card, ceiling_cells(runs, work, TASK), target=0.5)
    assert ceiling_text(card.assign(mean_ceiling=np.nan), pd.DataFrame(), target=0.95) == ""
