"""The work bound in expectation (planner.evaluation.work_bound): hand values, and no example-blind
policy the simulator runs beats it on average, also under bursts, where the bounds without a queue do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundles import toy_bundle
from planner import workloads
from planner.evaluation.clairvoyant import ClairvoyantError, chance_bound, clairvoyant_bound, late_limited_bound
from planner.evaluation.work_bound import WorkBound
from planner.plan import policies
from planner.plan.anytime import anytime
from planner.serving.outcomes import run_metrics
from planner.serving.simulator import prepare, simulate
from test_clairvoyant import N_EXAMPLES, TASK, _bundle, _ids

POOL = np.arange(N_EXAMPLES)


def _burst(n: int, deadline_ms: float, examples: int) -> pd.DataFrame:
    """``n`` requests at t = 0, examples in turn."""
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": 0.0, "deadline_ms": deadline_ms,
                         "example_id": np.arange(n) % examples})


def _effective(trace: pd.DataFrame, policy, catalog, **kw) -> float:
    return run_metrics(simulate(trace, policy, catalog, task=TASK, **kw))["effective_accuracy"]


def test_a_burst_gets_the_server_time_its_deadline_leaves_at_the_mean_service_time():
    """100 requests at once, 20 ms to answer them, always right. Exactly 10 ms per draw: 2 fit, and
    dropping expired requests serves them. Draws of 1 or 3 ms: the clairvoyant bound charges 1 ms (20
    requests); in expectation a request takes 2 ms, and one cut off by the deadline still took the
    server's time, so 10 at most, and a run comes close."""
    exact = toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[10.0], correct=np.ones(10, bool))])
    trace = _burst(100, 20.0, 10)
    assert WorkBound(prepare(exact), TASK, np.arange(10)).bound(trace) == pytest.approx(0.02)
    assert _effective(trace, policies.fixed(_ids(exact)[0]), exact, drop_expired=True) == pytest.approx(0.02)
    assert WorkBound(prepare(exact), TASK, np.arange(10)).bound(trace, servers=2) == pytest.approx(0.04)
    spread = toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[1.0, 3.0], correct=np.ones(10, bool))])
    catalog = prepare(spread)
    bound = WorkBound(catalog, TASK, np.arange(10)).bound(trace)
    assert bound == pytest.approx(0.10)
    assert clairvoyant_bound(trace, catalog, TASK).effective_accuracy == pytest.approx(0.20)
    runs = [_effective(trace, policies.fixed(_ids(spread)[0]), catalog, seed=seed, drop_expired=True)
            for seed in range(40)]
    assert bound - 0.01 <= np.mean(runs) <= bound


def test_a_cascade_pays_its_second_stage_where_it_counts_on_it():
    """Small member 1 ms, right on the half of the examples it does not escalate; large member 4 ms,
    always right. In 30 ms for 100 requests at once: the cascade's whole answer costs 1 + 0.5 x 4 = 3 ms
    a request (10 of them), the small member's 1 ms for half a right answer (30, 15 right), and the
    bound mixes them at the best rate, 0.5 a ms: 15 right answers, which the small member gets."""
    examples = 20
    escalates = np.arange(examples) % 2 == 1
    confidence = np.where(escalates, 0.5, 0.9)
    bundle = toy_bundle(TASK, [
        dict(model="small", batch_size=1, samples_ms=[1.0], correct=~escalates, confidence=confidence),
        dict(model="large", batch_size=1, samples_ms=[4.0], correct=np.ones(examples, bool)),
        dict(model="cascade", batch_size=1, samples_ms=[5.0], correct=np.ones(examples, bool),
             cascade=("small", "large", 0.7))])
    catalog = prepare(bundle)
    trace = _burst(100, 30.0, examples)
    assert WorkBound(catalog, TASK, np.arange(examples)).bound(trace) == pytest.approx(0.15)
    small = next(c for c in _ids(bundle) if "/small/" in c)
    assert _effective(trace, policies.fixed(small), catalog, drop_expired=True) == pytest.approx(0.15)
    cascade = next(c for c in _ids(bundle) if "cascade:" in c)
    assert _effective(trace, policies.fixed(cascade), catalog, drop_expired=True) <= 0.15


def test_no_example_blind_policy_beats_it_on_average_and_it_holds_the_queue():
    """Every fixed configuration, slack-aware and anytime (sheds, answers early from a cascade, steers
    its late share), on Poisson and bursty traces at loads where a queue forms: the mean over seeds
    (new trace, examples and draws each) stays under the mean work bound, which is never above the
    example-blind chance bound and is clearly below it under bursts. (Where it is loose: a batch is
    charged as if full, so at light load it leaves out the wait to fill one.)"""
    bundle = _bundle(0)
    catalog = prepare(bundle)
    ids = _ids(bundle)
    candidates = [policies.fixed(c) for c in ids] + [
        policies.slack_aware(bundle, TASK), anytime(bundle, TASK), anytime(bundle, TASK, late_target=0.01)]
    bound = WorkBound(catalog, TASK, POOL)
    below_blind = 0
    for deadline in (2.0, 4.0, 8.0):
        for kind, rate in (("poisson", 300.0), ("gamma", 300.0), ("gamma", 900.0)):
            traces = [workloads.poisson(rate, 300, deadline, N_EXAMPLES, seed) if kind == "poisson" else
                      workloads.gamma(rate, 300, deadline, N_EXAMPLES, seed, cv=4.0) for seed in range(6)]
            limit = float(np.mean([bound.bound(t) for t in traces]))
            blind = chance_bound(catalog, TASK, POOL, deadline, sees_example=False)
            assert limit <= blind + 1e-12
            below_blind += limit < blind - 0.05
            means = [np.mean([_effective(t, policy, catalog, seed=seed) for seed, t in enumerate(traces)])
                     for policy in candidates]
            assert max(means) <= limit + 0.02, (deadline, kind, rate)
    assert below_blind >= 5  # the queue is held where the bounds without one are not (6 of 9 cases)


def test_mixed_deadlines_two_servers_edf_and_dropping_stay_under_it():
    """Neither the queue's order nor dropping expired requests is in the bound: it holds for both."""
    bundle = _bundle(1)
    catalog = prepare(bundle)
    bound = WorkBound(catalog, TASK, POOL)
    for servers, queue, drop in ((1, "fifo", True), (2, "edf", False)):
        traces = []
        for seed in range(6):
            trace = workloads.gamma(600.0 * servers, 300, 4.0, N_EXAMPLES, seed, cv=3.0)
            _, trace["deadline_ms"] = workloads.class_deadlines(len(trace), 4.0, [0.5, 0.5], [0.5, 2.0], seed)
            traces.append(trace)
        limit = float(np.mean([bound.bound(t, servers) for t in traces]))
        for policy in [policies.fixed(c) for c in _ids(bundle)] + [anytime(bundle, TASK)]:
            value = np.mean([_effective(t, policy, catalog, seed=s, servers=servers, queue=queue, drop_expired=drop)
                             for s, t in enumerate(traces)])
            assert value <= limit + 0.02, servers


def test_a_late_limit_serves_only_what_the_late_budget_allows():
    """Draws of 1 or 3 ms, always right, 2 ms to answer, requests far apart (no queue): a served
    request is on time or late with chance 1/2 each, so a policy allowed a share L late serves 2L of
    them and counts L; the late-limited bound without a queue says the same, and the limit is never
    above the bound without it."""
    bundle = toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[1.0, 3.0], correct=np.ones(10, bool))])
    catalog = prepare(bundle)
    trace = pd.DataFrame({"request_id": np.arange(50), "arrival_s": np.arange(50) * 1.0, "deadline_ms": 2.0,
                          "example_id": np.arange(50) % 10})
    bound = WorkBound(catalog, TASK, np.arange(10))
    assert bound.bound(trace) == pytest.approx(0.5)
    for late in (0.0, 0.01, 0.1, 0.3):  # the price search lands within 0.0005 of the kink at 1
        value = bound.bound(trace, late_share=late)
        assert late <= value <= late + 5e-4
        assert value == pytest.approx(late_limited_bound(catalog, TASK, np.arange(10), 2.0, late), abs=5e-4)
    assert bound.bound(trace, late_share=0.9) == pytest.approx(0.5)  # the limit does not bind


def test_no_policy_held_to_its_late_share_beats_the_late_limited_form():
    """Anytime steering its late share to 2 % and to 10 %, under bursts (gamma, CV 4): the mean
    over seeds stays under the late-limited work bound at the late share they reach, which is below
    the bound without the limit where the fastest draws often overrun."""
    bundle = _bundle(0)
    catalog = prepare(bundle)
    bound = WorkBound(catalog, TASK, POOL)
    lowered = 0
    for deadline in (2.0, 4.0):
        traces = [workloads.gamma(300.0, 300, deadline, N_EXAMPLES, seed, cv=4.0) for seed in range(6)]
        for policy in (anytime(bundle, TASK, late_target=0.02), anytime(bundle, TASK, late_target=0.1)):
            runs = [run_metrics(simulate(t, policy, catalog, task=TASK, seed=seed)) for seed, t in enumerate(traces)]
            late = float(np.mean([r["late_rate"] for r in runs]))
            limited = float(np.mean([bound.bound(t, late_share=late) for t in traces]))
            plain = float(np.mean([bound.bound(t) for t in traces]))
            assert limited <= plain + 1e-12
            lowered += limited < plain - 0.01
            assert np.mean([r["effective_accuracy"] for r in runs]) <= limited + 0.02, (deadline, late)
    assert lowered >= 1


def test_coarser_block_edges_only_loosen_it():
    catalog = prepare(_bundle(2))
    trace = workloads.gamma(800.0, 200, 4.0, N_EXAMPLES, 3, cv=4.0)
    values = [WorkBound(catalog, TASK, POOL, block=b).bound(trace) for b in (1, 4, 16, 1000)]
    assert values == sorted(values)
    assert values[-1] == pytest.approx(chance_bound(catalog, TASK, POOL, 4.0, sees_example=False))  # one block


def test_it_refuses_what_it_cannot_bound():
    catalog = prepare(_bundle(0))
    with pytest.raises(ClairvoyantError, match="block must be an integer >= 1"):
        WorkBound(catalog, TASK, POOL, block=0)
    with pytest.raises(ClairvoyantError, match="servers must be an integer >= 1"):
        WorkBound(catalog, TASK, POOL).bound(_burst(5, 4.0, 5), servers=0)
    with pytest.raises(ClairvoyantError, match="example_ids"):
        WorkBound(catalog, TASK, np.array([], dtype=int))
    with pytest.raises(ClairvoyantError, match="deadline"):
        WorkBound(catalog, TASK, POOL).bound(_burst(5, -1.0, 5))
    with pytest.raises(ClairvoyantError, match="late_share must be a share"):
        WorkBound(catalog, TASK, POOL).bound(_burst(5, 4.0, 5), late_share=1.5)
    ordered = prepare(_bundle(0))
    ordered.ordered_samples = True
    with pytest.raises(ClairvoyantError, match="random service draws"):
        WorkBound(ordered, TASK, POOL)


def test_the_offers_use_the_chance_the_bounds_without_a_queue_use():
    from planner.evaluation.clairvoyant import mean_on_time_chance, on_time_chance
    catalog = prepare(_bundle(3))
    for cid in _ids(_bundle(3)):
        served = catalog.resolve(cid)
        deadlines = np.array([0.5, 1.0, 2.0, 3.3, 4.0, 6.5, 9.0, 20.0])
        expected = [on_time_chance(served, POOL, d).mean() for d in deadlines]
        assert mean_on_time_chance(served, POOL, deadlines) == pytest.approx(expected), cid
