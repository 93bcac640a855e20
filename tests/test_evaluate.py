"""The evaluation runner: tidy runs, the hindsight oracle, resuming, summaries and the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from planner import config
from planner.analysis.summary import summarize_runs
from planner.evaluation import grid as ev
from bundles import synthetic_bundle, write_bundle_folder
from planner.cli import main
from planner.config import EvaluatePreset
from planner.metrics import METRICS
from planner.config import ConfigError
from planner.evaluation.provenance import profiles_digest
from planner.plan.registry import check_method_params, check_methods, default_methods
from planner.profile.accuracy import apply_split

STATIC = ["seed_p95", "static_small", "static_large", "throughput_autotuner", "infaas"]


@pytest.fixture(scope="module")
def bundle():
    return synthetic_bundle(n_configs=10, n_examples=300)


def settings(**overrides) -> EvaluatePreset:
    base = dict(n_requests=400, seeds=[42, 43], loads=[0.8],
                workloads={"steady": {"kind": "poisson"}, "bursty": {"kind": "gamma", "params": {"cv": 4}}},
                deadlines={"sst2": [2.0, 5.0]})
    return EvaluatePreset.model_validate({**base, **overrides})


@pytest.fixture(scope="module")
def result(bundle):
    return ev.evaluate(bundle, "sst2", settings(), [2.0, 5.0], progress=False)


def test_runs_are_tidy_and_complete(result):
    runs = result.runs
    s = settings()
    methods = check_methods(s.methods)  # none named: the registry's defaults
    assert len(runs) == len(methods) * 2 * 2 * 2  # methods x workloads x deadlines x seeds
    assert not runs.duplicated(["method", "workload", "deadline_ms", "seed"]).any()
    assert set(runs["method"]) == set(default_methods())
    assert {m for m in METRICS if m != "hypervolume"} <= set(runs.columns)
    ran = runs[runs["method"] != "clairvoyant"]  # the bound is a number per trace, not a run
    assert ran["hit_rate"].between(0, 1).all() and (ran["effective_accuracy"] <= ran["hit_rate"]).all()
    bound = runs[runs["method"] == "clairvoyant"]
    assert bound["effective_accuracy"].between(0, 1).all() and bound["hit_rate"].isna().all()
    assert len(result.traces) == 2 * 2 * 2 and {"cv", "burstiness", "rate_rps"} <= set(result.traces.columns)
    bursty = result.traces[result.traces["workload"] == "bursty"]["cv"]
    steady = result.traces[result.traces["workload"] == "steady"]["cv"]
    assert bursty.min() > steady.max()


def test_oracle_is_the_best_fixed_configuration(result):
    """Static methods run one configuration per trace; on the same trace and seed none beats the oracle."""
    wide = result.runs.pivot_table(index=["workload", "deadline_ms", "seed"], columns="method",
                                   values="effective_accuracy")
    for method in STATIC:
        assert (wide["best_fixed_hindsight"] >= wide[method] - 1e-12).all(), method
    assert (result.runs.loc[result.runs["method"].isin(STATIC + ["best_fixed_hindsight"]), "n_configs_used"] == 1).all()


def test_no_method_beats_the_clairvoyant_bound_on_its_trace(result):
    wide = result.runs.pivot_table(index=["workload", "deadline_ms", "seed"], columns="method",
                                   values="effective_accuracy")
    for method in wide.columns:
        assert (wide["clairvoyant"] >= wide[method] - 1e-12).all(), method
    assert (wide["anytime"] >= wide["seed_p95"] - 0.05).all()  # the proposed method is not a regression


def test_pruned_oracle_equals_brute_force(bundle):
    """The oracle's bound-based pruning is exact: same score as simulating every configuration."""
    from planner.plan import policies
    from planner.serving.simulator import simulate
    from planner.serving.outcomes import run_metrics

    small = settings(methods=["best_fixed_hindsight"], seeds=[7], workloads={"bursty": {"kind": "gamma", "params": {"cv": 4}}})
    for deadline in (2.0, 5.0):
        out = ev.evaluate(bundle, "sst2", small, [deadline], keep_requests=True, progress=False)
        trace = out.requests[["request_id", "arrival_s", "deadline_ms", "example_id"]]
        brute = max(run_metrics(simulate(trace, policies.fixed(c), bundle, seed=7))["effective_accuracy"]
                    for c in bundle.profiles["config_id"])
        assert out.runs["effective_accuracy"].iloc[0] == pytest.approx(brute, abs=1e-12)


def test_load_is_relative_to_the_planners_choice(bundle, result):
    from planner.plan import DeadlinePlanner

    planner = DeadlinePlanner(95).fit(bundle.profiles)
    for row in result.traces.itertuples():
        cid = planner.select("sst2", row.deadline_ms).config_id
        capacity = float(bundle.profiles.set_index("config_id").loc[cid, "throughput_items_s"])
        assert row.target_rate_rps == pytest.approx(0.8 * capacity)
        assert row.reference_config == cid


def test_resume_skips_finished_runs_and_recomputes_missing_ones(bundle, tmp_path, monkeypatch):
    out = tmp_path / "runs.csv"
    small = settings(methods=["seed_p95", "slack_aware"], workloads={"steady": {"kind": "poisson"}})
    traces = tmp_path / "traces.csv"
    first = ev.evaluate(bundle, "sst2", small, [2.0, 5.0], out_csv=out, progress=False, traces_csv=traces)
    on_disk = pd.read_csv(out)
    assert len(on_disk) == len(first.runs) == 2 * 2 * 2
    # every finished cell's trace is on disk with its runs (not only at the end of the evaluation)
    assert len(pd.read_csv(traces)) == 2 * 2
    # nothing left to do: simulate must not be called again
    monkeypatch.setattr(ev, "simulate", lambda *a, **k: pytest.fail("re-simulated a finished run"))
    again = ev.evaluate(bundle, "sst2", small, [2.0, 5.0], out_csv=out, progress=False)
    assert len(again.runs) == len(on_disk) and again.traces.empty
    monkeypatch.undo()
    # lose two rows (an interrupted run): only those are recomputed, with identical values
    on_disk.drop(index=[1, 5]).to_csv(out, index=False)
    resumed = ev.evaluate(bundle, "sst2", small, [2.0, 5.0], out_csv=out, progress=False)
    keys = ["method", "workload", "deadline_ms", "seed"]
    final = pd.read_csv(out).sort_values(keys).reset_index(drop=True)
    assert len(final) == len(on_disk) and len(resumed.traces) == 2
    pd.testing.assert_frame_equal(final, on_disk.sort_values(keys).reset_index(drop=True))


def test_summary_over_seeds(result):
    summary = summarize_runs(result.runs, ["effective_accuracy", "hit_rate"])
    assert list(summary.columns) == ["task", "workload", "load", "deadline_ms", "method", "metric", "mean", "sd", "n",
                                     "ci_low", "ci_high"]
    assert (summary["n"] == 2).all() and (summary["ci_low"] <= summary["mean"]).all()
    one = result.runs[(result.runs["method"] == "seed_p95") & (result.runs["workload"] == "steady")
                      & (result.runs["deadline_ms"] == 2.0)]
    row = summary[(summary["method"] == "seed_p95") & (summary["workload"] == "steady")
                  & (summary["deadline_ms"] == 2.0) & (summary["metric"] == "hit_rate")].iloc[0]
    assert row["mean"] == pytest.approx(one["hit_rate"].mean())


def test_keep_requests_returns_per_request_tables(bundle):
    small = settings(methods=["slack_aware"], seeds=[1], workloads={"steady": {"kind": "poisson"}})
    out = ev.evaluate(bundle, "sst2", small, [5.0], keep_requests=True, progress=False)
    assert len(out.requests) == 400 and set(out.requests["method"]) == {"slack_aware"}


def test_preset_validation_names_the_problem(bundle):
    with pytest.raises(ValueError, match="methods must be distinct"):
        settings(methods=["seed_p95", "seed_p95"])
    with pytest.raises(ConfigError, match="unknown \\['magic'\\].*registered"):
        ev.evaluate(bundle, "sst2", settings(methods=["seed_p95", "magic"]), [2.0], progress=False)
    with pytest.raises(ValueError, match="'shape'.*Extra inputs.*gamma|gamma.*shape"):
        settings(workloads={"x": {"kind": "gamma", "params": {"shape": 2}}})
    with pytest.raises(ConfigError, match="method_params.best_fixed_hindsight: metric = 'lat_p95_ms'"):
        ev.evaluate(bundle, "sst2", settings(method_params={"best_fixed_hindsight": {"metric": "lat_p95_ms"}}), [2.0],
                    progress=False)
    with pytest.raises(ConfigError, match="method_params.infaas: accuracy_margni"):
        check_method_params({"infaas": {"accuracy_margni": 0.1}})
    with pytest.raises(ValueError, match="loads"):
        settings(loads=[0.0])
    # the shipped presets run the registry's defaults with valid typed parameters
    for name in ("quick", "full"):
        preset = config.preset(name).evaluate
        assert check_methods(preset.methods) == default_methods()
        check_method_params(preset.method_params)


def test_cli_writes_eval_csvs(bundle, tmp_path, monkeypatch):
    """``planner evaluate`` reads a profile bundle from results/<preset>/profiles/<tag>/ and writes eval/."""
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    write_bundle_folder(tmp_path / "quick" / "profiles" / "synthetic", bundle)
    small = settings(methods=["seed_p95", "slack_aware", "best_fixed_hindsight"], workloads={"steady": {"kind": "poisson"}})
    monkeypatch.setattr(config, "preset", lambda name: SimpleNamespace(evaluate=small))
    args = ["evaluate", "--task", "sst2", "--preset", "quick", "--machine-tag", "synthetic", "--no-progress",
            "--workers", "0"]  # the serial path; the Dask path of the CLI is in test_dask_grid.py
    assert main(args) == 0
    eval_dir = tmp_path / "quick" / "eval"
    runs = pd.read_csv(eval_dir / "runs_sst2.csv")
    assert len(runs) == 3 * 2 * 2
    assert len(pd.read_csv(eval_dir / "traces_sst2.csv")) == 2 * 2
    assert set(pd.read_csv(eval_dir / "summary_sst2.csv")["method"]) == {"seed_p95", "slack_aware", "best_fixed_hindsight"}
    assert main(args) == 0  # resumes: nothing new, same files
    assert len(pd.read_csv(eval_dir / "runs_sst2.csv")) == len(runs)
    # a re-sum of the same runs that moves only last digits leaves the stored summary as it is ...
    summary_csv = eval_dir / "summary_sst2.csv"
    stored = pd.read_csv(summary_csv)
    nudged = stored.assign(mean=np.nextafter(stored["mean"].to_numpy(float), np.inf))
    summary_csv.write_text(nudged.to_csv(index=False))
    written = summary_csv.read_bytes()
    assert main(args) == 0 and summary_csv.read_bytes() == written
    # ... and one that differs in substance is rewritten from the runs
    summary_csv.write_text(stored.assign(mean=stored["mean"] + 0.01).to_csv(index=False))
    assert main(args) == 0
    pd.testing.assert_frame_equal(pd.read_csv(summary_csv), stored)
    assert main(args + ["--methods", "slack_aware_drain"]) == 0  # an extra method joins the same files
    assert len(pd.read_csv(eval_dir / "runs_sst2.csv")) == len(runs) + 2 * 2
    assert "slack_aware_drain" in set(pd.read_csv(eval_dir / "summary_sst2.csv")["method"])
    assert main(args + ["--methods", "nonsense"]) == 2
    # a changed method runs again on its own: its rows are replaced, the others' kept byte for byte
    before = pd.read_csv(eval_dir / "runs_sst2.csv")
    assert main(args + ["--rerun", "slack_aware"]) == 0
    after = pd.read_csv(eval_dir / "runs_sst2.csv")
    assert len(after) == len(before) and (after["method"] == "slack_aware").sum() == 2 * 2
    others = ["seed_p95", "best_fixed_hindsight", "slack_aware_drain"]
    key = ["method", "load", "deadline_ms", "seed"]
    pd.testing.assert_frame_equal(before[before["method"].isin(others)].sort_values(key).reset_index(drop=True),
                                  after[after["method"].isin(others)].sort_values(key).reset_index(drop=True))
    assert len(pd.read_csv(eval_dir / "traces_sst2.csv")) == 2 * 2  # the cells' traces once each
    assert main(args + ["--rerun", "static_large"]) == 2  # not run by this evaluation: nothing dropped
    assert main(["evaluate", "--task", "cifar10", "--preset", "quick", "--machine-tag", "synthetic",
                 "--no-progress"]) == 2  # no cifar10 profiles: a clear one-line error


def test_cli_evaluates_afresh_when_the_profiles_changed_and_never_splices_two_profile_sets(bundle, tmp_path,
                                                                                           monkeypatch, capsys):
    """Runs are resumed only on the profiles they were planned from (inputs.json records which)."""
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    root = tmp_path / "quick" / "profiles" / "synthetic"
    profiles = apply_split(bundle.profiles, bundle.predictions)
    write_bundle_folder(root, bundle, profiles)
    small = settings(methods=["seed_p95", "static_small"], workloads={"steady": {"kind": "poisson"}})
    monkeypatch.setattr(config, "preset", lambda name: SimpleNamespace(evaluate=small))
    args = ["evaluate", "--task", "sst2", "--preset", "quick", "--machine-tag", "synthetic", "--no-progress",
            "--workers", "0"]
    eval_dir = tmp_path / "quick" / "eval"
    assert main(args) == 0
    first = (eval_dir / "runs_sst2.csv").read_bytes()
    recorded = json.loads((eval_dir / "inputs.json").read_text())["runs_sst2.csv"]
    assert recorded["profiles"] == "quick/profiles/synthetic"
    # a sweep that rewrites only its environment (a re-run with nothing to do) keeps the runs
    write_bundle_folder(root, bundle, profiles, {"machine_tag": "synthetic", "note": "re-run"})
    capsys.readouterr()
    assert main(args) == 0
    assert "evaluating sst2 afresh" not in capsys.readouterr().out and (eval_dir / "runs_sst2.csv").read_bytes() == first
    # other profiles (here: the most accurate sst2 configuration is gone): the grid runs again, once
    best = profiles.loc[profiles["task"] == "sst2", "accuracy"].idxmax()
    write_bundle_folder(root, bundle, profiles.drop(index=best))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "runs_sst2.csv in" in out and "was computed from other profiles" in out and "evaluating sst2 afresh" in out
    runs = pd.read_csv(eval_dir / "runs_sst2.csv")
    assert len(runs) == 2 * 2 * 2  # replaced, not appended to
    assert len(pd.read_csv(eval_dir / "traces_sst2.csv")) == 2 * 2
    now = json.loads((eval_dir / "inputs.json").read_text())["runs_sst2.csv"]["profiles_sha256"]
    assert now != recorded["profiles_sha256"] and now == profiles_digest(root)
    # runs with no record of their profiles (written before inputs.json existed) are not trusted either
    (eval_dir / "inputs.json").unlink()
    assert main(args) == 0
    assert "records no profiles it was computed from" in capsys.readouterr().out


def test_dispatch_overhead_slows_every_batch_is_recorded_and_is_not_mixed_on_resume(bundle, tmp_path):
    small = settings(methods=["static_small"], workloads={"steady": {"kind": "poisson"}}, seeds=[42])
    base = ev.evaluate(bundle, "sst2", small, [5.0], progress=False).runs.iloc[0]
    out = tmp_path / "runs.csv"
    slow = ev.evaluate(bundle, "sst2", small, [5.0], out_csv=out, progress=False, dispatch_overhead_ms=0.5).runs.iloc[0]
    assert base["dispatch_overhead_ms"] == 0.0 and slow["dispatch_overhead_ms"] == 0.5
    assert slow["lat_p50_ms"] > base["lat_p50_ms"] + 0.4 and slow["hit_rate"] <= base["hit_rate"]
    with pytest.raises(ValueError, match="dispatch overhead of \\[0.5\\] ms, this run 0.0000 ms; rerun with --fresh"):
        ev.evaluate(bundle, "sst2", small, [5.0], out_csv=out, progress=False)


def test_resolve_dispatch_overhead_measures_once_and_reuses(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ev, "harness_overhead", lambda: calls.append(1) or {"harness_lat_p50_ms": 0.21,
                                                                              "harness_lat_p95_ms": 0.5})
    harness = settings(dispatch_overhead="harness")
    assert ev.resolve_dispatch_overhead(harness, tmp_path) == 0.21
    assert ev.resolve_dispatch_overhead(harness, tmp_path) == 0.21 and len(calls) == 1  # reused from the JSON
    assert json.loads((tmp_path / "dispatch_overhead.json").read_text())["harness_lat_p95_ms"] == 0.5
    ev.resolve_dispatch_overhead(harness, tmp_path, fresh=True)
    assert len(calls) == 2
    assert ev.resolve_dispatch_overhead(settings(), tmp_path) == 0.0
    assert ev.resolve_dispatch_overhead(settings(dispatch_overhead=0.3), tmp_path) == 0.3
    with pytest.raises(ValueError, match="dispatch_overhead must be"):
        settings(dispatch_overhead=-0.1)


def test_a_run_killed_mid_write_resumes_to_the_same_table(bundle, tmp_path):
    """A kill mid-row leaves a torn last line; the resumed evaluation cuts it, reruns that cell, and the
    file ends with exactly the rows of an uninterrupted run."""
    small = settings(methods=["seed_p95", "static_small"], workloads={"steady": {"kind": "poisson"}})
    whole = ev.evaluate(bundle, "sst2", small, [2.0, 5.0], out_csv=tmp_path / "whole.csv", progress=False).runs
    out = tmp_path / "runs.csv"
    ev.evaluate(bundle, "sst2", small.model_copy(update={"seeds": [42]}), [2.0, 5.0], out_csv=out, progress=False)
    text = out.read_text()
    out.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # half of the last row, no newline
    resumed = ev.evaluate(bundle, "sst2", small, [2.0, 5.0], out_csv=out, progress=False).runs
    on_disk = pd.read_csv(out)
    keys = ["method", "deadline_ms", "seed"]
    assert len(on_disk) == len(whole) == len(resumed) and not on_disk.duplicated(keys).any()
    pd.testing.assert_frame_equal(on_disk.sort_values(keys).reset_index(drop=True),
                                  pd.read_csv(tmp_path / "whole.csv").sort_values(keys).reset_index(drop=True))


def test_mixed_deadline_workload_plans_per_request(bundle):
    """With two deadline classes in one trace, the static per-deadline rule runs more than one
    configuration, the bound still holds, and every request is accounted for."""
    mixed = {"mixed": {"kind": "poisson", "deadline_classes": {"tight": {"share": 0.5, "scale": 0.4},
                                                              "relaxed": {"share": 0.5, "scale": 3.0}}}}
    s = settings(workloads=mixed, seeds=[42], methods=["seed_p95", "anytime", "clairvoyant"])
    out = ev.evaluate(bundle, "sst2", s, [5.0], progress=False)
    runs = out.runs.set_index("method")
    assert runs.loc["seed_p95", "n_configs_used"] >= 2
    assert runs.loc["anytime", "effective_accuracy"] <= runs.loc["clairvoyant", "effective_accuracy"] + 1e-9
    assert json.loads(out.traces["deadline_classes"].iloc[0]) == {"tight": [0.5, 0.4], "relaxed": [0.5, 3.0]}


@pytest.mark.parametrize("task", ["cifar10", "sst2"])
def test_committed_full_summaries_are_the_summary_of_the_committed_runs(task):
    """Every summary row is what summarize_runs computes from runs_<task>.csv (a row edited or copied
    in by hand, or runs changed without the summary, fails); ~12 s per task."""
    from planner.paths import results_dir

    eval_dir = results_dir("full") / "eval"
    summary = pd.read_csv(eval_dir / f"summary_{task}.csv")
    runs = pd.read_csv(eval_dir / f"runs_{task}.csv")
    keys = ["task", "workload", "load", "deadline_ms", "method", "metric"]
    again = summarize_runs(runs, confidence=config.protocol().confidence)
    both = summary.merge(again, on=keys, suffixes=("", "_again"), validate="one_to_one")
    assert len(both) == len(summary) == len(again) > 0
    for column in ("mean", "sd", "n", "ci_low", "ci_high"):
        np.testing.assert_allclose(both[column], both[f"{column}_again"], rtol=1e-9, equal_nan=True, err_msg=column)
