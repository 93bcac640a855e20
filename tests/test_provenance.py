"""Stored results name the profiles they were computed from; nothing resumes across two profile sets."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bundles import synthetic_bundle, write_bundle_folder
from planner.cli import main
from planner.evaluation.provenance import INPUTS, profiles_digest, record_inputs, recorded_inputs, stale_reason
from planner.profile.accuracy import apply_split
from planner.schema import SchemaError


@pytest.fixture()
def folder(tmp_path):
    return write_bundle_folder(tmp_path / "quick" / "profiles" / "synthetic", synthetic_bundle())


def test_digest_follows_what_the_planners_read_and_ignores_the_environment(folder):
    bundle = synthetic_bundle()
    first = profiles_digest(folder)
    write_bundle_folder(folder, bundle, environment={"machine_tag": "synthetic", "profiled_at": "later"})
    assert profiles_digest(folder) == first
    fewer = apply_split(bundle.profiles, bundle.predictions).iloc[1:]
    write_bundle_folder(folder, bundle, fewer)
    assert profiles_digest(folder) != first
    (folder / "MANIFEST.json").write_text(json.dumps({"algorithm": "sha256", "files": {}}))
    with pytest.raises(SchemaError, match="does not list \\['profiles.csv'"):
        profiles_digest(folder)


def test_a_result_is_stale_unless_it_records_these_profiles(folder, tmp_path):
    out = tmp_path / "eval"
    digest = profiles_digest(folder)
    assert stale_reason(out, "runs_sst2.csv", digest, exists=False) is None  # nothing stored: nothing to resume
    assert "records no profiles" in stale_reason(out, "runs_sst2.csv", digest, exists=True)
    record_inputs(out, "runs_sst2.csv", digest, folder)
    record_inputs(out, "live_fault_sst2", "0" * 64, folder)
    assert stale_reason(out, "runs_sst2.csv", digest, exists=True) is None
    reason = stale_reason(out, "live_fault_sst2", digest, exists=True)
    assert "computed from other profiles (quick/profiles/synthetic, digest 000000000000…" in reason
    assert set(recorded_inputs(out)) == {"runs_sst2.csv", "live_fault_sst2"}
    (out / INPUTS).write_text(json.dumps({"runs_sst2.csv": "abc"}))
    with pytest.raises(SchemaError, match="inputs.json: expected"):
        recorded_inputs(out)


@pytest.mark.parametrize("command", ["live-fault", "live-server"])
def test_live_runs_refuse_a_best_baseline_chosen_on_other_profiles(command, folder, tmp_path, monkeypatch, capsys):
    """The live experiments pick their baseline from the evaluation's summary: it must be of these profiles."""
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    eval_dir = tmp_path / "quick" / "eval"
    eval_dir.mkdir(parents=True)
    pd.DataFrame({"method": ["seed_p95"]}).to_csv(eval_dir / "summary_sst2.csv", index=False)
    args = [command, "--task", "sst2", "--preset", "quick", "--machine-tag", "synthetic"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "runs_sst2.csv in" in err and "records no profiles it was computed from" in err
    assert "cannot choose the best baseline: run `python -m planner evaluate --task sst2 --preset quick` first" in err


@pytest.mark.parametrize("stage, expected", [
    ("eval", ["runs_cifar10.csv", "runs_sst2.csv", "simulator_validation.csv", "live_fault_cifar10", "live_fault_sst2"]),
    ("live", ["server_cifar10", "server_sst2"]),
])
def test_the_committed_full_results_record_the_committed_profiles(stage, expected, monkeypatch):
    """Every result of the committed study names, by digest, the committed profiles it was computed
    from: a result planned on other (older) profiles, or on unrecorded ones, cannot sit in results/full."""
    from planner.paths import results_dir

    monkeypatch.delenv("PLANNER_RESULTS_DIR", raising=False)
    entries = recorded_inputs(results_dir("full") / stage)
    assert sorted(entries) == sorted(expected)
    for result, entry in entries.items():
        folder = results_dir("full").parent / entry["profiles"]
        assert entry["profiles_sha256"] == profiles_digest(folder), f"{stage}/{result}: computed from other profiles"
