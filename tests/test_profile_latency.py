"""Stopping rule, percentile and CI maths of the latency profiler (synthetic samples, no models)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from planner.profile.latency import (StoppingRule, make_batches, p95_ci, rel_halfwidth, run_until_stable,
                                     summarize, time_predict)

RULE = StoppingRule(min_passes=100, max_passes=600, ci_rel_halfwidth=0.05, check_every=50, n_bootstrap=400)


def stream(values):
    it = iter(values)
    return lambda: next(it)


def test_tight_samples_stop_at_the_first_check():
    draws = np.random.default_rng(0).lognormal(0.0, 0.02, 10_000)
    m = run_until_stable(stream(draws), RULE)
    assert m.stop_reason == "ci"
    assert len(m.samples_ms) == RULE.min_passes
    assert rel_halfwidth(np.percentile(m.samples_ms, 95), m.ci_low, m.ci_high) <= 0.05


def test_heavy_tailed_samples_run_to_max_passes():
    rng = np.random.default_rng(1)
    draws = 1.0 + stats.pareto.rvs(0.8, size=10_000, random_state=rng)  # infinite mean: p95 never settles
    m = run_until_stable(stream(draws), RULE)
    assert m.stop_reason == "max_passes"
    assert len(m.samples_ms) == RULE.max_passes
    assert rel_halfwidth(np.percentile(m.samples_ms, 95), m.ci_low, m.ci_high) > 0.05


def test_never_stops_below_min_passes_and_checks_on_schedule():
    # a constant stream is perfectly stable from the second sample, yet min_passes still holds
    m = run_until_stable(lambda: 2.0, RULE)
    assert len(m.samples_ms) == RULE.min_passes and m.stop_reason == "ci"
    # moderately noisy: it stops at a check point (min + k * check_every)
    draws = np.random.default_rng(2).lognormal(0.0, 0.25, 10_000)
    m = run_until_stable(stream(draws), RULE)
    n = len(m.samples_ms)
    assert n >= RULE.min_passes and (n - RULE.min_passes) % RULE.check_every == 0 or n == RULE.max_passes


def test_time_cap_stops_a_slow_configuration_after_min_passes():
    clock = itertools.count(0.0, 10.0)  # every clock read (at start and at each check) advances 10 s
    rule = StoppingRule(min_passes=100, max_passes=10_000, ci_rel_halfwidth=1e-6, check_every=10,
                        n_bootstrap=200, max_seconds=5.0)
    draws = np.random.default_rng(3).lognormal(0.0, 0.3, 20_000)
    m = run_until_stable(stream(draws), rule, clock=lambda: float(next(clock)))
    assert m.stop_reason == "time_cap"
    assert len(m.samples_ms) == rule.min_passes


def test_invalid_rules_are_rejected():
    with pytest.raises(ValueError, match="min_passes"):
        StoppingRule(min_passes=200, max_passes=100)


def test_summary_percentiles_match_numpy_and_throughput_is_batch_over_mean():
    x = np.random.default_rng(4).gamma(3.0, 2.0, 777)
    s = summarize(x, batch_size=8, n_resamples=300)
    np.testing.assert_allclose([s["lat_p50_ms"], s["lat_p95_ms"], s["lat_p99_ms"]], np.percentile(x, [50, 95, 99]))
    assert s["lat_mean_ms"] == pytest.approx(x.mean())
    assert s["throughput_items_s"] == pytest.approx(8 / (x.mean() / 1000))
    assert s["n_samples"] == 777
    assert s["lat_p95_ci_low_ms"] <= s["lat_p95_ms"] <= s["lat_p95_ci_high_ms"]


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([1.0, -2.0])])
def test_summary_rejects_bad_samples(bad):
    with pytest.raises(ValueError, match="positive finite"):
        summarize(bad, 1)


def test_p95_ci_is_scipy_percentile_bootstrap_and_matches_a_numpy_bootstrap():
    x = np.random.default_rng(5).lognormal(0.0, 0.3, 500)
    low, high = p95_ci(x, 0.95, 2000, seed=9)
    ref = stats.bootstrap((x,), lambda a, axis: np.percentile(a, 95, axis=axis), vectorized=True,
                          n_resamples=2000, confidence_level=0.95, method="percentile",
                          random_state=np.random.default_rng(9)).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high))
    # independent numpy resampling: same interval up to Monte Carlo error
    idx = np.random.default_rng(123).integers(0, len(x), (4000, len(x)))
    boot = np.percentile(x[idx], 95, axis=1)
    np_low, np_high = np.percentile(boot, [2.5, 97.5])
    spread = high - low
    assert abs(low - np_low) < 0.1 * spread and abs(high - np_high) < 0.1 * spread


def test_p95_ci_covers_the_true_p95_about_95_percent_of_the_time():
    true_p95 = float(stats.lognorm(s=0.3).ppf(0.95))
    rng = np.random.default_rng(6)
    hits = [lo <= true_p95 <= hi for lo, hi in
            (p95_ci(rng.lognormal(0.0, 0.3, 400), 0.95, 300, seed=i) for i in range(80))]
    assert 0.85 <= np.mean(hits) <= 1.0


def test_time_predict_excludes_warmup_and_uses_distinct_real_batches():
    inputs = np.arange(40 * 3).reshape(40, 3)
    batches = make_batches(inputs, 4, seed=0)
    assert len(batches) == 10 and all(b.shape == (4, 3) for b in batches)
    assert len({tuple(b[:, 0]) for b in batches}) == 10
    assert sorted(np.concatenate([b[:, 0] for b in batches]).tolist()) == sorted(inputs[:, 0].tolist())
    calls, syncs = [], []
    rule = StoppingRule(min_passes=100, max_passes=100, check_every=50, n_bootstrap=200)
    m = time_predict(lambda batch, b: calls.append((batch, b)), batches, 4, warmup=10, rule=rule,
                     synchronize=lambda: syncs.append(1))
    assert len(calls) == 110 and len(m.samples_ms) == 100
    assert all(b == 4 for _, b in calls)
    assert len(syncs) == 101  # once after warm-up, then inside every timed call
    assert np.all(m.samples_ms > 0)


def test_make_batches_works_for_text_and_rejects_too_few_examples():
    sentences = [f"s{i}" for i in range(9)]
    batches = make_batches(sentences, 2)
    assert len(batches) == 4 and all(isinstance(b, list) and len(b) == 2 for b in batches)
    with pytest.raises(ValueError, match="at least 8"):
        make_batches(sentences[:3], 8)


def test_background_load_is_other_processes_share_of_cpu_time(monkeypatch):
    from planner.profile.latency import BackgroundLoad

    readings = iter([(100.0, 50.0, 10.0), (300.0, 200.0, 60.0)])  # (total, busy, own) ticks
    monkeypatch.setattr(BackgroundLoad, "_read", staticmethod(lambda: next(readings)))
    assert BackgroundLoad().share() == pytest.approx((150 - 50) / 200)
    monkeypatch.undo()
    share = BackgroundLoad().share()  # real /proc: a share, or NaN where /proc is missing
    assert np.isnan(share) or 0.0 <= share <= 1.0
