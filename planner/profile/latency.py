"""Latency profiling: timed calls on real batches until the p95 estimate is stable.

Stopping rule (the one used everywhere in this project): after ``warmup`` untimed passes, time
passes one call at a time; from ``min_passes`` on, and then every ``check_every`` passes, estimate
the percentile-bootstrap confidence interval of p95 (``scipy.stats.bootstrap``, ``n_bootstrap``
resamples, fixed seed) and stop as soon as its half-width is at most ``ci_rel_halfwidth`` x p95.
Otherwise stop at ``max_passes`` or, as a safety cap, after ``max_seconds`` of timed passes. The
reason is recorded (``ci`` | ``max_passes`` | ``time_cap``) so an unconverged estimate is visible,
never hidden. This is the bootstrap variant of what MLPerf LoadGen and perf_analyzer do (run until
the tail estimate is stable); percentiles use numpy's default (linear) interpolation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

STOP_REASONS = ("ci", "max_passes", "time_cap")


@dataclass(frozen=True)
class StoppingRule:
    """When to stop timing one configuration (values come from the preset's ``profile`` section)."""

    min_passes: int = 100
    max_passes: int = 2000
    ci_rel_halfwidth: float = 0.05
    check_every: int = 50
    n_bootstrap: int = 1000
    confidence: float = 0.95
    max_seconds: float = float("inf")

    def __post_init__(self) -> None:
        if self.min_passes < 1 or self.max_passes < self.min_passes:
            raise ValueError(f"need 1 <= min_passes <= max_passes, got {self.min_passes}, {self.max_passes}")
        if self.check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {self.check_every}")

    @classmethod
    def from_preset(cls, profile: Any) -> "StoppingRule":
        """Build from a :class:`planner.config.ProfilePreset`."""
        return cls(min_passes=profile.min_passes, max_passes=profile.max_passes,
                   ci_rel_halfwidth=profile.ci_rel_halfwidth, check_every=profile.check_every,
                   n_bootstrap=profile.n_bootstrap, confidence=profile.ci_confidence,
                   max_seconds=profile.max_seconds_per_config)


def p95_ci(samples_ms: np.ndarray, confidence: float = 0.95, n_resamples: int = 1000,
           seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of the 95th percentile (scipy.stats.bootstrap, fixed seed)."""
    x = np.asarray(samples_ms, dtype=float)
    if x.size < 2:
        raise ValueError(f"need at least 2 samples for a CI, got {x.size}")
    if np.all(x == x[0]):  # degenerate: bootstrap of a constant is the constant
        return float(x[0]), float(x[0])
    result = stats.bootstrap((x,), lambda a, axis: np.percentile(a, 95, axis=axis), vectorized=True,
                             n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                             random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def rel_halfwidth(p95: float, ci_low: float, ci_high: float) -> float:
    """Half-width of the CI relative to the p95 estimate."""
    return (ci_high - ci_low) / 2.0 / p95 if p95 > 0 else float("inf")


class BackgroundLoad:
    """Share of the machine's CPU time used by *other* processes while a configuration was timed.

    From /proc/stat (all CPUs) and /proc/self/stat (this process, all threads): a shared machine's
    interference is recorded per configuration instead of silently inflating its latencies. NaN
    where /proc is unavailable.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = [float(v) for v in open("/proc/stat").readline().split()[1:9]]
            own = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        total = sum(fields)  # user nice system idle iowait irq softirq steal
        busy = total - fields[3] - fields[4]
        return total, busy, float(own[11]) + float(own[12])  # utime + stime

    def share(self) -> float:
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return float("nan")
        total, busy, own = (b - a for a, b in zip(self._start, end))
        return float(min(max((busy - own) / total, 0.0), 1.0))


@dataclass(frozen=True)
class Measurement:
    """Every timed call of one configuration plus why timing stopped."""

    samples_ms: np.ndarray
    stop_reason: str
    ci_low: float
    ci_high: float
    wall_s: float
    background_cpu_share: float = float("nan")


def run_until_stable(draw: Callable[[], float], rule: StoppingRule,
                     clock: Callable[[], float] = time.monotonic) -> Measurement:
    """Call ``draw()`` (one timed pass, returns ms) until ``rule`` says the p95 is stable.

    ``draw`` is the real timed call in a sweep and a synthetic generator in tests.
    """
    samples: list[float] = []
    start = clock()
    next_check = rule.min_passes
    ci = (float("nan"), float("nan"))
    reason = "max_passes"
    while len(samples) < rule.max_passes:
        samples.append(float(draw()))
        n = len(samples)
        if n >= next_check:
            next_check = n + rule.check_every
            x = np.asarray(samples)
            ci = p95_ci(x, rule.confidence, rule.n_bootstrap)
            if rel_halfwidth(float(np.percentile(x, 95)), *ci) <= rule.ci_rel_halfwidth:
                reason = "ci"
                break
            if clock() - start >= rule.max_seconds:
                reason = "time_cap"
                break
    x = np.asarray(samples)
    if reason == "max_passes" and len(samples) != next_check - rule.check_every:
        ci = p95_ci(x, rule.confidence, rule.n_bootstrap)  # final CI on every sample
    return Measurement(x, reason, ci[0], ci[1], clock() - start)


def summarize(samples_ms: np.ndarray, batch_size: int, ci: tuple[float, float] | None = None,
              confidence: float = 0.95, n_resamples: int = 1000) -> dict[str, float]:
    """p50/p95/p99/mean, the CI of p95 and throughput (items/s = batch / mean latency)."""
    x = np.asarray(samples_ms, dtype=float)
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError("latency samples must be a non-empty array of positive finite ms")
    p50, p95, p99 = (float(v) for v in np.percentile(x, [50, 95, 99]))
    low, high = ci if ci is not None else p95_ci(x, confidence, n_resamples)
    mean = float(x.mean())
    return {
        "lat_p50_ms": p50, "lat_p95_ms": p95, "lat_p99_ms": p99, "lat_mean_ms": mean,
        "lat_p95_ci_low_ms": float(low), "lat_p95_ci_high_ms": float(high),
        "ci_rel_halfwidth": rel_halfwidth(p95, low, high), "n_samples": int(x.size),
        "throughput_items_s": batch_size / (mean / 1000.0),
    }


def make_batches(inputs: Sequence[Any] | np.ndarray, batch_size: int, seed: int = 0,
                 max_batches: int = 4096) -> list[Any]:
    """Distinct batches of real evaluation examples in a fixed shuffled order (cycled when timing)."""
    n = len(inputs)
    if n < batch_size:
        raise ValueError(f"need at least {batch_size} evaluation examples for batch size {batch_size}, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    batches = []
    for start in range(0, n - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        batches.append(inputs[idx] if isinstance(inputs, np.ndarray) else [inputs[i] for i in idx])
        if len(batches) >= max_batches:
            break
    return batches


def time_predict(predict: Callable[[Any, int], Any], batches: list[Any], batch_size: int, warmup: int,
                 rule: StoppingRule, synchronize: Callable[[], None] | None = None) -> Measurement:
    """Time ``predict(batch, batch_size)`` per call with ``perf_counter_ns`` on cycled real batches.

    ``warmup`` untimed passes come first; on a GPU pass ``torch.cuda.synchronize`` as ``synchronize``
    so queued kernels are inside the timed region.
    """
    sync = synchronize or (lambda: None)
    for i in range(warmup):
        predict(batches[i % len(batches)], batch_size)
    sync()
    counter = [0]

    def draw() -> float:
        batch = batches[counter[0] % len(batches)]
        counter[0] += 1
        t0 = time.perf_counter_ns()
        predict(batch, batch_size)
        sync()
        return (time.perf_counter_ns() - t0) / 1e6

    load = BackgroundLoad()
    m = run_until_stable(draw, rule)
    return Measurement(m.samples_ms, m.stop_reason, m.ci_low, m.ci_high, m.wall_s, load.share())
