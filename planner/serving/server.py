"""A deadline-aware inference server over HTTP: one dynamic batcher, the one batch-pick rule.

Requests arrive over a socket (``POST /v1/predict``), each with its own deadline. They join one
queue; ``servers`` batcher threads take batches from it by :func:`planner.serving.batching.pick_batch`,
the rule the simulator and the in-process replay use, so the policy sees the same
:class:`~planner.plan.policies.PolicyContext` here as there. A request's clock starts when its
body has been read and checked (``arrival``); ``queue_ms`` runs from there to the start of its
batch, ``service_ms`` from there to its answer, and the outcome compares the sum with its deadline:

- ``on_time`` / ``late``: a model's answer, before / after the deadline (statuses ``served`` / ``late``);
- ``degraded``: a cascade's first-stage answer sent on time because its second stage would have
  been late, by the running estimate of its time or, when it overran that, just before the deadline
  (policies whose needs say ``early_answers``; :mod:`planner.serving.staged`, as the replay serves
  them); requests the first stage is sure about are answered as soon as it returns, the escalated
  ones after the second stage (the simulator charges every member the whole batch: it is
  conservative there);
- ``shed``: refused at once by the policy's admission control (no label, reason ``shed_unreachable``),
  or, for a policy whose needs say ``cancels``, its batch's call stopped once the latest deadline of
  its members had passed (no label, reason ``stopped_at_deadline``; ONNX Runtime calls only, by
  :mod:`planner.serving.stopping`, as the simulator and the replay stop them);
- ``dropped``: expired before its batch started (``drop_expired``), no configuration left after
  failures, or still waiting when a shutdown's drain time ran out (no label).

The wire format (accepted bodies, outcomes, the /metrics counters) lives in :mod:`planner.serving.api`.

Failures: a configuration that raises during a batch does not stop the server. Its requests are
answered by the fallback (:meth:`planner.plan.planner.DeadlinePlanner.fallback` over the loaded
configurations, given the tightest remaining budget; reason ``fallback`` or
``fallback_no_feasible``), and the configuration is skipped for ``failure_cooldown_s`` (the
policy's picks of it go to the fallback meanwhile). A policy that raises, or picks a configuration
that is not loaded, gets the same treatment for that batch (reason ``policy_error``). Every request
is answered exactly once.

The web layer is the standard library's ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, a thread
per connection, Nagle off): measured against Starlette and FastAPI on uvicorn in
``benchmarks/bench_http.py`` it had the lowest per-request overhead and the highest rate with 32
and 256 requests in flight here (see the method chapter). ``GET /healthz`` reports state,
``GET /metrics`` counters per outcome and configuration and a latency histogram in the Prometheus
text format (see :mod:`planner.serving.api`). A shutdown (Ctrl-C, SIGTERM,
:meth:`ServerThread.stop`) stops accepting connections, serves the queue for at most
``drain_s`` seconds, answers whatever is left as ``dropped`` (reason ``shutdown``) and waits for
the handler threads to write their answers.
"""

from __future__ import annotations

import errno
import json
import math
import signal
import socket
import sys
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from planner.plan.failure import NoConfigurationLeftError, PlannerError, ReasonCode
from planner.plan.planner import DeadlinePlanner
from planner.plan.policies import OnlinePolicy, Policy, PolicyContext, as_policy
from planner.plan.registry import METHODS, MethodParams, TraceContext, method_params
from planner.schema import ProfileBundle, measured
from planner.serving.api import RequestError, ServerMetrics, input_kind, parse_predict
from planner.serving.batching import QUEUES, RequestQueue, TraceArrays, pick_batch
from planner.serving.replay import LiveConfig
from planner.serving.staged import AlarmGuard, SecondStageEstimate, initial_second_stage_ms, run_staged
from planner.serving.stopping import CallStopper

# positions kept in the growing arrival lists before old ones are cut off (see Batcher._compact)
COMPACT_AT = 8192


class ServerError(RuntimeError):
    """The server cannot start or run as asked (the message says why)."""


class PortTakenError(ServerError):
    """The address to listen on is already in use."""


class ServerClosed(ServerError):
    """A request arrived while the server shuts down."""


# ---------------------------------------------------------------- settings and request checks

@dataclass(frozen=True)
class ServerSettings:
    """How the batcher serves (the same knobs as the simulator and the replay) and what it accepts."""

    servers: int = 1
    queue: Literal["fifo", "edf"] = "fifo"
    drop_expired: bool = False
    rate_window_s: float = 1.0
    max_text_chars: int = 2000
    max_body_bytes: int = 1 << 20
    failure_cooldown_s: float = 1.0
    drain_s: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.servers, bool) or not isinstance(self.servers, int) or self.servers < 1:
            raise ServerError(f"servers must be an integer >= 1, got {self.servers!r}")
        if self.queue not in QUEUES:
            raise ServerError(f"queue must be one of {QUEUES}, got {self.queue!r}")
        for name in ("rate_window_s", "failure_cooldown_s", "drain_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ServerError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.rate_window_s > 0:
            raise ServerError(f"rate_window_s must be positive, got {self.rate_window_s!r}")
        for name in ("max_text_chars", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ServerError(f"{name} must be >= 1, got {getattr(self, name)!r}")


# ---------------------------------------------------------------- the policy, guarded

class _Guarded(OnlinePolicy):
    """The policy as the batcher calls it: a raise, an unloaded pick or a configuration cooling
    down after a failure becomes the fallback's choice, with the reason kept for the answer."""

    def __init__(self, policy: OnlinePolicy, loaded: Mapping[str, LiveConfig], fallback: Callable[[float, set], Any],
                 cooling: Callable[[], set], metrics: ServerMetrics):
        self.policy, self.loaded, self.fallback, self.cooling, self.metrics = policy, loaded, fallback, cooling, metrics
        self.name, self.task, self.needs = policy.name, policy.task, policy.needs
        self.reason = str(ReasonCode.OK)

    def __call__(self, ctx: PolicyContext) -> str:
        self.reason = str(ReasonCode.OK)
        try:
            choice = self.policy(ctx)
        except Exception:  # noqa: BLE001 - any policy failure is answered by the fallback
            choice = None
        if not isinstance(choice, str) or choice not in self.loaded:
            self.metrics.policy_errors += 1
            decision = self.fallback(ctx.oldest_slack_ms, self.cooling())
            self.reason = "policy_error"
            return decision.config_id
        cooling = self.cooling()
        if choice in cooling:
            decision = self.fallback(ctx.oldest_slack_ms, cooling)
            self.reason = str(decision.reason)
            return decision.config_id
        return choice

    def observe(self, config_id: str, batch_n: int, service_ms: float, n_late: int = 0,
                cancelled: bool = False) -> None:
        self.policy.observe(config_id, batch_n, service_ms, n_late, cancelled)

    def shed_below_ms(self) -> float:
        return self.policy.shed_below_ms()

    def member_cutoff_ms(self, config_id: str) -> float:
        try:
            return self.policy.member_cutoff_ms(config_id)
        except (KeyError, PlannerError):  # a fallback configuration the policy does not know
            return -math.inf


# ---------------------------------------------------------------- the batcher

@dataclass(eq=False)
class _Pending:
    rid: int
    value: Any
    arrival: float
    deadline_ms: float
    reply: Callable[[dict], None]
    done: bool = False

    @property
    def abs_deadline(self) -> float:
        return self.arrival + self.deadline_ms / 1000.0


class Batcher:
    """The dynamic batcher: a growing arrival list, one queue, ``settings.servers`` worker threads.

    ``configs`` are loaded (and warmed up) by the caller; ``profiles`` hold their rows, from which
    the fallback planner is fitted over the loaded configurations only. ``clock`` is monotonic.
    """

    def __init__(self, policy: Policy, configs: Mapping[str, LiveConfig] | Sequence[LiveConfig], task: str,
                 profiles: pd.DataFrame, settings: ServerSettings = ServerSettings(), percentile: int = 95,
                 clock: Callable[[], float] = time.perf_counter):
        self.policy = as_policy(policy)
        self.configs = dict(configs) if isinstance(configs, Mapping) else {c.config_id: c for c in configs}
        if not self.configs:
            raise ServerError("no configurations to serve")
        self.task, self.settings, self.clock = task, settings, clock
        self.kind = input_kind(task)
        rows = profiles[profiles["config_id"].isin(self.configs)]
        missing = sorted(set(self.configs) - set(rows["config_id"]))
        if missing:
            raise ServerError(f"loaded configuration(s) {missing[:5]} have no profile row (the fallback needs them)")
        self.profiles = rows
        self._all_profiles = profiles.drop_duplicates("config_id").set_index("config_id")
        self.planner = DeadlinePlanner(percentile).fit(rows)
        self.metrics = ServerMetrics()
        self._cond = threading.Condition()
        self._arrays = TraceArrays([], [], [], [])
        self._pending: list[_Pending] = []
        self._queue = RequestQueue(settings.queue, self._arrays.abs_deadline_s)
        self._next_id = 0
        self._busy = 0
        self._closed = self._stopping = self._abort = False
        self._cooling: dict[str, float] = {}
        self._stage2 = {cid: SecondStageEstimate(initial_second_stage_ms(self._all_profiles, cid))
                        for cid, c in self.configs.items() if c.stages is not None}
        self._guard = _Guarded(self.policy, self.configs, self._fallback_choice, self._cooling_now, self.metrics)
        self._workers: list[threading.Thread] = []
        # stops a stoppable call at its members' latest deadline, for a policy that asks (needs.cancels),
        # and rings the alarms that send a cascade's first-stage answers at the deadline (needs.early_answers)
        self._stop_calls = self.policy.needs.cancels
        needs_timer = self._stop_calls or (self.policy.needs.early_answers and bool(self._stage2))
        self._stopper = CallStopper(clock) if needs_timer else None
        self._alarm_guard = AlarmGuard()
        self._answer_lock = threading.Lock()
        self.origin = clock()

    # ---- public ----------------------------------------------------------------------------
    def start(self) -> "Batcher":
        if self._workers:
            return self
        self._workers = [threading.Thread(target=self._worker, name=f"batcher-{s}", daemon=True)
                         for s in range(self.settings.servers)]
        for w in self._workers:
            w.start()
        return self

    def now(self) -> float:
        """Seconds since the batcher was built (the clock of arrivals, deadlines and batches)."""
        return self.clock() - self.origin

    def submit(self, value: Any, deadline_ms: float, reply: Callable[[dict], None]) -> int:
        """Queue one checked request; ``reply(answer)`` is called exactly once, from a batcher thread
        (or from :meth:`close`). Raises :class:`ServerClosed` once shutdown began."""
        with self._cond:
            if self._closed:
                raise ServerClosed("the server is shutting down")
            t = self.now()
            rid = self._next_id
            self._next_id += 1
            if len(self._pending) >= COMPACT_AT:
                self._compact(t)
            position = len(self._pending)
            self._pending.append(_Pending(rid, value, t, float(deadline_ms), reply))
            arrays = self._arrays
            arrays.arrival_s.append(t)
            arrays.abs_deadline_s.append(t + deadline_ms / 1000.0)
            arrays.rel_deadline_ms.append(float(deadline_ms))
            arrays.request_ids.append(rid)
            self._queue.push(position)
            self._cond.notify()
        return rid

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {"queue_len": len(self._queue), "busy_servers": self._busy, "servers": self.settings.servers,
                    "closed": self._closed, "cooling": sorted(self._cooling_now())}

    def close(self, drain_s: float | None = None) -> None:
        """Stop taking requests, serve the waiting ones for at most ``drain_s`` seconds, answer what is
        left as ``dropped`` (reason ``shutdown``) and stop the workers."""
        drain = self.settings.drain_s if drain_s is None else float(drain_s)
        with self._cond:
            self._closed = self._stopping = True
            self._cond.notify_all()
        end = time.monotonic() + drain
        for w in self._workers:
            w.join(max(0.0, end - time.monotonic()))
        with self._cond:
            self._abort = True
            left = [self._pending[self._queue.pop()] for _ in range(len(self._queue))]
            self._cond.notify_all()
        t = self.now()
        for r in left:
            self._answer(r, None, None, "dropped", "shutdown", t, t)
        for w in self._workers:
            w.join(max(0.0, end - time.monotonic()) + 1.0)  # a batch in progress finishes its call
        if self._stopper is not None:
            self._stopper.close()

    # ---- internals ---------------------------------------------------------------------------
    def _cooling_now(self) -> set[str]:
        t = self.now()
        return {c for c, until in self._cooling.items() if until > t}

    def _fallback_choice(self, budget_ms: float, failed: set[str]):
        return self.planner.fallback(self.task, float(budget_ms), failed)

    def _batch_size_of(self, config_id: str) -> int:
        return self.configs[config_id].batch_size

    def _compact(self, t: float) -> None:
        """Cut off positions no longer needed: not waiting and older than the rate window (under the lock)."""
        arrays = self._arrays
        k = bisect_left(arrays.arrival_s, t - self.settings.rate_window_s)
        waiting = [self._queue.pop() for _ in range(len(self._queue))]
        if waiting:
            k = min(k, min(waiting))
        if k > 0:
            for values in (arrays.arrival_s, arrays.abs_deadline_s, arrays.rel_deadline_ms, arrays.request_ids,
                           self._pending):
                del values[:k]
        for position in waiting:
            self._queue.push(position - k)

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._abort or (self._stopping and not self._queue):
                    return
                t = self.now()
                pick = pick_batch(self._queue, t, len(self._arrays.arrival_s), self._arrays, self._guard, self.task,
                                  self.settings.servers - self._busy, self.settings.servers,
                                  self.settings.rate_window_s, self.settings.drop_expired, self._batch_size_of)
                reason = self._guard.reason
                shed = [self._pending[i] for i in pick.shed]
                expired = [self._pending[i] for i in pick.expired]
                members = [self._pending[i] for i in pick.members]
                if members:
                    self._busy += 1
            for r in shed:
                self._answer(r, None, None, "shed", "shed_unreachable", t, t)
            for r in expired:
                self._answer(r, None, None, "dropped", "expired", t, t)
            if not members:
                continue
            try:
                self._serve(pick.config_id, members, t, reason)
            except BaseException as exc:  # never leave a request unanswered, whatever happened
                now = self.now()
                for r in members:
                    self._answer(r, None, None, "dropped", f"server_error:{type(exc).__name__}", t, now)
                if not isinstance(exc, Exception):
                    raise
            finally:
                with self._cond:
                    self._busy -= 1

    def _serve(self, config_id: str, members: list[_Pending], start: float, reason: str) -> None:
        """Run the batch; on a raise, the fallback serves the members not yet answered."""
        remaining, cid, failed = members, config_id, set()
        while remaining:
            cfg = self.configs[cid]
            try:
                while remaining:
                    chunk, remaining = remaining[: cfg.batch_size], remaining[cfg.batch_size:]
                    self._run(cfg, chunk, start, reason)
                    start = self.now()  # a fallback's next chunk starts when the previous one ends
            except Exception:  # noqa: BLE001 - a configuration's failure is answered by the fallback
                remaining = [r for r in (chunk + remaining) if not r.done]
                now = self.now()
                self.metrics.count("model_errors", cid)
                with self._cond:
                    self._cooling[cid] = now + self.settings.failure_cooldown_s
                failed.add(cid)
                budget = min(r.abs_deadline for r in remaining) - now if remaining else 0.0
                try:
                    decision = self._fallback_choice(budget * 1000.0, failed | self._cooling_now())
                except NoConfigurationLeftError:
                    for r in remaining:
                        self._answer(r, None, None, "dropped", "no_configuration_left", start, now)
                    return
                cid, reason, start = decision.config_id, str(decision.reason), now

    def _inputs(self, requests: list[_Pending]) -> Any:
        values = [r.value for r in requests]
        return np.stack(values) if self.kind == "image" else values

    def _run(self, cfg: LiveConfig, chunk: list[_Pending], start: float, reason: str) -> None:
        batch = self._inputs(chunk)
        if self.policy.needs.early_answers and cfg.stages is not None:
            outcomes, finish, stopped = self._run_staged(cfg, chunk, batch, start, reason)
        else:
            outcomes, finish, stopped = self._run_call(cfg, chunk, batch, start, reason)
        if stopped:  # stopped at the deadline: shed, and the server is free from now
            for r in chunk:
                self._answer(r, cfg.config_id, None, "shed", "stopped_at_deadline", start, finish)
            self._finished(cfg.config_id, len(chunk), (finish - start) * 1000.0, 0, cancelled=True)
            return
        self._finished(cfg.config_id, len(chunk), (finish - start) * 1000.0, outcomes.count("late"))

    def _run_call(self, cfg: LiveConfig, chunk: list[_Pending], batch: Any, start: float,
                  reason: str) -> tuple[list[str | None], float, bool]:
        """The batch in one call (stopped at its latest deadline where it can be, for a policy that asks):
        the outcomes sent, the finish, whether it was stopped (then nothing was sent)."""
        if self._stop_calls and cfg.run_stoppable is not None:
            # nothing it answers counts once its members' latest deadline has passed
            stop_at = self.origin + max(r.abs_deadline for r in chunk)
            answer = self._stopper.call(lambda options: cfg.run_stoppable(batch, options), stop_at)
        else:
            answer = cfg.run(batch)
        finish = self.now()
        if answer is None:
            return [], finish, True
        probs = np.asarray(answer[0])
        return [self._answer(r, cfg.config_id, p, None, reason, start, finish) for r, p in zip(chunk, probs)], finish, False

    def _run_staged(self, cfg: LiveConfig, chunk: list[_Pending], batch: Any, start: float,
                    reason: str) -> tuple[list[str | None], float, bool]:
        """A cascade stage by stage (planner.serving.staged): sure answers go out at once, doomed
        escalations degrade; as :meth:`_run_call` returns."""
        outcomes: list[str | None] = []

        def answer(i: int, probs: np.ndarray, at: float, early: bool) -> None:
            outcome, why = ("degraded", "early_answer") if early else (None, reason)
            outcomes.append(self._answer(chunk[i], cfg.config_id, probs, outcome, why, start, at - self.origin))

        call = run_staged(cfg.stages, batch, [self.origin + r.abs_deadline for r in chunk], answer,
                          self._stage2[cfg.config_id], self._stopper, self.clock, self._stop_calls,
                          self._alarm_guard)
        return outcomes, call.finish - self.origin, call.stopped

    def _finished(self, config_id: str, n: int, service_ms: float, n_late: int = 0, cancelled: bool = False) -> None:
        self.metrics.count("stopped_batches" if cancelled else "batches", config_id)
        if self.policy.needs.observes:
            with self._cond:
                self._guard.observe(config_id, n, service_ms, n_late, cancelled)

    def _answer(self, r: _Pending, config_id: str | None, probs: np.ndarray | None, outcome: str | None,
                reason: str, start: float, finish: float) -> str | None:
        """Build and send one request's answer (``outcome`` None: on time or late, by its latency);
        returns the outcome sent (None when the request was already answered)."""
        with self._answer_lock:  # a cascade's alarm thread may answer beside a batcher thread
            if r.done:
                return None
            r.done = True
        latency_ms = (finish - r.arrival) * 1000.0
        if outcome is None or outcome == "degraded":
            on_time = latency_ms <= r.deadline_ms
            outcome = ("degraded" if outcome else "on_time") if on_time else "late"
        label = confidence = None
        if probs is not None:
            p = np.asarray(probs, dtype=float)
            label, confidence = int(p.argmax()), float(p.max())
            if not math.isfinite(confidence):
                confidence = None
        answer = {"request_id": r.rid, "label": label, "confidence": confidence, "config_id": config_id,
                  "outcome": outcome, "reason": reason, "queue_ms": max(0.0, (start - r.arrival) * 1000.0),
                  "service_ms": max(0.0, (finish - start) * 1000.0), "latency_ms": latency_ms}
        model_answered = probs is not None
        self.metrics.answered(outcome, config_id, latency_ms if model_answered else None)
        try:
            r.reply(answer)
        except Exception:  # noqa: BLE001 - a gone client must not stop the batcher
            pass
        return outcome


# ---------------------------------------------------------------- policies for a server

def server_policy(method: str, bundle: ProfileBundle, task: str, percentile: int = 95,
                  params: Mapping[str, Any] | MethodParams | None = None,
                  workload_class: Literal["steady", "bursty"] = "steady") -> tuple[OnlinePolicy, list[str]]:
    """The registered method's policy for live requests, fitted once, and the configurations it may
    choose (which the server loads before its first request).

    Hindsight and bound methods need the whole trace before choosing, which a server never has:
    they are refused with the list of methods that can serve. ``workload_class`` is the hint a
    static method gets (the evaluation passes the trace's class)."""
    if method not in METHODS:
        raise ServerError(f"unknown method {method!r}; methods that can serve: {servable_methods()}")
    entry = METHODS[method]
    if entry.role in ("hindsight", "bound") or entry.policy is None:
        raise ServerError(f"method {method!r} is a {entry.role} reference: it chooses after seeing the whole trace, "
                          f"which a server answering requests as they come never has; methods that can serve: "
                          f"{servable_methods()}")
    if workload_class not in ("steady", "bursty"):
        raise ServerError(f"workload_class must be 'steady' or 'bursty', got {workload_class!r}")
    typed = params if isinstance(params, MethodParams) else method_params(method, dict(params or {}))
    fitted = entry.fit(bundle, task, int(percentile), typed)

    def no_trace(*_args: Any) -> float:
        raise ServerError(f"method {method!r} asked to score the trace; a server has none")

    policy = entry.policy(fitted, TraceContext(task, math.nan, workload_class, pd.DataFrame(), no_trace, no_trace))
    table = getattr(policy, "table_", None)
    if isinstance(table, pd.DataFrame):              # anytime, slack-aware: their candidate table
        configs = list(dict.fromkeys(table["config_id"]))
    elif callable(getattr(fitted, "decision_table", None)):  # a static planner: its step function
        below = fitted.select(task, 1e-9, workload_class).config_id  # below every breakpoint
        configs = list(dict.fromkeys([below, *fitted.decision_table(task, workload_class)["config_id"]]))
    else:
        configs = bundle.profiles.loc[measured(bundle.profiles, task), "config_id"].tolist()
    return policy, configs


def servable_methods() -> list[str]:
    """Registered methods a server can run (every role but hindsight and bound)."""
    return [m.name for m in METHODS.values() if m.role not in ("hindsight", "bound") and m.policy is not None]


# ---------------------------------------------------------------- the web app

class App:
    """The HTTP API over a batcher, independent of the socket: ``predict``, ``healthz``, ``metrics``.

    ``inputs`` (the evaluation set) make ``example_id`` requests possible. A handler thread calls
    :meth:`predict` and blocks until the batcher answers (it always does; ``answer_timeout_s`` only
    bounds a bug)."""

    def __init__(self, batcher: Batcher, inputs: Sequence[Any] | np.ndarray | None = None,
                 info: Mapping[str, Any] | None = None, answer_timeout_s: float = 300.0):
        self.batcher, self.inputs = batcher, inputs
        self.n_examples = len(inputs) if inputs is not None else None
        self.answer_timeout_s = float(answer_timeout_s)
        self.about = {"task": batcher.task, "policy": batcher.policy.name, "configs": len(batcher.configs),
                      "examples": self.n_examples, **dict(info or {})}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)

    def refuse(self, exc: RequestError) -> tuple[int, dict]:
        self.batcher.metrics.count("rejected", exc.status)
        return exc.status, {"error": str(exc)}

    def predict(self, body: bytes) -> tuple[int, dict]:
        """``(HTTP status, JSON object)`` for one predict body."""
        settings = self.batcher.settings
        if len(body) > settings.max_body_bytes:
            return self.refuse(RequestError(f"body of {len(body)} bytes exceeds the limit of "
                                            f"{settings.max_body_bytes}", 413))
        try:
            value, example_id, deadline_ms = parse_predict(body, self.batcher.kind, self.n_examples,
                                                           settings.max_text_chars)
        except RequestError as exc:
            return self.refuse(exc)
        if example_id is not None:
            value = self.inputs[example_id]
        done = threading.Event()
        box: list[dict] = []

        def reply(answer: dict) -> None:
            box.append(answer)
            done.set()

        with self._lock:
            self._in_flight += 1
        try:
            try:
                self.batcher.submit(value, deadline_ms, reply)
            except ServerClosed as exc:
                return self.refuse(RequestError(str(exc), 503))
            if not done.wait(self.answer_timeout_s):
                return 500, {"error": f"no answer within {self.answer_timeout_s} s (a server bug; please report)"}
            return 200, box[0]
        finally:
            with self._lock:
                self._in_flight -= 1
                self._idle.notify_all()

    def healthz(self) -> tuple[int, dict]:
        state = self.batcher.state()
        closed = state["closed"]
        return (503 if closed else 200), {"status": "shutting_down" if closed else "ok", **self.about, **state}

    def metrics(self) -> str:
        state = self.batcher.state()
        return self.batcher.metrics.render({"queue_length": state["queue_len"], "busy_servers": state["busy_servers"],
                                            "servers": state["servers"]})

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no predict call is in progress (their answers written or about to be)."""
        end = time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


def create_app(batcher: Batcher, inputs: Sequence[Any] | np.ndarray | None = None,
               info: Mapping[str, Any] | None = None) -> App:
    """The API over ``batcher`` (see :class:`App`); serve it with :func:`run_server` or :class:`ServerThread`."""
    return App(batcher, inputs, info)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; one thread per connection (``ThreadingHTTPServer``)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # status line + headers and body are two writes
    timeout = 120                    # an idle keep-alive connection is closed after this long
    server: "_HTTPServer"

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if self.server.closing:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        app = self.server.app
        if self.path.split("?")[0] != "/v1/predict":
            self._json(*app.refuse(RequestError(f"no POST route {self.path!r}; use /v1/predict", 404)))
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True  # the body's end is unknown: this connection cannot be reused
            self._json(*app.refuse(RequestError("a predict request needs a Content-Length header "
                                                "(chunked bodies are not accepted)", 411)))
            return
        n = int(length)
        if n > app.batcher.settings.max_body_bytes:
            self.close_connection = True
            self._json(*app.refuse(RequestError(f"body of {n} bytes exceeds the limit of "
                                                f"{app.batcher.settings.max_body_bytes}", 413)))
            return
        self._json(*app.predict(self.rfile.read(n)))

    def do_GET(self) -> None:  # noqa: N802
        app = self.server.app
        route = self.path.split("?")[0]
        if route == "/healthz":
            self._json(*app.healthz())
        elif route == "/metrics":
            self._send(200, app.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._json(*app.refuse(RequestError(f"no GET route {self.path!r}; use /healthz or /metrics", 404)))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: /metrics counts instead
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True        # idle keep-alive threads never hold up a shutdown
    request_queue_size = 2048    # the default backlog of 5 resets concurrent connects

    def __init__(self, sock: socket.socket, app: App):
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket, self.server_address = sock, sock.getsockname()
        self.server_activate()   # listen on the socket bound by bind_socket
        self.app, self.closing = app, False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away before its answer (a cancelled load run) is no server error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


# ---------------------------------------------------------------- listening

def bind_socket(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A bound socket for ``host:port`` (port 0: any free one), or :class:`PortTakenError` saying so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortTakenError(f"port {port} on {host} is already in use (another server is listening there); "
                                 "stop it or choose another with --port (0 picks a free one)") from None
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _shut_down(httpd: _HTTPServer, app: App, graceful_s: float) -> None:
    """After the accept loop stopped: answer every queued and in-flight request, then close."""
    httpd.closing = True
    app.batcher.close()                 # no new requests; the queue is served (drain_s), the rest answered
    app.wait_idle(graceful_s)           # handler threads write the answers they were waiting for
    httpd.server_close()


def run_server(app: App, sock: socket.socket, graceful_s: float = 10.0) -> None:
    """Serve ``app`` on a socket from :func:`bind_socket` in this thread until Ctrl-C or SIGTERM,
    then stop accepting, answer the requests queued and in flight, and return."""
    httpd = _HTTPServer(sock, app)
    app.batcher.start()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def terminate(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _shut_down(httpd, app, graceful_s)


class ServerThread:
    """The app on a loopback port in a background thread (tests, in-process load runs)::

        with ServerThread(app) as server:
            httpx.get(server.url + "/healthz")
    """

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0, graceful_s: float = 10.0):
        self.app, self.graceful_s = app, graceful_s
        self.sock = bind_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.httpd = _HTTPServer(self.sock, app)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="http-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        self.app.batcher.start()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()           # the accept loop ends; connections in progress go on
        self.thread.join()
        _shut_down(self.httpd, self.app, self.graceful_s)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
