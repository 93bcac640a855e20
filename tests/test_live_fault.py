"""The live fault experiment end to end on sleeping toy models: a 2 s trace, a 1 s CPU hog, resume.

Times are never asserted as absolute values: counts, statuses, the recorded window's order and files.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pandas as pd
import pytest

from planner.evaluation.live_fault import (PHASES, ROW_COLUMNS, SUMMARY_COLUMNS, LiveFaultError, LiveFaultSettings,
                                           attainment_timeline, best_baseline, candidate_configs, cpu_hog, paths,
                                           ran_params, read_results, run_live_fault)
from planner.profile.fingerprint import hardware
from planner.schema import REQUEST_STATUSES

from live_fakes import cid, sleeper_toy


@pytest.fixture()
def toy():
    return sleeper_toy(6.0, 3.0)


SETTINGS = LiveFaultSettings(duration_s=2.0, load=0.5, fault_start_s=0.5, fault_duration_s=1.0, reference_n=2,
                             reference_calls=5, warmup_calls=1, rewarm_calls=0, wall_margin_s=2.0)


def test_experiment_end_to_end_and_resume(toy, tmp_path):
    bundle, load, loaded = toy
    methods = ["anytime", "seed_p95"]
    result = run_live_fault(bundle, "sst2", methods, SETTINGS, tmp_path, load, deadline_ms=20.0,
                            baseline={"name": "seed_p95", "score": 0.5, "source": "test"})
    rows_file, summary_csv, record_json = paths(tmp_path, "sst2")
    assert rows_file.exists() and summary_csv.exists() and record_json.exists()
    rows, record = result.rows, result.record
    assert list(rows.columns) == ROW_COLUMNS and set(rows["method"]) == set(methods)
    # every request of the trace ends exactly once per method, in one known status
    n = record["trace"]["n_requests"]
    for method, part in rows.groupby("method"):
        assert part["request_id"].is_unique and len(part) == n == record["runs"][method]["n_rows"]
    assert set(rows["status"]) <= set(REQUEST_STATUSES) and rows["status"].notna().all()
    assert set(rows["phase"]) <= set(PHASES)
    # the hog ran inside the replay, for about its second, and the phases follow its recorded window
    for method, run in record["runs"].items():
        assert 0.0 <= run["fault_start_s"] < run["fault_end_s"] and not run["hog_killed"]
        part = rows[rows["method"] == method]
        during = part["arrival_s"].between(run["fault_start_s"], run["fault_end_s"], inclusive="left")
        assert (part.loc[during, "phase"] == "during").all() and (part.loc[~during, "phase"] != "during").all()
    assert record["startups"][0]["startup_scale"] > 0 and len(record["startups"][0]["reference"]) == 2
    assert record["startups"][0]["host"]["cpu_flags"] == hardware()["cpu_flags"]  # which host measured it
    assert record["trace"]["rate_rps"] > 0 and record["candidates"] == sorted(record["candidates"],
                                                                              key=lambda c: "fast" not in c)
    summary = pd.read_csv(summary_csv)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert set(summary["phase"]) <= {*PHASES, "all"} and set(summary["method"]) == set(methods)
    assert (summary.loc[summary["phase"] == "all", "n_requests"] == n).all()
    before = rows_file.read_bytes()

    # resume: nothing left to do, so nothing is loaded or replayed and the rows stay byte for byte
    again = run_live_fault(bundle, "sst2", methods, SETTINGS, tmp_path, load, deadline_ms=20.0)
    assert len(loaded) == 1 and rows_file.read_bytes() == before and len(again.rows) == len(rows)

    # rows a record does not vouch for (killed between the two writes) are cut, the method runs again;
    # finished methods are kept as they were
    stray = rows[rows["method"] == "seed_p95"].head(5).assign(method="static_small")
    pd.concat([pd.read_parquet(rows_file), stray]).to_parquet(rows_file, index=False)
    more = run_live_fault(bundle, "sst2", [*methods, "static_small"], SETTINGS, tmp_path, load, deadline_ms=20.0)
    assert len(loaded) == 2
    assert more.record["runs"]["anytime"]["finished_at"] == record["runs"]["anytime"]["finished_at"]
    part = more.rows[more.rows["method"] == "static_small"]
    assert len(part) == n and part["request_id"].is_unique
    pd.testing.assert_frame_equal(more.rows[more.rows["method"] == "anytime"].reset_index(drop=True),
                                  rows[rows["method"] == "anytime"].reset_index(drop=True))
    assert read_results(tmp_path, "sst2").record["runs"].keys() == {"anytime", "seed_p95", "static_small"}
    # each replay names the parameters it ran with; a run recorded before runs did is read from the
    # record beside the results
    ran = ran_params(tmp_path, more.record)
    assert ran["anytime"]["late_step"] == pytest.approx(0.02) and "arrival_spread" in ran["anytime"]
    older = {**more.record, "runs": {m: {k: v for k, v in run.items() if k != "params"}
                                     for m, run in more.record["runs"].items()}}
    assert ran_params(tmp_path, older) == {}
    (tmp_path / "method_params.json").write_text('{"anytime": {"late_step": 0.01}}')
    assert ran_params(tmp_path, older) == {"anytime": {"late_step": 0.01}}

    # another trace on top of stored results is refused
    with pytest.raises(LiveFaultError, match="another trace"):
        run_live_fault(bundle, "sst2", methods, SETTINGS.model_copy(update={"load": 0.7}), tmp_path, load,
                       deadline_ms=20.0)


def test_a_replay_on_other_hardware_than_the_profiles_says_so(toy, tmp_path):
    """The record and the log name what differs from the host that timed the profile (a host of the same
    tag without AVX-512 ran the references 6.5x slower: its replays measure that host)."""
    bundle, load, _ = toy
    here = hardware()
    other = {**here, "cpu_flags": [*here["cpu_flags"], "amx_tile"]}  # a list with one more flag never matches
    said: list[str] = []
    result = run_live_fault(dataclasses.replace(bundle, environment=other), "sst2", ["seed_p95"], SETTINGS, tmp_path,
                            load, deadline_ms=20.0, report=said.append)
    differences = result.record["startups"][0]["profile_host_differences"]
    assert len(differences) == 1 and differences[0].startswith("cpu_flags:")
    assert any(line.startswith("warning: this host differs") and "cpu_flags" in line for line in said)
    said_here: list[str] = []
    same = run_live_fault(dataclasses.replace(bundle, environment=here), "sst2", ["seed_p95"], SETTINGS,
                          tmp_path / "same", load, deadline_ms=20.0, report=said_here.append)
    assert same.record["startups"][0]["profile_host_differences"] == []
    assert said_here and not any(line.startswith("warning") for line in said_here)


def test_hog_is_stopped_on_error():
    with pytest.raises(RuntimeError, match="boom"):
        with cpu_hog(0.0, 30.0, cpu=-1) as hog:
            time.sleep(0.3)
            raise RuntimeError("boom")
    assert hog.killed and hog.start <= hog.end
    with pytest.raises(ProcessLookupError):
        os.kill(hog.pid, 0)   # gone (and reaped)


def test_candidates_are_the_front_plus_static_choices(toy):
    bundle, _, _ = toy
    ids = candidate_configs(bundle, "sst2", 20.0, ["anytime", "seed_p95", "static_small"])
    assert set(ids) == {cid("acc", 1), cid("fast", 4)}
    with pytest.raises(LiveFaultError, match="online methods"):
        candidate_configs(bundle, "sst2", 20.0, ["anytime", "clairvoyant"])


def test_best_baseline_reads_the_summary_by_role():
    rows = []
    for method, value in {"anytime": 0.9, "seed_p95": 0.8, "infaas": 0.5, "slack_aware": 0.6,
                          "best_fixed_hindsight": 0.95, "clairvoyant": 0.99}.items():
        for deadline, shift in ((1.0, -0.05), (2.0, 0.05)):
            rows.append({"workload": "steady", "load": 0.8, "deadline_ms": deadline, "method": method,
                         "metric": "effective_accuracy", "mean": value + shift})
        rows.append({"workload": "steady", "load": 0.5, "deadline_ms": 1.0, "method": "infaas",
                     "metric": "effective_accuracy", "mean": 1.0})
    name, score = best_baseline(pd.DataFrame(rows), "steady", 0.8)
    assert name == "slack_aware" and score == pytest.approx(0.6)
    with pytest.raises(LiveFaultError, match="no effective_accuracy rows"):
        best_baseline(pd.DataFrame(rows), "bursty", 0.8)


def test_attainment_timeline_is_a_trailing_window():
    rows = pd.DataFrame({"method": "m", "arrival_s": [0.1, 0.6, 1.2, 1.7, 2.4], "hit": [1, 1, 0, 0, 1]})
    timeline = attainment_timeline(rows, window_s=1.0, step_s=0.5)
    by_t = timeline.set_index("t_s")
    assert by_t.loc[1.0, "hit_rate"] == 1.0 and by_t.loc[1.0, "n"] == 2
    assert by_t.loc[2.0, "hit_rate"] == 0.0 and by_t.loc[2.5, "hit_rate"] == 0.5  # (1.5, 2.5]: 1.7 missed, 2.4 hit


def test_shared_service_compares_one_configuration_across_the_methods_that_served_it():
    """One service time per batch (not per request), only configurations two methods served, in the phase asked."""
    from planner.evaluation.live_fault import shared_service

    def batch_rows(method, config_id, batch_id, n, service_ms, phase="before"):
        return [{"task": "cifar10", "method": method, "config_id": config_id, "batch_id": batch_id,
                 "service_ms": service_ms, "phase": phase} for _ in range(n)]

    rows = pd.DataFrame(
        batch_rows("anytime", "a", 0, 8, 2.0) + batch_rows("anytime", "a", 1, 1, 4.0) + batch_rows("anytime", "a", 2, 1, 2.5)
        + batch_rows("anytime", "b", 3, 1, 9.0)                       # only anytime served b: left out
        + batch_rows("static", "a", 0, 1, 1.0) + batch_rows("static", "a", 1, 1, 1.2)
        + batch_rows("static", "a", 2, 1, 50.0, phase="during")       # another phase: left out
        + [{"task": "cifar10", "method": "static", "config_id": None, "batch_id": -1, "service_ms": float("nan"),
            "phase": "before"}])                                      # shed: no batch
    out = shared_service(rows).set_index("method")
    assert set(out["config_id"]) == {"a"}
    assert out.loc["anytime", "n_batches"] == 3 and out.loc["anytime", "service_median_ms"] == 2.5
    assert out.loc["static", "n_batches"] == 2 and out.loc["static", "service_median_ms"] == 1.1
    assert out.loc["anytime", "method_configs"] == 2 and out.loc["static", "method_configs"] == 1  # switched or not


def test_the_proposed_method_starts_from_the_re_timed_reference_and_others_from_the_profile(toy):
    """The server command re-times the reference before its first request (``with_startup_scale``): a
    machine twice as slow as the profile's gives the proposed method a start-up scale near 2; a method
    without that parameter plans from the profile as it is."""
    from live_fakes import Sleeper, cid
    from planner.evaluation.live_fault import with_startup_scale
    from planner.plan.registry import method_params
    from planner.serving.replay import from_predictor

    bundle, load, _ = toy
    profiled = bundle.profiles.set_index("config_id")["lat_p50_ms"]
    slow = {c: from_predictor(c, Sleeper(2.0 * float(profiled[c])), int(c.split("/b")[1].split("/")[0]))
            for c in (cid("acc", 1), cid("fast", 4))}
    inputs = load(list(slow))[1].inputs
    params, scale = with_startup_scale(method_params("anytime", {}), bundle, slow, inputs)
    assert scale is not None and 1.7 < params.startup_scale < 3.0 and params.startup_scale == scale.scale
    same, none = with_startup_scale(method_params("seed_p95", {}), bundle, slow, inputs)
    assert none is None and same == method_params("seed_p95", {})


def test_a_live_run_makes_the_stoppable_tries_the_simulator_makes(toy):
    """The live replay and the HTTP server stop a call at the deadline as the simulator does
    (tests/test_live_stop.py), so a live run keeps the tries a stoppable call allows
    (``stoppable_quantile``), and the book compares live records with the preset as it stands."""
    from planner.evaluation.live_fault import build_policies, live_method_params
    from planner.plan.registry import method_params, preset_method_params, preset_params

    bundle, _load, _loaded = toy
    tries = {"anytime": method_params("anytime", {"stoppable_quantile": 0.25})}
    assert live_method_params(["anytime", "seed_p95"], tries)["anytime"].stoppable_quantile == 0.25
    ids = candidate_configs(bundle, "sst2", 20.0, ["anytime"], tries)
    policy = build_policies(bundle, "sst2", 20.0, ["anytime"], ids, 1.0, tries)["anytime"]
    assert policy.stoppable_quantile == 0.25 and policy.needs.cancels
    assert preset_params("full", ["anytime"])["anytime"]["stoppable_quantile"] == \
        preset_method_params("full", "anytime").stoppable_quantile


def test_before_fault_text_says_which_models_each_method_served_and_how_the_host_moved_them():
    """The limitations chapter's live paragraph: deadlines and effective accuracy side by side, the
    model mix (shed requests left out), and the uneven start-up ratios only when the models moved apart."""
    from planner.evaluation.live_fault import LiveFaultResult, before_fault_text, model_mix, summarize

    def rows(method, config_ids, statuses, correct):
        return [{"task": "cifar10", "method": method, "request_id": i, "config_id": c, "status": s,
                 "hit": s == "served", "correct": k, "latency_ms": 1.0, "phase": "before"}
                for i, (c, s, k) in enumerate(zip(config_ids, statuses, correct))]

    small, large = "cifar10/mobilenet_v2/onnxruntime/int8/b1/cpu", "cifar10/resnet18/onnxruntime/int8/b1/cpu"
    data = pd.DataFrame(rows("anytime", [small, small, large, None], ["served", "served", "served", "shed"],
                             [True, False, True, False])
                        + rows("slack_aware", [large] * 4, ["served"] * 3 + ["late"], [True, True, True, True]))
    mix = model_mix(data, "anytime")
    assert mix.to_dict() == pytest.approx({"mobilenet_v2": 2 / 3, "resnet18": 1 / 3})  # the shed one is not a model's
    record = {"baseline": {"name": "slack_aware"}, "trace": {"rate_rps": 300.0},
              "startups": [{"reference": [{"config_id": small, "ratio": 1.26}, {"config_id": large, "ratio": 0.68}]}]}
    text = before_fault_text("cifar10", LiveFaultResult(data, summarize(data), record), "anytime", 0.002)
    assert "met 75.0% of deadlines against 75.0% for `slack_aware`" in text
    assert "effective accuracy of 0.500 (below `slack_aware`'s 0.750)" in text
    assert "models: mobilenet_v2 67%, resnet18 33%; `slack_aware`: resnet18 100%" in text
    assert "1.26x (mobilenet_v2), 0.68x (resnet18)" in text
    assert "answered 0.00% late and shed 25.00%, where the simulated grid at loads up to 1 has it at most 0.20% late" in text
    record["startups"][0]["reference"][0]["ratio"] = 0.7  # the models moved together: nothing to say about it
    assert "reference configurations" not in before_fault_text("cifar10", LiveFaultResult(data, summarize(data), record),
                                                               "anytime", 0.002)
    assert before_fault_text("cifar10", LiveFaultResult(data, summarize(data), record), "seed_p95", 0.002) is None
