"""The anytime policy's late-share controller: it steers the member cut-off towards a late target."""

from __future__ import annotations

import numpy as np
import pytest

from bundles import synthetic_bundle, toy_bundle
from planner import workloads
from planner.plan.anytime import QUANTILES, AnytimePolicy, anytime
from planner.plan.failure import PlannerError
from planner.plan.policies import PolicyContext
from planner.serving.outcomes import run_metrics
from planner.serving.simulator import prepare, simulate

TASK = "sst2"


@pytest.fixture(scope="module")
def bundle():
    return synthetic_bundle(n_configs=12, seed=3)


def test_late_answers_raise_the_cut_off_quantile_and_on_time_ones_lower_it_within_the_table(bundle):
    policy = anytime(bundle, TASK, late_target=0.01, late_step=0.05)
    cid = policy._all_ids[0]
    typical = policy._reference[cid]  # its profiled median: the service-time calibration does not move
    start, cut = policy.quantile_, policy.member_cutoff_ms(cid)
    assert start == policy.member_quantile
    policy.observe(cid, 4, typical, n_late=1)
    assert policy.quantile_ == pytest.approx(start + 0.05 * (1 - 3 * 0.01 / 0.99))
    assert policy.member_cutoff_ms(cid) > cut  # a higher quantile sheds more of the tight requests
    for _ in range(200):
        policy.observe(cid, 8, 1.0, n_late=8)
    assert policy.quantile_ == QUANTILES[-1]
    for _ in range(100_000):
        policy.observe(cid, 8, 1.0, n_late=0)
    assert policy.quantile_ == 0.5
    assert policy.fresh().quantile_ == policy.member_quantile  # a new trace starts from the prior


def test_without_a_target_the_cut_off_stays_at_the_member_quantile(bundle):
    policy = anytime(bundle, TASK)
    cid = policy._all_ids[0]
    policy.observe(cid, 4, 1.0, n_late=4)
    assert policy.quantile_ == policy.member_quantile


@pytest.mark.parametrize("bad", [{"late_target": 0.0}, {"late_target": 1.5}, {"late_step": 0.0},
                                 {"late_target": 0.01, "member_quantile": None}])
def test_bad_controller_settings_are_named(bad):
    with pytest.raises(PlannerError, match="late_target|late_step"):
        AnytimePolicy(TASK, **bad)


def test_on_a_tight_trace_the_controller_serves_fewer_requests_late(bundle):
    catalog = prepare(bundle)
    fastest = float(bundle.profiles["lat_p50_ms"].min())
    trace = workloads.poisson(0.8 * 1000.0 / (2.0 * fastest), 3000, 2.0 * fastest, 500, seed=7)
    late = {}
    for name, params in {"fixed": {}, "steered": {"late_target": 0.002}}.items():
        policy = anytime(bundle, TASK, **params)
        late[name] = run_metrics(simulate(trace, policy, catalog, seed=7, task=TASK))["late_rate"]
    assert late["fixed"] > 0.004, late  # the trace is tight enough for the fixed cut-off to be late
    assert late["steered"] < late["fixed"], late


def test_a_choice_does_not_take_a_configuration_whose_cut_off_would_shed_its_head():
    """Measured live (SST-2 over HTTP, 50 q/s, 20 ms): after a few late answers had raised the cut-off
    quantile, the choice kept the most accurate configuration, whose cut-off at that quantile shed its
    one waiting request, pick after pick, while a cheaper one met every cut-off."""
    ids = np.arange(400)
    rng = np.random.default_rng(0)
    escalating = np.concatenate([rng.normal(4.0, 0.2, 276), rng.normal(15.0, 0.5, 24)])  # 8 % take 15 ms
    bundle = toy_bundle(TASK, [
        {"model": "minilm-l3", "batch_size": 1, "correct": ids % 10 < 6, "samples_ms": rng.normal(1.5, 0.05, 300)},
        {"model": "minilm-l6", "batch_size": 1, "correct": ids % 10 < 9, "samples_ms": escalating},
    ])
    policy = anytime(bundle, TASK, late_target=0.009, late_step=0.03)
    small, large = (next(c for c in policy.table_["config_id"] if m in c) for m in ("minilm-l3", "minilm-l6"))
    ctx = PolicyContext(now_s=0.0, task=TASK, queue_len=1, oldest_slack_ms=10.0, deadline_ms=10.0, request_id=0,
                        idle_servers=1, servers=1, recent_rate_rps=0.0, queue_slack_ms=(10.0,))
    assert policy(ctx) == large and policy.member_cutoff_ms(large) < 10.0
    for _ in range(20):  # late answers at the profiled speed: q rises, the scale stays
        policy.observe(large, 1, policy._reference[large], n_late=1)
    assert policy.quantile_ == QUANTILES[-1] and policy.member_cutoff_ms(large) > 10.0
    chosen = policy(ctx)
    assert chosen == small and policy.member_cutoff_ms(chosen) <= 10.0


def test_requests_too_late_for_every_cut_off_do_not_hold_up_those_behind_them():
    """Measured in the simulator (CIFAR-10 at 2 ms, load 1.3): when the oldest waiting requests had
    too little slack for any configuration's cut-off, the choice valued every request behind them as
    served after them, found nothing worth serving, fell to the largest batch, and its cut-off shed the
    whole queue, requests with twice the fast configuration's service time left included."""
    ids = np.arange(400)
    rng = np.random.default_rng(1)
    bundle = toy_bundle(TASK, [
        {"model": "minilm-l3", "batch_size": 1, "correct": ids % 10 < 8, "samples_ms": rng.normal(1.0, 0.02, 300)},
        {"model": "minilm-l3", "batch_size": 8, "correct": ids % 10 < 8, "samples_ms": rng.normal(3.0, 0.05, 300)},
    ])
    slacks = (0.5, 0.6, 2.5, 2.6)
    ctx = PolicyContext(now_s=0.0, task=TASK, queue_len=len(slacks), oldest_slack_ms=slacks[0], deadline_ms=3.0,
                        request_id=0, idle_servers=1, servers=1, recent_rate_rps=0.0, queue_slack_ms=slacks)
    policy = anytime(bundle, TASK, expected_arrivals=False, shed_frees_time=True)
    chosen = policy(ctx)
    assert "/b1/" in chosen and policy.member_cutoff_ms(chosen) <= slacks[2]  # the third request is served
    before = anytime(bundle, TASK, expected_arrivals=False)  # the rule before: everything shed
    chosen_before = before(ctx)
    assert "/b8/" in chosen_before and before.member_cutoff_ms(chosen_before) > max(slacks)
