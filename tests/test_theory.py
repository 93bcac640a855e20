"""Theory: utilisation tests, the queue MDP (exactness, optimal >= greedy), measured competitive ratio."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.plan import DeadlinePlanner
from bundles import synthetic_profiles
from planner.theory import (
    QueueMDP,
    competitive_ratio,
    edf_schedulable,
    greedy_policy,
    policy_value,
    rm_bound,
    schedulability,
    utilization,
    value_iteration,
    windowed_competitive_ratio,
)


# ---- utilisation ----------------------------------------------------------------------------
def test_utilization_and_bounds_hand_computed():
    # 100 req/s x 4 ms + 50 req/s x 6 ms = 0.4 + 0.3
    assert utilization([4.0, 6.0], [100.0, 50.0]) == pytest.approx(0.7)
    assert rm_bound(1) == 1.0
    assert rm_bound(2) == pytest.approx(2 * (math.sqrt(2) - 1))
    assert rm_bound(3) == pytest.approx(0.7797631496846196)
    assert rm_bound(10_000) == pytest.approx(math.log(2), abs=1e-4)
    assert edf_schedulable(1.0) and not edf_schedulable(1.01)
    s = schedulability(pd.DataFrame({"rate_rps": [100.0, 50.0], "service_ms": [4.0, 6.0]}))
    assert s["U"] == pytest.approx(0.7) and s["n"] == 2 and s["rm_schedulable"] and s["edf_schedulable"]
    s = schedulability(pd.DataFrame({"rate_rps": [100.0, 50.0], "service_ms": [5.0, 7.0]}))  # U = 0.85
    assert not s["rm_schedulable"] and s["edf_schedulable"] and s["headroom"] == pytest.approx(0.15)


def test_utilization_rejects_bad_input():
    with pytest.raises(ValueError):
        utilization([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        utilization([-1.0], [1.0])
    with pytest.raises(ValueError):
        rm_bound(0)
    with pytest.raises(ValueError, match="column"):
        schedulability(pd.DataFrame({"rate": [1.0]}))


# ---- MDP --------------------------------------------------------------------------------------
def small_mdp(**kw) -> QueueMDP:
    args = dict(service_ms=[1.0, 3.0, 8.0], accuracy=[0.6, 0.75, 0.9], deadlines_ms=[5.0, 20.0],
                class_probs=[0.5, 0.5], rate_rps=150.0, bucket_edges=(0, 1, 2, 4, 8), late_penalty=0.2,
                discount=0.9)
    args.update(kw)
    return QueueMDP(**args)


def test_transitions_are_stochastic_and_match_poisson_by_hand():
    mdp = small_mdp()
    p = mdp.transitions
    assert (p >= 0).all() and np.allclose(p.sum(axis=2), 1.0)
    # empty queue (bucket 0), action 1 (3 ms), mean arrivals mu = 150 * 0.003 = 0.45:
    # q' = 0 iff at most one arrival; the next class is drawn independently with prob 0.5
    mu = 0.45
    s0 = mdp.state(0, 0)
    assert p[1, s0, mdp.state(0, 1)] == pytest.approx(0.5 * math.exp(-mu) * (1 + mu))
    # q' = 1 iff two arrivals
    assert p[1, s0, mdp.state(1, 0)] == pytest.approx(0.5 * math.exp(-mu) * mu**2 / 2)


def test_rewards_follow_on_time_rule():
    mdp = small_mdp()
    wait = mdp.wait_ms()  # 1000 q / 150
    for b, k, a in itertools.product(range(mdp.n_buckets), range(mdp.n_classes), range(mdp.n_actions)):
        on_time = wait[b] + mdp.service_ms[a] <= mdp.deadlines_ms[k]
        assert mdp.rewards[a, mdp.state(b, k)] == (mdp.accuracy[a] if on_time else -0.2)


def test_value_iteration_converges_and_is_exact_against_all_policies():
    mdp = small_mdp(bucket_edges=(0, 3), deadlines_ms=[4.0, 30.0])  # 4 states, 3 actions: 81 policies
    sol = value_iteration(mdp, tol=1e-10)
    assert sol.converged and sol.iterations < 10_000
    best = np.max([policy_value(mdp, np.array(pi)) for pi in itertools.product(range(3), repeat=4)], axis=0)
    assert np.allclose(sol.values, best, atol=1e-8)
    assert np.allclose(policy_value(mdp, sol.policy), best, atol=1e-8)


def test_optimal_policy_beats_or_ties_greedy_and_the_queue_matters():
    mdp = small_mdp()
    sol = value_iteration(mdp)
    assert sol.converged
    optimal = policy_value(mdp, sol.policy)
    for queue_aware in (False, True):
        greedy = policy_value(mdp, greedy_policy(mdp, queue_aware))
        assert (optimal >= greedy - 1e-9).all()
    # in this model the queue-blind greedy rule is strictly worse somewhere
    assert (optimal - policy_value(mdp, greedy_policy(mdp))).max() > 1e-3


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_value_iteration_never_loses_to_greedy_on_random_models(data):
    n_actions = data.draw(st.integers(1, 4))
    service = data.draw(st.lists(st.floats(0.2, 20.0), min_size=n_actions, max_size=n_actions))
    accuracy = data.draw(st.lists(st.floats(0.0, 1.0), min_size=n_actions, max_size=n_actions))
    n_classes = data.draw(st.integers(1, 3))
    deadlines = data.draw(st.lists(st.floats(0.5, 40.0), min_size=n_classes, max_size=n_classes))
    weights = np.array(data.draw(st.lists(st.floats(0.1, 1.0), min_size=n_classes, max_size=n_classes)))
    mdp = QueueMDP(service, accuracy, deadlines, weights / weights.sum(), data.draw(st.floats(1.0, 400.0)),
                   bucket_edges=(0, 1, 2, 4), late_penalty=data.draw(st.floats(0.0, 1.0)),
                   discount=data.draw(st.floats(0.0, 0.95)))
    sol = value_iteration(mdp, tol=1e-9)
    assert sol.converged
    optimal = policy_value(mdp, sol.policy)
    assert np.allclose(optimal, sol.values, atol=1e-8)
    for queue_aware in (False, True):
        assert (optimal >= policy_value(mdp, greedy_policy(mdp, queue_aware)) - 1e-8).all()


def test_greedy_policy_is_the_deadline_planner_rule():
    profiles, _ = synthetic_profiles(30, seed=2)
    deadlines = [0.3, 1.0, 2.5, 6.0]
    mdp = QueueMDP.from_profiles(profiles, "sst2", deadlines, [0.25] * 4, rate_rps=50.0)
    b1 = profiles[profiles["batch_size"] == 1]
    planner = DeadlinePlanner().fit(b1)
    greedy = greedy_policy(mdp)
    for k, deadline in enumerate(deadlines):
        for b in range(mdp.n_buckets):
            assert mdp.action_names[greedy[mdp.state(b, k)]] == planner.select("sst2", deadline).config_id


def test_mdp_rejects_bad_models():
    with pytest.raises(ValueError, match="sum to 1"):
        small_mdp(class_probs=[0.5, 0.6])
    with pytest.raises(ValueError, match="bucket_edges"):
        small_mdp(bucket_edges=(1, 2))
    with pytest.raises(ValueError, match="discount"):
        small_mdp(discount=1.0)
    with pytest.raises(ValueError, match="accuracies"):
        small_mdp(accuracy=[0.6, np.nan, 0.9])
    with pytest.raises(ValueError, match="one action"):
        policy_value(small_mdp(), np.zeros(3, dtype=int))


# ---- competitive ratio --------------------------------------------------------------------
def results(hit: list[bool], correct: list[bool], method: str) -> pd.DataFrame:
    n = len(hit)
    return pd.DataFrame({"request_id": np.arange(n), "method": method, "config_id": "c", "start_s": 0.0,
                         "finish_s": 0.0, "latency_ms": 1.0, "status": "served", "hit": hit, "correct": correct})


def test_competitive_ratio_from_measured_outcomes():
    policy = results([True, True, False, True], [True, False, True, True], "planner")  # effective: 1,0,0,1
    oracle = results([True, True, True, True], [True, True, False, True], "oracle")  # effective: 1,1,0,1
    r = competitive_ratio(policy, oracle)
    assert (r["policy_total"], r["oracle_total"], r["n_requests"]) == (2.0, 3.0, 4)
    assert r["ratio"] == pytest.approx(2 / 3)
    assert competitive_ratio(policy, oracle, "hit")["ratio"] == pytest.approx(3 / 4)
    w = windowed_competitive_ratio(policy, oracle, window=2)
    assert w["ratio"].tolist() == pytest.approx([0.5, 1.0])
    assert w["n_requests"].tolist() == [2, 2]
    # a policy may beat the best fixed configuration: reported as measured
    assert competitive_ratio(oracle, policy)["ratio"] == pytest.approx(1.5)


def test_competitive_ratio_degenerate_and_bad_inputs():
    none = results([False, False], [False, False], "x")
    assert competitive_ratio(none, none)["ratio"] == 1.0
    assert competitive_ratio(results([True, True], [True, False], "x"), none)["ratio"] == math.inf
    with pytest.raises(ValueError, match="request ids differ"):
        competitive_ratio(results([True], [True], "x"), results([True, True], [True, True], "y"))
    mixed = pd.concat([results([True], [True], "a"), results([True], [True], "b")])
    with pytest.raises(ValueError):
        competitive_ratio(mixed, mixed)
    with pytest.raises(ValueError, match="outcome"):
        competitive_ratio(none, none, "speed")
    with pytest.raises(ValueError, match="window"):
        windowed_competitive_ratio(none, none, 0)
