"""The chance bound beside the clairvoyant one: the book's shares, the deadlines where it is lower, its check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundles import toy_bundle
from planner.analysis.bounds import chance_cells, chance_text

TASK = "sst2"


@pytest.fixture
def bundle():
    """Half the draws take 1 ms, half 3 ms, every example right: the chance bound is 0.5 at 2 ms, 1 at 5 ms."""
    return toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[1.0, 3.0], correct=np.ones(200, bool))])


def _runs(anytime_at_2ms: float = 0.4) -> pd.DataFrame:
    values = {"anytime": (anytime_at_2ms, 0.9), "seed_p95": (0.3, 0.8), "clairvoyant": (0.9, 1.0),
              "best_fixed_hindsight": (0.45, 0.95)}
    rows = [dict(task=TASK, workload=workload, load=0.5, deadline_ms=deadline, seed=seed, method=method,
                 effective_accuracy=value[i], dispatch_overhead_ms=0.0)
            for workload in ("steady", "steady-mixed") for method, value in values.items()
            for i, deadline in enumerate((2.0, 5.0)) for seed in (0, 1)]
    return pd.DataFrame(rows)


def test_the_lower_bound_per_deadline_and_the_shares_averaged_as_the_scorecard_does(bundle):
    cells = chance_cells(_runs(), bundle, TASK, mixed=["steady-mixed"])
    assert set(cells["workload"]) == {"steady"}  # a mixed trace's deadline_ms is only its classes' base
    by = cells.set_index("deadline_ms")
    assert by.loc[2.0, "chance"] == pytest.approx(0.5) and by.loc[5.0, "chance"] == pytest.approx(1.0)
    assert list(by["tighter"]) == pytest.approx([0.5, 1.0])
    assert list(by["best_other_online"]) == pytest.approx([0.3, 0.8])  # the hindsight method is not online
    text = chance_text(cells, TASK)
    # per cell over deadlines: anytime 0.65 of the clairvoyant 0.95 and of the lower bound 0.75
    assert "share of the clairvoyant bound is 0.684 and of the lower of the two bounds 0.867" in text
    assert "lower by more than 0.005 at 2 ms (0.500 against 0.900" in text
    assert "No online method's mean exceeds the chance bound" in text and "the closest is 0.100 below it" in text


def test_a_mean_above_the_chance_bound_is_said(bundle):
    text = chance_text(chance_cells(_runs(anytime_at_2ms=0.6), bundle, TASK, mixed=["steady-mixed"]), TASK)
    assert "exceeds the chance bound by up to 0.100" in text


def test_runs_without_a_recorded_overhead_are_bounded_as_if_it_were_zero(bundle):
    cells = chance_cells(_runs().drop(columns="dispatch_overhead_ms"), bundle, TASK, mixed=["steady-mixed"])
    assert list(cells.set_index("deadline_ms")["chance"]) == pytest.approx([0.5, 1.0])
    slower = chance_cells(_runs().assign(dispatch_overhead_ms=2.5), bundle, TASK, mixed=["steady-mixed"])
    assert list(slower.set_index("deadline_ms")["chance"]) == pytest.approx([0.0, 0.5])  # 3.5 and 5.5 ms draws


def test_no_runs_of_the_bound_give_nothing(bundle):
    runs = _runs()
    assert chance_cells(runs[runs["method"] != "clairvoyant"], bundle, TASK).empty
    assert chance_text(pd.DataFrame(), TASK) == ""
