"""The deadline a client hands the server: its own, less what the path outside the server costs.

The server plans and judges a request from the moment it has read the body; the client judges it
from the moment it meant to send it to the answer's last byte. What lies between (the client's
send lag, loopback, HTTP on both sides, the server's accept queue, the answer's way back) is the
*path*, and the server's planner cannot see it. On the full preset's HTTP runs it took a median
1.4-1.9 ms at 3-20 ms deadlines: CIFAR-10 at 3 ms, load 0.8, the anytime server met 97 % of its
deadlines on its own clock and delivered 65 % in time at the client.

:class:`DeadlineBudget` learns the path from the answers (the client's latency of a request minus
the server's ``latency_ms`` for it) over a window of the latest ones, and sends each request with
``deadline - quantile(path)``: deadline propagation, as an RPC caller passes its remaining budget to
the callee. The median (the default) moves the server's plan by what the path usually costs and
leaves the path's spread to the server's own late-share control; a high quantile would make every
request pay the path's tail, and at a deadline the path nearly fills would leave no budget at all;
but LoadGen judges the client's 99th percentile, which the tail decides (the validation chapter runs
the sweep with either: ``sweep_budget/``, ``sweep_budget_tail/``).
Before the first answer, a request goes out with its whole deadline. A request whose budget would be
below :data:`MIN_BUDGET_SHARE` of its deadline goes out with that share (the API needs a positive
deadline), so the server sheds it at once with a reason rather than the client dropping it unseen.
"""

from __future__ import annotations

import math

import numpy as np

# the smallest budget sent, as a share of the request's deadline
MIN_BUDGET_SHARE = 0.02


class BudgetError(ValueError):
    """A deadline budget cannot be built as asked (the message says why)."""


class DeadlineBudget:
    """``budget_ms(deadline)``: the deadline to send; ``observe(client_ms, server_ms)`` after each answer.

    ``quantile``: of the path times in the window subtracted from each deadline; ``window``: how many
    of the latest answers it is taken over (a few hundred milliseconds of traffic at the evaluation's
    rates, so a path that slows under load is followed within a second)."""

    def __init__(self, quantile: float = 0.5, window: int = 128):
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 <= quantile < 1.0:
            raise BudgetError(f"quantile must be a share in [0, 1), got {quantile!r}")
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise BudgetError(f"window must be a positive number of answers, got {window!r}")
        self.quantile = float(quantile)
        self.window = int(window)
        self._path = np.zeros(self.window)
        self.n_observed = 0
        self._estimate_ms = 0.0

    @property
    def path_ms(self) -> float:
        """The current estimate of the path (0 before the first answer)."""
        return self._estimate_ms

    def budget_ms(self, deadline_ms: float) -> float:
        """The deadline to send for a request whose client-side deadline is ``deadline_ms``."""
        return max(deadline_ms - self._estimate_ms, MIN_BUDGET_SHARE * deadline_ms)

    def observe(self, client_ms: float, server_ms: float) -> None:
        """One answered request: the client's latency and the server's ``latency_ms`` for it (ms).
        Unusable pairs (a missing or non-finite time) teach nothing; a path below 0 (clock rounding)
        counts as 0."""
        try:
            path = float(client_ms) - float(server_ms)
        except (TypeError, ValueError):
            return
        if not math.isfinite(path):
            return
        self._path[self.n_observed % self.window] = max(path, 0.0)
        self.n_observed += 1
        seen = self._path[: min(self.n_observed, self.window)]
        self._estimate_ms = float(np.quantile(seen, self.quantile))

    def __repr__(self) -> str:
        return f"DeadlineBudget(quantile={self.quantile:g}, window={self.window}, path_ms={self._estimate_ms:.3g})"
