"""Two methods compared rate by rate over a LoadGen sweep (``benchmarks/loadgen_sweep.sh``).

Why a module of its own: the sweep's runs are read in the evaluation layer
(:func:`planner.evaluation.loadgen.read_runs`); testing their differences is analysis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from scipy.stats import fisher_exact

from planner.analysis.hosts import host_phrase
from planner.analysis.stats import holm
from planner.evaluation.loadgen import sweep_summary as loadgen_summary


def rate_comparison(runs: pd.DataFrame, method: str, baseline: str, alpha: float = 0.05) -> pd.DataFrame:
    """Per (task, latency target, target rate) where both ran: each one's correct answers within the
    target out of its queries, the difference in effective accuracy (``method`` - ``baseline``) and
    Fisher's exact test of it, Holm-adjusted over every row (``p_holm``, ``significant``). Why: a sweep
    runs each rate once, on a few thousand queries at most, so a gap of a point or two can be noise;
    the runs are independent (no pairing of queries), hence a two-sample test on the counts."""
    keys = ["task", "target_latency_ms", "target_qps"]
    columns = [*keys, "n_method", "n_baseline", "effective_accuracy_method", "effective_accuracy_baseline",
               "difference", "p", "p_holm", "significant"]
    if runs.empty or any(c not in runs.columns for c in [*keys, "method", "n_queries", "n_correct_within"]):
        return pd.DataFrame(columns=columns)
    one = runs.drop_duplicates([*keys, "method"], keep="last").set_index([*keys, "method"])
    rows = []
    for key in sorted({k[:-1] for k in one.index if k[-1] == method} & {k[:-1] for k in one.index if k[-1] == baseline}):
        a, b = one.loc[(*key, method)], one.loc[(*key, baseline)]
        na, ka, nb, kb = int(a["n_queries"]), int(a["n_correct_within"]), int(b["n_queries"]), int(b["n_correct_within"])
        rows.append({**dict(zip(keys, key)), "n_method": na, "n_baseline": nb,
                     "effective_accuracy_method": ka / na, "effective_accuracy_baseline": kb / nb,
                     "difference": ka / na - kb / nb,
                     "p": float(fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue)})
    out = pd.DataFrame(rows, columns=columns[:-2])
    out["p_holm"] = holm(out["p"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    return out


def significant_leads(table: pd.DataFrame) -> tuple[int, int]:
    """(rates where ``method`` is significantly ahead, where it is significantly behind) in
    :func:`rate_comparison`'s ``table`` (or a part of it)."""
    significant = table["significant"].astype(bool)
    return int((significant & (table["difference"] > 0)).sum()), int((significant & (table["difference"] < 0)).sum())


def comparison_text(table: pd.DataFrame, method: str, baseline: str) -> list[str]:
    """One sentence per task of :func:`rate_comparison`'s ``table``: at how many rates ``method``
    delivered more than ``baseline``, the highest rate's pair, and at how many the gap is significant
    (and, where it trails without significance, how large the gap and the smallest adjusted p)."""
    sentences = []
    for task, part in table.sort_values("target_qps").groupby("task", sort=False):
        ahead, behind = part[part["difference"] > 0], part[part["difference"] < 0]
        top = part.iloc[-1]
        queries = "-".join(dict.fromkeys(f"{n:,}" for n in (part["n_method"].min(), part["n_method"].max())))
        leads, lags = significant_leads(part)
        trailing = (f"; where it trails ({', '.join(f'{q:g}' for q in behind['target_qps'])} queries/s, by at most "
                    f"{-behind['difference'].min():.3f}) the smallest adjusted p is {behind['p_holm'].min():.2f}"
                    if len(behind) and not behind["significant"].any() else "")
        sentences.append(
            f"On {task}, whatever LoadGen's verdict, `{method}` delivered more correct answers within the target than "
            f"`{baseline}` at {len(ahead)} of the {len(part)} rates tried (at the highest, "
            f"{top.effective_accuracy_method:.3f} against {top.effective_accuracy_baseline:.3f}). Each rate ran once, "
            f"on {queries} queries per method: Fisher's exact test of each difference, Holm-adjusted over the sweep's "
            f"{len(table)} comparisons, finds `{method}` ahead at {leads} rate(s) and behind at {lags}{trailing}.")
    return sentences


def set_comparison(runs: pd.DataFrame, reference: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per method, :func:`rate_comparison` of its ``runs`` against its ``reference`` runs (the
    ``_method`` columns are ``runs``, the ``_baseline`` ones ``reference``), Holm-adjusted over every
    (method, task, rate) row. Why a family of its own: it asks how one set of runs differs from another
    of the same method, not which method is ahead."""
    frames = []
    for method in sorted(set(runs.get("method", ())) & set(reference.get("method", ()))):
        both = pd.concat([runs[runs["method"] == method],
                          reference[reference["method"] == method].assign(method="reference")])
        frames.append(rate_comparison(both, method, "reference").assign(method=method))
    if not frames or all(f.empty for f in frames):
        return pd.DataFrame(columns=["method", *rate_comparison(pd.DataFrame(), "", "").columns])
    out = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    out["p_holm"] = holm(out["p"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    return out[["method", *[c for c in out.columns if c != "method"]]]


def verdict_text(card: pd.DataFrame) -> list[str]:
    """One sentence per row of :func:`planner.evaluation.loadgen.sweep_summary`'s ``card``: up to which
    rate LoadGen accepted the method (MLPerf's Server figure) and what it delivered there, and the
    verdict and delivery at the highest rate tried."""
    sentences = []
    for r in card.itertuples(index=False):
        where = (f"LoadGen accepted the `{r.method}` server up to {r.max_valid_qps:g} queries/s, where it delivered an "
                 f"effective accuracy of {r.effective_accuracy_at_max_valid:.3f} (shed {r.shed_at_max_valid:.1%})"
                 if r.max_valid_qps == r.max_valid_qps else
                 f"LoadGen judged the `{r.method}` server INVALID at every rate tried")
        sentences.append(f"On {r.task} with a latency target of {r.target_latency_ms:g} ms ({r.n_rates} rates), {where}; "
                         f"at the highest rate tried, {r.top_qps:g} queries/s, it was {r.top_result} with an effective "
                         f"accuracy of {r.effective_accuracy_at_top:.3f} (shed {r.shed_at_top:.1%}).")
    return sentences


def short_runs_text(runs: Mapping[str, pd.DataFrame]) -> str:
    """A sentence naming the runs (``runs``: :func:`planner.evaluation.loadgen.read_runs` per folder) that
    LoadGen ended before its minimum duration, which it judges INVALID whatever their latencies (a fixed
    number of queries at a high rate lasts less than the minimum); empty when every run lasted it, or
    when the runs predate the record of it."""
    short = [f"{folder}/{r.run}" for folder, frame in runs.items()
             if not frame.empty and "min_duration_met" in frame
             for r in frame[frame["min_duration_met"].eq(False)].itertuples(index=False)]
    if not short:
        return ""
    return (f"LoadGen ended {len(short)} run(s) before its minimum duration, and judged them INVALID whatever their "
            f"latencies: {', '.join(short)}.")


def tail_text(as_is: pd.DataFrame, budgeted: pd.DataFrame, method: str) -> str:
    """How the budget moved ``method``'s 99th-percentile latency at the client, the figure LoadGen judges,
    per task: its range over the rates with the budget and sent as is, against the latency target."""
    sentences = []
    for task, part in budgeted[budgeted["method"] == method].groupby("task", sort=True):
        before = as_is[(as_is["method"] == method) & (as_is["task"] == task)]
        if before.empty:
            continue
        span = "; ".join(f"{frame['lat_p99_ms'].min():.1f}-{frame['lat_p99_ms'].max():.1f} ms {label}"
                         for label, frame in (("with the budget", part), ("sent as is", before)))
        targets = ", ".join(f"{t:g} ms" for t in sorted(part["target_latency_ms"].unique()))
        # within the target, yet INVALID: LoadGen's early stopping must be sure of the percentile, not see it
        unsure = part[(part["lat_p99_ms"] <= part["target_latency_ms"]) & (part["result"] != "VALID")
                      & ~part["early_stopping_met"].astype(bool)]
        allowed = 1 - float(part["latency_percentile"].max())
        unsure_note = (f"; with the budget it was within the target at {len(unsure)} rate(s) that LoadGen still "
                       f"judged INVALID by its early-stopping rule: on the queries run, those over the target were "
                       f"too many for it to be sure that fewer than {allowed:.0%} would be" if len(unsure) else "")
        sentences.append(f"On {task}, `{method}`'s 99th-percentile latency at the client over the rates: {span} "
                         f"(target {targets}){unsure_note}.")
    return " ".join(sentences)


def _quantile_words(quantile: float) -> str:
    """The path quantile a budget took off, in words (0.5: its median)."""
    if quantile == 0.5:
        return "median"
    percent = 100 * quantile
    whole = percent == int(percent) and not 10 < percent % 100 < 14  # 11th to 13th, and 99.5th, take "th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(int(percent) % 10, "th") if whole else "th"
    return f"{percent:g}{suffix} percentile"


def budget_comparison(budgeted: pd.DataFrame, as_sent: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """:func:`set_comparison` of each method's runs that sent each deadline less the client-server path
    (``budgeted``, :mod:`planner.serving.budget`) against its runs that sent it as is (``as_sent``):
    whether the budget helps a method."""
    return set_comparison(budgeted, as_sent, alpha)


def budget_text(table: pd.DataFrame) -> list[str]:
    """One sentence per (task, method) of :func:`budget_comparison`'s ``table``."""
    sentences = []
    for (task, method), part in table.sort_values("target_qps").groupby(["task", "method"], sort=True):
        up, down = part[part["difference"] > 0], part[part["difference"] < 0]
        change = part["difference"]
        sentences.append(
            f"On {task}, `{method}` with the budget delivered more correct answers within the target at {len(up)} of "
            f"the {len(part)} rates (mean change {change.mean():+.3f}, from {change.min():+.3f} "
            f"to {change.max():+.3f}); Fisher's exact test, Holm-adjusted over all {len(table)} "
            f"comparisons, finds it better at {int(up['significant'].sum())} rate(s) and worse at "
            f"{int(down['significant'].sum())}.")
    return sentences


def budget_cost_text(table: pd.DataFrame, budgeted: pd.DataFrame, as_sent: pd.DataFrame) -> list[str]:
    """Where the budget made a method significantly worse (:func:`budget_comparison`'s ``table``), which
    configuration it served most with the budget and without: a rule blind to the queue meets a tighter
    deadline with a smaller batch, so less throughput, and its queue grows (the path with it)."""
    keys = ["task", "method", "target_qps"]
    worse = table[table["significant"] & (table["difference"] < 0)]
    if worse.empty or "main_config" not in budgeted or "main_config" not in as_sent:
        return []
    one = {name: frame.drop_duplicates(keys, keep="last").set_index(keys) for name, frame in
           (("budgeted", budgeted), ("as_sent", as_sent))}
    sentences = []
    for r in worse.itertuples(index=False):
        key = (r.task, r.method, r.target_qps)
        if key not in one["budgeted"].index or key not in one["as_sent"].index:
            continue
        b, a = one["budgeted"].loc[key], one["as_sent"].loc[key]
        sentences.append(
            f"At {r.target_qps:g} queries/s on {r.task}, `{r.method}` with the budget served `{b['main_config']}` for "
            f"{b['main_config_share']:.0%} of its answers (median deadline sent {b['budget_p50_ms']:.2f} ms), and "
            f"`{a['main_config']}` for {a['main_config_share']:.0%} with the whole {a['target_latency_ms']:g} ms.")
    return sentences


def budget_section(pairs: dict[str, tuple[pd.DataFrame, pd.DataFrame]], method: str = "anytime",
                   baseline: str = "seed_p95", shed_note: float = 0.5,
                   compare: Sequence[str] = ("relaxed",)) -> tuple[list[str], pd.DataFrame]:
    """The book's account of the path budget: ``pairs`` maps a kind of latency targets ("relaxed",
    "tight"; a qualifier after a comma, "relaxed, tail", keeps two pairs of one kind apart) to (runs
    sent as is, runs with the budget), as :func:`planner.evaluation.loadgen.read_runs` reads them.
    Returns the paragraphs (per pair: the path, :func:`budget_text`, the cost to the other rules,
    where ``method`` shed more than ``shed_note`` of its queries, and for the pairs named in
    ``compare`` LoadGen's verdicts and the two methods compared with the budget; last, ``method``'s mean
    change per pair) and the pairs' tables of :func:`budget_comparison` (a ``targets`` column names the
    pair). Empty when no pair has both runs."""
    parts, tables, described = [], [], {}
    for name, (as_is, budgeted) in pairs.items():
        if as_is.empty or budgeted.empty or "path_quantile" not in as_is or "path_quantile" not in budgeted:
            continue
        as_is, budgeted = as_is[as_is["path_quantile"].isna()], budgeted[budgeted["path_quantile"].notna()]
        table = budget_comparison(budgeted, as_is)
        if table.empty:
            continue
        targets = ", ".join(f"{t:g} ms" for t in sorted(table["target_latency_ms"].unique()))
        taken = sorted(budgeted["path_quantile"].astype(float).unique())
        quantiles = " and ".join(f"the path's {_quantile_words(q)}" for q in taken)
        kind = name.split(",")[0].strip()
        described[name] = f"at the {kind} targets less {quantiles}"
        parts.append(
            f"**At {kind} latency targets, less {quantiles}** ({targets}): sent as is, the path added a "
            f"median {as_is['path_added_p50_ms'].median():.2f} ms to an answer; the budget sent a median deadline "
            f"{(budgeted['target_latency_ms'] - budgeted['budget_p50_ms']).median():.2f} ms shorter than the target.")
        parts.extend(budget_text(table))
        if tail := tail_text(as_is, budgeted, method):
            parts.append(tail)
        cost = budget_cost_text(table[table["method"] != method], budgeted, as_is)  # the method's own: below
        if cost:
            parts.append("A rule that does not look at the queue can lose by the budget: a tighter deadline moves "
                         "it to a configuration of smaller batch and less throughput, and at a high rate its queue "
                         "then grows, and the path with it.")
            parts.extend(cost)
        whole = as_is.set_index(["task", "method", "target_qps"])["client_within_deadline"]
        for r in budgeted[budgeted["method"] == method].itertuples(index=False):
            if r.shed > shed_note:
                before = whole.get((r.task, r.method, r.target_qps), float("nan"))
                parts.append(
                    f"With the budget the `{method}` server shed {r.shed:.1%} of the queries at {r.target_qps:g} "
                    f"queries/s on {r.task} (median deadline sent {r.budget_p50_ms:.2f} ms of {r.target_latency_ms:g}): "
                    f"a deadline cut by {quantiles} leaves no configuration its admission rule accepts; sent "
                    f"with the whole deadline, {before:.1%} of the queries completed within it at the client.")
        if name in compare:
            parts.append("With the budget, LoadGen's verdicts and the two methods compare so:")
            parts.extend(verdict_text(loadgen_summary(budgeted)))
            parts.extend(comparison_text(rate_comparison(budgeted, method, baseline), method, baseline))
        tables.append(table.assign(targets=name))
    if not tables:
        return [], pd.DataFrame()
    every = pd.concat(tables, ignore_index=True)
    mine = every[every["method"] == method].groupby("targets", sort=False)["difference"].mean()
    if len(mine):
        parts.append(f"For `{method}`, the budget changed the effective accuracy by " + " and ".join(
            f"{d:+.3f} on average {described[name]}" for name, d in mine.items()) + ". The clients send deadlines "
            "as is unless told otherwise; planning with the path's distribution, not one quantile of it, is left open.")
    return parts, every


REPEAT_KEYS = ["method", "task", "target_latency_ms", "target_qps"]


def repeat_comparison(first: pd.DataFrame, second: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per (method, task, latency target, rate) run in both of two sweeps with the same settings (the
    same method parameters, deadlines sent the same way): each run's LoadGen verdict and effective
    accuracy, the change (``second`` - ``first``) and Fisher's exact test of it, Holm-adjusted over
    every row. Why: a sweep runs each rate once, so how far a second run of the same code lands from
    the first is the yardstick for reading one run's verdict and one run's gap between methods.
    Points whose method parameters, path quantile or LoadGen seed differ between the sweeps are left
    out: they are not repeats."""
    columns = [*REPEAT_KEYS, "result_first", "result_second", "n_first", "n_second", "effective_accuracy_first",
               "effective_accuracy_second", "difference", "p", "p_holm", "significant"]
    if first.empty or second.empty:
        return pd.DataFrame(columns=columns)
    settings = ["method_params", "path_quantile", "seed"]
    keep = (first[[*REPEAT_KEYS, *settings]].astype(str)
            .merge(second[[*REPEAT_KEYS, *settings]].astype(str), on=[*REPEAT_KEYS, *settings])
            [REPEAT_KEYS].astype({"target_latency_ms": float, "target_qps": float}))
    first, second = (frame.merge(keep, on=REPEAT_KEYS) for frame in (first, second))
    table = set_comparison(second, first, alpha)
    if table.empty:
        return pd.DataFrame(columns=columns)
    table = table.rename(columns={"n_method": "n_second", "n_baseline": "n_first",
                                  "effective_accuracy_method": "effective_accuracy_second",
                                  "effective_accuracy_baseline": "effective_accuracy_first"})
    for name, frame in (("first", first), ("second", second)):
        verdicts = frame.drop_duplicates(REPEAT_KEYS, keep="last")[[*REPEAT_KEYS, "result"]]
        table = table.merge(verdicts.rename(columns={"result": f"result_{name}"}), on=REPEAT_KEYS, how="left")
    return table[columns]


def started_text(runs: pd.DataFrame) -> str:
    """The start of a set of LoadGen runs' first run (:func:`planner.evaluation.loadgen.read_runs`' rows), in
    words (UTC), or "at a time not recorded". Why: the book dates its live figures from the runs' own logs,
    so a re-run re-dates them."""
    times = pd.to_datetime(runs.get("started_at", pd.Series(dtype=object)), utc=True, errors="coerce").dropna()
    return f"from {times.min():%Y-%m-%d %H:%M} UTC" if len(times) else "at a time not recorded"


def hosts_text(runs: pd.DataFrame, profile_environment: Mapping[str, Any] | None) -> str:
    """The hosts a set of LoadGen runs' servers said they ran on, against the host that timed the profiles
    (:func:`planner.analysis.hosts.host_phrase`), as a sentence; empty where no server said (servers
    before they described their host)."""
    recorded = runs["host"].dropna().unique() if "host" in runs else []
    if not len(recorded):
        return ""
    phrases = list(dict.fromkeys(host_phrase(json.loads(h), profile_environment) for h in recorded))
    unsaid = " (some of them did not say)" if runs["host"].isna().any() else ""
    return f"The servers of these runs ran on {'; and on '.join(phrases)}{unsaid}."


def _scales(first: pd.DataFrame, second: pd.DataFrame) -> str:
    """The range of the servers' start-up re-timing (service time now over the profile's) in each sweep,
    as a clause, or "" where a sweep's servers did not record it."""
    ranges = []
    for runs in (first, second):
        scale = runs.get("startup_scale", pd.Series(dtype=float)).astype(float).dropna()
        if scale.empty:
            return ""
        low, high = scale.min(), scale.max()
        ranges.append(f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}")
    return (f" (the start-up re-timing of the servers that record it found the machine's service times at "
            f"x{ranges[0]} of the profile's the first time, x{ranges[1]} the second)")


def repeat_text(first: pd.DataFrame, second: pd.DataFrame, method: str = "anytime",
                baseline: str = "seed_p95") -> list[str]:
    """The book's account of a sweep run twice (:func:`repeat_comparison`): when each ran, at how many
    points LoadGen's verdict held and which flipped, how far the effective accuracy moved and where
    Fisher's test (Holm over the repeats) calls the move real, and, per task, whether the comparison of
    ``method`` with ``baseline`` (:func:`rate_comparison`) found the same significant leads both times."""
    table = repeat_comparison(first, second)
    if table.empty:
        return []
    same = table["result_first"] == table["result_second"]
    flipped = table[~same].sort_values(["task", "method", "target_qps"])
    flips = ", ".join(f"{r.task} `{r.method}` at {r.target_qps:g} queries/s ({r.result_first} then {r.result_second})"
                      for r in flipped.itertuples(index=False))
    changed = table[table["significant"]].sort_values(["task", "method", "target_qps"])
    moves = ", ".join(f"{r.task} `{r.method}` at {r.target_qps:g} queries/s, {r.effective_accuracy_first:.3f} then "
                      f"{r.effective_accuracy_second:.3f}" for r in changed.itertuples(index=False))
    moved = table["difference"].abs()
    when = f"{started_text(first)} and again {started_text(second)}{_scales(first, second)}"
    verdict = (f"LoadGen's verdict was the same at {int(same.sum())} of the {len(table)} points"
               + (f"; it flipped for {flips}" if flips else "") + ".")
    accuracy = (f"The effective accuracy moved by {moved.mean():.3f} on average and by at most {moved.max():.3f}; "
                f"Fisher's exact test, Holm-adjusted over the {len(table)} repeats, calls the move real at "
                f"{len(changed)}" + (f"{_direction(changed['difference'])} ({moves})" if moves else "") + ".")
    why = ("Both sweeps drew the same queries on the same schedule (LoadGen's seeds are fixed in the settings), so "
           "what moved is the machine: its speed at the time, the server's start-up re-timing, what the queue made of "
           "it." + _clocks(first, second, table)
           + (" A verdict is then as much the moment's as the method's where a run lands near LoadGen's limit."
              if flips else ""))
    parts = [f"The same sweep ran twice with the same method parameters and LoadGen settings, {when}. {verdict} "
             f"{accuracy} {why}"]
    comparisons = [rate_comparison(runs, method, baseline) for runs in (first, second)]
    verdicts = []
    for task in sorted(set(table["task"])):
        parts_of_task = [c[c["task"] == task] for c in comparisons]
        if all(len(c) for c in parts_of_task):
            (lead0, lag0), (lead1, lag1) = (significant_leads(c) for c in parts_of_task)
            verdicts.append(f"on {task}, `{method}` was ahead of `{baseline}` at {lead0} and behind at {lag0} of "
                            f"{len(parts_of_task[0])} rates the first time, ahead at {lead1} and behind at {lag1} of "
                            f"{len(parts_of_task[1])} the second")
    if verdicts:
        keys = ["task", "target_latency_ms", "target_qps"]
        signs = [c[c["significant"]].set_index(keys)["difference"].gt(0) for c in comparisons]
        both = signs[0].index.intersection(signs[1].index)
        turned = int((signs[0].loc[both] != signs[1].loc[both]).sum())
        held = (f" At {turned} rate(s) a significant lead in one sweep was a significant lag in the other." if turned
                else " No rate found one method significantly ahead in one sweep and behind in the other.")
        parts.append("Compared rate by rate within each sweep (Fisher's exact test, Holm over that sweep's "
                     "comparisons, as above): " + "; ".join(verdicts) + "." + held)
    return parts

def _clocks(first: pd.DataFrame, second: pd.DataFrame, table: pd.DataFrame) -> str:
    """Over the repeated points: the median client-server path (what the server cannot see) and the mean
    share the servers answered on time by their own clock, in each sweep, as a sentence; "" without them."""
    need = ["path_added_p50_ms", "server_on_time"]
    if any(c not in runs for runs in (first, second) for c in need):
        return ""
    kept = [runs.merge(table[REPEAT_KEYS], on=REPEAT_KEYS) for runs in (first, second)]
    path = [float(k["path_added_p50_ms"].median()) for k in kept]
    on_time = [k.groupby("method")["server_on_time"].mean() for k in kept]
    shares = ", ".join(f"`{m}` {on_time[0][m]:.1%} then {on_time[1][m]:.1%}" for m in on_time[0].index
                       if m in on_time[1].index)
    return (f" By the servers' own clocks the share of queries answered on time (mean over the points) was {shares}; "
            f"the path between client and server, which no server plans for, added a median {path[0]:.2f} ms per "
            f"answer the first time and {path[1]:.2f} ms the second (medians over the points).")


def _direction(differences: pd.Series) -> str:
    """", all of them drops" / ", all of them gains" where the moves share a sign, else ""."""
    if len(differences) and (differences < 0).all():
        return ", all of them drops"
    if len(differences) and (differences > 0).all():
        return ", all of them gains"
    return ""


__all__ = ["budget_comparison", "budget_cost_text", "budget_section", "budget_text", "comparison_text",
           "hosts_text", "rate_comparison", "repeat_comparison", "repeat_text", "set_comparison", "significant_leads",
           "started_text"]
