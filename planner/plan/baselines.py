"""Baselines with the planner's interface: ``fit(profiles)``, ``select(task, deadline_ms, workload=None)``,
``fallback(task, deadline_ms, failed)``.

They reuse the planner's step-table machinery, so every ``select`` is O(log n) too. None of them
looks at the workload (the argument is accepted so they are drop-in replacements). Like the planner,
they only consider configurations with a measured accuracy; the rest are a last resort. As for the
planner, every accuracy they compare is the calibration part's (:mod:`planner.splits`).
:class:`Oracle` is the exception by design: a hindsight reference that scores configurations on the
trace it is judged on (the scored part), so it is reported as a reference, never as a method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd

from planner.plan.failure import NotFittedError, PlannerError, ReasonCode, first_by_rank
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

    The floor is learned by :meth:`fit` per task: the task's best calibration accuracy minus
    ``accuracy_margin`` (``accuracy_floor_[task]``), so one setting fits every profile set.

    As in INFaaS (Romero et al., USENIX ATC'21), "cheapest" means the least resource use. On one
    machine that is CPU time per item, ``1 / throughput_items_s``, so by default this picks the
    highest throughput (``cost="cpu_time"``); ``cost="latency"`` uses the lowest latency percentile
    instead. If something meets the deadline but nothing also meets the floor, the most accurate
    on-time configuration is returned with reason ``ACCURACY_FLOOR_UNMET``; if nothing meets the
    deadline, the fastest (``NO_FEASIBLE``).
    """

    def __init__(self, accuracy_margin: float = 0.02, percentile: int = 95,
                 cost: Literal["cpu_time", "latency"] = "cpu_time") -> None:
        super().__init__(percentile)
        if isinstance(accuracy_margin, bool) or not (0.0 <= accuracy_margin <= 1.0):
            raise PlannerError(f"accuracy_margin must lie in [0, 1], got {accuracy_margin!r}")
        if cost not in ("cpu_time", "latency"):
            raise PlannerError(f"cost must be 'cpu_time' or 'latency', got {cost!r}")
        self.accuracy_margin = float(accuracy_margin)
        self.cost = cost

    def fit(self, profiles: pd.DataFrame) -> "INFaaSStyle":
        """Learn each task's floor (``accuracy_floor_``) and build the decision tables. Returns ``self``."""
        self.accuracy_floor_: dict[str, float] = {}
        return super().fit(profiles)

    def _build_task(self, task: str, cand: TaskCandidates) -> None:
        measured = cand.accuracy[cand.measured]
        best = float(measured.max()) if measured.size else 0.0
        self.accuracy_floor_[task] = max(0.0, best - self.accuracy_margin)
        super()._build_task(task, cand)

    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        feasible = allowed & (cand.latency <= deadline_ms)
        if not feasible.any():
            return first_by_rank(allowed, cand.rank_fastest)
        good = feasible & (cand.accuracy >= self.accuracy_floor_[cand.task])
        if good.any():
            return first_by_rank(good, cand.rank_throughput if self.cost == "cpu_time" else cand.rank_fastest)
        return first_by_rank(feasible, cand.rank_accurate)

    def _reason(self, cand: TaskCandidates, idx: int, deadline_ms: float) -> ReasonCode:
        if cand.latency[idx] > deadline_ms:
            return ReasonCode.NO_FEASIBLE
        if cand.accuracy[idx] < self.accuracy_floor_[cand.task]:
            return ReasonCode.ACCURACY_FLOOR_UNMET
        return ReasonCode.OK


class Oracle(_TablePlanner):
    """The best fixed configuration in hindsight (``best_fixed_hindsight``): ``score_fn(config_id) ->
    float`` (higher is better, e.g. a simulated trace's effective accuracy) is evaluated for the
    measured configurations of the task in :meth:`fit`; ties go to the lower latency.

    ``upper_bound_fn(config_id) -> float``, when given, must never be below the score (e.g. the
    fraction of the trace's requests the configuration answers correctly bounds its effective
    accuracy). ``fit`` then scores configurations in decreasing order of that bound and stops
    simulating once the bound falls below the best score found; a skipped configuration keeps its
    bound as its score, which is below the best, so the choice is the same as scoring everything.

    The deadline does not change the choice (the score already reflects the trace's deadlines); it
    only sets ``expected_miss_ms`` and the reason (``DEADLINE_IGNORED`` if the latency percentile
    exceeds it). ``scores_[task]`` maps config_id to score; ``n_scored_[task]`` counts simulations.
    """

    _late_reason = ReasonCode.DEADLINE_IGNORED

    def __init__(self, score_fn: Callable[[str], float], percentile: int = 95,
                 upper_bound_fn: Callable[[str], float] | None = None) -> None:
        super().__init__(percentile)
        if not callable(score_fn):
            raise PlannerError(f"score_fn must be callable, got {type(score_fn).__name__}")
        if upper_bound_fn is not None and not callable(upper_bound_fn):
            raise PlannerError(f"upper_bound_fn must be callable, got {type(upper_bound_fn).__name__}")
        self.score_fn, self.upper_bound_fn = score_fn, upper_bound_fn

    def fit(self, profiles: pd.DataFrame, task: str | None = None) -> "Oracle":
        """Score the measured configurations of ``task`` (default: every task) and build the tables."""
        self.scores_: dict[str, dict[str, float]] = {}
        self.n_scored_: dict[str, int] = {}
        self._score_rank: dict[str, np.ndarray] = {}
        self._only_task = task
        super().fit(profiles)
        if task is not None:
            self._task_candidates(task)  # an unknown task is a clear error
        return self

    def _build_task(self, task: str, cand: TaskCandidates) -> None:
        if self._only_task is not None and task != self._only_task:
            return  # a score function describes one task's trace
        self._score(cand)
        super()._build_task(task, cand)

    def _missing_table(self, task: object, workload: object) -> _Table:
        cand = self._task_candidates(task)
        if cand.task not in self.scores_:
            raise NotFittedError(f"Oracle was fitted for task {self._only_task!r}, not {cand.task!r}")
        return super()._missing_table(task, workload)

    def _score(self, cand: TaskCandidates) -> None:
        measured = [int(i) for i in np.flatnonzero(cand.measured)]
        scores = np.full(len(cand.ids), -np.inf)
        n_scored = 0

        def checked(i: int) -> float:
            value = float(self.score_fn(str(cand.ids[i])))
            if not np.isfinite(value):
                raise PlannerError(f"score_fn returned {value} for {cand.ids[i]!r}; scores must be finite")
            return value

        if self.upper_bound_fn is None:
            for i in measured:
                scores[i] = checked(i)
                n_scored += 1
        else:
            bounds = {i: float(self.upper_bound_fn(str(cand.ids[i]))) for i in measured}
            best = -np.inf
            for i in sorted(measured, key=lambda i: -bounds[i]):
                if bounds[i] >= best:
                    scores[i] = checked(i)
                    n_scored += 1
                else:
                    scores[i] = bounds[i]
                best = max(best, scores[i])
        self.scores_[cand.task] = {str(cand.ids[i]): float(scores[i]) for i in measured}
        self.n_scored_[cand.task] = n_scored
        id_rank = np.unique(cand.ids, return_inverse=True)[1]
        self._score_rank[cand.task] = np.lexsort((id_rank, cand.latency, -scores)).argsort()

    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        return first_by_rank(allowed, self._score_rank[cand.task])

    def select_for_trace(self, task: str) -> Decision:
        """The hindsight-best fixed configuration, with no deadline to miss (reason ``OK``)."""
        cand = self._task_candidates(task)
        if cand.task not in self.scores_:
            raise NotFittedError(f"Oracle was fitted for task {self._only_task!r}, not {cand.task!r}")
        if not cand.measured.any():
            table = self.tables_[(cand.task, None)]
            return cand.decision(table.below_idx, np.inf, ReasonCode.ACCURACY_UNAVAILABLE)
        idx = self._pick(cand, cand.measured, np.inf, None)
        return cand.decision(idx, np.inf, ReasonCode.OK)
