"""Decision cost of the anytime policy against the static ``select``, side by side in one run.

300 synthetic configurations (tests/bundles.py), 64 requests waiting: the anytime policy's
per-batch decision (``policy(ctx)``, after fit) and ``DeadlinePlanner.select`` are timed in
interleaved blocks with ``time.perf_counter_ns``, and so is the decision of a policy that has learned
a switching cost (cold batches at twice the warm time: the path that adds each candidate's switch
to its finish times, idle in the simulator), and so is the decision of a policy that reads the
recent gaps for its expected arrivals (``arrival_model="empirical"``), each decision one arrival
later in a bursty (Gamma, CV 8) stream of them, so that its refits (one per 32 arrivals) are timed
at the most frequent they come; the script prints medians and their ratio and,
with ``--out``, writes ``results/full/benchmarks/decision_benchmark.csv``. Timing only: nothing
here is an accuracy.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_decision.py --out
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from planner.paths import results_dir
from planner.profile.fingerprint import hardware
from planner.plan import DeadlinePlanner
from planner.plan.anytime import anytime
from planner.plan.arrivals import GAP_MEMORY
from planner.plan.policies import PolicyContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test fixtures (synthetic profiles)
from bundles import synthetic_bundle  # noqa: E402


def _time(fn, calls: int) -> list[float]:
    """Per-call microseconds of ``fn`` over ``calls`` calls, one sample per call."""
    out = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - start) / 1000.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=300)
    parser.add_argument("--waiting", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--out", action="store_true", help="write results/full/benchmarks/decision_benchmark.csv")
    parser.add_argument("--csv", type=Path, default=None,
                        help="write the row to this file instead (another machine's run, e.g. the GPU machine's host)")
    args = parser.parse_args()
    bundle = synthetic_bundle(n_configs=args.configs, n_examples=200, n_samples=100)
    policy = anytime(bundle, "sst2", lookahead=args.waiting)
    planner = DeadlinePlanner(95).fit(bundle.profiles)
    switching = anytime(bundle, "sst2", lookahead=args.waiting)
    first, second = switching._ids[:2]
    for _ in range(40):  # runs of three batches, the first of each run twice as long (cold caches)
        for config in (first, second):
            reference = switching.estimator_.reference_ms[config]
            for k in range(3):
                switching.observe(config, 1, reference * (2.0 if k == 0 else 1.0))
    assert switching._extra is not None  # the switch-charging path is the one timed
    gaps = anytime(bundle, "sst2", lookahead=args.waiting, arrival_model="empirical")
    rng = np.random.default_rng(0)
    # the slacks as the serving rule hands them over (a float64 array, planner.serving.batching.pick_batch)
    contexts = [PolicyContext(0.0, "sst2", args.waiting, float(s[0]), 5.0, 0, 1, 1, 200.0, s)
                for s in np.sort(rng.uniform(-1.0, 12.0, (64, args.waiting)), axis=1)]
    deadlines = rng.uniform(0.5, 12.0, 64).tolist()
    # a decision at every arrival of a bursty stream (the arrivals so far, as the serving rule hands them over)
    stream = np.cumsum(rng.gamma(1 / 64, 5.0 * 64, GAP_MEMORY + args.blocks * args.calls + 1) / 1000.0).tolist()
    gap_contexts = [PolicyContext(stream[k + GAP_MEMORY - 1], "sst2", args.waiting, contexts[k % 64].oldest_slack_ms, 5.0,
                                  0, 1, 1, 200.0, contexts[k % 64].queue_slack_ms, stream[k:k + GAP_MEMORY])
                    for k in range(args.blocks * args.calls + 1)]
    i = {"a": 0, "s": 0, "w": 0, "g": 0}

    def decide() -> None:
        policy(contexts[i["a"] % 64])
        i["a"] += 1

    def decide_switching() -> None:
        switching(contexts[i["w"] % 64])
        i["w"] += 1

    def decide_gaps() -> None:
        gaps(gap_contexts[i["g"]])
        i["g"] += 1

    def select() -> None:
        planner.select("sst2", deadlines[i["s"] % 64])
        i["s"] += 1

    decide(), decide_switching(), decide_gaps(), select()  # untimed: the first decision compiles the kernel
    anytime_us, select_us, switching_us, gaps_us = [], [], [], []
    for _ in range(args.blocks):  # interleaved blocks: all see the same machine state
        anytime_us += _time(decide, args.calls)
        select_us += _time(select, args.calls)
        switching_us += _time(decide_switching, args.calls)
        gaps_us += _time(decide_gaps, args.calls)
    assert gaps._arrivals.n_refits > 1   # its refits are among the timed decisions
    host = hardware()
    a, s, w = statistics.median(anytime_us), statistics.median(select_us), statistics.median(switching_us)
    g = statistics.median(gaps_us)
    row = {"configs": args.configs, "front": len(policy._ids), "waiting": args.waiting,
           "anytime_median_us": a, "anytime_p95_us": float(np.percentile(anytime_us, 95)),
           "select_median_us": s, "ratio_anytime_over_select": a / s,
           "anytime_switch_cost_median_us": w, "ratio_switch_cost_over_select": w / s,
           "anytime_gaps_median_us": g, "anytime_gaps_p95_us": float(np.percentile(gaps_us, 95)),
           "ratio_gaps_over_select": g / s,
           "cpu_model": host["cpu_model"], "cpu_flags": " ".join(host["cpu_flags"]), "python": platform.python_version(),
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(pd.Series(row).to_string())
    if args.out or args.csv:
        path = args.csv or results_dir("full") / "benchmarks" / "decision_benchmark.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([row]).to_csv(path, index=False)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
