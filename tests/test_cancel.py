"""Stopping a batch at the deadline (``PolicyNeeds.cancels``): the server is free from then on, the
requests are shed, nobody is answered late, the server time it took is counted, and only where the
runtime and the serving stack can stop a running call."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundles import toy_bundle
from planner import workloads
from planner.evaluation.clairvoyant import chance_bound, late_limited_bound
from planner.evaluation.work_bound import WorkBound
from planner.plan.anytime import anytime
from planner.plan.failure import PlannerError
from planner.plan.policies import OnlinePolicy, PolicyNeeds
from planner.serving.outcomes import run_metrics
from planner.serving.simulator import prepare, simulate

TASK = "sst2"


class _Always(OnlinePolicy):
    """Serves everything on one configuration and asks the server to stop what answers nobody on time."""

    def __init__(self, config_id: str, cancels: bool = True):
        self.config_id, self.name, self.task = config_id, "always", TASK
        self.needs = PolicyNeeds(observes=True, cancels=cancels)
        self.seen: list[tuple] = []

    def __call__(self, ctx) -> str:
        return self.config_id

    def observe(self, config_id, batch_n, service_ms, n_late=0, cancelled=False) -> None:
        self.seen.append((batch_n, round(service_ms, 6), n_late, cancelled))


def _bundle(runtime: str, samples_ms=(5.0,), batch_size: int = 1):
    return toy_bundle(TASK, [dict(model="m", batch_size=batch_size, samples_ms=list(samples_ms),
                                  correct=np.ones(10, bool), runtime=runtime)])


def _two_requests(deadlines=(2.0, 2.0), gap_s=0.0025) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, gap_s], "deadline_ms": list(deadlines),
                         "example_id": [0, 1]})


def test_a_batch_that_answers_nobody_on_time_stops_at_the_deadline_and_frees_the_server():
    bundle = _bundle("onnxruntime")
    cid = bundle.profiles["config_id"].iloc[0]
    policy = _Always(cid)
    rows = simulate(_two_requests(), policy, bundle, task=TASK).set_index("request_id")
    assert rows["status"].tolist() == ["shed", "shed"]
    assert not rows["hit"].any()
    # the first draw (5 ms) is stopped at 2 ms; the second request starts at its arrival, 2.5 ms
    assert rows.loc[0, "finish_s"] == pytest.approx(0.002)
    assert rows.loc[1, "start_s"] == pytest.approx(0.0025) and rows.loc[1, "finish_s"] == pytest.approx(0.0045)
    assert (rows["batch_id"] >= 0).all() and rows["config_id"].notna().all()
    metrics = run_metrics(rows.reset_index())
    assert metrics["n_late"] == 0 and metrics["n_shed"] == 2
    assert metrics["cpu_s_per_request"] == pytest.approx(0.002)  # 2 ms each: the time they ran
    assert policy.seen == [(1, 2.0, 0, True), (1, 2.0, 0, True)]


def test_it_serves_late_where_the_runtime_or_the_server_cannot_stop_a_call_or_the_policy_does_not_ask():
    ort = _bundle("onnxruntime")
    torch = _bundle("torch")
    for bundle, kw, cancels in ((torch, {}, True), (ort, {"can_cancel": False}, True), (ort, {}, False)):
        cid = bundle.profiles["config_id"].iloc[0]
        rows = simulate(_two_requests(), _Always(cid, cancels), bundle, task=TASK, **kw).set_index("request_id")
        assert rows["status"].tolist() == ["late", "late"]
        assert rows.loc[1, "start_s"] == pytest.approx(0.005)  # waited for the whole first draw


def test_a_batch_with_one_request_still_on_time_runs_to_its_end():
    bundle = _bundle("onnxruntime", batch_size=2)
    cid = bundle.profiles["config_id"].iloc[0]
    rows = simulate(_two_requests(deadlines=(2.0, 10.0), gap_s=0.0), _Always(cid), bundle, task=TASK)
    assert sorted(rows["status"]) == ["late", "served"]


def test_anytime_learns_only_a_lower_bound_above_its_estimate_from_a_stopped_batch():
    bundle = _bundle("onnxruntime", samples_ms=(1.0, 2.0, 3.0))
    policy = anytime(bundle, TASK, late_target=0.05)
    cid = policy.front_ids()[0]
    scale, q = policy.estimator_.scale(cid), policy.quantile_
    policy.observe(cid, 1, 0.5, 0, cancelled=True)      # stopped before the median: says nothing
    assert policy.estimator_.scale(cid) == scale and policy.quantile_ == q
    policy.observe(cid, 1, 8.0, 0, cancelled=True)      # ran 8 ms against a 2 ms median: slower
    assert policy.estimator_.scale(cid) > scale
    assert policy.quantile_ == q                        # nobody was answered late
    assert policy.needs.cancels and not anytime(bundle, TASK, cancel_at_deadline=False).needs.cancels


def test_stopping_at_the_deadline_turns_late_answers_into_tries_and_stays_under_the_work_bound():
    """Draws of 1 or 3 ms for a 2 ms deadline under load: the same anytime policy with the server
    stopping overrunning draws answers nobody late and at least as many on time as without, and its
    mean stays under the work bound (which charges a try only the time its deadline left)."""
    bundle = _bundle("onnxruntime", samples_ms=(1.0, 3.0))
    catalog = prepare(bundle)
    traces = [workloads.poisson(400.0, 300, 2.0, 10, seed) for seed in range(6)]
    limit = float(np.mean([WorkBound(catalog, TASK, np.arange(10)).bound(t) for t in traces]))
    runs = {cancel: [run_metrics(simulate(t, anytime(bundle, TASK, late_target=0.01), catalog, task=TASK, seed=s,
                                          can_cancel=cancel)) for s, t in enumerate(traces)]
            for cancel in (True, False)}
    with_stop = np.mean([m["effective_accuracy"] for m in runs[True]])
    without = np.mean([m["effective_accuracy"] for m in runs[False]])
    assert sum(m["n_late"] for m in runs[True]) == 0
    assert with_stop >= without
    assert with_stop <= limit + 0.02


def test_the_late_limit_does_not_bind_a_call_the_server_can_stop():
    """Draws of 1 or 3 ms for 2 ms: held to 1 % late, a policy whose calls run to their end can count
    on 1 % at most (it serves 2 %, half of them late), one whose calls the server stops on every
    request's chance (nobody is answered late), so the late-limited bounds, in expectation and with
    the queue, stay bounds for a policy that has its calls stopped."""
    trace = pd.DataFrame({"request_id": np.arange(50), "arrival_s": np.arange(50) * 1.0, "deadline_ms": 2.0,
                          "example_id": np.arange(50) % 10})
    for runtime, expected in (("torch", 0.01), ("onnxruntime", 0.5)):
        catalog = prepare(_bundle(runtime, samples_ms=(1.0, 3.0)))
        assert late_limited_bound(catalog, TASK, np.arange(10), 2.0, 0.01) == pytest.approx(expected)
        assert WorkBound(catalog, TASK, np.arange(10)).bound(trace, late_share=0.01) == pytest.approx(expected, abs=5e-4)
    assert chance_bound(catalog, TASK, np.arange(10), 2.0, sees_example=False) == pytest.approx(0.5)


def test_a_stoppable_one_request_call_is_tried_where_the_usual_cut_off_would_shed():
    """Draws of 1 or 3 ms for a 2 ms deadline, no queue: at the usual member cut-off (the 0.65
    quantile, 2.3 ms) every request is shed. With ``stoppable_quantile`` an ONNX Runtime call is tried
    from its 5 % quantile (1.1 ms), since the server stops the 3 ms draws at the deadline: about half are
    answered on time and none late. A PyTorch call cannot be stopped, so it keeps the usual cut-off."""
    trace = pd.DataFrame({"request_id": np.arange(200), "arrival_s": np.arange(200) * 0.01, "deadline_ms": 2.0,
                          "example_id": np.arange(200) % 10})
    for runtime, tried in (("onnxruntime", True), ("torch", False)):
        bundle = _bundle(runtime, samples_ms=(1.0, 3.0))
        catalog = prepare(bundle)
        usual = run_metrics(simulate(trace, anytime(bundle, TASK), catalog, task=TASK, seed=0))
        policy = anytime(bundle, TASK, stoppable_quantile=0.05)
        cut = policy.member_cutoff_ms(policy.front_ids()[0])   # at the profile's speed, before any batch
        stoppable = run_metrics(simulate(trace, policy, catalog, task=TASK, seed=0))
        assert usual["n_shed"] == 200 and usual["n_late"] == 0
        assert stoppable["n_late"] == 0
        if tried:
            assert cut == pytest.approx(1.1)
            assert 0.3 < stoppable["effective_accuracy"] < 0.7
        else:
            assert cut == pytest.approx(2.3)
            assert stoppable["n_shed"] == 200


def test_stoppable_quantile_needs_a_known_quantile_and_the_server_stopping_calls():
    bundle = _bundle("onnxruntime")
    with pytest.raises(PlannerError, match="stoppable_quantile"):
        anytime(bundle, TASK, stoppable_quantile=0.1)
    with pytest.raises(PlannerError, match="cancel_at_deadline"):
        anytime(bundle, TASK, stoppable_quantile=0.05, cancel_at_deadline=False)
