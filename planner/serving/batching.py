"""The one batch-pick rule: which waiting requests form the next batch, with which configuration.

The simulator (simulated time), the in-process replay (real time, real models) and the network
server all call :func:`pick_batch` when a server is free and requests wait, so the three serve by
the same rule and differ only in where service times come from:

1. with ``drop_expired``, requests at the head of the queue whose deadline has passed are removed
   (returned as ``expired``);
2. the policy is asked for a configuration with a :class:`~planner.plan.policies.PolicyContext`
   built here (the head request's slack and deadline, queue length, idle servers, the recent
   arrival rate and, if the policy's needs ask for them, the slacks of the first queued requests
   in service order);
3. up to that configuration's batch size of requests leave the queue in service order (FIFO:
   arrival order; EDF: absolute deadline, ties by arrival order), skipping expired ones when
   dropping. No waiting to fill a batch: the queue is work-conserving.

A policy whose needs say ``sheds`` also gets admission control: waiting requests whose slack is
below the policy's :meth:`~planner.plan.policies.OnlinePolicy.shed_below_ms` are shed before the
policy is asked and while the batch is filled (status ``shed``, answered at once).

:func:`check_trace` is the one validation of a trace entering any server.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import deque
import math
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from planner.plan.policies import OnlinePolicy, PolicyContext
from planner.schema import TRACE_COLUMNS, DeadlineError, check_deadlines, validate

QUEUES = ("fifo", "edf")
Queue = Literal["fifo", "edf"]


class PolicyFailure(RuntimeError):
    """A policy raised instead of choosing a configuration: the server stops with this error, naming
    the policy, the time and the original exception (kept as ``__cause__``)."""


class RequestQueue:
    """Waiting requests (positions in arrival order) in service order: FIFO or EDF.

    EDF orders by absolute deadline, ties by arrival position, so both disciplines are
    deterministic and identical across servers.
    """

    __slots__ = ("edf", "_items", "_abs_deadline")

    def __init__(self, queue: Queue, abs_deadline: Sequence[float]):
        if queue not in QUEUES:
            raise ValueError(f"queue must be one of {QUEUES}, got {queue!r}")
        self.edf = queue == "edf"
        self._items: deque[int] | list[tuple[float, int]] = [] if self.edf else deque()
        self._abs_deadline = abs_deadline

    def push(self, i: int) -> None:
        if self.edf:
            heapq.heappush(self._items, (self._abs_deadline[i], i))
        else:
            self._items.append(i)

    def pop(self) -> int:
        return heapq.heappop(self._items)[1] if self.edf else self._items.popleft()

    def head(self) -> int:
        return self._items[0][1] if self.edf else self._items[0]

    def first(self, k: int) -> Iterable[int]:
        """The first ``k`` waiting requests in service order (O(k) for FIFO, O(n log k) for EDF)."""
        if self.edf:
            return [r for _, r in heapq.nsmallest(k, self._items)]
        return islice(self._items, k)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)


@dataclass(frozen=True, slots=True)
class TraceArrays:
    """A checked trace as plain lists in arrival order: what the rule reads per request."""

    arrival_s: list[float]
    abs_deadline_s: list[float]
    rel_deadline_ms: list[float]
    request_ids: list[int]

    @classmethod
    def from_frame(cls, ordered: pd.DataFrame) -> "TraceArrays":
        arrival = ordered["arrival_s"].to_numpy(dtype=float)
        rel = ordered["deadline_ms"].to_numpy(dtype=float)
        return cls(arrival.tolist(), (arrival + rel / 1000.0).tolist(), rel.tolist(),
                   ordered["request_id"].tolist())


# the context's slacks for a policy that asks for none (shared, so read-only)
_NO_SLACKS = np.zeros(0)
_NO_SLACKS.flags.writeable = False


@dataclass(frozen=True, slots=True)
class BatchPick:
    """One decision: the configuration, the requests it serves, the ones dropped as expired and the
    ones shed by the policy's admission control (answered at once, status ``shed``)."""

    config_id: str | None
    members: list[int]
    expired: list[int]
    shed: list[int] = field(default_factory=list)


def pick_batch(queue: RequestQueue, t: float, arrived: int, trace: TraceArrays, policy: OnlinePolicy, task: str,
               idle_servers: int, servers: int, rate_window_s: float, drop_expired: bool,
               batch_size_of: Callable[[str], int]) -> BatchPick:
    """Apply the rule at time ``t`` (see the module docstring); ``arrived`` requests have joined so far.

    Returns ``config_id=None`` (and no members) when nothing is left to serve after dropping.
    """
    abs_deadline = trace.abs_deadline_s
    expired: list[int] = []
    shed: list[int] = []
    if drop_expired:
        while queue and abs_deadline[queue.head()] <= t:
            expired.append(queue.pop())
    # admission control: a request whose deadline is nearer than anything can answer is shed now
    cutoff = t + policy.shed_below_ms() / 1000.0 if policy.needs.sheds else -math.inf
    while queue and abs_deadline[queue.head()] < cutoff:
        shed.append(queue.pop())
    if not queue:
        return BatchPick(None, [], expired, shed)
    head = queue.head()
    recent = (arrived - bisect_left(trace.arrival_s, t - rate_window_s, 0, arrived)) / rate_window_s
    lookahead = policy.needs.lookahead
    slacks = np.fromiter(((abs_deadline[r] - t) * 1000.0 for r in queue.first(lookahead)), dtype=np.float64) \
        if lookahead else _NO_SLACKS
    history = policy.needs.arrival_history
    arrivals = trace.arrival_s[max(arrived - history, 0):arrived] if history else ()
    ctx = PolicyContext(t, task, len(queue), (abs_deadline[head] - t) * 1000.0, trace.rel_deadline_ms[head],
                        trace.request_ids[head], idle_servers, servers, recent, slacks, arrivals)
    try:
        config_id = policy(ctx)
    except Exception as exc:
        raise PolicyFailure(f"policy {policy.name!r} raised {type(exc).__name__} at t={t:.6f} s with "
                            f"{len(queue)} waiting: {exc}") from exc
    if not isinstance(config_id, str):
        raise PolicyFailure(f"policy {policy.name!r} returned {config_id!r}, not a config_id string")
    size = batch_size_of(config_id)
    if policy.needs.sheds:  # members the chosen configuration would most likely answer late
        cutoff = max(cutoff, t + policy.member_cutoff_ms(config_id) / 1000.0)
    members: list[int] = []
    while queue and len(members) < size:
        r = queue.pop()
        if drop_expired and abs_deadline[r] <= t:
            expired.append(r)
            continue
        if abs_deadline[r] < cutoff:
            shed.append(r)
            continue
        members.append(r)
    return BatchPick(config_id, members, expired, shed)


def check_trace(trace: pd.DataFrame, error: type[Exception], n_examples: int | None = None) -> pd.DataFrame:
    """Validate a trace entering a server and return it sorted by arrival (ties by request id).

    Columns and kinds from :data:`planner.schema.TRACE_COLUMNS`; at least one request; distinct
    request ids; finite arrival times >= 0 (a trace's clock starts at 0); deadlines by the one
    deadline rule (:func:`planner.schema.check_deadlines`); example ids >= 0 and, when
    ``n_examples`` is given, below it. Problems raise ``error`` with a message naming them.
    """
    try:
        trace = validate(trace, TRACE_COLUMNS, "trace")
    except ValueError as exc:
        raise error(str(exc)) from None
    if trace.empty:
        raise error("trace has no requests")
    if trace["request_id"].duplicated().any():
        raise error("trace has duplicated request_id values")
    arrival = trace["arrival_s"].to_numpy(dtype=float)
    if not np.isfinite(arrival).all() or (arrival < 0).any():
        raise error("trace arrival times must be finite and >= 0")
    try:
        check_deadlines(trace["deadline_ms"], "trace deadline_ms")
    except DeadlineError as exc:
        raise error(str(exc)) from None
    ids = trace["example_id"].to_numpy()
    if (ids < 0).any():
        raise error("trace has negative example ids")
    if n_examples is not None and (ids >= n_examples).any():
        bad = sorted(set(ids[ids >= n_examples].tolist()))[:5]
        raise error(f"trace example ids {bad} are outside the {n_examples} evaluation inputs")
    return trace.sort_values(["arrival_s", "request_id"], kind="stable").reset_index(drop=True)
