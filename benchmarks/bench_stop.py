"""How far past its stop time a live ONNX Runtime call ends when the server stops it, against the call's
own length, measured side by side in one run.

Why: the simulator stops a doomed batch exactly at its latest member's deadline
(:mod:`planner.serving.simulator`); a live server sets the call's ``RunOptions.terminate`` at that time
(:mod:`planner.serving.stopping`), and ONNX Runtime returns at its next check between graph nodes, so
the server is held a little longer than the simulator charges. This loads the real models of each
task's single-model ONNX Runtime int8 configurations at batch sizes 1 and 8 as the server loads them
(:func:`planner.serving.replay.load_live_configs`), times ``--calls`` whole calls on real evaluation
inputs, then stops ``--stops`` calls at 20 %, 50 % and 80 % of that median (in turn) through
:class:`~planner.serving.stopping.CallStopper`, and reports the overshoot (end of the call minus its
stop time) as milliseconds and as a share of the median call. Prints the table; ``--out`` writes
``results/<preset>/benchmarks/stop_overshoot.csv`` (with the host's CPU flags: a host other than the
profile's times other calls). Timing only.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_stop.py --out
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from planner.models.datasets import eval_inputs
from planner.paths import cpu_model, results_dir
from planner.profile.fingerprint import hardware, set_threads
from planner.profile.store import load_bundle
from planner.serving.replay import load_live_configs
from planner.serving.stopping import CallStopper
from planner.tables import atomic_write_text

FRACTIONS = (0.2, 0.5, 0.8)


def choose(profiles: pd.DataFrame, task: str, batch_sizes: tuple[int, ...]) -> list[str]:
    """The task's single-model ONNX Runtime int8 CPU configurations at ``batch_sizes``, fastest first."""
    rows = profiles[(profiles["task"] == task) & profiles["cascade_small"].isna() & (profiles["device"] == "cpu")
                    & (profiles["runtime"] == "onnxruntime") & (profiles["precision"] == "int8")
                    & profiles["batch_size"].isin(batch_sizes)]
    return rows.sort_values("lat_p50_ms")["config_id"].tolist()


def measure(task: str, preset: str, calls: int, stops: int, threads: int, batch_sizes: tuple[int, ...],
            flags: str) -> list[dict]:
    set_threads(threads)
    bundle = load_bundle(preset)
    ids = choose(bundle.profiles, task, batch_sizes)
    configs = load_live_configs(bundle.profiles, ids, preset, threads)
    inputs, _ = eval_inputs(task, n=64)
    stopper = CallStopper()
    rows = []
    for cid in tqdm(ids, desc=f"{task}: stops", unit="config"):
        cfg = configs[cid]
        batch = inputs[: cfg.batch_size]
        for _ in range(10):  # warm-up: session built, kernels chosen
            cfg.run(batch)
        whole = []
        for _ in range(calls):
            start = time.perf_counter()
            cfg.run(batch)
            whole.append(time.perf_counter() - start)
        median = statistics.median(whole)
        over, ended_first = [], 0
        for i in range(stops):
            at = time.perf_counter() + FRACTIONS[i % len(FRACTIONS)] * median
            answer = stopper.call(lambda options: cfg.run_stoppable(batch, options), at)
            end = time.perf_counter()
            if answer is None:
                over.append(end - at)
            else:
                ended_first += 1
        over_ms = np.asarray(over) * 1000.0
        rows.append({"task": task, "config_id": cid, "batch_size": cfg.batch_size, "threads": threads,
                     "call_median_ms": median * 1000.0, "n_stops": stops, "n_ended_first": ended_first,
                     "overshoot_p50_ms": float(np.median(over_ms)) if len(over_ms) else np.nan,
                     "overshoot_p95_ms": float(np.percentile(over_ms, 95)) if len(over_ms) else np.nan,
                     "overshoot_max_ms": float(over_ms.max()) if len(over_ms) else np.nan,
                     "overshoot_p50_share": float(np.median(over_ms)) / (median * 1000.0) if len(over_ms) else np.nan,
                     "cpu_model": cpu_model(), "cpu_flags": flags, "python": platform.python_version(),
                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    stopper.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["cifar10", "sst2"])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--stops", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", action="store_true", help="write results/<preset>/benchmarks/stop_overshoot.csv")
    args = parser.parse_args()
    flags = " ".join(hardware()["cpu_flags"])
    rows = pd.DataFrame([row for t in args.tasks for row in measure(t, args.preset, args.calls, args.stops,
                                                                    args.threads, tuple(args.batch_sizes), flags)])
    print(rows.drop(columns=["cpu_model", "python", "measured_at"]).round(3).to_string(index=False))
    if args.out:
        out = results_dir(args.preset) / "benchmarks" / "stop_overshoot.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, rows.to_csv(index=False))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
