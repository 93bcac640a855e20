"""``planner validate-sim``: live replay vs simulation at the preset's validation points.

Writes ``results/<preset>/eval/simulator_validation.csv`` (one row per point),
``simulator_validation_live.parquet`` (every live per-request row, with its point) and
``simulator_validation_host.json`` (the host it ran on, against the profiles' host, and when). Live latencies
depend on what else runs on the CPU: run it on a quiet machine, with the threads the profiles used.
"""

from __future__ import annotations

import argparse
import json
import os


def register(subparsers) -> None:
    parser = subparsers.add_parser("validate-sim", help="compare live replay on the real models with the simulator "
                                                        "(results/<preset>/eval/simulator_validation.csv)")
    parser.add_argument("--preset", default="quick", help="preset in configs/presets.yaml (quick|full)")
    parser.add_argument("--machine-tag", default=None, help="which machine's profiles (default: this one)")
    parser.add_argument("--points", nargs="+", default=None, help="subset of the preset's validation point names")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from planner import config
    from planner.models.zoo import eval_inputs
    from planner.paths import results_dir
    from planner.profile.fingerprint import announced_host_record, now_iso, set_threads
    from planner.profile.store import load_bundle, profile_root
    from planner.serving.replay import load_live_configs
    from planner.evaluation.provenance import profiles_digest, record_inputs
    from planner.evaluation.validation import HOST_FILE, TaskData, format_row, run_validation, summary_lines
    from planner.tables import atomic_write_text, refresh_manifest

    preset = config.preset(args.preset)
    settings = preset.validation
    if settings is None:
        raise ValueError(f"preset {args.preset!r} has no validation section in configs/presets.yaml")
    bundle = load_bundle(args.preset, args.machine_tag)
    threads = set_threads(preset.profile.threads)  # as the profiler did, before any session is built
    profiled_threads = bundle.environment.get("n_threads")
    if profiled_threads is not None and int(profiled_threads) != threads:
        print(f"warning: profiles were measured with {profiled_threads} threads, this run uses {threads}")
    for key, value in (bundle.environment.get("thread_env") or {}).items():
        if os.environ.get(key) != value:  # e.g. OMP_WAIT_POLICY changes how idle threads wait
            print(f"warning: profiles were measured with {key}={value}, this run has {key}={os.environ.get(key)}")
    # live stages record the host they measure on: it need not be the one that timed the profiles
    host = {**announced_host_record(bundle.environment, print), "started_at": now_iso()}
    points = [p for p in settings.points if args.points is None or p.name in args.points]
    config_ids = [p.config for p in points]
    print(f"loading {len(set(config_ids))} configuration(s) for {len(points)} point(s)...")
    configs = load_live_configs(bundle.profiles, config_ids, args.preset, threads)
    eval_subset = bundle.environment.get("profile_settings", {}).get("eval_subset", preset.profile.eval_subset)
    data = {}
    for task in sorted({c.split("/")[0] for c in config_ids}):
        inputs, labels = eval_inputs(task, n=eval_subset)
        data[task] = TaskData(inputs, labels)
    result = run_validation(bundle, settings, configs, data, points=args.points, threads=threads,
                            report=lambda row: print(format_row(row), flush=True))
    out_dir = results_dir(args.preset) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_csv = out_dir / "simulator_validation.csv"
    result.table.to_csv(out_csv, index=False)
    result.live_requests.to_parquet(out_dir / "simulator_validation_live.parquet", index=False)
    atomic_write_text(out_dir / HOST_FILE, json.dumps(host, indent=2, sort_keys=True) + "\n")
    record_inputs(out_dir, out_csv.name, profiles_digest(profile_root(args.preset, args.machine_tag)),
                  profile_root(args.preset, args.machine_tag))
    refresh_manifest(out_dir)
    for line in summary_lines(result.table, settings):
        print(line)
    print(f"wrote {out_csv}")
    return 0
