"""The clairvoyant bound: never below a simulated run, exact on tiny traces, tight where it can be."""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from bundles import synthetic_bundle, toy_bundle
from planner import workloads
from planner.evaluation.clairvoyant import (ClairvoyantError, chance_bound, clairvoyant_bound, expected_bounds,
                                           late_chance, late_limited_bound, on_time_chance)
from planner.plan import DeadlinePlanner, policies
from planner.plan.anytime import anytime
from planner.schema import config_id
from planner.serving.outcomes import run_metrics
from planner.serving.simulator import SimulationError, prepare, simulate

TASK = "sst2"
N_EXAMPLES = 60
TOL = 1e-9


def _bundle(seed: int, deterministic: bool = False):
    """Three plain configurations (batch 1, 4, 8) and a routed cascade (batch 4), correlated outcomes.

    ``deterministic``: every configuration's samples are one value, so service times are known.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.random(N_EXAMPLES)

    def correct(acc: float) -> np.ndarray:
        return (difficulty < acc) ^ (rng.random(N_EXAMPLES) < 0.1)

    def samples(ms: float) -> np.ndarray:
        return np.array([ms]) if deterministic else ms * rng.lognormal(0.0, 0.2, 50)

    confidence = np.where(difficulty < 0.5, rng.uniform(0.8, 1.0, N_EXAMPLES), rng.uniform(0.3, 0.9, N_EXAMPLES))
    specs = [
        dict(model="fast", batch_size=1, samples_ms=samples(1.0), correct=correct(0.6)),
        dict(model="mid", batch_size=4, samples_ms=samples(2.5), correct=correct(0.75)),
        dict(model="big", batch_size=8, samples_ms=samples(6.0), correct=correct(0.9)),
        dict(model="small", batch_size=4, samples_ms=samples(1.5), correct=correct(0.65), confidence=confidence),
        dict(model="large", batch_size=4, samples_ms=samples(5.0), correct=correct(0.9)),
        dict(model="cascade", batch_size=4, samples_ms=samples(3.0), correct=correct(0.85),
             cascade=("small", "large", 0.7)),
    ]
    return toy_bundle(TASK, specs)


def _ids(bundle) -> list[str]:
    return bundle.profiles["config_id"].tolist()


def _trace(rng: np.random.Generator, n: int, deadline_ms: float | np.ndarray) -> pd.DataFrame:
    rate = float(rng.choice([200.0, 800.0, 2000.0, 5000.0]))
    seed = int(rng.integers(0, 2**31))
    if rng.random() < 0.5:
        return workloads.poisson(rate, n, deadline_ms, N_EXAMPLES, seed)
    return workloads.gamma(rate, n, deadline_ms, N_EXAMPLES, seed, cv=3.0)


def _peeking(trace: pd.DataFrame, catalog, ids: list[str]) -> policies.Policy:
    """A clairvoyant policy the simulator can run: it looks up whether each configuration answers
    the head request correctly and takes the fastest one that does."""
    example = dict(zip(trace["request_id"], trace["example_id"]))
    by_speed = sorted(ids, key=lambda c: catalog.resolve(c).samples_s.min())

    def policy(ctx) -> str:
        eid = np.array([example[ctx.request_id]])
        for cid in by_speed:
            if catalog.resolve(cid).outcome(eid)[0][0]:
                return cid
        return by_speed[0]
    return policy


def _effective(trace, policy, catalog, **kw) -> float:
    return run_metrics(simulate(trace, policy, catalog, task=TASK, **kw))["effective_accuracy"]


# ---------------------------------------------------------------- the bound holds

@pytest.mark.parametrize("bundle_seed", [0, 1])
def test_bound_is_never_below_a_simulated_run(bundle_seed):
    """Every fixed configuration, the static planner, slack-aware (both rules) and a policy that
    peeks at correctness: none beats the bound, for any seed, 1 or 2 servers, FIFO or EDF, with
    or without dropping expired requests; tiny traces take the exact method, larger ones the LP."""
    bundle = _bundle(bundle_seed)
    catalog = prepare(bundle)
    ids = _ids(bundle)
    planner = policies.static(DeadlinePlanner(95).fit(bundle.profiles), TASK)
    rng = np.random.default_rng(100 + bundle_seed)
    tight = 0
    for case in range(12):
        n = int(rng.choice([6, 10, 60, 150]))
        trace = _trace(rng, n, float(rng.choice([4.0, 8.0, 20.0])))
        queue, drop = str(rng.choice(["fifo", "edf"])), bool(rng.random() < 0.5)
        candidates = [policies.fixed(c) for c in ids] + [
            planner, policies.slack_aware(bundle, TASK), policies.slack_aware(bundle, TASK, rule="drain"),
            _peeking(trace, catalog, ids), anytime(bundle, TASK),  # sheds and answers early from a cascade
            anytime(bundle, TASK, early_answers=False, shed=False, expected_arrivals=True)]
        for servers in (1, 2):
            bound = clairvoyant_bound(trace, catalog, TASK, servers=servers)
            assert bound.method == ("exact" if n <= 12 else "lp")
            best = 0.0
            for seed in (0, 1):
                for policy in candidates:
                    value = _effective(trace, policy, catalog, servers=servers, queue=queue, seed=seed,
                                       drop_expired=drop)
                    assert value <= bound.effective_accuracy + 1e-12, (case, servers, seed, queue, drop)
                    best = max(best, value)
            tight += bound.effective_accuracy - best < 0.05
    assert tight >= 6  # the bound is not vacuous: often within 5 points of a policy


def test_capacity_binds_exactly_when_everything_arrives_at_once():
    """100 requests at t = 0, deadline 50 ms, one batch-1 configuration of exactly 10 ms that is
    always right: 5 requests per server fit, and dropping expired requests achieves it."""
    bundle = toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[10.0], correct=np.ones(5, bool))])
    trace = pd.DataFrame({"request_id": np.arange(100), "arrival_s": 0.0, "deadline_ms": 50.0,
                          "example_id": np.arange(100) % 5})
    for servers in (1, 2):
        bound = clairvoyant_bound(trace, bundle, TASK, servers=servers)
        assert bound.method == "lp"
        assert bound.effective_accuracy == pytest.approx(5 * servers / 100)
        assert bound.trivial == 1.0
        achieved = _effective(trace, policies.fixed(_ids(bundle)[0]), bundle, servers=servers, drop_expired=True)
        assert achieved == pytest.approx(bound.effective_accuracy)


def _groups(sizes: list[int], deadline_ms: float, gap_s: float = 0.1, examples: int = 5) -> pd.DataFrame:
    """Bursts of simultaneous requests, far enough apart not to interact."""
    arrival = np.repeat(np.arange(len(sizes)) * gap_s, sizes)
    return pd.DataFrame({"request_id": np.arange(len(arrival)), "arrival_s": arrival, "deadline_ms": deadline_ms,
                         "example_id": np.arange(len(arrival)) % examples})


@pytest.mark.parametrize("servers", [1, 2])
def test_bound_is_tight_when_batching_is_all_it_takes(servers):
    """Batch 4, 3.999 ms, always right, deadline 4 ms: each burst gets one batch per server.

    A burst of 3 must share one batch (a request's share is 4/3 ms, not 4/4); a burst of 6 gets
    4 per server. Dropping expired requests achieves exactly the bound. (The fluid relaxation
    ignores that batches are whole: with a deadline of 1.5 batches it would allow 1.5 batches.)"""
    bundle = toy_bundle(TASK, [dict(model="b4", batch_size=4, samples_ms=[3.999], correct=np.ones(5, bool))])
    sizes = [3, 6, 1, 4, 9]
    trace = _groups(sizes, 4.0)
    bound = clairvoyant_bound(trace, bundle, TASK, servers=servers)
    expected = sum(min(size, 4 * servers) for size in sizes) / sum(sizes)
    assert bound.effective_accuracy == pytest.approx(expected)
    achieved = _effective(trace, policies.fixed(_ids(bundle)[0]), bundle, servers=servers, drop_expired=True)
    assert achieved == pytest.approx(expected)
    # two rounds of batches fit in 8 ms
    trace = _groups(sizes, 8.0)
    expected = sum(min(size, 8 * servers) for size in sizes) / sum(sizes)
    assert clairvoyant_bound(trace, bundle, TASK, servers=servers).effective_accuracy == pytest.approx(expected)
    assert _effective(trace, policies.fixed(_ids(bundle)[0]), bundle, servers=servers, drop_expired=True) \
        == pytest.approx(expected)


def test_cascade_requests_that_escalate_pay_both_members():
    """Deadline 3 ms between the small member (1.5 ms) and small + large (6.5 ms): only requests
    the small member keeps and answers correctly can count, and a lone cascade batch gets them."""
    bundle = _bundle(4, deterministic=True)
    catalog = prepare(bundle)
    cascade = [c for c in _ids(bundle) if "cascade:" in c]
    trace = _groups([1] * 80, 3.0, gap_s=0.05, examples=N_EXAMPLES)              # sparse: every batch holds one request
    bound = clairvoyant_bound(trace, catalog, TASK, config_ids=cascade)
    served = catalog.resolve(cascade[0])
    correct, escalated = served.outcome(trace.sort_values("request_id")["example_id"].to_numpy())
    assert served.routed and escalated.any() and (correct & ~escalated).any()
    assert bound.trivial == pytest.approx((correct & ~escalated).mean())
    assert bound.effective_accuracy == pytest.approx(bound.trivial)
    assert _effective(trace, policies.fixed(cascade[0]), catalog) == pytest.approx(bound.effective_accuracy)


def test_a_routed_cascade_without_its_members_is_refused():
    """Early answers are bounded through the members' own rows: a profile that routes a cascade whose
    small member it does not list would give a bound an early-answering policy can beat."""
    bundle = _bundle(4, deterministic=True)
    small = next(c for c in _ids(bundle) if "/small/" in c)
    clairvoyant_bound(_groups([1] * 10, 3.0, gap_s=0.05, examples=N_EXAMPLES), prepare(bundle), TASK)  # members present
    bundle.profiles = bundle.profiles[bundle.profiles["config_id"] != small].reset_index(drop=True)
    catalog = prepare(bundle)  # samples and predictions of the member remain: the cascade still routes
    assert any(catalog.resolve(c).routed for c in _ids(bundle) if "cascade:" in c)
    with pytest.raises(ClairvoyantError, match=f"needs its member '{small}'"):
        clairvoyant_bound(_groups([1] * 10, 3.0, gap_s=0.05, examples=N_EXAMPLES), catalog, TASK)


def test_bound_holds_with_mixed_deadlines():
    bundle = _bundle(3)
    catalog = prepare(bundle)
    rng = np.random.default_rng(7)
    for _ in range(4):
        deadlines = rng.choice([3.0, 6.0, 25.0], 120)
        trace = _trace(rng, 120, deadlines)
        bound = clairvoyant_bound(trace, catalog, TASK)
        for policy in [policies.fixed(c) for c in _ids(bundle)] + [policies.slack_aware(bundle, TASK)]:
            for queue in ("fifo", "edf"):
                assert _effective(trace, policy, catalog, queue=queue) <= bound.effective_accuracy


# ---------------------------------------------------------------- exact on tiny traces

def _brute_force(trace: pd.DataFrame, catalog, ids: list[str], servers: int) -> int:
    """Most correct-and-on-time requests over every schedule with deterministic service times.

    Enumerates every sequence of batches: any server, any subset of the waiting requests up to the
    batch size (late or wrong members allowed), any configuration, each batch started as soon as
    its server is free and its members have arrived; any request may be left unserved.
    """
    arrival = trace["arrival_s"].to_numpy()
    deadline = arrival + trace["deadline_ms"].to_numpy() / 1000.0
    examples = trace["example_id"].to_numpy()
    served = [catalog.resolve(c) for c in ids]
    outcomes = [s.outcome(examples) for s in served]

    def service(c: int, members: tuple[int, ...]) -> float:
        s = served[c]
        time = float(s.samples_s[0])
        if s.routed and outcomes[c][1][list(members)].any():
            time += float(s.large_samples_s[0])
        return time

    @lru_cache(maxsize=None)
    def best(remaining: frozenset, free: tuple[float, ...]) -> int:
        value = 0
        for k in sorted(set(range(servers)), key=lambda k: free[k]):
            for size in range(1, len(remaining) + 1):
                for members in combinations(sorted(remaining), size):
                    for c, s in enumerate(served):
                        if size > s.batch_size:
                            continue
                        start = max(free[k], max(arrival[list(members)]))
                        finish = start + service(c, members)
                        gained = sum(bool(outcomes[c][0][i]) and finish <= deadline[i] + TOL for i in members)
                        after = tuple(sorted(free[:k] + (finish,) + free[k + 1:]))
                        value = max(value, gained + best(remaining - set(members), after))
        return value

    return best(frozenset(range(len(trace))), (-np.inf,) * servers)


def test_exact_method_equals_brute_force_with_deterministic_service():
    bundle = _bundle(5, deterministic=True)
    catalog = prepare(bundle)
    ids = _ids(bundle)
    rng = np.random.default_rng(11)
    cascade = [c for c in ids if "cascade:" in c]
    for case in range(30):
        n = int(rng.integers(1, 6))
        servers = int(rng.integers(1, 3))
        subset = sorted(set(rng.choice(ids, size=int(rng.integers(1, 4)), replace=False).tolist())
                        | set(cascade if case % 2 else []))
        trace = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.sort(rng.uniform(0, 0.004, n)),
                              "deadline_ms": rng.choice([2.0, 4.0, 7.0, 12.0], n),
                              "example_id": rng.integers(0, N_EXAMPLES, n)})
        bound = clairvoyant_bound(trace, catalog, TASK, servers=servers, config_ids=subset, method="exact")
        assert bound.count == _brute_force(trace.reset_index(drop=True), catalog, subset, servers), (case, subset)
        # with deterministic service times no run can do better either, whatever the policy
        for cid in subset:
            assert _effective(trace, policies.fixed(cid), catalog, servers=servers, drop_expired=True) \
                <= bound.effective_accuracy


def test_lp_is_at_least_the_exact_optimum_and_at_most_the_trivial_bound():
    bundle = _bundle(6)
    catalog = prepare(bundle)
    rng = np.random.default_rng(12)
    gaps = []
    for _ in range(30):
        n = int(rng.integers(2, 11))
        servers = int(rng.integers(1, 4))
        # bursts: everything within a few ms, so capacity and batching both bind
        trace = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.sort(rng.uniform(0, 0.004, n)),
                              "deadline_ms": rng.choice([2.0, 4.0, 7.0], n),
                              "example_id": rng.integers(0, N_EXAMPLES, n)})
        exact = clairvoyant_bound(trace, catalog, TASK, servers=servers, method="exact")
        lp = clairvoyant_bound(trace, catalog, TASK, servers=servers, method="lp")
        milp = clairvoyant_bound(trace, catalog, TASK, servers=servers, method="milp")
        assert exact.count <= milp.count + 1e-6 <= lp.count + 2e-6
        assert exact.effective_accuracy <= lp.effective_accuracy <= lp.trivial
        assert lp.trivial == exact.trivial
        gaps.append(lp.count - exact.count)
    assert max(gaps) > 0  # the LP is a relaxation, and these traces are hard enough to show it


def _all_windows_lp(trace: pd.DataFrame, catalog, ids: list[str], servers: int) -> float:
    """The window LP over every window [a_i, d_j], built densely (batch-1 configurations only, so a
    request's share of server time is just the fastest correct service time within its deadline)."""
    arrival = trace["arrival_s"].to_numpy()
    relative = trace["deadline_ms"].to_numpy() / 1000.0
    deadline = arrival + relative
    examples = trace["example_id"].to_numpy()
    w = np.full(len(trace), np.inf)
    for cid in ids:
        s = catalog.resolve(cid)
        assert s.batch_size == 1 and not s.routed
        fastest = s.samples_s.min()
        ok = s.outcome(examples)[0] & (fastest <= relative + TOL)
        w[ok] = np.minimum(w[ok], fastest)
    keep = np.isfinite(w)
    a, d, w = arrival[keep], deadline[keep], w[keep]
    if not len(w):
        return 0.0
    rows, rhs = [], []
    for lo in np.unique(a):
        for hi in np.unique(d):
            inside = (a >= lo) & (d <= hi)
            if hi > lo and inside.any():
                rows.append(np.where(inside, w, 0.0))
                rhs.append(servers * (hi - lo + TOL))
    res = linprog(-np.ones(len(w)), A_ub=np.array(rows), b_ub=np.array(rhs), bounds=(0, 1), method="highs")
    assert res.status == 0
    return -res.fun


def test_lp_equals_the_all_windows_lp_for_one_deadline_and_nearly_for_mixed():
    rng = np.random.default_rng(13)
    specs = [dict(model=f"m{i}", batch_size=1, samples_ms=ms * rng.lognormal(0, 0.2, 20),
                  correct=rng.random(N_EXAMPLES) < acc)
             for i, (ms, acc) in enumerate([(0.7, 0.5), (1.0, 0.6), (1.6, 0.7), (2.0, 0.8), (3.1, 0.85), (4.0, 0.9)])]
    bundle = toy_bundle(TASK, specs)
    catalog = prepare(bundle)
    ids = _ids(bundle)
    gaps = []
    for case in range(24):
        servers = int(rng.integers(1, 3))
        mixed = case % 2 == 1
        n = int(rng.integers(5, 40))
        span = n * float(rng.choice([0.2, 0.5, 1.5])) / 1000.0     # 0.2 ms per request: overload
        classes = [2.0, 5.0, 60.0] if case % 4 == 1 else [2.0, 60.0]     # disparate: class families matter
        trace = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.sort(rng.uniform(0, span, n)),
                              "deadline_ms": rng.choice(classes, n) if mixed else 5.0,
                              "example_id": rng.integers(0, N_EXAMPLES, n)})
        bound = clairvoyant_bound(trace, catalog, TASK, servers=servers, method="lp")
        reference = _all_windows_lp(trace, catalog, ids, servers)
        if mixed:
            assert bound.count >= reference - 1e-6
            gaps.append(bound.count - reference)
        else:
            assert bound.count == pytest.approx(reference, rel=1e-7, abs=1e-7)
    # with mixed deadlines the window families are a subset of all windows, yet nearly as tight
    print("mixed-deadline gap to the all-windows LP (requests):", np.round(gaps, 3))
    assert np.mean(gaps) < 0.05


# ---------------------------------------------------------------- edges and errors

def test_impossible_deadlines_give_zero():
    bundle = _bundle(8)
    trace = workloads.poisson(100.0, 40, 0.5, N_EXAMPLES, 1)   # 0.5 ms: below every configuration
    for method in ("lp", "milp"):
        bound = clairvoyant_bound(trace, bundle, TASK, method=method)
        assert bound.effective_accuracy == 0.0 and bound.trivial == 0.0 and not bound.upper.any()
    assert clairvoyant_bound(trace.head(5), bundle, TASK).effective_accuracy == 0.0  # exact


def test_a_deadline_equal_to_the_service_time_is_met():
    """The simulator counts latency == deadline as on time; so must the bound (every method).
    (1/256 s and the arrival times are exact in binary, so the simulator's test is exact too.)"""
    bundle = toy_bundle(TASK, [dict(model="b1", batch_size=1, samples_ms=[3.90625], correct=np.ones(5, bool))])
    trace = _groups([1, 1, 1], 3.90625, gap_s=0.5)
    assert _effective(trace, policies.fixed(_ids(bundle)[0]), bundle) == 1.0
    for method in ("exact", "lp", "milp"):
        assert clairvoyant_bound(trace, bundle, TASK, method=method).effective_accuracy == 1.0


def test_upper_is_per_request_in_request_id_order():
    bundle = _bundle(9)
    catalog = prepare(bundle)
    rng = np.random.default_rng(3)
    trace = workloads.poisson(500.0, 30, rng.choice([1.2, 9.0], 30), N_EXAMPLES, 2)
    trace["request_id"] = rng.permutation(100)[:30]          # ids no longer in arrival order
    bound = clairvoyant_bound(trace, catalog, TASK)
    by_id = trace.sort_values("request_id")
    expected = np.zeros(len(trace), dtype=bool)
    for cid in _ids(bundle):
        s = catalog.resolve(cid)
        correct, escalated = s.outcome(by_id["example_id"].to_numpy())
        least = s.samples_s.min() + (s.large_samples_s.min() * escalated if s.routed else 0.0)
        expected |= correct & (least * 1000.0 <= by_id["deadline_ms"].to_numpy())
    assert (bound.upper == expected).all()
    assert bound.trivial == pytest.approx(expected.mean())


def test_synthetic_bundle_default_configs_and_subset():
    """Default: every configuration of the task; a subset can only lower the bound."""
    bundle = synthetic_bundle(n_configs=12, n_examples=200)
    trace = workloads.gamma(3000.0, 300, 6.0, 200, 4)
    full = clairvoyant_bound(trace, bundle, TASK)
    one = clairvoyant_bound(trace, bundle, TASK, config_ids=[bundle.profiles["config_id"].iloc[0]])
    assert 0.0 <= one.effective_accuracy <= full.effective_accuracy <= full.trivial <= 1.0
    assert full.n_requests == 300 and full.method == "lp" and full.n_constraints > 0


def test_bad_inputs_raise_clear_errors():
    bundle = _bundle(10)
    trace = workloads.poisson(100.0, 20, 5.0, N_EXAMPLES, 1)
    with pytest.raises(ClairvoyantError, match="unknown configuration 'nope'"):
        clairvoyant_bound(trace, bundle, TASK, config_ids=["nope"])
    with pytest.raises(ClairvoyantError, match="config_ids is empty"):
        clairvoyant_bound(trace, bundle, TASK, config_ids=[])
    with pytest.raises(ClairvoyantError, match="no requests"):
        clairvoyant_bound(trace.head(0), bundle, TASK)
    for servers in (0, -1, 1.5, True):
        with pytest.raises(ClairvoyantError, match="servers must be an integer >= 1"):
            clairvoyant_bound(trace, bundle, TASK, servers=servers)
    with pytest.raises(ClairvoyantError, match="task 'cifar10' has no profiled configurations"):
        clairvoyant_bound(trace, bundle, "cifar10")
    with pytest.raises(ClairvoyantError, match="method must be one of"):
        clairvoyant_bound(trace, bundle, TASK, method="guess")
    with pytest.raises(ClairvoyantError, match="deadline_ms must be positive"):
        clairvoyant_bound(trace.assign(deadline_ms=-1.0), bundle, TASK)
    with pytest.raises(ClairvoyantError, match="duplicated request_id"):
        clairvoyant_bound(trace.assign(request_id=0), bundle, TASK)
    with pytest.raises(ClairvoyantError, match="more than 16"):
        clairvoyant_bound(workloads.poisson(100.0, 17, 5.0, N_EXAMPLES, 1), bundle, TASK, method="exact")
    no_samples = config_id(TASK, "ghost", "torch", "fp32", 1, "cpu")
    profiles = pd.concat([bundle.profiles, bundle.profiles.iloc[[0]].assign(config_id=no_samples, model="ghost")])
    ghost = type(bundle)(profiles, bundle.samples, bundle.predictions, bundle.environment)
    with pytest.raises(ClairvoyantError, match="'sst2/ghost/torch/fp32/b1/cpu' cannot be served"):
        clairvoyant_bound(trace, ghost, TASK, config_ids=[no_samples])
    assert issubclass(ClairvoyantError, SimulationError) and issubclass(ClairvoyantError, ValueError)


# ---------------------------------------------------------------- the chance bound (in expectation)

def test_chance_bound_charges_the_chance_of_a_fast_enough_draw_and_a_quiet_run_reaches_it():
    """Half the draws take 1 ms, half 3 ms; right on half the examples; deadline 2 ms: a request
    counts with probability 1/2 x 1/2. The clairvoyant bound, holding for every run, charges the
    1 ms draw and credits every right example."""
    right = np.arange(20) < 10
    bundle = toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[1.0, 3.0], correct=right)])
    catalog = prepare(bundle)
    ids = np.arange(20)
    assert chance_bound(catalog, TASK, ids, 2.0) == pytest.approx(0.25)
    assert chance_bound(catalog, TASK, ids, 3.0) == pytest.approx(0.5)   # every draw is fast enough
    assert chance_bound(catalog, TASK, ids, 0.5) == 0.0
    trace = _groups([1] * 4000, 2.0, gap_s=0.01, examples=20)            # one request at a time
    value = _effective(trace, policies.fixed(_ids(bundle)[0]), catalog, seed=3)
    assert value == pytest.approx(0.25, abs=0.03)
    assert clairvoyant_bound(trace, catalog, TASK).effective_accuracy == pytest.approx(0.5)


def test_the_example_blind_chance_bound_takes_the_best_configuration_on_average():
    """Two configurations right on complementary halves of the examples, half their draws fast enough:
    a policy that sees the example can route every request to the one that is right (0.5 at 2 ms);
    one that does not gets the best configuration's mean (0.25), and a fixed one reaches it."""
    halves = np.arange(20) < 10
    bundle = toy_bundle(TASK, [dict(model=name, batch_size=1, samples_ms=[1.0, 3.0], correct=right)
                               for name, right in (("left", halves), ("right", ~halves))])
    catalog = prepare(bundle)
    ids = np.arange(20)
    assert chance_bound(catalog, TASK, ids, 2.0) == pytest.approx(0.5)
    assert chance_bound(catalog, TASK, ids, 2.0, sees_example=False) == pytest.approx(0.25)
    assert chance_bound(catalog, TASK, ids, 5.0, sees_example=False) == pytest.approx(0.5)
    trace = _groups([1] * 4000, 2.0, gap_s=0.01, examples=20)            # one request at a time
    value = _effective(trace, policies.fixed(_ids(bundle)[0]), catalog, seed=3)
    assert value == pytest.approx(0.25, abs=0.03)


def test_the_late_limited_bound_serves_only_what_the_late_share_allows_and_mixes_configurations():
    """A slow accurate configuration (half its draws overrun 2 ms) and a fast one right on half the
    examples: held to 1 % late, a policy serves at most 2 % of requests on the slow one; shedding the
    rest, or serving them on the fast one, is the linear program's choice."""
    ids = np.arange(40)
    slow = dict(model="slow", batch_size=1, samples_ms=[1.0, 3.0], correct=np.ones(40, bool))
    catalog = prepare(toy_bundle(TASK, [slow]))
    assert late_chance(catalog.resolve(_ids(toy_bundle(TASK, [slow]))[0]), 2.0) == pytest.approx(0.5)
    assert late_limited_bound(catalog, TASK, ids, 2.0, 0.01) == pytest.approx(0.01)
    assert late_limited_bound(catalog, TASK, ids, 2.0, 1.0) == pytest.approx(
        chance_bound(catalog, TASK, ids, 2.0, sees_example=False))   # no limit: the example-blind bound
    assert late_limited_bound(catalog, TASK, ids, 2.0, 0.0) == 0.0
    both = prepare(toy_bundle(TASK, [slow, dict(model="fast", batch_size=1, samples_ms=[1.0],
                                                correct=np.arange(40) % 2 == 0)]))
    # 2 % slow (0.5 x 0.02) + 98 % fast (0.5 x 0.98)
    assert late_limited_bound(both, TASK, ids, 2.0, 0.01) == pytest.approx(0.01 + 0.49)
    with pytest.raises(ClairvoyantError, match="late_share must be a share between 0 and 1"):
        late_limited_bound(catalog, TASK, ids, 2.0, 1.5)
    with pytest.raises(ClairvoyantError, match="late_share must be a share between 0 and 1"):
        late_limited_bound(catalog, TASK, ids, 2.0, True)


def test_no_policy_beats_the_late_limited_bound_at_its_own_late_share():
    """Every fixed configuration, slack-aware and anytime (sheds, answers early, steers its late share),
    none of which sees a request's example: each one's mean effective accuracy over seeds stays under
    the late-limited bound taken at its own mean late share, up to the noise of the mean."""
    bundle = _bundle(0)
    catalog = prepare(bundle)
    ids = _ids(bundle)
    pool = np.arange(N_EXAMPLES)
    for deadline in (2.0, 4.0, 8.0):
        trace = workloads.poisson(50.0, 600, deadline, N_EXAMPLES, 7)
        candidates = [policies.fixed(c) for c in ids] + [
            policies.slack_aware(bundle, TASK), anytime(bundle, TASK), anytime(bundle, TASK, late_target=0.01)]
        for policy in candidates:
            runs = [run_metrics(simulate(trace, policy, catalog, task=TASK, seed=seed)) for seed in range(4)]
            late = float(np.mean([r["late_rate"] for r in runs]))
            value = float(np.mean([r["effective_accuracy"] for r in runs]))
            assert value <= late_limited_bound(catalog, TASK, pool, deadline, min(late, 1.0)) + 0.03, deadline
    # a trace that mixes deadlines (a third at half, a third at twice the base): bounded class by class
    trace = workloads.poisson(50.0, 600, 4.0, N_EXAMPLES, 7)
    mix = [(1 / 3, 2.0), (1 / 3, 4.0), (1 / 3, 8.0)]
    _, trace["deadline_ms"] = workloads.class_deadlines(len(trace), 4.0, [1 / 3] * 3, [0.5, 1.0, 2.0], 7)
    blind = chance_bound(catalog, TASK, pool, mix, sees_example=False)
    assert blind <= chance_bound(catalog, TASK, pool, mix) + 1e-12
    for policy in [policies.fixed(c) for c in ids] + [anytime(bundle, TASK, late_target=0.01)]:
        runs = [run_metrics(simulate(trace, policy, catalog, task=TASK, seed=seed)) for seed in range(4)]
        late = float(np.mean([r["late_rate"] for r in runs]))
        value = float(np.mean([r["effective_accuracy"] for r in runs]))
        assert value <= min(blind, late_limited_bound(catalog, TASK, pool, mix, min(late, 1.0))) + 0.03
    # where it binds: half the fast configuration's draws overrun 2 ms; served on it, every request that
    # arrives to an idle server meets the bound at the late share that costs (the bound is tight there)
    right = np.random.default_rng(0).random(200) < 0.9
    tight = toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[1.0, 1.5, 2.5, 3.0], correct=right),
                              dict(model="slow", batch_size=1, samples_ms=[4.0, 5.0], correct=np.ones(200, bool))])
    catalog = prepare(tight)
    trace = workloads.poisson(20.0, 2000, 2.0, 200, 3)
    for policy in (policies.fixed(_ids(tight)[0]), anytime(tight, TASK, late_target=0.01)):
        runs = [run_metrics(simulate(trace, policy, catalog, task=TASK, seed=seed)) for seed in range(4)]
        late = float(np.mean([r["late_rate"] for r in runs]))
        value = float(np.mean([r["effective_accuracy"] for r in runs]))
        bound = late_limited_bound(catalog, TASK, np.arange(200), 2.0, min(late, 1.0))
        assert value <= bound + 0.03
        if late > 0.4:  # the fixed configuration: about half late, and about the bound at that share
            assert value >= bound - 0.03


def test_several_late_shares_in_one_pass_give_what_one_share_at_a_time_gives():
    """The analysis asks :func:`expected_bounds` for every late share of a trace shape at once: each
    must be the linear program at that share alone, and a larger share never lowers the bound."""
    # half the draws overrun 2 ms, none overruns 6 ms
    catalog = prepare(toy_bundle(TASK, [dict(model="only", batch_size=1, samples_ms=[1.0, 3.0],
                                             correct=np.ones(40, bool))]))
    pool = np.arange(40)
    for deadline in (2.0, [(0.5, 2.0), (0.5, 6.0)]):
        together = expected_bounds(catalog, TASK, pool, deadline, [0.2, 0.0, 0.01]).late_limited
        alone = {share: expected_bounds(catalog, TASK, pool, deadline, [share]).late_limited[share]
                 for share in (0.0, 0.01, 0.2)}
        assert together == pytest.approx(alone)
        assert alone[0.0] < alone[0.01] < alone[0.2], deadline  # the late limit binds at 2 ms
    assert alone == pytest.approx({0.0: 0.5, 0.01: 0.51, 0.2: 0.7})  # the 6 ms class whole, 2 x L of the 2 ms one


def test_a_routed_cascade_counts_by_the_first_stage_or_after_both_draws():
    """Small member 1.5 ms, large 5 ms (deterministic): at 3 ms only the first stage's answer can be in
    time, escalated or not (an escalated one by the early answer); at 7 ms an escalated example also
    counts on the large member's answer."""
    bundle = _bundle(4, deterministic=True)
    catalog = prepare(bundle)
    cascade = catalog.resolve(next(c for c in _ids(bundle) if "cascade:" in c))
    ids = np.arange(N_EXAMPLES)
    small_right, large_right = cascade.correct[ids], cascade.large_correct[ids]
    escalated = cascade.small_confidence[ids] < cascade.threshold
    assert escalated.any() and (~escalated).any()
    assert np.array_equal(on_time_chance(cascade, ids, 3.0), small_right.astype(float))
    assert np.array_equal(on_time_chance(cascade, ids, 7.0),
                          np.where(escalated, small_right | large_right, small_right).astype(float))
    assert not on_time_chance(cascade, ids, 1.0).any()


def test_no_policy_beats_the_chance_bound_on_average_over_seeds():
    """Every fixed configuration, slack-aware, anytime (sheds, answers early) and a policy that routes by
    correctness, at light load: the mean over seeds stays under the chance bound of the trace, up to
    the noise of the mean (deterministic seeds), and the router comes close to it."""
    bundle = _bundle(0)
    catalog = prepare(bundle)
    ids = _ids(bundle)
    for deadline in (2.0, 4.0, 8.0):
        trace = workloads.poisson(50.0, 600, deadline, N_EXAMPLES, 7)
        bound = chance_bound(catalog, TASK, trace["example_id"].to_numpy(), deadline)  # this trace's requests
        assert bound <= clairvoyant_bound(trace, catalog, TASK).trivial + 1e-12
        candidates = [policies.fixed(c) for c in ids] + [
            policies.slack_aware(bundle, TASK), anytime(bundle, TASK), _peeking(trace, catalog, ids)]
        means = [np.mean([_effective(trace, policy, catalog, seed=seed) for seed in range(4)]) for policy in candidates]
        assert max(means) <= bound + 0.03, deadline
        assert max(means) >= bound - 0.1, deadline  # not vacuous: routing by correctness comes close
        # the policies that do not see the example (all but the router) stay under the blind form
        blind = chance_bound(catalog, TASK, np.arange(N_EXAMPLES), deadline, sees_example=False)
        assert blind <= chance_bound(catalog, TASK, np.arange(N_EXAMPLES), deadline) + 1e-12
        assert max(means[:-1]) <= blind + 0.03, deadline
        if deadline < 8.0:  # not vacuous: the best of them comes close where the queue costs little
            assert max(means[:-1]) >= blind - 0.05, deadline
        # at 8 ms the best is a 5 ms configuration, and the queue at this rate costs it about 0.1: the
        # queue is what no chance bound holds


def test_chance_bound_refuses_what_it_cannot_bound():
    bundle = _bundle(0)
    catalog = prepare(bundle)
    with pytest.raises(ClairvoyantError, match="positive finite number of ms"):
        chance_bound(catalog, TASK, np.arange(5), -1.0)
    with pytest.raises(ClairvoyantError, match="must be a number of ms"):
        chance_bound(catalog, TASK, np.arange(5), True)
    with pytest.raises(ClairvoyantError, match="non-empty 1-D array"):
        chance_bound(catalog, TASK, np.array([], dtype=int), 5.0)
    with pytest.raises(ClairvoyantError, match="shares must be positive and sum to 1"):
        chance_bound(catalog, TASK, np.arange(5), [(0.5, 2.0), (0.4, 4.0)])
    with pytest.raises(ClairvoyantError, match=r"list of \(share, deadline_ms\) pairs"):
        chance_bound(catalog, TASK, np.arange(5), [(0.5, 2.0, 1.0)])
    with pytest.raises(ClairvoyantError, match="positive finite number of ms"):
        late_limited_bound(catalog, TASK, np.arange(5), [(0.5, 2.0), (0.5, -4.0)], 0.01)
    with pytest.raises(ClairvoyantError, match="shares must be numbers"):
        chance_bound(catalog, TASK, np.arange(5), [("half", 2.0), (0.5, 4.0)])
    with pytest.raises(ClairvoyantError, match="sees_example must be True or False"):
        chance_bound(catalog, TASK, np.arange(5), 5.0, sees_example="no")
    catalog.ordered_samples = True
    with pytest.raises(ClairvoyantError, match="random service draws"):
        chance_bound(catalog, TASK, np.arange(5), 5.0)


def test_a_policy_is_not_shown_the_request_example():
    """The example-blind chance bound covers the online methods because what a policy may look at
    holds no example: adding one to the context would void that bound for the methods that read it."""
    fields = {f.name for f in dataclasses.fields(policies.PolicyContext)}
    assert "request_id" in fields and not {f for f in fields if "example" in f}
