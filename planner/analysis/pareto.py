"""Latency/accuracy Pareto analysis: dominance, the frontier, 2-D hypervolume, dominance ratio.

Convention throughout: lower latency is better, higher accuracy is better. Point ``a`` dominates
``b`` when it is no worse in both and strictly better in at least one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "dominates", "pareto_mask", "pareto_front", "hypervolume", "dominance_ratio", "dominated_fraction",
]


def _points(latency: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray,
            what: str = "points") -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(latency, dtype=float).ravel()
    acc = np.asarray(accuracy, dtype=float).ravel()
    if lat.shape != acc.shape:
        raise ValueError(f"{what}: latency has {lat.size} values but accuracy has {acc.size}")
    if not (np.isfinite(lat).all() and np.isfinite(acc).all()):
        raise ValueError(f"{what}: latency and accuracy must be finite (drop rows without accuracy first)")
    return lat, acc


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a = (latency, accuracy)`` Pareto-dominates ``b``."""
    (la, aa), (lb, ab) = a, b
    return la <= lb and aa >= ab and (la < lb or aa > ab)


def pareto_mask(latency: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points (identical points are all kept). O(n log n)."""
    lat, acc = _points(latency, accuracy)
    mask = np.zeros(lat.size, dtype=bool)
    if lat.size == 0:
        return mask
    order = np.lexsort((-acc, lat))  # latency ascending, accuracy descending within a latency
    lat_s, acc_s = lat[order], acc[order]
    _, start, group = np.unique(lat_s, return_index=True, return_inverse=True)
    group_best = acc_s[start]  # best accuracy at each distinct latency
    # best accuracy among strictly smaller latencies, per group
    before = np.concatenate(([-np.inf], np.maximum.accumulate(group_best)[:-1]))
    keep = (acc_s == group_best[group]) & (group_best[group] > before[group])
    mask[order] = keep
    return mask


def pareto_front(frame: pd.DataFrame, latency: str = "lat_p95_ms", accuracy: str = "accuracy") -> pd.DataFrame:
    """The non-dominated rows of ``frame``, sorted by latency (so accuracy increases along it).

    Rows without an accuracy (NaN, e.g. ``accuracy_source == "unavailable"``) cannot be ranked and
    are left out.
    """
    for column in (latency, accuracy):
        if column not in frame.columns:
            raise ValueError(f"pareto_front: frame has no column {column!r}")
    rows = frame[frame[accuracy].notna()]
    mask = pareto_mask(rows[latency].to_numpy(dtype=float), rows[accuracy].to_numpy(dtype=float))
    front = rows[mask]
    return front.sort_values([latency, accuracy], ascending=[True, False], kind="stable")


def hypervolume(latency: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray,
                ref: tuple[float, float]) -> float:
    """Area dominated by the points and bounded by the reference point ``ref = (L_ref, A_ref)``.

    With the front sorted by latency, ``HV = sum_i (L_{i+1} - L_i) * (A_i - A_ref)`` and
    ``L_{n+1} = L_ref``: each front point owns the slab from its latency to the next point's, at
    its own accuracy. Points that do not strictly beat the reference in both coordinates add
    nothing and are dropped. Units: ms x accuracy.
    """
    lat, acc = _points(latency, accuracy)
    l_ref, a_ref = (float(v) for v in ref)
    if not (np.isfinite(l_ref) and np.isfinite(a_ref)):
        raise ValueError(f"hypervolume: reference point must be finite, got {ref!r}")
    inside = (lat < l_ref) & (acc > a_ref)
    lat, acc = lat[inside], acc[inside]
    if lat.size == 0:
        return 0.0
    front = pareto_mask(lat, acc)
    order = np.lexsort((-acc[front], lat[front]))
    l_front, a_front = lat[front][order], acc[front][order]
    widths = np.diff(np.append(l_front, l_ref))
    return float(np.sum(widths * (a_front - a_ref)))


def dominance_ratio(a_latency: Sequence[float] | np.ndarray, a_accuracy: Sequence[float] | np.ndarray,
                    b_latency: Sequence[float] | np.ndarray, b_accuracy: Sequence[float] | np.ndarray) -> float:
    """Zitzler's coverage C(A, B): the fraction of B's points weakly dominated by some point of A.

    Weakly: no worse in both coordinates (an identical point counts). C(A, B) = 1 means A covers
    all of B; it is not symmetric, so report both C(A, B) and C(B, A).
    """
    la, aa = _points(a_latency, a_accuracy, "A")
    lb, ab = _points(b_latency, b_accuracy, "B")
    if lb.size == 0:
        raise ValueError("dominance_ratio: B is empty, so the ratio is undefined")
    if la.size == 0:
        return 0.0
    covered = ((la[:, None] <= lb[None, :]) & (aa[:, None] >= ab[None, :])).any(axis=0)
    return float(covered.mean())


def dominated_fraction(latency: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray) -> float:
    """Share of configurations that some other configuration strictly dominates (not on the front)."""
    lat, acc = _points(latency, accuracy)
    if lat.size == 0:
        raise ValueError("dominated_fraction: no points")
    return float(1.0 - pareto_mask(lat, acc).mean())
