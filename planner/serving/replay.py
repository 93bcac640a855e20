"""Live replay: a request trace served in real time by real models, in-process.

The serving model is the simulator's (:mod:`planner.serving.simulator`), executed for real instead of drawn:

- a producer (the calling thread) sleeps until each request's ``arrival_s`` on a monotonic clock
  (``time.perf_counter``) and puts it in one shared queue;
- ``servers`` worker threads share that queue. Whenever a worker is free and requests wait, it
  starts a batch at once (work-conserving, no waiting to fill a batch): with ``drop_expired`` it
  first drops expired requests at the head, asks the policy for a configuration with the same
  :class:`planner.plan.policies.PolicyContext` the simulator builds, and takes up to that
  configuration's batch size of waiting requests (FIFO: arrival order; EDF: absolute deadline,
  ties by arrival order), skipping expired ones when dropping;
- the batch runs the configuration's real ``Predictor.predict`` (or the real cascade) on those
  requests' evaluation inputs; start is the moment the worker took the batch, finish the moment
  the call returned. Correctness is the real prediction against the label.

The output is the simulator's per-request table (:data:`planner.schema.REQUEST_RESULT_COLUMNS` plus
the simulator's extra columns), so :func:`planner.serving.simulator.run_metrics` applies unchanged. Latency
is measured from the request's scheduled arrival (what a client that sent it then would see);
``sent_lag_ms`` records how late the producer actually enqueued it.

A policy's admission control (``needs.sheds``) sheds requests here exactly as in the simulator.
For a policy whose needs say ``early_answers``, a cascade runs stage by stage
(:func:`planner.serving.staged.run_staged`, as the HTTP server runs it): an escalated request whose
second stage would be late gets the first stage's answer on time (status ``degraded``), by the
running estimate of the second stage (``second_stage_ms`` to start from, else 0: the first one is
tried) or, when the second stage overruns, just before its deadline; other policies run a cascade in
one call. A batch is stopped at the deadline (``needs.cancels``) as in the simulator: once the
latest deadline of its members has passed, a call that can be stopped (``LiveConfig.run_stoppable``:
a runtime in :data:`planner.schema.CANCELLABLE_RUNTIMES`, ONNX Runtime on the CPU) is stopped there
(:mod:`planner.serving.stopping`), its requests are shed (they keep the batch's id, start and
configuration) and the policy observes it with ``cancelled=True``; torch calls run to their end.
``can_cancel=False`` runs every call to its end, as the simulator's flag.

Differences from the simulator that are real, not modelled: a partial batch runs on fewer inputs
(the simulator charges it a full-batch sample) unless ``pad_partial=True``; workers pay thread
wake-up and Python bookkeeping; the CPU is shared with whatever else runs.

A replay is bounded: at most ``max_requests`` requests (the first by arrival) and ``max_wall_s``
seconds from the clock's start. Requests that would arrive after the wall limit are never sent
(they are not in the output); requests still waiting when it is reached are recorded as dropped
with ``abandoned=True``. No network server is involved.
"""

from __future__ import annotations

import ctypes
import gc
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from planner.models import zoo
from planner.models.base import VariantSpec
from planner.models.cascade import Cascade, escalate_mask
from planner.plan.policies import Policy, as_policy, fixed
from planner.schema import CANCELLABLE_RUNTIMES, REQUEST_RESULT_COLUMNS
from planner.serving.batching import QUEUES, RequestQueue, TraceArrays, check_trace, pick_batch
from planner.serving.simulator import RESULT_EXTRA_COLUMNS
from planner.serving.staged import AlarmGuard, SecondStageEstimate, run_staged
from planner.serving.stopping import CallStopper
from planner.workloads import poisson

LIVE_EXTRA_COLUMNS = ("sent_lag_ms", "service_ms", "batch_n", "abandoned")
# The producer must get the GIL promptly when an arrival is due even while a worker runs Python
# code (tokenisation, bookkeeping); CPython's default switch interval is 5 ms.
SWITCH_INTERVAL_S = 0.0005
# Linux rounds a sleeping thread's wake-up up by its timer slack (50 us by default); the producer
# asks for 1 ns so arrivals are enqueued closer to their time (median lag measured ~90 -> ~40 us).
PRODUCER_TIMER_SLACK_NS = 1


class ReplayError(RuntimeError):
    """A live replay cannot run as asked (the message says why)."""


# ---------------------------------------------------------------- what a worker can run

@dataclass(frozen=True)
class CascadeStages:
    """A cascade's two stages callable apart, for a replay or a server that answers from the first
    stage when the second would be late (``needs.early_answers``; :mod:`planner.serving.staged`).

    ``first(inputs)`` / ``second(inputs)`` -> probabilities; ``escalate(first_probs)`` -> bool mask;
    ``first_stoppable`` / ``second_stoppable(inputs, options)`` (where the stage can be stopped) are
    the same calls, which raise :class:`planner.models.base.CallStopped` once ``options.terminate`` is set.
    """

    first: Callable[[Any], np.ndarray]
    second: Callable[[Any], np.ndarray]
    escalate: Callable[[np.ndarray], np.ndarray]
    first_stoppable: Callable[[Any, Any], np.ndarray] | None = None
    second_stoppable: Callable[[Any, Any], np.ndarray] | None = None


@dataclass(frozen=True)
class LiveConfig:
    """One servable configuration: its batch size and a call answering a batch of raw inputs.

    ``run(inputs) -> (probabilities (n, classes), stage or None)``; ``stage`` (1 or 2 per input)
    comes from a cascade and marks escalated requests. ``stages`` (cascades only, optional) runs
    the two stages apart. ``run_stoppable(inputs, options)`` (where the call can be stopped) is the
    same call, which raises :class:`planner.models.base.CallStopped` once ``options.terminate`` is set.
    """

    config_id: str
    batch_size: int
    run: Callable[[Any], tuple[np.ndarray, np.ndarray | None]]
    stages: CascadeStages | None = None
    run_stoppable: Callable[[Any, Any], tuple[np.ndarray, np.ndarray | None]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) \
                or self.batch_size < 1:
            raise ReplayError(f"{self.config_id}: batch_size must be an integer >= 1, got {self.batch_size!r}")


def can_stop(model: Any) -> bool:
    """Whether a predictor's (or a cascade's) calls can be stopped mid-call: its runtime is one of
    :data:`planner.schema.CANCELLABLE_RUNTIMES`, the list the simulator and the policy read too."""
    spec = getattr(model, "spec", None)
    return spec is not None and spec.runtime in CANCELLABLE_RUNTIMES


def from_predictor(config_id: str, predictor: Any, batch_size: int) -> LiveConfig:
    """A plain configuration: ``predictor.predict(inputs, batch_size)`` (stoppable where :func:`can_stop`)."""
    b = int(batch_size)
    stoppable = None
    if can_stop(predictor):
        def stoppable(inputs: Any, options: Any) -> tuple[np.ndarray, None]:
            return predictor.predict(inputs, b, run_options=options), None
    return LiveConfig(config_id, b, lambda inputs: (predictor.predict(inputs, b), None), run_stoppable=stoppable)


def from_cascade(config_id: str, cascade: Any, batch_size: int) -> LiveConfig:
    """A cascade configuration: ``cascade.predict_with_stages(inputs, batch_size)`` (stage 2 = escalated)."""
    b = int(batch_size)

    def run(inputs: Any, options: Any = None) -> tuple[np.ndarray, np.ndarray]:
        stop = {} if options is None else {"run_options": options}
        probs, _confidence, stage = cascade.predict_with_stages(inputs, b, **stop)
        return probs, np.asarray(stage)

    def stoppable(member: Any) -> Callable[[Any, Any], np.ndarray] | None:
        return (lambda inputs, options: member.predict(inputs, b, run_options=options)) if can_stop(member) else None

    stages = CascadeStages(lambda inputs: cascade.small.predict(inputs, b), lambda inputs: cascade.large.predict(inputs, b),
                           lambda probs: escalate_mask(probs, cascade.threshold),
                           stoppable(getattr(cascade, "small", None)), stoppable(getattr(cascade, "large", None)))
    return LiveConfig(config_id, b, run, stages, run if can_stop(cascade) else None)


def take(inputs: Sequence[Any] | np.ndarray, index: Sequence[int] | np.ndarray) -> Any:
    """The raw inputs of some example ids (a list of sentences or an image array)."""
    return inputs[np.asarray(index)] if isinstance(inputs, np.ndarray) else [inputs[i] for i in index]


def warm_up(configs: Iterable[LiveConfig], inputs: Sequence[Any] | np.ndarray, calls: int, seed: int = 0) -> None:
    """Run each configuration on ``calls`` full batches of real inputs, before any clock starts.

    Then collect once and freeze what exists (``gc.freeze``): what loading built (models, their
    modules and parameters, sessions, the data) stays alive for the whole run, and a full collection
    during a replay would otherwise walk all of it while requests wait (a guess at a ~0.8 s stall
    seen once in a live run; the stall was not reproduced, so the effect is not measured)."""
    rng = np.random.default_rng(seed)
    n = len(inputs)
    for cfg in configs:
        for _ in range(int(calls)):
            cfg.run(take(inputs, rng.integers(0, n, cfg.batch_size)))
    gc.collect()
    gc.freeze()


# ---------------------------------------------------------------- bounds

@dataclass(frozen=True)
class ReplayLimits:
    """A replay stops by itself: at most ``max_requests`` requests and ``max_wall_s`` seconds."""

    max_requests: int = 10_000
    max_wall_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_requests, bool) or not isinstance(self.max_requests, (int, np.integer)) \
                or self.max_requests < 1:
            raise ReplayError(f"max_requests must be an integer >= 1, got {self.max_requests!r}")
        if not (isinstance(self.max_wall_s, (int, float)) and math.isfinite(self.max_wall_s) and self.max_wall_s > 0):
            raise ReplayError(f"max_wall_s must be a positive finite number of seconds, got {self.max_wall_s!r}")


# ---------------------------------------------------------------- the replay

class _State:
    """Everything the producer and the workers share, guarded by one condition variable."""

    def __init__(self, n: int, servers: int, waiting: RequestQueue):
        self.cond = threading.Condition()
        self.waiting = waiting
        self.arrived = 0                      # requests enqueued so far (in arrival order)
        self.producer_done = False
        self.stop = False
        self.busy = 0
        self.error: BaseException | None = None
        self.sent = np.full(n, np.nan)
        self.batch_of = np.full(n, -1, dtype=np.int64)
        self.prediction = np.full(n, -1, dtype=np.int64)
        self.escalated = np.zeros(n, dtype=bool)
        self.expired = np.zeros(n, dtype=bool)  # dropped by the expiry rule (drop_expired)
        self.shed_at = np.full(n, np.nan)       # when the policy's admission control shed it
        self.stopped_at = np.full(n, np.nan)    # when its batch was stopped at the deadline (needs.cancels)
        self.answered_at = np.full(n, np.nan)   # a cascade served stage by stage: when its answer went out
        self.early = np.zeros(n, dtype=bool)    # ... and whether it was the first stage's (needs.early_answers)
        self.batches: list[tuple[float, float, str, int, int]] = []  # start, finish, config, server, size
        self.servers = servers


def replay(trace: pd.DataFrame, policy: Policy, configs: Mapping[str, LiveConfig] | Sequence[LiveConfig],
           inputs: Sequence[Any] | np.ndarray, labels: np.ndarray, servers: int = 1,
           queue: Literal["fifo", "edf"] = "fifo", *, drop_expired: bool = False, method: str | None = None,
           task: str | None = None, limits: ReplayLimits = ReplayLimits(), rate_window_s: float = 1.0,
           pad_partial: bool = False, lead_s: float = 0.05, threads: int | None = None,
           clock: Callable[[], float] = time.perf_counter, can_cancel: bool = True,
           second_stage_ms: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Serve ``trace`` in real time with ``configs``; one row per sent request, in ``request_id`` order.

    ``policy`` is any simulator policy (``policy(ctx) -> config_id``); it must only pick
    configurations present in ``configs`` (loaded and warmed up by the caller). ``inputs`` and
    ``labels`` are indexed by the trace's ``example_id``. ``lead_s`` is the gap between starting
    the clock and time 0 of the trace. ``threads`` (if given) sets torch's intra-op threads in each
    worker thread, as the profiler set them for its timed calls. ``can_cancel``: whether a policy that
    asks for it (``needs.cancels``) has stoppable calls stopped at the deadline. ``second_stage_ms``:
    per cascade, the estimate of its second stage to start from (a policy with ``needs.early_answers``).
    """
    if queue not in QUEUES:
        raise ReplayError(f"queue must be one of {QUEUES}, got {queue!r}")
    if isinstance(servers, bool) or not isinstance(servers, (int, np.integer)) or servers < 1:
        raise ReplayError(f"servers must be an integer >= 1, got {servers!r}")
    if not callable(policy):
        raise ReplayError(f"policy must be callable as policy(ctx) -> config_id, got {type(policy).__name__}")
    policy = as_policy(policy)
    if not rate_window_s > 0:
        raise ReplayError(f"rate_window_s must be positive, got {rate_window_s!r}")
    if not isinstance(limits, ReplayLimits):
        raise ReplayError(f"limits must be a ReplayLimits, got {type(limits).__name__}")
    table = dict(configs) if isinstance(configs, Mapping) else {c.config_id: c for c in configs}
    if not table:
        raise ReplayError("no configurations to serve")
    labels = np.asarray(labels)
    if len(labels) != len(inputs):
        raise ReplayError(f"{len(inputs)} inputs but {len(labels)} labels")
    checked = check_trace(trace, ReplayError, len(labels))
    capped = checked.iloc[: limits.max_requests]
    ordered = capped[capped["arrival_s"] < limits.max_wall_s - lead_s].reset_index(drop=True)
    if ordered.empty:
        raise ReplayError(f"no request of the trace arrives within max_wall_s={limits.max_wall_s} s")
    task = task or policy.task or (str(ordered["task"].iloc[0]) if "task" in ordered else "")
    n = len(ordered)
    arrays = TraceArrays.from_frame(ordered)
    arr = arrays.arrival_s
    example_ids = ordered["example_id"].to_numpy()
    state = _State(n, int(servers), RequestQueue(queue, arrays.abs_deadline_s))
    observes = policy.needs.observes
    stop_calls = bool(can_cancel and policy.needs.cancels)
    # a cascade stage by stage, from this estimate of its second stage (planner.serving.staged)
    estimates = {cid: SecondStageEstimate(float((second_stage_ms or {}).get(cid, 0.0)))
                 for cid, c in table.items() if c.stages is not None and policy.needs.early_answers}
    # stops calls at the deadline, and rings the alarms that send a cascade's early answers
    stopper = CallStopper(clock) if (stop_calls or estimates) else None
    alarm_guard = AlarmGuard()

    def batch_size_of(config_id: str) -> int:
        cfg = table.get(config_id)
        if cfg is None:
            raise ReplayError(f"policy chose config {config_id!r}, which is not loaded for live replay "
                              f"(loaded: {sorted(table)})")
        return cfg.batch_size

    def pick(t: float) -> tuple[LiveConfig, list[int]] | None:
        """Under the lock: the shared batch-pick rule (planner.serving.batching.pick_batch)."""
        chosen = pick_batch(state.waiting, t, state.arrived, arrays, policy, task, state.servers - state.busy,
                            state.servers, rate_window_s, drop_expired, batch_size_of)
        state.expired[chosen.expired] = True
        state.shed_at[chosen.shed] = t
        if chosen.config_id is None or not chosen.members:
            return None
        return table[chosen.config_id], chosen.members

    def end_batch(cfg: LiveConfig, members: list[int], t: float, finish: float, sid: int, n_late: int,
                  stopped: bool) -> None:
        """Under the lock: a batch's bookkeeping, the same for one call and for a staged cascade."""
        state.busy -= 1
        if observes:
            policy.observe(cfg.config_id, len(members), (finish - t) * 1000.0, n_late, cancelled=stopped)
        state.batch_of[members] = len(state.batches)
        state.batches.append((t, finish, cfg.config_id, sid, len(members)))
        if stopped:  # its requests are shed, the server is free
            state.stopped_at[members] = finish

    def serve_staged(cfg: LiveConfig, batch: Any, members: list[int], t: float, sid: int) -> None:
        """A cascade stage by stage (planner.serving.staged); records each member's answer and when."""
        answers: dict[int, tuple[np.ndarray, float, bool]] = {}

        def answer(k: int, probs: np.ndarray, at: float, early: bool) -> None:
            answers[k] = (np.asarray(probs), at - origin, early)

        deadlines = [origin + arrays.abs_deadline_s[m] for m in members]
        call = run_staged(cfg.stages, batch, deadlines, answer, estimates[cfg.config_id], stopper, clock, stop_calls,
                          alarm_guard)
        with state.cond:
            n_late = sum(at > arrays.abs_deadline_s[members[k]] for k, (_p, at, _e) in answers.items())
            end_batch(cfg, members, t, call.finish - origin, sid, n_late, call.stopped)
            for k, (probs, at, early) in answers.items():
                m = members[k]
                state.prediction[m] = int(probs.argmax())
                state.answered_at[m], state.early[m] = at, early
                state.escalated[m] = bool(call.escalated[k]) and not early  # answered by the second stage

    def worker(sid: int) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(int(threads))
        try:
            while True:
                with state.cond:
                    while not state.waiting and not state.producer_done and not state.stop:
                        state.cond.wait()
                    if state.stop or (not state.waiting and state.producer_done):
                        return
                    t = clock() - origin
                    chosen = pick(t)
                    if chosen is None:
                        continue
                    cfg, members = chosen
                    state.busy += 1
                batch = take(inputs, example_ids[members])
                if pad_partial and len(members) < cfg.batch_size:
                    batch = _pad(batch, cfg.batch_size)
                if cfg.config_id in estimates:
                    serve_staged(cfg, batch, members, t, sid)
                    continue
                if stop_calls and cfg.run_stoppable is not None:
                    # nothing it answers counts once its members' latest deadline has passed
                    stop_at = origin + max(arrays.abs_deadline_s[m] for m in members)
                    answer = stopper.call(lambda options: cfg.run_stoppable(batch, options), stop_at)
                else:
                    answer = cfg.run(batch)
                finish = clock() - origin
                stopped = answer is None  # stopped at the deadline
                with state.cond:
                    n_late = 0 if stopped or not observes else sum(finish > arrays.abs_deadline_s[m] for m in members)
                    end_batch(cfg, members, t, finish, sid, n_late, stopped)
                    if stopped:
                        continue
                    probs, stage = answer
                    state.prediction[members] = np.asarray(probs)[: len(members)].argmax(axis=1)
                    if stage is not None:
                        state.escalated[members] = np.asarray(stage)[: len(members)] == 2
        except BaseException as exc:  # surfaced in the calling thread
            with state.cond:
                state.error = exc
                state.stop = True
                state.cond.notify_all()

    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    old_slack = _set_timer_slack(PRODUCER_TIMER_SLACK_NS)
    workers = [threading.Thread(target=worker, args=(s,), name=f"replay-worker-{s}", daemon=True)
               for s in range(int(servers))]
    origin = clock() + lead_s
    wall_end = origin - lead_s + limits.max_wall_s
    stopped_by_wall = False
    try:
        for w in workers:
            w.start()
        i = 0
        while i < n:
            delay = arr[i] - (clock() - origin)
            if delay > 0:
                time.sleep(min(delay, 0.1))  # wake at least every 0.1 s to notice a worker's failure
            with state.cond:
                if state.stop:
                    break
                now = clock() - origin
                while i < n and arr[i] <= now:  # every request already due joins at once
                    state.sent[i] = now
                    state.waiting.push(i)
                    i += 1
                state.arrived = i
                state.cond.notify()
        with state.cond:
            state.producer_done = True
            state.cond.notify_all()
        for w in workers:
            w.join(max(0.0, wall_end - clock()))
        if any(w.is_alive() for w in workers):
            stopped_by_wall = True
            with state.cond:
                state.stop = True
                state.cond.notify_all()
            for w in workers:
                w.join()  # a batch in progress finishes; its length is bounded by one predict call
    finally:
        sys.setswitchinterval(old_switch)
        if old_slack is not None:
            _set_timer_slack(old_slack)
        if stopper is not None:
            stopper.close()
        with state.cond:
            state.stop = True
            state.cond.notify_all()
    if state.error is not None:
        raise state.error
    frame = _assemble(ordered, state, labels, method or policy.name)
    frame.attrs.update({"n_over_max_requests": len(checked) - len(capped), "n_after_wall": len(capped) - n,
                        "n_abandoned": int(frame["abandoned"].sum()),
                        "stopped_by_wall": stopped_by_wall, "pad_partial": bool(pad_partial),
                        "clock_origin": origin})  # the clock's reading at trace time 0 (to place outside events)
    return frame


def _set_timer_slack(ns: int) -> int | None:
    """Set this thread's timer slack (Linux ``prctl``); returns the old value, None where unsupported."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        old = libc.prctl(30, 0, 0, 0, 0)          # PR_GET_TIMERSLACK
        if old < 0 or libc.prctl(29, ctypes.c_ulong(ns), 0, 0, 0) != 0:  # PR_SET_TIMERSLACK
            return None
        return int(old)
    except (OSError, AttributeError):
        return None


def _pad(batch: Any, size: int) -> Any:
    """Repeat the last input so a partial batch has the full batch's shape (outputs are cut back)."""
    missing = size - len(batch)
    if isinstance(batch, np.ndarray):
        return np.concatenate([batch, np.repeat(batch[-1:], missing, axis=0)])
    return list(batch) + [batch[-1]] * missing


def _assemble(ordered: pd.DataFrame, state: _State, labels: np.ndarray, method: str) -> pd.DataFrame:
    """The simulator's per-request table (same columns, same status/hit rules) plus live diagnostics."""
    n = len(ordered)
    batch_of = state.batch_of
    served = batch_of >= 0
    if state.batches:
        b_start, b_finish, b_config, b_server, b_size = (np.asarray(v, dtype=object) for v in zip(*state.batches))
        b_start, b_finish = b_start.astype(float), b_finish.astype(float)
        b_server, b_size = b_server.astype(np.int64), b_size.astype(np.int64)
    else:
        b_start = b_finish = np.zeros(0)
        b_config = np.zeros(0, dtype=object)
        b_server = b_size = np.zeros(0, dtype=np.int64)
    safe = np.where(served, batch_of, 0)

    def per_request(values: np.ndarray, missing: Any) -> np.ndarray:
        if not len(values):
            return np.full(n, missing, dtype=object if missing is None else type(missing))
        return np.where(served, values[safe], missing)

    start, finish = per_request(b_start, np.nan), per_request(b_finish, np.nan)
    staged = served & ~np.isnan(state.answered_at)  # a cascade stage by stage: each answer when it went out
    finish = np.where(staged, state.answered_at, finish)
    early = staged & state.early
    shed = ~np.isnan(state.shed_at)
    start, finish = np.where(shed, state.shed_at, start), np.where(shed, state.shed_at, finish)
    shed = shed | ~np.isnan(state.stopped_at)  # a stopped batch's: its start, and the stop as finish
    arrival = ordered["arrival_s"].to_numpy()
    deadline = ordered["deadline_ms"].to_numpy()
    eids = ordered["example_id"].to_numpy()
    latency = (finish - arrival) * 1000.0
    on_time = served & ~shed & (latency <= deadline)  # a stopped batch's requests are shed, never on time
    correct = served & (state.prediction == labels[eids])
    status = np.where(shed, "shed", np.where(~served, "dropped",
                                             np.where(on_time, np.where(early, "degraded", "served"), "late"))).astype(object)
    frame = pd.DataFrame({
        "request_id": ordered["request_id"].to_numpy(), "method": method,
        "config_id": per_request(b_config, None), "start_s": start, "finish_s": finish, "latency_ms": latency,
        "status": status, "hit": on_time, "correct": correct,
        "arrival_s": arrival, "deadline_ms": deadline, "example_id": eids,
        "batch_id": batch_of, "server": per_request(b_server, -1), "escalated": state.escalated & served,
        "sent_lag_ms": (state.sent - arrival) * 1000.0, "service_ms": (finish - start) * 1000.0,
        "batch_n": per_request(b_size, 0),
        "abandoned": ~served & ~state.expired & ~shed,
    })
    assert list(frame.columns[: len(REQUEST_RESULT_COLUMNS) + len(RESULT_EXTRA_COLUMNS)]) == \
        [*REQUEST_RESULT_COLUMNS, *RESULT_EXTRA_COLUMNS]
    frame = frame[~np.isnan(state.sent)]  # never sent (past the wall limit): not part of the replay
    return frame.sort_values("request_id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- real models

# whether the sessions a server loads let ONNX Runtime's threads spin-wait (see load_live_configs)
SERVING_ORT_SPIN = False


def load_live_configs(profiles: pd.DataFrame, config_ids: Iterable[str], preset: str,
                      n_threads: int | None = None, spin: bool = SERVING_ORT_SPIN) -> dict[str, LiveConfig]:
    """Build the real predictors of some profiled configurations (a cascade from its two members).

    Each variant (task, model, runtime, precision, device) is loaded once and shared by its batch
    sizes. Loading happens here, before any replay clock starts; warm-up is :func:`warm_up`.

    ONNX Runtime sessions are built not to spin (``spin=False``) unless asked otherwise: their
    threads sleep while they wait for work. Why: by default they spin-wait, so on a server that holds
    many sessions on two cores the session just left keeps a core busy while another one serves and
    while the HTTP path needs it. Measured here (``benchmarks/bench_switch_cost.py``, the failures
    chapter): a call right after another model's has a p95 several times lower, at a higher median
    back to back; behind the HTTP server under LoadGen (CIFAR-10, 8 ms, 300 q/s) the anytime policy
    met 0.98 of its deadlines without spinning against 0.60 with it, and the seed's rule 0.90 against
    0.73. (Spinning within a call only, ORT's ``session.force_spinning_stop``, matched the back-to-back
    speed in the benchmark but met fewer deadlines behind the server: 0.88 and 0.84.)
    """
    table = profiles.set_index("config_id", drop=False)
    predictors: dict[VariantSpec, Any] = {}

    def predictor(spec: VariantSpec) -> Any:
        if spec not in predictors:
            predictors[spec] = zoo.load_predictor(spec, preset=preset, n_threads=n_threads, spin=spin)
        return predictors[spec]

    out: dict[str, LiveConfig] = {}
    for cid in dict.fromkeys(config_ids):
        if cid not in table.index:
            raise ReplayError(f"config {cid!r} is not in the profiles; profiled configurations of its task: "
                              f"{sorted(table.index[table['task'] == cid.split('/')[0]])[:20]}")
        row = table.loc[cid]
        b = int(row["batch_size"])
        small, large = row["cascade_small"], row["cascade_large"]
        if isinstance(small, str) and isinstance(large, str) and small and large:
            members = [predictor(VariantSpec(row["task"], m, row["runtime"], row["precision"], row["device"]))
                       for m in (small, large)]
            out[cid] = from_cascade(cid, Cascade(members[0], members[1], float(row["threshold"])), b)
        else:
            spec = VariantSpec(row["task"], row["model"], row["runtime"], row["precision"], row["device"])
            out[cid] = from_predictor(cid, predictor(spec), b)
    return out


def harness_overhead(rate_rps: float = 200.0, n: int = 200, seed: int = 0) -> dict[str, float]:
    """End-to-end latency of a no-op configuration: what the replay itself adds to every request.

    A Poisson trace at ``rate_rps`` served by a predictor that returns at once; its latency is the
    producer's enqueue lag, the worker's wake-up and the bookkeeping, which the simulator (service
    draws only) does not model. Reported next to a validation so a gap can be attributed.
    """
    inputs, labels = np.arange(16), np.zeros(16, dtype=np.int64)
    noop = LiveConfig("noop", 1, lambda batch: (np.ones((len(batch), 2), dtype=np.float32), None))
    live = replay(poisson(rate_rps, n, 1000.0, len(inputs), seed), fixed("noop"), [noop], inputs, labels,
                  limits=ReplayLimits(n, n / rate_rps * 3 + 5.0))
    p50, p95, p99 = np.percentile(live["latency_ms"].to_numpy(dtype=float), [50, 95, 99])
    return {"harness_lat_p50_ms": float(p50), "harness_lat_p95_ms": float(p95), "harness_lat_p99_ms": float(p99)}
