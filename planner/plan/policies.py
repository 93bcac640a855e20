"""Online policies: ``policy(ctx) -> config_id``, called once per batch by every server.

Following Ray Serve's policy-as-function pattern, a policy sees a small frozen
:class:`PolicyContext` (time, queue state, the request at the head of the queue) and returns the
configuration the next batch runs with. A policy *declares* what else it needs in
:class:`PolicyNeeds` (the slacks of queued requests, a deadline-only static choice, the observed
service times); the simulator, the replay and the server read ``policy.needs`` instead of probing
attributes. A static planner is the special case that looks only at the request's deadline;
:class:`SlackAwarePolicy` also looks at the queue.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pandas as pd

from planner.plan.failure import NotFittedError, PlannerError
from planner.schema import PLANNING_ACCURACY, ProfileBundle, measured


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What a policy may look at when a server is about to start a batch.

    ``oldest_slack_ms`` is the remaining time to the deadline of the request at the head of the
    queue (the oldest under FIFO, the most urgent under EDF); negative once it is late.
    ``recent_rate_rps`` is the arrival rate over the server's look-back window.
    ``queue_slack_ms`` holds the slacks of the first queued requests in service order, filled only
    for a policy whose :class:`PolicyNeeds` asks for them (``lookahead``: how many): a float64 array
    from the serving rule (a policy converts it without a per-element Python loop), any sequence of
    floats from a caller that builds a context by hand. ``recent_arrivals_s`` holds the arrival times
    (seconds, oldest first, the server's clock) of the last requests to arrive, served or not, filled
    only for a policy whose :class:`PolicyNeeds` asks for them (``arrival_history``: how many).
    """

    now_s: float
    task: str
    queue_len: int
    oldest_slack_ms: float
    deadline_ms: float
    request_id: int
    idle_servers: int
    servers: int
    recent_rate_rps: float
    queue_slack_ms: np.ndarray | Sequence[float] = ()
    recent_arrivals_s: Sequence[float] = ()

    def window_slacks_ms(self) -> np.ndarray | Sequence[float]:
        """The queued slacks a window-valuing policy reads: ``queue_slack_ms``, or the head's slack alone
        when the server filled none."""
        return self.queue_slack_ms if len(self.queue_slack_ms) else (self.oldest_slack_ms,)


@dataclass(frozen=True, slots=True)
class PolicyNeeds:
    """What a policy asks of the server that calls it, declared once in its type.

    - ``lookahead``: the slacks of this many queued requests, in service order
      (``PolicyContext.queue_slack_ms``); 0 = none (the server then pays nothing for them).
    - ``static``: the choice depends only on the request's relative deadline, through
      :meth:`OnlinePolicy.config_for`; the simulator may then take its fast path.
    - ``observes``: the server reports every finished batch to :meth:`OnlinePolicy.observe`
      (configuration, requests in it, measured or simulated service time), for online calibration.
    - ``sheds``: admission control. Before each batch the server sheds waiting requests whose
      slack is below :meth:`OnlinePolicy.shed_below_ms` (no configuration can answer them in time),
      answering them at once with status ``shed`` instead of serving them late at the expense of
      requests that can still make it.
    - ``early_answers``: when a cascade's second stage would finish after a request's deadline, the
      first stage's answer goes out on time (status ``degraded``).
    - ``arrival_history``: the arrival times of this many recent requests
      (``PolicyContext.recent_arrivals_s``); 0 = none.
    - ``cancels``: a batch that would answer none of its requests on time is stopped at the latest
      member's deadline, where the runtime can stop a running call, and its requests are shed (the
      simulator's serving model; see :mod:`planner.serving.simulator`).
    """

    lookahead: int = 0
    static: bool = False
    observes: bool = False
    sheds: bool = False
    early_answers: bool = False
    cancels: bool = False
    arrival_history: int = 0

    def __post_init__(self) -> None:
        for name in ("lookahead", "arrival_history"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise PlannerError(f"{name} must be an integer >= 0, got {value!r}")


class OnlinePolicy(ABC):
    """Base of every policy a server runs: a name, the task it serves and its declared needs."""

    name: str = "policy"
    task: str | None = None
    needs: PolicyNeeds = PolicyNeeds()

    @abstractmethod
    def __call__(self, ctx: PolicyContext) -> str:
        """The configuration of the next batch."""

    def config_for(self, deadline_ms: float) -> str:
        """The deadline-only choice of a static policy (``needs.static``)."""
        raise PlannerError(f"{self!r} is not static: it has no deadline-only config_for")

    def observe(self, config_id: str, batch_n: int, service_ms: float, n_late: int = 0,
                cancelled: bool = False) -> None:
        """A finished batch's service time and how many of its ``batch_n`` requests were answered after
        their deadline (called only when ``needs.observes``). ``cancelled``: the server stopped the
        batch at the deadline (``needs.cancels``), so ``service_ms`` is only how long it ran, a lower
        bound on its service time, and none of its requests was answered."""

    def shed_below_ms(self) -> float:
        """Requests with less slack than this are shed (called only when ``needs.sheds``)."""
        return -math.inf

    def member_cutoff_ms(self, config_id: str) -> float:
        """A request about to join a batch of ``config_id`` with less slack than this is shed instead
        (it would most likely be late; called only when ``needs.sheds``)."""
        return -math.inf


class FunctionPolicy(OnlinePolicy):
    """A plain ``fn(ctx) -> config_id`` as a policy with no needs (what tests and examples pass)."""

    def __init__(self, fn: Callable[[PolicyContext], str], name: str | None = None, task: str | None = None):
        if not callable(fn):
            raise PlannerError(f"policy must be callable as policy(ctx) -> config_id, got {type(fn).__name__}")
        self._fn, self.name, self.task = fn, name or getattr(fn, "__name__", "policy"), task

    def __call__(self, ctx: PolicyContext) -> str:
        return self._fn(ctx)

    def __repr__(self) -> str:
        return f"FunctionPolicy({self.name})"


Policy = OnlinePolicy | Callable[[PolicyContext], str]


def as_policy(policy: Policy) -> OnlinePolicy:
    """``policy`` itself when it is an :class:`OnlinePolicy`, else a bare callable wrapped as one."""
    return policy if isinstance(policy, OnlinePolicy) else FunctionPolicy(policy)


class _Selects(Protocol):
    def select(self, task: str, deadline_ms: float, workload: str | None = None) -> Any: ...


class StaticPolicy(OnlinePolicy):
    """A policy that depends only on the request's deadline (the state-free special case)."""

    needs = PolicyNeeds(static=True)

    def __init__(self, choose: Callable[[float], str], task: str | None, name: str):
        self._choose, self._cache = choose, {}
        self.task, self.name = task, name

    def config_for(self, deadline_ms: float) -> str:
        key = float(deadline_ms)
        if key not in self._cache:
            self._cache[key] = self._choose(key)
        return self._cache[key]

    def __call__(self, ctx: PolicyContext) -> str:
        return self.config_for(ctx.deadline_ms)

    def __repr__(self) -> str:
        return f"StaticPolicy({self.name})"


def static(planner_like: _Selects, task: str, workload: str | None = None, name: str | None = None) -> StaticPolicy:
    """Wrap anything with ``.select(task, deadline_ms, workload)`` (planner or baseline) as a policy."""
    if not callable(getattr(planner_like, "select", None)):
        raise TypeError(f"{type(planner_like).__name__} has no select(task, deadline_ms, workload) method")

    def choose(deadline_ms: float) -> str:
        return str(planner_like.select(task, deadline_ms, workload).config_id)

    return StaticPolicy(choose, task, name or type(planner_like).__name__)


def fixed(config_id: str, name: str | None = None) -> StaticPolicy:
    """Always the same configuration (what the hindsight oracle scores)."""
    return StaticPolicy(lambda _deadline: config_id, None, name or f"fixed:{config_id}")


# ---------------------------------------------------------------- slack-aware

class SlackAwarePolicy(OnlinePolicy):
    """Per-batch choice from the queue and the slack of the waiting requests (see :func:`slack_aware`).

    Candidates are sorted by calibration accuracy (descending, ties by lower latency). With ``k`` servers,
    configuration ``c`` (batch ``b_c``, latency percentile ``L_c`` of one batch call) serves the
    request at queue position ``p`` (0-based, service order) in round ``r_c(p) = ceil(ceil((p + 1)
    / b_c) / k)``, i.e. it is predicted to finish ``r_c(p) * L_c`` from now.

    - ``rule="drain"``: pick the most accurate ``c`` that finishes the whole queue (``q`` requests,
      ``r_c(q - 1) * L_c``) within the head request's slack. Under EDF, or FIFO with equal relative
      deadlines, the head has the least slack, so every waiting request is predicted on time. If
      no configuration qualifies, drain at the highest throughput ``b_c / L_c``.
    - ``rule="value"`` (default): with the slacks ``s_p`` of the first ``lookahead`` queued
      requests, pick the ``c`` that maximises the expected number of correct and on-time answers
      among them, ``accuracy_c * #{p : r_c(p) * L_c <= s_p}`` (ties: the more accurate). Requests
      that are already doomed count for nothing, so they no longer force the fastest drain; if
      every one is doomed, clear the window as fast as possible (least ``r_c(m - 1) * L_c``).

    Estimator API: parameters in ``__init__``, :meth:`fit` reads the candidates from a profile
    bundle (``table_``), then the policy is called per batch.
    """

    def __init__(self, task: str, percentile: float = 95.0, rule: str = "value", lookahead: int = 64,
                 name: str = "slack_aware"):
        if rule not in ("drain", "value"):
            raise ValueError(f"rule must be 'drain' or 'value', got {rule!r}")
        if rule == "value" and not (isinstance(lookahead, (int, np.integer)) and not isinstance(lookahead, bool)
                                    and lookahead >= 1):
            raise ValueError(f"lookahead must be an integer >= 1, got {lookahead!r}")
        if not (isinstance(percentile, (int, float)) and math.isfinite(percentile)):
            raise ValueError(f"percentile must be a number, got {percentile!r}")
        self.task, self.percentile, self.name, self.rule = task, float(percentile), name, rule
        self.lookahead = int(lookahead) if rule == "value" else 0
        self.needs = PolicyNeeds(lookahead=self.lookahead)

    def fit(self, bundle: ProfileBundle) -> "SlackAwarePolicy":
        """Read the task's candidates (:func:`candidate_table`) from ``bundle``. Returns ``self``."""
        self.table_ = candidate_table(bundle, self.task, self.percentile)
        self._ids = self.table_["config_id"].tolist()
        self._lat = self.table_["latency_ms"].to_numpy(dtype=float)
        self._acc = self.table_[PLANNING_ACCURACY].to_numpy(dtype=float)
        self._batch = self.table_["batch_size"].to_numpy(dtype=np.int64)
        self._drain = int(np.argmax(self._batch / self._lat))
        self._finish: dict[int, np.ndarray] = {}
        return self

    @property
    def table(self) -> pd.DataFrame:
        if not hasattr(self, "table_"):
            raise NotFittedError(f"{self!r} is not fitted; call fit(bundle) first")
        return self.table_

    def finish_ms(self, servers: int, positions: int) -> np.ndarray:
        """Predicted finish (ms from now) of queue positions ``0..positions-1`` per candidate."""
        table = self._finish.get(servers)
        if table is None or table.shape[1] < positions:
            p = np.arange(max(positions, self.lookahead, 1))
            batches = -(-(p[None, :] + 1) // self._batch[:, None])    # ceil((p + 1) / b)
            rounds = -(-batches // servers)                            # ceil(batches / k)
            table = self._finish[servers] = rounds * self._lat[:, None]
        return table[:, :positions]

    def __call__(self, ctx: PolicyContext) -> str:
        if not hasattr(self, "table_"):
            raise NotFittedError(f"{self!r} is not fitted; call fit(bundle) first")
        k = max(ctx.servers, 1)
        if self.rule == "drain":
            q = max(ctx.queue_len, 1)
            lat, batch = self._lat, self._batch
            for i in range(len(lat)):  # accuracy order; the list is short (tens of configs)
                batches = -(-q // int(batch[i]))  # ceil(q / b)
                rounds = -(-batches // k)         # ceil(batches / k)
                if rounds * lat[i] <= ctx.oldest_slack_ms:
                    return self._ids[i]
            return self._ids[self._drain]
        slacks = np.asarray(ctx.window_slacks_ms(), dtype=float)
        finish = self.finish_ms(k, len(slacks))
        value = self._acc * (finish <= slacks[None, :]).sum(axis=1)
        if value.max() <= 0:
            return self._ids[int(np.argmin(finish[:, -1]))]
        return self._ids[int(np.argmax(value))]  # first maximum = the most accurate among ties

    def __repr__(self) -> str:
        fitted = f", {len(self._ids)} configs" if hasattr(self, "table_") else ", not fitted"
        return f"SlackAwarePolicy({self.task}, {self.rule}, p{self.percentile:g}{fitted})"


def candidate_table(bundle: ProfileBundle, task: str, percentile: float = 95.0) -> pd.DataFrame:
    """Configurations of ``task`` a policy may pick: measured accuracy and latency samples present.

    Sorted by ``calibration_accuracy`` (the only accuracy a method may choose by, :mod:`planner.splits`;
    the scored ``accuracy`` is left out so no policy can read it), then latency. ``latency_ms`` is the ``percentile`` of the configuration's per-call samples (the profile's own
    column for 50/95/99, so the policy and the static planner read the same number).
    """
    profiles = bundle.profiles
    if task not in set(profiles["task"]):
        raise ValueError(f"task {task!r} has no profiled configurations; tasks: {sorted(set(profiles['task']))}")
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must lie in (0, 100), got {percentile!r}")
    rows = profiles[measured(profiles, task) & profiles[PLANNING_ACCURACY].notna()].copy()
    sampled = set(bundle.samples["config_id"].unique())
    rows = rows[rows["config_id"].isin(sampled)]
    if rows.empty:
        raise ValueError(f"task {task!r} has no configuration with measured accuracy and latency samples")
    column = f"lat_p{percentile:g}_ms"
    if column in rows.columns:
        rows["latency_ms"] = rows[column].astype(float)
    else:
        samples = bundle.samples[bundle.samples["config_id"].isin(rows["config_id"])]
        q = samples.groupby("config_id")["latency_ms"].quantile(percentile / 100.0)
        rows["latency_ms"] = rows["config_id"].map(q).astype(float)
    rows = rows.sort_values([PLANNING_ACCURACY, "latency_ms", "config_id"], ascending=[False, True, True])
    columns = ["config_id", "batch_size", PLANNING_ACCURACY, "latency_ms", "throughput_items_s"]
    return rows[columns].reset_index(drop=True)


def slack_aware(bundle: ProfileBundle, task: str, percentile: float = 95.0, name: str = "slack_aware",
                rule: str = "value", lookahead: int = 64) -> SlackAwarePolicy:
    """``SlackAwarePolicy(task, percentile, rule, lookahead, name).fit(bundle)``: the queue-aware
    planner, fitted (see :class:`SlackAwarePolicy` for both rules)."""
    return SlackAwarePolicy(task, percentile, rule, lookahead, name).fit(bundle)
