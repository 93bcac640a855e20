"""Deadline-aware configuration selection with an O(log n) ``select``.

``DeadlinePlanner(percentile=95).fit(profiles).select(task, deadline_ms, workload=None)`` returns the
configuration with the highest measured accuracy whose latency percentile (p95 by default) is
<= the deadline; ties go to the lower latency. "Accuracy" for every choice here and in the
baselines is the profiles' ``calibration_accuracy`` (the evaluation set's calibration part,
:mod:`planner.splits`), never the scored ``accuracy`` the study reports, so a method never chooses
on the examples it is scored on; ``Decision.expected_accuracy`` is that calibration estimate. Why it is fast: the chosen configuration only changes
when the deadline crosses one of the profiled latencies, so ``fit`` evaluates the rule once per
distinct latency and stores a step function — a sorted Python list of breakpoints and a list of
pre-built frozen :class:`Decision` objects. ``select`` is then a float check, a dict lookup and a
``bisect``; no pandas runs per request. For ``workload=None`` the breakpoints are exactly the
latency/accuracy Pareto frontier (accuracy strictly increasing with latency).

Workload-dependent batch choice. Profiles hold one (model, runtime, precision) at several batch
sizes, and a batch configuration's latency is the whole batch call. Among the feasible
configurations at the chosen accuracy level (the best feasible accuracy, minus
``accuracy_tolerance`` when a workload is given):

* ``workload=None``: the lowest latency;
* ``"steady"``: the highest ``throughput_items_s`` (so a larger batch if it still fits the
  deadline), because under sustained load throughput keeps the queue short;
* ``"bursty"``: the smallest batch, because a burst should not wait for a batch to fill.

Rows with ``accuracy_source == "unavailable"`` are never chosen for accuracy; they are returned
(reason ``ACCURACY_UNAVAILABLE``) only when the task has no measured configuration at all.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from planner.plan.failure import (
    NoConfigurationLeftError,
    NotFittedError,
    PlannerError,
    ReasonCode,
    UnknownTaskError,
    check_budget,
    check_deadline,
    failed_mask,
    fallback_reason,
    first_by_rank,
)
from planner.schema import PLANNING_ACCURACY, measured, validate_profiles

Workload = Literal["steady", "bursty"] | None
WORKLOADS: tuple[Workload, ...] = (None, "steady", "bursty")
PERCENTILE_COLUMNS: dict[int, str] = {50: "lat_p50_ms", 95: "lat_p95_ms", 99: "lat_p99_ms"}
_INF = math.inf

__all__ = [
    "Decision", "DeadlinePlanner", "ReasonCode", "TaskCandidates", "WORKLOADS", "select_config",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """One planner answer. ``expected_miss_ms`` is ``max(0, expected latency - deadline)``."""

    config_id: str
    expected_latency_ms: float
    expected_accuracy: float
    reason: ReasonCode
    expected_miss_ms: float = 0.0


def _rank(*keys: np.ndarray) -> np.ndarray:
    """Rank of each row under a lexicographic order, first key most significant (ascending)."""
    order = np.lexsort(tuple(reversed(keys)))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


@dataclass(frozen=True, eq=False)
class TaskCandidates:
    """The configurations of one task as aligned numpy arrays, plus the orders the rules use.

    ``accuracy`` is the calibration accuracy (:data:`planner.schema.PLANNING_ACCURACY`). Every order
    ends with the config_id, so all choices are deterministic.
    """

    task: str
    ids: np.ndarray
    latency: np.ndarray
    accuracy: np.ndarray
    throughput: np.ndarray
    batch: np.ndarray
    measured: np.ndarray
    rank_fastest: np.ndarray
    rank_accurate: np.ndarray
    rank_throughput: np.ndarray
    rank_bursty: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, task: str, latency_column: str) -> "TaskCandidates":
        ids = frame["config_id"].to_numpy(dtype=object)
        latency = frame[latency_column].to_numpy(dtype=float)
        accuracy = frame[PLANNING_ACCURACY].to_numpy(dtype=float)
        throughput = frame["throughput_items_s"].to_numpy(dtype=float)
        batch = frame["batch_size"].to_numpy(dtype=np.int64)
        is_measured = measured(frame).to_numpy(dtype=bool)
        bad = ids[is_measured & ~(np.isfinite(throughput) & (throughput > 0))]
        if bad.size:
            raise PlannerError(f"throughput_items_s must be positive and finite, bad for {bad[:5].tolist()}")
        id_rank = np.unique(ids, return_inverse=True)[1]
        acc_key = np.where(np.isnan(accuracy), -np.inf, accuracy)
        return cls(
            task=task, ids=ids, latency=latency, accuracy=accuracy, throughput=throughput, batch=batch,
            measured=is_measured,
            rank_fastest=_rank(latency, -acc_key, id_rank),
            rank_accurate=_rank(-acc_key, latency, id_rank),
            rank_throughput=_rank(-throughput, -batch, latency, id_rank),
            rank_bursty=_rank(batch, latency, id_rank),
        )

    def decision(self, idx: int, deadline_ms: float, reason: ReasonCode) -> Decision:
        latency = float(self.latency[idx])
        return Decision(str(self.ids[idx]), latency, float(self.accuracy[idx]), reason,
                        max(0.0, latency - deadline_ms))


class _Table:
    """Step function deadline -> Decision: ``decisions[i]`` holds for deadlines in
    ``[lats[i], lats[i+1])``; below ``lats[0]`` the ``below`` configuration is late by
    ``its latency - deadline``."""

    __slots__ = ("lats", "decisions", "below_idx", "below_reason", "candidates")

    def __init__(self, lats: list[float], decisions: list[Decision], below_idx: int,
                 below_reason: ReasonCode, candidates: TaskCandidates) -> None:
        self.lats, self.decisions = lats, decisions
        self.below_idx, self.below_reason, self.candidates = below_idx, below_reason, candidates

    def below(self, deadline_ms: float) -> Decision:
        return self.candidates.decision(self.below_idx, deadline_ms, self.below_reason)


class _TablePlanner:
    """Shared machinery: fit builds one step table per (task, workload); select looks it up.

    Subclasses define ``_pick`` (the rule, as an index into the task's candidates) and may
    override ``_reason``. ``_late_reason`` is the code of a choice that misses the deadline.
    """

    _late_reason: ReasonCode = ReasonCode.NO_FEASIBLE
    _workload_sensitive: bool = False

    def __init__(self, percentile: int = 95) -> None:
        if percentile not in PERCENTILE_COLUMNS:
            raise PlannerError(f"percentile must be one of {sorted(PERCENTILE_COLUMNS)}, got {percentile!r}")
        self.percentile = percentile
        self.tables_: dict[tuple[str, Workload], _Table] = {}

    # ---- the rule, per subclass -------------------------------------------------------------
    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        raise NotImplementedError

    def _reason(self, cand: TaskCandidates, idx: int, deadline_ms: float) -> ReasonCode:
        return ReasonCode.OK if cand.latency[idx] <= deadline_ms else self._late_reason

    # ---- fit --------------------------------------------------------------------------------
    @property
    def latency_column(self) -> str:
        return PERCENTILE_COLUMNS[self.percentile]

    def fit(self, profiles: pd.DataFrame) -> "_TablePlanner":
        """Validate the profiles and precompute every task's decision tables. Returns ``self``."""
        frame = validate_profiles(profiles)
        self.profiles_ = frame
        self.candidates_: dict[str, TaskCandidates] = {
            str(task): TaskCandidates.from_frame(group, str(task), self.latency_column)
            for task, group in frame.groupby("task", sort=True)
        }
        self.tables_ = {}
        for task, cand in self.candidates_.items():
            self._build_task(task, cand)
        return self

    def _build_task(self, task: str, cand: TaskCandidates) -> None:
        if self._workload_sensitive:
            for workload in WORKLOADS:
                self.tables_[(task, workload)] = self._build(cand, workload)
        else:
            table = self._build(cand, None)
            for workload in WORKLOADS:
                self.tables_[(task, workload)] = table

    def _build(self, cand: TaskCandidates, workload: Workload) -> _Table:
        if not cand.measured.any():
            return self._unavailable_table(cand)
        allowed = cand.measured
        below_idx = self._pick(cand, allowed, -math.inf, workload)
        lats: list[float] = []
        decisions: list[Decision] = []
        for threshold in np.unique(cand.latency[allowed]):
            t = float(threshold)
            idx = self._pick(cand, allowed, t, workload)
            if cand.latency[idx] > t:  # late choice: must be the same one as below all latencies
                if lats or idx != below_idx:
                    raise AssertionError(f"{type(self).__name__}: late choices must precede on-time ones")
                continue
            decision = cand.decision(idx, t, self._reason(cand, idx, t))
            if not decisions or decisions[-1] != decision:
                lats.append(t)
                decisions.append(decision)
        if not lats or cand.latency[below_idx] < lats[0]:
            raise AssertionError(f"{type(self).__name__}: inconsistent decision table for {cand.task}")
        return _Table(lats, decisions, below_idx, self._late_reason, cand)

    @staticmethod
    def _unavailable_table(cand: TaskCandidates) -> _Table:
        idx = first_by_rank(np.ones(len(cand.ids), dtype=bool), cand.rank_fastest)
        reason = ReasonCode.ACCURACY_UNAVAILABLE
        decision = cand.decision(idx, float(cand.latency[idx]), reason)
        return _Table([float(cand.latency[idx])], [decision], idx, reason, cand)

    # ---- select -----------------------------------------------------------------------------
    def select(self, task: str, deadline_ms: float, workload: Workload = None) -> Decision:
        """The method's decision for one request; O(log n) after :meth:`fit`."""
        # Fast path: a plain float or int in (0, inf), two cheap checks. Anything else (numpy
        # scalars, bools, arrays, strings, NaN, <= 0) goes through the one deadline rule, which
        # converts a numpy scalar or raises InvalidDeadlineError naming the value.
        t = type(deadline_ms)
        if not ((t is float or t is int) and 0 < deadline_ms < _INF):
            deadline_ms = check_deadline(deadline_ms)
        try:
            table = self.tables_[(task, workload)]
        except (KeyError, TypeError):
            table = self._missing_table(task, workload)
        i = bisect_right(table.lats, deadline_ms)
        if i:
            return table.decisions[i - 1]
        return table.below(deadline_ms)

    def _missing_table(self, task: object, workload: object) -> _Table:
        """Called when (task, workload) has no table: explain why (subclasses may build one)."""
        self._task_candidates(task)
        raise PlannerError(f"unknown workload {workload!r}; expected one of {list(WORKLOADS)}")

    def _task_candidates(self, task: object) -> TaskCandidates:
        if not hasattr(self, "candidates_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(profiles) first")
        try:
            known = task in self.candidates_
        except TypeError:
            known = False
        if not known:
            raise UnknownTaskError(f"unknown task {task!r}; profiled tasks: {sorted(self.candidates_)}")
        return self.candidates_[task]  # type: ignore[index]

    # ---- failure handling -------------------------------------------------------------------
    def fallback(self, task: str, deadline_ms: float, failed: Iterable[str],
                 workload: Workload = None) -> Decision:
        """The decision had the configurations in ``failed`` (which crashed at run time) not existed.

        Always a configuration not in ``failed``; reason ``FALLBACK`` if it meets ``deadline_ms``
        (pass the time budget that is left), else ``FALLBACK_NO_FEASIBLE``. The budget may be any
        finite number of ms: a crash can be found after the deadline has passed, and the request
        still needs an answer, so a budget <= 0 gets the fastest remaining measured configuration
        (``FALLBACK_NO_FEASIBLE``, ``expected_miss_ms`` = its latency - budget) instead of an
        error. Configurations without measured accuracy are used only when no measured one
        remains (reason ``ACCURACY_UNAVAILABLE``).
        """
        budget = check_budget(deadline_ms)
        if workload not in WORKLOADS:
            raise PlannerError(f"unknown workload {workload!r}; expected one of {list(WORKLOADS)}")
        cand = self._task_candidates(task)
        remaining = ~failed_mask(cand.ids, failed, task)
        allowed = cand.measured & remaining
        if allowed.any():
            if budget <= 0:  # already late: finish as soon as possible, whatever the method's rule
                idx = first_by_rank(allowed, cand.rank_fastest)
            else:
                idx = self._pick(cand, allowed, budget, workload)
            return cand.decision(idx, budget, fallback_reason(bool(cand.latency[idx] <= budget)))
        idx = first_by_rank(remaining, cand.rank_fastest)
        if idx < 0:
            raise NoConfigurationLeftError(f"all {len(cand.ids)} configurations of task {task!r} have failed")
        return cand.decision(idx, budget, ReasonCode.ACCURACY_UNAVAILABLE)

    # ---- inspection -------------------------------------------------------------------------
    def decision_table(self, task: str, workload: Workload = None) -> pd.DataFrame:
        """The fitted step function as a table: from which deadline on each decision holds."""
        self._task_candidates(task)
        table = self.tables_.get((task, workload)) or self._missing_table(task, workload)
        return pd.DataFrame({
            "deadline_from_ms": table.lats,
            "config_id": [d.config_id for d in table.decisions],
            "expected_latency_ms": [d.expected_latency_ms for d in table.decisions],
            "expected_accuracy": [d.expected_accuracy for d in table.decisions],
            "reason": [str(d.reason) for d in table.decisions],
        })


class DeadlinePlanner(_TablePlanner):
    """Most accurate configuration whose latency percentile meets the deadline.

    Parameters
    ----------
    percentile : 50, 95 or 99 — which latency column (``lat_p{percentile}_ms``) must fit.
    accuracy_tolerance : with a workload, configurations within this much of the best feasible
        accuracy count as the same accuracy level, so a variant whose batch sizes differ in
        accuracy by measurement noise can still switch batch size. 0 (default) means exact ties.
        Ignored for ``workload=None``, which always returns the most accurate feasible config.
    """

    _workload_sensitive = True

    def __init__(self, percentile: int = 95, accuracy_tolerance: float = 0.0) -> None:
        super().__init__(percentile)
        if not (0.0 <= accuracy_tolerance < 1.0):
            raise PlannerError(f"accuracy_tolerance must lie in [0, 1), got {accuracy_tolerance!r}")
        self.accuracy_tolerance = float(accuracy_tolerance)

    def _pick(self, cand: TaskCandidates, allowed: np.ndarray, deadline_ms: float, workload: Workload) -> int:
        feasible = allowed & (cand.latency <= deadline_ms)
        if not feasible.any():
            return first_by_rank(allowed, cand.rank_fastest)
        best = cand.accuracy[feasible].max()
        tolerance = self.accuracy_tolerance if workload is not None else 0.0
        level = feasible & (cand.accuracy >= best - tolerance)
        rank = {None: cand.rank_fastest, "steady": cand.rank_throughput, "bursty": cand.rank_bursty}[workload]
        return first_by_rank(level, rank)


def select_config(profiles: pd.DataFrame, task: str, deadline_ms: float, *, percentile: int = 95,
                  workload: Workload = None, accuracy_tolerance: float = 0.0) -> Decision:
    """One-shot, plain-function form of :meth:`DeadlinePlanner.select`: same rule, no precomputation.

    Costs O(n) plus validating ``profiles``. For many requests fit a :class:`DeadlinePlanner` once
    and call its ``select`` (O(log n)); a bound ``planner.select`` is itself a plain function.
    """
    planner = DeadlinePlanner(percentile, accuracy_tolerance)
    deadline = check_deadline(deadline_ms)
    if workload not in WORKLOADS:
        raise PlannerError(f"unknown workload {workload!r}; expected one of {list(WORKLOADS)}")
    frame = validate_profiles(profiles)
    rows = frame[frame["task"] == task]
    if rows.empty:
        raise UnknownTaskError(f"unknown task {task!r}; profiled tasks: {sorted(frame['task'].unique())}")
    cand = TaskCandidates.from_frame(rows, task, planner.latency_column)
    if not cand.measured.any():
        return planner._unavailable_table(cand).below(deadline)
    idx = planner._pick(cand, cand.measured, deadline, workload)
    return cand.decision(idx, deadline, planner._reason(cand, idx, deadline))
