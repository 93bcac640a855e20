"""``planner profile``: latency and accuracy of every configuration, resumable after an interruption.

Without ``--scheduler`` the sweep runs in this process, on this machine. With ``--scheduler
tcp://HOST:PORT`` it runs on every machine of that Dask cluster, one sweep per machine (one worker
per host), each into ``results/<preset>/profiles/<its machine tag>/`` on its own disk; copy such a
folder next to this machine's (or share ``results/``) and select it with ``--machine-tag``.
"""

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
    parser.add_argument("--rescale", action="store_true",
                        help="when the drift check finds this machine faster or slower than the folder's stored "
                             "timings (beyond profile.drift_tolerance), divide the new timings by the measured "
                             "factor instead of stopping (recorded per row as timing_scale)")
    parser.add_argument("--rehash", action="store_true",
                        help="profile nothing: check an existing profile folder (schemas, samples vs statistics, "
                             "predictions vs accuracy) and write its MANIFEST.json of sha256 hashes, for a folder "
                             "made before manifests existed")
    parser.add_argument("--resplit", action="store_true",
                        help="profile nothing: apply the calibration split (configs/experimental_protocol.yaml) to an "
                             "existing profile folder, recomputing accuracy (scored part), calibration_accuracy and "
                             "the dominance pruning from its stored predictions, then its MANIFEST.json")
    parser.add_argument("--machine-tag", default=None, metavar="TAG",
                        help="with --rehash or --resplit: the folder results/<preset>/profiles/TAG (default: this machine's, "
                             "else the first); a sweep always writes the folder of the machine it runs on")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="profile on every machine of this existing Dask cluster, one sweep per machine, "
                             "each into its own results/<preset>/profiles/<machine-tag>/ on that machine")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from planner.profile.sweep import run_sweep

    config.preset(args.preset)  # unknown preset -> clear error before any work
    if args.rehash and args.resplit:
        raise ValueError("--rehash and --resplit are two separate commands: run --resplit (it rewrites the manifest)")
    if args.scheduler is not None and (args.rehash or args.resplit):
        raise ValueError("--rehash and --resplit work on a folder on this machine; they do not go with --scheduler")
    if args.resplit:
        from planner.profile.store import profile_root, resplit
        from planner.schema import measured

        profiles = resplit(args.preset, args.machine_tag)
        print(f"{profile_root(args.preset, args.machine_tag)}: accuracy (scored part) and calibration_accuracy of "
              f"{int(measured(profiles).sum())} measured configurations recomputed from their predictions; {len(profiles)} kept")
        return 0
    if args.rehash:
        from planner.profile.store import rehash

        print(f"wrote {rehash(args.preset, args.machine_tag)}")
        return 0
    if args.machine_tag is not None:
        raise ValueError(f"--machine-tag {args.machine_tag} goes with --rehash or --resplit: a sweep writes the folder named by "
                         f"the machine it runs on (use --scheduler to profile other machines)")
    tasks = list(config.TASKS) if args.task == "all" else [args.task]
    if args.remeasure_noisy is not None and not 0 <= args.remeasure_noisy < 1:
        raise ValueError(f"--remeasure-noisy must be a CPU share in [0, 1), got {args.remeasure_noisy}")
    options = {"remeasure_noisy": args.remeasure_noisy, "remeasure": args.remeasure, "reprofile": args.reprofile,
               "rescale": args.rescale}
    if args.scheduler is not None:
        return _on_cluster(args.scheduler, tasks, args.preset, args.device, options)
    devices = [args.device] if args.device else available_devices()
    if "cuda" in devices and "cuda" not in available_devices():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False on this machine")
    results = run_sweep(tasks, args.preset, devices, progress=not args.no_progress, **options)
    for device, profiles in results.items():
        print(f"{device}: {len(profiles)} configurations in profiles.csv")
    return 0


def _on_cluster(scheduler: str, tasks: list[str], preset: str, device: str | None, options: dict) -> int:
    """One sweep per machine of the cluster; prints where each machine's profiles are."""
    from planner.cluster import DaskPool
    from planner.profile.sweep import sweep_per_machine

    with DaskPool(scheduler=scheduler) as pool:
        done = sweep_per_machine(pool.client, tasks, preset, [device] if device else None, **options)
    for row in done.itertuples():
        print(f"{row.host}: {row.device}: {row.configurations} configurations in {row.folder} "
              f"(on that machine; --machine-tag {row.machine_tag})")
    print(f"profiled machine tags: {', '.join(sorted(set(done['machine_tag'])))}")
    return 0
