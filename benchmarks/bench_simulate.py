"""Simulator throughput: seconds to simulate N requests (issue 6 target: 1M static in <= 10 s).

Run: ``nice -n 19 .venv/bin/python benchmarks/bench_simulate.py [--n 1000000] [--repeat 3]``.
Prints one line per case (engine, batch size, servers, queue) with the best of ``--repeat`` wall
times for ``simulate`` alone and with ``run_metrics``. Uses synthetic profiles (timing only).
"""

from __future__ import annotations

import argparse
import time

from planner.plan import policies
from planner import workloads
from planner.serving.simulator import prepare, simulate
from planner.serving.outcomes import run_metrics

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "tests"))  # test fixtures (synthetic profiles)
from bundles import synthetic_bundle  # noqa: E402


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bundle = synthetic_bundle(n_configs=12, n_examples=1000, n_samples=500)
    catalog = prepare(bundle)
    profiles = bundle.profiles.set_index("config_id")
    b1 = profiles.index[profiles["batch_size"] == 1][0]
    b4 = profiles.index[profiles["batch_size"] == 4][0]
    slack = policies.slack_aware(bundle, "sst2")
    cases = [
        ("fast", b1, 1, "fifo", policies.fixed(b1)),
        ("fast", b4, 1, "fifo", policies.fixed(b4)),
        ("fast", b4, 4, "fifo", policies.fixed(b4)),
        ("event", b1, 1, "fifo", policies.fixed(b1)),
        ("event", b4, 1, "edf", policies.fixed(b4)),
        ("event", "slack_aware", 1, "fifo", slack),
    ]
    print(f"n = {args.n:,} requests, best of {args.repeat}")
    for engine, cid, servers, queue, policy in cases:
        batch = int(profiles.loc[cid, "batch_size"]) if cid in profiles.index else 0
        capacity = servers * float(profiles.loc[cid, "throughput_items_s"]) if batch else \
            float(profiles.loc[b4, "throughput_items_s"])
        trace = workloads.gamma(0.8 * capacity, args.n, 10.0, 1000, seed=42, cv=4)
        run = lambda: simulate(trace, policy, catalog, servers=servers, queue=queue,  # noqa: E731
                               engine="event" if engine == "event" else "auto")
        sim_s = _best(run, args.repeat)
        total_s = _best(lambda: run_metrics(run()), 1)
        label = f"b{batch}" if batch else cid
        print(f"{engine:5s} {label:12s} servers={servers} {queue:4s}  simulate {sim_s:6.2f} s "
              f"({args.n / sim_s / 1e6:5.2f} M req/s)   simulate+metrics {total_s:6.2f} s")


if __name__ == "__main__":
    main()
