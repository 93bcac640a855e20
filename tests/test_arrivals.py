"""The expected arrivals' times learned from the recent gaps (planner.plan.arrivals): Poisson gaps give
back the Poisson law, bursty gaps a burst, the time since the last arrival moves the next one, and the
anytime policy that reads them takes a clump's head in a fast large batch instead of a slow accurate one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammaincinv

from bundles import toy_bundle
from planner import workloads
from planner.plan.anytime import ARRIVAL_LEVELS, anytime
from planner.plan.arrivals import GAP_MEMORY, MIN_GAPS, REFIT_AFTER, EmpiricalArrivals
from planner.plan.failure import PlannerError
from planner.plan.policies import PolicyContext, PolicyNeeds
from planner.serving.outcomes import run_metrics
from planner.serving.simulator import prepare, simulate

TASK = "sst2"
N_EXAMPLES = 400


def _gamma_arrivals(mean_gap_ms: float, cv: float, n: int, seed: int) -> np.ndarray:
    shape = 1.0 / cv**2
    gaps = np.random.default_rng(seed).gamma(shape, mean_gap_ms / shape, n) / 1000.0
    return np.cumsum(gaps)


def _fitted(arrivals_s: np.ndarray) -> EmpiricalArrivals:
    model = EmpiricalArrivals(16, ARRIVAL_LEVELS)
    model.update(arrivals_s.tolist())
    return model


def test_poisson_gaps_give_back_the_poisson_law_of_the_next_arrivals():
    arrivals = _gamma_arrivals(10.0, 1.0, GAP_MEMORY, seed=1)
    table = _fitted(arrivals).times(arrivals[-1])        # at an arrival: age 0
    mean_gap_ms = float(np.diff(arrivals).mean()) * 1000.0
    poisson = gammaincinv(np.arange(1, 17)[None, :], ARRIVAL_LEVELS[:, None]) * mean_gap_ms
    assert table.shape == (len(ARRIVAL_LEVELS), 16) and table.dtype == np.float32
    assert np.all(np.diff(table, axis=1) >= 0) and np.all(np.diff(table, axis=0) >= 0)   # later and higher: later
    # the 4th to 16th arrivals (sums of gaps, where 127 gaps pin the law down) within 20 % of Poisson's
    assert np.allclose(table[:, 3:], poisson[:, 3:], rtol=0.2), (table[:, 3:], poisson[:, 3:])


def test_bursty_gaps_expect_a_clump_at_once_where_the_mean_rate_expects_it_spread_out():
    arrivals = _gamma_arrivals(10.0, 8.0, GAP_MEMORY, seed=2)
    model = _fitted(arrivals)
    table = model.times(arrivals[-1])
    mean_gap_ms = float(np.diff(arrivals).mean()) * 1000.0
    # at the median level the 8th arrival comes within a tenth of the time 8 mean gaps take
    median_row = table[len(ARRIVAL_LEVELS) // 2 - 1]
    assert median_row[7] < 0.1 * 8 * mean_gap_ms, (median_row, mean_gap_ms)
    # long after the last arrival the clump is over: the next one is further off than at the arrival
    late = model.times(arrivals[-1] + 5 * mean_gap_ms / 1000.0)
    assert late[:, 0].mean() > table[:, 0].mean()


def test_no_table_before_enough_gaps_and_refits_only_every_few_arrivals():
    arrivals = _gamma_arrivals(5.0, 2.0, 400, seed=3).tolist()
    model = EmpiricalArrivals(16, ARRIVAL_LEVELS)
    model.update(arrivals[:MIN_GAPS])
    assert model.times(arrivals[MIN_GAPS - 1]) is None          # MIN_GAPS arrivals: MIN_GAPS - 1 gaps
    model.update(arrivals[:MIN_GAPS + 1])
    assert model.times(arrivals[MIN_GAPS]) is not None and model.n_refits == 1
    for k in range(MIN_GAPS + 2, 400):                           # a decision at every arrival
        model.update(arrivals[max(k - GAP_MEMORY, 0):k])
    assert model.n_refits == 1 + (400 - 1 - MIN_GAPS) // REFIT_AFTER
    again = EmpiricalArrivals(16, ARRIVAL_LEVELS)
    again.update(arrivals[-GAP_MEMORY:])
    assert np.array_equal(again.times(arrivals[-1]), _fitted(np.asarray(arrivals[-GAP_MEMORY:])).times(arrivals[-1]))


@pytest.fixture(scope="module")
def bundle():
    """A fast batch-8 model, 80 % correct (2 ms a batch), and a slow accurate batch-1 one, 90 % (10 ms)."""
    rng = np.random.default_rng(0)
    ids = np.arange(N_EXAMPLES)
    return toy_bundle(TASK, [
        {"model": "minilm-l3", "batch_size": 8, "correct": ids % 10 < 8, "samples_ms": rng.normal(2.0, 0.1, 300).clip(1.8)},
        {"model": "mpnet-l12", "batch_size": 1, "correct": ids % 10 < 9, "samples_ms": rng.normal(10.0, 0.5, 300).clip(9.0)},
    ])


def test_at_the_head_of_a_clump_the_policy_that_reads_the_gaps_keeps_the_server_free(bundle):
    """One request waits at the start of a clump, 12 ms to its deadline (as the arrivals have). At
    the mean rate (one arrival per 12 ms) the next arrivals mostly come late enough in the slow model's
    10 ms batch to be served in time behind it; the recent gaps say that several come within a
    millisecond or two, which would wait those 10 ms and miss, so the gap-reading policy takes the
    fast batch."""
    arrivals = _gamma_arrivals(10.0, 8.0, GAP_MEMORY, seed=2)
    now = float(arrivals[-1])
    rate = len(arrivals) / (arrivals[-1] - arrivals[0])
    ctx = PolicyContext(now_s=now, task=TASK, queue_len=1, oldest_slack_ms=12.0, deadline_ms=12.0, request_id=0,
                        idle_servers=1, servers=1, recent_rate_rps=rate, queue_slack_ms=(12.0,),
                        recent_arrivals_s=arrivals.tolist())
    poisson = anytime(bundle, TASK, accuracy_tolerance=0.0)
    empirical = anytime(bundle, TASK, arrival_model="empirical")
    assert empirical.needs.arrival_history == GAP_MEMORY and poisson.needs.arrival_history == 0
    assert "mpnet-l12" in poisson(ctx)
    assert "minilm-l3" in empirical(ctx)


def _served(bundle, cv: float) -> dict[str, float]:
    arrivals = _gamma_arrivals(6.0, cv, 3000, seed=4)
    trace = workloads.make_frame(arrivals, 12.0, np.arange(N_EXAMPLES), seed=4, workload="gamma")
    catalog = prepare(bundle)
    return {model: run_metrics(simulate(trace, anytime(bundle, TASK, arrival_model=model), catalog, seed=4,
                                        task=TASK))["effective_accuracy"] for model in ("poisson", "empirical")}


def test_on_a_bursty_trace_reading_the_gaps_answers_more_correctly_on_time(bundle):
    got = _served(bundle, cv=8.0)   # measured: 0.768 against 0.624
    assert got["empirical"] > got["poisson"] + 0.05, got


def test_on_poisson_arrivals_reading_the_gaps_gives_up_almost_nothing(bundle):
    got = _served(bundle, cv=1.0)   # measured: 0.811 against 0.813 (the estimated law's noise)
    assert got["empirical"] > got["poisson"] - 0.01, got


def test_a_bad_arrival_model_is_refused_by_name(bundle):
    with pytest.raises(PlannerError, match="arrival_model"):
        anytime(bundle, TASK, arrival_model="hawkes")
    with pytest.raises(PlannerError, match="arrival_model"):
        anytime(bundle, TASK, arrival_model="empirical", expected_arrivals=False)
    with pytest.raises(PlannerError, match="arrival_history"):
        PolicyNeeds(arrival_history=-1)
