"""The anytime policy's per-decision valuation as one compiled loop (numba), instead of a chain of
numpy passes over (candidates x quantiles x window) arrays.

Why: at 45 front candidates, 6 quantiles and 64 waiting requests each numpy pass (the cut-off
floor, the comparison, the conversion, the row sums) streams 17,280 elements and allocates its
result, and the decision made about a dozen such calls; their per-call overhead alone was most of a
decision at a short queue. One loop reads each finish time once. It does the float32 operations of
the plain numpy form of the rule (an add of the switch cost, a comparison with the slack), counts
exactly, and values the counts in float64 in the same order, so the choices are the same bit for
bit (``tests/test_anytime_kernel.py`` checks it against that form on random inputs).

Compiled at first use and cached on disk (``cache=True``): a fresh process pays the compilation
(seconds) once per machine and source version, never per decision.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def best_candidate(finish: np.ndarray, extra: np.ndarray, cut: np.ndarray, batch: np.ndarray,
                   slack: np.ndarray, machine: float, spacing: float, n_pad: int,
                   pad_deadline: np.ndarray, pad_arrival: np.ndarray, accuracy: np.ndarray, drain: int,
                   continuation: bool, skip_q: int = -1) -> tuple[int, float]:
    """The candidate (second axis of ``finish``) of most expected on-time correct answers, and that value.

    ``finish`` (H, C, Q, L) float32: finish time of the ``i``-th request candidate ``c`` serves (after
    those it sheds) at latency quantile ``q``, at the profiles' scale, when ``w`` requests are left to
    serve, read at ``[min(w, H - 1), c, q, i]`` (the head batch ends where ``w`` does; one table,
    ``H == 1``, when it does not depend on ``w``); ``extra`` (C, Q) float32, added to every finish time
    (the learned switching cost, or zeros); ``slack`` (m,) float32 or float64 (rounded to float32
    first), the waiting requests' slacks in service order, ``m <= L``, compared after multiplying by
    ``machine`` (the profiles' scale over the machine's); ``cut`` (C,) float32, each candidate's member
    cut-off (``-inf`` for none); ``batch`` (C,) integer, its batch size.

    A head-batch member whose ``slack * machine`` is below ``cut[c]`` is shed: it counts nothing (see
    ``skip_q`` for where it stands). A position in its place ``i`` counts at quantile ``q`` when
    ``finish + extra <= slack * machine``. The expected arrivals are in places ``w + j``,
    ``j < n_pad``; ``pad_arrival`` (A, >= n_pad) float32 holds A equally likely arrival times of each,
    in units of ``spacing`` (one row ``j + 1``: evenly spaced; rows of quantiles: a spread, see
    :mod:`planner.plan.anytime`). Each (level, a, q, j) with ``finish + extra - spacing *
    pad_arrival[a, j] <= pad_deadline[level] * machine`` counts ``1 / (levels * A)``.

    Value: ``accuracy[drain] * count + (accuracy[c] - accuracy[drain]) * head_count`` with
    ``continuation`` (the head batch at the candidate's accuracy, the rest at the drain's), else
    ``accuracy[c] * count``. Ties go to the first candidate, as ``np.argmax``.

    ``skip_q >= 0`` values shedding as taking no server time. The head batch is filled as the serving
    rule fills it (:func:`planner.serving.batching.pick_batch`): positions are taken in order until
    ``batch[c]`` members are in, and one shed on the way takes no place, so those behind it move up
    (``w = m -`` the number shed); behind the head batch a position whose finish time at quantile ``skip_q`` in its
    place is after its slack is valued as shed when its turn comes: it counts nothing and takes no
    place (the ones behind it and the expected arrivals move up). ``-1``: the head batch is the first
    ``batch[c]`` positions, and a shed or late one holds its place (``w = m``), the rule before
    2026-12-07, kept for the study that compares them (benchmarks/anytime_variants.py) and the results
    made with it.

    Why the shed take no place: see ``shed_frees_time`` in :mod:`planner.plan.anytime` (item 3).

    Speed (why the loops look as they do): the requests a candidate keeps are first packed into its
    places (their reaches, contiguous), so the comparisons read both arrays in order; a member shed
    in place is folded into the comparison (its reach is -inf) rather than masked; counts are 32-bit
    and accumulated per place (per (a, j) for the expected arrivals, flattened into one loop) across
    the quantiles, with no reduction inside the inner loops, so they vectorise; the head count is
    read off the per-place counts once per candidate (the members are the first places).
    """
    n_tables, n_cand, n_q = finish.shape[0], finish.shape[1], finish.shape[2]
    m, n_levels, n_spread = slack.shape[0], pad_deadline.shape[0], pad_arrival.shape[0]
    machine32, spacing32 = np.float32(machine), np.float32(spacing)  # rounded here as np.float32() would outside
    reach = slack.astype(np.float32) * machine32  # float64 slacks (the serving rule's) round as numpy rounds them
    arrival = spacing32 * pad_arrival[:, :n_pad]
    in_time = pad_deadline * machine32
    never = np.float32(-np.inf)
    kept = np.empty(m, dtype=np.float32)         # per candidate: the reach of the request in each place
    on_time = np.empty(m, dtype=np.int32)        # per candidate and place: quantiles on time
    served = np.empty(n_pad, dtype=np.float32)   # per (candidate, quantile): the expected arrivals' finish
    wait = np.empty(n_spread * n_pad, dtype=np.float32)  # ... less each arrival time (a, j), flat: one long loop
    pad_ok = np.empty(n_spread * n_pad, dtype=np.int32)  # per (a, j): (quantile, level) pairs on time
    best, best_value = 0, -np.inf
    for c in range(n_cand):
        cut_c = cut[c]
        size = batch[c]
        if skip_q < 0:  # in place: the head batch is the first positions, a shed one holds its place (-inf)
            for p in range(m):
                kept[p] = reach[p] if (p >= size) or (cut_c <= reach[p]) else never
            places, members, left = m, min(size, m), m
            table = finish[min(left, n_tables - 1), c]
        else:  # the serving rule's fill: one below the cut-off while the batch fills is shed and takes no place
            places, members = 0, 0
            for p in range(m):
                if members < size:
                    if cut_c <= reach[p]:
                        kept[places] = reach[p]
                        places += 1
                        members += 1
                else:
                    kept[places] = reach[p]
                    places += 1
            table = finish[min(places, n_tables - 1), c]
            # behind the head batch, one too late at quantile skip_q when its turn comes is shed then: it
            # counts nothing and takes no server time (the places behind it move up)
            row, e, i = table[skip_q], extra[c, skip_q], members
            for k in range(members, places):
                if row[i] + e <= kept[k]:
                    kept[i] = kept[k]
                    i += 1
            places = left = i
        for i in range(places):
            on_time[i] = 0
        for k in range(n_spread * n_pad):
            pad_ok[k] = 0
        for q in range(n_q):
            e = extra[c, q]
            row = table[q]
            for i in range(places):  # contiguous: vectorises
                on_time[i] += np.int32(row[i] + e <= kept[i])
            if n_pad > 0:  # the same float32 add, subtract and compare per (a, level, j), staged over (a, j)
                for j in range(n_pad):
                    served[j] = row[left + j] + e
                for a in range(n_spread):
                    for j in range(n_pad):
                        wait[a * n_pad + j] = served[j] - arrival[a, j]
                for level in range(n_levels):
                    limit = in_time[level]
                    for k in range(n_spread * n_pad):
                        pad_ok[k] += np.int32(wait[k] <= limit)
        n_all, n_head, n_pad_ok = 0, 0, 0
        for i in range(places):
            n_all += on_time[i]
        for i in range(members):
            n_head += on_time[i]
        for k in range(n_spread * n_pad):
            n_pad_ok += pad_ok[k]
        count = np.float32(n_all)
        if n_pad_ok > 0:
            count += np.float32(n_pad_ok) / np.float32(n_levels * n_spread)
        if continuation:
            value = accuracy[drain] * np.float64(count) + (accuracy[c] - accuracy[drain]) * np.float64(n_head)
        else:
            value = accuracy[c] * np.float64(count)
        if value > best_value:
            best, best_value = c, value
    return best, best_value
