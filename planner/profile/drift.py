"""Day drift: a sweep that adds timings to a profile folder first checks that the machine still runs
at the speed the folder was timed at.

Why: a resumed or extended sweep (new int8 settings, a retrained model, ``--remeasure``) adds rows to a
folder whose other rows were timed on another day. The hardware fingerprint (CPU model, flags, cores)
does not change between days, but the speed does: on the 2-core profile host the start-up re-timing
read 1.28x-2.20x the committed profile on one day, and 66 int8 rows re-profiled that day came out
1.3x-3x slower than their fp32 siblings timed earlier, so int8 looked slower than fp32 and the
planner's cheapest text path vanished. Mixed days make a profile lie about which configuration is
faster.

So before timing anything new, the sweep re-times a few of the folder's own stored configurations
(the reference of :mod:`planner.profile.reference`: the cheapest plain configuration of a few
variants) with the sweep's own stopping rule, and takes the geometric mean of re-timed over stored
medians. Inside the preset's band ``[1/drift_tolerance, drift_tolerance]`` the new rows go in as
measured. Outside it the sweep stops and says what to do: re-time the whole folder in one sitting
(``--remeasure '*'``), or ``--rescale``, which divides the new rows' samples by the factor (expressing
them on the folder's day) and records the factor per row (``timing_scale``) and per run
(``environment.json`` ``drift_checks``). Either way each check is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from planner.profile.reference import StartupScale

ACTIONS = ("within", "rescaled", "refused")


class ProfileDriftError(RuntimeError):
    """The machine runs outside the drift band of the folder it would add timings to (the message says
    the factor, the reference and the ways on)."""


@dataclass(frozen=True)
class DriftCheck:
    """One drift check: the factor (re-timed over stored median; > 1 = slower now), the band it is held
    to, the reference table it came from and how many configurations were about to be timed."""

    measured: StartupScale
    tolerance: float
    n_new: int

    @property
    def scale(self) -> float:
        return self.measured.scale

    @property
    def band(self) -> tuple[float, float]:
        return 1.0 / self.tolerance, self.tolerance

    @property
    def within(self) -> bool:
        low, high = self.band
        return low <= self.scale <= high

    def record(self, action: str, at: str) -> dict[str, Any]:
        """The JSON record kept in ``environment.json`` under ``drift_checks``."""
        if action not in ACTIONS:
            raise ValueError(f"drift action must be one of {ACTIONS}, got {action!r}")
        return {"at": at, "scale": self.scale, "band": list(self.band), "action": action, "n_new": self.n_new,
                "reference": self.measured.table.to_dict(orient="records")}

    def refusal(self, folder: Path) -> str:
        """Why the sweep stops, and the two ways on."""
        low, high = self.band
        table = _describe(self.measured.table)
        direction = "slower" if self.scale > 1 else "faster"
        return (f"{folder}: this machine now takes {self.scale:.2f}x the time of the folder's stored timings "
                f"({direction}; re-timed reference: {table}), outside the drift band "
                f"[{low:.2f}, {high:.2f}] (profile.drift_tolerance {self.tolerance:g}). Adding the {self.n_new} "
                "configuration(s) still to time would mix two days' speeds in one profile. Either re-time the "
                "whole folder in one sitting (`planner profile --task all --remeasure '*'`; accuracy and "
                "predictions are kept), or pass --rescale to divide the new timings by "
                f"{self.scale:.3f} (recorded per row as timing_scale and in environment.json drift_checks)")


def _describe(table: pd.DataFrame) -> str:
    return ", ".join(f"{r.config_id} {r.retimed_p50_ms:.3g} ms vs {r.profiled_p50_ms:.3g} ms stored"
                     for r in table.itertuples())
