"""Day drift: a sweep that adds timings to a folder first re-times some of its stored configurations and
refuses, or with --rescale corrects, when the machine now runs at another speed (toy zoo, whose
per-call sleep stands for the machine's speed)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from planner import cli
from planner.config import ProfilePreset
from planner.profile.drift import ProfileDriftError
from planner.profile.sweep import run_sweep

# every call sleeps DELAY ms; tripling it is a machine three times slower, far outside the 1.25 band
DELAY_MS, SLOW_MS = 4.0, 12.0
CHECKED = ProfilePreset(warmup=10, min_passes=100, max_passes=100, ci_rel_halfwidth=0.05, batch_sizes=[1],
                        check_every=50, n_bootstrap=100, agreement_sample=16, roofline_seconds=0.01,
                        drift_tolerance=1.25, drift_reference=2)


def _toy(monkeypatch, results, delay_ms: float, quantization: str = ""):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(results))
    monkeypatch.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "onnxruntime/fp32,onnxruntime/int8")
    monkeypatch.setenv("PLANNER_TOY_DELAY_MS", str(delay_ms))
    monkeypatch.setenv("PLANNER_TOY_QUANTIZATION", quantization)
    from planner.profile import toy

    return toy


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished toy folder (sst2, plain models only) timed at DELAY_MS per call."""
    root = tmp_path_factory.mktemp("drift")
    with pytest.MonkeyPatch.context() as mp:
        toy = _toy(mp, root, DELAY_MS)
        run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=CHECKED.model_copy(update={"thresholds": [0.9]}),
                  progress=False)
    return root


@pytest.fixture
def folder_copy(swept, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(swept, root)
    return root


def _folder(root):
    return next((root / "quick" / "profiles").iterdir())


def _requantized(monkeypatch, root, delay_ms, **options):
    """New int8 settings for minilm-l3: its int8 rows must be timed again, beside the stored ones."""
    toy = _toy(monkeypatch, root, delay_ms, quantization="minilm-l3=v2")
    return run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=CHECKED.model_copy(update={"thresholds": [0.9]}),
                     progress=False, **options)["cpu"]


def _checks(root):
    return json.loads((_folder(root) / "environment.json").read_text()).get("drift_checks", [])


def test_a_slower_day_is_refused_with_the_factor_and_the_ways_on(folder_copy, monkeypatch):
    before = pd.read_csv(_folder(folder_copy) / "latency_profiles.csv")
    with pytest.raises(ProfileDriftError) as err:
        _requantized(monkeypatch, folder_copy, SLOW_MS)
    message = str(err.value)
    assert "outside the drift band [0.80, 1.25]" in message
    assert "--rescale" in message and "--remeasure '*'" in message
    (check,) = _checks(folder_copy)
    assert check["action"] == "refused" and check["scale"] > 1.5  # three times slower, read as much slower
    assert check["n_new"] > 0 and len(check["reference"]) == 2
    after = pd.read_csv(_folder(folder_copy) / "latency_profiles.csv")
    requantized = {c for c in before["config_id"] if "minilm-l3" in c and "/int8/" in c}
    assert requantized and set(after["config_id"]) == set(before["config_id"]) - requantized  # nothing new timed


def test_rescale_puts_the_new_rows_on_the_folders_day(folder_copy, monkeypatch):
    before = pd.read_csv(_folder(folder_copy) / "profiles.csv").set_index("config_id")
    after = _requantized(monkeypatch, folder_copy, SLOW_MS, rescale=True).set_index("config_id")
    (check,) = _checks(folder_copy)
    assert check["action"] == "rescaled" and check["scale"] > 1.5
    rows = pd.read_csv(_folder(folder_copy) / "latency_profiles.csv").set_index("config_id")
    new = rows.index[rows.index.str.contains("minilm-l3") & rows.index.str.contains("/int8/")]
    assert len(new) and np.allclose(rows.loc[new, "timing_scale"], check["scale"])
    # measured at three times the delay, divided by the factor: back near the folder's own timings
    ratio = after.loc[new, "lat_p50_ms"] / before.loc[new, "lat_p50_ms"]
    assert ratio.between(1 / 1.5, 1.5).all(), ratio.to_dict()
    samples = pd.read_parquet(_folder(folder_copy) / "latency_samples.parquet")
    one = new[0]
    assert np.isclose(np.median(samples.loc[samples["config_id"] == one, "latency_ms"]), after.loc[one, "lat_p50_ms"])


def test_the_same_speed_adds_rows_as_measured(folder_copy, monkeypatch):
    after = _requantized(monkeypatch, folder_copy, DELAY_MS)
    (check,) = _checks(folder_copy)
    assert check["action"] == "within" and 0.8 <= check["scale"] <= 1.25
    rows = pd.read_csv(_folder(folder_copy) / "latency_profiles.csv")
    new = rows["config_id"].str.contains("minilm-l3") & rows["config_id"].str.contains("/int8/")
    assert new.any() and (rows.loc[new, "timing_scale"] == 1.0).all()
    assert set(rows.loc[new, "config_id"]) <= set(after["config_id"])


def test_nothing_to_time_means_no_check(folder_copy, monkeypatch):
    toy = _toy(monkeypatch, folder_copy, SLOW_MS)
    run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=CHECKED.model_copy(update={"thresholds": [0.9]}),
              progress=False)
    assert _checks(folder_copy) == []


def test_the_cli_names_the_drift_and_exits_2(folder_copy, monkeypatch, capsys):
    _toy(monkeypatch, folder_copy, SLOW_MS, quantization="minilm-l3=v2")
    monkeypatch.setattr("planner.profile.sweep.load_profile_preset",
                        lambda preset, device="cpu": CHECKED.model_copy(update={"thresholds": [0.9]}))
    assert cli.main(["profile", "--task", "sst2", "--preset", "quick", "--device", "cpu", "--no-progress"]) == 2
    assert "outside the drift band" in capsys.readouterr().err
