"""The compiled valuation of the anytime policy picks exactly what the numpy form it replaced picks.

The reference below is the numpy form the policy used before the kernel (a floor under the head
batch's finish times, one comparison over candidates x quantiles x window, counts, the expected
arrivals over the deadline mix, the value, ``np.argmax``), with the machine scale and the arrival
spacing passed as Python floats as the policy passed them, and the expected arrivals' times given as
a table (evenly spaced, or spread at the quantiles of a Poisson process's arrival times). Equal
choices and equal values, bit for bit, on random inputs that include exact ties, no cut-off, the
switching cost, both arrival tables, both valuations and head masks of either integer width.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.plan.anytime import expected_arrival_times
from planner.plan.anytime_kernel import best_candidate


def reference(finish, extra, cut, head, slack, machine: float, spacing: float, n_pad: int, pad_deadline,
              pad_arrival, accuracy, drain: int, continuation: bool) -> tuple[int, float]:
    n = len(finish)
    m = len(slack)
    floor = np.where(head == 1, cut[:, None], -np.inf).astype(np.float32)  # the policy's former floor
    scaled = slack.astype(np.float32) * np.float32(machine)
    served = finish[:, :, : m + n_pad] + extra[:, :, None]
    on_time = np.maximum(served[:, :, :m], floor[:, None, :m]) <= scaled
    counts = on_time.reshape(n, -1).sum(axis=1).astype(np.float32)
    if n_pad:
        arrival = np.float32(spacing) * pad_arrival[:, :n_pad]                         # (A, n_pad)
        wait = served[:, :, None, m : m + n_pad] - arrival[None, None]                   # (n, Q, A, n_pad)
        in_time = wait[:, :, :, None, :] <= (pad_deadline * np.float32(machine))[None, None, None, :, None]
        share = np.float32(len(pad_deadline) * len(pad_arrival))
        counts = counts + in_time.reshape(n, -1).sum(axis=1).astype(np.float32) / share
    if continuation:
        in_head = (on_time & (head[:, None, :m] == 1)).reshape(n, -1).sum(axis=1).astype(np.float32)
        value = accuracy[drain] * counts + (accuracy - accuracy[drain]) * in_head
    else:
        value = accuracy * counts
    best = int(np.argmax(value))
    return best, float(value[best])


def random_case(rng: np.random.Generator, ties: bool):
    n, q, lookahead = int(rng.integers(1, 40)), 6, 64
    batch = rng.choice([1, 4, 8], n)
    x = np.sort(rng.lognormal(0.5, 0.6, (n, q)), axis=1)
    p = np.arange(lookahead)
    finish = np.where(p[None, None, :] < batch[:, None, None], x[:, :, None],
                      x[:, :, None] / 2 + (p[None, None, :] + 1) * rng.uniform(0.1, 1.0))
    if ties:  # coarse values and repeated candidates: equal counts and equal values are common
        finish = np.round(finish * 2) / 2
        finish[1::2] = finish[::2][: n // 2]
    finish = np.ascontiguousarray(finish, dtype=np.float32)
    extra = (rng.uniform(0, 1, (n, 1)) * x * (rng.random() < 0.5)).astype(np.float32)
    head = (p[None, :] < batch[:, None]).astype(np.int32 if rng.random() < 0.5 else np.int64)  # the policy's, and wider
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
    return (finish, extra, cut, head, slack, machine, spacing, n_pad, pad_deadline, pad_arrival,
            accuracy, drain)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("continuation", [True, False])
def test_the_kernel_chooses_and_values_exactly_as_the_numpy_form(ties, continuation):
    rng = np.random.default_rng(7 + ties + 2 * continuation)
    for _ in range(300):
        (finish, extra, cut, head, slack, machine, spacing, n_pad, pad_deadline, pad_arrival, accuracy,
         drain) = random_case(rng, ties)
        expected = reference(finish, extra, cut, head, slack, machine, spacing, n_pad, pad_deadline, pad_arrival,
                             accuracy, drain, continuation)
        got = best_candidate(finish, extra, cut, head, slack, machine, spacing, n_pad,  # Python floats, as the policy
                             pad_deadline if n_pad else np.zeros(0, np.float32), pad_arrival, accuracy, drain,
                             continuation)
        assert (int(got[0]), float(got[1])) == expected


def test_a_head_member_below_the_cut_off_counts_nothing_for_that_candidate():
    # two candidates, equally fast; the more accurate one's cut-off sheds the lone waiting request
    finish = np.full((2, 6, 4), 1.0, dtype=np.float32)
    head = np.ones((2, 4), dtype=np.int64)
    cut = np.array([9.0, 0.5], dtype=np.float32)
    slack = np.array([5.0], dtype=np.float32)
    args = (np.zeros((2, 6), np.float32), cut, head, slack, np.float32(1.0), np.float32(0.0), 0,
            np.zeros(0, np.float32), expected_arrival_times(16, spread=True), np.array([0.9, 0.8]), 1, True)
    best, value = best_candidate(finish, *args)
    assert best == 1 and value == pytest.approx(0.8 * 6)


def test_an_arrival_likely_during_a_slow_head_batch_counts_against_it_only_when_spread():
    # one relaxed request waits; the slow accurate candidate finishes it at 30, the fast one at 3, and
    # the next arrival (one every 42 on average, 17.5 of slack) is served 3 after the head batch.
    # Evenly spaced it comes at 42, after either batch; as a Poisson arrival it comes before 30 often
    # enough that the slow choice loses it: the fast candidate is the better bet.
    finish = np.empty((2, 6, 2), dtype=np.float32)
    finish[0, :, 0], finish[0, :, 1] = 30.0, 33.0
    finish[1, :, 0], finish[1, :, 1] = 3.0, 6.0
    head = np.array([[1, 0], [1, 0]], dtype=np.int64)
    args = (np.zeros((2, 6), np.float32), np.full(2, -np.inf, np.float32), head, np.array([100.0], np.float32),
            np.float32(1.0), np.float32(42.0), 1, np.full(4, 17.5, np.float32))
    accuracy, drain = np.array([0.94, 0.90]), 1
    spaced = best_candidate(finish, *args, expected_arrival_times(16, spread=False), accuracy, drain, True)
    spread = best_candidate(finish, *args, expected_arrival_times(16, spread=True), accuracy, drain, True)
    assert spaced[0] == 0 and spread[0] == 1
    # Exp(1) quantiles at 1/8 .. 7/8 (0.13, 0.47, 0.98, 2.08 spacings): the first is before 30 - 17.5 + 3
    assert spread[1] == pytest.approx(6 * (0.90 + 0.90))
    assert spaced[1] == pytest.approx(6 * (0.94 + 0.90))
