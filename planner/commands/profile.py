"""``planner profile``: latency and accuracy of every configuration, resumable after an interruption."""

from __future__ import annotations

import argparse

from planner import config
from planner.profile.space import available_devices


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "profile", help="profile latency and accuracy of every configuration (resumes an interrupted sweep)")
    parser.add_argument("--task", default="all", choices=[*config.TASKS, "all"])
    parser.add_argument("--preset", default="quick", help="preset in configs/presets.yaml (quick | full)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="profile one device (default: cpu, plus cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bar")
    parser.add_argument("--remeasure-noisy", type=float, default=None, metavar="SHARE",
                        help="re-time configurations measured while other processes used more than SHARE "
                             "(0-1) of the CPU (column background_cpu_share)")
    parser.add_argument("--remeasure", default=None, metavar="GLOB",
                        help="re-time configurations whose config_id matches GLOB, e.g. 'cifar10/*' "
                             "(accuracy and predictions are kept)")
    parser.add_argument("--reprofile", default=None, metavar="GLOB",
                        help="profile latency and accuracy again for configurations whose config_id matches GLOB "
                             "(e.g. after a model's ONNX file changed)")
    parser.add_argument("--rehash", action="store_true",
                        help="profile nothing: check an existing profile folder (schemas, samples vs statistics, "
                             "predictions vs accuracy) and write its MANIFEST.json of sha256 hashes, for a folder "
                             "made before manifests existed")
    parser.add_argument("--machine-tag", default=None, metavar="TAG",
                        help="with --rehash: the folder results/<preset>/profiles/TAG (default: this machine's, "
                             "else the first)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from planner.profile.sweep import run_sweep

    config.preset(args.preset)  # unknown preset -> clear error before any work
    if args.rehash:
        from planner.profile.store import rehash

        print(f"wrote {rehash(args.preset, args.machine_tag)}")
        return 0
    if args.machine_tag is not None:
        raise ValueError("--machine-tag goes with --rehash (a sweep profiles this machine's own folder)")
    tasks = list(config.TASKS) if args.task == "all" else [args.task]
    devices = [args.device] if args.device else available_devices()
    if "cuda" in devices and "cuda" not in available_devices():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False on this machine")
    if args.remeasure_noisy is not None and not 0 <= args.remeasure_noisy < 1:
        raise ValueError(f"--remeasure-noisy must be a CPU share in [0, 1), got {args.remeasure_noisy}")
    results = run_sweep(tasks, args.preset, devices, progress=not args.no_progress,
                        remeasure_noisy=args.remeasure_noisy, remeasure=args.remeasure,
                        reprofile=args.reprofile)
    for device, profiles in results.items():
        print(f"{device}: {len(profiles)} configurations in profiles.csv")
    return 0
