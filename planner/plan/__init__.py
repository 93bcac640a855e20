"""Decision core: the deadline planner, its baselines and failure handling (no torch here)."""

from planner.plan.baselines import INFaaSStyle, Oracle, StaticLarge, StaticSmall, ThroughputAutotuner
from planner.plan.failure import (
    InvalidDeadlineError,
    NoConfigurationLeftError,
    NotFittedError,
    PlannerError,
    ReasonCode,
    UnknownTaskError,
)
from planner.plan.planner import WORKLOADS, DeadlinePlanner, Decision, select_config

__all__ = [
    "DeadlinePlanner", "Decision", "ReasonCode", "select_config", "WORKLOADS",
    "StaticSmall", "StaticLarge", "ThroughputAutotuner", "INFaaSStyle", "Oracle",
    "PlannerError", "UnknownTaskError", "InvalidDeadlineError", "NotFittedError", "NoConfigurationLeftError",
]
