"""Discrete-event serving simulator: a trace through k servers, a FIFO or EDF queue and batching.

Model (the same one a live replayer measures, so both produce the same per-request table):

- ``servers`` identical servers share one queue. The queue is work-conserving: whenever a server
  is free and requests wait, it starts a batch at once with up to ``b`` waiting requests, where
  ``b`` is the batch size of the configuration the policy picks for that batch (no waiting to
  fill a batch). FIFO serves in arrival order; EDF by absolute deadline (ties by arrival order).
- A batch's service time is a seeded draw from the configuration's measured latency samples.
  Samples are full-batch call times, so a partial batch is charged a full batch (conservative).
- A cascade configuration routes with its members (see the cascade convention): each request
  escalates when the small member's recorded confidence for its example is below tau; the batch
  takes a draw from the small member's samples plus, if any request in it escalates, a draw from
  the large member's; a request is correct as the member that answered it.
  ``cascade_mode="measured"`` instead treats a cascade like any other configuration, with its own
  measured samples and predictions; ``"auto"`` (default) routes by members when their samples and
  predictions are in the bundle.
- A policy whose needs say ``early_answers`` has a routed cascade served stage by stage, by the rule
  the live replay and the HTTP server follow (:mod:`planner.serving.staged`), decided on what they
  know rather than on the draw: the first stage answers the requests it is sure of at its end; an
  escalated request whose second stage, by a running estimate of that stage's time
  (:class:`planner.serving.staged.SecondStageEstimate`, first its large member's profiled median),
  would end after its deadline gets the first stage's answer then (``degraded``); the others wait
  for the second stage, which is drawn only if someone waits for it. One that has not answered
  :data:`planner.serving.staged.EARLY_GUARD_S` before a request's deadline is overtaken by that
  request's alarm, which sends the first stage's answer (an alarm rings on time here; live it rings
  up to a learned guard ahead). The server is busy until the second stage ends, or, for a policy
  that stops calls on a runtime that can, until its requests' latest deadline.
- With ``drop_expired=True`` a request whose deadline has passed when it would start service is
  dropped; otherwise it is served late.
- A policy whose needs say ``cancels`` has a batch abandoned when none of its requests would get an
  answer on time (every member's answer, an early one included, after its deadline): the server
  stops it at the latest member's deadline and is free from then on; its requests are shed then
  (status ``shed``; they keep the batch's id, start and configuration, so its server time is counted).
  Only configurations whose runtime can stop a running call are cancelled
  (:data:`CANCELLABLE_RUNTIMES`: ONNX Runtime's ``RunOptions.terminate``; PyTorch eager has no such
  hook), and only where the serving stack can (``can_cancel``; the live replay and the HTTP server
  can, through :mod:`planner.serving.stopping`, and take the same flag). Why: a call that will answer
  nobody on time otherwise holds the server for its whole draw, and at tight deadlines that is how a
  queue of late answers builds up.
- ``dispatch_overhead_ms`` (default 0) is added to every batch's service time: what a real server
  pays per batch outside the model call (waking the worker, building the batch, bookkeeping).
  Live replay measures it with a no-op model (:func:`planner.serving.replay.harness_overhead`); for
  sub-millisecond configurations it is of the order of the call itself. A cascade pays it once per
  batch (its second stage runs in the same dispatch).

Each configuration has its own seeded stream of draws, keyed by ``(seed, config_id)``, so the
result does not depend on which engine ran it: a static policy under FIFO takes a tight loop over
batches (``engine="fast"``), every other policy the general event loop (``engine="event"``), and
both give identical tables.
"""

from __future__ import annotations

import heapq
import math
import zlib
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from planner.plan.policies import OnlinePolicy, Policy, as_policy
from planner.schema import (CANCELLABLE_RUNTIMES, REQUEST_RESULT_COLUMNS, REQUEST_STATUSES, ProfileBundle,
                            config_id as make_config_id)
from planner.serving.batching import QUEUES, RequestQueue, TraceArrays, check_trace, pick_batch
from planner.serving.staged import EARLY_GUARD_S, SecondStageEstimate, initial_second_stage_ms, second_stage_positions

CASCADE_MODES = ("auto", "members", "measured")
RESULT_EXTRA_COLUMNS = ("arrival_s", "deadline_ms", "example_id", "batch_id", "server", "escalated")
_BLOCK = 4096


class SimulationError(ValueError):
    """The trace, the bundle or a policy's choice cannot be simulated (the message says why)."""


# ---------------------------------------------------------------- the bundle, indexed once

@dataclass
class ServedConfig:
    """Everything the simulator needs to serve one configuration."""

    config_id: str
    batch_size: int
    samples_s: np.ndarray                  # own samples, or the small member's for a routed cascade
    correct: np.ndarray                    # by example id (small member's for a routed cascade)
    known: np.ndarray                      # which example ids have a prediction
    large_samples_s: np.ndarray | None = None
    large_correct: np.ndarray | None = None
    large_known: np.ndarray | None = None
    small_confidence: np.ndarray | None = None
    threshold: float | None = None
    cancellable: bool = False              # its runtime can stop a running call (CANCELLABLE_RUNTIMES)

    @property
    def routed(self) -> bool:
        return self.large_samples_s is not None

    def outcome(self, example_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(correct, escalated) per example id: the answering member's correctness for a routed cascade."""
        if not self.routed:
            return self.correct[example_ids], np.zeros(len(example_ids), dtype=bool)
        escalated = self.small_confidence[example_ids] < self.threshold
        return np.where(escalated, self.large_correct[example_ids], self.correct[example_ids]), escalated


@dataclass
class Catalog:
    """A profile bundle indexed for simulation: build once, simulate many traces against it."""

    profiles: pd.DataFrame
    samples_ms: dict[str, np.ndarray]
    predictions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # correct, known, confidence
    cascade_mode: str = "auto"
    dispatch_overhead_ms: float = 0.0
    ordered_samples: bool = False  # serve each config's samples in order instead of drawing them
    _served: dict[str, ServedConfig] = field(default_factory=dict)

    def resolve(self, config_id: str) -> ServedConfig:
        served = self._served.get(config_id)
        if served is None:
            served = self._served[config_id] = self._build(config_id)
        return served

    def _samples(self, cid: str, why: str, dispatch: bool = True) -> np.ndarray:
        """Service-time draws in seconds; ``dispatch`` adds the per-batch dispatch overhead."""
        values = self.samples_ms.get(cid)
        if values is None or len(values) == 0:
            raise SimulationError(f"config {cid!r} has no latency samples ({why})")
        return (values + (self.dispatch_overhead_ms if dispatch else 0.0)) / 1000.0

    def _predictions(self, cid: str, why: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if cid not in self.predictions:
            raise SimulationError(f"config {cid!r} has no per-example predictions ({why}); "
                                  "a configuration whose accuracy is unavailable cannot be simulated for correctness")
        return self.predictions[cid]

    def _build(self, cid: str) -> ServedConfig:
        if cid not in self.profiles.index:
            raise SimulationError(f"policy chose config {cid!r}, which is not in the profiles")
        row = self.profiles.loc[cid]
        batch = row["batch_size"]
        if not (float(batch).is_integer() and batch >= 1):  # a batch of 0 would never drain the queue
            raise SimulationError(f"config {cid!r} has batch_size {batch}; it must be an integer >= 1")
        batch = int(batch)
        small, large = row.get("cascade_small"), row.get("cascade_large")
        is_cascade = isinstance(small, str) and isinstance(large, str) and small and large
        cancellable = row.get("runtime") in CANCELLABLE_RUNTIMES
        if is_cascade and self.cascade_mode != "measured":
            members = [make_config_id(row["task"], m, row["runtime"], row["precision"], batch, row["device"])
                       for m in (small, large)]
            present = all(m in self.samples_ms and m in self.predictions for m in members)
            if present or self.cascade_mode == "members":
                why = f"member of cascade {cid!r}"
                tau = float(row["threshold"])
                if not 0 < tau < 1:
                    raise SimulationError(f"cascade {cid!r} has threshold {tau!r}, not in (0, 1)")
                s_correct, s_known, s_conf = self._predictions(members[0], why)
                l_correct, l_known, _ = self._predictions(members[1], why)
                return ServedConfig(cid, batch, self._samples(members[0], why), s_correct, s_known,
                                    self._samples(members[1], why, dispatch=False), l_correct, l_known, s_conf, tau,
                                    cancellable)
        correct, known, _ = self._predictions(cid, "chosen by the policy")
        return ServedConfig(cid, batch, self._samples(cid, "chosen by the policy"), correct, known,
                            cancellable=cancellable)


def prepare(bundle: ProfileBundle | Catalog, cascade_mode: str = "auto", dispatch_overhead_ms: float | None = None) -> Catalog:
    """Index a ProfileBundle-like object (``.profiles``, ``.samples``, ``.predictions``) for simulation.

    ``dispatch_overhead_ms``: per-batch cost added to every service draw (None: 0, or a Catalog's own).
    """
    if dispatch_overhead_ms is not None and not (math.isfinite(dispatch_overhead_ms) and dispatch_overhead_ms >= 0):
        raise SimulationError(f"dispatch_overhead_ms must be a finite number >= 0, got {dispatch_overhead_ms!r}")
    if isinstance(bundle, Catalog):
        if dispatch_overhead_ms is not None and dispatch_overhead_ms != bundle.dispatch_overhead_ms:
            raise SimulationError(f"this Catalog was prepared with dispatch_overhead_ms={bundle.dispatch_overhead_ms}, "
                                  f"not {dispatch_overhead_ms}; prepare a new one")
        return bundle
    if cascade_mode not in CASCADE_MODES:
        raise SimulationError(f"cascade_mode must be one of {CASCADE_MODES}, got {cascade_mode!r}")
    for name in ("profiles", "samples", "predictions"):
        if not isinstance(getattr(bundle, name, None), pd.DataFrame):
            raise SimulationError(f"bundle has no DataFrame attribute {name!r}")
    profiles = bundle.profiles.set_index("config_id", drop=False)
    samples = bundle.samples
    bad = samples.loc[~(samples["latency_ms"] > 0) | ~np.isfinite(samples["latency_ms"]), "config_id"].unique()
    if len(bad):
        raise SimulationError(f"latency samples must be positive and finite; bad for {list(bad[:5])}")
    samples_ms = {cid: group.to_numpy(dtype=float)
                  for cid, group in samples.sort_values(["config_id", "call_index"]).groupby("config_id", sort=False)["latency_ms"]}
    predictions = {}
    preds = bundle.predictions
    if len(preds):
        size = int(preds["example_id"].max()) + 1
        for cid, group in preds.groupby("config_id", sort=False):
            ids = group["example_id"].to_numpy(dtype=np.int64)
            if ids.min() < 0:
                raise SimulationError(f"predictions of {cid!r} have negative example ids")
            correct = np.zeros(size, dtype=bool)
            known = np.zeros(size, dtype=bool)
            confidence = np.full(size, np.nan)
            correct[ids] = group["correct"].to_numpy(dtype=bool)
            known[ids] = True
            confidence[ids] = group["confidence"].to_numpy(dtype=float)
            predictions[cid] = (correct, known, confidence)
    return Catalog(profiles, samples_ms, predictions, cascade_mode, float(dispatch_overhead_ms or 0.0))


# ---------------------------------------------------------------- seeded draws

class _Draws:
    """A configuration's own stream of service-time draws (seconds), read in order.

    ``ordered``: no random draws; the values themselves, in order (cycled), e.g. the service times a
    live replay measured batch by batch, so the simulator can be checked against it step by step."""

    def __init__(self, seed: int, key: str, values_s: np.ndarray, ordered: bool = False):
        self._rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))
        self._values, self._buffer, self._pos = values_s, [], 0
        self._ordered, self._next = ordered, 0

    def block(self, n: int) -> np.ndarray:
        if self._ordered:
            index = (self._next + np.arange(n)) % len(self._values)
            self._next += n
            return self._values[index]
        index = (self._rng.random(n) * len(self._values)).astype(np.int64)
        return self._values[index]

    def next(self) -> float:
        if self._pos >= len(self._buffer):
            self._buffer, self._pos = self.block(_BLOCK).tolist(), 0
        value = self._buffer[self._pos]
        self._pos += 1
        return value


class _Run:
    """Per-simulation state of each configuration used: draw streams and escalation flags."""

    def __init__(self, catalog: Catalog, seed: int, example_ids: np.ndarray, task: str):
        self.catalog, self.seed, self.example_ids, self.task = catalog, seed, example_ids, task
        self.configs: list[ServedConfig] = []
        self.index: dict[str, int] = {}
        self.small: list[_Draws] = []
        self.large: list[_Draws | None] = []
        self.escalate: list[np.ndarray | None] = []

    def use(self, cid: str) -> int:
        idx = self.index.get(cid)
        if idx is not None:
            return idx
        served = self.catalog.resolve(cid)
        config_task = self.catalog.profiles.at[cid, "task"]
        if config_task != self.task:  # its predictions are for another data set's example ids
            raise SimulationError(f"policy chose {cid!r}, a {config_task} configuration, for a {self.task} trace")
        ids = self.example_ids
        for known, who in ((served.known, cid), (served.large_known, f"large member of {cid}")):
            if known is not None:
                missing = ids[(ids >= len(known)) | ~known[np.minimum(ids, len(known) - 1)]]
                if len(missing):
                    raise SimulationError(f"{who} has no prediction for example id(s) {sorted(set(missing.tolist()))[:5]}")
        idx = self.index[cid] = len(self.configs)
        self.configs.append(served)
        ordered = self.catalog.ordered_samples
        self.small.append(_Draws(self.seed, cid + "#service", served.samples_s, ordered))
        if served.routed:
            self.large.append(_Draws(self.seed, cid + "#escalation", served.large_samples_s, ordered))
            self.escalate.append(served.small_confidence[ids] < served.threshold)
        else:
            self.large.append(None)
            self.escalate.append(None)
        return idx


# ---------------------------------------------------------------- engines

@dataclass
class _Batches:
    start: list = field(default_factory=list)
    finish: list = field(default_factory=list)
    config: list = field(default_factory=list)
    server: list = field(default_factory=list)
    shed_at: np.ndarray | None = None     # per request: when admission control shed it (NaN: not shed)
    early_at: np.ndarray | None = None    # per request: when a cascade's first stage answered it early
    first_at: np.ndarray | None = None    # per request: when a staged cascade's first stage answered it, sure
    cancelled_at: np.ndarray | None = None  # per request: when its batch was abandoned at the deadline


def _fast_fifo(arr: list, abs_deadline: list, run: _Run, cfg: int, servers: int, drop: bool,
               n: int) -> tuple[_Batches, np.ndarray]:
    """Static policy under FIFO: batches are consecutive runs of the arrival order.

    A tight loop over batches with Python floats; ``bisect`` finds how many requests have arrived
    by a batch's start. Same rules and draw order as :func:`_event_loop`.
    """
    served = run.configs[cfg]
    b = served.batch_size
    small = run.small[cfg].block(n).tolist()        # at most n batches, one draw each
    large = run.large[cfg].block(n).tolist() if served.routed else None
    escalate = run.escalate[cfg]
    free = [(-math.inf, s) for s in range(servers)]
    out = _Batches()
    starts, finishes, server_of = out.start, out.finish, out.server
    batch_of = np.full(n, -1, dtype=np.int64)
    i, m, e, t_last = 0, 0, 0, -math.inf
    if not drop:
        esc_cum = np.concatenate([[0], np.cumsum(escalate)]).tolist() if escalate is not None else None
        sizes = []
        while i < n:
            f, sid = free[0]
            a = arr[i]
            t = f if f > a else a
            if t < t_last:
                t = t_last
            hi = i + b if i + b < n else n
            j = bisect_right(arr, t, i + 1, hi) if b > 1 else i + 1
            svc = small[m]
            if esc_cum is not None and esc_cum[j] != esc_cum[i]:
                svc += large[e]
                e += 1
            fin = t + svc
            heapq.heapreplace(free, (fin, sid))
            starts.append(t)
            finishes.append(fin)
            server_of.append(sid)
            sizes.append(j - i)
            i, m, t_last = j, m + 1, t
        batch_of[:] = np.repeat(np.arange(m), sizes)
    else:
        esc = escalate.tolist() if escalate is not None else None
        while i < n:
            f, sid = free[0]
            a = arr[i]
            t = f if f > a else a
            if t < t_last:
                t = t_last
            t_last = t
            members = []
            while i < n and arr[i] <= t and len(members) < b:
                if abs_deadline[i] > t:
                    members.append(i)
                i += 1
            if not members:
                continue
            svc = small[m]
            if esc is not None and any(esc[r] for r in members):
                svc += large[e]
                e += 1
            fin = t + svc
            heapq.heapreplace(free, (fin, sid))
            batch_of[members] = m
            starts.append(t)
            finishes.append(fin)
            server_of.append(sid)
            m += 1
    out.config = [cfg] * m
    return out, batch_of


def _event_loop(trace: TraceArrays, run: _Run, policy: OnlinePolicy, task: str, servers: int, queue: str,
                drop: bool, rate_window_s: float, n: int, can_cancel: bool = True) -> tuple[_Batches, np.ndarray]:
    """General discrete-event loop: any policy, FIFO or EDF, called once per batch.

    Time advances to the next moment a server is free and a request waits. At that moment all
    arrivals up to now join the queue and the shared rule (:func:`planner.serving.batching.pick_batch`)
    drops expired heads (if enabled), asks the policy and takes the batch. A policy whose needs say
    ``observes`` is told each batch's simulated service time once the batch is decided (a cancelled
    batch: the time it ran, with ``cancelled=True``).
    """
    arr = trace.arrival_s
    abs_deadline = trace.abs_deadline_s
    waiting = RequestQueue(queue, abs_deadline)
    free = [(-math.inf, s) for s in range(servers)]
    out = _Batches(shed_at=np.full(n, np.nan), early_at=np.full(n, np.nan), first_at=np.full(n, np.nan),
                   cancelled_at=np.full(n, np.nan))
    batch_of = np.full(n, -1, dtype=np.int64)
    observes, staged = policy.needs.observes, policy.needs.early_answers
    cancels = can_cancel and policy.needs.cancels
    estimates: dict[int, SecondStageEstimate] = {}  # per staged cascade, learned as live

    def batch_size_of(config_id: str) -> int:
        return run.configs[run.use(config_id)].batch_size

    i, t_last = 0, -math.inf
    while True:
        if not waiting and i >= n:
            break
        f, sid = free[0]
        t = f if f > t_last else t_last
        if not waiting and arr[i] > t:
            t = arr[i]
        t_last = t
        while i < n and arr[i] <= t:
            waiting.push(i)
            i += 1
        idle = 1 + sum(1 for g, _ in free[1:] if g <= t) if servers > 1 else 1
        pick = pick_batch(waiting, t, i, trace, policy, task, idle, servers, rate_window_s, drop, batch_size_of)
        if pick.shed:
            out.shed_at[pick.shed] = t
        if pick.config_id is None or not pick.members:
            continue
        cfg = run.use(pick.config_id)
        members = pick.members
        svc = run.small[cfg].next()
        escalate = run.escalate[cfg]
        if escalate is not None and escalate[members].any():
            if staged:
                estimate = estimates.get(cfg)
                if estimate is None:
                    estimate = estimates[cfg] = SecondStageEstimate(
                        initial_second_stage_ms(run.catalog.profiles, pick.config_id))
                svc = _staged_cascade(t, svc, members, escalate, abs_deadline, run.large[cfg], estimate,
                                      cancels and run.configs[cfg].cancellable, out)
            else:
                svc += run.large[cfg].next()
        fin = t + svc
        n_late = 0
        if observes or cancels:  # answered at the finish, or by the first stage; late: after the deadline
            answered = [out.early_at[r] if out.early_at[r] == out.early_at[r] else
                        out.first_at[r] if out.first_at[r] == out.first_at[r] else fin for r in members]
            n_late = sum(a > abs_deadline[r] for a, r in zip(answered, members))
        cancelled = cancels and n_late == len(members) and run.configs[cfg].cancellable
        if cancelled:  # nobody gains from it: stopped at the latest member's deadline
            fin = max(t, max(abs_deadline[r] for r in members))
            out.cancelled_at[members] = fin
            out.early_at[members] = np.nan
            out.first_at[members] = np.nan
        heapq.heapreplace(free, (fin, sid))
        batch_of[members] = len(out.start)
        out.start.append(t)
        out.finish.append(fin)
        out.config.append(cfg)
        out.server.append(sid)
        if observes:
            if cancelled:
                policy.observe(pick.config_id, len(members), (fin - t) * 1000.0, 0, cancelled=True)
            else:
                policy.observe(pick.config_id, len(members), svc * 1000.0, n_late)
    return out, batch_of


def _staged_cascade(t: float, first_s: float, members: list[int], escalate: np.ndarray, abs_deadline: list,
                    second_draws: _Draws, estimate: SecondStageEstimate, stoppable: bool, out: _Batches) -> float:
    """One cascade batch served stage by stage, as :func:`planner.serving.staged.run_staged` serves it
    live; records who the first stage answered and when in ``out``; returns the batch's service time.

    Decided on the running estimate, not on the draw, so that the simulator neither sends the first
    stage's answer to exactly those the second would have answered late nor skips a doomed second
    stage for free: a second stage that overruns costs its requests the better answer and the server
    its time, as it does live."""
    first_done = t + first_s
    positions = second_stage_positions(first_done, [escalate[r] for r in members],
                                       [abs_deadline[r] for r in members], estimate)
    go_on = [members[i] for i in positions]
    waiting = set(go_on)
    for r in members:
        if r not in waiting:  # sure, or escalated with no time for the second stage: answered now
            (out.early_at if escalate[r] else out.first_at)[r] = first_done
    if not go_on:
        return first_s
    end = first_done + second_draws.next()
    latest = max(abs_deadline[r] for r in go_on)
    stopped = stoppable and end > latest
    if stopped:  # by then every one of its requests has had its alarm
        end = latest
    for r in go_on:
        alarm = abs_deadline[r] - EARLY_GUARD_S
        if alarm < end:  # the second stage has not answered by the alarm: the first stage's answer
            out.early_at[r] = max(alarm, first_done)
    estimate.update((end - first_done) * 1000.0, stopped=stopped)
    return end - t


# ---------------------------------------------------------------- public API

def _infer_task(policy: OnlinePolicy, trace: pd.DataFrame, catalog: Catalog) -> str:
    task = policy.task
    if task:
        return str(task)
    if "task" in trace.columns and trace["task"].nunique() == 1:
        return str(trace["task"].iloc[0])
    tasks = catalog.profiles["task"].unique()
    if len(tasks) == 1:
        return str(tasks[0])
    raise SimulationError(f"cannot tell the task: pass task= (profiles hold {sorted(tasks)})")


def simulate(trace: pd.DataFrame, policy: Policy, bundle: ProfileBundle | Catalog, servers: int = 1,
             queue: Literal["fifo", "edf"] = "fifo", seed: int = 0, *, drop_expired: bool = False,
             method: str | None = None, task: str | None = None,
             engine: Literal["auto", "fast", "event"] = "auto", cascade_mode: str = "auto",
             rate_window_s: float = 1.0, dispatch_overhead_ms: float | None = None,
             can_cancel: bool = True) -> pd.DataFrame:
    """Run ``trace`` through the serving model; one row per request, in ``request_id`` order.

    Columns: :data:`planner.schema.REQUEST_RESULT_COLUMNS` plus ``arrival_s, deadline_ms,
    example_id, batch_id, server, escalated``. ``latency_ms`` = finish - arrival (queueing +
    service); status is ``served`` (on time), ``late`` or ``dropped`` (never started; no
    config, times or latency). ``bundle`` may be a ProfileBundle-like object or a :class:`Catalog`;
    ``dispatch_overhead_ms`` is added to each batch's service time; ``can_cancel``: whether the
    server stops a batch that answers nobody on time, for a policy that asks it to (see the module
    docstring; False where the simulator stands in for the live replay or the HTTP server).
    """
    if queue not in QUEUES:
        raise SimulationError(f"queue must be one of {QUEUES}, got {queue!r}")
    if isinstance(servers, bool) or not isinstance(servers, (int, np.integer)) or servers < 1:
        raise SimulationError(f"servers must be an integer >= 1, got {servers!r}")
    if engine not in ("auto", "fast", "event"):
        raise SimulationError(f"engine must be 'auto', 'fast' or 'event', got {engine!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise SimulationError(f"seed must be a non-negative integer, got {seed!r}")
    if not rate_window_s > 0:
        raise SimulationError(f"rate_window_s must be positive, got {rate_window_s!r}")
    if not callable(policy):
        raise SimulationError(f"policy must be callable as policy(ctx) -> config_id, got {type(policy).__name__}")
    policy = as_policy(policy)
    catalog = prepare(bundle, cascade_mode, dispatch_overhead_ms)
    ordered = check_trace(trace, SimulationError)
    task = task or _infer_task(policy, ordered, catalog)
    n = len(ordered)
    arrival = ordered["arrival_s"].to_numpy()
    rel_deadline = ordered["deadline_ms"].to_numpy()
    abs_deadline = arrival + rel_deadline / 1000.0
    example_ids = ordered["example_id"].to_numpy()
    run = _Run(catalog, int(seed), example_ids, task)

    static_cfg = None
    if policy.needs.static and not policy.needs.observes and queue == "fifo" and engine != "event":
        choices = {policy.config_for(d) for d in np.unique(rel_deadline)}
        if len(choices) == 1:
            static_cfg = run.use(choices.pop())
    if engine == "fast" and static_cfg is None:
        raise SimulationError("engine='fast' needs a static policy (config_for) that picks one config, under FIFO")
    arr = arrival.tolist()
    if static_cfg is not None:
        batches, batch_of = _fast_fifo(arr, abs_deadline.tolist(), run, static_cfg, int(servers), drop_expired, n)
    else:
        batches, batch_of = _event_loop(TraceArrays.from_frame(ordered), run, policy, task, int(servers), queue,
                                        drop_expired, float(rate_window_s), n, bool(can_cancel))
    return _assemble(ordered, run, batches, batch_of, method or policy.name)


def _strings(values: list[str | None], codes: np.ndarray) -> pd.Series:
    """A pandas ``str`` column ``values[codes]``, built by Arrow ``take`` (no per-row Python strings)."""
    return pd.Series(pa.array(values, type=pa.large_string()).take(pa.array(codes)),
                     dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _assemble(ordered: pd.DataFrame, run: _Run, batches: _Batches, batch_of: np.ndarray,
              method: str) -> pd.DataFrame:
    """Vectorised per-request table from per-batch records."""
    n = len(ordered)
    served = batch_of >= 0
    b_start, b_finish = np.asarray(batches.start, dtype=float), np.asarray(batches.finish, dtype=float)
    b_config, b_server = np.asarray(batches.config, dtype=np.int64), np.asarray(batches.server, dtype=np.int64)
    safe = np.where(served, batch_of, 0)
    start = np.where(served, b_start[safe] if len(b_start) else np.nan, np.nan)
    finish = np.where(served, b_finish[safe] if len(b_finish) else np.nan, np.nan)
    cfg = np.where(served, b_config[safe] if len(b_config) else -1, -1)
    arrival = ordered["arrival_s"].to_numpy()
    deadline = ordered["deadline_ms"].to_numpy()
    eids = ordered["example_id"].to_numpy()
    none = np.full(n, np.nan)  # the static fast path neither sheds nor answers early
    early_at = batches.early_at if batches.early_at is not None else none
    first_at = batches.first_at if batches.first_at is not None else none
    shed_at = batches.shed_at if batches.shed_at is not None else none
    cancelled = ~np.isnan(batches.cancelled_at) if batches.cancelled_at is not None else np.zeros(n, dtype=bool)
    early, shed = served & ~np.isnan(early_at), ~np.isnan(shed_at)
    sure_first = served & ~np.isnan(first_at)  # a staged cascade's sure answer, at its first stage's end
    finish = np.where(shed, shed_at, np.where(early, early_at, np.where(sure_first, first_at, finish)))
    start = np.where(shed, finish, start)
    shed = shed | cancelled
    latency = (finish - arrival) * 1000.0
    on_time = served & ~shed & (latency <= deadline)
    correct = np.zeros(n, dtype=bool)
    escalated = np.zeros(n, dtype=bool)
    for idx, conf in enumerate(run.configs):
        rows = np.flatnonzero(cfg == idx)
        if not len(rows):
            continue
        correct[rows], escalated[rows] = conf.outcome(eids[rows])
        first = rows[early[rows]]
        if len(first):  # answered by the cascade's first stage
            correct[first], escalated[first] = conf.correct[eids[first]], False
    names = [c.config_id for c in run.configs]
    # indices into REQUEST_STATUSES: served, late, dropped, shed, degraded
    status = np.where(shed, 3, np.where(~served, 2, np.where(on_time, np.where(early, 4, 0), 1)))
    frame = pd.DataFrame({
        "request_id": ordered["request_id"].to_numpy(),
        "method": _strings([method], np.zeros(n, dtype=np.int64)),
        "config_id": _strings(names + [None], np.where(cfg >= 0, cfg, len(names))),
        "start_s": start, "finish_s": finish, "latency_ms": latency,
        "status": _strings(list(REQUEST_STATUSES), status), "hit": on_time, "correct": correct,
        "arrival_s": arrival, "deadline_ms": deadline, "example_id": eids,
        "batch_id": batch_of, "server": np.where(served, b_server[safe] if len(b_server) else -1, -1),
        "escalated": escalated,
    })
    return frame.sort_values("request_id", kind="stable").reset_index(drop=True)
