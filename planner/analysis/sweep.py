"""Two methods compared rate by rate over a LoadGen sweep (``benchmarks/loadgen_sweep.sh``).

Why a module of its own: the sweep's runs are read in the evaluation layer
(:func:`planner.evaluation.loadgen.read_runs`); testing their differences is analysis.
"""

from __future__ import annotations

import pandas as pd
from scipy.stats import fisher_exact

from planner.analysis.stats import holm


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


def comparison_text(table: pd.DataFrame, method: str, baseline: str) -> list[str]:
    """One sentence per task of :func:`rate_comparison`'s ``table``: at how many rates ``method``
    delivered more than ``baseline``, the highest rate's pair, and at how many the gap is significant
    (and, where it trails without significance, how large the gap and the smallest adjusted p)."""
    sentences = []
    for task, part in table.sort_values("target_qps").groupby("task", sort=False):
        ahead, behind = part[part["difference"] > 0], part[part["difference"] < 0]
        top = part.iloc[-1]
        queries = "-".join(dict.fromkeys(f"{n:,}" for n in (part["n_method"].min(), part["n_method"].max())))
        trailing = (f"; where it trails ({', '.join(f'{q:g}' for q in behind['target_qps'])} queries/s, by at most "
                    f"{-behind['difference'].min():.3f}) the smallest adjusted p is {behind['p_holm'].min():.2f}"
                    if len(behind) and not behind["significant"].any() else "")
        sentences.append(
            f"On {task}, whatever LoadGen's verdict, `{method}` delivered more correct answers within the target than "
            f"`{baseline}` at {len(ahead)} of the {len(part)} rates tried (at the highest, "
            f"{top.effective_accuracy_method:.3f} against {top.effective_accuracy_baseline:.3f}). Each rate ran once, "
            f"on {queries} queries per method: Fisher's exact test of each difference, Holm-adjusted over the sweep's "
            f"{len(table)} comparisons, finds `{method}` ahead at {int(ahead['significant'].sum())} rate(s) and behind "
            f"at {int(behind['significant'].sum())}{trailing}.")
    return sentences


__all__ = ["comparison_text", "rate_comparison"]
