"""Configuration selection under a queue as a small Markov decision process, solved exactly.

The model (its assumptions are the point of stating it):

* One FIFO server. A decision is taken each time a request reaches the head of the queue.
* State ``(b, k)``: ``b`` is the bucket of ``q``, the number of requests waiting *behind* the head
  (buckets given by their lower edges; the last one is open-ended, e.g. ">= 8"), and ``k`` the
  head's deadline class with deadline ``d_k``.
* Action ``a``: a configuration with service time ``S_a`` (ms) and accuracy ``A_a``.
* The head has waited ``w(q) = 1000 q / rate`` ms: under Poisson arrivals at ``rate`` per second,
  that is the time over which ``q`` followers accumulate on average. A bucket uses its lower edge.
* Reward: ``A_a`` if ``w(q) + S_a <= d_k`` (on time), else ``-late_penalty``.
* Transition: ``N ~ Poisson(rate * S_a / 1000)`` requests arrive during service; the next state has
  ``q' = max(q + N - 1, 0)`` (the first follower becomes the head) and an independent class ``k'``
  drawn from ``class_probs``.

``value_iteration`` solves the discounted problem to a stated tolerance; ``greedy_policy`` is the
deadline planner's rule inside the same model (most accurate action with ``S_a <= d_k``, else the
fastest), optionally queue-aware (``S_a <= d_k - w(q)``); ``policy_value`` evaluates any policy
exactly by a linear solve, so optimal and greedy can be compared within the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from planner.schema import measured, validate_profiles

__all__ = ["QueueMDP", "MDPSolution", "value_iteration", "policy_value", "greedy_policy"]


@dataclass(frozen=True)
class QueueMDP:
    """A configuration-selection MDP; build it directly or with :meth:`from_profiles`."""

    service_ms: np.ndarray
    accuracy: np.ndarray
    deadlines_ms: np.ndarray
    class_probs: np.ndarray
    rate_rps: float
    bucket_edges: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 8)
    late_penalty: float = 0.0
    discount: float = 0.95
    action_names: tuple[str, ...] = ()
    transitions: np.ndarray = field(init=False, repr=False)
    rewards: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        service = np.asarray(self.service_ms, dtype=float).ravel()
        accuracy = np.asarray(self.accuracy, dtype=float).ravel()
        deadlines = np.asarray(self.deadlines_ms, dtype=float).ravel()
        probs = np.asarray(self.class_probs, dtype=float).ravel()
        edges = tuple(int(e) for e in self.bucket_edges)
        if service.size == 0 or service.shape != accuracy.shape:
            raise ValueError(f"QueueMDP: need one accuracy per action, got {service.size} services, {accuracy.size} accuracies")
        if not (np.isfinite(service).all() and (service > 0).all()):
            raise ValueError("QueueMDP: service times must be positive and finite")
        if not (np.isfinite(accuracy).all() and ((accuracy >= 0) & (accuracy <= 1)).all()):
            raise ValueError("QueueMDP: accuracies must lie in [0, 1] (no unavailable configurations)")
        if deadlines.size == 0 or deadlines.shape != probs.shape:
            raise ValueError("QueueMDP: need one probability per deadline class")
        if not (deadlines > 0).all() or not np.isfinite(deadlines).all():
            raise ValueError("QueueMDP: deadlines must be positive and finite")
        if (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"QueueMDP: class_probs must be non-negative and sum to 1, got {probs.tolist()}")
        if not (self.rate_rps > 0 and np.isfinite(self.rate_rps)):
            raise ValueError(f"QueueMDP: rate_rps must be positive, got {self.rate_rps!r}")
        if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"QueueMDP: bucket_edges must start at 0 and increase strictly, got {edges}")
        if not 0 <= self.discount < 1:
            raise ValueError(f"QueueMDP: discount must lie in [0, 1), got {self.discount!r}")
        if self.late_penalty < 0:
            raise ValueError(f"QueueMDP: late_penalty must be >= 0, got {self.late_penalty!r}")
        names = tuple(self.action_names) or tuple(f"a{i}" for i in range(service.size))
        if len(names) != service.size:
            raise ValueError("QueueMDP: one action name per action")
        for name, value in [("service_ms", service), ("accuracy", accuracy), ("deadlines_ms", deadlines),
                            ("class_probs", probs / probs.sum()), ("bucket_edges", edges), ("action_names", names)]:
            set_(self, name, value)
        set_(self, "transitions", self._transitions())
        set_(self, "rewards", self._rewards())

    # ---- structure ---------------------------------------------------------------------------
    @property
    def n_buckets(self) -> int:
        return len(self.bucket_edges)

    @property
    def n_classes(self) -> int:
        return self.deadlines_ms.size

    @property
    def n_states(self) -> int:
        return self.n_buckets * self.n_classes

    @property
    def n_actions(self) -> int:
        return self.service_ms.size

    def state(self, bucket: int, klass: int) -> int:
        """Index of state (bucket, deadline class)."""
        return bucket * self.n_classes + klass

    def wait_ms(self) -> np.ndarray:
        """Modelled waiting time of the head, per bucket: ``1000 q / rate`` at the bucket's lower edge."""
        return 1000.0 * np.asarray(self.bucket_edges, dtype=float) / self.rate_rps

    def _bucket_of(self, q: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.bucket_edges), q, side="right") - 1

    def _transitions(self) -> np.ndarray:
        """``P[a, s, s']`` as a dense array."""
        top = self.bucket_edges[-1]
        queue = np.zeros((self.n_actions, self.n_buckets, self.n_buckets))
        for a, service in enumerate(self.service_ms):
            arrivals = sps.poisson(self.rate_rps * service / 1000.0)
            for b, q in enumerate(self.bucket_edges):
                # q' = max(q + N - 1, 0) for q' = 0 .. top-1 exactly; the rest is the open last bucket
                nxt = np.arange(top)
                pmf = arrivals.pmf(nxt - q + 1)
                if q == 0 and top > 0:  # an empty queue stays empty unless 2+ arrive
                    pmf[0] = arrivals.cdf(1)
                mass = np.zeros(self.n_buckets)
                np.add.at(mass, self._bucket_of(nxt), pmf)
                mass[-1] += max(0.0, 1.0 - pmf.sum())
                queue[a, b] = mass
        # independent next deadline class
        p = np.einsum("abc,k->abck", queue, self.class_probs)  # [a, b, b', k']
        p = np.broadcast_to(p[:, :, None, :, :], (self.n_actions, self.n_buckets, self.n_classes,
                                                   self.n_buckets, self.n_classes))
        return p.reshape(self.n_actions, self.n_states, self.n_states).copy()

    def _rewards(self) -> np.ndarray:
        """``R[a, s]``: accuracy if on time, else ``-late_penalty``."""
        finish = self.wait_ms()[None, :, None] + self.service_ms[:, None, None]  # [a, b, 1]
        on_time = finish <= self.deadlines_ms[None, None, :]  # [a, b, k]
        reward = np.where(on_time, self.accuracy[:, None, None], -self.late_penalty)
        return reward.reshape(self.n_actions, self.n_states)

    # ---- from measured profiles -------------------------------------------------------------
    @classmethod
    def from_profiles(cls, profiles: pd.DataFrame, task: str, deadlines_ms: list[float],
                      class_probs: list[float], rate_rps: float, latency_column: str = "lat_p95_ms",
                      **kwargs: object) -> "QueueMDP":
        """Actions = the task's batch-size-1 configurations with a measured accuracy, service time
        from ``latency_column`` (p95 by default, the quantity the deadline planner compares)."""
        frame = validate_profiles(profiles)
        rows = frame[measured(frame, task) & (frame["batch_size"] == 1)]
        if rows.empty:
            raise ValueError(f"QueueMDP.from_profiles: no measured batch-1 configurations for task {task!r}")
        return cls(service_ms=rows[latency_column].to_numpy(float), accuracy=rows["accuracy"].to_numpy(float),
                   deadlines_ms=np.asarray(deadlines_ms, float), class_probs=np.asarray(class_probs, float),
                   rate_rps=rate_rps, action_names=tuple(rows["config_id"]), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MDPSolution:
    values: np.ndarray
    policy: np.ndarray
    iterations: int
    converged: bool
    residual: float


def value_iteration(mdp: QueueMDP, tol: float = 1e-10, max_iter: int = 100_000) -> MDPSolution:
    """Exact dynamic programming: iterate the Bellman optimality operator until the sup-norm change
    is below ``tol (1 - gamma) / (2 gamma)``, which makes the returned greedy policy ``tol``-optimal
    and the values within ``tol / 2`` of V*. Ties between actions go to the lower index."""
    if tol <= 0:
        raise ValueError(f"value_iteration: tol must be > 0, got {tol!r}")
    gamma = mdp.discount
    threshold = tol * (1 - gamma) / (2 * gamma) if gamma > 0 else np.inf
    values = np.zeros(mdp.n_states)
    residual = np.inf
    for iteration in range(1, max_iter + 1):
        q = mdp.rewards + gamma * mdp.transitions @ values  # [a, s]
        new = q.max(axis=0)
        residual = float(np.max(np.abs(new - values)))
        values = new
        if residual < threshold:
            break
    q = mdp.rewards + gamma * mdp.transitions @ values
    return MDPSolution(values, q.argmax(axis=0), iteration, residual < threshold, residual)


def policy_value(mdp: QueueMDP, policy: np.ndarray) -> np.ndarray:
    """Exact value of a deterministic policy (action per state): ``(I - gamma P_pi)^{-1} R_pi``."""
    policy = np.asarray(policy, dtype=int).ravel()
    if policy.shape != (mdp.n_states,) or (policy < 0).any() or (policy >= mdp.n_actions).any():
        raise ValueError(f"policy_value: need one action in [0, {mdp.n_actions}) per state ({mdp.n_states})")
    states = np.arange(mdp.n_states)
    p_pi = mdp.transitions[policy, states]
    r_pi = mdp.rewards[policy, states]
    return np.linalg.solve(np.eye(mdp.n_states) - mdp.discount * p_pi, r_pi)


def greedy_policy(mdp: QueueMDP, queue_aware: bool = False) -> np.ndarray:
    """The deadline planner's rule per state: the most accurate action whose service time fits the
    deadline (``d_k``, or ``d_k - w(q)`` when ``queue_aware``), ties to the faster one, else the fastest."""
    policy = np.empty(mdp.n_states, dtype=int)
    by_accuracy = np.lexsort((np.arange(mdp.n_actions), mdp.service_ms, -mdp.accuracy))
    fastest = int(np.lexsort((np.arange(mdp.n_actions), -mdp.accuracy, mdp.service_ms))[0])
    wait = mdp.wait_ms()
    for b in range(mdp.n_buckets):
        for k, deadline in enumerate(mdp.deadlines_ms):
            budget = deadline - wait[b] if queue_aware else deadline
            feasible = [a for a in by_accuracy if mdp.service_ms[a] <= budget]
            policy[mdp.state(b, k)] = feasible[0] if feasible else fastest
    return policy
