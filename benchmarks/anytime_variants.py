"""Parameter variants of the anytime policy on development seeds and examples, side by side on the same traces.

Why: every change to the proposed method's parameters (the late controller's step, the member
cut-off's starting quantile, ...) trades effective accuracy against late answers, and a change
chosen on the evaluation's own runs would be tuned on the data it is then scored on. This runs
the policy, and only the policy, on the full grid's cells (every workload, load and deadline) with
*development* seeds that the preset's evaluation does not use (refused otherwise) and on
*development examples* (:func:`planner.analysis.tuning.development_bundle`): the policy fits its
accuracies on one half of the calibration part and its requests are drawn from, and credited on,
the other half, so nothing of the scored part informs a parameter (other seeds alone still drew
every request from the scored part, as the studies did until 2026-12-06). It runs once with the
preset's parameters (variant ``preset``) and once per ``--variant`` (parameters changed over the
preset's), all on the same traces and service draws. It reports, per task and variant, the change
in mean effective accuracy over cells (a cell: the mean over its deadlines and seeds) against the
``--reference`` variant, the worst cell's change, and how many cells at load <= 1 serve more than
1 % of requests late (the issue's limit) (:func:`planner.analysis.tuning.compare_variants`).
Simulation only.

Each study has a folder of its own (``--study``, under results/full/benchmarks/anytime_variants/),
and ``benchmarks/anytime_studies.sh`` runs them all, with the commands that made them. One, for example:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study late_target \
        --reference preset --variant target05='{"late_target": 0.005}' --variant target07='{"late_target": 0.007}'

Every study was re-run on 2026-12-08 (that script, 60 min on 2 cores) on the preset of that day, with
each development cell at the evaluation's arrival rate (:func:`planner.evaluation.grid.fit_load_reference`).
Before, a development cell's load was a share of the capacity of the configuration the seed rule picks
on the development half's accuracies, and at some deadlines that was another configuration than the
evaluation's (CIFAR-10: at 2 ms 1.6 times the evaluation's rate, at 50 ms a twelfth of it; SST-2 at 35
ms 2.4 times it), so those cells were other loads. What each study asks, and when it first ran:

- ``late_step`` (2026-12-03, re-run on development examples 2026-12-06): the late controller's step
  (0.01 -> 0.03 on 2026-12-03, back to 0.01 on 2026-12-06), the member cut-off's starting quantile and
  the late-share target.
- ``late_target`` (2026-12-06): the late-share target, chosen on 2026-12-02 on the evaluation's own grid.
- ``arrival_spread`` (2026-12-05): the expected arrivals spread as a Poisson process's arrival times
  (the default since that day) against evenly spaced ones.
- ``accuracy_tolerance`` (2026-12-05): 0.02, the preset since that day, against 0.002 (``previous``).
- ``stoppable_quantile`` (2026-12-06): the member cut-off of one-request ONNX Runtime calls the server
  can stop at their own quantile (0.5 in the preset since that day) against the steered one (``none``).
- ``expected_arrivals`` (2026-12-07): whether padding the window with the expected arrivals still pays
  once the simulator serves cascades stage by stage (live, in the CIFAR-10 fault replay at 5 ms, the
  policy without them served ResNet18 more and scored higher in trial simulations of that one cell).
- ``arrival_model`` (2026-12-07): the expected arrivals from the trace's observed gaps (``empirical``,
  the preset) against a Poisson process at the observed rate.
- ``shed_frees_time`` (2026-12-07): a shed request valued as taking no server time (a head-batch member
  below the cut-off makes room for the next one, as the serving rule fills a batch; one behind the head
  batch that would be late at the median is shed when its turn comes) against holding its place
  (``before``).
- ``geometric_reference`` (2026-12-07): each observed service time compared with its configuration's
  geometric mean in the profile instead of its median. The log-space calibration settles at the mean log
  ratio, so against the median a cascade's own profiled draws (two humps: the first stage alone, or both)
  teach it 0.82x-1.42x its speed (x1.17 for SST-2's MiniLM-L3 > MiniLM-L6 @ 0.7, x1.42 for CIFAR-10's
  MobileNetV2 > ResNet18 @ 0.7), and a plain model's about 1.

The ``preset`` runs of the first study are copied into the other folders before they run
(:func:`planner.analysis.tuning.reusable_runs` accepts them: same seeds, parameters, examples and rates).
Each (task, variant) is written as soon as it finishes (``--out``), keyed by its full parameters,
seeds, examples and rates, so a killed run resumes at the next variant and a changed preset is never
read as an old run.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from planner import config
from planner.analysis.results import SCORECARD_LATE
from planner.analysis.results import deadlines as preset_deadlines
from planner.analysis.tuning import (DEVELOPMENT, PRESET, SCORED_RATES, compare_variants, development_bundle, reusable_runs,
                                     variants_dir)
from planner.paths import results_dir
from planner.plan.registry import method_params
from planner.tables import atomic_write

METHOD = "anytime"
DEV_SEEDS = (0, 1)


def full_params(preset: str, changes: dict) -> dict:
    """The method's parameters of a variant: the preset's, with ``changes`` (validated, so a bad
    variant fails here, by name), every field written out."""
    raw = {**(config.preset(preset).evaluate.method_params.get(METHOD) or {}), **changes}
    return method_params(METHOD, raw, "--variant").model_dump()


def _settings(preset: str, seeds: list[int], params: dict):
    settings = config.preset(preset).evaluate
    given = {**settings.method_params, METHOD: params}
    return settings.model_validate({**settings.model_dump(), "method_params": given, "seeds": seeds,
                                    "methods": [METHOD]})


def run_variant(preset: str, task: str, name: str, params: dict, seeds: list[int]) -> pd.DataFrame:
    """Every cell of the preset's grid on ``seeds``, served by the anytime policy with ``params``
    (:func:`full_params`) on development examples (:func:`planner.analysis.tuning.development_bundle`:
    accuracies from one half of the calibration part, requests from the other), each cell's trace at
    the evaluation's arrival rate (:func:`planner.evaluation.grid.fit_load_reference`); one row per cell,
    the evaluation's run columns."""
    from planner.evaluation.grid import fit_load_reference, grid_cells, resolve_dispatch_overhead, run_cell
    from planner.profile.store import load_bundle

    settings = _settings(preset, seeds, params)
    scored = load_bundle(preset, None)
    bundle, pool = development_bundle(scored, task)
    rates = fit_load_reference(scored, settings.percentile)  # each cell at the evaluation's own arrival rate
    overhead = resolve_dispatch_overhead(settings, results_dir(preset) / "eval")
    rows = [run_cell(bundle, cell, task, settings, overhead, [METHOD], example_pool=pool, load_reference=rates).runs
            for cell in grid_cells(settings, preset_deadlines(preset)[task])]
    return pd.concat(rows, ignore_index=True).assign(variant=name, params=json.dumps(params, sort_keys=True),
                                                     examples=DEVELOPMENT, arrival_rates=SCORED_RATES)


def _job(args: tuple) -> tuple[str, str, pd.DataFrame, float]:
    preset, task, name, params, seeds = args
    start = time.perf_counter()
    return task, name, run_variant(preset, task, name, params, seeds), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--task", nargs="+", default=["sst2", "cifar10"], choices=list(config.TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEV_SEEDS))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="a variant: its name and the anytime parameters it changes, as JSON")
    parser.add_argument("--reference", default=PRESET, help="the variant the others are compared with")
    parser.add_argument("--jobs", type=int, default=2, help="variants run at once (processes)")
    parser.add_argument("--out", action="store_true",
                        help="write results/<preset>/benchmarks/anytime_variants/<study>/ (and resume from it)")
    parser.add_argument("--study", default=None, help="the study's name (its folder); needed with --out")
    args = parser.parse_args(argv)
    if args.out and not args.study:
        parser.error("--out needs --study NAME: each study is written to a folder of its own")
    evaluated = set(config.preset(args.preset).evaluate.seeds)
    if evaluated & set(args.seeds):
        parser.error(f"seeds {sorted(evaluated & set(args.seeds))} are the {args.preset} evaluation's own: "
                     "tune on development seeds")
    variants = {PRESET: full_params(args.preset, {})}
    for text in args.variant:
        name, sep, raw = text.partition("=")
        if not sep or not name or name in variants:
            parser.error(f"--variant takes NAME=JSON with a new name (not {sorted(variants)}), got {text!r}")
        try:
            changes = json.loads(raw)
        except json.JSONDecodeError as exc:
            parser.error(f"--variant {name}: not JSON ({exc})")
        if not isinstance(changes, dict):
            parser.error(f"--variant {name}: the parameters must be a JSON object")
        try:
            variants[name] = full_params(args.preset, changes)
        except config.ConfigError as exc:
            parser.error(str(exc))
    if args.reference not in variants:
        parser.error(f"--reference {args.reference!r} is not a variant ({sorted(variants)})")
    folder = variants_dir(args.preset, args.study)
    done, todo = [], []
    for task in args.task:
        for name, params in variants.items():
            path = folder / f"{task}_{name}.csv"
            old = reusable_runs(path, args.seeds, params, args.reference) if args.out else None
            if old is not None:
                done.append(old)
            else:
                todo.append((args.preset, task, name, params, args.seeds))
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for task, name, frame, seconds in pool.map(_job, todo):
            print(f"{task} {name}: {len(frame)} cells in {seconds:.0f} s", flush=True)
            frame["reference"] = args.reference  # what the book compares this study's variants with
            if args.out:
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write(folder / f"{task}_{name}.csv", lambda p, f=frame: f.to_csv(p, index=False))
            done.append(frame)
    summary = compare_variants(pd.concat(done, ignore_index=True), SCORECARD_LATE, args.reference)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.round(4).to_string(index=False))
    if args.out:
        atomic_write(folder / "summary.csv", lambda p: summary.to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
