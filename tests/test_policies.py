"""Policies: the static wrapper, the fixed policy and the slack-aware rule."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from planner.plan import policies
from planner import workloads
from bundles import synthetic_bundle, toy_bundle
from planner.plan import DeadlinePlanner
from planner.plan.policies import PolicyContext
from planner.serving.simulator import simulate
from planner.serving.outcomes import run_metrics


def ctx(queue_len=1, slack=100.0, deadline=100.0, servers=1, now=0.0):
    return PolicyContext(now_s=now, task="sst2", queue_len=queue_len, oldest_slack_ms=slack, deadline_ms=deadline,
                         request_id=0, idle_servers=1, servers=servers, recent_rate_rps=0.0)


class CountingStandIn:
    """Anything with select(task, deadline_ms, workload) -> .config_id, counting its calls."""

    def __init__(self):
        self.calls = []

    def select(self, task, deadline_ms, workload=None):
        self.calls.append((task, deadline_ms, workload))
        return SimpleNamespace(config_id=f"{task}/fast" if deadline_ms < 10 else f"{task}/slow")


def test_static_wraps_select_and_caches_per_deadline():
    stand_in = CountingStandIn()
    policy = policies.static(stand_in, "sst2", "bursty")
    assert policy(ctx(deadline=5.0)) == "sst2/fast"
    assert policy(ctx(deadline=50.0, queue_len=99, slack=-3.0)) == "sst2/slow"  # ignores the queue
    assert policy(ctx(deadline=5.0)) == "sst2/fast"
    assert stand_in.calls == [("sst2", 5.0, "bursty"), ("sst2", 50.0, "bursty")]
    assert policy.config_for(50.0) == "sst2/slow" and policy.task == "sst2"
    with pytest.raises(TypeError, match="no select"):
        policies.static(object(), "sst2")


def test_context_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx().queue_len = 3


def test_static_planner_policy_matches_the_planner():
    bundle = synthetic_bundle(n_configs=12)
    planner = DeadlinePlanner(95).fit(bundle.profiles)
    policy = policies.static(planner, "sst2", "steady")
    for d in (1.0, 2.5, 4.0, 10.0):
        assert policy(ctx(deadline=d)) == planner.select("sst2", d, "steady").config_id
    assert policies.fixed("x")(ctx()) == "x"


@pytest.fixture(scope="module")
def abc():
    """A: accurate, b1, 10 ms; B: b4, 8 ms; C: least accurate, b8, 4 ms; D: no measured accuracy."""
    n = 100
    ex = np.arange(n)
    specs = [
        dict(model="a", batch_size=1, samples_ms=np.full(50, 10.0), correct=ex < 90),
        dict(model="b", batch_size=4, samples_ms=np.full(50, 8.0), correct=ex < 80),
        dict(model="c", batch_size=8, samples_ms=np.full(50, 4.0), correct=ex < 60),
        dict(model="d", batch_size=8, samples_ms=np.full(50, 0.5), correct=ex < 99),
    ]
    bundle = toy_bundle("sst2", specs)
    d = bundle.profiles["model"] == "d"
    bundle.profiles.loc[d, ["accuracy", "calibration_accuracy"]] = np.nan
    bundle.profiles.loc[d, "accuracy_source"] = "unavailable"
    return bundle


def test_slack_aware_drain_rule(abc):
    policy = policies.slack_aware(abc, "sst2", rule="drain")
    cid = {m: c for m, c in zip(abc.profiles["model"], abc.profiles["config_id"])}
    assert policy.needs.lookahead == 0                                  # needs no queue window
    assert policy(ctx(queue_len=1, slack=50)) == cid["a"]        # 1 x 10 ms fits
    assert policy(ctx(queue_len=3, slack=25)) == cid["b"]        # A: 3 x 10 > 25; B: 1 x 8 fits
    assert policy(ctx(queue_len=3, slack=25, servers=2)) == cid["a"]  # A: ceil(3/2) x 10 = 20 fits
    assert policy(ctx(queue_len=20, slack=12)) == cid["c"]       # B: 5 x 8 > 12; C: 3 x 4 = 12 fits
    assert policy(ctx(queue_len=100, slack=5)) == cid["c"]       # nothing fits: drain (C: 2 items/ms)
    assert policy(ctx(queue_len=1, slack=-1)) == cid["c"]        # already late: drain


def window(*slacks, servers=1):
    return dataclasses.replace(ctx(queue_len=len(slacks), slack=slacks[0], servers=servers),
                               queue_slack_ms=tuple(float(s) for s in slacks))


def test_slack_aware_value_rule(abc):
    """Expected correct-and-on-time answers in the window: accuracy x #(predicted finish <= slack)."""
    policy = policies.slack_aware(abc, "sst2", lookahead=8)
    cid = {m: c for m, c in zip(abc.profiles["model"], abc.profiles["config_id"])}
    assert policy.needs.lookahead == 8
    assert policy(window(50)) == cid["a"]                        # A 0.9 x 1 beats B 0.8 x 1
    assert policy(window(25, 25, 25)) == cid["b"]                # A: 0.9 x 2 = 1.8 < B: 0.8 x 3 = 2.4
    assert policy(window(25, 25, 25, servers=2)) == cid["a"]     # A: 2 servers, 3 on time = 2.7
    assert policy(window(*[12] * 8)) == cid["c"]                 # B: 0 on time; C: 0.6 x 8 = 4.8
    # a doomed head no longer forces the drain: the rest are saved with the accurate config
    assert policy(window(-5, 30, 30)) == cid["a"]                # A: 0.9 x 2 = 1.8 > B: 0.8 x 2 = 1.6
    assert policy(window(-5, -1, -1)) == cid["c"]                # all doomed: clear fastest (C: 4 ms)
    assert policy(ctx(queue_len=1, slack=9)) == cid["b"]         # no window: the head alone decides
    finish = policy.finish_ms(servers=1, positions=5)
    assert finish[0].tolist() == [10, 20, 30, 40, 50] and finish[1].tolist() == [8, 8, 8, 8, 16]


def test_slack_aware_candidates_and_errors(abc):
    cid = {m: c for m, c in zip(abc.profiles["model"], abc.profiles["config_id"])}
    table = policies.candidate_table(abc, "sst2")
    assert cid["d"] not in set(table["config_id"])               # unavailable accuracy is never picked
    assert table["calibration_accuracy"].is_monotonic_decreasing and "accuracy" not in table  # never the scored one
    with pytest.raises(ValueError, match="task 'cifar10' has no profiled"):
        policies.slack_aware(abc, "cifar10")
    with pytest.raises(ValueError, match="rule must be"):
        policies.slack_aware(abc, "sst2", rule="greedy")
    with pytest.raises(ValueError, match="lookahead"):
        policies.slack_aware(abc, "sst2", lookahead=0)


@pytest.mark.parametrize("rule", ["drain", "value"])
def test_slack_aware_beats_the_static_planner_under_bursts(abc, rule):
    """Bursts at 0.8 x A's capacity: the static choice (A) queues up; switching to B/C saves deadlines."""
    policy = policies.slack_aware(abc, "sst2", rule=rule)
    static = policies.static(DeadlinePlanner(95).fit(abc.profiles), "sst2", "bursty")
    trace = workloads.gamma(80.0, 5000, 40.0, 100, seed=1, cv=4)
    dynamic = simulate(trace, policy, abc, seed=1)
    fixed = simulate(trace, static, abc, seed=1)
    assert set(fixed["config_id"]) == {static.config_for(40.0)}
    assert dynamic["config_id"].nunique() >= 2
    m_dyn, m_fix = run_metrics(dynamic), run_metrics(fixed)
    assert m_dyn["hit_rate"] > m_fix["hit_rate"] + 0.1
    assert m_dyn["effective_accuracy"] > m_fix["effective_accuracy"]
    assert m_dyn["accuracy"] < m_fix["accuracy"]  # the price: less accurate configs during bursts


@pytest.mark.parametrize("rule", ["drain", "value"])
def test_slack_aware_equals_static_choice_when_idle(abc, rule):
    """Requests far apart: the queue never holds more than one, so the choice is A every time."""
    policy = policies.slack_aware(abc, "sst2", rule=rule)
    trace = workloads.make_frame(np.arange(50) * 1.0, 40.0, 100, 0, "sparse")
    r = simulate(trace, policy, abc)
    assert set(r["config_id"]) == {abc.profiles["config_id"].iloc[0]} and r["hit"].all()
