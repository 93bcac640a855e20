"""The work bound in expectation on every trace of the evaluation grid: a bound that holds the queue.

Why: the bounds in expectation of planner/evaluation/clairvoyant.py leave the queue out, and the
clairvoyant bound holds it only at minimum service times with per-example routing, so under bursts
neither says how much of the proposed method's distance to them any online policy must pay.
:class:`planner.evaluation.work_bound.WorkBound` charges each request's batch its expected server
time inside the window it must be answered in, for the example-blind policies every online method
is. This regenerates each grid cell's trace exactly as the evaluation does
(:func:`planner.evaluation.grid.cell_trace`: same seed, rate, examples, catalog and dispatch
overhead) and writes one row per (workload, load, deadline, seed) to
``results/<preset>/benchmarks/work_bound/bounds_<task>.csv``, with the settings beside it
(``record_<task>.json``). Rows are appended a cell at a time; a killed run resumes where it stopped,
and a changed setting starts the task afresh. Simulation-free: about 0.1 s per trace.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/work_bound.py --out

The book reads it through :func:`planner.analysis.bounds.read_work_bound` (limitations chapter and
abstract), which leaves it out where the runs were made from other profiles than the bounds.

``--late`` asks whether holding the late limit and the queue together lowers the bound below the
lower of the two. Why: under bursts the proposed method sheds a burst's tail where the best fixed
configuration in hindsight answers it late (and leads at relaxed deadlines); the work bound holds
the queue, the late-limited bound (:func:`planner.evaluation.clairvoyant.late_limited_bound`) the
late limit, and ``WorkBound.bound(trace, late_share=...)`` both. On the first seed's trace of every
cell at the loads the limit applies to (<= 1) it computes the work bound without and with the limit
(at the share the book's late-limited bound uses: the study's 1 %, or the proposed method's own mean
late share in the cell where higher) and the late-limited bound, one row per trace in
``late_<task>.csv`` (resumable as above). Block edges every ``--block`` requests (default 2) keep it to
a few seconds a trace, as the late price is searched (a dynamic program per price); coarser edges
only loosen both work bounds alike.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/work_bound.py --late --out
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from planner import config
from planner.analysis.bounds import work_bound_dir
from planner.analysis.results import PLANNER_METHOD, SCORECARD_LATE, deadline_classes
from planner.analysis.results import deadlines as preset_deadlines
from planner.tables import append_rows, atomic_write_text, read_rows

KEY = ["workload", "load", "deadline_ms", "seed"]
LATE_LIMIT_LOAD = 1.0  # the study's late limit holds at loads up to this


def record(preset: str, task: str) -> dict:
    """What a task's bounds depend on: the grid's workloads, loads, deadlines, seeds and trace size, the
    profiles (their digest, as the evaluation records it) and the dispatch overhead."""
    from planner.evaluation.grid import resolve_dispatch_overhead
    from planner.evaluation.provenance import profiles_digest
    from planner.evaluation.work_bound import DEFAULT_BLOCK
    from planner.paths import results_dir
    from planner.profile.store import profile_root

    settings = config.preset(preset).evaluate
    workloads = {k: v.model_dump() for k, v in settings.workloads.items()}
    return {"task": task, "profiles_sha256": profiles_digest(profile_root(preset, None)),
            "dispatch_overhead_ms": resolve_dispatch_overhead(settings, results_dir(preset) / "eval"),
            "workloads": json.loads(json.dumps(workloads, sort_keys=True)),
            "loads": [float(x) for x in settings.loads], "seeds": list(settings.seeds),
            "deadlines_ms": [float(d) for d in preset_deadlines(preset)[task]], "n_requests": settings.n_requests,
            "servers": settings.servers, "block": DEFAULT_BLOCK}


def _resume(preset: str, name: str, record_name: str, spec: dict, out: bool) -> tuple:
    """(path, rows already there): the rows of ``name`` when its record matches ``spec``; otherwise the
    file is started afresh (another grid's rows). With ``out`` the record is (re)written."""
    folder = work_bound_dir(preset)
    path, done_path = folder / name, folder / record_name
    previous = pd.DataFrame(columns=KEY)
    if out and path.exists():
        if done_path.exists() and json.loads(done_path.read_text()) == spec:
            previous = read_rows(path, KEY)
        else:
            path.unlink()
    if out:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(done_path, json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return path, previous


def _cells(preset: str, task: str, spec: dict, out: bool, name: str, record_name: str, desc: str,
           row: Callable[..., dict]) -> pd.DataFrame:
    """Every trace of ``spec``'s workloads, loads, deadlines and seeds not already in the task's CSV
    ``name``, one row each: the key and what ``row(trace, catalog, ids, workload, load, deadline)``
    adds (appended a cell at a time when ``out``)."""
    from planner.evaluation.grid import Cell, cell_trace
    from planner.profile.store import load_bundle

    settings = config.preset(preset).evaluate
    path, previous = _resume(preset, name, record_name, spec, out)
    bundle = load_bundle(preset, None)
    seen = set(map(tuple, previous[KEY].astype(object).to_numpy().tolist()))
    frames = [previous]
    cells = [(w, float(load)) for w in settings.workloads for load in spec["loads"]]
    for workload, load in tqdm(cells, desc=f"{desc} ({task})", unit="cell"):
        rows = []
        for deadline in spec["deadlines_ms"]:
            for seed in spec["seeds"]:
                if (workload, load, float(deadline), int(seed)) in seen:
                    continue
                trace, catalog, ids = cell_trace(bundle, Cell(workload, load, float(deadline), int(seed)), task,
                                                 settings, spec["dispatch_overhead_ms"])
                rows.append({"task": task, "workload": workload, "load": load, "deadline_ms": float(deadline),
                             "seed": int(seed), **row(trace, catalog, ids, workload, load, float(deadline))})
        if rows:
            frame = pd.DataFrame(rows)
            if out:
                append_rows(path, frame)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def run_task(preset: str, task: str, out: bool) -> pd.DataFrame:
    """Every grid trace of ``task``, one row each (appended to the task's CSV as it goes when ``out``)."""
    from planner.evaluation.work_bound import WorkBound

    settings = config.preset(preset).evaluate
    spec = record(preset, task)
    bounds: list[WorkBound] = []  # built once, from the first trace's catalog and pool

    def row(trace, catalog, ids, *_) -> dict:
        bounds[:] = bounds or [WorkBound(catalog, task, ids, block=spec["block"])]
        return {"n_requests": len(trace), "servers": settings.servers,
                "dispatch_overhead_ms": spec["dispatch_overhead_ms"],
                "work_bound": bounds[0].bound(trace, settings.servers)}

    return _cells(preset, task, spec, out, f"bounds_{task}.csv", f"record_{task}.json", "work bound", row)


def _late_shares(preset: str, task: str) -> pd.Series:
    """Per (workload, load, deadline): the study's late limit, or the proposed method's mean late share
    over the seeds where that is higher (as planner.analysis.bounds.chance_cells takes it)."""
    from planner.paths import results_dir

    runs = pd.read_csv(results_dir(preset) / "eval" / f"runs_{task}.csv")
    own = runs[runs["method"] == PLANNER_METHOD].groupby(KEY[:3])["late_rate"].mean()
    return np.maximum(own, SCORECARD_LATE)


def run_late(preset: str, task: str, out: bool, block: int) -> pd.DataFrame:
    """``--late``: the first seed's trace of each cell at loads <= 1, one row each (appended as it goes)."""
    from planner.evaluation.clairvoyant import late_limited_bound
    from planner.evaluation.work_bound import WorkBound

    settings = config.preset(preset).evaluate
    shares = _late_shares(preset, task)
    spec = {**record(preset, task), "block": block, "seeds": list(settings.seeds)[:1],
            "loads": [float(x) for x in settings.loads if x <= LATE_LIMIT_LOAD],
            "late_shares": {f"{w}/{l:g}/{d:g}": round(float(v), 6) for (w, l, d), v in shares.items()}}
    classes = deadline_classes(preset)
    bounds: list[WorkBound] = []

    def row(trace, catalog, ids, workload, load, deadline) -> dict:
        bounds[:] = bounds or [WorkBound(catalog, task, ids, block=block)]
        share = float(shares.loc[(workload, load, deadline)])
        mix = tuple((s, deadline * k) for s, k in classes[workload]) if workload in classes else deadline
        return {"late_share": share, "block": block, "work": bounds[0].bound(trace, settings.servers),
                "late_work": bounds[0].bound(trace, settings.servers, late_share=share),
                "late_limited": late_limited_bound(catalog, task, ids, mix, share)}

    return _cells(preset, task, spec, out, f"late_{task}.csv", f"late_record_{task}.json", "late work bound", row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--task", nargs="+", default=list(config.TASKS), choices=list(config.TASKS))
    parser.add_argument("--out", action="store_true", help="write results/<preset>/benchmarks/work_bound/")
    parser.add_argument("--late", action="store_true", help="the work bound held to the late limit too (a sample)")
    parser.add_argument("--block", type=int, default=2, help="block edges every this many requests (--late)")
    args = parser.parse_args(argv)
    for task in args.task:
        start = time.perf_counter()
        if not args.late:
            rows = run_task(args.preset, task, args.out)
            print(f"{task}: {len(rows)} traces bounded, {time.perf_counter() - start:.0f} s", flush=True)
            continue
        rows = run_late(args.preset, task, args.out, args.block)
        gain = np.minimum(rows["work"], rows["late_limited"]) - rows["late_work"]
        print(f"{task}: {len(rows)} traces in {time.perf_counter() - start:.0f} s; the joint bound is below the lower "
              f"of the two by more than 0.005 on {(gain > 0.005).sum()} (most {gain.max():.3f}, mean "
              f"{gain.mean():.4f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
