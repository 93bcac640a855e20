"""When the next requests will arrive, learned from the gaps between the recent ones.

The anytime policy pads its window with the arrivals expected while a batch is served. At the recent
mean rate alone (a Poisson process) it cannot see a burst coming: under Gamma arrivals of CV 8, 88 %
of the gaps are under 1 % of the mean gap and a few are hundreds of times the mean, so once a clump
has begun, the next dozens of requests arrive within a millisecond or two, while at the mean rate
the policy expects one or two during a 7 ms batch. It then takes a slow, accurate configuration for the
two or three requests at the head of the clump and the rest of the clump waits behind it (measured:
CIFAR-10 bursty-cv8 0.8 @ 12 ms, where the best fixed configuration beat the policy by 0.05).

:class:`EmpiricalArrivals` treats arrivals as a renewal process whose gap law is the empirical one of
the last :data:`GAP_MEMORY` arrivals: the ``j``-th arrival from now comes after the residual of the
current gap (a gap longer than the time since the last arrival, less that time) and ``j - 1`` more
gaps. It tables the :data:`~planner.plan.anytime.ARRIVAL_LEVELS` quantiles of each arrival's time
from bootstrap paths with fixed draws (the same gaps give the same table), for a few ages since the
last arrival, refitted every :data:`REFIT_AFTER` new arrivals; a decision reads the row of its age.
Poisson arrivals give back about the Poisson table (their residual is memoryless); gaps that cluster
in time (MMPP) are treated as independent, which the age conditioning only partly makes up for.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

# arrivals whose gaps make the empirical law (127 gaps: quantiles down to about 1 %)
GAP_MEMORY = 128
# fewer gaps than this, and no table: the caller falls back to the Poisson law at the recent rate
MIN_GAPS = 16
# new arrivals between refits (a refit is about half a millisecond; a decision reads a table)
REFIT_AFTER = 32
# bootstrap paths the quantiles are read from (order statistics: the level's share of the paths)
PATHS = 256
# the ages since the last arrival the table is conditioned on: 0 and these quantiles of the gaps
AGE_LEVELS = (0.5, 0.75, 0.9, 0.95, 0.99)


class EmpiricalArrivals:
    """Arrival times of the next ``n`` requests, from the recent gaps (see the module docstring).

    ``update(arrivals_s)`` with the recent arrival times (oldest first, seconds) refits when enough
    new ones have come; ``times(now_s)`` is then the ``(len(levels), n)`` float32 table of the
    ``levels`` quantiles of each next arrival's time from ``now_s`` in milliseconds, or None before
    :data:`MIN_GAPS` gaps were seen."""

    def __init__(self, n: int, levels: Sequence[float] | np.ndarray):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        self.n = int(n)
        self.levels = np.asarray(levels, dtype=float)
        draws = np.random.default_rng(0)
        self._u = draws.random((self.n, PATHS))   # fixed uniform draws: the bootstrap indices scale with the gaps
        self._rank = np.minimum((self.levels * PATHS).astype(np.int64), PATHS - 1)   # each level's order statistic
        self._last_fit_s = -math.inf
        self._last_arrival_s = -math.inf
        self._ages_ms: list[float] = []
        self._rows: list[np.ndarray] | None = None  # per tabled age, (levels, n) float32 (a decision indexes a list)
        self.n_refits = 0

    def update(self, arrivals_s: Sequence[float]) -> None:
        """Take the recent arrival times; refit when :data:`REFIT_AFTER` arrived since the last fit
        (or at the first :data:`MIN_GAPS` + 1). A refit took 0.45 ms on this 2-core AVX2 host (quiet), once per
        :data:`REFIT_AFTER` arrivals; a decision between refits reads a table (0.3 µs)."""
        if not len(arrivals_s):
            return
        self._last_arrival_s = float(arrivals_s[-1])
        fresh = len(arrivals_s) - bisect_right(arrivals_s, self._last_fit_s)
        if fresh >= REFIT_AFTER or (self._rows is None and len(arrivals_s) > MIN_GAPS):
            self._refit(np.asarray(arrivals_s[-GAP_MEMORY:], dtype=float))

    def _refit(self, arrivals_s: np.ndarray) -> None:
        gaps = np.sort(np.diff(arrivals_s)) * 1000.0   # at least MIN_GAPS: update refits only with enough
        self._last_fit_s = float(arrivals_s[-1])
        k = len(gaps)
        # (n, PATHS): the time from the first arrival to each later one, path by path (paths innermost: sorted fast)
        later = gaps[np.minimum((self._u[1:] * k).astype(np.int64), k - 1)]
        after_first = np.concatenate([np.zeros((1, PATHS)), np.cumsum(later, axis=0)], axis=0)
        ages = np.concatenate([[0.0], gaps[np.minimum((np.asarray(AGE_LEVELS) * k).astype(np.int64), k - 1)]])
        tables = []
        for age in ages:
            start = int(np.searchsorted(gaps, age, side="right"))   # the current gap is one longer than the age
            longer = gaps[min(start, k - 1):]
            first = longer[np.minimum((self._u[0] * len(longer)).astype(np.int64), len(longer) - 1)] - age
            # rounded to float32 before the sort: rounding keeps the order, so the order statistics are the same
            times = (np.maximum(first, 0.0)[None, :] + after_first).astype(np.float32)
            times.sort(axis=1)
            tables.append(times[:, self._rank].T)
        self._ages_ms = ages.tolist()
        self._rows = list(np.ascontiguousarray(tables, dtype=np.float32))
        self.n_refits += 1

    def times(self, now_s: float) -> np.ndarray | None:
        """``(levels, n)`` float32 ms from ``now_s``: the table of the largest tabled age not above the
        time since the last arrival; None before a fit."""
        rows = self._rows
        if rows is None:
            return None
        k = bisect_right(self._ages_ms, (now_s - self._last_arrival_s) * 1000.0)  # the first tabled age is 0
        return rows[k - 1] if k else rows[0]
