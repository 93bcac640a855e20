"""Profiles of other devices beside the one the study plans from.

Why: a GPU profile (``benchmarks/gpu_profile.sh``) is measured only when a GPU machine is lent; the
evaluation plans from this CPU's profiles, so the book can only say how far the two devices' latencies
lie apart on the configurations both measured, not how the planner would do on the GPU.
"""

from __future__ import annotations

import pandas as pd

from planner.analysis.results import profile_dirs
from planner.profile.store import load_bundle


def _without_device(config_ids: pd.Series) -> pd.Series:
    """``task/model/runtime/precision/bN`` of ``.../device`` config ids: the key two devices share."""
    return config_ids.str.rsplit("/", n=1).str[0]


def latency_ratios(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Per configuration measured on both devices: its batch size and the reference's p50 over the
    other's (above 1: the other device is faster)."""
    ref = reference.assign(key=_without_device(reference["config_id"]))[["key", "batch_size", "lat_p50_ms"]]
    oth = other.assign(key=_without_device(other["config_id"]))[["key", "lat_p50_ms"]]
    both = ref.merge(oth, on="key", suffixes=("_ref", "_other"))
    return pd.DataFrame({"key": both["key"], "batch_size": both["batch_size"],
                         "p50_ratio": both["lat_p50_ms_ref"] / both["lat_p50_ms_other"]})


def other_devices_text(preset: str, reference_tag: str) -> str:
    """A sentence per profile folder other than ``reference_tag``: what it holds and the median p50
    ratio to the reference over the configurations both measured (or that there is none)."""
    reference = load_bundle(preset, reference_tag).profiles
    parts = []
    for folder in profile_dirs(preset):
        if folder.name == reference_tag:
            continue
        bundle = load_bundle(preset, folder.name)
        ratios = latency_ratios(reference, bundle.profiles)
        name = bundle.environment.get("gpu_name") or folder.name
        text = (f"A profile of {len(bundle.profiles)} configurations was also measured on {name} "
                f"(`results/{preset}/profiles/{folder.name}/`)")
        if ratios.empty:
            parts.append(text + ", with no configuration in common with this CPU's.")
            continue
        by_batch = ratios.groupby("batch_size")["p50_ratio"].median()
        parts.append(text + f": over the {len(ratios)} configurations both devices measured, its median latency "
                     f"was {ratios['p50_ratio'].median():.1f} times lower than this CPU's (by batch size: "
                     + ", ".join(f"{b}: {r:.1f}x" for b, r in by_batch.items()) + "). No method planned from it.")
    return " ".join(parts) or f"No profile of another device is stored for preset `{preset}`."
