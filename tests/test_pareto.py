"""Pareto dominance, frontier, hypervolume (cross-checked against pymoo) and dominance ratio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymoo.indicators.hv import HV

from planner.analysis.pareto import (
    dominance_ratio,
    dominated_fraction,
    dominates,
    hypervolume,
    pareto_front,
    pareto_mask,
)

points = st.lists(st.tuples(st.one_of(st.sampled_from([1.0, 2.0, 3.0]), st.floats(0.01, 100.0)),
                            st.one_of(st.sampled_from([0.5, 0.7, 0.9]), st.floats(0.0, 1.0))),
                  min_size=0, max_size=30)
PROPS = settings(max_examples=200, deadline=None)


def test_dominates():
    assert dominates((1.0, 0.9), (2.0, 0.8))
    assert dominates((1.0, 0.8), (2.0, 0.8))  # equal accuracy, faster
    assert dominates((1.0, 0.9), (1.0, 0.8))  # equal latency, more accurate
    assert not dominates((1.0, 0.8), (1.0, 0.8))  # identical points do not dominate each other
    assert not dominates((1.0, 0.7), (2.0, 0.8))  # a trade-off


@PROPS
@given(pts=points)
def test_pareto_mask_matches_quadratic_definition(pts):
    lat = np.array([p[0] for p in pts], dtype=float)
    acc = np.array([p[1] for p in pts], dtype=float)
    expected = [not any(dominates(q, p) for q in pts) for p in pts]
    assert pareto_mask(lat, acc).tolist() == expected


@PROPS
@given(pts=points, ref_lat=st.floats(0.5, 120.0), ref_acc=st.floats(-0.5, 0.8))
def test_hypervolume_matches_pymoo(pts, ref_lat, ref_acc):
    lat = np.array([p[0] for p in pts], dtype=float)
    acc = np.array([p[1] for p in pts], dtype=float)
    ours = hypervolume(lat, acc, (ref_lat, ref_acc))
    if len(pts) == 0:
        assert ours == 0.0
        return
    theirs = HV(ref_point=np.array([ref_lat, -ref_acc]))(np.column_stack([lat, -acc]))
    assert ours == pytest.approx(float(theirs), abs=1e-9, rel=1e-12)


def test_hypervolume_hand_computed():
    # front (1, 0.6), (2, 0.8), (4, 0.9); ref (5, 0.5); a dominated point (3, 0.7) adds nothing
    # HV = (2-1)(0.6-0.5) + (4-2)(0.8-0.5) + (5-4)(0.9-0.5) = 0.1 + 0.6 + 0.4 = 1.1
    lat, acc = [2.0, 1.0, 4.0, 3.0], [0.8, 0.6, 0.9, 0.7]
    assert hypervolume(lat, acc, (5.0, 0.5)) == pytest.approx(1.1, abs=1e-12)
    # points that do not beat the reference in both coordinates contribute nothing
    assert hypervolume([6.0, 1.0], [0.95, 0.4], (5.0, 0.5)) == 0.0
    assert hypervolume([], [], (5.0, 0.5)) == 0.0


def test_hypervolume_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        hypervolume([1.0], [np.nan], (5.0, 0.5))
    with pytest.raises(ValueError, match="reference"):
        hypervolume([1.0], [0.9], (np.inf, 0.5))
    with pytest.raises(ValueError, match="latency has"):
        hypervolume([1.0, 2.0], [0.9], (5.0, 0.5))


def test_pareto_front_sorted_and_skips_missing_accuracy():
    frame = pd.DataFrame({"config_id": list("abcde"), "lat_p95_ms": [3.0, 1.0, 2.0, 0.5, 2.5],
                          "accuracy": [0.9, 0.6, 0.8, np.nan, 0.7]})
    front = pareto_front(frame)
    assert front["config_id"].tolist() == ["b", "c", "a"]
    with pytest.raises(ValueError, match="no column"):
        pareto_front(frame, latency="lat_p50_ms")


def test_dominance_ratio_and_dominated_fraction():
    a_lat, a_acc = [1.0, 2.0], [0.7, 0.9]
    b_lat, b_acc = [1.5, 2.0, 0.5], [0.6, 0.9, 0.95]
    # (1.5, 0.6) covered by (1, 0.7); (2, 0.9) covered by the identical (2, 0.9); (0.5, 0.95) not
    assert dominance_ratio(a_lat, a_acc, b_lat, b_acc) == pytest.approx(2 / 3)
    # B's (0.5, 0.95) is faster and more accurate than both points of A
    assert dominance_ratio(b_lat, b_acc, a_lat, a_acc) == pytest.approx(1.0)
    assert dominance_ratio([], [], b_lat, b_acc) == 0.0
    with pytest.raises(ValueError, match="empty"):
        dominance_ratio(a_lat, a_acc, [], [])
    assert dominated_fraction([1.0, 2.0, 3.0, 1.5], [0.6, 0.8, 0.7, 0.6]) == pytest.approx(0.5)
