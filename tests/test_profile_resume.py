"""Resuming after ``kill -9``: no lost and no duplicated rows, same final set as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from planner.paths import REPO_ROOT

SWEEP = """
from planner.config import ProfilePreset
from planner.profile.sweep import run_sweep
run_sweep(["sst2"], "quick", ["cpu"], progress=False, profile=ProfilePreset(
    warmup=10, min_passes=100, max_passes=100, ci_rel_halfwidth=0.05, batch_sizes=[1, 4], check_every=50,
    n_bootstrap=100, agreement_sample=8, roofline_seconds=0.01))
"""


def _env(results: Path) -> dict[str, str]:
    return {**os.environ, "PLANNER_RESULTS_DIR": str(results), "PLANNER_PROFILE_ZOO": "planner.profile.toy",
            "PLANNER_TOY_VARIANTS": "torch/fp32", "PLANNER_TOY_DELAY_MS": "1", "PYTHONUNBUFFERED": "1"}


def _start(results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SWEEP], cwd=REPO_ROOT, env=_env(results),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _folder(results: Path) -> Path:
    return next((results / "quick" / "profiles").glob("*"))


def _rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


# generous limits: on a loaded 2-core machine starting torch in a subprocess alone can take a minute
@pytest.mark.timeout(900)
def test_kill_minus_nine_then_rerun_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _start(killed)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        folders = list((killed / "quick" / "profiles").glob("*")) if (killed / "quick" / "profiles").exists() else []
        if folders and _rows(folders[0] / "latency_profiles.csv") >= 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"sweep ended before it could be killed:\n{proc.stdout.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = _folder(killed)
    done_before = _rows(folder / "latency_profiles.csv")
    assert 5 <= done_before < 14 and not (folder / "profiles.csv").exists()  # really interrupted mid-sweep

    # resume the killed sweep: it picks up where it stopped (a configuration whose row exists is not redone)
    out = subprocess.run([sys.executable, "-c", SWEEP], cwd=REPO_ROOT, env=_env(killed), capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"({done_before} already done)" in out.stdout
    # an uninterrupted run of the same sweep for reference (in this process: saves a torch start-up)
    for key, value in _env(clean).items():
        monkeypatch.setenv(key, value)
    exec(SWEEP, {})

    resumed, reference = _folder(killed), _folder(clean)
    for name in ("profiles.csv", "latency_profiles.csv", "accuracy_profiles.csv"):
        a, b = pd.read_csv(resumed / name), pd.read_csv(reference / name)
        assert not a["config_id"].duplicated().any(), name
        assert sorted(a["config_id"]) == sorted(b["config_id"]), name
    assert len(pd.read_csv(resumed / "profiles.csv")) == 3 * 2 + 4 * 2
    samples = pd.read_parquet(resumed / "latency_samples.parquet")
    assert not samples.duplicated(["config_id", "call_index"]).any()
    assert (samples.groupby("config_id").size() == 100).all()
    preds_a = pd.read_parquet(resumed / "predictions.parquet").sort_values(["config_id", "example_id"])
    preds_b = pd.read_parquet(reference / "predictions.parquet").sort_values(["config_id", "example_id"])
    assert not preds_a.duplicated(["config_id", "example_id"]).any()
    pd.testing.assert_frame_equal(preds_a.reset_index(drop=True), preds_b.reset_index(drop=True))
    assert not (resumed / "parts").exists()
    assert not list(resumed.glob(".*.tmp"))
