"""The serving simulator against queueing theory, toys with known answers, and its invariants."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.plan import policies
from planner import workloads
from bundles import synthetic_bundle, toy_bundle
from planner.schema import REQUEST_RESULT_COLUMNS
from planner.plan.policies import OnlinePolicy, PolicyNeeds
from planner.serving.batching import PolicyFailure
from planner.serving.simulator import SimulationError, prepare, simulate
from planner.serving.outcomes import run_metrics

N_EX = 50


def _single(samples_ms, batch=1, model="m", n_examples=N_EX):
    bundle = toy_bundle("sst2", [dict(model=model, batch_size=batch, samples_ms=samples_ms,
                                      correct=np.ones(n_examples, bool))])
    return bundle, bundle.profiles["config_id"].iloc[0]


def _trace(arrivals, deadlines=1000.0, examples=None):
    n = len(arrivals)
    return workloads.make_frame(np.asarray(arrivals, float), deadlines, N_EX, 0, "toy") if examples is None else \
        pd.DataFrame({"request_id": np.arange(n), "arrival_s": arrivals, "deadline_ms": deadlines,
                      "example_id": examples, "workload": "toy", "seed": 0})


def _mean_wait(results):
    return float((results["start_s"] - results["arrival_s"]).mean())


# ---------------------------------------------------------------- closed forms

def test_mm1_mean_wait_matches_closed_form():
    """M/M/1, rho = 0.5, mu = 1/s: Wq = rho / (mu - lambda) = 1 s."""
    rng = np.random.default_rng(7)
    bundle, cid = _single(rng.exponential(1000.0, 1_000_000))  # service ~ Exp(mean 1 s), in ms
    trace = workloads.poisson(0.5, 400_000, 1e9, N_EX, seed=11)
    waits = [_mean_wait(simulate(trace, policies.fixed(cid), bundle, seed=s)) for s in (1, 2)]
    assert np.mean(waits) == pytest.approx(1.0, rel=0.04)


def test_md1_mean_wait_matches_closed_form():
    """M/D/1, rho = 0.7, D = 1 s: Wq = rho / (2 mu (1 - rho)) = 7/6 s (Pollaczek-Khinchine)."""
    bundle, cid = _single(np.full(1000, 1000.0))
    trace = workloads.poisson(0.7, 300_000, 1e9, N_EX, seed=5)
    assert _mean_wait(simulate(trace, policies.fixed(cid), bundle)) == pytest.approx(0.7 / (2 * 0.3), rel=0.04)


def test_mmk_mean_wait_matches_erlang_c():
    """M/M/2 at rho = 0.7 per server: Wq = C(k, a) / (k mu - lambda) with Erlang's C formula."""
    from math import factorial

    k, mu, lam = 2, 1.0, 1.4
    a = lam / mu
    rho = a / k
    top = a**k / factorial(k) / (1 - rho)
    erlang_c = top / (sum(a**i / factorial(i) for i in range(k)) + top)
    expected = erlang_c / (k * mu - lam)
    rng = np.random.default_rng(3)
    bundle, cid = _single(rng.exponential(1000.0, 1_000_000))
    trace = workloads.poisson(lam, 300_000, 1e9, N_EX, seed=9)
    assert _mean_wait(simulate(trace, policies.fixed(cid), bundle, servers=k)) == pytest.approx(expected, rel=0.05)


# ---------------------------------------------------------------- toys with exact answers

def test_batching_is_work_conserving_toy():
    """b = 3, service 1 s: the first request starts alone; the next batch takes everything waiting."""
    bundle, cid = _single(np.full(10, 1000.0), batch=3)
    trace = _trace([0.0, 0.1, 0.2, 0.3, 0.4, 2.5])
    r = simulate(trace, policies.fixed(cid), bundle)
    assert r["start_s"].tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0, 2.0, 3.0])
    assert r["batch_id"].tolist() == [0, 1, 1, 1, 2, 3]
    assert r["latency_ms"].tolist() == pytest.approx([1000, 1900, 1800, 1700, 2600, 1500])


def test_edf_serves_the_urgent_request_first_fifo_does_not():
    bundle, cid = _single(np.full(10, 1000.0))
    trace = _trace([0.0, 0.1, 0.2], deadlines=[5000.0, 5000.0, 2000.0])
    fifo = simulate(trace, policies.fixed(cid), bundle, queue="fifo")
    edf = simulate(trace, policies.fixed(cid), bundle, queue="edf")
    assert fifo["start_s"].tolist() == pytest.approx([0.0, 1.0, 2.0])
    assert edf["start_s"].tolist() == pytest.approx([0.0, 2.0, 1.0])
    assert fifo["status"].tolist() == ["served", "served", "late"]
    assert edf["status"].tolist() == ["served", "served", "served"]


def test_drop_expired_before_service():
    bundle, cid = _single(np.full(10, 1000.0))
    trace = _trace([0.0, 0.1, 0.2], deadlines=[5000.0, 500.0, 5000.0])
    kept = simulate(trace, policies.fixed(cid), bundle)
    dropped = simulate(trace, policies.fixed(cid), bundle, drop_expired=True)
    assert kept["status"].tolist() == ["served", "late", "served"]
    assert dropped["status"].tolist() == ["served", "dropped", "served"]
    assert dropped["start_s"].tolist()[2] == pytest.approx(1.0)  # the dropped one took no server time
    assert pd.isna(dropped["config_id"].iloc[1]) and not dropped["hit"].iloc[1]
    m = run_metrics(dropped)
    assert m["n_dropped"] == 1 and m["hit_rate"] == pytest.approx(2 / 3)
    assert m["cpu_s_per_request"] == pytest.approx(2.0 / 3)


def _cascade_bundle():
    """Small member: 1 ms, right on even examples; large: 10 ms, right on odd ones.

    Small confidence 0.95 on even examples, 0.5 on odd ones; tau = 0.8, so a correct router escalates
    exactly the odd examples and every request is answered correctly.
    """
    ex = np.arange(N_EX)
    even = ex % 2 == 0
    specs = [
        dict(model="small", batch_size=2, samples_ms=np.full(20, 1.0), correct=even,
             confidence=np.where(even, 0.95, 0.5)),
        dict(model="large", batch_size=2, samples_ms=np.full(20, 10.0), correct=~even),
        # the cascade's own measurements are deliberately wrong, so routing by members is visible
        dict(model="x", batch_size=2, samples_ms=np.full(20, 100.0), correct=np.zeros(N_EX, bool),
             cascade=("small", "large", 0.8)),
    ]
    bundle = toy_bundle("sst2", specs)
    return bundle, bundle.profiles["config_id"].iloc[2]


def test_cascade_routes_by_small_member_confidence():
    bundle, cid = _cascade_bundle()
    assert cid == "sst2/cascade:small>large@0.8/torch/fp32/b2/cpu"
    # alone: even example (1 ms), odd example (1 + 10 ms); together in one batch: 11 ms
    trace = _trace([0.0, 1.0, 2.0, 2.0], deadlines=5.0, examples=[4, 7, 2, 3])
    r = simulate(trace, policies.fixed(cid), bundle)
    assert r["escalated"].tolist() == [False, True, False, True]
    assert r["correct"].all()
    assert (r["finish_s"] - r["start_s"]).mul(1000).tolist() == pytest.approx([1.0, 11.0, 11.0, 11.0])
    assert r["batch_id"].tolist() == [0, 1, 2, 2]
    assert r["status"].tolist() == ["served", "late", "late", "late"]
    measured = simulate(trace, policies.fixed(cid), bundle, cascade_mode="measured")
    assert not measured["correct"].any() and not measured["escalated"].any()
    assert (measured["finish_s"] - measured["start_s"]).mul(1000).tolist()[0] == pytest.approx(100.0)


def test_dispatch_overhead_is_charged_once_per_batch_and_queues_like_service():
    """Service 1 s + dispatch 0.25 s: an isolated request takes 1.25 s; a cascade pays it once."""
    bundle, cid = _single(np.full(10, 1000.0), batch=2)
    r = simulate(_trace([0.0, 0.1, 0.2, 5.0]), policies.fixed(cid), bundle, dispatch_overhead_ms=250.0)
    assert r["start_s"].tolist() == pytest.approx([0.0, 1.25, 1.25, 5.0])
    assert r["latency_ms"].tolist() == pytest.approx([1250, 2400, 2300, 1250])
    assert run_metrics(r)["cpu_s_per_request"] == pytest.approx(3 * 1.25 / 4)
    cascade, ccid = _cascade_bundle()
    trace = _trace([0.0, 1.0], deadlines=50.0, examples=[4, 7])
    for engine in ("fast", "event"):
        c = simulate(trace, policies.fixed(ccid), cascade, dispatch_overhead_ms=0.5, engine=engine)
        assert (c["finish_s"] - c["start_s"]).mul(1000).tolist() == pytest.approx([1.5, 11.5])
    with pytest.raises(SimulationError, match="dispatch_overhead_ms must be a finite number >= 0"):
        simulate(trace, policies.fixed(ccid), cascade, dispatch_overhead_ms=-1.0)
    with pytest.raises(SimulationError, match="prepared with dispatch_overhead_ms=0.0"):
        simulate(trace, policies.fixed(ccid), prepare(cascade), dispatch_overhead_ms=0.5)


def test_ordered_samples_replay_a_service_sequence_exactly_in_both_engines():
    """Given the service times batch by batch (as a live replay measured them), the schedule is exact."""
    bundle, cid = _single(np.array([1000.0, 200.0, 300.0]), batch=2)
    catalog = prepare(bundle)
    catalog.ordered_samples = True
    trace = _trace([0.0, 0.1, 0.5, 1.5, 1.6])
    for engine in ("fast", "event"):
        fresh = prepare(bundle)
        fresh.ordered_samples = True
        r = simulate(trace, policies.fixed(cid), fresh, engine=engine)
        assert r["start_s"].tolist() == pytest.approx([0.0, 1.0, 1.0, 1.5, 1.8])
        assert (r["finish_s"] - r["start_s"]).mul(1000).round(6).tolist() == [1000.0, 200.0, 200.0, 300.0, 1000.0]


def test_cascade_engines_agree_and_escalation_rate_matches():
    bundle, cid = _cascade_bundle()
    trace = workloads.poisson(300.0, 3000, 6.0, N_EX, seed=4)
    for servers, drop in ((1, False), (2, True)):
        fast = simulate(trace, policies.fixed(cid), bundle, servers=servers, drop_expired=drop, engine="fast", seed=2)
        event = simulate(trace, policies.fixed(cid), bundle, servers=servers, drop_expired=drop, engine="event", seed=2)
        pd.testing.assert_frame_equal(fast, event)
    done = fast[fast["status"] != "dropped"]
    assert (done["escalated"] == (done["example_id"] % 2 == 1)).all() and done["correct"].all()
    service = (done["finish_s"] - done["start_s"]).mul(1000).round(6)
    has_odd = done.groupby("batch_id")["escalated"].transform("any")
    assert (service[has_odd] == 11.0).all() and (service[~has_odd] == 1.0).all()


def test_cascade_missing_member_is_a_clear_error():
    bundle, cid = _cascade_bundle()
    bundle.samples = bundle.samples[~bundle.samples["config_id"].str.contains("/large/")]
    trace = _trace([0.0], examples=[1])
    with pytest.raises(SimulationError, match="large.*no latency samples"):
        simulate(trace, policies.fixed(cid), bundle, cascade_mode="members")
    # auto falls back to the cascade's own measurements
    assert simulate(trace, policies.fixed(cid), bundle)["latency_ms"].iloc[0] == pytest.approx(100.0)


# ---------------------------------------------------------------- determinism, conservation, engines

@pytest.fixture(scope="module")
def synth_bundle():
    return synthetic_bundle(n_configs=12, n_examples=500)


@pytest.fixture(scope="module")
def synth(synth_bundle):
    return prepare(synth_bundle)


def test_same_seed_same_csv_bytes(synth):
    cid = synth.profiles.index[7]
    trace = workloads.gamma(1500.0, 20_000, 5.0, 500, seed=42, cv=4)
    a = simulate(trace, policies.fixed(cid), synth, seed=3).to_csv(index=False)
    b = simulate(trace, policies.fixed(cid), synth, seed=3).to_csv(index=False)
    c = simulate(trace, policies.fixed(cid), synth, seed=4).to_csv(index=False)
    assert a == b and a != c
    assert workloads.gamma(1500.0, 2000, 5.0, 500, seed=42, cv=4).equals(workloads.gamma(1500.0, 2000, 5.0, 500, seed=42, cv=4))


def test_fast_and_event_engines_agree(synth):
    cid = synth.profiles.index[7]  # batch 4
    trace = workloads.mmpp(1800.0, 20_000, 3.0, 500, seed=1)
    for servers in (1, 2):
        for drop in (False, True):
            fast = simulate(trace, policies.fixed(cid), synth, servers=servers, drop_expired=drop, engine="fast", seed=5)
            event = simulate(trace, policies.fixed(cid), synth, servers=servers, drop_expired=drop, engine="event", seed=5)
            pd.testing.assert_frame_equal(fast, event)


def _check_invariants(r: pd.DataFrame, trace: pd.DataFrame, batch_of: dict[str, int], servers: int):
    assert list(r.columns[: len(REQUEST_RESULT_COLUMNS)]) == list(REQUEST_RESULT_COLUMNS)
    assert sorted(r["request_id"]) == sorted(trace["request_id"])       # every request ends exactly once
    assert r["request_id"].is_unique
    assert set(r["status"]) <= {"served", "late", "dropped"}
    done = r[r["status"] != "dropped"]
    assert (done["start_s"] >= done["arrival_s"] - 1e-12).all()
    assert ((done["latency_ms"] <= done["deadline_ms"]) == done["hit"]).all()
    assert not r.loc[r["status"] == "dropped", "hit"].any()
    sizes = done.groupby("batch_id").agg(n=("request_id", "size"), cfg=("config_id", "first"),
                                         start=("start_s", "first"), finish=("finish_s", "first"),
                                         server=("server", "first"))
    assert (sizes["n"] <= sizes["cfg"].map(batch_of)).all()
    for _, group in sizes.sort_values("start").groupby("server"):
        assert (group["start"].to_numpy()[1:] >= group["finish"].to_numpy()[:-1] - 1e-12).all()  # no overlap
    assert sizes["server"].between(0, servers - 1).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), servers=st.integers(1, 3), queue=st.sampled_from(["fifo", "edf"]),
       drop=st.booleans(), load=st.floats(0.3, 3.0))
def test_conservation_and_invariants_property(synth, synth_bundle, seed, servers, queue, drop, load):
    cid = synth.profiles.index[7]
    batch_of = synth.profiles["batch_size"].to_dict()
    trace = workloads.gamma(load * 2000.0 * servers, 400, [2.0, 6.0] * 200, 500, seed=seed, cv=3)
    r = simulate(trace, policies.slack_aware(synth_bundle, "sst2") if seed % 2 else policies.fixed(cid),
                 synth, servers=servers, queue=queue, drop_expired=drop, seed=seed)
    _check_invariants(r, trace, batch_of, servers)
    m = run_metrics(r)
    assert m["n_late"] + m["n_dropped"] + int(r["hit"].sum()) == len(trace)
    assert 0 <= m["effective_accuracy"] <= m["hit_rate"] <= 1


# ---------------------------------------------------------------- metrics and errors

def test_run_metrics_on_a_hand_table():
    table = pd.DataFrame({
        "request_id": [0, 1, 2, 3], "method": "m", "config_id": ["c", "c", "c", None],
        "start_s": [0.0, 0.0, 1.0, np.nan], "finish_s": [1.0, 1.0, 3.0, np.nan],
        "latency_ms": [1000.0, 1000.0, 2500.0, np.nan], "status": ["served", "served", "late", "dropped"],
        "hit": [True, True, False, False], "correct": [True, False, True, False], "batch_id": [0, 0, 1, -1],
    })
    m = run_metrics(table)
    assert m["hit_rate"] == 0.5 and m["effective_accuracy"] == 0.25
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["n_late"] == 1 and m["n_dropped"] == 1
    assert m["cpu_s_per_request"] == pytest.approx(3.0 / 4)   # batches of 1 s and 2 s
    assert m["throughput_rps"] == pytest.approx(3 / 3.0)       # first arrival 0.0, last finish 3.0
    assert m["lat_p50_ms"] == pytest.approx(1000.0)
    m2 = run_metrics(table.drop(columns="batch_id"))
    assert m2["cpu_s_per_request"] == pytest.approx(m["cpu_s_per_request"])


def test_bad_inputs_are_named(synth):
    cid = synth.profiles.index[0]
    trace = workloads.poisson(100.0, 50, 5.0, 500, seed=0)
    with pytest.raises(SimulationError, match="not in the profiles"):
        simulate(trace, lambda ctx: "nope", synth)
    with pytest.raises(SimulationError, match="queue must be"):
        simulate(trace, policies.fixed(cid), synth, queue="lifo")
    with pytest.raises(SimulationError, match="no prediction for example"):
        simulate(workloads.poisson(100.0, 50, 5.0, 5000, seed=0), policies.fixed(cid), synth)
    with pytest.raises(SimulationError, match="duplicated request_id"):
        simulate(pd.concat([trace, trace]), policies.fixed(cid), synth)
    with pytest.raises(SimulationError, match="servers"):
        simulate(trace, policies.fixed(cid), synth, servers=0)


class Recorder(OnlinePolicy):
    """A dynamic policy that records its contexts (and declares that it needs a 3-request window)."""

    needs = PolicyNeeds(lookahead=3)
    task = "sst2"

    def __init__(self, cid):
        self.cid, self.seen = cid, []

    def __call__(self, ctx):
        self.seen.append(ctx)
        return self.cid


@pytest.mark.parametrize("queue", ["fifo", "edf"])
def test_policy_context_reports_the_queue_in_service_order(queue):
    bundle, cid = _single(np.full(10, 1000.0))
    # one request in service until t=1; four wait, with deadlines out of arrival order
    trace = _trace([0.0, 0.1, 0.2, 0.3, 0.4], deadlines=[9000.0, 9000.0, 3000.0, 5000.0, 2000.0])
    policy = Recorder(cid)
    simulate(trace, policy, bundle, queue=queue)
    first, second = policy.seen[0], policy.seen[1]
    assert (first.now_s, first.queue_len, first.oldest_slack_ms) == (0.0, 1, 9000.0)
    assert second.now_s == 1.0 and second.queue_len == 4 and second.servers == 1
    absolute = {1: 9100.0, 2: 3200.0, 3: 5300.0, 4: 2400.0}  # arrival + deadline, ms
    order = [1, 2, 3, 4] if queue == "fifo" else [4, 2, 3, 1]
    assert second.request_id == order[0]
    assert second.queue_slack_ms == pytest.approx([absolute[r] - 1000.0 for r in order[:3]])
    assert second.oldest_slack_ms == pytest.approx(absolute[order[0]] - 1000.0)
    assert second.recent_rate_rps == pytest.approx(5.0)  # 5 arrivals in the last 1 s window
    assert policies.fixed(cid)(second) == cid


def test_the_recent_arrival_times_reach_only_a_policy_that_asks_for_them():
    bundle, cid = _single(np.full(10, 1000.0))
    arrivals = [0.0, 0.1, 0.2, 0.3, 0.4, 2.5]
    trace = _trace(arrivals, deadlines=[9000.0] * 6)
    asking = Recorder(cid)
    asking.needs = PolicyNeeds(lookahead=3, arrival_history=3)
    simulate(trace, asking, bundle)
    plain = Recorder(cid)
    simulate(trace, plain, bundle)
    # at t=0 one request has arrived; at t=1 five have, of which the last 3 are handed over
    assert [list(c.recent_arrivals_s) for c in asking.seen[:2]] == [[0.0], [0.2, 0.3, 0.4]]
    assert all(c.recent_arrivals_s[-1] <= c.now_s for c in asking.seen)
    assert all(len(c.recent_arrivals_s) == 0 for c in plain.seen)


def test_a_policy_that_raises_is_named_not_a_raw_traceback():
    bundle, cid = _single(np.full(10, 1.0))

    def broken(ctx):
        return 1 / 0

    with pytest.raises(PolicyFailure, match="policy 'broken' raised ZeroDivisionError at t=0.000000 s") as info:
        simulate(_trace([0.0, 0.5]), broken, bundle, task="sst2")
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(PolicyFailure, match="returned 7, not a config_id"):
        simulate(_trace([0.0]), lambda ctx: 7, bundle, task="sst2")


@pytest.mark.timeout(60)
def test_a_zero_batch_size_is_refused_instead_of_looping_forever():
    bundle, cid = _single(np.full(10, 1.0))
    broken = dataclasses.replace(bundle, profiles=bundle.profiles.assign(batch_size=0))  # bypasses the schema
    with pytest.raises(SimulationError, match="batch_size 0.*integer >= 1"):
        simulate(_trace([0.0, 0.1]), policies.fixed(cid), broken, task="sst2")


def test_a_configuration_of_another_task_cannot_serve_the_trace():
    sst2 = synthetic_bundle(n_configs=3, task="sst2", n_examples=50)
    cifar = synthetic_bundle(n_configs=3, task="cifar10", n_examples=50, seed=1)
    both = dataclasses.replace(sst2, profiles=pd.concat([sst2.profiles, cifar.profiles], ignore_index=True),
                               samples=pd.concat([sst2.samples, cifar.samples], ignore_index=True),
                               predictions=pd.concat([sst2.predictions, cifar.predictions], ignore_index=True))
    cifar_config = cifar.profiles["config_id"].iloc[0]
    with pytest.raises(SimulationError, match="a cifar10 configuration, for a sst2 trace"):
        simulate(_trace([0.0, 0.1]), policies.fixed(cifar_config), both, task="sst2")
