"""Analytical models that bound or explain what the simulator measures.

* :mod:`planner.theory.utilization`: utilisation, the rate-monotonic bound and the EDF test.
* :mod:`planner.theory.mdp`: configuration selection under a queue as a small MDP, solved exactly.
* :mod:`planner.theory.competitive`: a policy's measured competitive ratio against the hindsight oracle.
"""

from planner.theory.competitive import competitive_ratio, windowed_competitive_ratio
from planner.theory.mdp import QueueMDP, greedy_policy, policy_value, value_iteration
from planner.theory.utilization import edf_schedulable, rm_bound, schedulability, utilization

__all__ = [
    "utilization", "rm_bound", "edf_schedulable", "schedulability",
    "QueueMDP", "value_iteration", "policy_value", "greedy_policy",
    "competitive_ratio", "windowed_competitive_ratio",
]
