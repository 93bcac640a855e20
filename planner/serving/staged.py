"""A cascade served stage by stage, so that every request it takes is answered by its deadline.

What the simulator does for a policy whose needs say ``early_answers``, done live by the replay and
the HTTP server alike (:func:`run_staged`): the first stage answers the whole batch; requests it is
sure about get that answer at once; an escalated request whose second stage, by the running estimate
of that stage's time, would end after its deadline gets the first stage's answer at once too
(*degraded*, on time). The others go to the second stage, and each of them also has an alarm set just
before its deadline (:class:`AlarmGuard`): if the second stage has not answered it by then, the
first stage's answer goes out (degraded) and the second stage's, when it comes, is dropped. So a
second stage that overruns its estimate costs accuracy, not a late answer, as long as the alarm
rings within its guard.

How far ahead to ring is learned, like the service times: an alarm rings late by the time its thread
takes to get a core while the second stage's threads hold both, a fraction of a millisecond at the
median and several milliseconds at worst on this 2-core machine, so the guard is :data:`GUARD_MARGIN`
times the largest lateness of the last :data:`GUARD_WINDOW` alarms that sent an answer, at least
:data:`EARLY_GUARD_S`. ``benchmarks/bench_early_answers.py`` measures the lateness on real cascades and
how many answers went out on time with this guard, with the largest lateness alone and with the floor
alone (``results/full/benchmarks/early_answer_alarms.csv``). An alarm answers every member due by
then, so a batch that shares a deadline rings once.

For a policy that also asks for calls to be stopped (``cancels``), each stage that can be stopped
(ONNX Runtime) is: the first at its batch's latest deadline (then nobody is answered and the caller
sheds the batch, as for a plain call), the second at the latest deadline of the requests it serves
(by then each of them has had the first stage's answer).

The simulator serves a cascade by the same rule, with the same estimate (it does not look at the
second stage's draw before deciding), and charges the server a second stage that overruns, up to
its requests' latest deadline where it is stopped. It differs only in the alarm, which rings on
time there: an answer is sent :data:`EARLY_GUARD_S` before the deadline, the guard's floor.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from planner.serving.stopping import CallStopper

if TYPE_CHECKING:  # the replay imports this module
    from planner.serving.replay import CascadeStages

__all__ = ["EARLY_GUARD_S", "GUARD_WINDOW", "AlarmGuard", "SecondStageEstimate", "StagedCall",
           "initial_second_stage_ms", "run_staged"]

# The least time before its deadline that a request still waiting for the second stage gets the first
# stage's answer, and how many recent alarms the guard is learned from.
EARLY_GUARD_S = 0.0005
GUARD_WINDOW = 64
GUARD_MARGIN = 2.0  # times the largest recent lateness: a new spike is often larger than the window's

# Answer(member index, probabilities, clock time, early): called once per member of the batch.
Answer = Callable[[int, np.ndarray, float, bool], None]


class AlarmGuard:
    """How long before a deadline to ring (seconds): ``margin`` times the largest lateness of the last
    ``window`` alarms, at least ``floor_s``. Shared by every cascade of one replay or server (the
    lateness is the machine's); safe to observe from the alarm thread while a worker reads it."""

    def __init__(self, floor_s: float = EARLY_GUARD_S, window: int = GUARD_WINDOW, margin: float = GUARD_MARGIN):
        if not (math.isfinite(floor_s) and floor_s >= 0):
            raise ValueError(f"floor_s must be a non-negative number of seconds, got {floor_s!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        if not (math.isfinite(margin) and margin >= 1):
            raise ValueError(f"margin must be a number >= 1, got {margin!r}")
        self.floor_s, self.margin = float(floor_s), float(margin)
        self._late: deque[float] = deque(maxlen=window)

    def seconds(self) -> float:
        recent = tuple(self._late)  # a snapshot: the alarm thread may append meanwhile
        return max(self.floor_s, self.margin * max(recent, default=0.0))

    def observe(self, late_s: float) -> None:
        """One alarm rang ``late_s`` after its time (negative values count as 0)."""
        self._late.append(max(0.0, float(late_s)))


@dataclass
class SecondStageEstimate:
    """A running estimate of a cascade's second stage (ms), learned from each second stage served:
    an exponentially weighted mean, so that a slowed machine moves it within a few batches."""

    ms: float
    alpha: float = 0.2

    def update(self, observed_ms: float, stopped: bool = False) -> None:
        """Learn from one second stage; a stopped one ran at least ``observed_ms`` (censored): it only
        raises the estimate."""
        if stopped:
            observed_ms = max(observed_ms, self.ms)
        self.ms += self.alpha * (observed_ms - self.ms)


def second_stage_positions(first_done: float, escalated: Sequence[bool], abs_deadlines: Sequence[float],
                           estimate: SecondStageEstimate) -> list[int]:
    """Positions of the batch's members that wait for the second stage: escalated, with a deadline the
    stage can meet by the running ``estimate`` if it starts at ``first_done`` (seconds, on the
    deadlines' clock). The others get the first stage's answer when it ends. The one rule the live
    stacks and the simulator decide a cascade's second stage by."""
    expected_end = first_done + estimate.ms / 1000.0
    return [i for i, (up, deadline) in enumerate(zip(escalated, abs_deadlines)) if up and deadline >= expected_end]


def initial_second_stage_ms(profiles: pd.DataFrame, config_id: str) -> float:
    """A cascade's second stage before any has run: its large member's profiled median at the same
    runtime, precision and batch size, else the cascade's median less its small member's, else half
    the cascade's median. ``profiles`` is indexed by ``config_id``."""
    row = profiles.loc[config_id]
    task, _model, *rest = config_id.split("/")
    small, large = ("/".join([task, str(m), *rest]) for m in (row["cascade_small"], row["cascade_large"]))
    median = profiles["lat_p50_ms"]
    if large in median.index:
        return float(median[large])
    if small in median.index:
        return max(float(row["lat_p50_ms"]) - float(median[small]), 0.0)
    return float(row["lat_p50_ms"]) / 2.0


@dataclass(frozen=True)
class StagedCall:
    """What a staged call did. ``stopped``: its first stage was stopped at the batch's latest deadline
    (nobody was answered). ``finish``: when its last stage ended."""

    first_done: float
    escalated: np.ndarray
    finish: float
    stopped: bool


def _take(inputs: Any, index: Sequence[int]) -> Any:
    return inputs[np.asarray(index)] if isinstance(inputs, np.ndarray) else [inputs[i] for i in index]


def run_staged(stages: "CascadeStages", inputs: Any, abs_deadlines: Sequence[float], answer: Answer,
               estimate: SecondStageEstimate, timer: CallStopper, clock: Callable[[], float],
               stop_calls: bool = False, guard: AlarmGuard | None = None) -> StagedCall:
    """Serve one cascade batch stage by stage (see the module docstring).

    ``abs_deadlines`` are the members' deadlines on ``clock``; ``answer(i, probs, at, early)`` is
    called exactly once per member (from this thread, or from ``timer``'s thread for an answer sent
    at the deadline), unless the first stage was stopped. ``stop_calls``: stop what can be stopped.
    ``guard``: how long before a deadline its alarm rings, learned from how late alarms ring (a
    fresh :class:`AlarmGuard` if None)."""
    guard = guard if guard is not None else AlarmGuard()
    n = len(abs_deadlines)
    latest = max(abs_deadlines)
    if stop_calls and stages.first_stoppable is not None:
        first = timer.call(lambda options: stages.first_stoppable(inputs, options), latest)
        if first is None:
            now = clock()
            return StagedCall(now, np.zeros(n, dtype=bool), now, True)
    else:
        first = stages.first(inputs)
    first = np.asarray(first)[:n]
    first_done = clock()
    escalated = np.asarray(stages.escalate(first), dtype=bool)[:n]
    claimed = np.zeros(n, dtype=bool)
    lock = threading.Lock()

    def deliver(i: int, probs: np.ndarray, at: float, early: bool) -> bool:
        """Answer member ``i`` unless it was answered; under the lock, so that once this thread has
        delivered (or found answered) every member, every answer sent from the timer's thread is done."""
        with lock:
            if claimed[i]:
                return False
            claimed[i] = True
            answer(i, probs, at, early)
            return True

    go_on = second_stage_positions(first_done, escalated, abs_deadlines, estimate)
    waiting = set(go_on)
    for i in range(n):
        if i not in waiting:
            deliver(i, first[i], first_done, bool(escalated[i]))
    if not go_on:
        return StagedCall(first_done, escalated, first_done, False)

    ahead = guard.seconds()

    def early(i: int) -> None:  # on the timer's thread: every member due by now, in one pass (a batch
        now = clock()           # often shares a deadline)
        sent = [deliver(j, first[j], clock(), True) for j in go_on if abs_deadlines[j] - ahead <= now]
        if any(sent):
            guard.observe(now - (abs_deadlines[i] - ahead))

    tokens = [timer.alarm(abs_deadlines[i] - ahead, lambda i=i: early(i)) for i in go_on]
    subset = _take(inputs, go_on)
    try:
        if stop_calls and stages.second_stoppable is not None:
            second = timer.call(lambda options: stages.second_stoppable(subset, options),
                                max(abs_deadlines[i] for i in go_on))
        else:
            second = stages.second(subset)
    finally:
        for token in tokens:
            timer.cancel(token)
    finish = clock()
    estimate.update((finish - first_done) * 1000.0, stopped=second is None)
    for k, i in enumerate(go_on):  # not answered at its deadline: the second stage's answer, or (stopped) the first's
        deliver(i, first[i] if second is None else np.asarray(second)[k], finish, second is None)
    return StagedCall(first_done, escalated, finish, False)

