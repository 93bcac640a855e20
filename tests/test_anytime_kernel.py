"""The compiled valuation of the anytime policy picks exactly what a plain form of its rule picks.

The reference below is a plain numpy form of the rule (per candidate: fill the head batch as the
serving rule does, shedding the positions below the candidate's cut-off on the way so that those
behind move up; compare finish times read at each position's place with the slacks; the expected
arrivals over the deadline mix; the value; ``np.argmax``), with the machine scale and the arrival
spacing passed as Python floats as the policy passes them, and the expected arrivals' times given
as a table (evenly spaced, or spread at the quantiles of a Poisson process's arrival times). Equal
choices and equal values, bit for bit, on random inputs that include exact ties, no cut-off, the
switching cost, both arrival tables, both valuations and batch sizes of either integer width.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.plan.anytime import expected_arrival_times
from planner.plan.anytime_kernel import best_candidate


def reference(finish, extra, cut, batch, slack, machine: float, spacing: float, n_pad: int, pad_deadline,
              pad_arrival, accuracy, drain: int, continuation: bool, skip_q: int = -1) -> tuple[int, float]:
    n, m = finish.shape[1], len(slack)
    scaled = slack.astype(np.float32) * np.float32(machine)
    values = np.empty(n)
    for c in range(n):
        if skip_q < 0:  # in place: the head batch is the first positions, a shed one counts nothing there
            n_head = min(int(batch[c]), m)
            table = finish[min(m, len(finish) - 1), c] + extra[c][:, None]               # (Q, L)
            reach = np.where((np.arange(m) < n_head) & ~(cut[c] <= scaled), np.float32(-np.inf), scaled)
            on_time = table[:, :m] <= reach[None, :]
            kept, left = list(range(m)), m
        else:
            kept, shed, n_head = [], 0, 0
            for p in range(m):  # the serving rule's fill: below the cut-off while the batch fills is shed
                if n_head < batch[c] and not cut[c] <= scaled[p]:
                    shed += 1
                    continue
                n_head += n_head < batch[c]
                kept.append(p)
            table = finish[min(m - shed, len(finish) - 1), c] + extra[c][:, None]        # (Q, L)
            behind = []  # behind the head batch, one too late at skip_q when its turn comes is shed then
            for p in kept[n_head:]:
                if table[skip_q, n_head + len(behind)] <= scaled[p]:
                    behind.append(p)
            kept = kept[:n_head] + behind
            left = len(kept)
            on_time = table[:, :left] <= scaled[kept][None, :]
        count = np.float32(on_time.sum())
        if n_pad:
            arrival = np.float32(spacing) * pad_arrival[:, :n_pad]                       # (A, n_pad)
            wait = table[:, None, left:left + n_pad] - arrival[None]                     # (Q, A, n_pad)
            in_time = wait[:, :, None, :] <= (pad_deadline * np.float32(machine))[None, None, :, None]
            count = count + np.float32(in_time.sum()) / np.float32(len(pad_deadline) * len(pad_arrival))
        if continuation:
            in_head = np.float32(on_time[:, :n_head].sum())
            values[c] = accuracy[drain] * np.float64(count) + (accuracy[c] - accuracy[drain]) * np.float64(in_head)
        else:
            values[c] = accuracy[c] * np.float64(count)
    best = int(np.argmax(values))
    return best, float(values[best])


def random_case(rng: np.random.Generator, ties: bool):
    n, q, lookahead = int(rng.integers(1, 40)), 6, 64
    batch = rng.choice([1, 4, 8], n).astype(np.int32 if rng.random() < 0.5 else np.int64)  # the policy's, and narrower
    x = np.sort(rng.lognormal(0.5, 0.6, (n, q)), axis=1)
    p = np.arange(lookahead)
    item = rng.uniform(0.1, 1.0)
    tables = 1 if rng.random() < 0.3 else 9          # one table (rounds), or one per requests left (continuation)
    left = np.minimum(np.arange(tables), 8) if tables > 1 else np.array([8])
    head_n = np.minimum(batch[None, :], left[:, None])                                   # (H, C)
    finish = np.where(p[None, None, None, :] < head_n[:, :, None, None], x[None, :, :, None],
                      x[None, :, :, None] / 2 + (p[None, None, None, :] - head_n[:, :, None, None] + 1) * item)
    if ties:  # coarse values and repeated candidates: equal counts and equal values are common
        finish = np.round(finish * 2) / 2
        finish[:, 1::2] = finish[:, ::2][:, : n // 2]
    finish = np.ascontiguousarray(finish, dtype=np.float32)
    extra = (rng.uniform(0, 1, (n, 1)) * x * (rng.random() < 0.5)).astype(np.float32)
    cut = rng.uniform(0.0, 4.0, n).astype(np.float32) if rng.random() < 0.7 \
        else np.full(n, -np.inf, dtype=np.float32)   # no cut-off
    m = int(rng.integers(1, lookahead + 1))
    slack = rng.uniform(-2.0, 20.0, m)
    if ties:
        slack = np.round(slack * 2) / 2
    if rng.random() < 0.5:
        slack = np.sort(slack)
    accuracy = np.round(rng.uniform(0.5, 0.95, n), 2 if ties else 6)
    if ties:
        accuracy[1::2] = accuracy[::2][: n // 2]
    machine = float(np.exp(rng.normal(0.0, 0.3)))
    n_pad = int(min(lookahead - m, 16)) if rng.random() < 0.7 else 0
    spacing = float(rng.uniform(0.05, 3.0))
    pad_deadline = np.sort(rng.uniform(1.0, 15.0, 4)).astype(np.float32)
    drain = int(rng.integers(0, n))
    pad_arrival = expected_arrival_times(16, spread=bool(rng.random() < 0.5))
    slack = slack if rng.random() < 0.5 else slack.astype(np.float32)  # the serving rule's float64, or float32
    return (finish, extra, cut, batch, slack, machine, spacing, n_pad, pad_deadline, pad_arrival,
            accuracy, drain)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("continuation", [True, False])
@pytest.mark.parametrize("skip_q", [-1, 2])
def test_the_kernel_chooses_and_values_exactly_as_the_numpy_form(ties, continuation, skip_q):
    rng = np.random.default_rng(7 + ties + 2 * continuation + 4 * (skip_q >= 0))
    for _ in range(300):
        (finish, extra, cut, batch, slack, machine, spacing, n_pad, pad_deadline, pad_arrival, accuracy,
         drain) = random_case(rng, ties)
        expected = reference(finish, extra, cut, batch, slack, machine, spacing, n_pad, pad_deadline, pad_arrival,
                             accuracy, drain, continuation, skip_q)
        got = best_candidate(finish, extra, cut, batch, slack, machine, spacing, n_pad,  # Python floats, as the policy
                             pad_deadline if n_pad else np.zeros(0, np.float32), pad_arrival, accuracy, drain,
                             continuation, skip_q)
        assert (int(got[0]), float(got[1])) == expected


def test_a_head_member_below_the_cut_off_counts_nothing_for_that_candidate():
    # two candidates, equally fast; the more accurate one's cut-off sheds the lone waiting request
    finish = np.full((1, 2, 6, 4), 1.0, dtype=np.float32)
    cut = np.array([9.0, 0.5], dtype=np.float32)
    slack = np.array([5.0], dtype=np.float32)
    args = (np.zeros((2, 6), np.float32), cut, np.array([4, 4]), slack, np.float32(1.0), np.float32(0.0), 0,
            np.zeros(0, np.float32), expected_arrival_times(16, spread=True), np.array([0.9, 0.8]), 1, True)
    best, value = best_candidate(finish, *args)
    assert best == 1 and value == pytest.approx(0.8 * 6)


@pytest.mark.parametrize("skip_q", [-1, 2])
def test_a_head_member_the_cut_off_sheds_takes_no_place_in_the_batch_when_shedding_frees_time(skip_q):
    # one one-request candidate (done at 1, or 2 for the request behind); the oldest waiting request
    # has too little slack for its cut-off, the next one enough to be served first in its place
    finish = np.empty((2, 1, 6, 3), dtype=np.float32)  # per requests left: 0 (all tail) or 1+ (head, tail)
    finish[0, 0, :, :] = [2.0, 3.0, 4.0]
    finish[1, 0, :, :] = [1.0, 2.0, 3.0]
    args = (np.zeros((1, 6), np.float32), np.array([1.0], np.float32), np.array([1]),
            np.array([0.5, 1.5], np.float32), 1.0, 0.0, 0, np.zeros(0, np.float32),
            expected_arrival_times(16, spread=True), np.array([0.9]), 0, True, skip_q)
    best, value = best_candidate(finish, *args)
    # served in the shed one's place, not after it (in place, it would finish at 2 > 1.5)
    assert best == 0 and value == pytest.approx(0.9 * 6 if skip_q >= 0 else 0.0)


def test_an_arrival_likely_during_a_slow_head_batch_counts_against_it_only_when_spread():
    # one relaxed request waits; the slow accurate candidate finishes it at 30, the fast one at 3, and
    # the next arrival (one every 42 on average, 17.5 of slack) is served 3 after the head batch.
    # Evenly spaced it comes at 42, after either batch; as a Poisson arrival it comes before 30 often
    # enough that the slow choice loses it: the fast candidate is the better bet.
    finish = np.empty((1, 2, 6, 2), dtype=np.float32)
    finish[0, 0, :, 0], finish[0, 0, :, 1] = 30.0, 33.0
    finish[0, 1, :, 0], finish[0, 1, :, 1] = 3.0, 6.0
    args = (np.zeros((2, 6), np.float32), np.full(2, -np.inf, np.float32), np.array([1, 1]), np.array([100.0], np.float32),
            np.float32(1.0), np.float32(42.0), 1, np.full(4, 17.5, np.float32))
    accuracy, drain = np.array([0.94, 0.90]), 1
    spaced = best_candidate(finish, *args, expected_arrival_times(16, spread=False), accuracy, drain, True)
    spread = best_candidate(finish, *args, expected_arrival_times(16, spread=True), accuracy, drain, True)
    assert spaced[0] == 0 and spread[0] == 1
    # Exp(1) quantiles at 1/8 .. 7/8 (0.13, 0.47, 0.98, 2.08 spacings): the first is before 30 - 17.5 + 3
    assert spread[1] == pytest.approx(6 * (0.90 + 0.90))
    assert spaced[1] == pytest.approx(6 * (0.94 + 0.90))
