"""Stopping a live call at the deadline: what the simulator models with ``PolicyNeeds.cancels``.

A policy that asks for it (``needs.cancels``) has a batch stopped once every request in it would be
answered after its deadline, so that the server is free for the requests behind it. Live, the
batch's call cannot know in advance that it will be late, but from the latest deadline of its members
on nothing it answers counts: a :class:`CallStopper` sets the call's ``RunOptions.terminate`` at that
moment, and ONNX Runtime returns at its next check between graph nodes (:class:`CallStopped`). A
call that ends first is kept whatever it answers. Only configurations whose call can be stopped
(``LiveConfig.run_stoppable``: ONNX Runtime predictors, and cascades of them) are; torch has no such
hook, as the simulator's :data:`planner.schema.CANCELLABLE_RUNTIMES` says.

One thread per server stack waits for the earliest armed stop time, so a call pays for arming and
disarming (a heap push under a lock) and never for a thread of its own. The same thread rings alarms
(:meth:`CallStopper.alarm`): a cascade served stage by stage sends a request the first stage's answer
at its deadline when the second stage is still running then (:mod:`planner.serving.staged`). The stop lands a little after
the deadline: the thread's wake-up, and ONNX Runtime's next check (node granularity; measured on this
machine: a MiniLM batch asked to stop after 5 ms returned after about 10 ms).
"""

from __future__ import annotations

import heapq
import itertools
import sys
import threading
import time
from typing import Any, Callable

from planner.models.base import CallStopped

__all__ = ["CallStopped", "CallStopper", "new_run_options"]

Action = Callable[[], None]


def new_run_options() -> Any:
    """A fresh ``onnxruntime.RunOptions`` (one per call: its ``terminate`` stays set once set)."""
    import onnxruntime as ort

    return ort.RunOptions()


class CallStopper:
    """Stops calls at a clock time: ``call(run, at)`` runs ``run(options)`` and sets
    ``options.terminate`` when the clock reaches ``at`` (``clock``'s seconds) if the call is still running.

    ``make_options`` builds each call's options (anything with a settable ``terminate``; ONNX
    Runtime's ``RunOptions`` by default). Returns the call's result, or None when it was stopped
    (the call raised :class:`CallStopped`). ``alarm(at, action)`` runs ``action()`` on the same thread
    at ``at`` unless :meth:`cancel` came first. Thread-safe; :meth:`close` ends the waiting thread.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 make_options: Callable[[], Any] = new_run_options):
        self.clock = clock
        self.make_options = make_options
        self._cond = threading.Condition()
        self._armed: list[tuple[float, int, Action]] = []
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.n_stopped = 0
        self.alarm_errors: list[Exception] = []  # what alarms raised (also printed by threading.excepthook)

    def call(self, run: Callable[[Any], Any], at: float) -> Any | None:
        """``run(options)``, stopped at clock time ``at``; None when stopped."""
        options = self.make_options()

        def stop() -> None:
            options.terminate = True

        token = self.alarm(at, stop)
        try:
            return run(options)
        except CallStopped:
            with self._cond:
                self.n_stopped += 1
            return None
        finally:
            self.cancel(token)

    def alarm(self, at: float, action: Action) -> int:
        """Run ``action()`` on the stopper's thread once the clock reaches ``at``; returns a token for
        :meth:`cancel`. The action runs outside the stopper's lock and should neither raise (what it
        raises goes to ``alarm_errors`` and ``threading.excepthook``, and the thread goes on) nor take
        long: later alarms wait."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the call stopper is closed")
            token = next(self._seq)
            heapq.heappush(self._armed, (float(at), token, action))
            self._live.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._wait, name="call-stopper", daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def cancel(self, token: int) -> None:
        """The alarm of ``token`` will not run (if it has not begun yet)."""
        with self._cond:
            self._live.discard(token)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    # ---- internals ---------------------------------------------------------------------------
    def _next_due(self) -> Action | None:
        """Under the lock: wait for the earliest live alarm's time and take it; None once closed."""
        while not self._closed:
            while self._armed and self._armed[0][1] not in self._live:
                heapq.heappop(self._armed)  # cancelled (its call ended) before its time
            if not self._armed:
                self._cond.wait()
                continue
            at, token, action = self._armed[0]
            left = at - self.clock()
            if left > 0:
                self._cond.wait(left)
                continue
            heapq.heappop(self._armed)
            self._live.discard(token)
            return action
        return None

    def _wait(self) -> None:
        while True:
            with self._cond:
                action = self._next_due()
            if action is None:
                return
            try:
                action()  # outside the lock: an action may take its caller's locks, which may be arming
            except Exception as exc:  # noqa: BLE001 - one failed action must not silence every later stop
                self.alarm_errors.append(exc)
                threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(), threading.current_thread())))
