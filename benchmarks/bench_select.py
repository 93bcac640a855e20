"""Benchmark ``DeadlinePlanner.select`` against a naive pandas filter on >= 300 configurations.

Both answer the same question (most accurate configuration whose p95 latency fits the deadline,
ties to lower latency) for the same random deadlines; the script checks the answers agree, then
times each with ``timeit`` (``time.perf_counter``) and prints the per-call median and the ratio.

    .venv/bin/python benchmarks/bench_select.py            # print the table
    .venv/bin/python benchmarks/bench_select.py --out      # also write results/full/benchmarks/select_benchmark.csv
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import timeit
from pathlib import Path

import numpy as np
import pandas as pd

from planner.paths import cpu_model, results_dir
from planner.plan import DeadlinePlanner

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "tests"))  # test fixtures (synthetic profiles)
from bundles import synthetic_profiles  # noqa: E402


def naive_select(profiles: pd.DataFrame, task: str, deadline_ms: float) -> str:
    """What one would write without the planner: filter, sort, take the first row."""
    feasible = profiles[(profiles["task"] == task) & (profiles["accuracy_source"] == "measured")
                        & (profiles["lat_p95_ms"] <= deadline_ms)]
    if feasible.empty:
        return str(profiles.loc[profiles["task"] == task].sort_values("lat_p95_ms").iloc[0]["config_id"])
    ranked = feasible.sort_values(["accuracy", "lat_p95_ms", "config_id"], ascending=[False, True, True])
    return str(ranked.iloc[0]["config_id"])


def per_call_times(fn, deadlines: list[float], repeats: int, inner: int) -> list[float]:
    """Seconds per call, one value per (repeat, deadline): each measured over ``inner`` calls."""
    times = []
    for _ in range(repeats):
        for deadline in deadlines:
            total = timeit.timeit(lambda: fn(deadline), number=inner, timer=time.perf_counter)
            times.append(total / inner)
    return times


def run(n_configs: int, n_deadlines: int, repeats: int, seed: int) -> pd.DataFrame:
    profiles, _ = synthetic_profiles(n_configs, seed=seed)
    planner = DeadlinePlanner().fit(profiles)
    rng = np.random.default_rng(seed)
    lat = profiles["lat_p95_ms"]
    deadlines = rng.uniform(lat.min() * 0.5, lat.max() * 1.1, n_deadlines).tolist()
    for d in deadlines:  # same answers, or the comparison is meaningless
        if planner.select("sst2", d).config_id != naive_select(profiles, "sst2", d):
            raise AssertionError(f"planner and pandas filter disagree at deadline {d}")
    cases = {
        "planner.select": (lambda d: planner.select("sst2", d), 20_000),
        "planner.select(steady)": (lambda d: planner.select("sst2", d, "steady"), 20_000),
        "pandas filter": (lambda d: naive_select(profiles, "sst2", d), 20),
    }
    rows = []
    for name, (fn, inner) in cases.items():
        t = per_call_times(fn, deadlines, repeats, inner)
        rows.append({"method": name, "n_configs": n_configs, "median_us": statistics.median(t) * 1e6,
                     "p95_us": float(np.percentile(t, 95)) * 1e6, "n_measurements": len(t), "calls_each": inner})
    out = pd.DataFrame(rows)
    naive = out.loc[out["method"] == "pandas filter", "median_us"].iloc[0]
    out["speedup_vs_pandas"] = naive / out["median_us"]
    out["cpu_model"] = cpu_model()
    out["python"] = platform.python_version()
    out["pandas"] = pd.__version__
    out["load_avg_1min"] = os.getloadavg()[0]  # other work on the machine inflates both timings
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-configs", type=int, default=300)
    parser.add_argument("--deadlines", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", nargs="?", const=str(results_dir("full") / "benchmarks" / "select_benchmark.csv"),
                        default=None, help="write the table as CSV (default path when given without a value)")
    args = parser.parse_args(argv)
    if args.n_configs < 300:
        parser.error("the benchmark is defined for >= 300 configurations")
    table = run(args.n_configs, args.deadlines, args.repeats, args.seed)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[["method", "n_configs", "median_us", "p95_us", "speedup_vs_pandas"]].to_string(index=False,
              float_format=lambda v: f"{v:,.3f}"))
    planner_median = table.loc[table["method"] == "planner.select", "median_us"].iloc[0]
    ratio = table.loc[table["method"] == "planner.select", "speedup_vs_pandas"].iloc[0]
    print(f"\nmedian select: {planner_median:.3f} us; pandas filter / select = {ratio:,.0f}x "
          f"({args.n_configs} configs, {cpu_model()})")
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
