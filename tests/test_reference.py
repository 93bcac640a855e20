"""Start-up re-timing: the scale arithmetic, the reference choice, and the anytime policy starting from it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bundles import synthetic_bundle
from planner.config import ConfigError
from planner.plan.anytime import AnytimePolicy
from planner.plan.failure import PlannerError
from planner.plan.policies import PolicyContext
from planner.plan.registry import METHODS, method_params
from planner.profile.reference import REFERENCE_COLUMNS, ReferenceTimingError, pick_reference, startup_scale


def _profiles(p50: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"config_id": list(p50), "lat_p50_ms": list(p50.values())})


# ---------------------------------------------------------------- the arithmetic

def test_scale_is_the_geometric_mean_of_median_ratios():
    profiles = _profiles({"a": 1.0, "b": 4.0})
    # a runs 2x slower than profiled, b 2x faster: the machine as a whole is unchanged
    result = startup_scale(profiles, {"a": [1.9, 2.0, 2.1, 50.0, 2.0], "b": np.array([2.0, 2.0, 1.0])})
    assert result.scale == pytest.approx(1.0)
    assert list(result.table.columns) == REFERENCE_COLUMNS
    table = result.table.set_index("config_id")
    assert table.loc["a", "retimed_p50_ms"] == pytest.approx(2.0)   # the median: one outlier does not move it
    assert table.loc["a", "ratio"] == pytest.approx(2.0) and table.loc["b", "ratio"] == pytest.approx(0.5)
    assert table["n_calls"].tolist() == [5, 3]
    # every reference 3x slower: the scale is 3
    assert startup_scale(profiles, {"a": [3.0] * 4, "b": [12.0] * 4}).scale == pytest.approx(3.0)


@pytest.mark.parametrize("timings, match", [
    ({}, "no reference timings"),
    ({"zzz": [1.0]}, "'zzz' is not in the profiles"),
    ({"a": []}, "'a': no re-timed calls"),
    ({"a": [1.0, 0.0]}, "'a': re-timed service times must be positive"),
    ({"a": [1.0, float("nan")]}, "'a': re-timed service times must be positive"),
    ({"zero": [1.0]}, "'zero': profiled lat_p50_ms must be positive"),
    ({"nan": [1.0]}, "'nan': profiled lat_p50_ms must be positive"),
])
def test_bad_input_is_a_clear_error(timings, match):
    profiles = _profiles({"a": 1.0, "zero": 0.0, "nan": float("nan")})
    with pytest.raises(ReferenceTimingError, match=match):
        startup_scale(profiles, timings)


def test_reference_is_the_cheapest_plain_configuration_of_each_variant():
    bundle = synthetic_bundle(12)
    profiles = bundle.profiles.copy()
    ids = profiles["config_id"].tolist()
    chosen = pick_reference(profiles, ids, n=3)
    rows = profiles.set_index("config_id").loc[chosen]
    assert len(chosen) == 3 and rows["lat_p50_ms"].is_monotonic_increasing
    assert not rows.duplicated(["model", "runtime", "precision"]).any()
    # a cascade is never a reference (its time depends on how many inputs escalate)
    cheapest = profiles.sort_values("lat_p50_ms")["config_id"].iloc[0]
    profiles.loc[profiles["config_id"] == cheapest, "cascade_small"] = "m0"
    assert cheapest not in pick_reference(profiles, ids, n=3)
    with pytest.raises(ReferenceTimingError, match="not in the profiles"):
        pick_reference(profiles, ["nope"])
    with pytest.raises(ReferenceTimingError, match="n >= 1"):
        pick_reference(profiles, ids, n=0)


# ---------------------------------------------------------------- the policy starts from the scale

def _ctx(deadline_ms: float) -> PolicyContext:
    return PolicyContext(0.0, "sst2", 1, deadline_ms, deadline_ms, 0, 1, 1, 0.0, (deadline_ms,))


def test_a_slower_machine_picks_a_cheaper_configuration():
    bundle = synthetic_bundle()
    p50 = bundle.profiles.set_index("config_id")["lat_p50_ms"]
    accuracy = bundle.profiles.set_index("config_id")["accuracy"]
    as_profiled = AnytimePolicy("sst2").fit(bundle)
    slower = AnytimePolicy("sst2", startup_scale=3.0).fit(bundle)
    assert slower.estimator_.scale(slower._all_ids[0]) == pytest.approx(3.0)
    one, three = as_profiled(_ctx(6.0)), slower(_ctx(6.0))
    assert p50[three] < p50[one] and accuracy[three] <= accuracy[one]
    # exactly: on a machine 3x slower, a deadline is worth a third of it on the profiled machine
    for deadline in (2.0, 4.0, 6.0, 10.0, 15.0):
        assert slower(_ctx(deadline)) == as_profiled(_ctx(deadline / 3.0))
    # the shed threshold moves with the machine too
    assert slower.shed_below_ms() == pytest.approx(3.0 * as_profiled.shed_below_ms())


def test_the_registry_passes_the_scale_through_its_typed_parameters():
    bundle = synthetic_bundle()
    default = method_params("anytime", None)
    assert default.startup_scale == 1.0   # the simulator's setting: service times come from the profile
    live = default.model_copy(update={"startup_scale": 2.5})
    policy = METHODS["anytime"].fit(bundle, "sst2", 95, live)
    assert policy.estimator_.log_global == pytest.approx(math.log(2.5))
    fresh = METHODS["anytime"].policy(policy, None)  # a trace's own copy keeps the scale
    assert fresh.estimator_.log_global == pytest.approx(math.log(2.5))
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="startup_scale"):
            method_params("anytime", {"startup_scale": bad})
    with pytest.raises(PlannerError, match="startup_scale"):
        AnytimePolicy("sst2", startup_scale=float("nan"))
