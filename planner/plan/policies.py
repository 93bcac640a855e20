"""Online policies: pure functions ``policy(ctx) -> config_id``, called once per batch.

Following Ray Serve's policy-as-function pattern, a policy sees a small frozen
:class:`PolicyContext` (time, queue state, the request at the head of the queue) and returns the
configuration the next batch runs with. A static planner is the special case that looks only at
the request's deadline; :func:`slack_aware` also looks at the queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import pandas as pd


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What a policy may look at when a server is about to start a batch.

    ``oldest_slack_ms`` is the remaining time to the deadline of the request at the head of the
    queue (the oldest under FIFO, the most urgent under EDF); negative once it is late.
    ``recent_rate_rps`` is the arrival rate over the simulator's look-back window.
    ``queue_slack_ms`` holds the slacks of the first queued requests in service order, filled only
    for a policy that asks for them with a ``lookahead`` attribute (the number it wants).
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
    queue_slack_ms: tuple[float, ...] = ()


Policy = Callable[[PolicyContext], str]


class _Selects(Protocol):
    def select(self, task: str, deadline_ms: float, workload: str | None = None) -> Any: ...


class StaticPolicy:
    """A policy that depends only on the request's deadline (the state-free special case).

    The simulator uses :meth:`config_for` to take its fast path when every request of a trace maps
    to the same configuration.
    """

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

class SlackAwarePolicy:
    """Per-batch choice from the queue and the slack of the waiting requests (see :func:`slack_aware`).

    Candidates are sorted by accuracy (descending, ties by lower latency). With ``k`` servers,
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
    """

    def __init__(self, table: pd.DataFrame, task: str, percentile: float, name: str, rule: str = "value",
                 lookahead: int = 64):
        if rule not in ("drain", "value"):
            raise ValueError(f"rule must be 'drain' or 'value', got {rule!r}")
        if rule == "value" and not (isinstance(lookahead, (int, np.integer)) and lookahead >= 1):
            raise ValueError(f"lookahead must be an integer >= 1, got {lookahead!r}")
        self.task, self.percentile, self.name, self.rule = task, percentile, name, rule
        self.lookahead = int(lookahead) if rule == "value" else 0
        self.table = table.reset_index(drop=True)
        self._ids = self.table["config_id"].tolist()
        self._lat = self.table["latency_ms"].to_numpy(dtype=float)
        self._acc = self.table["accuracy"].to_numpy(dtype=float)
        self._batch = self.table["batch_size"].to_numpy(dtype=np.int64)
        self._drain = int(np.argmax(self._batch / self._lat))
        self._finish: dict[int, np.ndarray] = {}

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
        slacks = np.asarray(ctx.queue_slack_ms or (ctx.oldest_slack_ms,), dtype=float)
        finish = self.finish_ms(k, len(slacks))
        value = self._acc * (finish <= slacks[None, :]).sum(axis=1)
        if value.max() <= 0:
            return self._ids[int(np.argmin(finish[:, -1]))]
        return self._ids[int(np.argmax(value))]  # first maximum = the most accurate among ties

    def __repr__(self) -> str:
        return f"SlackAwarePolicy({self.task}, {self.rule}, p{self.percentile:g}, {len(self._ids)} configs)"


def candidate_table(bundle: Any, task: str, percentile: float = 95.0) -> pd.DataFrame:
    """Configurations of ``task`` a policy may pick: measured accuracy and latency samples present.

    ``latency_ms`` is the ``percentile`` of the configuration's per-call samples (the profile's own
    column for 50/95/99, so the policy and the static planner read the same number).
    """
    profiles = bundle.profiles
    if task not in set(profiles["task"]):
        raise ValueError(f"task {task!r} has no profiled configurations; tasks: {sorted(set(profiles['task']))}")
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must lie in (0, 100), got {percentile!r}")
    rows = profiles[(profiles["task"] == task) & (profiles["accuracy_source"] == "measured")
                    & profiles["accuracy"].notna()].copy()
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
    rows = rows.sort_values(["accuracy", "latency_ms", "config_id"], ascending=[False, True, True])
    return rows[["config_id", "batch_size", "accuracy", "latency_ms", "throughput_items_s"]].reset_index(drop=True)


def slack_aware(bundle: Any, task: str, percentile: float = 95.0, name: str = "slack_aware",
                rule: str = "value", lookahead: int = 64) -> SlackAwarePolicy:
    """The queue-aware planner: per batch, the configuration that serves the waiting requests best.

    See :class:`SlackAwarePolicy` for both rules. ``percentile`` picks the per-batch latency the
    rule budgets with (p95 by default, like the static planner); ``lookahead`` is how many queued
    requests the ``value`` rule looks at.
    """
    if not (isinstance(percentile, (int, float)) and math.isfinite(percentile)):
        raise ValueError(f"percentile must be a number, got {percentile!r}")
    return SlackAwarePolicy(candidate_table(bundle, task, float(percentile)), task, float(percentile), name,
                            rule, lookahead)
