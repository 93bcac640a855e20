"""Read a preset's results for the notebooks, the book and the README.

The notebooks, the README's key-results table and the tests read results only through here, so a
change in how a stage writes its tables is absorbed in one module. Everything reads files under
``planner.paths.results_dir(preset)``; nothing here computes a measurement.

Evaluation runs (``results/<preset>/eval/*.csv`` written by :func:`planner.evaluation.grid.evaluate`) are
tidy: one row per run, identified by ``task, method, workload, load, deadline_ms, seed``, with one
column per metric named as in :mod:`planner.metrics`. Every CSV there with those columns is a run
table; other CSVs (trace summaries, validation) are read by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from planner import config, splits
from planner.metrics import METRICS
from planner.models.published import read_manifest
from planner.plan import registry
from planner.profile.accuracy import FP32_PEER_KEYS
from planner.paths import results_dir
from planner.analysis.stats import holm, mcnemar_exact, mean_ci
from planner.analysis.summary import per_seed_means
from planner.schema import ProfileBundle, measured, read_json
from planner.splits import example_ids
from planner.tables import MANIFEST, verify_manifest

RUN_KEYS = ("task", "method", "workload", "load", "deadline_ms", "seed")
# the headline method, the hindsight reference and the upper bound, by role in the method registry
PLANNER_METHOD = registry.proposed()
ORACLE_METHOD = registry.with_role("hindsight")[0]
BOUND_METHODS = tuple(registry.with_role("bound"))
STEADY_KIND = "poisson"


def bound_method(methods: Iterable[str]) -> str | None:
    """The bound the book compares against among ``methods`` (the registry's first bound present), or None."""
    present = set(methods)
    return next((m for m in BOUND_METHODS if m in present), None)


class ResultsMissingError(FileNotFoundError):
    """A results file that a notebook or the README needs has not been produced yet."""


def tasks(task: str | None) -> list[str]:
    """``"all"``/None -> every configured task; otherwise the one validated task."""
    if task in (None, "all"):
        return list(config.TASKS)
    return [config.validate_task(task)]


def seeds(preset: str, override: list[int] | None = None) -> list[int]:
    """The preset's evaluation seeds unless a notebook parameter overrides them."""
    if override:
        return [int(s) for s in override]
    return list(config.preset(preset).evaluate.seeds)


def deadlines(preset: str) -> dict[str, list[float]]:
    """The deadline sweep per task: the preset's own override when it has one, else configs/deadlines.yaml."""
    override = getattr(config.preset(preset).evaluate, "deadlines", None)
    return dict(override or config.deadlines().deadlines)


def profile_dirs(preset: str) -> list[Path]:
    """``results/<preset>/profiles/<machine_tag>/`` folders that hold a ``profiles.csv``."""
    root = results_dir(preset) / "profiles"
    return sorted(p.parent for p in root.glob("*/profiles.csv"))


def environments(preset: str) -> pd.DataFrame:
    """One row per machine tag: the environment fingerprint recorded next to its profiles."""
    rows = []
    for d in profile_dirs(preset):
        path = d / "environment.json"
        if not path.exists():
            raise ResultsMissingError(f"missing environment fingerprint {path}")
        env = read_json(path)
        rows.append({"machine_tag": d.name, **{k: _flat(v) for k, v in env.items()}})
    if not rows:
        raise ResultsMissingError(f"no profiles (and so no environment.json) under {results_dir(preset) / 'profiles'}")
    return pd.DataFrame(rows)


def _flat(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def eval_path(preset: str, name: str) -> Path:
    """``results/<preset>/eval/<name>.csv``."""
    return results_dir(preset) / "eval" / f"{name}.csv"


def _verified_eval_dir(preset: str) -> Path:
    """``results/<preset>/eval``, its tables checked against their content hashes (MANIFEST.json)."""
    folder = results_dir(preset) / "eval"
    if (folder / MANIFEST).exists():
        verify_manifest(folder)
    elif any(folder.glob("*.csv")):
        raise ResultsMissingError(f"{folder}: no {MANIFEST} vouches for these tables (an evaluation that never "
                                  f"finished?); rerun `python -m planner evaluate --task all --preset {preset}`")
    return folder


def eval_tables(preset: str) -> list[str]:
    """Names of the evaluation tables a preset has produced."""
    return sorted(p.stem for p in (results_dir(preset) / "eval").glob("*.csv"))


def load_eval(preset: str, name: str, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """One evaluation table, checked for the columns the caller needs."""
    path = eval_path(preset, name)
    _verified_eval_dir(preset)
    if not path.exists():
        raise ResultsMissingError(f"missing {path}; run `python -m planner evaluate --task all --preset {preset}` "
                                  f"(have: {eval_tables(preset)})")
    frame = pd.read_csv(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    return frame


def load_runs(preset: str) -> pd.DataFrame:
    """Every evaluation run of the preset: the eval CSVs that carry the run keys, concatenated."""
    frames = []
    _verified_eval_dir(preset)
    for name in eval_tables(preset):
        path = eval_path(preset, name)
        header = pd.read_csv(path, nrows=0).columns
        if all(k in header for k in RUN_KEYS):
            frames.append(pd.read_csv(path))
    if not frames:
        raise ResultsMissingError(f"no evaluation runs under {results_dir(preset) / 'eval'} (have: "
                                  f"{eval_tables(preset)}); run `python -m planner evaluate --task all --preset {preset}`")
    runs = pd.concat(frames, ignore_index=True)
    if not any(m in runs.columns for m in METRICS):
        raise ValueError(f"evaluation runs of {preset!r} have no metric column; expected some of {sorted(METRICS)}")
    return runs


def mixed_workloads(preset: str) -> list[str]:
    """The preset's workloads whose traces mix deadline classes (``deadline_classes``)."""
    return list(deadline_classes(preset))


def deadline_classes(preset: str) -> dict[str, list[tuple[float, float]]]:
    """Per workload of the preset whose traces mix deadline classes: (share, scale) per class."""
    return {name: [(c.share, c.scale) for c in spec.deadline_classes.values()]
            for name, spec in config.preset(preset).evaluate.workloads.items() if spec.deadline_classes}


def steady(runs: pd.DataFrame, preset: str) -> pd.DataFrame:
    """The runs under steady (Poisson) load with one deadline per trace: trace kind ``poisson`` (or
    workload ``steady`` without a kind), leaving out the preset's mixed-deadline workloads, whose
    ``deadline_ms`` is only the base of each request's class deadline."""
    runs = runs[~runs["workload"].isin(mixed_workloads(preset))]
    if "kind" in runs.columns:
        return runs[runs["kind"] == STEADY_KIND]
    return runs[runs["workload"] == "steady"]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Registry metrics that the frame carries, in registry order."""
    return [m for m in METRICS if m in frame.columns]


def key_results(preset: str, confidence: float | None = None) -> pd.DataFrame:
    """Per task and load, steady traffic: the proposed method against the best baseline, the best
    fixed configuration in hindsight and the clairvoyant upper bound (when evaluated).

    A method's score is its effective accuracy averaged over the deadline sweep within a seed, then
    summarised over seeds as mean and t-based CI (``planner.analysis.stats.mean_ci``); roles come
    from the method registry. The same frame feeds the README table and the book's abstract, so the
    two cannot disagree.
    """
    confidence = confidence or config.protocol().confidence
    runs = steady(load_runs(preset), preset)
    if runs.empty:
        raise ResultsMissingError(f"no steady-load ({STEADY_KIND}) runs in the {preset!r} evaluation")
    for column in ("effective_accuracy", "hit_rate"):
        if column not in runs.columns:
            raise ValueError(f"evaluation runs of {preset!r} need a {column!r} column")
    rows = []
    for (task_name, load), part in runs.groupby(["task", "load"], sort=False):
        per_seed = per_seed_means(part, ["effective_accuracy", "hit_rate"], by=("method",))
        summary = {m: mean_ci(g["effective_accuracy"].to_numpy(), confidence) for m, g in per_seed.groupby("method")}
        if PLANNER_METHOD not in summary:
            raise ValueError(f"evaluation runs of {preset!r}: no rows for method {PLANNER_METHOD!r} on {task_name}")
        baselines = {m: v for m, v in summary.items() if m in registry.with_role("baseline")}
        best = max(baselines, key=lambda m: baselines[m]["mean"]) if baselines else None
        bound = bound_method(summary)
        late = part.loc[part["method"] == PLANNER_METHOD, "late_rate"].mean() if "late_rate" in part else np.nan
        rows.append({
            "task": task_name,
            "load": float(load),
            "n_deadlines": int(part["deadline_ms"].nunique()),
            "n_seeds": int(part["seed"].nunique()),
            "planner_eff_acc": float(summary[PLANNER_METHOD]["mean"]),
            "planner_ci_low": float(summary[PLANNER_METHOD]["ci_low"]),
            "planner_ci_high": float(summary[PLANNER_METHOD]["ci_high"]),
            "planner_hit_rate": float(per_seed.loc[per_seed["method"] == PLANNER_METHOD, "hit_rate"].mean()),
            "planner_late_rate": float(late),
            "best_baseline": best,
            "best_baseline_eff_acc": float(baselines[best]["mean"]) if best else np.nan,
            "oracle_eff_acc": float(summary[ORACLE_METHOD]["mean"]) if ORACLE_METHOD in summary else np.nan,
            "bound_eff_acc": float(summary[bound]["mean"]) if bound else np.nan,
        })
    return pd.DataFrame(rows).sort_values(["task", "load"], kind="stable").reset_index(drop=True)


def key_results_markdown(table: pd.DataFrame, preset: str) -> str:
    """The key-results table as Markdown (README and book), numbers formatted from the frame only."""
    proposed = registry.method(PLANNER_METHOD).label

    def fmt(value: float) -> str:
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"

    lines = [
        f"| task | load | deadlines × seeds | {PLANNER_METHOD}: effective accuracy (95% CI) | hit-rate | late "
        "| best baseline | its effective accuracy | best fixed (hindsight) | clairvoyant bound |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.task} | {r.load:g} | {r.n_deadlines} × {r.n_seeds} | {r.planner_eff_acc:.3f} "
            f"[{r.planner_ci_low:.3f}, {r.planner_ci_high:.3f}] | {r.planner_hit_rate:.3f} | {fmt(r.planner_late_rate)} "
            f"| {r.best_baseline or 'n/a'} | {fmt(r.best_baseline_eff_acc)} | {fmt(r.oracle_eff_acc)} "
            f"| {fmt(r.bound_eff_acc)} |"
        )
    lines.append("")
    lines.append(f"Steady (Poisson) traffic; {proposed} is the proposed method; load = mean arrival rate / capacity "
                 f"of the seed rule's choice. Effective accuracy = correct and on time, over all requests, averaged "
                 f"over the deadline sweep within each seed; late = fraction answered after the deadline. Best "
                 f"baseline: the best of the registry's baselines; the hindsight and clairvoyant columns are "
                 f"references no online method is expected to reach. Preset `{preset}`, generated from "
                 f"`results/{preset}/eval/` by `python -m planner readme --preset {preset}`.")
    return "\n".join(lines)


SCORECARD_MARGIN = 0.005   # issue 13: anytime >= the best other non-bound method minus this, per cell
SCORECARD_BOUND_SHARE = 0.95  # ... and >= this share of the clairvoyant bound, averaged over a task's cells
SCORECARD_LATE = 0.01      # ... and serves at most this share late at loads <= 1
DECISION_BUDGET_US = 20.0  # ... and decides in at most this median time (300 configurations, 64 waiting)
DECISION_CSV = "decision_benchmark.csv"  # this machine's run of benchmarks/bench_decision.py --out
OTHER_DECISION_CSV = "decision_benchmark_gpu_host.csv"  # the same script on the GPU machine's host CPU (--csv)


def _cpu_words(row: pd.Series) -> str:
    """`` (AMD EPYC; avx2)``: the CPU and the vector extensions it has of those the profiles record (hosts
    sold under one model name differ in them, and the decision kernel's speed with them); empty for a row
    from before the benchmark recorded them."""
    flags = row.get("cpu_flags")
    if not isinstance(flags, str):
        return ""
    return f" ({row.cpu_model}; {', '.join(flags.split()) or 'none of AVX2/AVX-512/AMX'})"


def _verdict(row: pd.Series) -> str:
    """``within`` or ``over`` :data:`DECISION_BUDGET_US`, for one machine's row: the slower of the plain
    decision and the gap-reading one where the row has both (the preset may use either)."""
    median = max(row.anytime_median_us, row.get("anytime_gaps_median_us", -math.inf))
    return "within" if median <= DECISION_BUDGET_US else "over"


def decision_text(bench_dir: Path) -> str:
    """What the decision benchmark measured, against :data:`DECISION_BUDGET_US`, in a sentence or three.

    This machine's row first; where the script also ran on the GPU machine's host CPU (a second,
    quiet machine), that row too, so that the budget is judged on more than one CPU and the ratio to
    ``select`` (timed side by side) can be seen to travel while the microseconds do not."""
    path = bench_dir / DECISION_CSV
    if not path.exists():
        return "The decision benchmark (`benchmarks/bench_decision.py --out`) has not been run for this build."
    row = pd.read_csv(path).iloc[0]
    text = (f"With {int(row.configs)} configurations and {int(row.waiting)} waiting requests a decision took a "
            f"median of {row.anytime_median_us:.1f} µs on this CPU{_cpu_words(row)} on {str(row.measured_at)[:10]}, "
            f"{row.ratio_anytime_over_select:.0f} times the "
            f"static `select` timed in the same run (`benchmarks/bench_decision.py`)")
    if "anytime_switch_cost_median_us" in row:
        text += (f"; once the policy has learned a switching cost, {row.anytime_switch_cost_median_us:.1f} µs "
                 f"({row.ratio_switch_cost_over_select:.0f} times)")
    if "anytime_gaps_median_us" in row:
        text += (f"; reading the recent gaps for its expected arrivals, one decision per arrival of a bursty stream "
                 f"(so its refits, one per 32 arrivals, are among them), {row.anytime_gaps_median_us:.1f} µs "
                 f"({row.ratio_gaps_over_select:.0f} times; p95 {row.anytime_gaps_p95_us:.1f} µs)")
    text += "."
    text += (f" That is {_verdict(row)} the {DECISION_BUDGET_US:g} µs budget this design set itself at that size, on "
             "this machine; the ratio to `select`, timed side by side, is the figure that travels between machines.")
    other = bench_dir / OTHER_DECISION_CSV
    if other.exists():
        o = pd.read_csv(other).iloc[0]
        text += (f" The same script on the GPU machine's host CPU ({o.cpu_model}, Python {o.python}, nothing else "
                 f"running, {str(o.measured_at)[:10]}) measured {o.anytime_median_us:.1f} µs (p95 {o.anytime_p95_us:.1f} µs), "
                 f"{o.ratio_anytime_over_select:.0f} times its `select`: {_verdict(o)} the budget there.")
    return text


STOP_CSV = "stop_overshoot.csv"


def _read_bench(bench_dir: Path, name: str) -> pd.DataFrame | None:
    """A benchmark's table, None where it has not been run."""
    path = bench_dir / name
    return pd.read_csv(path) if path.exists() else None


def _batch_sizes(rows: pd.DataFrame) -> str:
    return ", ".join(str(b) for b in sorted(rows["batch_size"].unique()))


def _measured_by(rows: pd.DataFrame, script: str) -> str:
    """Which benchmark measured ``rows``, when and on what CPU (its first row's)."""
    return f"`benchmarks/{script}`, on {str(rows['measured_at'].iloc[0])[:10]} on a CPU{_cpu_words(rows.iloc[0])}"


def stop_overshoot_text(bench_dir: Path) -> str:
    """How far past its stop time a stopped live call ended (``benchmarks/bench_stop.py``), in a sentence:
    the range of the per-configuration medians in milliseconds and as a share of the whole call, and the
    worst case, on the host that measured it. Why: the simulator stops a call exactly at the deadline,
    so this is what it leaves out; empty where the benchmark has not been run."""
    rows = _read_bench(bench_dir, STOP_CSV)
    if rows is None:
        return ""
    worst = rows.loc[rows["overshoot_max_ms"].idxmax()]
    most = rows.loc[rows["overshoot_p50_share"].idxmax()]
    return (f" Measured on real models ({len(rows)} ONNX Runtime int8 configurations at batch sizes "
            f"{_batch_sizes(rows)}, {int(rows['n_stops'].iloc[0])} stops each at 20 to 80 % of the call, "
            f"{_measured_by(rows, 'bench_stop.py')}), a stopped call ended a median of "
            f"{rows['overshoot_p50_ms'].min():.2f} to {rows['overshoot_p50_ms'].max():.2f} ms after its stop time, "
            f"{rows['overshoot_p50_share'].min():.1%} to {rows['overshoot_p50_share'].max():.1%} of the whole call "
            f"(the largest share for {most['config_id']}, a {most['call_median_ms']:.1f} ms call); at worst "
            f"{worst['overshoot_max_ms']:.1f} ms ({worst['config_id']}, a {worst['call_median_ms']:.0f} ms call). "
            "The simulator charges none of it.")


ALARM_CSV = "early_answer_alarms.csv"


def early_alarm_text(bench_dir: Path) -> str:
    """How late the alarm that sends a cascade's first-stage answer at the deadline rang, and how many of
    those answers went out by the deadline with the learned guard and with its floor alone
    (``benchmarks/bench_early_answers.py``), in a sentence. Why: the simulator sends that answer when the
    first stage ends, so a live one sent late is what it leaves out; empty where the benchmark has not
    been run."""
    rows = _read_bench(bench_dir, ALARM_CSV)
    if rows is None:
        return ""
    worst = rows.loc[rows["lateness_max_ms"].idxmax()]
    return (f" Measured on real cascades ({len(rows)} ONNX Runtime int8 cascades at batch sizes {_batch_sizes(rows)}, "
            f"batches of inputs the first stage escalates, each deadline halfway through the second stage, "
            f"{_measured_by(rows, 'bench_early_answers.py')}), the alarm sent its answers a "
            f"median of {rows['lateness_p50_ms'].min():.2f} to {rows['lateness_p50_ms'].max():.2f} ms after it rang, at "
            f"worst {worst['lateness_max_ms']:.1f} ms ({worst['config_id']}, while a {worst['second_median_ms']:.0f} ms "
            f"second stage ran); with the learned guard {rows['share_on_time'].min():.0%} to "
            f"{rows['share_on_time'].max():.0%} of them went out by the deadline ({rows['share_on_time_learned'].min():.0%} "
            f"to {rows['share_on_time_learned'].max():.0%} after the first {int(rows['learn_tries'].iloc[0])} batches; "
            f"{rows['share_on_time_learned_margin1'].min():.0%} to {rows['share_on_time_learned_margin1'].max():.0%} had "
            f"the guard been the largest recent lateness alone rather than {rows['margin'].iloc[0]:g} times it), "
            f"against {rows['share_on_time_floor_only'].min():.0%} to "
            f"{rows['share_on_time_floor_only'].max():.0%} with a fixed guard of {rows['floor_ms'].iloc[0]:g} ms.")


def grid_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, workload, load) cell: each method's effective accuracy and late rate averaged over
    the deadline sweep within a seed, then over seeds; the proposed method's margin over the best
    other online or hindsight method (bounds excluded) and its share of the clairvoyant bound."""
    cell = ["task", "workload", "load"]
    metrics = [m for m in ("effective_accuracy", "late_rate") if m in runs.columns]
    per_seed = per_seed_means(runs, metrics, by=(*cell, "method"))
    mean = per_seed.groupby([*cell, "method"])[metrics].mean().reset_index()
    wide = mean.pivot_table(index=cell, columns="method", values="effective_accuracy")
    if PLANNER_METHOD not in wide.columns:
        raise ValueError(f"no runs of the proposed method {PLANNER_METHOD!r}")
    others = [m for m in wide.columns if m != PLANNER_METHOD and m not in BOUND_METHODS]
    bound = bound_method(wide.columns)
    out = pd.DataFrame({"proposed": wide[PLANNER_METHOD]})
    out["best_other"] = wide[others].max(axis=1)
    out["best_other_method"] = wide[others].idxmax(axis=1)
    out["margin"] = out["proposed"] - out["best_other"]
    out["bound"] = wide[bound] if bound else np.nan
    out["share_of_bound"] = out["proposed"] / out["bound"]
    late = mean[mean["method"] == PLANNER_METHOD].set_index(cell)
    out["late_rate"] = late["late_rate"] if "late_rate" in late else np.nan
    return out.reset_index()


def cell_by_deadline(runs: pd.DataFrame, task: str, workload: str, load: float,
                     methods: list[str]) -> pd.DataFrame:
    """One grid cell opened up along its deadline sweep: per deadline and method, effective accuracy,
    hit rate and late rate (means over seeds). A cell's margin is an average over deadlines; this says
    at which deadlines it is won or lost, so the book can explain a miss from the data."""
    part = runs[(runs["task"] == task) & (runs["workload"] == workload) & np.isclose(runs["load"], load)
                & runs["method"].isin(methods)]
    if part.empty:
        raise ValueError(f"no runs of {methods} for {task} {workload} at load {load:g}")
    metrics = ["effective_accuracy", "hit_rate", "late_rate"]
    return part.groupby(["deadline_ms", "method"])[metrics].mean().unstack("method")


def worst_cell_text(runs: pd.DataFrame, cells: pd.DataFrame, task: str) -> str:
    """A sentence on the task's thinnest cell: the deadlines where the proposed method loses most to
    the cell's best other method, with both methods' late rates there (read from ``runs``)."""
    part = cells[cells["task"] == task]
    worst = part.loc[part["margin"].idxmin()]
    other = str(worst["best_other_method"])
    table = cell_by_deadline(runs, task, str(worst["workload"]), float(worst["load"]), [PLANNER_METHOD, other])
    gap = table[("effective_accuracy", PLANNER_METHOD)] - table[("effective_accuracy", other)]
    losing = gap[gap < 0].sort_values().index[:2]
    head = (f"On {task} the thinnest cell is {worst['workload']} at load {worst['load']:g} "
            f"({worst['margin']:+.3f} against {other}, averaged over {len(table)} deadlines)")
    if not len(losing):
        return head + f": {PLANNER_METHOD} is ahead at every deadline there."
    parts = [f"{d:g} ms ({table.loc[d, ('effective_accuracy', PLANNER_METHOD)]:.3f} vs "
             f"{table.loc[d, ('effective_accuracy', other)]:.3f}; late {table.loc[d, ('late_rate', PLANNER_METHOD)]:.1%} "
             f"vs {table.loc[d, ('late_rate', other)]:.1%})" for d in sorted(losing)]
    return head + f"; it loses most at deadline{'s' if len(parts) > 1 else ''} " + " and ".join(parts) + "."


def tight_deadline_text(runs: pd.DataFrame, cells: pd.DataFrame, task: str, n_tight: int = 2) -> str:
    """A sentence on the task's cells that miss the margin: how many are within it once the ``n_tight``
    tightest deadlines of the sweep are left out, and the margins of those that still miss.

    Why: at the tightest deadlines the fastest configuration's service time nearly fills the deadline,
    so on-time answers come only with many late ones, which the late-share target forbids the proposed
    method; a miss made there is that trade-off, a miss made elsewhere is not (the chapter says why)."""
    missed = cells[(cells["task"] == task) & (cells["margin"] < -SCORECARD_MARGIN)]
    if missed.empty:
        return f"On {task} no cell misses the margin."
    part = runs[runs["task"] == task]
    deadlines = sorted(part["deadline_ms"].unique())
    if len(deadlines) <= n_tight:
        return (f"On {task} {len(missed)} cell{'s' if len(missed) > 1 else ''} miss the margin; the sweep of "
                f"{len(deadlines)} deadlines is too short to leave out its {n_tight} tightest.")
    tight = deadlines[:n_tight]
    without = grid_cells(part[~part["deadline_ms"].isin(tight)])
    key = ["task", "workload", "load"]
    merged = missed.merge(without[[*key, "margin"]], on=key, suffixes=("", "_without"))
    still = merged[merged["margin_without"] < -SCORECARD_MARGIN]
    text = (f"On {task}, {len(merged) - len(still)} of the {len(merged)} cells that miss the margin are within it "
            f"once the {len(tight)} tightest deadlines ({' and '.join(f'{d:g}' for d in tight)} ms) are left out")
    if still.empty:
        return text + "."
    return text + "; without them " + ", ".join(
        f"{r.workload} at load {r.load:g} is at {r.margin_without:+.3f}" for r in still.itertuples()) + "."


def late_detail_text(runs: pd.DataFrame, task: str, light_load: float = 1.0) -> str:
    """The proposed method's late share at loads <= ``light_load`` counted finer and coarser than the
    scorecard's cells: per (workload, load, deadline), the mean over seeds, and over every request.

    Why: the scorecard averages a cell over its deadlines, which can hide one deadline above the limit;
    the limit itself speaks of requests, which the pooled share counts."""
    part = runs[(runs["task"] == task) & (runs["method"] == PLANNER_METHOD) & (runs["load"] <= light_load)]
    if part.empty:
        return ""
    per = part.groupby(["workload", "load", "deadline_ms"])["late_rate"].mean()
    worst = per.idxmax()
    pooled = float(part["n_late"].sum() / part["n_requests"].sum())
    return (f"On {task}, over every request at loads up to {light_load:g} the share answered late is {pooled:.2%}; "
            f"counted per (workload, load, deadline) instead of per cell, {int((per > SCORECARD_LATE).sum())} of "
            f"{len(per)} exceed {SCORECARD_LATE:.0%} (the largest {per.max():.2%}, {worst[0]} at load {worst[1]:g} "
            f"and {worst[2]:g} ms): the controller holds the share near its target over a run, not in every trace.")


def bound_ceiling(bundle: ProfileBundle, task: str) -> dict:
    """Where the clairvoyant bound tops out when time does not bind, against what one configuration
    reaches, over the examples traces draw (the scored part): ``oracle``, the share some measured
    configuration answers correctly (the bound credits each request that some configuration answers
    correctly in time), and ``best_single``, the most accurate single configuration's (``best_config``).

    Why: a method's share of the bound cannot exceed ``best_single / oracle`` where it serves one
    configuration at a time, however well it schedules."""
    ids = bundle.profiles.loc[measured(bundle.profiles, task), "config_id"]
    preds = bundle.predictions
    preds = preds[preds["config_id"].isin(ids) & preds["example_id"].isin(example_ids(bundle, task))]
    if preds.empty:
        raise ValueError(f"no predictions of measured {task} configurations on the scored examples")
    table = preds.pivot(index="config_id", columns="example_id", values="correct").astype(bool)
    per_config = table.mean(axis=1)
    return {"oracle": float(table.any(axis=0).mean()), "best_single": float(per_config.max()),
            "best_config": str(per_config.idxmax()), "n_examples": int(table.shape[1])}


def bound_gap_text(runs: pd.DataFrame, bundle: ProfileBundle, task: str) -> str:
    """Why the proposed method's share of the clairvoyant bound is what it is on ``task``: the bound's
    ceiling against the best single configuration (:func:`bound_ceiling`), and the share per deadline
    (the method's mean effective accuracy over the task's cells at that deadline over the bound's)."""
    bound = bound_method(runs["method"])
    part = runs[(runs["task"] == task) & runs["method"].isin([PLANNER_METHOD, bound])]
    if bound is None or part.empty:
        return ""
    ceiling = bound_ceiling(bundle, task)
    means = part.groupby(["deadline_ms", "method"])["effective_accuracy"].mean().unstack("method")
    share = means[PLANNER_METHOD] / means[bound]
    by_deadline = ", ".join(f"{v:.2f} at {d:g} ms ({means.loc[d, PLANNER_METHOD]:.3f} of {means.loc[d, bound]:.3f})"
                            for d, v in share.items())
    return (f"On {task}, some configuration answers {ceiling['oracle']:.3f} of the {ceiling['n_examples']} scored "
            f"examples correctly and the most accurate single configuration ({ceiling['best_config']}) "
            f"{ceiling['best_single']:.3f}: serving it to every request on time would reach "
            f"{ceiling['best_single'] / ceiling['oracle']:.3f} of the bound where time does not bind. By deadline "
            f"(over every workload and load), {PLANNER_METHOD}'s share of the bound is {by_deadline}. At the tightest "
            f"deadlines the bound charges every batch its configuration's fastest measured time (the minimum of its "
            f"samples), not the time a batch usually takes, and the queue that the online methods face at load "
            f"(the chance bound below measures what the first of the two is worth).")


def hindsight_choice(runs: pd.DataFrame, profiles: pd.DataFrame, task: str, mixed: Iterable[str] = ()) -> dict:
    """What the best fixed configuration in hindsight serves at the task's most relaxed deadline
    (single-deadline workloads), and how the calibration half ranks it.

    Why: the hindsight method picks, per trace, the configuration with the most correct on-time
    answers on the scored examples themselves; the online methods rank configurations by their
    calibration-half accuracy (:mod:`planner.splits`). Where the two rankings disagree, the hindsight
    choice is a winner on the scored draw that no method choosing beforehand could have named.
    ``mixed``: the workloads whose traces mix deadline classes (:func:`mixed_workloads`), left out."""
    part = runs[(runs["task"] == task) & ~runs["workload"].isin(list(mixed))]
    if part.empty:
        raise ValueError(f"no single-deadline runs for {task}")
    deadline = float(part["deadline_ms"].max())
    at = part[part["deadline_ms"] == deadline]
    chosen = at[at["method"] == ORACLE_METHOD]["main_config"].dropna()
    if chosen.empty:
        raise ValueError(f"no {ORACLE_METHOD} runs for {task} at {deadline:g} ms")
    config_id = str(chosen.mode().iloc[0])
    ranked = profiles[(profiles["task"] == task) & profiles["calibration_accuracy"].notna()]
    if config_id not in set(ranked["config_id"]):
        raise ValueError(f"{config_id} has no calibration accuracy in the profiles")
    row = ranked.set_index("config_id").loc[config_id]
    answered = at.groupby("method")["accuracy"].mean()
    return {
        "task": task, "deadline_ms": deadline, "config_id": config_id,
        "share_of_traces": float((chosen == config_id).mean()),
        "calibration_accuracy": float(row["calibration_accuracy"]),
        "calibration_rank": int((ranked["calibration_accuracy"] > row["calibration_accuracy"]).sum() + 1),
        "n_candidates": int(len(ranked)),
        "best_calibration_accuracy": float(ranked["calibration_accuracy"].max()),
        "scored_accuracy": float(row["accuracy"]),
        "best_scored_accuracy": float(ranked["accuracy"].max()),
        "hindsight_answered_accuracy": float(answered.get(ORACLE_METHOD, np.nan)),
        "proposed_answered_accuracy": float(answered.get(PLANNER_METHOD, np.nan)),
    }


def hindsight_choice_text(choice: dict) -> str:
    """:func:`hindsight_choice` as a sentence for the Limitations chapter."""
    c = choice
    head = (f"At {c['task']}'s most relaxed deadline ({c['deadline_ms']:g} ms) {ORACLE_METHOD} serves "
            f"{c['config_id']} in {c['share_of_traces']:.0%} of the single-deadline traces; its answers are "
            f"{c['hindsight_answered_accuracy']:.3f} correct there against {c['proposed_answered_accuracy']:.3f} "
            f"for {PLANNER_METHOD}")
    if not c["hindsight_answered_accuracy"] > c["proposed_answered_accuracy"]:
        return head + "."
    return (head + f". The calibration half puts that configuration at place {c['calibration_rank']} of "
            f"{c['n_candidates']} ({c['calibration_accuracy']:.3f} against {c['best_calibration_accuracy']:.3f} for "
            f"the best), while the scored half puts it at {c['scored_accuracy']:.3f} (the best there: "
            f"{c['best_scored_accuracy']:.3f}): it wins on the examples it "
            f"is scored on, which a method that must choose before the trace, from the calibration half, cannot see.")


def _mean_ceiling(part: pd.DataFrame, ceilings: pd.DataFrame | None) -> float:
    """The mean of ``ceilings``' ``ceiling`` over the cells of ``part`` (one task's :func:`grid_cells`);
    NaN unless every one of them has one, so that it is averaged over the same cells as the share."""
    if ceilings is None or ceilings.empty:
        return np.nan
    keys = ["task", "workload", "load"]
    found = part[keys].merge(ceilings[[*keys, "ceiling"]], on=keys, how="left")["ceiling"]
    return float(found.mean()) if found.notna().all() else np.nan


def scorecard(cells: pd.DataFrame, ceilings: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per task, over every (workload, load) cell of :func:`grid_cells`: how many cells the proposed
    method is within :data:`SCORECARD_MARGIN` of the best other method, its mean share of the
    clairvoyant bound, and how many cells at load <= 1 serve more than :data:`SCORECARD_LATE` late.

    ``ceilings``: per (task, workload, load), the most of the clairvoyant bound a policy that sees no
    example and foresees no service draw can expect (:func:`planner.analysis.bounds.scorecard_ceilings`);
    ``mean_ceiling`` is its mean over the same cells as the share (NaN where any cell lacks one)."""
    rows = []
    for task_name, part in cells.groupby("task", sort=False):
        light = part[part["load"] <= 1.0]
        worst = part.loc[part["margin"].idxmin()]
        rows.append({
            "task": task_name,
            "n_cells": len(part),
            "n_workloads": part["workload"].nunique(),
            "cells_within_margin": int((part["margin"] >= -SCORECARD_MARGIN).sum()),
            "worst_margin": float(worst["margin"]),
            "worst_cell": f"{worst['workload']} @ {worst['load']:g} vs {worst['best_other_method']}",
            "mean_share_of_bound": float(part["share_of_bound"].mean()),
            "mean_ceiling": _mean_ceiling(part, ceilings),
            "n_light_cells": len(light),
            "light_cells_late_over": int((light["late_rate"] > SCORECARD_LATE).sum()),
            "max_light_late_rate": float(light["late_rate"].max()) if len(light) else np.nan,
        })
    return pd.DataFrame(rows)


def grid_scorecard_markdown(card: pd.DataFrame, preset: str) -> str:
    """The scorecard as Markdown under the key-results table (README and book)."""
    lines = [f"| task | cells (workloads × loads) | {PLANNER_METHOD} ≥ best other − {SCORECARD_MARGIN:g} | worst cell "
             f"(margin) | share of clairvoyant (mean over cells) | most an example-blind policy can expect "
             f"| cells at load ≤ 1 with > {SCORECARD_LATE:.0%} late (max late) |", "|---|---|---|---|---|---|---|"]
    for r in card.itertuples(index=False):
        ceiling = getattr(r, "mean_ceiling", np.nan)
        lines.append(f"| {r.task} | {r.n_cells} ({r.n_workloads} × {r.n_cells // max(r.n_workloads, 1)}) "
                     f"| {r.cells_within_margin} of {r.n_cells} | {r.worst_cell} ({r.worst_margin:+.3f}) "
                     f"| {r.mean_share_of_bound:.3f} | {'—' if ceiling != ceiling else f'{ceiling:.3f}'} "
                     f"| {r.light_cells_late_over} of {r.n_light_cells} ({r.max_light_late_rate:.1%}) |")
    lines.append("")
    lines.append(f"Every workload of the `{preset}` evaluation (steady, bursty, spike, Twitter replays, mixed deadlines); "
                 "best other = the best of every non-bound method in the registry (baselines, the slack-aware "
                 "ablation and the best fixed configuration in hindsight). Most an example-blind policy can expect: "
                 "the share of the clairvoyant bound that the work bound (a bound in expectation for every policy "
                 "that chooses without seeing the requests' examples and without foreseeing its service draws, as "
                 "every online method here does; `benchmarks/work_bound.py`) leaves, averaged over the same cells "
                 f"(— where it was not computed for every cell); the study's target was {SCORECARD_BOUND_SHARE:.0%}.")
    return "\n".join(lines)


def training_record(preset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per published model: recipe, time, accuracy, file; one row per model and epoch: loss and
    evaluation accuracy), from the preset's published-weights manifest; empty frames when none."""
    rows, curves = [], []
    for model, entry in sorted(read_manifest(preset)["models"].items()):
        rec, record = entry["recipe"], entry["record"]
        params = rec.get("params", {})
        rows.append({
            "task": rec["task"], "model": model, "architecture": params.get("arch", rec.get("source")),
            "stem": params.get("stem", "-"), "epochs": round(float(record.get("epochs", np.nan)), 2),
            "lr_cycles": " + ".join(f"{length:g}@{scale:g}" for length, scale in params.get("cycles", [])) or "1",
            "averaged_cycle_ends": int(params.get("average_cycles", 1)),
            "batch_size": params.get("batch_size"), "peak_lr": params.get("lr"),
            "distilled_from": _teacher_label(rec.get("distill")),
            "label_smoothing": params.get("label_smoothing", 0.0), "bf16_autocast": params.get("autocast_bf16", False),
            "train_minutes": round(float(record.get("train_seconds", np.nan)) / 60.0, 1),
            "eval_split": record.get("eval_split"), "eval_accuracy": record.get("eval_accuracy"),
            "megabytes": round(entry["bytes"] / 1e6, 1), "sha256": entry["sha256"][:12],
        })
        curves += [{"task": rec["task"], "model": model, **row} for row in record.get("epoch_losses", [])]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def _teacher_label(distill: dict | None) -> str:
    """``teacher (alpha a, T t)`` for a distilled recipe, ``-`` for one trained on labels alone."""
    if not distill:
        return "-"
    return f"{distill['teacher']['model']} (alpha {distill['alpha']:g}, T {distill['temperature']:g})"


def models_profiled_before_publishing(preset: str, profiles: pd.DataFrame, predictions: pd.DataFrame,
                                      tol: float = 5e-4) -> pd.DataFrame:
    """Published models whose profiled fp32 PyTorch predictions do not score the published weights' own
    accuracy on the whole evaluation set (both halves, as training scored it): the profiles, and
    everything planned from them, still describe an earlier checkpoint. One row per such model."""
    columns = ["task", "model", "published_accuracy", "profiled_accuracy"]
    trained, _ = training_record(preset)
    if trained.empty or profiles.empty:
        return pd.DataFrame(columns=columns)
    single = profiles[(profiles["runtime"] == "torch") & (profiles["precision"] == "fp32")
                      & profiles["cascade_small"].isna()]
    first_config = single.groupby("model")["config_id"].first()
    rows = []
    for r in trained.itertuples(index=False):
        config_id = first_config.get(r.model)
        correct = predictions.loc[predictions["config_id"] == config_id, "correct"] if config_id else pd.Series([])
        seen = float(correct.mean()) if len(correct) else np.nan
        if not abs(seen - float(r.eval_accuracy)) <= tol:
            rows.append({"task": r.task, "model": r.model, "published_accuracy": r.eval_accuracy,
                         "profiled_accuracy": None if np.isnan(seen) else seen})
    return pd.DataFrame(rows, columns=columns)


def precision_cost(profiles: pd.DataFrame, predictions: pd.DataFrame, part: str = "scored") -> pd.DataFrame:
    """Each lower-precision single-model configuration against the fp32 one of the same model, runtime,
    batch size and device, on the same examples of ``part`` ("scored" or "calibration").

    Why per batch size and paired: dynamic int8 computes its activation scales per batch, so each
    batch size is its own variant; and the two variants agree on most examples, so the exact McNemar
    test on the discordant ones (Holm-adjusted over the table's rows) says whether a loss is more than
    the noise of a few hundred sentences. One row per variant: accuracies, ``delta_points`` (variant
    minus fp32), the discordant counts, ``p`` and ``p_holm``.
    """
    if part not in ("scored", "calibration"):
        raise ValueError(f"precision_cost: part must be 'scored' or 'calibration', not {part!r}")
    keys = FP32_PEER_KEYS
    columns = ["task", "model", "runtime", "batch_size", "device", "precision", "n", "accuracy", "fp32_accuracy",
               "delta_points", "fp32_only", "variant_only", "p"]
    single = profiles[measured(profiles) & profiles["cascade_small"].isna()]
    fp32 = single[single["precision"] == "fp32"].set_index(keys)["config_id"]
    correct = predictions.set_index(["config_id", "example_id"])["correct"]
    examples: dict[str, np.ndarray] = {}
    rows = []
    for r in single[single["precision"] != "fp32"].itertuples(index=False):
        reference = fp32.get(tuple(getattr(r, k) for k in keys))
        if reference is None:
            continue
        if r.task not in examples:
            split = splits.predictions_split(predictions, r.task)
            examples[r.task] = np.asarray(getattr(split, part))
        ids = examples[r.task]
        a = correct.loc[reference].reindex(ids).to_numpy()
        b = correct.loc[r.config_id].reindex(ids).to_numpy()
        if pd.isna(a).any() or pd.isna(b).any():
            raise ValueError(f"precision_cost: {r.config_id} or {reference} lacks predictions for some {part} examples")
        test = mcnemar_exact(a.astype(bool), b.astype(bool))
        rows.append({**{k: getattr(r, k) for k in keys}, "precision": r.precision, "n": test["n"],
                     "accuracy": float(b.mean()), "fp32_accuracy": float(a.mean()),
                     "delta_points": 100 * (float(b.mean()) - float(a.mean())),
                     "fp32_only": test["a_only"], "variant_only": test["b_only"], "p": test["p"]})
    out = pd.DataFrame(rows, columns=columns)
    out["p_holm"] = holm(out["p"].to_numpy()) if len(out) else pd.Series(dtype=float)
    return out.sort_values(["task", "model", "runtime", "precision", "batch_size"]).reset_index(drop=True)
