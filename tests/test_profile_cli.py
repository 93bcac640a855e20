"""``python -m planner profile``: argument handling and a toy run through the CLI."""

from __future__ import annotations

import pandas as pd
import pytest

from planner import cli
from planner.config import ProfilePreset

TINY = ProfilePreset(warmup=10, min_passes=100, max_passes=100, ci_rel_halfwidth=0.05, batch_sizes=[1],
                     n_bootstrap=100, agreement_sample=8, roofline_seconds=0.01)


def test_profile_subcommand_runs_a_toy_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "torch/fp32")
    monkeypatch.setattr("planner.profile.sweep.load_profile_preset", lambda preset, device="cpu": TINY)
    assert cli.main(["profile", "--task", "cifar10", "--preset", "quick", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "cpu: 6 configurations in profiles.csv" in out  # 2 models + 4 cascade thresholds, batch 1
    assert "p95 CI relative half-width" in out
    folder = next((tmp_path / "quick" / "profiles").iterdir())
    assert len(pd.read_csv(folder / "profiles.csv")) == 6


def test_unknown_preset_and_task_are_clear_errors(capsys):
    assert cli.main(["profile", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["profile", "--task", "imagenet"])
