"""Reason codes, input errors and the pure index-level helpers behind failure handling.

Every :class:`~planner.plan.planner.Decision` carries a :class:`ReasonCode`, so a simulator or a
log can tell an ordinary choice from a forced one (nothing fits, a configuration crashed, no
accuracy was measured) without re-deriving it. Bad input raises a :class:`PlannerError`
(a ``ValueError``) whose message names the problem.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from enum import StrEnum

import numpy as np

from planner import schema


class ReasonCode(StrEnum):
    """Why a decision is what it is."""

    OK = "ok"
    """A configuration meets the deadline and is the method's normal choice."""
    NO_FEASIBLE = "no_feasible"
    """No configuration meets the deadline: the fastest one is returned; ``expected_miss_ms`` > 0."""
    DEADLINE_IGNORED = "deadline_ignored"
    """A deadline-blind method (static, oracle) chose a configuration expected to miss the deadline."""
    ACCURACY_FLOOR_UNMET = "accuracy_floor_unmet"
    """Something meets the deadline, but nothing that also meets the accuracy floor (INFaaS-style)."""
    FALLBACK = "fallback"
    """A configuration failed at run time; this is the method's choice among the remaining ones."""
    FALLBACK_NO_FEASIBLE = "fallback_no_feasible"
    """After a failure no remaining configuration meets the deadline: the fastest remaining one."""
    ACCURACY_UNAVAILABLE = "accuracy_unavailable"
    """No configuration of the task (or none left) has a measured accuracy: the fastest one with an
    unavailable accuracy is returned, since there is nothing else to run."""


class PlannerError(ValueError):
    """Bad input to a planner (unknown task, bad deadline, bad parameter, nothing left to run)."""


class UnknownTaskError(PlannerError):
    """The task is not in the fitted profiles."""


class InvalidDeadlineError(PlannerError, schema.DeadlineError):
    """The deadline is not a positive, finite number of milliseconds (also a
    :class:`planner.schema.DeadlineError`, so one ``except`` catches a bad deadline from any layer)."""


class NotFittedError(PlannerError):
    """``select`` or ``fallback`` was called before ``fit``."""


class NoConfigurationLeftError(PlannerError):
    """Every configuration of the task has failed; there is nothing to fall back to."""


def check_deadline(deadline_ms: object, what: str = "deadline_ms") -> float:
    """The deadline as a float, by the one rule of :func:`planner.schema.check_deadline` (booleans,
    arrays, strings, NaN, infinities and values <= 0 raise :class:`InvalidDeadlineError`)."""
    return schema.check_deadline(deadline_ms, what, InvalidDeadlineError)


def check_budget(budget_ms: object, what: str = "deadline_ms") -> float:
    """A remaining time budget as a float: any finite real number of ms. Unlike a deadline it may be
    <= 0 (the deadline has already passed); booleans, arrays, strings, NaN and infinities raise."""
    if isinstance(budget_ms, (bool, np.bool_)) or not isinstance(budget_ms, numbers.Real):
        raise InvalidDeadlineError(f"{what} must be a number of ms, got {budget_ms!r}")
    value = float(budget_ms)
    if not math.isfinite(value):
        raise InvalidDeadlineError(f"{what} must be a finite number of ms, got {budget_ms!r}")
    return value


def failed_mask(ids: np.ndarray, failed: Iterable[str], task: str) -> np.ndarray:
    """Boolean mask of ``ids`` that are in ``failed``; an id that is not a config of ``task`` raises.

    A typo or an id of another task would otherwise silently exclude nothing.
    """
    if isinstance(failed, str):
        raise PlannerError("failed must be a collection of config ids, not a single string")
    try:
        failed = set(failed)
    except TypeError:
        raise PlannerError(f"failed must be a collection of config ids (e.g. a set, possibly empty), "
                           f"got {failed!r}") from None
    known = set(ids.tolist())
    unknown = sorted(failed - known, key=repr)
    if unknown:
        raise PlannerError(f"failed config id(s) {unknown[:5]} are not configurations of task {task!r}")
    return np.fromiter((i in failed for i in ids), dtype=bool, count=len(ids))


def first_by_rank(mask: np.ndarray, rank: np.ndarray) -> int:
    """Index of the best-ranked (lowest ``rank``) row among ``mask``; -1 when ``mask`` is empty."""
    candidates = np.flatnonzero(mask)
    if candidates.size == 0:
        return -1
    return int(candidates[np.argmin(rank[candidates])])


def fallback_reason(on_time: bool) -> ReasonCode:
    """Reason for a decision made after a run-time failure."""
    return ReasonCode.FALLBACK if on_time else ReasonCode.FALLBACK_NO_FEASIBLE
