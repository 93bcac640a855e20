"""The anytime policy's continuation valuation: a slow configuration pays for the server time it takes
from the requests behind it and from the arrivals expected meanwhile (at the recent deadline mix)."""

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
    return fast_and_accurate_bundle(TASK, N_EXAMPLES, (1.0, 0.05, 0.8), (30.0, 1.0, 25.0))  # fast 80 % / 30x slower 90 %


def _ctx(deadline_ms: float, rate_rps: float) -> PolicyContext:
    return PolicyContext(now_s=0.0, task=TASK, queue_len=1, oldest_slack_ms=deadline_ms, deadline_ms=deadline_ms,
                         request_id=0, idle_servers=1, servers=1, recent_rate_rps=rate_rps,
                         queue_slack_ms=(deadline_ms,))


def test_a_relaxed_request_gets_the_slow_model_only_when_no_tight_arrival_pays_for_it(bundle):
    plain = anytime(bundle, TASK, continuation=False, expected_arrivals=False)
    costed = anytime(bundle, TASK)  # the defaults: continuation and expected arrivals
    for _ in range(8):  # the recent mix: tight requests (5 ms) at the head
        costed(_ctx(5.0, 100.0))
    relaxed = _ctx(100.0, 100.0)
    assert "mpnet-l12" in plain(relaxed)      # alone in the queue, it fits: the whole window looks free
    assert "minilm-l3" in costed(relaxed)     # 3 tight arrivals expected during its 30 ms: they would miss
    quiet = anytime(bundle, TASK)
    assert "mpnet-l12" in quiet(_ctx(100.0, 0.0))  # nothing arriving: the accuracy gain costs nobody


def test_on_a_trace_of_tight_and_relaxed_requests_the_continuation_answers_more_correctly_on_time(bundle):
    rng = np.random.default_rng(5)
    n = 1500
    deadlines = np.where(rng.random(n) < 0.5, 5.0, 100.0)
    trace = workloads.poisson(60.0, n, deadlines, np.arange(N_EXAMPLES), seed=5)
    catalog = prepare(bundle)
    result = {}
    for name, params in {"plain": {"continuation": False, "expected_arrivals": False}, "continuation": {}}.items():
        result[name] = run_metrics(simulate(trace, anytime(bundle, TASK, **params), catalog, seed=5, task=TASK))
    assert result["continuation"]["effective_accuracy"] > result["plain"]["effective_accuracy"] + 0.05, result
