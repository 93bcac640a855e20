"""The anytime policy's late-share controller: it steers the member cut-off towards a late target."""

from __future__ import annotations

import numpy as np
import pytest

from bundles import synthetic_bundle
from planner import workloads
from planner.plan.anytime import QUANTILES, AnytimePolicy, anytime
from planner.plan.failure import PlannerError
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
    trace = workloads.poisson(0.8 * 1000.0 / (2.0 * fastest), 3000, 2.5 * fastest, 500, seed=7)
    late = {}
    for name, params in {"fixed": {}, "steered": {"late_target": 0.002}}.items():
        policy = anytime(bundle, TASK, **params)
        late[name] = run_metrics(simulate(trace, policy, catalog, seed=7, task=TASK))["late_rate"]
    assert late["fixed"] > 0.004, late  # the trace is tight enough for the fixed cut-off to be late
    assert late["steered"] < late["fixed"], late
