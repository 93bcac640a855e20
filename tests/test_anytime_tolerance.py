"""The anytime policy's accuracy tolerance: epsilon-dominance over candidates it cannot tell apart."""

from __future__ import annotations

import numpy as np
import pytest

from bundles import synthetic_bundle
from planner.plan.anytime import AnytimePolicy, anytime, dominance_front
from planner.plan.failure import PlannerError

Q = np.array([[1.0, 2.0], [0.6, 1.2], [0.5, 3.0], [0.4, 0.9]])


def test_a_faster_candidate_within_the_tolerance_removes_the_slower_one():
    accuracy = np.array([0.8570, 0.8568, 0.90, 0.80])
    batch = np.ones(4, dtype=np.int64)
    assert dominance_front(accuracy, batch, Q).tolist() == [0, 1, 2, 3]  # exact dominance: all trade off
    # 0 is slower than 1 everywhere and only 0.0002 more accurate: gone; 2 is faster only at one
    # quantile (not dominated); 3 is 0.057 less accurate than 1 (beyond the tolerance): kept
    assert dominance_front(accuracy, batch, Q, accuracy_tolerance=0.001).tolist() == [1, 2, 3]
    assert dominance_front(accuracy, batch, Q, accuracy_tolerance=0.06).tolist() == [2, 3]


def test_equal_latencies_never_remove_both_of_a_pair():
    accuracy = np.array([0.851, 0.850])
    q = np.array([[1.0, 2.0], [1.0, 2.0]])
    for tolerance in (0.0, 0.005):
        assert dominance_front(accuracy, np.ones(2, dtype=np.int64), q, tolerance).tolist() == [0]


def test_a_larger_batch_is_never_removed_by_a_smaller_one():
    accuracy = np.array([0.850, 0.851])
    q = np.array([[2.0, 3.0], [1.0, 2.0]])
    assert dominance_front(accuracy, np.array([8, 1]), q, 0.005).tolist() == [0, 1]


def test_the_policy_prunes_with_its_tolerance():
    bundle = synthetic_bundle(n_configs=30, seed=5)
    exact, tolerant = anytime(bundle, "sst2"), anytime(bundle, "sst2", accuracy_tolerance=0.02)
    assert set(tolerant.front_ids()) < set(exact.front_ids())


@pytest.mark.parametrize("bad", [-0.01, 1.0, True, "0.01"])
def test_a_bad_tolerance_is_named(bad):
    with pytest.raises(PlannerError, match="accuracy_tolerance"):
        AnytimePolicy("sst2", accuracy_tolerance=bad)
