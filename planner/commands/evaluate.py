"""``planner evaluate``: trace-driven evaluation of every method on a preset's measured profiles.

Writes under ``results/<preset>/eval/``: ``runs_<task>.csv`` (one row per method x workload x load
x deadline x seed; appended as runs finish, so a rerun resumes), ``summary_<task>.csv`` (mean and
t-based CI over seeds) and ``traces_<task>.csv`` (rate, CV and burstiness of each generated trace).

Cells run as Dask tasks: on a local cluster of ``--workers`` processes bound to 127.0.0.1 (default:
one per core), or on an existing cluster (``--scheduler tcp://HOST:PORT``); ``--workers 0`` runs
them one after another in this process (for debugging). The rows are the same either way.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from planner import config
from planner.config import TASKS, EvaluatePreset
from planner.paths import results_dir
from planner.plan.registry import check_method_params, check_methods, default_methods
from planner.schema import ProfileBundle
from planner.tables import atomic_write_text, read_rows, refresh_manifest

if TYPE_CHECKING:  # the evaluation (and Dask) load when the command runs, not with every `planner --help`
    from planner.cluster import DaskPool


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="simulate every method on request traces (results/<preset>/eval/)")
    parser.add_argument("--task", required=True, choices=[*TASKS, "all"])
    parser.add_argument("--preset", default="quick", help="preset in configs/presets.yaml (quick|full)")
    parser.add_argument("--machine-tag", default=None, help="which machine's profiles (default: this one)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="registered methods to run (default: the preset's, else the registry's defaults)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier runs instead of resuming")
    parser.add_argument("--rerun", nargs="+", default=None, metavar="METHOD",
                        help="discard the earlier runs of these methods and run them again, keeping the others "
                             "(a method whose code or parameters changed: runs are keyed by cell and method name)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--workers", type=_workers, default=None, metavar="N",
                        help="worker processes of a local Dask cluster on 127.0.0.1 (default: one per core); "
                             "0 = no cluster, cells run one after another in this process")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="run the cells on this existing Dask cluster instead (its workers must import planner)")
    parser.set_defaults(func=run)


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--workers takes a whole number >= 0, got {text!r}")
    return value


def _load_bundle(preset: str, machine_tag: str | None):
    from planner.profile.store import load_bundle

    return load_bundle(preset, machine_tag)


def run(args: argparse.Namespace) -> int:
    from planner.cluster import DaskPool
    from planner.evaluation.grid import resolve_dispatch_overhead
    from planner.evaluation.provenance import profiles_digest
    from planner.profile.store import profile_root

    settings = config.preset(args.preset).evaluate
    if args.methods:
        settings = settings.model_validate({**settings.model_dump(), "methods": args.methods})
    where = f"configs/presets.yaml: presets.{args.preset}.evaluate"
    check_methods(settings.methods, f"{where}.methods" if not args.methods else "--methods")
    if args.rerun:
        check_methods(args.rerun, "--rerun")
        missing = sorted(set(args.rerun) - set(settings.methods or default_methods()))
        if missing:
            raise ValueError(f"--rerun {missing}: not among the methods this evaluation runs; add them to --methods")
    check_method_params(settings.method_params, f"{where}.method_params")
    bundle = _load_bundle(args.preset, args.machine_tag)
    profile_folder = profile_root(args.preset, args.machine_tag)
    digest = profiles_digest(profile_folder)
    profiled = sorted(set(bundle.profiles["task"]))
    tasks = profiled if args.task == "all" else [args.task]
    out_dir = results_dir(args.preset) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    overhead = resolve_dispatch_overhead(settings, out_dir, fresh=args.fresh)
    print(f"simulated per-batch dispatch overhead: {overhead:.3f} ms ({settings.dispatch_overhead})")
    for task in tasks:
        if task not in profiled:
            raise ValueError(f"no {task} profiles in the {args.preset} bundle (profiled tasks: {profiled})")
    serial = args.workers == 0 and args.scheduler is None
    # one cluster for every task, started only when a cell is left to run
    with nullcontext(None) if serial else DaskPool(args.workers, args.scheduler) as pool:
        for task in tasks:
            _evaluate_task(args, task, settings, bundle, out_dir, overhead, pool, (digest, profile_folder))
    refresh_manifest(out_dir)  # content hashes of the finished tables, checked when they are read
    return 0


def _evaluate_task(args: argparse.Namespace, task: str, settings: EvaluatePreset, bundle: ProfileBundle,
                   out_dir: Path, overhead: float, pool: DaskPool | None, profiles: tuple[str, Path]) -> None:
    """One task's grid into ``out_dir`` (runs, traces, summary), resuming from the runs already there.

    ``profiles`` is (digest, folder) of the bundle: runs planned on other profiles are not resumed
    (:mod:`planner.evaluation.provenance`), they are discarded and the grid runs afresh.
    """
    from planner.evaluation.provenance import record_inputs, stale_reason
    from planner.analysis.summary import summarize_runs
    from planner.evaluation.grid import evaluate

    deadlines = (settings.deadlines or config.deadlines().deadlines).get(task)
    if not deadlines:
        raise ValueError(f"no deadlines configured for {task}")
    runs_csv = out_dir / f"runs_{task}.csv"
    traces_csv = out_dir / f"traces_{task}.csv"
    stale = stale_reason(out_dir, runs_csv.name, profiles[0], runs_csv.exists() or traces_csv.exists())
    if stale:
        print(f"{stale}: evaluating {task} afresh")
    if args.fresh or stale:
        runs_csv.unlink(missing_ok=True)
        traces_csv.unlink(missing_ok=True)
    elif args.rerun and runs_csv.exists():
        _forget_methods(runs_csv, args.rerun)
    record_inputs(out_dir, runs_csv.name, *profiles)
    result = evaluate(bundle, task, settings, list(deadlines), out_csv=runs_csv, progress=not args.no_progress,
                      dispatch_overhead_ms=overhead, traces_csv=traces_csv, workers=0, pool=pool)
    _dedupe_traces(traces_csv)
    if result.runs["seed"].nunique() >= 2:  # every method in the runs file, earlier ones included
        summary = summarize_runs(result.runs, confidence=config.protocol().confidence)
        _write_summary(out_dir / f"summary_{task}.csv", summary)
    print(f"{task}: {len(result.runs)} runs in {runs_csv}")


def _write_summary(path: Path, summary: pd.DataFrame) -> None:
    """Write ``summary`` unless the file already holds it. Why: a resume that runs nothing re-sums the
    same runs read back in another order, which moves last digits only, and rewriting would dirty a
    committed study for nothing; a summary that differs in substance (new runs, a killed run's
    missing summary) is always written."""
    if path.exists():
        try:  # pandas' comparison: same rows and columns, numbers within rtol 1e-9 (NaN equal to NaN)
            pd.testing.assert_frame_equal(pd.read_csv(path), summary.reset_index(drop=True), check_dtype=False,
                                          check_exact=False, rtol=1e-9, atol=1e-12)
            return
        except (AssertionError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            pass  # differs, or unreadable: written afresh below
    atomic_write_text(path, summary.to_csv(index=False))


def _forget_methods(runs_csv: Path, methods: list[str]) -> None:
    """Drop the rows of ``methods`` from ``runs_csv`` (rewritten atomically: a kill leaves the old file
    or the new one), so that the resume runs them again."""
    from planner.evaluation.grid import KEY_COLUMNS

    runs = read_rows(runs_csv, KEY_COLUMNS)
    drop = runs["method"].isin(methods)
    print(f"{runs_csv.name}: running {int(drop.sum())} run(s) of {sorted(set(methods))} again")
    atomic_write_text(runs_csv, runs[~drop].to_csv(index=False))


def _dedupe_traces(path: Path) -> None:
    """One row per generated trace: a cell rerun after a kill appends its trace row again."""
    if not path.exists() or path.stat().st_size == 0:
        return
    keys = ["task", "workload", "load", "deadline_ms", "seed", "n_requests", "servers", "queue", "drop_expired"]
    traces = read_rows(path, keys)
    deduped = traces.drop_duplicates(keys, keep="last")
    if len(deduped) < len(traces):
        atomic_write_text(path, deduped.to_csv(index=False))
