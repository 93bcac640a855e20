"""How late the alarm that sends a cascade's first-stage answer at the deadline rings, against the guard
it rings ahead of the deadline by, measured on the real models in one run.

Why: a cascade served stage by stage (:mod:`planner.serving.staged`, the live replay and the HTTP
server for a policy with early answers) sends an escalated request the first stage's answer a guard
ahead of its deadline when the second stage has not answered by then. That answer is on time only if
the alarm thread wakes and sends it within the guard while the second stage's threads hold the cores.
This loads each task's ONNX Runtime int8 cascades at batch sizes 1 and 8 (threshold 0.9) as the server
loads them, picks evaluation inputs the first stage escalates, times ``--calls`` first and second
stages, then serves ``--tries`` batches stage by stage with every deadline halfway through the second
stage (so each escalated request is answered by its alarm; the second stage is stopped at the
deadline, as for the proposed method), with one learned :class:`~planner.serving.staged.AlarmGuard`
per configuration as a server has. It reports how far past its ring time each answer was sent
(p50/p95/max, ms), the guard learned by the end, the share sent by the deadline, and the share a fixed
guard of the floor (``EARLY_GUARD_S``) would have sent by it, and the share once the guard has learned
(after the first ``LEARN_TRIES`` batches), with the guard's margin and with the largest recent
lateness alone (margin 1: an alarm is taken to ring as late whatever its time). Prints the table; ``--out`` writes
``results/<preset>/benchmarks/early_answer_alarms.csv`` (with the host's CPU flags). Timing only.
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
from planner.serving.replay import load_live_configs, take
from planner.serving.staged import AlarmGuard, SecondStageEstimate, run_staged
from planner.serving.stopping import CallStopper
from planner.tables import atomic_write_text

LEARN_TRIES = 5  # the share on time is also given without the first tries, while the guard learns


def choose(profiles: pd.DataFrame, task: str, batch_sizes: tuple[int, ...], threshold: str) -> list[str]:
    """The task's ONNX Runtime int8 CPU cascades at ``threshold`` and ``batch_sizes``."""
    rows = profiles[(profiles["task"] == task) & profiles["cascade_small"].notna() & (profiles["device"] == "cpu")
                    & (profiles["runtime"] == "onnxruntime") & (profiles["precision"] == "int8")
                    & profiles["batch_size"].isin(batch_sizes)
                    & profiles["config_id"].str.contains(f"@{threshold}/", regex=False)]
    return rows.sort_values("lat_p50_ms")["config_id"].tolist()


def _median_s(call, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(task: str, preset: str, calls: int, tries: int, threads: int, batch_sizes: tuple[int, ...],
            threshold: str, flags: str) -> list[dict]:
    set_threads(threads)
    bundle = load_bundle(preset)
    ids = choose(bundle.profiles, task, batch_sizes, threshold)
    configs = load_live_configs(bundle.profiles, ids, preset, threads)
    inputs, _ = eval_inputs(task, n=512)
    timer = CallStopper()
    rows = []
    for cid in tqdm(ids, desc=f"{task}: alarms", unit="config"):
        cfg = configs[cid]
        stages = cfg.stages
        unsure = np.flatnonzero(stages.escalate(np.asarray(stages.first(inputs))))
        if len(unsure) < cfg.batch_size:
            continue
        batch = take(inputs, unsure[: cfg.batch_size])
        for _ in range(5):  # warm-up
            stages.first(batch)
            stages.second(batch)
        first_s = _median_s(lambda: stages.first(batch), calls)
        second_s = _median_s(lambda: stages.second(batch), calls)
        lateness, on_time, on_time_fixed, learned, learned_margin1 = [], [], [], [], []
        guard = AlarmGuard()  # learned over the tries, as a server learns it
        for k in range(tries):
            ring: dict[int, float] = {}

            def answer(i, probs, at, early, ring=ring):
                if early:
                    ring[i] = at

            start = time.perf_counter()
            deadline = start + first_s + 0.5 * second_s
            ahead = guard.seconds()
            run_staged(stages, batch, [deadline] * cfg.batch_size, answer, SecondStageEstimate(0.0), timer,
                       time.perf_counter, stop_calls=True, guard=guard)
            for at in ring.values():
                lateness.append(at - (deadline - ahead))
                on_time.append(at <= deadline)
                if k >= LEARN_TRIES:
                    learned.append(at <= deadline)
                    # had the guard been the largest recent lateness alone (margin 1): the alarm rings late
                    # by the same amount whatever its time, so it is on time when its lateness fits that guard
                    alone = max(guard.floor_s, ahead / guard.margin)
                    learned_margin1.append(at - (deadline - ahead) <= alone)
                on_time_fixed.append(at - (deadline - ahead) <= guard.floor_s)  # had it rung floor_s ahead
        late_ms = np.asarray(lateness) * 1000.0
        rows.append({"task": task, "config_id": cid, "batch_size": cfg.batch_size, "threads": threads,
                     "first_median_ms": first_s * 1000.0, "second_median_ms": second_s * 1000.0,
                     "floor_ms": guard.floor_s * 1000.0, "guard_end_ms": guard.seconds() * 1000.0,
                     "n_early": len(late_ms),
                     "lateness_p50_ms": float(np.median(late_ms)) if len(late_ms) else np.nan,
                     "lateness_p95_ms": float(np.percentile(late_ms, 95)) if len(late_ms) else np.nan,
                     "lateness_max_ms": float(late_ms.max()) if len(late_ms) else np.nan,
                     "share_on_time": float(np.mean(on_time)) if on_time else np.nan,
                     "share_on_time_floor_only": float(np.mean(on_time_fixed)) if on_time_fixed else np.nan,
                     "learn_tries": LEARN_TRIES,
                     "share_on_time_learned": float(np.mean(learned)) if learned else np.nan,
                     "margin": guard.margin,
                     "share_on_time_learned_margin1": float(np.mean(learned_margin1)) if learned_margin1 else np.nan,
                     "cpu_model": cpu_model(), "cpu_flags": flags, "python": platform.python_version(),
                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    timer.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["cifar10", "sst2"])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--tries", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threshold", default="0.9")
    parser.add_argument("--out", action="store_true", help="write results/<preset>/benchmarks/early_answer_alarms.csv")
    args = parser.parse_args()
    flags = " ".join(hardware()["cpu_flags"])
    rows = pd.DataFrame([row for t in args.tasks for row in measure(t, args.preset, args.calls, args.tries, args.threads,
                                                                    tuple(args.batch_sizes), args.threshold, flags)])
    print(rows.drop(columns=["cpu_model", "cpu_flags", "python", "measured_at"]).round(3).to_string(index=False))
    if args.out:
        out = results_dir(args.preset) / "benchmarks" / "early_answer_alarms.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, rows.to_csv(index=False))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
