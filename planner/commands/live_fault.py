"""``planner live-fault``: the proposed method, ``seed_p95`` and the best baseline replayed live on the
real models, with a CPU hog taking one core in the middle of the trace.

Writes ``results/<preset>/eval/live_fault_<task>.parquet`` (per-request rows), ``live_fault_<task>_summary.csv``
(attainment before/during/after the fault) and ``live_fault_<task>.json`` (trace, fault window, start-up
scale); a rerun resumes with the methods not yet replayed. Live latencies depend on what else runs on
the CPU: run it on an otherwise quiet machine (see :mod:`planner.evaluation.live_fault`).
"""

from __future__ import annotations

import argparse
import os

from planner.config import TASKS


def register(subparsers) -> None:
    parser = subparsers.add_parser("live-fault", help="live replay of anytime, seed_p95 and the best baseline with a "
                                                      "CPU hog mid-trace (results/<preset>/eval/live_fault_<task>.*)")
    parser.add_argument("--task", required=True, choices=[*TASKS, "all"])
    parser.add_argument("--preset", default="quick", help="preset in configs/presets.yaml (quick|full)")
    parser.add_argument("--machine-tag", default=None, help="which machine's profiles (default: this one)")
    parser.add_argument("--baseline", default=None,
                        help="comparison method (default: the best online non-proposed method of the preset's "
                             "evaluation summary at the same workload and load)")
    parser.add_argument("--duration-s", type=float, default=None, help="trace length in seconds (default 36)")
    parser.add_argument("--load", type=float, default=None, help="load on the machine at hand (default 0.8)")
    parser.add_argument("--rate-basis", choices=["machine", "profile"], default=None,
                        help="load relative to this machine's speed now (default) or to the profiled capacity")
    parser.add_argument("--deadline-ms", type=float, default=None, help="default: the middle of the deadline sweep")
    parser.add_argument("--fault-start-s", type=float, default=None, help="default: the fault is centred")
    parser.add_argument("--fault-duration-s", type=float, default=None, help="default 10")
    parser.add_argument("--hog-cpu", type=int, default=None, help="CPU the hog is pinned to (-1: not pinned; "
                                                                 "default: the last one)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier rows instead of resuming")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from planner import config
    from planner.evaluation.live_fault import (LiveFaultSettings, best_baseline, middle_deadline, paths,
                                               run_live_fault)
    from planner.evaluation.provenance import profiles_digest, record_inputs, stale_reason
    from planner.evaluation.validation import TaskData
    from planner.models.zoo import eval_inputs
    from planner.paths import results_dir
    from planner.plan.registry import check_method_params, proposed
    from planner.profile.fingerprint import set_threads
    from planner.profile.store import load_bundle, profile_root
    from planner.serving.replay import load_live_configs
    from planner.tables import refresh_manifest

    preset = config.preset(args.preset)
    where = f"configs/presets.yaml: presets.{args.preset}.evaluate"
    params = check_method_params(preset.evaluate.method_params, f"{where}.method_params")
    given = {k: v for k, v in {"duration_s": args.duration_s, "load": args.load, "rate_basis": args.rate_basis,
                               "deadline_ms": args.deadline_ms,
                               "fault_start_s": args.fault_start_s, "fault_duration_s": args.fault_duration_s,
                               "hog_cpu": args.hog_cpu}.items() if v is not None}
    settings = LiveFaultSettings.model_validate({"servers": preset.evaluate.servers, "queue": preset.evaluate.queue,
                                                 "drop_expired": preset.evaluate.drop_expired,
                                                 "percentile": preset.evaluate.percentile, **given})
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if busy > 0.5:
        print(f"warning: 1-minute load average {busy:.2f}: other work on this CPU contaminates live timings")
    bundle = load_bundle(args.preset, args.machine_tag)
    profile_folder = profile_root(args.preset, args.machine_tag)
    digest = profiles_digest(profile_folder)
    threads = set_threads(preset.profile.threads)  # as the profiler did, before any session is built
    eval_subset = bundle.environment.get("profile_settings", {}).get("eval_subset", preset.profile.eval_subset)
    steady = next((name for name, spec in preset.evaluate.workloads.items() if spec.kind == "poisson"), "steady")
    deadlines = preset.evaluate.deadlines or config.deadlines().deadlines
    out_dir = results_dir(args.preset) / "eval"
    tasks = sorted(set(bundle.profiles["task"])) if args.task == "all" else [args.task]
    for task in tasks:
        if args.baseline:
            baseline = {"name": args.baseline, "source": "--baseline"}
        else:
            summary_csv = out_dir / f"summary_{task}.csv"
            if not summary_csv.exists():
                raise FileNotFoundError(f"missing {summary_csv} to choose the best baseline from; run `python -m "
                                        f"planner evaluate --task {task} --preset {args.preset}` or pass --baseline")
            unfit = stale_reason(out_dir, f"runs_{task}.csv", digest, True)
            if unfit:
                raise ValueError(f"{unfit}, so {summary_csv.name} cannot choose the best baseline: run `python -m "
                                 f"planner evaluate --task {task} --preset {args.preset}` first or pass --baseline")
            name, score = best_baseline(pd.read_csv(summary_csv), steady, settings.load)
            baseline = {"name": name, "effective_accuracy": score, "workload": steady, "load": settings.load,
                        "source": f"{summary_csv.name}: mean over deadlines; roles baseline/ablation; seed_p95 "
                                  "excluded"}
        methods = list(dict.fromkeys([proposed(), "seed_p95", baseline["name"]]))
        print(f"{task}: {methods} (baseline {baseline['name']}: {baseline.get('effective_accuracy', float('nan')):.3f} "
              f"effective accuracy in the simulated evaluation)", flush=True)

        def load(ids: list[str], task: str = task) -> tuple[dict, TaskData]:
            configs = load_live_configs(bundle.profiles, ids, args.preset, threads)
            inputs, labels = eval_inputs(task, n=eval_subset)
            return configs, TaskData(inputs, labels)

        stale = stale_reason(out_dir, f"live_fault_{task}", digest, any(p.exists() for p in paths(out_dir, task)))
        if stale:
            print(f"{stale}: replaying {task} afresh", flush=True)
        record_inputs(out_dir, f"live_fault_{task}", digest, profile_folder)
        result = run_live_fault(bundle, task, methods, settings, out_dir, load, middle_deadline(deadlines[task]),
                                params=params, threads=threads, baseline=baseline, fresh=args.fresh or bool(stale),
                                report=lambda line: print(line, flush=True))
        table = result.summary.pivot_table(index="method", columns="phase", values="hit_rate", sort=False)
        print(table.round(3).to_string())
        print(f"wrote {paths(out_dir, task)[0]}")
    refresh_manifest(out_dir)
    return 0
