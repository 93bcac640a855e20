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

Each study has a folder of its own (``--study``, under results/full/benchmarks/anytime_variants/).
The first three studies were re-run on development examples on 2026-12-06, on the preset of
that day (``late_step`` 0.01, ``accuracy_tolerance`` 0.02, expected arrivals spread), so each
variant is that preset with the parameters named changed (the first three commands below, one after the
other, ``--jobs 2`` on 2 cores). The ``late_step`` study (the step moved 0.01 -> 0.03 on
2026-12-03 and back to 0.01 on 2026-12-06, both times on scored-part runs of development seeds):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study late_step \
        --reference preset --variant step03='{"late_step": 0.03}' --variant start08='{"member_quantile": 0.8}' \
        --variant target07='{"late_target": 0.007}' \
        --variant step02start08='{"late_step": 0.02, "member_quantile": 0.8}'

The ``arrival_spread`` study compares the expected arrivals spread as a Poisson process's arrival
times (the default since 2026-12-05) with evenly spaced ones:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study arrival_spread \
        --reference spaced --variant spaced='{"arrival_spread": false}'

The ``accuracy_tolerance`` study (0.02, the preset since 2026-12-05, against 0.002, ``previous``):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study accuracy_tolerance \
        --reference previous --variant previous='{"accuracy_tolerance": 0.002}' \
        --variant tol005='{"accuracy_tolerance": 0.005}' --variant tol01='{"accuracy_tolerance": 0.01}' \
        --variant tol015='{"accuracy_tolerance": 0.015}' --variant tol03='{"accuracy_tolerance": 0.03}'

The ``late_target`` study (2026-12-06, development examples from the start) compares the late-share
target, chosen in 2026-12-02 on the evaluation's own grid, with others:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study late_target \
        --reference preset --variant target05='{"late_target": 0.005}' --variant target07='{"late_target": 0.007}' \
        --variant target08='{"late_target": 0.008}' --variant target095='{"late_target": 0.0095}'

The ``stoppable_quantile`` study (2026-12-06, development examples, with the server stopping calls at
the deadline) compares the member cut-off of one-request ONNX Runtime calls at their own quantile with
the usual steered cut-off (``preset``: none, the preset of that day):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study stoppable_quantile \
        --reference preset --variant stop05='{"stoppable_quantile": 0.05}' \
        --variant stop25='{"stoppable_quantile": 0.25}' --variant stop50='{"stoppable_quantile": 0.5}' \
        --variant stop65='{"stoppable_quantile": 0.65}'

The ``expected_arrivals`` study (2026-12-07, development examples, the simulator serving cascades stage
by stage) asks whether padding the window with the expected arrivals still pays: live, in the CIFAR-10
fault replay (5 ms, steady load), the policy without them served ResNet18 more and scored higher in
trial simulations of that one cell:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study expected_arrivals \
        --reference preset --variant off='{"expected_arrivals": false, "arrival_model": "poisson"}' --jobs 2

The ``shed_frees_time`` study (2026-12-07, development examples) compares valuing a shed request as taking
no server time (a head-batch member below the cut-off makes room for the next one, as the serving rule
fills a batch; one behind the head batch that would be late at the median is shed when its turn comes)
with the rule before, where each held its place (``before``):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study shed_frees_time \
        --reference before --variant before='{"shed_frees_time": false}' --jobs 2

The ``geometric_reference`` study (2026-12-07, development examples) compares each observed service time
with its configuration's geometric mean in the profile instead of its median. The log-space calibration
settles at the mean log ratio, so against the median a cascade's own profiled draws (two humps: the first
stage alone, or both) teach it 0.82x-1.42x its speed (x1.17 for SST-2's MiniLM-L3 > MiniLM-L6 @ 0.7, x1.42 for
CIFAR-10's MobileNetV2 > ResNet18 @ 0.7), and a plain model's about 1:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/anytime_variants.py --out --study geometric_reference \
        --reference preset --variant geometric='{"geometric_reference": true}' --jobs 2

The ``preset`` runs of the first study were copied into the other folders before they ran
(:func:`planner.analysis.tuning.reusable_runs` accepts them: same seeds, parameters and examples).
Each (task, variant) is written as soon as it finishes (``--out``), keyed by its full parameters,
seeds and examples, so a killed run resumes at the next variant and a changed preset is never read
as an old run.
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
from planner.analysis.tuning import DEVELOPMENT, PRESET, compare_variants, development_bundle, reusable_runs, variants_dir
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
    accuracies from one half of the calibration part, requests from the other); one row per cell,
    the evaluation's run columns."""
    from planner.evaluation.grid import grid_cells, resolve_dispatch_overhead, run_cell
    from planner.profile.store import load_bundle

    settings = _settings(preset, seeds, params)
    bundle, pool = development_bundle(load_bundle(preset, None), task)
    overhead = resolve_dispatch_overhead(settings, results_dir(preset) / "eval")
    rows = [run_cell(bundle, cell, task, settings, overhead, [METHOD], example_pool=pool).runs
            for cell in grid_cells(settings, preset_deadlines(preset)[task])]
    return pd.concat(rows, ignore_index=True).assign(variant=name, params=json.dumps(params, sort_keys=True),
                                                     examples=DEVELOPMENT)


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
