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
disarming (a heap push under a lock) and never for a thread of its own. The stop lands a little after
the deadline: the thread's wake-up, and ONNX Runtime's next check (node granularity; measured on this
machine: a MiniLM batch asked to stop after 5 ms returned after about 10 ms).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any, Callable

from planner.models.base import CallStopped

__all__ = ["CallStopped", "CallStopper", "new_run_options"]


def new_run_options() -> Any:
    """A fresh ``onnxruntime.RunOptions`` (one per call: its ``terminate`` stays set once set)."""
    import onnxruntime as ort

    return ort.RunOptions()


class CallStopper:
    """Stops calls at a clock time: ``call(run, at)`` runs ``run(options)`` and sets
    ``options.terminate`` when the clock reaches ``at`` (``clock``'s seconds) if the call is still running.

    ``make_options`` builds each call's options (anything with a settable ``terminate``; ONNX
    Runtime's ``RunOptions`` by default). Returns the call's result, or None when it was stopped
    (the call raised :class:`CallStopped`). Thread-safe; :meth:`close` ends the waiting thread.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 make_options: Callable[[], Any] = new_run_options):
        self.clock = clock
        self.make_options = make_options
        self._cond = threading.Condition()
        self._armed: list[tuple[float, int, Any]] = []
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.n_stopped = 0

    def call(self, run: Callable[[Any], Any], at: float) -> Any | None:
        """``run(options)``, stopped at clock time ``at``; None when stopped."""
        options = self.make_options()
        token = self._arm(at, options)
        try:
            return run(options)
        except CallStopped:
            with self._cond:
                self.n_stopped += 1
            return None
        finally:
            self._disarm(token)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    # ---- internals ---------------------------------------------------------------------------
    def _arm(self, at: float, options: Any) -> int:
        with self._cond:
            if self._closed:
                raise RuntimeError("the call stopper is closed")
            token = next(self._seq)
            heapq.heappush(self._armed, (float(at), token, options))
            self._live.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._wait, name="call-stopper", daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def _disarm(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)

    def _wait(self) -> None:
        with self._cond:
            while not self._closed:
                while self._armed and self._armed[0][1] not in self._live:
                    heapq.heappop(self._armed)  # finished before its stop time
                if not self._armed:
                    self._cond.wait()
                    continue
                at, token, options = self._armed[0]
                left = at - self.clock()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._armed)
                self._live.discard(token)
                options.terminate = True
