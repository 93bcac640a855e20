"""Clairvoyant bound: solve time and value on 500 / 2,000 / 4,000-request traces (40 synthetic configs).

Run: ``nice -n 19 .venv/bin/python benchmarks/bench_clairvoyant.py [--sizes 500 2000 4000]
[--load-of planner|fastest] [--drop-expired] [--milp]``. For every trace (steady and bursty
arrivals at 0.8, 2 and 5 times the capacity of the deadline planner's choice, as the evaluation
defines load, or of the highest-throughput configuration, where server capacity starts to limit
the bound) it prints the trivial per-request bound, the window-LP bound and its best-of
``--repeat`` wall time, the best fixed configuration in hindsight and the slack-aware policy
(both simulated, seed 0, one server, FIFO, ``--drop-expired`` optional). ``--milp`` adds the
binary-``z`` bound and its time (seconds to minutes at 4,000 requests under overload).

Two prediction sets: ``independent`` (the fixtures' synthetic predictions, drawn independently
per configuration, so some configuration answers almost every example correctly and the bound
is close to 1 whatever the load) and ``correlated`` (one difficulty per example shared by all
configurations, flipped for 3 % of examples per configuration, closer to how real models behave).
Synthetic profiles: timings and tightness only, never reported as measurements.
"""

from __future__ import annotations

import argparse
import sys as _sys
import time
from pathlib import Path as _Path

import numpy as np
import pandas as pd

from planner import workloads
from planner.evaluation.clairvoyant import clairvoyant_bound
from planner.plan import DeadlinePlanner, policies
from planner.schema import PREDICTION_COLUMNS, ProfileBundle, validate
from planner.serving.outcomes import run_metrics
from planner.serving.simulator import prepare, simulate

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "tests"))  # test fixtures (synthetic profiles)
from bundles import synthetic_predictions, synthetic_profiles  # noqa: E402

TASK = "sst2"
N_EXAMPLES = 1000


def correlated_predictions(profiles: pd.DataFrame, n_examples: int, seed: int) -> pd.DataFrame:
    """Correct iff the example's shared difficulty is below the accuracy, flipped 3 % of the time."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n_examples)
    frames = []
    for row in profiles.itertuples(index=False):
        correct = (difficulty < row.accuracy) ^ (rng.random(n_examples) < 0.03)
        frames.append(pd.DataFrame({"config_id": row.config_id, "example_id": np.arange(n_examples), "label": 0,
                                    "prediction": np.where(correct, 0, 1), "confidence": 0.9, "correct": correct,
                                    "stage": 1}))
    return validate(pd.concat(frames, ignore_index=True), PREDICTION_COLUMNS, "correlated predictions")


def _best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 4000])
    parser.add_argument("--loads", type=float, nargs="+", default=[0.8, 2.0, 5.0])
    parser.add_argument("--deadline-ms", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--load-of", choices=["planner", "fastest"], default="planner")
    parser.add_argument("--drop-expired", action="store_true", help="simulated baselines drop expired requests")
    parser.add_argument("--milp", action="store_true", help="also solve with binary z (can take seconds to minutes)")
    args = parser.parse_args()
    profiles, samples = synthetic_profiles(40, TASK, seed=0, n_samples=200)
    variants = {"independent": synthetic_predictions(profiles, N_EXAMPLES, seed=0),
                "correlated": correlated_predictions(profiles, N_EXAMPLES, seed=0)}
    if args.load_of == "planner":
        choice = DeadlinePlanner(95).fit(profiles).select(TASK, args.deadline_ms).config_id
    else:
        choice = profiles.loc[profiles["throughput_items_s"].idxmax(), "config_id"]
    capacity = float(profiles.set_index("config_id").loc[choice, "throughput_items_s"])
    print(f"40 synthetic configurations, deadline {args.deadline_ms:g} ms, load relative to {choice} "
          f"({capacity:.0f} req/s); LP time best of {args.repeat}; drop_expired={args.drop_expired}")
    rows = []
    for variant, predictions in variants.items():
        bundle = ProfileBundle(profiles, samples, predictions, {"machine_tag": "synthetic"})
        catalog = prepare(bundle)
        slack = policies.slack_aware(bundle, TASK)
        for n in args.sizes:
            for kind in ("poisson", "gamma"):
                for load in args.loads:
                    trace = workloads.make_trace(kind, load * capacity, n, args.deadline_ms, N_EXAMPLES, 1)
                    seconds, bound = _best(lambda: clairvoyant_bound(trace, catalog, TASK, method="lp"), args.repeat)
                    def score(policy) -> float:
                        return run_metrics(simulate(trace, policy, catalog, task=TASK,
                                                    drop_expired=args.drop_expired))["effective_accuracy"]
                    fixed = max(score(policies.fixed(c)) for c in profiles["config_id"])
                    row = dict(predictions=variant, n=n, workload=kind, load=load, trivial=bound.trivial,
                               lp=bound.effective_accuracy, lp_ms=1000 * seconds, rows=bound.n_constraints,
                               best_fixed=fixed,
                               slack_aware=score(slack))
                    if args.milp:
                        seconds, exact = _best(lambda: clairvoyant_bound(trace, catalog, TASK, method="milp"), 1)
                        row.update(milp=exact.effective_accuracy, milp_ms=1000 * seconds)
                    rows.append(row)
                    print(pd.DataFrame([row]).to_string(index=False, header=len(rows) == 1, float_format="%.3f"),
                          flush=True)
    table = pd.DataFrame(rows)
    print("\nLP solve time (ms) by trace size:")
    print(table.groupby("n")["lp_ms"].describe()[["mean", "50%", "max"]].to_string(float_format="%.1f"))


if __name__ == "__main__":
    main()
