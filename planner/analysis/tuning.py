"""Parameter variants of the proposed method on development seeds and examples (``benchmarks/anytime_variants.py``).

Why a module of its own: a parameter of the proposed method chosen on the evaluation's own runs is
tuned on the data it is scored on. The variant benchmark runs the method on the grid's cells with
development seeds the evaluation does not use, and on development examples
(:func:`development_bundle`): the method fits its accuracies on one half of the calibration part
and its requests are drawn from, and credited on, the other half, so the scored part informs no
parameter (other seeds alone would still draw every request from the scored part). It runs once
with the preset's parameters and once per variant; this module turns those runs into one row per
(task, variant) and into the book's sentence. Nothing here runs a simulation.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from planner.paths import results_dir
from planner.plan.registry import changed_params, describe_params, describe_value
from planner.schema import PLANNING_ACCURACY, ProfileBundle, measured
from planner.splits import development_halves, labels_by_example, predicted_ids, predictions_split, task_of
from planner.tables import atomic_write, read_rows

PRESET = "preset"   # the variant with the preset's own parameters
CELL = ["workload", "load"]
VARIANT_COLUMNS = ("task", "variant", "params", "workload", "load", "deadline_ms", "seed",
                   "effective_accuracy", "late_rate")
DEVELOPMENT = "development"   # the ``examples`` of a run on development examples (:func:`development_bundle`)
SCORED_EXAMPLES = "scored"    # what a study's runs without an ``examples`` column drew from
#: the ``arrival_rates`` of runs whose traces arrive at the evaluation's own rates: the load's reference
#: configuration chosen by the seed rule fitted on the scored bundle
#: (:func:`planner.evaluation.grid.fit_load_reference`). Runs
#: without the column (before 2026-12-08) took it from the development bundle, whose half-part
#: accuracies can pick another configuration, so at some deadlines another rate than the evaluation's
#: (CIFAR-10 at 50 ms: a twelfth of it; SST-2 at 35 ms: 2.4 times it)
SCORED_RATES = "scored"


def _development_halves(bundle: ProfileBundle, task: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``task``'s predictions and the two halves of its calibration part (fit, score)."""
    preds = bundle.predictions[task_of(bundle.predictions["config_id"]) == task]
    if preds.empty:
        raise ValueError(f"no predictions for task {task!r}: no development examples")
    fit, score = development_halves(predictions_split(preds, task), labels_by_example(preds, f"{task} predictions"))
    return preds, fit, score


def development_bundle(bundle: ProfileBundle, task: str) -> tuple[ProfileBundle, np.ndarray]:
    """``bundle`` as a development run sees it, and the example ids its traces draw from.

    The calibration part is cut in two (:func:`planner.splits.development_halves`): every measured
    configuration of ``task`` gets its planning accuracy (``calibration_accuracy``) from the first
    half and its ``accuracy`` from the second, whose ids (those every measured configuration has a
    prediction for) are returned as the pool requests are drawn from. Predictions are per example,
    so the simulator credits each request as before. Other tasks' rows are left as they are, and so
    are the configurations pruned as dominated when the profiles were written (on the whole
    calibration part, never the scored one).
    """
    preds, fit, score = _development_halves(bundle, task)
    ids = preds["example_id"].to_numpy()
    fit_acc = preds[np.isin(ids, fit)].groupby("config_id")["correct"].mean()
    score_acc = preds[np.isin(ids, score)].groupby("config_id")["correct"].mean()
    profiles = bundle.profiles.copy()
    rows = measured(profiles, task)
    missing = sorted(set(profiles.loc[rows, "config_id"]) - set(fit_acc.index))
    if missing:
        raise ValueError(f"no predictions for measured {task} configuration(s) {missing[:5]}")
    profiles.loc[rows, PLANNING_ACCURACY] = profiles.loc[rows, "config_id"].map(fit_acc).to_numpy(dtype=float)
    profiles.loc[rows, "accuracy"] = profiles.loc[rows, "config_id"].map(score_acc).to_numpy(dtype=float)
    development = dataclasses.replace(bundle, profiles=profiles)
    return development, np.intersect1d(predicted_ids(development, task), score)


def at_scored_rates(runs: pd.DataFrame) -> bool:
    """Whether every one of a study's runs arrived at the evaluation's rates (:data:`SCORED_RATES`);
    runs written before 2026-12-08 carry no ``arrival_rates`` column."""
    return "arrival_rates" in runs.columns and bool(len(runs)) and bool((runs["arrival_rates"] == SCORED_RATES).all())


def variants_dir(preset: str, study: str | None = None) -> Path:
    """Where the variant studies of ``preset`` live, one folder per study (``study``: that study's)."""
    root = results_dir(preset) / "benchmarks" / "anytime_variants"
    return root if study is None else root / study


def compare_variants(runs: pd.DataFrame, late_limit: float, reference: str = PRESET,
                     light_load: float = 1.0) -> pd.DataFrame:
    """One row per (task, variant): mean effective accuracy over cells (a cell: the mean over its
    deadlines and seeds), its change against the ``reference`` variant (mean, worst and best cell, and
    in how many cells it is ahead) and how many cells at load <= ``light_load`` serve more than
    ``late_limit`` of requests late. Why the best cell and the count: a variant that loses on average
    can still win a family of cells (the expected-arrivals study: off loses on mixed deadlines and
    heavy bursts, wins on steady single-deadline CIFAR-10 traffic), which the mean and worst hide."""
    missing = [c for c in VARIANT_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(f"variant runs lack columns {missing}")
    per_cell = runs.groupby(["task", "variant", "params", *CELL])[["effective_accuracy", "late_rate"]].mean().reset_index()
    rows = []
    for task, of_task in per_cell.groupby("task", sort=False):
        base = of_task[of_task["variant"] == reference].set_index(CELL)
        if base.empty:
            raise ValueError(f"no runs of the reference variant {reference!r} for {task}")
        for (variant, params), part in of_task.groupby(["variant", "params"], sort=False):
            part = part.set_index(CELL)
            change = part["effective_accuracy"] - base["effective_accuracy"].reindex(part.index)
            light = part[part.index.get_level_values("load") <= light_load]
            worst = change.idxmin() if change.notna().any() else None
            best = change.idxmax() if change.notna().any() else None
            rows.append({"task": task, "variant": variant, "reference": reference, "params": params,
                         "n_cells": len(part),
                         "mean_effective_accuracy": float(part["effective_accuracy"].mean()),
                         "mean_change": float(change.mean()), "worst_change": float(change.min()),
                         "worst_cell": f"{worst[0]} @ {worst[1]:g}" if worst is not None else "",
                         "best_change": float(change.max()),
                         "best_cell": f"{best[0]} @ {best[1]:g}" if best is not None else "",
                         "n_cells_ahead": int((change > 0).sum()),
                         "n_light_cells": len(light),
                         "light_cells_over_late_limit": int((light["late_rate"] > late_limit).sum()),
                         "max_light_late_rate": float(light["late_rate"].max())})
    return pd.DataFrame(rows)


def load_variant_runs(preset: str, study: str) -> pd.DataFrame | None:
    """Every (task, variant) run table one study of the benchmark wrote for ``preset``; None when it
    never ran."""
    folder = variants_dir(preset, study)
    paths = sorted(folder.glob("*.csv")) if folder.exists() else []
    frames = [read_rows(p, VARIANT_COLUMNS) for p in paths if p.name != "summary.csv"]
    return pd.concat(frames, ignore_index=True) if frames else None


def development_sizes(bundle: ProfileBundle, task: str) -> tuple[int, int]:
    """How many examples a development run of ``task`` fits its accuracies on and draws requests
    from (:func:`development_bundle`), for the book."""
    _, fit, score = _development_halves(bundle, task)
    return len(fit), len(score)


def development_share(runs: pd.DataFrame) -> float:
    """The share of a study's runs on development examples (:func:`development_bundle`); runs written
    before development examples existed carry no ``examples`` column and drew from the scored part."""
    if "examples" not in runs.columns or not len(runs):
        return 0.0
    return float((runs["examples"] == DEVELOPMENT).mean())


def examples_of(runs: pd.DataFrame) -> str:
    """What a study's runs drew their requests from: :data:`DEVELOPMENT` examples when every run did,
    else the scored part (:data:`SCORED_EXAMPLES`)."""
    return DEVELOPMENT if development_share(runs) == 1.0 else SCORED_EXAMPLES


def reusable_runs(path: Path, seeds: list[int], params: dict, reference: str) -> pd.DataFrame | None:
    """The runs a study already wrote at ``path``, if they are the ones it would run now (the same
    seeds and full parameters, on development examples at the evaluation's rates), stamped with this
    study's ``reference`` (rewritten on disk when they carried another, so the book reads the reference
    the study compared with); None when they must be run (missing, empty, other seeds, parameters,
    examples or rates). Why: a
    file copied from another study, or a resume under another ``--reference``, holds the right runs
    but the wrong comparison."""
    old = read_rows(path) if Path(path).exists() else None
    if (old is None or not len(old) or set(old["seed"]) != set(seeds) or json.loads(old["params"].iloc[0]) != params
            or examples_of(old) != DEVELOPMENT or not at_scored_rates(old)):
        return None
    if "reference" not in old or (old["reference"] != reference).any():
        old = old.assign(reference=reference)
        atomic_write(Path(path), lambda p, f=old: f.to_csv(p, index=False))
    return old


def studies(preset: str) -> list[str]:
    """The variant studies recorded for ``preset`` (folder names, in name order); empty when none ran.
    Why one folder per study: a study compares variants of the method as it was when it ran; a later
    study of another parameter must not be read as part of it."""
    root = variants_dir(preset)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def reference_of(runs: pd.DataFrame) -> str:
    """The variant a study compared the others with: its runs carry a ``reference`` column (the
    benchmark's ``--reference``), else the preset's own parameters."""
    if "reference" in runs.columns and runs["reference"].notna().any():
        return str(runs["reference"].dropna().iloc[0])
    return PRESET


THEN = " (as the study ran)"   # marks a variant named after the preset whose parameters have since moved


def label(variant: str, params: str, chosen: dict | None) -> str:
    """A variant's name for the book: the one named after the preset gets :data:`THEN` appended when
    the preset's parameters (``chosen``) have moved since the study ran, so that "preset" never names
    parameters the preset no longer has."""
    if variant == PRESET and chosen is not None and not _same_choice(json.loads(params), chosen):
        return variant + THEN
    return variant


def variant_table(summary: pd.DataFrame, chosen: dict | None = None) -> pd.DataFrame:
    """The summary for the book: per task and variant, the parameters it changes against the reference,
    the change in effective accuracy (mean, worst and best cell, cells ahead) and the light cells over the late limit
    (``chosen``: the preset's current parameters, for :func:`label`)."""
    rows = []
    for task, part in summary.groupby("task", sort=False):
        reference = str(part["reference"].iloc[0])
        ref = part[part["variant"] == reference].iloc[0]
        varied = sorted({k for p in part["params"] for k in changed_params(json.loads(ref.params), json.loads(p))})
        for r in part.itertuples(index=False):
            values = json.loads(r.params)
            rows.append({"task": task, "variant": label(r.variant, r.params, chosen)
                         + (" (reference)" if r.variant == reference else ""),
                         "parameters": describe_params({k: values.get(k) for k in varied}),
                         "mean change": round(r.mean_change, 4) + 0.0, "worst cell change": round(r.worst_change, 4) + 0.0,
                         "worst cell": r.worst_cell,
                         "best cell (change)": f"{r.best_cell} ({r.best_change:+.4f})" if r.variant != reference else "",
                         "cells ahead": f"{r.n_cells_ahead} of {r.n_cells}" if r.variant != reference else "",
                         "light cells over the late limit": f"{r.light_cells_over_late_limit} of {r.n_light_cells}",
                         "max late share (light)": f"{r.max_light_late_rate:.2%}"})
    return pd.DataFrame(rows)


def _same_choice(recorded: dict, chosen: dict) -> bool:
    """``chosen`` agrees with a variant's ``recorded`` parameters on every parameter the variant
    recorded (one added to the method after the study ran is not among what the study compared)."""
    return all(k in chosen and chosen[k] == v for k, v in recorded.items())


def variant_text(summary: pd.DataFrame, chosen: dict, late_limit: float) -> str:
    """Which variant's parameters the preset uses (``chosen``: the preset's parameters of the method)
    and what that cost and bought against the reference, per task; empty when none matches."""
    picked = summary[[_same_choice(json.loads(p), chosen) for p in summary["params"]]]
    if picked.empty:
        return ""
    name = str(picked["variant"].iloc[0])
    reference = str(summary["reference"].iloc[0])
    if name == reference:
        return (f"The preset uses the reference parameters ({reference})."
                + (better_variant_text(summary, name, chosen)
                   or " No other variant scores higher on every task with no light cell over the late limit."))
    ref = summary[summary["variant"] == reference].set_index("task")
    per_task = [f"{r.task}: {r.light_cells_over_late_limit} of {r.n_light_cells} light cells over {late_limit:.0%} late "
                f"(reference: {ref.loc[r.task, 'light_cells_over_late_limit']}), {r.mean_change:+.4f} mean effective accuracy"
                for r in picked.itertuples(index=False)]
    changes = describe_params({k: now for k, (_was, now) in changed_params(
        json.loads(ref["params"].iloc[0]), json.loads(picked["params"].iloc[0])).items()})
    which = "its own parameters" if name == "preset" else f"the parameters of {name}"
    return (f"The preset uses {which} ({changes}), chosen against {reference}: " + "; ".join(per_task) + "."
            + better_variant_text(summary, name, chosen))


def nearest_variant_text(summary: pd.DataFrame, chosen: dict) -> str:
    """When no variant of a study is the preset's current choice: the variant nearest to it (fewest
    recorded parameters that differ) and what differs, e.g. after the preset moved a parameter that
    another study held fixed. Why: the study still says what its own parameter bought, on a method
    that differs from today's in named parameters only, and the reader must know which."""
    recorded = summary.groupby("variant", sort=False)["params"].first()
    if recorded.empty:
        return "None of its variants is the preset's current parameters."
    differ = {v: {k: (was, chosen.get(k)) for k, was in json.loads(p).items() if chosen.get(k) != was}
              for v, p in recorded.items()}
    nearest = min(differ, key=lambda v: len(differ[v]))
    name = label(nearest, recorded[nearest], chosen)
    what = ", ".join(f"{describe_params({k: was})} (now {describe_value(now)})"
                     for k, (was, now) in sorted(differ[nearest].items()))
    return (f"None of its variants is the preset's current parameters: the nearest, {name}, ran with {what}; "
            f"its comparison is of the method with that setting.")


def better_variant_text(summary: pd.DataFrame, picked: str, chosen: dict | None = None) -> str:
    """A sentence when another variant of the study keeps every task's light cells within the late
    limit and scores higher than ``picked`` on every task (empty otherwise). Why: a study re-run on a
    later preset can overturn its own choice, and the book must not say the choice still stands."""
    ok = summary.groupby("variant")["light_cells_over_late_limit"].sum() == 0
    score = summary.pivot_table(index="variant", columns="task", values="mean_effective_accuracy")
    if picked not in score.index:
        return ""
    better = [v for v in score.index if v != picked and ok.get(v, False) and (score.loc[v] > score.loc[picked]).all()]
    if not better:
        return ""
    best = max(better, key=lambda v: float(score.loc[v].mean()))
    gains = ", ".join(f"{task} {score.loc[best, task] - score.loc[picked, task]:+.4f}" for task in score.columns)
    best_name = label(best, summary.loc[summary["variant"] == best, "params"].iloc[0], chosen)
    return (f" In these runs {best_name} scores higher on every task ({gains} mean effective accuracy) with no light cell "
            f"over the late limit: the preset has not been moved to it.")


def studies_markdown(preset: str, tasks: list[str], chosen: dict, late_limit: float) -> str:
    """Every variant study of ``preset`` for the book, as Markdown: per study its development seeds,
    which variant the preset uses (:func:`variant_text`) and the table of :func:`variant_table`."""
    parts = []
    for study in studies(preset):
        runs = load_variant_runs(preset, study)
        if runs is None:
            continue
        summary = compare_variants(runs, late_limit, reference=reference_of(runs))
        summary = summary[summary["task"].isin(tasks)]
        if summary.empty:
            continue
        seeds = ", ".join(str(s) for s in sorted(runs["seed"].unique()))
        verdict = variant_text(summary, chosen, late_limit) or nearest_variant_text(summary, chosen)
        share = development_share(runs)
        examples = ("requests drawn from half of the calibration part, accuracies fitted on the other half"
                    if share == 1.0 else
                    "requests drawn from the scored part, as studies ran before they moved to development examples"
                    if share == 0.0 else
                    f"{share:.0%} of its runs on development examples and the rest on the scored part "
                    f"(a re-run not finished)")
        rates = ("each cell at the evaluation's arrival rate" if at_scored_rates(runs) else
                 "arrival rates set by the seed rule fitted on the development half, at some deadlines "
                 "another rate than the evaluation's (runs before 2026-12-08)")
        parts.append(f"**Study `{study}`** (development seeds {seeds}, {examples}, every cell of the grid, "
                     f"{rates}, the policy alone). "
                     f"{verdict}\n\n{variant_table(summary, chosen).to_markdown(index=False)}")
    return "\n\n".join(parts) or "This run has no variant study of the policy's parameters."


def tolerance_scaling_text(preset: str, bundle: ProfileBundle, task: str, chosen: float, late_limit: float,
                           study: str = "accuracy_tolerance", parameter: str = "accuracy_tolerance") -> str:
    """When the best accuracy tolerance of a study on development examples is not the preset's: what it
    corresponds to on the evaluation's calibration part. Empty when the study did not run on development
    examples for ``task`` or agrees with the preset.

    Why: a development run fits its accuracies on half of the calibration part, and the standard error of
    a paired accuracy difference grows as one over the square root of the examples, so the tolerance that
    matches the examples' noise there is larger by ``sqrt(n_calibration / n_fit)`` than the one that
    matches it on the whole calibration part, which the evaluation fits on."""
    runs = load_variant_runs(preset, study)
    if runs is None or examples_of(runs) != DEVELOPMENT or task not in set(runs["task"]):
        return ""
    summary = compare_variants(runs[runs["task"] == task], late_limit, reference=reference_of(runs))
    ok = summary[summary["light_cells_over_late_limit"] == 0]
    if ok.empty:
        return ""
    if summary["mean_effective_accuracy"].nunique() == 1:
        return f"On {task} every {parameter} of the study scores the same on development examples."
    best = ok.loc[ok["mean_effective_accuracy"].idxmax()]
    best_value = float(json.loads(best["params"])[parameter])
    at_chosen = summary[[math.isclose(float(json.loads(p)[parameter]), chosen) for p in summary["params"]]]
    if math.isclose(best_value, chosen) or (len(at_chosen) and at_chosen["mean_effective_accuracy"].max()
                                            >= best["mean_effective_accuracy"]):
        return f"On {task} the preset's {parameter} ({chosen:g}) is also the best of the study on development examples."
    n_fit, n_score = development_sizes(bundle, task)
    factor = math.sqrt((n_fit + n_score) / n_fit)
    gain = ("" if at_chosen.empty else
            f", {best['mean_effective_accuracy'] - at_chosen['mean_effective_accuracy'].iloc[0]:+.4f} mean effective "
            f"accuracy over the preset's {chosen:g}")
    return (f"On {task} the best {parameter} on development examples is {best_value:g} ({best['variant']}{gain}). "
            f"Those runs fit their accuracies on {n_fit} examples, the evaluation on {n_fit + n_score}, and the "
            f"standard error of a paired accuracy difference shrinks as one over the square root of the count: a "
            f"tolerance matched to the examples' noise there is {factor:.2f} times the one matched to it in the "
            f"evaluation, so {best_value:g} there corresponds to about {best_value / factor:.3f} here, against the "
            f"preset's {chosen:g}.")
