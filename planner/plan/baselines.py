"""Baselines with the planner's interface: ``fit(profiles)``, ``select(task, deadline_ms, workload=None)``,
``fallback(task, deadline_ms, failed)``.

They reuse the planner's step-table machinery, so every ``select`` is O(log n) too. None of them
looks at the workload (the argument is accepted so they are drop-in replacements). Like the planner,
they only consider configurations with a measured accuracy; the rest are a last resort.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd

from planner.plan.failure import PlannerError, ReasonCode, first_by_rank
from planner.plan.planner import Decision, TaskCandidates, Workload, _Table, _TablePlanner

__all__ = ["StaticSmall", "StaticLarge", "ThroughputAutotuner", "INFaaSStyle", "Oracle"]


class StaticSmall(_TablePlanner):
    """Always the fastest configuration (lowest latency percentile), whatever the deadline."""

    _late_reason = ReasonCode.DEADLINE_IGNORED

    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        return first_by_rank(allowed, cand.rank_fastest)


class StaticLarge(_TablePlanner):
    """Always the most accurate configuration (ties: lower latency), whatever the deadline."""

    _late_reason = ReasonCode.DEADLINE_IGNORED

    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        return first_by_rank(allowed, cand.rank_accurate)


class ThroughputAutotuner(_TablePlanner):
    """Highest ``throughput_items_s`` among configurations meeting the deadline (accuracy-blind),
    the way a throughput autotuner picks runtime/precision/batch; if none fits, the fastest."""

    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        feasible = allowed & (cand.latency <= deadline_ms)
        if not feasible.any():
            return first_by_rank(allowed, cand.rank_fastest)
        return first_by_rank(feasible, cand.rank_throughput)


class INFaaSStyle(_TablePlanner):
    """The cheapest configuration that meets both the deadline and an accuracy floor.

    As in INFaaS (Romero et al., USENIX ATC'21), "cheapest" means the least resource use. On one
    machine that is CPU time per item, ``1 / throughput_items_s``, so by default this picks the
    highest throughput (``cost="cpu_time"``); ``cost="latency"`` uses the lowest latency percentile
    instead. If something meets the deadline but nothing also meets the floor, the most accurate
    on-time configuration is returned with reason ``ACCURACY_FLOOR_UNMET``; if nothing meets the
    deadline, the fastest (``NO_FEASIBLE``).
    """

    def __init__(self, accuracy_floor: float, percentile: int = 95,
                 cost: Literal["cpu_time", "latency"] = "cpu_time") -> None:
        super().__init__(percentile)
        if not (0.0 <= accuracy_floor <= 1.0):
            raise PlannerError(f"accuracy_floor must lie in [0, 1], got {accuracy_floor!r}")
        if cost not in ("cpu_time", "latency"):
            raise PlannerError(f"cost must be 'cpu_time' or 'latency', got {cost!r}")
        self.accuracy_floor = float(accuracy_floor)
        self.cost = cost

    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        feasible = allowed & (cand.latency <= deadline_ms)
        if not feasible.any():
            return first_by_rank(allowed, cand.rank_fastest)
        good = feasible & (cand.accuracy >= self.accuracy_floor)
        if good.any():
            return first_by_rank(good, cand.rank_throughput if self.cost == "cpu_time" else cand.rank_fastest)
        return first_by_rank(feasible, cand.rank_accurate)

    def _reason(self, cand: TaskCandidates, idx: int, deadline_ms: float) -> ReasonCode:
        if cand.latency[idx] > deadline_ms:
            return ReasonCode.NO_FEASIBLE
        if cand.accuracy[idx] < self.accuracy_floor:
            return ReasonCode.ACCURACY_FLOOR_UNMET
        return ReasonCode.OK


class Oracle(_TablePlanner):
    """The best fixed configuration in hindsight: ``score_fn(config_id) -> float`` (higher is
    better, e.g. a simulated trace's effective accuracy) is evaluated for every measured
    configuration of the task, once, on the first ``select``; ties go to the lower latency.

    The deadline does not change the choice (the score already reflects the trace's deadlines); it
    only sets ``expected_miss_ms`` and the reason (``DEADLINE_IGNORED`` if the latency percentile
    exceeds it). ``scores_[task]`` maps config_id to score after the first call.
    """

    _late_reason = ReasonCode.DEADLINE_IGNORED

    def __init__(self, score_fn: Callable[[str], float], percentile: int = 95) -> None:
        super().__init__(percentile)
        if not callable(score_fn):
            raise PlannerError(f"score_fn must be callable, got {type(score_fn).__name__}")
        self.score_fn = score_fn
        self.scores_: dict[str, dict[str, float]] = {}
        self._score_rank: dict[str, np.ndarray] = {}

    def fit(self, profiles: pd.DataFrame) -> "Oracle":
        """Validate the profiles; scores of an earlier fit are discarded."""
        self.scores_, self._score_rank = {}, {}
        return super().fit(profiles)

    def _build_task(self, task: str, cand: TaskCandidates) -> None:
        """Scoring needs the simulator, so it waits until a task is asked for."""

    def _missing_table(self, task: object, workload: object) -> _Table:
        cand = self._task_candidates(task)
        if (task, None) in self.tables_:
            return super()._missing_table(task, workload)
        self._score(cand)
        table = self._build(cand, None)
        for w in (None, "steady", "bursty"):
            self.tables_[(cand.task, w)] = table
        if workload not in (None, "steady", "bursty"):
            return super()._missing_table(task, workload)
        return table

    def _score(self, cand: TaskCandidates) -> None:
        scores = np.full(len(cand.ids), -np.inf)
        for i in np.flatnonzero(cand.measured):
            value = float(self.score_fn(str(cand.ids[i])))
            if not np.isfinite(value):
                raise PlannerError(f"score_fn returned {value} for {cand.ids[i]!r}; scores must be finite")
            scores[i] = value
        self.scores_[cand.task] = {str(cand.ids[i]): float(scores[i]) for i in np.flatnonzero(cand.measured)}
        id_rank = np.unique(cand.ids, return_inverse=True)[1]
        self._score_rank[cand.task] = np.lexsort((id_rank, cand.latency, -scores)).argsort()

    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        if cand.task not in self._score_rank:
            self._score(cand)
        return first_by_rank(allowed, self._score_rank[cand.task])

    def select_for_trace(self, task: str) -> Decision:
        """The hindsight-best fixed configuration, with no deadline to miss (reason ``OK``)."""
        table = self.tables_.get((task, None)) or self._missing_table(task, None)
        idx = self._pick(table.candidates, table.candidates.measured, np.inf, None) \
            if table.candidates.measured.any() else table.below_idx
        reason = ReasonCode.OK if table.candidates.measured.any() else ReasonCode.ACCURACY_UNAVAILABLE
        return table.candidates.decision(idx, np.inf, reason)
