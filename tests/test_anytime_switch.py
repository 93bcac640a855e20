"""The anytime policy learns what a switch between configurations costs and makes a switch earn it."""

from __future__ import annotations

import numpy as np
import pytest

from bundles import fast_and_accurate_bundle
from planner import workloads
from planner.plan.anytime import anytime
from planner.plan.policies import PolicyContext
from planner.serving.outcomes import run_metrics
from planner.serving.simulator import prepare, simulate

TASK = "sst2"
N_EXAMPLES = 400


@pytest.fixture(scope="module")
def bundle():
    return fast_and_accurate_bundle(TASK, N_EXAMPLES, (1.0, 0.02, 0.9), (3.0, 0.06, 2.7))  # fast 80 % / 3x slower 90 %


def _ctx(deadline_ms: float) -> PolicyContext:
    return PolicyContext(now_s=0.0, task=TASK, queue_len=1, oldest_slack_ms=deadline_ms, deadline_ms=deadline_ms,
                         request_id=0, idle_servers=1, servers=1, recent_rate_rps=0.0,
                         queue_slack_ms=(deadline_ms,))


def _ids(policy) -> tuple[str, str]:
    small = next(c for c in policy.table_["config_id"] if "minilm-l3" in c)
    large = next(c for c in policy.table_["config_id"] if "mpnet-l12" in c)
    return small, large


def _serve_in_runs(policy, small: str, large: str, cycles: int = 40) -> None:
    """Runs of three batches per configuration; the large one's first batch of a run takes 5x its
    3 ms (cold caches), the small one's does not."""
    for _ in range(cycles):
        for _ in range(3):
            policy.observe(small, 1, 1.0)
        for i in range(3):
            policy.observe(large, 1, 15.0 if i == 0 else 3.0)


def test_a_learned_switch_cost_keeps_the_policy_on_the_configuration_it_serves(bundle):
    policy = anytime(bundle, TASK)
    small, large = _ids(policy)
    assert policy(_ctx(10.0)) == large          # 3 ms fits a 10 ms deadline: the accurate one
    _serve_in_runs(policy, small, large)
    factors = policy.switch_factors()
    # the cost is learned for the configuration that pays it (the shrinkage leaves part of it machine-wide)
    assert 3.5 < factors[large] < 5.5 and factors[small] < 1.5
    # the service-time estimate stays the warm one: the switch is charged to switching, not to the model
    assert policy.estimator_.scale(large) == pytest.approx(1.0, rel=0.15)
    policy.observe(small, 1, 1.0)               # just served the small one: switching would take ~15 ms
    assert policy(_ctx(10.0)) == small
    assert policy(_ctx(40.0)) == large          # with room for the switch, accuracy wins again
    policy.observe(large, 1, 15.0)              # just served the large one: staying costs no switch
    assert policy(_ctx(10.0)) == large
    blind = anytime(bundle, TASK, switch_aware=False)
    _serve_in_runs(blind, small, large)
    blind.observe(small, 1, 1.0)
    assert blind(_ctx(10.0)) == large           # blind to the switch: it takes ~15 ms and answers late
    assert blind.estimator_.scale(large) > 1.3  # and the cold batches make the model look slow even warm


def test_without_a_switch_cost_switch_awareness_changes_nothing_in_the_simulator(bundle):
    """The simulator's draws carry no switching cost: the learned factors stay at noise level and the
    results match the policy without the rule."""
    rng = np.random.default_rng(3)
    n = 1500
    deadlines = np.where(rng.random(n) < 0.5, 2.5, 20.0)
    trace = workloads.poisson(150.0, n, deadlines, np.arange(N_EXAMPLES), seed=3)
    catalog = prepare(bundle)
    aware, blind = anytime(bundle, TASK), anytime(bundle, TASK, switch_aware=False)
    a = run_metrics(simulate(trace, aware, catalog, seed=3, task=TASK))
    b = run_metrics(simulate(trace, blind, catalog, seed=3, task=TASK))
    assert max(aware.switch_factors().values()) < 1.05
    assert a["effective_accuracy"] == pytest.approx(b["effective_accuracy"], abs=0.005)


def test_a_policy_that_sheds_everything_probes_and_recovers_its_calibration(bundle):
    """Shedding must not blind the calibration: with a start-up prior 20x too slow every request looks
    hopeless, so without probes nothing would ever be served and the scale never corrected."""
    trace = workloads.poisson(100.0, 1500, np.full(1500, 10.0), np.arange(N_EXAMPLES), seed=4)
    stale = anytime(bundle, TASK, startup_scale=20.0)
    assert stale.shed_below_ms() > 10.0  # every 10 ms request is below the threshold at first
    stale = anytime(bundle, TASK, startup_scale=20.0)
    rows = simulate(trace, stale, prepare(bundle), seed=4, task=TASK)
    small, large = _ids(stale)
    assert stale.n_probes >= 1 and np.exp(stale.estimator_.log_global) < 1.2  # the machine scale is corrected
    assert (rows["status"] == "served").mean() > 0.9
    assert (rows["config_id"] == large).mean() > 0.8  # so the accurate model, never served at first, is back
    assert run_metrics(rows)["effective_accuracy"] > 0.8


def test_a_probe_takes_both_thresholds_at_the_profiled_speed(bundle):
    policy = anytime(bundle, TASK, startup_scale=20.0)  # a stale prior: the threshold is above 10 ms
    high = policy.shed_below_ms()
    assert high > 10.0
    for i in range(31):                         # more picks without a batch served
        assert policy.shed_below_ms() == pytest.approx(high)
        if i % 2:                               # a pick may reach a decision and still shed every member
            assert policy.member_cutoff_ms(policy(_ctx(10.0))) > 10.0
    probe = policy.shed_below_ms()              # the 33rd: a probe at the profile's speed
    assert probe < 1.0 and policy.n_probes == 1
    chosen = policy(_ctx(10.0))
    assert policy.member_cutoff_ms(chosen) < 10.0   # its members are kept
    assert policy.shed_below_ms() == pytest.approx(high) and policy.member_cutoff_ms(chosen) > 10.0
    policy.observe(chosen, 1, 1.0)              # a batch served: the count starts again
    assert all(policy.shed_below_ms() > 1.0 for _ in range(32))


def test_a_slowdown_learned_by_the_machine_scale_leaves_it_when_one_configuration_runs_fast_again():
    """Served alone, one configuration cannot tell the machine scale from its own residual; the
    residual's shrinkage puts a shared recovery back into the machine scale."""
    from planner.plan.anytime import ServiceTimeEstimator

    estimator = ServiceTimeEstimator({"a": 1.0, "b": 5.0}, halflife=8.0, startup_scale=10.0)
    for _ in range(200):
        estimator.observe("a", 1.0)  # "a" runs at its profiled speed; "b" is never served
    assert estimator.scale("a") == pytest.approx(1.0, rel=0.05)
    assert estimator.scale("b") < 1.3  # not still 10x, as without shrinkage (it keeps coming down)


def test_a_probe_chooses_at_the_hopeful_speed_so_that_its_request_is_served():
    """Measured live (CIFAR-10, 3 ms): with the learned scale blind, a probe that chose at that scale
    valued every candidate late, fell to the drain configuration (batch 8, slower than the slack) and
    shed its request as a batch member, so no batch was ever served again. The probe chooses at the
    speed its thresholds use."""
    from bundles import toy_bundle

    ids = np.arange(N_EXAMPLES)
    rng = np.random.default_rng(0)
    bundle = toy_bundle(TASK, [
        {"model": "minilm-l3", "batch_size": 1, "correct": ids % 10 < 8, "samples_ms": rng.normal(1.5, 0.05, 300)},
        {"model": "minilm-l3", "batch_size": 8, "correct": ids % 10 < 8, "samples_ms": rng.normal(6.0, 0.2, 300)},
    ])
    policy = anytime(bundle, TASK, late_target=0.009, late_step=0.03)
    single, drain = (next(c for c in policy.table_["config_id"] if f"/b{b}/" in c) for b in (1, 8))
    for _ in range(60):                          # a slowdown: every batch 10x slow and late
        policy.observe(single, 1, 15.0, n_late=1)
    assert policy.shed_below_ms() > 3.0 and policy.quantile_ == pytest.approx(0.95)
    assert policy(_ctx(3.0)) == drain            # blind: nothing fits, so the fastest to clear the queue
    for _ in range(31):
        policy.shed_below_ms()
    assert policy.shed_below_ms() < 3.0 and policy.n_probes == 1   # the probe admits the request
    chosen = policy(_ctx(3.0))
    assert chosen == single and policy.member_cutoff_ms(chosen) < 3.0  # and serves it
    assert policy.member_cutoff_ms(drain) > 3.0  # the drain's batch would have shed it


@pytest.mark.parametrize("geometric", [False, True])
def test_the_profiles_own_two_humped_draws_teach_scale_one_only_against_their_geometric_mean(geometric):
    """A configuration whose time has two humps (a cascade: most requests stop at the first stage, some
    pay the second too) has its median in the lower hump. The log-space calibration settles at the mean
    log ratio, so against the median its own profile's draws teach a scale above 1 (here about
    exp(0.3 * log 3) = 1.39); against the geometric mean they teach 1."""
    from bundles import toy_bundle

    ids = np.arange(N_EXAMPLES)
    rng = np.random.default_rng(1)
    draws = np.where(rng.random(2000) < 0.3, 3.0, 1.0) * rng.lognormal(0.0, 0.02, 2000)
    bundle = toy_bundle(TASK, [{"model": "minilm-l3", "batch_size": 1, "correct": ids % 10 < 8, "samples_ms": draws}])
    policy = anytime(bundle, TASK, geometric_reference=geometric)
    (config,) = policy.table_["config_id"]
    log_scales = []
    for ms in rng.choice(draws, 6000):
        policy.observe(config, 1, float(ms))
        log_scales.append(np.log(policy.estimator_.scale(config)))
    learned = np.exp(np.mean(log_scales[2000:]))  # after the start, averaged over the estimate's swings
    if geometric:
        assert learned == pytest.approx(1.0, abs=0.08)
    else:
        assert learned == pytest.approx(3.0 ** 0.3, abs=0.1)
