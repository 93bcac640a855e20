"""``planner live-server``: ``anytime``, ``seed_p95`` and the best baseline behind the HTTP server on the real
models, at the preset's loads and deadlines, with the server's overhead against the in-process replay, the
simulator validated against the server, and three fault injections (a raising configuration, a CPU hog,
a load spike).

Writes ``results/<preset>/live/server_*`` (see :mod:`planner.evaluation.live_server`); a rerun resumes with
what is not yet done. Sizes come from the preset's ``live_server`` section. Live latencies depend on what
else runs on the CPU: run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import os

from planner.config import TASKS


def register(subparsers) -> None:
    parser = subparsers.add_parser("live-server", help="the methods behind the HTTP server over loopback: runs, "
                                                       "overhead, validation, faults (results/<preset>/live/)")
    parser.add_argument("--task", required=True, choices=[*TASKS, "all"])
    parser.add_argument("--preset", default="quick", help="preset in configs/presets.yaml (quick|full)")
    parser.add_argument("--machine-tag", default=None, help="which machine's profiles (default: this one)")
    parser.add_argument("--baseline", default=None,
                        help="comparison method (default: the best online non-proposed method of the preset's "
                             "evaluation summary at the steady workload and the first load)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier runs instead of resuming")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from planner import config
    from planner.splits import example_ids
    from planner.evaluation.live_fault import best_baseline
    from planner.evaluation.live_server import Serving, paths, pick_deadlines, run_live_server
    from planner.evaluation.loadgen import LoadGenSettings, run_loadgen
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
    settings = preset.live_server
    if settings is None:
        raise ValueError(f"configs/presets.yaml: presets.{args.preset} has no live_server section")
    params = check_method_params(preset.evaluate.method_params, f"configs/presets.yaml: presets.{args.preset}."
                                                                "evaluate.method_params")
    serving = Serving(preset.evaluate.servers, preset.evaluate.queue, preset.evaluate.drop_expired,
                      preset.evaluate.percentile)
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if busy > 0.5:
        print(f"warning: 1-minute load average {busy:.2f}: other work on this CPU contaminates live timings")
    bundle = load_bundle(args.preset, args.machine_tag)
    profile_folder = profile_root(args.preset, args.machine_tag)
    digest = profiles_digest(profile_folder)
    threads = set_threads(preset.profile.threads)
    eval_subset = bundle.environment.get("profile_settings", {}).get("eval_subset", preset.profile.eval_subset)
    steady = next((name for name, spec in preset.evaluate.workloads.items() if spec.kind == "poisson"), "steady")
    sweep = preset.evaluate.deadlines or config.deadlines().deadlines
    eval_dir, out_dir = results_dir(args.preset) / "eval", results_dir(args.preset) / "live"
    tasks = sorted(set(bundle.profiles["task"])) if args.task == "all" else [args.task]
    for task in tasks:
        if args.baseline:
            baseline = {"name": args.baseline, "source": "--baseline"}
        else:
            summary_csv = eval_dir / f"summary_{task}.csv"
            if not summary_csv.exists():
                raise FileNotFoundError(f"missing {summary_csv} to choose the best baseline from; run `python -m "
                                        f"planner evaluate --task {task} --preset {args.preset}` or pass --baseline")
            unfit = stale_reason(eval_dir, f"runs_{task}.csv", digest, True)
            if unfit:
                raise ValueError(f"{unfit}, so {summary_csv.name} cannot choose the best baseline: run `python -m "
                                 f"planner evaluate --task {task} --preset {args.preset}` first or pass --baseline")
            load0 = settings.loads[0]
            summary = pd.read_csv(summary_csv)
            if not np.isclose(summary["load"].astype(float), load0).any():  # the evaluation's nearest load
                load0 = float(min(set(summary["load"].astype(float)), key=lambda x: abs(x - load0)))
            name, score = best_baseline(summary, steady, load0)
            baseline = {"name": name, "effective_accuracy": score, "workload": steady, "load": load0,
                        "source": f"{summary_csv.name}: mean over deadlines; roles baseline/ablation; seed_p95 excluded"}
        methods = list(dict.fromkeys([proposed(), "seed_p95", baseline["name"]]))
        deadlines = pick_deadlines(sweep[task], settings.deadline_quantiles)
        print(f"{task}: {methods} at loads {settings.loads} and deadlines {deadlines} ms", flush=True)

        def load(ids: list[str], task: str = task) -> tuple[dict, TaskData]:
            configs = load_live_configs(bundle.profiles, ids, args.preset, threads)
            inputs, labels = eval_inputs(task, n=eval_subset)
            return configs, TaskData(inputs, labels)

        loadgen = None
        if settings.loadgen_queries:
            def loadgen(url: str, rate: float, deadline_ms: float, task: str = task) -> None:
                n = settings.loadgen_queries
                lg = LoadGenSettings(rate, deadline_ms, min_queries=n, max_queries=n, min_duration_s=1.0,
                                     max_duration_s=max(5.0, 4.0 * n / rate), seed=settings.seed,
                                     path_quantile=settings.path_quantile)
                labels = eval_inputs(task, n=eval_subset)[1]
                result = run_loadgen(url, lg, example_ids(bundle, task), out_dir / "loadgen" / f"{task}_{proposed()}",
                                     labels)
                print(f"loadgen: {len(result.requests)} queries, result {result.summary.get('Result is')}, "
                      f"p99 {result.summary.get('99.00 percentile latency (ns)')} ns", flush=True)

        stored = paths(out_dir, task)
        stale = stale_reason(out_dir, f"server_{task}", digest, any(p.exists() for p in stored.values()))
        if stale:
            print(f"{stale}: serving {task} afresh", flush=True)
        record_inputs(out_dir, f"server_{task}", digest, profile_folder)
        result = run_live_server(bundle, task, methods, settings, out_dir, load, deadlines, serving, params,
                                 baseline, loadgen, fresh=args.fresh or bool(stale),
                                 report=lambda line: print(line, flush=True))
        if not result.summary.empty:
            print(result.summary[["method", "load", "deadline_ms", "n_sent", "n_lost", "hit_rate",
                                  "lat_p95_ms"]].round(3).to_string(index=False))
        if not result.faults.empty:
            print(result.faults[["fault", "n_sent", "n_answered", "n_lost", "n_fallback"]].to_string(index=False))
    refresh_manifest(out_dir)
    return 0
