"""The live server experiment end to end on sleeping toy models behind the real HTTP server: runs, resume,
overhead, validation and the three faults on ~1-2 s traces.

Times are never asserted as absolute values: counts, outcomes, reason codes and files.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from planner.config import LiveServerPreset
from planner.evaluation.live_server import (FAULTS, OUTCOMES, LiveServerError, fault_trace, paths,
                                            pick_deadlines, run_live_server)
from planner.evaluation.loadgen import recorded_params
from planner.plan.registry import method_params, params_record

from live_fakes import N_EX, sleeper_toy

METHODS = ["anytime", "seed_p95"]


@pytest.fixture()
def toy():
    return sleeper_toy(4.0, 2.0)


SETTINGS = LiveServerPreset(duration_s=1.0, loads=[0.4], deadline_quantiles=[0.5], rate_basis="profile",
                            warmup_calls=1, calibration_calls=5, sim_seeds=2, wall_margin_s=3.0, fault_trace_s=2.0,
                            fault_raise_s=1.0, fault_hog_s=0.5, fault_spike_s=0.5)


def test_runner_end_to_end_faults_and_resume(toy, tmp_path):
    bundle, load, loaded = toy
    result = run_live_server(bundle, "sst2", METHODS, SETTINGS, tmp_path, load, [20.0])
    where = paths(tmp_path, "sst2")
    for key in ("record", "summary", "overhead", "validation", "faults", "timeline"):
        assert where[key].exists(), key
    runs = sorted(p.name for p in where["runs"].glob("*.parquet"))
    assert runs == sorted(["run_anytime_load0.4_20ms.parquet", "run_seed_p95_load0.4_20ms.parquet",
                           "overhead_http.parquet", "overhead_inproc.parquet",
                           *(f"fault_{f}.parquet" for f in FAULTS)])
    # one summary row per method, every sent request answered by the server
    summary = result.summary
    assert set(summary["method"]) == set(METHODS) and (summary["n_lost"] == 0).all()
    assert (summary["n_sent"] == summary["n_answered"]).all() and (summary["n_sent"] > 10).all()
    # the server's verdicts partition the answered requests; the client's counts keep their own names
    server_counts = summary[[f"n_server_{o}" for o in OUTCOMES]].sum(axis=1)
    assert (server_counts == summary["n_answered"]).all() and "n_on_time" not in summary
    for r in summary.itertuples(index=False):
        rows = pd.read_parquet(where["runs"] / f"run_{r.method}_load0.4_20ms.parquet")
        assert r.n_late == (rows["status"] == "late").sum()
        assert r.n_server_late == (rows["server_outcome"] == "late").sum()
    assert set(result.validation["method"]) == set(METHODS)
    assert {"profiled_hit_rate_diff_pp", "fresh_hit_rate_diff_pp", "served_hit_rate_diff_pp"} <= set(result.validation)
    assert len(result.overhead) == 1 and np.isfinite(result.overhead["added_p50_ms"]).all()

    # faults: no request lost; the raising window's requests are answered by the fallback with a reason code
    faults = result.faults.set_index("fault")
    assert set(faults.index) == set(FAULTS) and (faults["n_lost"] == 0).all()
    assert (faults["n_sent"] == faults["n_answered"]).all() and (faults["n_client_wall_limit"] == 0).all()
    assert (faults[[f"n_server_{o}" for o in OUTCOMES]].sum(axis=1) == faults["n_answered"]).all()
    rows = pd.read_parquet(where["runs"] / "fault_raise.parquet")
    target = rows["fault_config"].iloc[0]
    fell_back = rows[rows["reason"].astype(str).str.startswith("fallback")]
    assert len(fell_back) > 0 and faults.loc["raise", "n_fallback"] == len(fell_back)
    assert fell_back["label"].ge(0).all() and (fell_back["config_id"] != target).all()
    # answered while the configuration raised (batches that started in the window; arrival may precede it)
    assert (fell_back["finish_s"] >= rows["fault_start_s"].iloc[0] - 0.05).all()
    assert (fell_back["phase"] == "during").mean() > 0.5
    assert set(result.timeline["fault"]) == set(FAULTS)
    before = {p.name: p.read_bytes() for p in where["runs"].glob("*.parquet")}

    # resume: nothing left, nothing loaded or served again, the rows stay byte for byte
    run_live_server(bundle, "sst2", METHODS, SETTINGS, tmp_path, load, [20.0])
    assert len(loaded) == 1
    assert {p.name: p.read_bytes() for p in where["runs"].glob("*.parquet")} == before

    # a missing run file (killed mid-run) is served again; the others are kept
    (where["runs"] / "run_seed_p95_load0.4_20ms.parquet").unlink()
    again = run_live_server(bundle, "sst2", METHODS, SETTINGS, tmp_path, load, [20.0])
    assert len(loaded) == 2 and set(again.summary["method"]) == set(METHODS)
    assert (where["runs"] / "run_anytime_load0.4_20ms.parquet").read_bytes() == before["run_anytime_load0.4_20ms.parquet"]

    # other settings on top of stored runs are refused
    with pytest.raises(LiveServerError, match="--fresh"):
        run_live_server(bundle, "sst2", METHODS, SETTINGS.model_copy(update={"duration_s": 2.0}), tmp_path, load,
                        [20.0])

    # the record names the parameters the methods ran with, and so does the stage's method_params.json (what
    # loadgen.read_runs reads for the LoadGen run); a resume with other parameters is refused
    assert json.loads(paths(tmp_path, "sst2")["record"].read_text())["spec"]["method_params"] == params_record(METHODS)
    assert recorded_params(tmp_path) == params_record(METHODS)
    other = {"anytime": method_params("anytime", {"late_step": 0.05})}
    with pytest.raises(LiveServerError, match="--fresh"):
        run_live_server(bundle, "sst2", METHODS, SETTINGS, tmp_path, load, [20.0], params=other)
    assert len(loaded) == 2


def test_spike_trace_has_the_extra_arrivals():
    rate = 200.0
    base, _ = fault_trace("hog", rate, SETTINGS, 20.0, N_EX, 3)
    burst, (start, end) = fault_trace("spike", rate, SETTINGS, 20.0, N_EX, 3)
    inside = burst["arrival_s"].between(start, end, inclusive="left").sum()
    outside = burst["arrival_s"].between(0.0, start, inclusive="left").sum()
    # about spike_factor x the base rate inside the window, the base rate before it
    assert inside > 2.5 * rate * (end - start) and outside < 2.0 * rate * start
    assert len(burst) > len(base)


def test_pick_deadlines_and_settings_checks():
    assert pick_deadlines([2, 3, 5, 8, 12, 20, 35, 60, 100], [0.375, 0.625]) == [8.0, 20.0]
    assert pick_deadlines([5, 1, 3], [0.0, 1.0]) == [1.0, 5.0]
    with pytest.raises(ValueError, match="fault_trace_s"):
        LiveServerPreset(duration_s=1, loads=[0.5], deadline_quantiles=[0.5], fault_trace_s=2, fault_hog_s=3)
    with pytest.raises(ValueError, match="extra"):
        LiveServerPreset(duration_s=1, loads=[0.5], deadline_quantiles=[0.5], fault_trace_s=9, colour="red")


def test_the_path_budget_sentence_reads_what_each_record_says_the_client_sent(tmp_path):
    from planner.evaluation.live_server import path_budget_text

    assert path_budget_text(tmp_path, ["sst2"]) == ""  # nothing recorded: nothing said
    paths(tmp_path, "sst2")["record"].write_text(json.dumps({"spec": {"path_quantile": None}}))
    assert "sent every deadline as is" in path_budget_text(tmp_path, ["sst2"])
    paths(tmp_path, "cifar10")["record"].write_text(json.dumps({"spec": {"path_quantile": 0.5}}))
    both = path_budget_text(tmp_path, ["sst2", "cifar10"])
    assert both.startswith("On cifar10: in the method and fault runs") and "less the 0.5 quantile" in both
    assert both.endswith("On sst2 the client sent every deadline as is.")
    assert path_budget_text(tmp_path, ["cifar10"]).startswith("In the method and fault runs the client sent each "
                                                             "deadline less the 0.5 quantile")
