"""How loose the clairvoyant bound is for want of timing and of routing: the chance bounds beside it.

The clairvoyant bound (:func:`planner.evaluation.clairvoyant.clairvoyant_bound`) holds for every
run, so it charges every batch its configuration's fastest sample. The chance bound
(:func:`planner.evaluation.clairvoyant.chance_bound`) holds in expectation for every policy that
does not foresee its service draws, and charges each request the chance of a fast enough draw
instead, but knows nothing of the queue. The lower of the two bounds every online method's mean;
comparing the proposed method with it says how much of its distance to the clairvoyant bound is the
bound's minimum service times. Its example-blind form (``sees_example=False``) bounds the policies
that choose without seeing a request's example, which every online method here is; the difference
between the two is what the first credits routing each request by its own correctness with. What
is left is the queue, which these bounds in expectation leave out and the work bound
(:mod:`planner.evaluation.work_bound`, computed per grid trace by benchmarks/work_bound.py and set
beside the others by :func:`work_cells`) charges in expectation, and what the policy leaves. One
thing the proposed method leaves on purpose is requests a configuration would answer late as often
as on time: the late-limited bound (``late_limited_bound``; all three from one pass, ``expected_bounds``) is what a policy held to the study's late
limit can expect, and :func:`limited_margins` cuts every other method's lead to it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from planner.analysis.results import (BOUND_METHODS, PLANNER_METHOD, SCORECARD_LATE, SCORECARD_MARGIN, bound_method,
                                      grid_cells)
from planner.paths import results_dir
from planner.evaluation.clairvoyant import expected_bounds
from planner.evaluation.provenance import recorded_inputs
from planner.plan import registry
from planner.schema import ProfileBundle
from planner.serving.simulator import prepare
from planner.splits import example_ids

CELL = ["workload", "load"]
#: what benchmarks/no_queue.py runs: the proposed method, the hindsight reference and the bound
NO_QUEUE_METHODS = (PLANNER_METHOD, *registry.with_role("hindsight"), *BOUND_METHODS)
# a bound lower than the other by less than this is not called the lower one (the seeds' mean moves more)
CLEARLY = 0.005


def chance_cells(runs: pd.DataFrame, bundle: ProfileBundle, task: str,
                 classes: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> pd.DataFrame:
    """Per (workload, load, deadline) of ``task``: the proposed method's, the best other online
    method's and the clairvoyant bound's mean effective accuracy over seeds, the chance bound at that
    deadline (with the runs' smallest dispatch overhead: a smaller one only raises it), ``tighter``,
    the lower of the two bounds, ``blind``, the chance bound of the policies that do not see a
    request's example, ``lowest``, the lower of it and the clairvoyant bound, ``late_share``, the
    study's late limit or the proposed method's late share where that is higher, ``late_limited``, the
    example-blind bound held to that late share, and ``limited_lowest``, the lowest of all.

    ``classes``: (share, scale) per deadline class of each workload whose traces mix deadlines
    (:func:`planner.analysis.results.deadline_classes`); its cells are bounded class by class at the
    cell's base ``deadline_ms`` times each scale, and flagged ``mixed``. A workload that mixes
    deadlines must be listed, or its base deadline would be taken for every request's. Empty without
    runs of the bound."""
    classes = dict(classes or {})
    part = runs[runs["task"] == task]
    bound = bound_method(part["method"])
    if part.empty or bound is None or PLANNER_METHOD not in set(part["method"]):
        return pd.DataFrame()
    means = part.groupby([*CELL, "deadline_ms", "method"])["effective_accuracy"].mean().unstack("method")
    # runs that predate the recorded overhead: none (a smaller overhead only raises the bound)
    overhead = float(part["dispatch_overhead_ms"].min()) if "dispatch_overhead_ms" in part else 0.0
    catalog = prepare(bundle, dispatch_overhead_ms=overhead)
    ids = example_ids(bundle, task)

    def mix(workload: str, deadline: float) -> float | tuple[tuple[float, float], ...]:
        if workload not in classes:
            return float(deadline)
        return tuple((float(share), float(deadline) * float(scale)) for share, scale in classes[workload])

    keys = list(zip(means.index.get_level_values("workload"), means.index.get_level_values("deadline_ms")))
    mixes = [mix(*key) for key in keys]
    # held to the study's late limit, or to the proposed method's own late share where it serves more late
    late = (part[part["method"] == PLANNER_METHOD].groupby([*CELL, "deadline_ms"])["late_rate"].mean()
            if "late_rate" in part else pd.Series(dtype=float))  # runs without it: held to the limit
    late_share = np.maximum(SCORECARD_LATE, late.reindex(means.index).fillna(0.0).to_numpy())
    asked: dict = {}
    for m, share in zip(mixes, late_share):
        asked.setdefault(m, set()).add(float(share))
    bounds = {m: expected_bounds(catalog, task, ids, m, sorted(shares)) for m, shares in asked.items()}
    hindsight = set(registry.with_role("hindsight"))
    online = [m for m in means.columns if m not in BOUND_METHODS and m not in hindsight and m != PLANNER_METHOD]
    out = pd.DataFrame({
        "mixed": [w in classes for w, _ in keys],
        "proposed": means[PLANNER_METHOD],
        "best_other_online": means[online].max(axis=1) if online else np.nan,
        "clairvoyant": means[bound],
        "chance": [bounds[m].chance for m in mixes],
        "blind": [bounds[m].blind for m in mixes],
        "late_share": late_share,
        "late_limited": [bounds[m].late_limited[float(s)] for m, s in zip(mixes, late_share)],
    }, index=means.index)
    out["tighter"] = np.minimum(out["clairvoyant"], out["chance"])
    out["lowest"] = np.minimum(out["clairvoyant"], out["blind"])
    out["limited_lowest"] = np.minimum(out["lowest"], out["late_limited"])
    return out.reset_index()


def cell_shares(cells: pd.DataFrame, bound: str) -> pd.Series:
    """The proposed method's share of ``bound`` (a column of :func:`chance_cells`) per (workload, load)
    cell, as the scorecard computes a share: the cell's mean over its deadlines of each, then the ratio."""
    per_cell = cells.groupby(CELL)[["proposed", bound]].mean()
    return per_cell["proposed"] / per_cell[bound]


class Shares(NamedTuple):
    """The proposed method's share of each bound, averaged as the scorecard averages: per (workload,
    load) cell over its deadlines, then over the cells."""

    clairvoyant: float
    tighter: float   # the lower of the clairvoyant and the chance bound
    lowest: float    # the lower of the clairvoyant and the example-blind chance bound
    late_limited: float  # the lower of that and the example-blind bound held to the late share
    cells: int


def chance_shares(cells: pd.DataFrame) -> Shares:
    """:class:`Shares` of the proposed method over :func:`chance_cells`' cells."""
    columns = ("clairvoyant", "tighter", "lowest", "limited_lowest")
    return Shares(*(float(cell_shares(cells, b).mean()) for b in columns), cells[CELL].drop_duplicates().shape[0])


def chance_text(cells: pd.DataFrame, task: str) -> str:
    """The book's sentences on :func:`chance_cells`: the proposed method's share of each bound averaged
    over the cells as the scorecard averages it (per cell, over its deadlines), the deadlines where
    the chance bound is the lower one, how much lower the bound is without crediting routing by
    correctness (its example-blind form) as a part of the proposed method's distance, and whether
    any online method's mean exceeds the example-blind bound (it should not, up to the noise of ten
    seeds: every online method here chooses without seeing a request's example)."""
    if cells.empty:
        return ""
    shares = chance_shares(cells)
    # by deadline over the single-deadline cells only (a mixed cell's deadline_ms is only its classes' base)
    single = cells[~cells["mixed"]]
    by_deadline = single.groupby("deadline_ms")[["clairvoyant", "chance"]].mean()
    lower = by_deadline[by_deadline["chance"] < by_deadline["clairvoyant"] - CLEARLY]
    where = (f"; the chance bound is lower by more than {CLEARLY:g} " + ", ".join(
        f"at {d:g} ms ({r.chance:.3f} against {r.clairvoyant:.3f} on average over the single-deadline cells)"
        for d, r in lower.iterrows()) if len(lower) else f"; the chance bound is nowhere lower by more than {CLEARLY:g}")
    per_cell = cells.groupby(CELL)[["proposed", "tighter", "lowest"]].mean()
    credit = per_cell["tighter"] - per_cell["lowest"]
    distance = float((per_cell["tighter"] - per_cell["proposed"]).mean())
    part = (f": {float(credit.mean()) / distance:.0%} of {PLANNER_METHOD}'s mean distance to the lower of the "
            f"first two" if distance > 0 else "")
    blind = (f" For policies that choose without seeing a request's example (every online method here), the best "
             f"configuration's mean chance bounds their mean instead, and {PLANNER_METHOD}'s share of the lower "
             f"of that and the clairvoyant bound is {shares.lowest:.3f}. Not crediting routing by correctness "
             f"lowers the bound by {float(credit.mean()):.3f} on average over the cells "
             f"({float(credit.max()):.3f} at most in one){part}. The rest of the distance is the queue, which "
             f"the chance bounds leave out and the clairvoyant bound holds only at minimum service times, and "
             f"what the policy itself leaves.")
    limited = single.groupby("deadline_ms")[["lowest", "late_limited"]].mean()
    limited = limited[limited["late_limited"] < limited["lowest"] - CLEARLY]
    by_workload = cell_shares(cells, "limited_lowest").groupby(level="workload").mean()
    positive = cells[cells["late_limited"] > 0]
    over = float((positive["proposed"] - positive["late_limited"]).max()) if len(positive) else -np.inf
    lower_at = (", which is lower " + ", ".join(f"at {d:g} ms ({r.late_limited:.3f} against {r.lowest:.3f})"
                                              for d, r in limited.iterrows())
                if len(limited) else ", which is nowhere clearly lower")
    held = (f" One thing it leaves on purpose: held to the study's {SCORECARD_LATE:.0%} late limit (or to "
            f"{PLANNER_METHOD}'s own late share where that is higher), such a policy can expect no more than the "
            f"best mix of configurations and shed requests allows (`late_limited_bound`){lower_at}. Against the "
            f"lowest bound, {PLANNER_METHOD}'s share is then {shares.late_limited:.3f}, from "
            f"{by_workload.min():.3f} on {by_workload.idxmin()} to {by_workload.max():.3f} on {by_workload.idxmax()}; "
            + (f"where that bound is above 0, its mean is at least {abs(over):.3f} below it." if over <= 0 else
               f"its mean exceeds the late-limited bound by up to {over:.3f} (a bound in expectation, against a mean "
               f"over seeds)."))
    gap = cells[["proposed", "best_other_online"]].max(axis=1) - cells["blind"]
    excess = float(gap.max())
    above_zero = gap[cells["blind"] > 0]
    closest = (f"; where it is above 0, the closest is {abs(float(above_zero.max())):.3f} below it"
               if len(above_zero) else "")
    check = (f"No online method's mean exceeds the example-blind bound in any (workload, load, deadline){closest}."
             if excess <= 0 else
             f"An online method's mean exceeds the example-blind bound by up to {excess:.3f} in some (workload, "
             f"load, deadline): the bound holds in expectation, and a mean over seeds can lie above it by chance.")
    n_mixed = int(cells.loc[cells["mixed"], CELL].drop_duplicates().shape[0])
    which = f" ({n_mixed} with mixed deadlines, bounded class by class)" if n_mixed else ""
    return (f"On {task}, over the {shares.cells} cells{which}, {PLANNER_METHOD}'s share of the clairvoyant "
            f"bound is {shares.clairvoyant:.3f} and of the lower of the two bounds {shares.tighter:.3f}{where}."
            f"{blind}{held} {check}")


def limited_margins(runs: pd.DataFrame, cells: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per (workload, load) cell of ``task`` in :func:`chance_cells`' ``cells``: the
    proposed method's margin over the best other method (as the scorecard computes it) and
    ``limited_margin``, the same with every other method's mean at each deadline cut to the
    late-limited bound there: what a policy held to the late limit can expect at most. Why: where a
    fixed configuration leads only by answering most requests late, that lead is not one a method
    held to the study's late limit could take."""
    if cells.empty:
        return pd.DataFrame()
    part = runs[(runs["task"] == task) & ~runs["method"].isin(list(BOUND_METHODS))]
    means = part.groupby([*CELL, "deadline_ms", "method"])["effective_accuracy"].mean().unstack("method")
    cap = cells.set_index([*CELL, "deadline_ms"])["late_limited"]
    means = means.loc[cap.index]
    others = [m for m in means.columns if m != PLANNER_METHOD]
    capped = means[others].clip(upper=cap, axis=0)
    per_cell = grid_cells(part)
    per_cell = per_cell[per_cell["task"] == task].set_index(CELL).loc[cap.index.droplevel("deadline_ms").unique()]
    out = pd.DataFrame({"margin": per_cell["margin"], "best_other_method": per_cell["best_other_method"]})
    by_cell = capped.groupby(level=CELL).mean()
    out["limited_margin"] = means[PLANNER_METHOD].groupby(level=CELL).mean() - by_cell.max(axis=1)
    return out.reset_index()


def limited_margin_text(margins: pd.DataFrame, task: str) -> str:
    """The book's sentence on :func:`limited_margins`: of the cells that miss the
    margin, how many are within it once the other methods' leads are cut to what a policy held to
    the late limit can expect, and the margins of those that still miss."""
    if margins.empty:
        return ""
    missed = margins[margins["margin"] < -SCORECARD_MARGIN]
    if missed.empty:
        return f"On {task} no cell misses the margin."
    still = missed[missed["limited_margin"] < -SCORECARD_MARGIN]
    text = (f"On {task}, {len(missed) - len(still)} of the {len(missed)} cells that miss the margin "
            f"are within it once every other method's mean at each deadline is cut to the late-limited bound (what "
            f"a policy held to the {SCORECARD_LATE:.0%} late limit, or to {PLANNER_METHOD}'s own late share where "
            f"that is higher, can expect at most; see the bounds below)")
    if still.empty:
        return text + ": " + ", ".join(f"{r.workload} at load {r.load:g} goes from {r.margin:+.3f} to "
                                       f"{r.limited_margin:+.3f}" for r in missed.itertuples()) + "."
    return text + "; " + ", ".join(f"{r.workload} at load {r.load:g} stays at {r.limited_margin:+.3f}"
                                   for r in still.itertuples()) + "."


def no_queue_dir(preset: str) -> Path:
    """Where benchmarks/no_queue.py writes its runs (one CSV per task)."""
    return results_dir(preset) / "benchmarks" / "no_queue"


def work_bound_dir(preset: str) -> Path:
    """Where benchmarks/work_bound.py writes the work bound of every grid trace (one CSV per task)."""
    return results_dir(preset) / "benchmarks" / "work_bound"


def work_bound_stale(preset: str, task: str, record_name: str | None = None) -> str | None:
    """Why the stored work bound of ``task`` cannot be set beside the evaluation's runs (None: it can):
    its record (``record_name``, default the grid's) must name the profiles the runs were computed
    from (``eval/inputs.json``)."""
    record_path = work_bound_dir(preset) / (record_name or f"record_{task}.json")
    if not record_path.exists():
        return f"{record_path} is missing"
    made_from = json.loads(record_path.read_text()).get("profiles_sha256")
    runs_from = recorded_inputs(results_dir(preset) / "eval").get(f"runs_{task}.csv", {}).get("profiles_sha256")
    if made_from is None or made_from != runs_from:
        return (f"the work bound of {task} was computed from profiles {str(made_from)[:12]}…, the runs from "
                f"{str(runs_from)[:12]}…; run benchmarks/work_bound.py --out again")
    return None


def read_work_bound(preset: str, task: str) -> pd.DataFrame | None:
    """The work bound of every grid trace of ``task`` (benchmarks/work_bound.py), or None where it
    was not computed, or was computed from other profiles than the runs (with a warning saying so)."""
    path = work_bound_dir(preset) / f"bounds_{task}.csv"
    if not path.exists():
        return None
    reason = work_bound_stale(preset, task)
    if reason is not None:
        warnings.warn(reason, stacklevel=2)
        return None
    return pd.read_csv(path)


def read_late_work_bound(preset: str, task: str) -> pd.DataFrame | None:
    """The sample of ``benchmarks/work_bound.py --late`` for ``task`` (the work bound without and with
    the late limit, and the late-limited bound, per trace), or None where it was not computed or was
    computed from other profiles than the runs (with a warning saying so)."""
    path = work_bound_dir(preset) / f"late_{task}.csv"
    if not path.exists():
        return None
    reason = work_bound_stale(preset, task, f"late_record_{task}.json")
    if reason is not None:
        warnings.warn(reason, stacklevel=2)
        return None
    return pd.read_csv(path)


def late_work_text(rows: pd.DataFrame | None, task: str) -> str:
    """The book's sentence on :func:`read_late_work_bound`: on how many sampled traces holding the late
    limit and the queue together lowers the bound below the lower of the two bounds that hold one of
    them each, by how much at most and where, and what it is on the bursty traces. Why: it says whether
    the late limit costs the proposed method more under a queue than either bound shows."""
    if rows is None or rows.empty:
        return ""
    lower = np.minimum(rows["work"], rows["late_limited"])
    gain = lower - rows["late_work"]
    lowered = rows[gain > CLEARLY]
    where = ""
    if len(lowered):
        top = lowered.loc[gain[lowered.index].idxmax()]
        where = (f", by up to {gain.max():.3f} ({top.workload} at load {top.load:g}, {top.deadline_ms:g} ms: "
                 f"{lower[top.name]:.3f} to {top.late_work:.3f})")
    bursty = rows["workload"].str.startswith("bursty")
    burst = (f" On the bursty traces it is at most {max(float(gain[bursty].max()), 0.0):.4f} below the lower of the two."
             if bursty.any() else "")
    return (f"On {task}, held to the late limit and the queue together (the first seed's trace of each cell at "
            f"loads up to {rows['load'].max():g}, {len(rows)} traces), the work bound is lower than the lower of the "
            f"work bound and the late-limited bound by more than {CLEARLY} on {len(lowered)} of them{where}.{burst}")


def read_no_queue(preset: str, task: str) -> pd.DataFrame | None:
    """The no-queue runs of ``task`` (benchmarks/no_queue.py), or None where they were not run."""
    path = no_queue_dir(preset) / f"runs_{task}.csv"
    return pd.read_csv(path) if path.exists() else None


def no_queue_text(light: pd.DataFrame, grid: pd.DataFrame, task: str) -> str:
    """The book's sentence on the no-queue runs: the proposed method's share of the lowest bound at
    the light load (:func:`chance_cells` of those runs, ``light``) against the same workloads' share
    at each of the grid's loads (``grid``: :func:`chance_cells` of the evaluation), and the deadlines
    where it stays furthest below the bound even then. Why: the bounds in expectation leave the queue
    out, so only a run without one says how much of the distance is the policy's own."""
    if light.empty or grid.empty:
        return ""
    at_light = cell_shares(light, "limited_lowest").groupby(level="load").mean()
    same = grid[grid["workload"].isin(set(light["workload"]))]
    at_grid = cell_shares(same, "limited_lowest").groupby(level="load").mean()
    by_deadline = light[~light["mixed"]].groupby("deadline_ms")[["proposed", "limited_lowest"]].mean()
    gap = (by_deadline["limited_lowest"] - by_deadline["proposed"]).sort_values(ascending=False)
    worst = ", ".join(f"{d:g} ms ({by_deadline.loc[d, 'proposed']:.3f} against {by_deadline.loc[d, 'limited_lowest']:.3f})"
                      for d in gap.index[:2] if gap[d] > CLEARLY)
    workloads = " and ".join(sorted(set(light["workload"])))
    return (f"On {task}, with almost no queue ({workloads} at load {', '.join(f'{x:g}' for x in at_light.index)}), "
            f"{PLANNER_METHOD}'s share of the lowest bound is {', '.join(f'{v:.3f}' for v in at_light)}, against "
            + ", ".join(f"{v:.3f} at load {x:g}" for x, v in at_grid.items()) + " on the same workloads in the grid"
            + (f"; even then it is furthest below it at {worst}." if worst else "."))


def _work_means(work: pd.DataFrame) -> pd.Series:
    """The work bound's mean over the seeds per (workload, load, deadline), ``work``; only where as many
    seeds were bounded as anywhere (a run that stopped part-way bounds fewer)."""
    keys = [*CELL, "deadline_ms"]
    seeds = work.groupby(keys)["seed"].nunique()
    return work.groupby(keys)["work_bound"].mean()[seeds == seeds.max()].rename("work")


def work_cells(cells: pd.DataFrame, work: pd.DataFrame | None) -> pd.DataFrame:
    """:func:`chance_cells`' ``cells`` with the work bound beside them: ``work``, its mean over the
    seeds of each (workload, load, deadline) (``work``: :func:`read_work_bound`), ``queue_lowest``, the
    lower of it and the clairvoyant bound, and ``queue_limited``, the lowest of those and the
    late-limited bound. Only cells with every seed's bound are kept (a run that stopped part-way
    bounds fewer); empty without the work bound."""
    if cells.empty or work is None or work.empty:
        return pd.DataFrame()
    keys = [*CELL, "deadline_ms"]
    out = cells.merge(_work_means(work).reset_index(), on=keys, how="inner")
    complete = out.groupby(CELL)["deadline_ms"].transform("size") == cells.groupby(CELL)["deadline_ms"].size().max()
    out = out[complete].copy()
    out["queue_lowest"] = np.minimum(out["clairvoyant"], out["work"])
    out["queue_limited"] = np.minimum(out["limited_lowest"], out["work"])
    return out.reset_index(drop=True)


def ceiling_cells(runs: pd.DataFrame, work: pd.DataFrame | None, task: str) -> pd.DataFrame:
    """Per (workload, load) cell of ``task`` (``task``, ``workload``, ``load``, ``ceiling``): the most of the
    clairvoyant bound that a policy which neither sees the requests' examples nor foresees its service
    draws (every online method here) can expect there, averaged as the scorecard averages a share: the
    cell's mean over its deadlines of the lower of the work bound and the clairvoyant bound (each a mean
    over the seeds), over its mean of the clairvoyant bound. Only cells whose every deadline has the
    work bound of every seed; empty without the work bound (``work``: :func:`read_work_bound`).

    Why: the study's target share of the clairvoyant bound is out of reach of every such policy where
    this is below it, however well it schedules; the clairvoyant bound credits routing each request by
    its own correctness and the fastest draw of every batch, which none of them can use."""
    part = runs[runs["task"] == task]
    bound = bound_method(part["method"])
    empty = pd.DataFrame(columns=["task", *CELL, "ceiling"])
    if work is None or work.empty or bound is None:
        return empty
    keys = [*CELL, "deadline_ms"]
    clairvoyant = part[part["method"] == bound].groupby(keys)["effective_accuracy"].mean().rename("clairvoyant")
    both = clairvoyant.reset_index().merge(_work_means(work).reset_index(), on=keys, how="inner").set_index(CELL)
    bounded, needed = both.groupby(level=CELL).size(), clairvoyant.groupby(level=CELL).size()
    complete = bounded.index[bounded.to_numpy() == needed.reindex(bounded.index).to_numpy()]
    if complete.empty:
        return empty
    both = both.loc[complete]
    both["lower"] = np.minimum(both["clairvoyant"], both["work"])
    per_cell = both.groupby(level=CELL)[["lower", "clairvoyant"]].mean()
    return (per_cell["lower"] / per_cell["clairvoyant"]).rename("ceiling").reset_index().assign(task=task)[
        ["task", *CELL, "ceiling"]]


def scorecard_ceilings(preset: str, runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`ceiling_cells` of every task of ``runs``, with the preset's work bound (where computed)."""
    frames = [ceiling_cells(runs, read_work_bound(preset, task), task) for task in sorted(set(runs["task"]))]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["task", *CELL, "ceiling"])


def ceiling_text(card: pd.DataFrame, ceilings: pd.DataFrame, target: float) -> str:
    """The book's sentences on the scorecard's ceiling (``card``: :func:`planner.analysis.results.scorecard`
    with ``ceilings``, :func:`scorecard_ceilings`) per task: the most of the clairvoyant bound such a
    policy can expect, from its lowest cell to its highest, whether the study's ``target`` share is
    within it, and the proposed method's share as a part of it."""
    sentences = []
    for r in card.itertuples(index=False):
        part = ceilings[ceilings["task"] == r.task] if not ceilings.empty else ceilings
        if not r.mean_ceiling == r.mean_ceiling or part.empty:
            continue
        low, high = part.loc[part["ceiling"].idxmin()], part.loc[part["ceiling"].idxmax()]
        reach = ("which puts the target of {:.0%} of it out of reach of every such policy, however it schedules"
                 if r.mean_ceiling < target else "which leaves the target of {:.0%} of it within reach").format(target)
        sentences.append(
            f"On {r.task}, a policy that neither sees the requests' examples nor foresees its service draws can "
            f"expect at most {r.mean_ceiling:.3f} of the clairvoyant bound, averaged over the {len(part)} cells as "
            f"the scorecard averages a share (the lower of the work bound and the clairvoyant bound over the "
            f"clairvoyant bound; from {low['ceiling']:.3f} on {low['workload']} at load {low['load']:g} to "
            f"{high['ceiling']:.3f} on {high['workload']} at load {high['load']:g}), {reach}; {PLANNER_METHOD}'s "
            f"{r.mean_share_of_bound:.3f} is {r.mean_share_of_bound / r.mean_ceiling:.1%} of that most.")
    return " ".join(sentences)


def work_shares(cells: pd.DataFrame) -> tuple[float, float]:
    """The proposed method's share of ``queue_lowest`` and of ``queue_limited`` over :func:`work_cells`'
    cells, averaged as the scorecard averages (per cell over its deadlines, then over the cells)."""
    return float(cell_shares(cells, "queue_lowest").mean()), float(cell_shares(cells, "queue_limited").mean())


def work_text(cells: pd.DataFrame, task: str, total_cells: int) -> str:
    """The book's sentences on :func:`work_cells`: how far holding the queue lowers the bound, by
    workload, the proposed method's share of the lowest bound with it, the workloads furthest from it,
    and whether any online method's mean exceeds it (it should not, up to the noise of the seeds: the
    bound holds in expectation for every example-blind policy that does not foresee its draws)."""
    if cells.empty:
        return ""
    n = int(cells[CELL].drop_duplicates().shape[0])
    of = f"{n} cells" if n == total_cells else f"the {n} of {total_cells} cells whose traces were all bounded"
    queue_lowest, queue_limited = work_shares(cells)
    by_workload = cells.groupby("workload")[["clairvoyant", "lowest", "work"]].mean()
    drop = (by_workload["lowest"] - by_workload["work"]).sort_values(ascending=False)
    most = ", ".join(f"{w} ({by_workload.loc[w, 'lowest']:.3f} to {by_workload.loc[w, 'work']:.3f})"
                     for w in drop.index[:2])
    share_by = cell_shares(cells, "queue_limited").groupby(level="workload").mean().sort_values()
    gap = cells[["proposed", "best_other_online"]].max(axis=1) - cells["work"]
    excess = float(gap.max())
    above_zero = gap[cells["work"] > 0]
    closest = (f"; where it is above 0, the closest is {abs(float(above_zero.max())):.3f} below it"
               if len(above_zero) else "")
    check = (f"No online method's mean exceeds it in any (workload, load, deadline){closest}." if excess <= 0 else
             f"An online method's mean exceeds it by up to {excess:.3f} in some (workload, load, deadline): the bound "
             f"holds in expectation, and a mean over seeds can lie above it by chance.")
    return (f"On {task}, over {of}, holding the queue lowers the lower of the clairvoyant and example-blind "
            f"bounds most on {most}, averaged over loads and deadlines. {PLANNER_METHOD}'s share of the lower of the "
            f"work bound and the clairvoyant bound is {queue_lowest:.3f}, and {queue_limited:.3f} with the late-limited "
            f"bound too; by workload the latter runs from {share_by.iloc[0]:.3f} on {share_by.index[0]} to "
            f"{share_by.iloc[-1]:.3f} on {share_by.index[-1]}. {check}")


__all__ = ["NO_QUEUE_METHODS", "Shares", "ceiling_cells", "ceiling_text", "cell_shares", "chance_cells", "chance_shares",
           "chance_text", "scorecard_ceilings",
           "late_work_text", "limited_margin_text", "limited_margins", "no_queue_dir", "no_queue_text",
           "read_late_work_bound", "read_no_queue", "read_work_bound", "work_bound_dir", "work_bound_stale", "work_cells",
           "work_shares", "work_text"]
