"""The proposed method with almost no queue: the grid's Poisson cells at a light load, scored as the grid scores them.

Why: the bounds in expectation (``chance_bound``, its example-blind form, ``late_limited_bound`` in
planner/evaluation/clairvoyant.py) leave the queue out, so at the grid's loads the distance from the
anytime policy to them mixes what the queue costs with what the policy itself leaves. At load 0.05
about one request in twenty finds the server busy, so there the distance is the policy's own (and
the little queue that is left). This runs the anytime policy, the best fixed configuration in
hindsight and the clairvoyant bound on the preset's Poisson workloads (``steady`` and
``steady-mixed``: one deadline per trace, and the mixed deadline classes) at ``--load``, over every
deadline of the sweep and the evaluation's own seeds and scored examples, exactly as a grid cell
(:func:`planner.evaluation.grid.run_cell`), and writes one row per run to
``results/<preset>/benchmarks/no_queue/runs_<task>.csv`` with the settings beside it
(``record_<task>.json``). A task whose record matches is not run again; a killed run loses at most
the task it was on. Simulation only (about 2 min per task on 2 cores).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/no_queue.py --out

The book reads it through :func:`planner.analysis.bounds.no_queue_text` (limitations chapter).
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
from tqdm.auto import tqdm

from planner import config
from planner.analysis.bounds import NO_QUEUE_METHODS, no_queue_dir
from planner.analysis.results import deadlines as preset_deadlines
from planner.tables import atomic_write, atomic_write_text

WORKLOADS = ("steady", "steady-mixed")


def record(preset: str, task: str, load: float) -> dict:
    """What a task's runs depend on: the load, workloads, methods, seeds and the methods' parameters."""
    settings = config.preset(preset).evaluate
    return {"task": task, "load": float(load), "workloads": [w for w in WORKLOADS if w in settings.workloads],
            "methods": list(NO_QUEUE_METHODS), "seeds": list(settings.seeds),
            "deadlines_ms": [float(d) for d in preset_deadlines(preset)[task]],
            "method_params": json.loads(json.dumps(settings.model_dump()["method_params"], sort_keys=True)),
            "n_requests": settings.n_requests}


def run_task(preset: str, task: str, load: float) -> pd.DataFrame:
    """Every (workload, deadline, seed) of ``record`` at ``load``, one row per method run."""
    from planner.evaluation.grid import Cell, resolve_dispatch_overhead, run_cell
    from planner.paths import results_dir
    from planner.profile.store import load_bundle

    settings = config.preset(preset).evaluate
    missing = [m for m in NO_QUEUE_METHODS if m not in (settings.methods or NO_QUEUE_METHODS)]
    if missing:
        raise SystemExit(f"the {preset} evaluation does not run {missing}")
    bundle = load_bundle(preset, None)
    overhead = resolve_dispatch_overhead(settings, results_dir(preset) / "eval")
    spec = record(preset, task, load)
    cells = [Cell(w, float(load), d, int(s)) for w in spec["workloads"] for d in spec["deadlines_ms"]
             for s in spec["seeds"]]
    rows = [run_cell(bundle, cell, task, settings, overhead, list(NO_QUEUE_METHODS)).runs
            for cell in tqdm(cells, desc=f"no queue ({task})", unit="cell")]
    return pd.concat(rows, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--task", nargs="+", default=list(config.TASKS), choices=list(config.TASKS))
    parser.add_argument("--load", type=float, default=0.05, help="arrival rate / the seed rule's capacity")
    parser.add_argument("--out", action="store_true", help="write results/<preset>/benchmarks/no_queue/")
    args = parser.parse_args(argv)
    if not 0.0 < args.load <= 0.2:
        parser.error(f"--load {args.load:g}: this study is about a light load, in (0, 0.2]")
    folder = no_queue_dir(args.preset)
    for task in args.task:
        spec = record(args.preset, task, args.load)
        done = folder / f"record_{task}.json"
        if args.out and done.exists() and (folder / f"runs_{task}.csv").exists() \
                and json.loads(done.read_text()) == spec:
            print(f"{task}: already run with these settings ({folder})", flush=True)
            continue
        start = time.perf_counter()
        runs = run_task(args.preset, task, args.load)
        print(f"{task}: {len(runs)} runs in {time.perf_counter() - start:.0f} s", flush=True)
        if args.out:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / f"runs_{task}.csv", lambda p, f=runs: f.to_csv(p, index=False))
            atomic_write_text(done, json.dumps(spec, indent=1, sort_keys=True) + "\n")  # after the runs it vouches for
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
