"""Clairvoyant upper bound on a trace's effective accuracy, valid for every policy the simulator can run.

The hindsight oracle of the evaluation is only the best *fixed* configuration, so an online policy
can beat it. :func:`clairvoyant_bound` returns a number no schedule of the serving model
(:mod:`planner.serving.simulator`) can exceed on the trace: not a static, fixed or queue-aware
policy, not one that knows the future (a policy sees ``request_id``, so it may), under FIFO or
EDF, with any seed, any number of servers it is given, ``drop_expired`` on or off.

Notation: request ``i`` arrives at ``a_i`` with relative deadline ``D_i`` and absolute deadline
``d_i = a_i + D_i``; ``k`` servers; configuration ``c`` has batch size ``B_c`` and service draws
from its samples (dispatch overhead included). A request *counts* when it is correct and on time.

**Minimum service times.** Every service time is at least its configuration's smallest sample. A
batch of ``c`` containing ``i`` takes at least ``s_c(i)``: the minimum sample, or for a routed
cascade the small member's minimum plus, when ``i`` itself escalates, the large member's minimum
(a batch with an escalating member pays both draws). So ``i`` can count under ``c`` only if it is
correct under ``c`` (``ServedConfig.outcome``) and ``s_c(i) <= D_i``; call such ``(i, c)``
eligible. ``upper_i = [some c is eligible]`` gives the *trivial* bound ``mean(upper)``.

**Shares.** Charge a batch's duration ``S`` equally to the ``q`` requests in it that count
(``S/q`` each). A counted ``i`` in a batch of ``c`` gets at least ``s_c(i) / min(B_c, m_c(i))``,
because ``S >= s_c(i)`` and ``q <= B_c``, and ``q <= m_c(i)``: every counted batch-mate ``j`` is
itself eligible under ``c`` and could share a start time ``t`` with ``i``
(``max(a_i, a_j) <= t`` and ``t + s_c^min <= min(d_i, d_j)``), and ``m_c(i)`` counts such ``j``
(``i`` included). Let ``w_i = min over eligible c of s_c(i) / min(B_c, m_c(i))`` (requests with no
eligible ``c`` never count and leave the problem). The shares of one batch sum to at most ``S``.
A routed cascade's early answer (the first stage's answer alone, where the second would be late) is
covered by its members' own rows, which have its batch size and samples: in a cascade batch the
``a`` requests counted on the first stage's answer are all eligible under the small member and
could share that start, so their shares sum to at most its minimum, and the ``b`` counted on the
second's to at most the large member's; ``S`` is at least the first, and at least both when ``b > 0``.
So the set must hold a routed cascade's members (:func:`_check_members`; every profile does).

**Windows.** A counted request with ``a_i >= alpha`` and ``d_i <= beta`` was served by a batch
that started at or after ``a_i`` and finished by ``d_i``, i.e. lies inside ``[alpha, beta]``.
Batches on one server do not overlap, so those inside the window last at most ``k (beta - alpha)``
in total, hence ``sum_{i in W} w_i z_i <= k (beta - alpha)`` for the 0/1 indicator ``z`` of the
counted requests, for every window. ``z`` of any simulated run is thus feasible for

    maximise sum_i z_i  s.t.  0 <= z_i <= 1,  window constraints for a family of windows,

and the optimum divided by ``n`` bounds its effective accuracy. Any subset of windows stays valid;
more windows give a tighter bound.

**Window family (``method="lp"``).** Order the requests so that both ends of their intervals are
non-decreasing, enlarging intervals where needed (``beta_l = max_{l' <= l} d_l'`` in arrival
order; a larger interval only loosens). Then the window ``[alpha_i, beta_j]`` contains the
requests ``i..j``, and with prefix sums ``P_j = sum_{l <= j} w_l z_l`` the constraints of *all*
pairs ``i <= j`` read ``P_j - k beta_j <= P_{i-1} - k alpha_i``. With one relative deadline per
trace (as the evaluation generates them) the enlargement is void and this family is *every*
window: the bound is the optimum over all windows, not a sample of them. Its LP is solved without
a solver: with ``y = w z`` the window constraints are Hall's condition of a transportation
problem (requests to stretches of server time), so the feasible ``y <= w`` form a polymatroid and
the greedy algorithm (requests in increasing ``w``, each as large as the tightest window through
it allows) is optimal; ``O(n)`` per request, and a part of the trace where every request fits
(no interval crossing into the next part) is counted whole without it. With mixed deadlines the
same constraints are added for the deadline order (``alpha`` = suffix minimum of arrivals) and,
for up to :data:`MAX_CLASS_FAMILIES` deadline classes, for each class on its own; a running
maximum ``M_i >= max(P_i - k beta_i, M_{i+1})``, ``M_i <= P_{i-1} - k alpha_i`` states each family
in ``4n`` sparse rows, solved by HiGHS (:func:`scipy.optimize.linprog`). ``method="milp"`` makes
``z`` binary (:func:`scipy.optimize.milp`): valid and tighter, but by at most 0.002 on the
benchmark traces (``benchmarks/bench_clairvoyant.py``) at 10 to 600 times the cost (up to 30 s at
4,000 requests under overload). A run counts a whole number of requests, so the optimum is
rounded down (after a small margin for solver tolerances).

**Exact (``method="exact"``, tiny traces).** With every service time at its minimum, no schedule
does worse than with the real draws (shorter batches keep every start time feasible and finish no
later), so the optimum over *all* schedules of the minimum-time instance is an upper bound. An
optimal schedule can be taken with only counted requests in its batches (removing one never
lengthens a batch), each batch at the fastest configuration that answers all its members
correctly, and every batch started as early as possible. For one server the earliest finish
``f(S)`` of serving exactly the set ``S`` obeys ``f(S) = min over batches T of S of
max(f(S \\ T), max a_T) + s(T)``, subject to finishing by ``min d_T``; sets feasible on one server
are closed under subsets, and ``k`` servers serve ``S`` iff ``S`` splits into ``k`` such sets. The
optimum is the largest such ``S``: ``O(3^n)`` work, used for ``n <= EXACT_MAX_REQUESTS``.

Floating point: the simulator's hit test is ``(finish - arrival) * 1000 <= deadline_ms``; every
comparison here allows :data:`TOLERANCE_S` so rounding never makes the bound fall below a run.
The bound holds for simulations with the same catalog (same ``cascade_mode``) and any
``dispatch_overhead_ms`` at least the catalog's (a bundle is prepared with overhead 0).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from planner.schema import check_deadline, config_id
from planner.serving.batching import check_trace
from planner.serving.simulator import Catalog, ServedConfig, SimulationError, prepare

TOLERANCE_S = 1e-9            # slack on every time comparison (float rounding of t + s - a)
EXACT_MAX_REQUESTS = 12       # O(3^n): ~0.1 s at 12 requests, ~0.5 s at 14 (measured, 2-core CPU)
EXACT_LIMIT = 16              # method="exact" refuses more (3^16 subset pairs: minutes)
MAX_CLASS_FAMILIES = 4        # per-deadline-class window families added for mixed deadlines
SOLVER_MARGIN = 1e-6           # relative slack on the LP optimum before rounding down to whole requests
METHODS = ("auto", "exact", "lp", "milp")


class ClairvoyantError(SimulationError):
    """The trace, the catalog or the arguments cannot give a bound (the message says why)."""


@dataclass(frozen=True)
class ClairvoyantBound:
    """An upper bound on the effective accuracy any simulated policy reaches on one trace.

    ``upper`` is per request, in ``request_id`` order: 1.0 if some configuration answers it
    correctly within its deadline at minimum service time, else 0.0 (such a request never counts);
    its mean is ``trivial``, the per-request bound, which ``effective_accuracy`` never exceeds.
    ``count`` is the optimum in requests before rounding down (``effective_accuracy`` is
    ``floor(count) / n_requests``); ``n_constraints`` counts the rows of the window LP in its
    sparse form (0 for the exact method), whichever way it was solved.
    """

    effective_accuracy: float
    n_requests: int
    method: str
    n_constraints: int
    solve_seconds: float
    trivial: float
    upper: np.ndarray
    count: float


# ---------------------------------------------------------------- the instance

@dataclass(frozen=True)
class _Instance:
    """Requests (in arrival order) and, per configuration, what a counted request needs."""

    arrival: np.ndarray      # (n,) seconds, shifted so the first arrival is 0
    deadline: np.ndarray     # (n,) absolute deadline, same shift
    relative: np.ndarray     # (n,) relative deadline in seconds
    rank: np.ndarray         # (n,) position in request_id order of each arrival-ordered request
    batch: np.ndarray        # (C,) batch sizes
    base: np.ndarray         # (C,) minimum batch service time (small member's for a cascade)
    extra: np.ndarray        # (C,) large member's minimum (0 for a plain configuration)
    correct: np.ndarray      # (C, n) correct under c
    escalated: np.ndarray    # (C, n) escalates under c (routed cascades only)

    @property
    def service(self) -> np.ndarray:
        """(C, n): least service time of a batch of c containing request i, s_c(i)."""
        return self.base[:, None] + self.extra[:, None] * self.escalated

    @property
    def eligible(self) -> np.ndarray:
        """(C, n): request i can count under c."""
        return self.correct & (self.service <= self.relative[None, :] + TOLERANCE_S)


def _configs(catalog: Catalog, task: str, config_ids: Iterable[str] | None) -> list[ServedConfig]:
    """The configurations a policy may run for ``task``; by default every one the catalog can serve."""
    profiles = catalog.profiles
    if task not in set(profiles["task"]):
        raise ClairvoyantError(f"task {task!r} has no profiled configurations; tasks: {sorted(set(profiles['task']))}")
    if config_ids is None:
        served = []
        for cid in profiles.index[profiles["task"] == task]:
            try:
                served.append(catalog.resolve(cid))
            except SimulationError:  # no samples or predictions: no simulation can run it either
                continue
        if not served:
            raise ClairvoyantError(f"task {task!r} has no configuration with latency samples and predictions")
        _check_members(catalog, served)
        return served
    ids = [config_ids] if isinstance(config_ids, str) else list(config_ids)
    if not ids:
        raise ClairvoyantError("config_ids is empty; pass None for every configuration of the task")
    served = []
    for cid in ids:
        if cid not in profiles.index:
            raise ClairvoyantError(f"config_ids: unknown configuration {cid!r}")
        if profiles.loc[cid, "task"] != task:
            raise ClairvoyantError(f"config_ids: {cid!r} belongs to task {profiles.loc[cid, 'task']!r}, not {task!r}")
        try:
            served.append(catalog.resolve(cid))
        except SimulationError as err:
            raise ClairvoyantError(f"config_ids: {cid!r} cannot be served: {err}") from err
    return served


def _check_members(catalog: Catalog, served: list[ServedConfig]) -> None:
    """Refuse a set holding a routed cascade without its members. Why: a cascade's early answer (the
    first stage's answer alone) is bounded through the small member's own row, and the shares of a
    cascade batch through both members' rows; without them the bound could fall below a policy that
    answers early."""
    ids = {s.config_id for s in served}
    for cascade in (s for s in served if s.routed):
        row = catalog.profiles.loc[cascade.config_id]
        for member in (row["cascade_small"], row["cascade_large"]):
            cid = config_id(row["task"], member, row["runtime"], row["precision"], int(row["batch_size"]),
                            row["device"])
            if cid not in ids:
                raise ClairvoyantError(f"routed cascade {cascade.config_id!r} needs its member {cid!r} in the "
                                       f"configuration set (the bound covers early answers through it)")


def _outcome(served: ServedConfig, example_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct, escalated) per example; an example without a prediction counts as wrong."""
    size = len(served.known)
    inside = example_ids < size
    safe = np.where(inside, example_ids, 0)
    correct, escalated = served.outcome(safe)
    known = inside & served.known[safe]
    if served.routed:
        known &= ~escalated | served.large_known[safe]
    return correct & known, escalated & inside


def _instance(trace: pd.DataFrame, catalog: Any, task: str, config_ids: Iterable[str] | None) -> _Instance:
    ordered = check_trace(trace, ClairvoyantError)  # the servers' own trace check
    catalog = prepare(catalog)
    configs = _configs(catalog, str(task), config_ids)
    arrival = ordered["arrival_s"].to_numpy(dtype=float)
    relative = ordered["deadline_ms"].to_numpy(dtype=float) / 1000.0
    shift = arrival[0]
    eids = ordered["example_id"].to_numpy(dtype=np.int64)
    outcomes = [_outcome(c, eids) for c in configs]
    rank = np.empty(len(ordered), dtype=np.int64)
    rank[np.argsort(ordered["request_id"].to_numpy(), kind="stable")] = np.arange(len(ordered))
    return _Instance(
        arrival=arrival - shift, deadline=arrival - shift + relative, relative=relative, rank=rank,
        batch=np.array([c.batch_size for c in configs], dtype=np.int64),
        base=np.array([c.samples_s.min() for c in configs], dtype=float),
        extra=np.array([c.large_samples_s.min() if c.routed else 0.0 for c in configs], dtype=float),
        correct=np.array([o[0] for o in outcomes], dtype=bool).reshape(len(configs), -1),
        escalated=np.array([o[1] & c.routed for o, c in zip(outcomes, configs)], dtype=bool).reshape(len(configs), -1),
    )


# ---------------------------------------------------------------- shares

def _weights(inst: _Instance) -> np.ndarray:
    """``w_i``: the least server time a counted request ``i`` is charged (inf: it never counts).

    Batch-mates are counted with the batch's minimum ``base`` time and with the tolerance on the
    generous side, so ``m_c(i)`` is never too small (see the module docstring).
    """
    eligible = inst.eligible
    service = inst.service
    weight = np.full(len(inst.arrival), np.inf)
    a, d = inst.arrival, inst.deadline
    for c in range(len(inst.batch)):
        members = np.flatnonzero(eligible[c])
        if not len(members):
            continue
        s = inst.base[c]
        arrivals = np.sort(a[members])
        deadlines = np.sort(d[members])
        # mates: eligible j with a_j <= d_i - s and d_j >= a_i + s; the second set's complement
        # (d_j < a_i + s) lies inside the first, so a difference of two counts gives it
        early = np.searchsorted(arrivals, d[members] - s + 3 * TOLERANCE_S, side="right")
        gone = np.searchsorted(deadlines, a[members] + s - TOLERANCE_S, side="left")
        mates = np.maximum(early - gone, 1)
        share = service[c, members] / np.minimum(inst.batch[c], mates)
        weight[members] = np.minimum(weight[members], share)
    return weight


# ---------------------------------------------------------------- the LP

def _families(a: np.ndarray, d: np.ndarray, relative: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Orderings with non-decreasing (alpha, beta) whose all-pairs windows are valid constraints.

    ``a`` is sorted; returns (order, alpha, beta) per family (see the module docstring).
    """
    m = len(a)
    first = (np.arange(m), a, np.maximum.accumulate(d))
    if m < 2 or np.all(np.diff(d) >= 0):
        return [first]                   # agreeable deadlines: this family is every window
    by_deadline = np.lexsort((a, d))
    second = (by_deadline, np.minimum.accumulate(a[by_deadline][::-1])[::-1], d[by_deadline])
    out = [first, second]
    classes = np.unique(relative)
    if len(classes) <= MAX_CLASS_FAMILIES:
        for value in classes:
            order = np.flatnonzero(relative == value)
            if len(order) > 1:
                out.append((order, a[order], np.maximum.accumulate(d[order])))
    return out


def _parts(alpha: np.ndarray, beta: np.ndarray, tol: float) -> np.ndarray:
    """Start flags of a family's parts: no interval crosses from one part to the next.

    A window spanning such a gap is implied by two windows that do not, so each part is solved
    (or its chain restarted) on its own, with its own time origin.
    """
    start = np.ones(len(alpha), dtype=bool)
    start[1:] = alpha[1:] >= beta[:-1] + tol
    return start


def _greedy(alpha: np.ndarray, beta: np.ndarray, w: np.ndarray, servers: int, tol: float) -> float:
    """Optimum of the all-pairs window LP of one family, without a solver.

    With ``y = w z`` the constraints ``y(i..j) <= k (beta_j - alpha_i)`` are Hall's condition of a
    transportation problem (requests to stretches of server time), so the feasible ``y`` (with
    ``y <= w``) form a polymatroid, on which the greedy algorithm maximises any non-negative linear
    objective: take requests in increasing ``w`` (objective ``1/w`` per unit of ``y``), each as far
    as the tightest window through it allows. That room is ``min_{i<=l} V_i - max_{j>=l} U_j`` with
    ``V_i = P_{i-1} - k alpha_i`` and ``U_j = P_j - k beta_j``; ``O(L)`` per request.
    """
    L = len(alpha)
    V = -servers * alpha
    U = -servers * (beta + tol)
    prefix = np.cumsum(w)
    if np.all(prefix + U <= np.minimum.accumulate(V + prefix - w)):
        return float(L)                  # every request fits: the usual case away from overload
    total = 0.0
    for l in np.argsort(w, kind="stable").tolist():
        room = V[:l + 1].min() - U[l:].max()
        if room <= 0:
            continue
        y = min(w[l], room)
        U[l:] += y
        V[l + 1:] += y
        total += y / w[l]
    return total


def _rows(L: int, parts: int) -> int:
    """Rows of one family's compact LP (see :func:`_highs`)."""
    return 4 * L - parts


def _highs(families: list, w: np.ndarray, servers: int, tol: float, integer: bool) -> float:
    """Solve the window LP (or MILP) of several families with HiGHS.

    Per family and part: ``P_j - P_{j-1} - w_j z_j = 0`` (prefix sums), ``P_j - M_j <= k beta_j``,
    ``M_j <= M_{j-1}`` and ``M_i - P_{i-1} <= -k alpha_i`` (times relative to the part's origin), so
    ``M_i`` is a running maximum and every pair ``i <= j`` of the part is constrained.
    """
    m = len(w)
    rows, cols, vals, upper = [], [], [], []
    n_vars, n_rows, n_eq = m, 0, 0

    def add(r: np.ndarray, c: np.ndarray, v: Any) -> None:
        rows.append(np.asarray(r, dtype=np.int64))
        cols.append(np.asarray(c, dtype=np.int64))
        vals.append(np.broadcast_to(np.asarray(v, dtype=float), np.shape(r)))

    eq_blocks = []
    for order, alpha, beta in families:
        L = len(order)
        start = _parts(alpha, beta, tol)
        origin = alpha[np.flatnonzero(start)][np.cumsum(start) - 1]
        inner = np.flatnonzero(~start)                 # j with a predecessor in the same part
        P, M = n_vars, n_vars + L
        n_vars += 2 * L
        j = np.arange(L)
        eq_blocks.append((n_rows, L))
        add(n_rows + j, P + j, 1.0)                    # P_j - P_{j-1} - w_j z_j = 0
        add(n_rows + inner, P + inner - 1, -1.0)
        add(n_rows + j, order, -w[order])
        upper.append(np.zeros(L))
        n_rows += L
        add(n_rows + j, P + j, 1.0)                    # P_j - M_j <= k (beta_j - origin)
        add(n_rows + j, M + j, -1.0)
        upper.append(servers * (beta + tol - origin))
        n_rows += L
        r = n_rows + np.arange(len(inner))             # M_j - M_{j-1} <= 0
        add(r, M + inner, 1.0)
        add(r, M + inner - 1, -1.0)
        upper.append(np.zeros(len(inner)))
        n_rows += len(inner)
        add(n_rows + j, M + j, 1.0)                    # M_i - P_{i-1} <= -k (alpha_i - origin)
        add(n_rows + inner, P + inner - 1, -1.0)
        upper.append(-servers * (alpha - origin))
        n_rows += L
    A = sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, n_vars))
    hi = np.concatenate(upper)
    eq = np.zeros(n_rows, dtype=bool)
    for first, L in eq_blocks:
        eq[first:first + L] = True
    cost = np.zeros(n_vars)
    cost[:m] = -1.0
    var_lo, var_hi = np.full(n_vars, -np.inf), np.full(n_vars, np.inf)
    var_lo[:m], var_hi[:m] = 0.0, 1.0
    if integer:
        integrality = np.zeros(n_vars)
        integrality[:m] = 1
        res = milp(cost, constraints=LinearConstraint(A, np.where(eq, hi, -np.inf), hi), integrality=integrality,
                   bounds=Bounds(var_lo, var_hi))
    else:
        res = linprog(cost, A_ub=A[~eq], b_ub=hi[~eq], A_eq=A[eq], b_eq=hi[eq],
                      bounds=np.column_stack([var_lo, var_hi]), method="highs")
    if res.status != 0 or res.x is None:
        raise ClairvoyantError(f"HiGHS did not solve the window LP: {res.message}")
    return float(-res.fun)


def _window_optimum(a: np.ndarray, d: np.ndarray, relative: np.ndarray, w: np.ndarray, servers: int,
                    integer: bool) -> tuple[float, int]:
    """Most requests (fractionally, or whole with ``integer``) the windows admit; (optimum, LP rows).

    Times are in milliseconds (well-scaled rows). One family (one deadline per trace) is solved
    part by part with :func:`_greedy`; several families, or ``integer``, with HiGHS.
    """
    a, d, w = a * 1000.0, d * 1000.0, w * 1000.0
    tol = TOLERANCE_S * 1000.0
    families = _families(a, d, relative)
    n_rows = sum(_rows(len(order), int(_parts(alpha, beta, tol).sum())) for order, alpha, beta in families)
    if len(families) > 1 or integer:
        return _highs(families, w, servers, tol, integer), n_rows
    order, alpha, beta = families[0]
    bounds = np.append(np.flatnonzero(_parts(alpha, beta, tol)), len(alpha))
    total = 0.0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        origin = alpha[lo]
        total += _greedy(alpha[lo:hi] - origin, beta[lo:hi] - origin, w[order[lo:hi]], servers, tol)
    return total, n_rows


# ---------------------------------------------------------------- the exact optimum

def _exact(inst: _Instance, servers: int) -> int:
    """Most requests any schedule counts with every service time at its minimum (``O(3^n)``)."""
    n = len(inst.arrival)
    if n > EXACT_LIMIT:
        raise ClairvoyantError(f"method='exact' enumerates O(3^n) subset pairs; {n} requests is more than "
                               f"{EXACT_LIMIT} (use method='lp')")
    full = 1 << n
    masks = np.arange(full, dtype=np.int64)
    bits = (masks[:, None] >> np.arange(n)) & 1 == 1                     # (2^n, n)
    size = bits.sum(axis=1)
    latest_arrival = np.where(bits, inst.arrival[None, :], -np.inf).max(axis=1)
    earliest_deadline = np.where(bits, inst.deadline[None, :], np.inf).min(axis=1)
    # fastest configuration that answers every member of T correctly: the batch's service time s(T)
    fastest = np.full(full, np.inf)
    for c in range(len(inst.batch)):
        ok = (size <= inst.batch[c]) & ~(bits & ~inst.correct[c][None, :]).any(axis=1)
        escalate = (bits & inst.escalated[c][None, :]).any(axis=1)
        fastest = np.minimum(fastest, np.where(ok, inst.base[c] + inst.extra[c] * escalate, np.inf))
    alone_ok = latest_arrival + fastest <= earliest_deadline + TOLERANCE_S
    la, ed, fs, ok_list = latest_arrival.tolist(), earliest_deadline.tolist(), fastest.tolist(), alone_ok.tolist()
    finish = [math.inf] * full
    finish[0] = -math.inf
    for S in range(1, full):
        best = math.inf
        T = S
        while T:
            if ok_list[T]:
                prev = finish[S ^ T]
                if prev < math.inf:
                    start = prev if prev > la[T] else la[T]
                    end = start + fs[T]
                    if end <= ed[T] + TOLERANCE_S and end < best:
                        best = end
            T = (T - 1) & S
        finish[S] = best
    feasible = np.array([f < math.inf for f in finish])
    cover = feasible.copy()
    for _ in range(servers - 1):  # S splits into one more one-server set (feasible sets are closed under subsets)
        nxt = cover.copy()
        fl, cl = feasible.tolist(), cover.tolist()
        for S in np.flatnonzero(~cover).tolist():
            T = S
            while T:
                if fl[T] and cl[S ^ T]:
                    nxt[S] = True
                    break
                T = (T - 1) & S
        cover = nxt
    return int(size[cover].max())


# ---------------------------------------------------------------- public API

def clairvoyant_bound(trace: pd.DataFrame, catalog: Any, task: str, servers: int = 1,
                      config_ids: Iterable[str] | None = None,
                      method: Literal["auto", "exact", "lp", "milp"] = "auto") -> ClairvoyantBound:
    """Upper bound on the effective accuracy of every policy the simulator can run on ``trace``.

    ``catalog``: a :class:`~planner.serving.simulator.Catalog` (use the one the runs are simulated
    with) or a bundle. ``config_ids``: the configurations a policy may pick (default: every
    configuration of ``task`` the catalog can serve, i.e. with latency samples and predictions).
    ``method="auto"`` is exact for at most :data:`EXACT_MAX_REQUESTS` requests, the window LP
    otherwise. See the module docstring for why the number is a bound.
    """
    if method not in METHODS:
        raise ClairvoyantError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(servers, bool) or not isinstance(servers, (int, np.integer)) or servers < 1:
        raise ClairvoyantError(f"servers must be an integer >= 1, got {servers!r}")
    started = time.perf_counter()
    inst = _instance(trace, catalog, task, config_ids)
    n = len(inst.arrival)
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_REQUESTS else "lp"
    eligible_any = inst.eligible.any(axis=0)
    upper = np.zeros(n)
    upper[inst.rank] = eligible_any
    n_rows = 0
    if method == "exact":
        count = float(_exact(inst, int(servers)))
    else:
        w = _weights(inst)
        keep = np.flatnonzero(np.isfinite(w))
        if len(keep) == 0:
            count = 0.0
        else:
            count, n_rows = _window_optimum(inst.arrival[keep], inst.deadline[keep], inst.relative[keep], w[keep],
                                            int(servers), integer=method == "milp")
    # a run counts a whole number of requests: round down, after a margin for solver tolerances
    whole = math.floor(count + SOLVER_MARGIN * max(1.0, count))
    trivial = float(upper.mean())
    value = min(whole / n, trivial)
    return ClairvoyantBound(float(value), n, method, n_rows, time.perf_counter() - started, trivial, upper,
                            float(count))


# ---------------------------------------------------------------- in expectation: the chance of a fast draw

def _draw_chances(served: ServedConfig, deadlines_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per deadline: the chance that the first draw fits (dispatch overhead included) and, for a routed
    cascade, that both draws do (None otherwise), over the draws the simulator makes (uniform over the
    samples). The one place the bounds in expectation turn samples into chances."""
    limit = np.asarray(deadlines_ms, dtype=float) / 1000.0 + TOLERANCE_S
    first = np.sort(served.samples_s)
    p_first = np.searchsorted(first, limit, side="right") / len(first)
    if not served.routed:
        return p_first, None
    second = np.sort(served.large_samples_s)
    p_both = np.searchsorted(second, limit[:, None] - first[None, :], side="right").mean(axis=1) / len(second)
    return p_first, p_both


def _early_answer_right(served: ServedConfig, ids: np.ndarray) -> np.ndarray:
    """Per example: whether a routed cascade's first stage answers it correctly (its early answer)."""
    inside = ids < len(served.known)
    safe = np.where(inside, ids, 0)
    return inside & served.known[safe] & served.correct[safe]


def on_time_chance(served: ServedConfig, example_ids: np.ndarray, deadline_ms: float) -> np.ndarray:
    """Per example id: the chance that ``served`` answers it correctly within ``deadline_ms`` of its
    arrival when its batch starts that very moment, over the service draws the simulator makes
    (uniform over the samples, dispatch overhead included; a routed cascade's second draw only for an
    escalating example). An escalating example may also count on the first stage's early answer, so
    it takes the better of that and the second stage's answer after both draws."""
    ids = np.asarray(example_ids, dtype=np.int64)
    firsts, boths = _draw_chances(served, np.array([float(deadline_ms)]))
    p_first = float(firsts[0])
    answer, escalated = _outcome(served, ids)  # the answering member's correctness
    if boths is None:
        return answer * p_first
    p_both = float(boths[0])
    small_right = _early_answer_right(served, ids)
    return np.where(escalated, np.maximum(small_right * p_first, answer * p_both), answer * p_first)


def mean_on_time_chance(served: ServedConfig, example_ids: np.ndarray, deadlines_ms: np.ndarray) -> np.ndarray:
    """The pool's mean :func:`on_time_chance` at each of ``deadlines_ms`` at once (the work bound needs
    it at hundreds of remaining times): examples grouped by which answers are right, so the cost does
    not grow with the pool times the deadlines."""
    ids = np.asarray(example_ids, dtype=np.int64)
    p_first, p_both = _draw_chances(served, deadlines_ms)
    answer, escalated = _outcome(served, ids)
    if p_both is None:
        return float(np.mean(answer)) * p_first
    small_right = _early_answer_right(served, ids)
    n = len(ids)
    stays = float(np.sum(~escalated & answer)) / n
    both = float(np.sum(escalated & small_right & answer)) / n
    early_only = float(np.sum(escalated & small_right & ~answer)) / n
    late_only = float(np.sum(escalated & ~small_right & answer)) / n
    return (stays + early_only) * p_first + both * np.maximum(p_first, p_both) + late_only * p_both


#: a trace's relative deadline for the bounds in expectation: one value, or a mix of deadline classes as
#: ``(share, deadline_ms)`` pairs whose shares sum to 1, each request drawing its class independently
#: of the arrivals and the examples (as :func:`planner.workloads.generators.spec_trace` draws them)
DeadlineMix = float | Sequence[tuple[float, float]]


def _deadline_mix(deadline_ms: DeadlineMix) -> tuple[np.ndarray, np.ndarray]:
    """(shares, deadlines in ms) of a :data:`DeadlineMix`, checked."""
    if isinstance(deadline_ms, Sequence) and not isinstance(deadline_ms, str):
        pairs = list(deadline_ms)
        if not pairs or any(not isinstance(p, Sequence) or len(p) != 2 for p in pairs):
            raise ClairvoyantError(f"a deadline mix must be a non-empty list of (share, deadline_ms) pairs, "
                                   f"got {deadline_ms!r}")
        try:
            shares = np.array([float(p[0]) for p in pairs])
        except (TypeError, ValueError) as exc:
            raise ClairvoyantError(f"a deadline mix's shares must be numbers, got {deadline_ms!r}") from exc
        if not np.isfinite(shares).all() or (shares <= 0).any() or abs(shares.sum() - 1.0) > 1e-9:
            raise ClairvoyantError(f"a deadline mix's shares must be positive and sum to 1, got {shares.tolist()}")
        deadlines = np.array([check_deadline(p[1], error=ClairvoyantError) for p in pairs])
        return shares, deadlines
    return np.ones(1), np.array([check_deadline(deadline_ms, error=ClairvoyantError)])


def expectation_inputs(catalog: Any, example_ids: np.ndarray) -> tuple[Catalog, np.ndarray]:
    """The checks every bound in expectation makes (here and in :mod:`planner.evaluation.work_bound`):
    a catalog with random draws, and a pool of example ids."""
    catalog = prepare(catalog)
    if catalog.ordered_samples:
        raise ClairvoyantError("a bound in expectation needs random service draws; this catalog serves its samples "
                               "in order")
    ids = np.asarray(example_ids)
    if ids.ndim != 1 or len(ids) == 0 or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
        raise ClairvoyantError("example_ids must be a non-empty 1-D array of integer ids >= 0")
    return catalog, ids


def chance_bound(catalog: Any, task: str, example_ids: np.ndarray, deadline_ms: DeadlineMix,
                 config_ids: Iterable[str] | None = None, sees_example: bool = True) -> float:
    """Upper bound on the *expected* effective accuracy, over the service draws, of any policy that
    does not foresee its draws, on a trace whose requests have relative deadline ``deadline_ms`` (or
    a mix of deadline classes, :data:`DeadlineMix`: the classes' bounds weighted by their shares) and
    examples drawn uniformly from ``example_ids``: the mean over those examples of the best
    :func:`on_time_chance` of any configuration.

    Why it holds: a request counts only if the batch that serves it finishes in time; its
    configuration and start (no earlier than the arrival) are fixed before the draw, the draw is
    independent of them, and a later start only lowers the chance. Why beside
    :func:`clairvoyant_bound`: that bound must hold for every run, so it charges every batch its
    fastest sample; at a deadline near the typical service time it credits requests that only a rare
    fast draw would serve in time. The lower of the two bounds the expected effective accuracy of
    every online method; neither accounts for the other's reason, so each can be the tighter one.

    ``sees_example=False`` bounds only policies whose choice of configuration and start for a request
    does not depend on that request's example (a policy that sees the queue and the deadlines, not the
    inputs: :class:`planner.plan.policies.PolicyContext` carries no example), in expectation also over
    the examples, drawn independently and uniformly from ``example_ids`` as the trace generators draw
    them: the best configuration's *mean* chance instead of the mean of the per-example best. The
    configuration and start are then independent of the example, so a request counts with at most
    that configuration's chance averaged over the pool. A cascade still routes by its own first
    stage's confidence, and its early answer is still credited per example (the better of the two
    ways, whichever a serving rule takes after the first stage). Never above the default bound; the
    difference is what the default credits routing by correctness with.
    Not for a catalog that serves its samples in order (no random draws).
    """
    if not isinstance(sees_example, (bool, np.bool_)):
        raise ClairvoyantError(f"sees_example must be True or False, got {sees_example!r}")
    bounds = expected_bounds(catalog, task, example_ids, deadline_ms, config_ids=config_ids)
    return bounds.chance if sees_example else bounds.blind


def least_late_chances(served: ServedConfig, deadlines_ms: np.ndarray) -> np.ndarray:
    """The least chance, per deadline, that ``served`` answers a request after that long from its
    arrival: the batch starts that very moment and the first draw overruns (a routed cascade's
    escalated request can still go out on time as the first stage's early answer, so only the first
    draw is charged). 0 for a configuration whose running call the server can stop at the deadline
    (``served.cancellable``): a policy may have it stopped, and a stopped call answers nobody late.
    The one place the late-limited bounds take a late chance from."""
    if served.cancellable:
        return np.zeros(len(np.atleast_1d(deadlines_ms)))
    return 1.0 - _draw_chances(served, np.asarray(deadlines_ms, dtype=float))[0]


def late_chance(served: ServedConfig, deadline_ms: float) -> float:
    """:func:`least_late_chances` at one deadline."""
    return float(least_late_chances(served, np.array([deadline_ms]))[0])


def late_limited_bound(catalog: Any, task: str, example_ids: np.ndarray, deadline_ms: DeadlineMix, late_share: float,
                       config_ids: Iterable[str] | None = None) -> float:
    """Upper bound on the expected effective accuracy of a policy that chooses without seeing a
    request's example (as :func:`chance_bound` with ``sees_example=False``) and answers at most
    ``late_share`` of the requests late, in expectation: the linear program over the shares ``y_kc``
    of requests of deadline class ``k`` (share ``p_k``; one class for a single deadline) served by
    configuration ``c`` (the rest shed),

        maximise sum y_kc v_kc  s.t.  sum y_kc l_kc <= late_share,  sum_c y_kc <= p_k,  y >= 0,

    with ``v_kc`` the configuration's mean :func:`on_time_chance` and ``l_kc`` its :func:`late_chance`
    at the class's deadline, both for a batch that starts at the arrival (solved by HiGHS). Why it
    holds: a later start only lowers a request's chance of counting and only raises its chance of
    being late, and a blind policy's choice is independent of the example (it may depend on the
    class, which it sees), so its expected counted and late shares are sums of ``y_kc`` times at most
    ``v_kc`` and at least ``l_kc`` (0 where the server can stop the call at the deadline:
    :func:`least_late_chances`). Where the fastest configuration's draws often overrun the deadline,
    a policy held to few late answers can serve only a few requests; a fixed configuration that
    serves all of them gets more on time by answering most of the rest late.
    """
    return expected_bounds(catalog, task, example_ids, deadline_ms, [late_share], config_ids).late_limited[late_share]


class ExpectedBounds(NamedTuple):
    """The bounds in expectation of one trace shape (:func:`expected_bounds`)."""

    chance: float                     # :func:`chance_bound`
    blind: float                      # :func:`chance_bound` with ``sees_example=False``
    late_limited: dict[float, float]  # :func:`late_limited_bound` per late share asked for


def expected_bounds(catalog: Any, task: str, example_ids: np.ndarray, deadline_ms: DeadlineMix,
                    late_shares: Iterable[float] = (), config_ids: Iterable[str] | None = None) -> ExpectedBounds:
    """:func:`chance_bound` (both forms) and :func:`late_limited_bound` at each of ``late_shares``, from
    one pass over the configurations' chances (the part that costs: every configuration on every
    example at every class deadline), so an analysis that wants all of them pays it once."""
    catalog, ids = expectation_inputs(catalog, example_ids)
    shares, deadlines = _deadline_mix(deadline_ms)
    late_shares = list(late_shares)
    for late_share in late_shares:
        if isinstance(late_share, (bool, np.bool_)) or not isinstance(late_share, (int, float, np.floating)) \
                or not 0.0 <= float(late_share) <= 1.0:
            raise ClairvoyantError(f"late_share must be a share between 0 and 1, got {late_share!r}")
    served = _configs(catalog, str(task), config_ids)
    chance = blind = 0.0
    value = np.empty((len(deadlines), len(served)))  # v_kc: the mean chance over the examples
    late = np.empty((len(deadlines), len(served)))   # l_kc
    for k, (share, deadline) in enumerate(zip(shares, deadlines)):
        per_example = np.array([on_time_chance(c, ids, float(deadline)) for c in served])
        value[k] = per_example.mean(axis=1)
        late[k] = [late_chance(c, float(deadline)) for c in served]
        chance += share * float(per_example.max(axis=0).mean())
        blind += share * float(value[k].max())
    per_class = np.kron(np.eye(len(shares)), np.ones(len(served)))  # row k sums class k's variables
    limited = {}
    for late_share in late_shares:
        result = linprog(-value.ravel(), A_ub=np.vstack([late.ravel(), per_class]), b_ub=[float(late_share), *shares],
                         bounds=(0.0, None), method="highs")
        if result.status != 0:  # y = 0 is always feasible and the optimum is bounded: never expected
            raise ClairvoyantError(f"the late-limited bound's linear program failed: {result.message}")
        limited[late_share] = float(max(-result.fun, 0.0))
    return ExpectedBounds(float(chance), float(blind), limited)
