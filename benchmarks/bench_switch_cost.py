"""What switching configurations costs a live server: one configuration timed alone against the same
configuration timed while calls alternate with other models, side by side in one run.

Why: the profiles time every configuration alone, back to back, so its weights stay in the caches.
A server that changes configuration between batches (the anytime policy does, the static baselines
do not) evicts them: the live fault replay showed MobileNetV2 ONNX Runtime int8 at batch 1 serving
at about twice its profiled time inside an anytime run (cold caches; and every ONNX Runtime
session keeps a thread pool of its own). This measures that factor directly on the
real models of the live candidates: the fastest single-model configuration of the task (``target``)
and the other models' configurations of the same runtime and precision (``others``), at batch 1.
Calls are interleaved in blocks (alone, then alternating) with a fixed busy gap between calls for
the server's own work; the script prints medians and the ratio and, with ``--out``, writes
``results/full/benchmarks/switch_cost.csv``. Timing only: nothing here is an accuracy.

Both ways ONNX Runtime's threads can wait for work are measured in the same run, block by block:
spinning (ORT's default; the profiles' setting) and sleeping (what the live server loads,
:func:`planner.serving.replay.load_live_configs`). Why: a spinning session that was just left keeps a
core busy while the next one serves, and this host has two.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_switch_cost.py --out
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import pandas as pd

from planner.models.datasets import eval_inputs
from planner.paths import cpu_model, results_dir
from planner.profile.fingerprint import set_threads
from planner.profile.store import load_bundle
from planner.serving.replay import load_live_configs
from planner.tables import atomic_write_text


def _busy(seconds: float) -> None:
    """Spin for ``seconds``: the server's own work between two batches (no sleep: no core hand-off)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def choose(profiles: pd.DataFrame, task: str) -> tuple[str, list[str]]:
    """(target, others): the fastest single-model batch-1 CPU configuration of ``task``, and one
    configuration of each other model with the target's runtime and precision at batch 1."""
    single = profiles[(profiles["task"] == task) & profiles["cascade_small"].isna() & (profiles["batch_size"] == 1)
                      & (profiles["device"] == "cpu")]
    target = single.loc[single["lat_p50_ms"].idxmin()]
    same = single[(single["runtime"] == target["runtime"]) & (single["precision"] == target["precision"])
                  & (single["model"] != target["model"])]
    return str(target["config_id"]), same.sort_values("model")["config_id"].tolist()


def _time_blocks(configs: dict, target: str, others: list[str], batch, calls: int, gap_ms: float,
                 alone: list[float], switched: list[float]) -> None:
    """One block: ``calls`` target calls back to back, then ``calls`` each right after another model's."""
    for _ in range(calls):  # alone: the target back to back, as the profile timed it
        start = time.perf_counter()
        configs[target].run(batch)
        alone.append((time.perf_counter() - start) * 1000.0)
        _busy(gap_ms / 1000.0)
    for i in range(calls):  # switching: every target call follows a call of another model
        configs[others[i % len(others)]].run(batch)
        _busy(gap_ms / 1000.0)
        start = time.perf_counter()
        configs[target].run(batch)
        switched.append((time.perf_counter() - start) * 1000.0)
        _busy(gap_ms / 1000.0)


def measure(task: str, preset: str, calls: int, blocks: int, gap_ms: float, threads: int) -> list[dict]:
    """One row per ORT thread setting (spinning, sleeping), their blocks interleaved in one run."""
    set_threads(threads)
    bundle = load_bundle(preset)
    target, others = choose(bundle.profiles, task)
    if not others:
        raise SystemExit(f"{task}: no other model shares the runtime and precision of {target}")
    settings = {spin: load_live_configs(bundle.profiles, [target, *others], preset, threads, spin=spin)
                for spin in (True, False)}
    inputs, _ = eval_inputs(task, n=64)
    batch = inputs[:1]
    for configs in settings.values():
        for cid in [target, *others]:  # warm-up: sessions built, kernels chosen
            for _ in range(20):
                configs[cid].run(batch)
    times = {spin: ([], []) for spin in settings}
    for _ in range(blocks):
        for spin, configs in settings.items():
            _time_blocks(configs, target, others, batch, calls, gap_ms, *times[spin])
    rows = []
    for spin, (alone, switched) in times.items():
        a, s = statistics.median(alone), statistics.median(switched)
        rows.append({"task": task, "target": target, "others": " ".join(others), "ort_spinning": spin,
                     "threads": threads, "gap_ms": gap_ms, "calls": calls * blocks, "alone_median_ms": a,
                     "switched_median_ms": s, "ratio_switched_over_alone": s / a,
                     "alone_p95_ms": float(np.percentile(alone, 95)),
                     "switched_p95_ms": float(np.percentile(switched, 95)),
                     "cpu_model": cpu_model(), "python": platform.python_version(),
                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["cifar10", "sst2"])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--gap-ms", type=float, default=0.3, help="busy time between calls (the server's own work)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", action="store_true", help="write results/<preset>/benchmarks/switch_cost.csv")
    args = parser.parse_args()
    rows = pd.DataFrame([row for t in args.tasks
                         for row in measure(t, args.preset, args.calls, args.blocks, args.gap_ms, args.threads)])
    print(rows.T.to_string())
    if args.out:
        out = results_dir(args.preset) / "benchmarks" / "switch_cost.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, rows.to_csv(index=False))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
