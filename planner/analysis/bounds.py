"""How loose the clairvoyant bound is for want of timing: the chance bound beside it, cell by cell.

The clairvoyant bound (:func:`planner.evaluation.clairvoyant.clairvoyant_bound`) holds for every
run, so it charges every batch its configuration's fastest sample. The chance bound
(:func:`planner.evaluation.clairvoyant.chance_bound`) holds in expectation for every policy that
does not foresee its service draws, and charges each request the chance of a fast enough draw
instead, but knows nothing of the queue. The lower of the two bounds every online method's mean;
comparing the proposed method with it says how much of its distance to the clairvoyant bound is the
bound's minimum service times, and how much is left.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from planner.analysis.results import BOUND_METHODS, PLANNER_METHOD, bound_method
from planner.evaluation.clairvoyant import chance_bound
from planner.plan import registry
from planner.schema import ProfileBundle
from planner.serving.simulator import prepare
from planner.splits import example_ids

CELL = ["workload", "load"]
# a bound lower than the other by less than this is not called the lower one (the seeds' mean moves more)
CLEARLY = 0.005


def chance_cells(runs: pd.DataFrame, bundle: ProfileBundle, task: str, mixed: Iterable[str] = ()) -> pd.DataFrame:
    """Per single-deadline (workload, load, deadline) of ``task``: the proposed method's, the best other
    online method's and the clairvoyant bound's mean effective accuracy over seeds, the chance bound at
    that deadline (with the runs' smallest dispatch overhead: a smaller one only raises it) and
    ``tighter``, the lower of the two bounds. ``mixed``: workloads whose traces mix deadline classes,
    left out (their ``deadline_ms`` is only each class's base). Empty without runs of the bound."""
    part = runs[(runs["task"] == task) & ~runs["workload"].isin(list(mixed))]
    bound = bound_method(part["method"])
    if part.empty or bound is None or PLANNER_METHOD not in set(part["method"]):
        return pd.DataFrame()
    means = part.groupby([*CELL, "deadline_ms", "method"])["effective_accuracy"].mean().unstack("method")
    # runs that predate the recorded overhead: none (a smaller overhead only raises the bound)
    overhead = float(part["dispatch_overhead_ms"].min()) if "dispatch_overhead_ms" in part else 0.0
    catalog = prepare(bundle, dispatch_overhead_ms=overhead)
    ids = example_ids(bundle, task)
    chance = {d: chance_bound(catalog, task, ids, float(d)) for d in sorted(set(part["deadline_ms"]))}
    hindsight = set(registry.with_role("hindsight"))
    online = [m for m in means.columns if m not in BOUND_METHODS and m not in hindsight and m != PLANNER_METHOD]
    out = pd.DataFrame({
        "proposed": means[PLANNER_METHOD],
        "best_other_online": means[online].max(axis=1) if online else np.nan,
        "clairvoyant": means[bound],
        "chance": [chance[d] for d in means.index.get_level_values("deadline_ms")],
    }, index=means.index)
    out["tighter"] = np.minimum(out["clairvoyant"], out["chance"])
    return out.reset_index()


def chance_shares(cells: pd.DataFrame) -> tuple[float, float, int]:
    """(share of the clairvoyant bound, share of the lower of the two bounds, number of cells) of the
    proposed method over :func:`chance_cells`' cells, averaged as the scorecard averages: per (workload,
    load) cell over its deadlines, then over the cells."""
    per_cell = cells.groupby(CELL)[["proposed", "clairvoyant", "tighter"]].mean()
    return (float((per_cell["proposed"] / per_cell["clairvoyant"]).mean()),
            float((per_cell["proposed"] / per_cell["tighter"]).mean()), len(per_cell))


def chance_text(cells: pd.DataFrame, task: str) -> str:
    """The book's sentence on :func:`chance_cells`: the proposed method's share of each bound averaged
    over the cells as the scorecard averages it (per cell, over its deadlines), the deadlines where
    the chance bound is the lower one, and whether any online method's mean exceeds the chance bound
    (it should not, up to the noise of ten seeds)."""
    if cells.empty:
        return ""
    share, tight_share, n_cells = chance_shares(cells)
    by_deadline = cells.groupby("deadline_ms")[["clairvoyant", "chance"]].mean()
    lower = by_deadline[by_deadline["chance"] < by_deadline["clairvoyant"] - CLEARLY]
    where = (f"; the chance bound is lower by more than {CLEARLY:g} " + ", ".join(
        f"at {d:g} ms ({r.chance:.3f} against {r.clairvoyant:.3f} on average over the cells)"
        for d, r in lower.iterrows()) if len(lower) else f"; the chance bound is nowhere lower by more than {CLEARLY:g}")
    gap = cells[["proposed", "best_other_online"]].max(axis=1) - cells["chance"]
    excess = float(gap.max())
    above_zero = gap[cells["chance"] > 0]
    closest = (f"; where it is above 0, the closest is {abs(float(above_zero.max())):.3f} below it"
               if len(above_zero) else "")
    check = (f"No online method's mean exceeds the chance bound in any (workload, load, deadline){closest}."
             if excess <= 0 else
             f"An online method's mean exceeds the chance bound by up to {excess:.3f} in some (workload, load, "
             f"deadline): the bound holds in expectation, and a mean over seeds can lie above it by chance.")
    return (f"On {task}, over the {n_cells} single-deadline cells, {PLANNER_METHOD}'s share of the clairvoyant "
            f"bound is {share:.3f} and of the lower of the two bounds {tight_share:.3f}{where}. {check}")


__all__ = ["chance_cells", "chance_shares", "chance_text"]
