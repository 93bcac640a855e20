"""A bound in expectation that holds the queue: the server time a window's on-time answers need.

The clairvoyant bound (:mod:`planner.evaluation.clairvoyant`) holds the queue, but for every run, so it
charges each batch its configuration's fastest sample and lets each request be routed by its own
correctness. The bounds in expectation there (``chance_bound``, ``late_limited_bound``) charge the
real chance of a fast enough draw but leave the queue out. :class:`WorkBound` does both, for the
policies every online method here is: ones that choose a batch's configuration and start before its
service is drawn (not foreseeing draws) and without seeing the requests' examples (their context
holds none), on a trace whose examples are drawn independently and uniformly from a pool. It bounds
such a policy's *expected* effective accuracy, over the service draws and the examples, on the
trace's own arrivals and deadlines (:meth:`WorkBound.bound`).

**Offers.** Take a batch of configuration ``c`` (batch size ``B``) that starts at ``t`` and holds
request ``i`` with ``r = d_i - t`` of its deadline left. Given everything decided before the draw,
``i`` counts (correct and on time) with chance at most ``v_c(r)``, the pool's mean
:func:`~planner.evaluation.clairvoyant.on_time_chance` at deadline ``r`` (a cascade's early answer
included). Within the window of the block ``i`` is bounded in (below; the window ends no earlier
than ``d_i``), the batch keeps its server busy for at least ``min(S_1, r)``, of mean ``mu_c(r) =
E[min(S_1, r)]``; a routed cascade adds ``e_c E[S_2 1{S_1 + S_2 <= r}]`` (``e_c``: the pool's
escalation share): the block's member of the batch with the most time left escalates with chance
``e_c`` whatever the policy saw, and when it does and both draws fit its time, the second stage runs
(the simulator skips it only when every escalated answer would be late) and ends inside the window. Charging each of the batch's ``B`` places ``1/B`` of that, request ``i``'s pair (expected
time charged, expected count) is at least ``(mu_c(r) / B, ...)`` in the first and at most
``(..., v_c(r))`` in the second: one of the *offers* of its deadline; below the first draw nothing
counts, and a shed or hopeless request takes (0, 0). Both ``mu_c`` and ``v_c`` are non-decreasing in
``r``, and ``v_c`` changes only at a draw (or a sum of two draws); at every remaining time ``g``
where it can change, the offer ``(mu_c(g) / B, v_c(just below the next such time))`` covers every
``r`` up to that time, so the grid loses nothing (where a cascade has more than
:data:`MAX_EXACT_POINTS` sums, their quantiles are the grid, and the offers only loosen).

**Windows.** Requests ``s..e-1`` (arrival order) arrive at or after ``alpha = a_s`` and must be
answered by ``beta = max d``; batches that answer them start at or after ``alpha``, and batches
started in ``[alpha, beta]`` keep the ``k`` servers busy inside it for at most ``k (beta - alpha)``.
The expected time charged is a sum over batches of the expectation given the past, so its mean is at
most that capacity too. For a price ``lambda >= 0`` per second, the block's expected count is then
at most ``lambda k (beta - alpha) + sum_i g_i(lambda)``, ``g_i(lambda) = max(0, max over offers of
v - lambda u)`` (weak duality). Disjoint blocks bound disjoint requests, so the sum over any
partition of the trace into consecutive blocks, each at its own price, bounds the whole; the
partition and prices are chosen by dynamic programming (block edges every ``block`` requests).
The prices tried are 0 and every slope of each deadline's offers' upper concave hull: the block's
bound is piecewise linear and convex in the price with its breakpoints there, so its minimum over
all prices is among them. One block at price 0 is the example-blind chance bound, so this one is
never above it.

**Late answers.** ``bound(trace, late_share=L)`` bounds the policies that also answer at most a
share ``L`` of the trace's requests late, in expectation (the study holds every method to 1 % at
loads up to 1; :func:`~planner.evaluation.clairvoyant.late_limited_bound` is the same limit without
the queue). Each offer also carries the least chance that a request so served is answered late,
``l_c(r) = 1 - P(S_1 <= r)`` (a cascade's escalated request may still leave on time as the first
stage's early answer, so only the first draw is charged; 0 where the server can stop the call at the
deadline: :func:`~planner.evaluation.clairvoyant.least_late_chances`), taken at the same point as ``v``: on the
interval the offer covers, ``v`` is at most and ``l`` at least its value there. For a price
``eta >= 0`` per late answer the trace's expected count is at most ``eta L n`` plus the bound above
with every offer's value ``v - eta l`` (weak duality again); the limit is one for the whole trace, so
``eta`` is one for all blocks. Every price gives a bound, so the least of those tried is one: ``eta =
0`` (the bound without the limit, so it is never above that) and a golden-section search over
``log eta`` in :data:`LATE_PRICE_RANGE` (the bound need not be unimodal in ``eta``; where it is not,
the search may only miss a lower value). Without a queue (one block, no server-time price) it is the
dual of the late-limited linear program and meets it.

What it leaves out: a batch is charged ``1/B`` per place even when partly filled, so at light load it
does not see the wait to fill one, and the queue enters only as server time, not as the wait it
causes (the policy's own loss beside it is what benchmarks/no_queue.py measures).

Not a bound for a policy that sees the examples, for a catalog that serves its samples in order, or
for a smaller dispatch overhead than the catalog's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from planner.evaluation.clairvoyant import (TOLERANCE_S, ClairvoyantError, _configs, _outcome, expectation_inputs,
                                            least_late_chances, mean_on_time_chance)
from planner.serving.batching import check_trace
from planner.serving.simulator import Catalog, ServedConfig

MAX_EXACT_POINTS = 4096  # a cascade with more distinct two-stage times takes their quantiles
GRID_POINTS = 512        # how many quantiles
DEFAULT_BLOCK = 1       # requests between candidate block edges (1: every partition)
#: the range of prices per late answer (in counted answers) the late-limited bound searches, beside 0
LATE_PRICE_RANGE = (1e-3, 1e3)
LATE_PRICE_STEPS = 16  # golden-section steps over the log of the price


@dataclass(frozen=True)
class Offers:
    """One deadline's offers: per request, (expected server seconds charged, expected count) and the
    least chance of a late answer."""

    deadline_ms: float
    cost_s: np.ndarray
    value: np.ndarray
    late: np.ndarray

    def priced(self, late_price: float) -> "Offers":
        """The same offers with each value net of ``late_price`` per expected late answer."""
        if late_price == 0.0:
            return self
        return Offers(self.deadline_ms, self.cost_s, self.value - late_price * self.late, self.late)

    def hull_slopes(self) -> np.ndarray:
        """Slopes of the upper concave hull of the offers and (0, 0): the prices where the best
        offer changes."""
        order = np.lexsort((-self.value, self.cost_s))
        points = [(0.0, 0.0)]
        for u, v in zip(self.cost_s[order].tolist(), self.value[order].tolist()):
            if v <= points[-1][1]:  # no more value for more time
                continue
            while len(points) >= 2:
                (u0, v0), (u1, v1) = points[-2], points[-1]
                if (v1 - v0) * (u - u0) <= (v - v0) * (u1 - u0):  # the middle point is under the chord
                    points.pop()
                else:
                    break
            points.append((u, v))
        hull = np.array(points)
        du, dv = np.diff(hull[:, 0]), np.diff(hull[:, 1])
        free = du <= 0  # value at no time: priced out by no finite slope
        return np.unique(dv[~free] / du[~free])

    def gain(self, prices: np.ndarray) -> np.ndarray:
        """g(lambda) per price: the most a request can be worth at that price of server time."""
        if len(self.value) == 0:  # no configuration can answer in time: nothing counts
            return np.zeros(len(prices))
        return np.maximum(0.0, (self.value[None, :] - prices[:, None] * self.cost_s[None, :]).max(axis=1))


@dataclass(frozen=True)
class _Curve:
    """One configuration's offers at every remaining time: at ``starts[k]`` the expected time charged
    (``cost_s``), and the chance of counting (``value``) and the least chance of a late answer
    (``late``) just below ``starts[k + 1]``; a deadline cuts it."""

    served: ServedConfig
    starts: np.ndarray
    cost_s: np.ndarray
    value: np.ndarray
    late: np.ndarray

    def at(self, ids: np.ndarray, deadline_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cost_s, value, late) of the offers of a request with ``deadline_ms`` to go at its arrival."""
        k = int(np.searchsorted(self.starts, deadline_ms / 1000.0 + TOLERANCE_S, side="right"))
        if k == 0:  # no draw fits: the configuration never counts at this deadline
            return np.zeros(0), np.zeros(0), np.zeros(0)
        at_deadline = np.array([deadline_ms])                           # r in [starts[k-1], deadline]
        last = mean_on_time_chance(self.served, ids, at_deadline)
        last_late = least_late_chances(self.served, at_deadline)
        return self.cost_s[:k], np.append(self.value[:k - 1], last), np.append(self.late[:k - 1], last_late)


def _curve(served: ServedConfig, ids: np.ndarray) -> _Curve:
    """The offers of ``served`` at every remaining time where its chance of counting can change (each
    draw, each sum of two draws of a cascade; their quantiles beyond :data:`MAX_EXACT_POINTS`)."""
    first = np.sort(served.samples_s)
    points = [np.unique(first)]
    second = None
    escalation = 0.0
    if served.routed:
        second = np.sort(served.large_samples_s)
        escalation = float(np.mean(_outcome(served, ids)[1]))
        sums = np.unique(first[:, None] + second[None, :])
        points.append(sums if len(sums) <= MAX_EXACT_POINTS else np.quantile(sums, np.linspace(0, 1, GRID_POINTS)))
    starts = np.unique(np.concatenate(points))  # below the first draw nothing counts: no offer there
    # r in [starts[k], starts[k+1]): at least the time charged at starts[k], at most the chance just below starts[k+1]
    below_next = (starts[1:] - 2 * TOLERANCE_S) * 1000.0
    value = mean_on_time_chance(served, ids, below_next)
    late = least_late_chances(served, below_next)
    cost = np.minimum(first[None, :], starts[:, None]).mean(axis=1)
    if second is not None:  # the second stage runs when its draw fits: E[S_2 1{S_1 + S_2 <= r}] (never more)
        prefix = np.concatenate([[0.0], np.cumsum(second)])
        fits = np.searchsorted(second, starts[:, None] - first[None, :], side="right")
        cost = cost + escalation * (prefix[fits] / len(second)).mean(axis=1)
    return _Curve(served, starts, cost / served.batch_size, value, late)


def _golden_minimum(f, low: float, high: float, steps: int) -> float:
    """The least value of ``f(exp(x))`` seen in a golden-section search for its minimum over
    ``[low, high]`` (``steps`` narrowings)."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(float(np.exp(c))), f(float(np.exp(d)))
    seen = min(fc, fd)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(float(np.exp(c)))
            seen = min(seen, fc)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(float(np.exp(d)))
            seen = min(seen, fd)
    return seen


@dataclass
class WorkBound:
    """Bounds traces of one task in expectation; build once, bound many traces (offers are cached per
    deadline). ``catalog``: the one the runs are simulated with; ``example_ids``: the pool the traces
    draw their examples from; ``config_ids``: the configurations a policy may pick (default all)."""

    catalog: Catalog
    task: str
    example_ids: np.ndarray
    config_ids: Iterable[str] | None = None
    block: int = DEFAULT_BLOCK
    _offers: dict[float, Offers] = field(default_factory=dict, repr=False)
    _curves: list[_Curve] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.catalog, self.example_ids = expectation_inputs(self.catalog, self.example_ids)
        if isinstance(self.block, bool) or not isinstance(self.block, (int, np.integer)) or self.block < 1:
            raise ClairvoyantError(f"block must be an integer >= 1, got {self.block!r}")
        self._served = _configs(self.catalog, str(self.task), self.config_ids)

    def offers(self, deadline_ms: float) -> Offers:
        """The offers of a request with relative deadline ``deadline_ms`` (cached)."""
        key = float(deadline_ms)
        if key not in self._offers:
            if not self._curves:
                self._curves = [_curve(c, self.example_ids) for c in self._served]
            parts = [curve.at(self.example_ids, key) for curve in self._curves]
            self._offers[key] = Offers(key, *(np.concatenate([p[i] for p in parts]) for i in range(3)))
        return self._offers[key]

    def bound(self, trace: pd.DataFrame, servers: int = 1, late_share: float | None = None) -> float:
        """Upper bound on the expected effective accuracy of every example-blind policy that does not
        foresee its draws, on ``trace``'s arrivals and deadlines with ``servers`` servers; with
        ``late_share``, of those that also answer at most that share of the requests late in
        expectation (the least over the prices per late answer it tries)."""
        if isinstance(servers, bool) or not isinstance(servers, (int, np.integer)) or servers < 1:
            raise ClairvoyantError(f"servers must be an integer >= 1, got {servers!r}")
        if late_share is not None and (isinstance(late_share, bool) or not isinstance(late_share, (int, float))
                                       or not 0.0 <= late_share <= 1.0):
            raise ClairvoyantError(f"late_share must be a share in [0, 1] or None, got {late_share!r}")
        ordered = check_trace(trace, ClairvoyantError)
        arrival = ordered["arrival_s"].to_numpy(dtype=float)
        relative = ordered["deadline_ms"].to_numpy(dtype=float)
        classes, which = np.unique(relative, return_inverse=True)
        offers = [self.offers(d) for d in classes]
        def at(late_price: float) -> float:
            priced = [o.priced(late_price) for o in offers]
            return late_price * (late_share or 0.0) + self._partitioned(priced, which, arrival, relative, servers) / len(arrival)

        best = at(0.0)
        if late_share is not None:
            best = min(best, _golden_minimum(at, *np.log(LATE_PRICE_RANGE), LATE_PRICE_STEPS))
        return min(best, 1.0)

    def _partitioned(self, offers: list[Offers], which: np.ndarray, arrival: np.ndarray, relative: np.ndarray,
                     servers: int) -> float:
        """The least over partitions into consecutive blocks (edges every ``block`` requests) of the
        sum of the blocks' bounds, each at its best price of server time (dynamic programming)."""
        n = len(arrival)
        prices = np.unique(np.concatenate([[0.0], *[o.hull_slopes() for o in offers]]))
        gains = np.stack([o.gain(prices) for o in offers])           # (classes, prices)
        per_request = gains[which].T                                  # (prices, n)
        edges = np.unique(np.r_[np.arange(0, n, self.block), n])
        cum = np.concatenate([np.zeros((len(prices), 1)), np.cumsum(per_request, axis=1)], axis=1)[:, edges]
        alpha = arrival[edges[:-1]]                                   # block starts
        beta = np.maximum.accumulate(arrival + relative / 1000.0)[edges[1:] - 1]  # block ends (prefix max)
        best = np.zeros(len(edges))
        capacity = prices[:, None] * float(servers)
        for e in range(1, len(edges)):
            span = np.maximum(beta[e - 1] - alpha[:e], 0.0)           # blocks s..e
            total = capacity * span[None, :] + (cum[:, e][:, None] - cum[:, :e])
            best[e] = float((best[:e] + total.min(axis=0)).min())
        return float(best[-1])
