"""Roofline: measured matmul peaks and the percentage-of-peak arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from planner.profile.fingerprint import fingerprint, set_threads
from planner.profile.roofline import measure_peaks, pct_roofline, peak_by_precision


@pytest.fixture(autouse=True)
def _restore_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_pct_roofline_is_achieved_flops_over_peak():
    # 2 GFLOP per item at 50 items/s = 100 GFLOP/s against a 400 GFLOP/s peak
    assert pct_roofline(2e9, 50.0, 4e11) == pytest.approx(25.0)
    out = pct_roofline(np.array([1e9, np.nan]), np.array([10.0, 10.0]), np.array([1e11, 1e11]))
    assert out[0] == pytest.approx(10.0) and np.isnan(out[1])


def test_measured_peaks_cover_each_precision_with_positive_rates():
    set_threads(1)
    peaks = measure_peaks("cpu", seconds=0.02, sizes=(64, 128))
    assert {"fp32", "bf16", "int8"} <= set(peaks["precision"])
    assert (peaks["flops_per_s"] > 0).all() and (peaks["reps"] >= 3).all()
    assert set(peaks["kernel"]) >= {"torch.matmul", "onnxruntime.MatMulInteger", "torch.nn.functional.linear"}
    assert set(peaks.loc[peaks["kernel"] == "torch.nn.functional.linear", "precision"]) == {"fp32", "bf16", "fp16"}
    best = peak_by_precision(peaks)
    assert best["int8"] == peaks.loc[peaks["precision"] == "int8", "flops_per_s"].max()


def test_fingerprint_records_machine_threads_versions_and_date():
    n = set_threads(1)
    env = fingerprint("cpu")
    assert n == 1 and env["torch_threads"] == 1
    for key in ("machine_tag", "cpu_model", "logical_cpus", "torch_version", "onnxruntime_version", "date"):
        assert env[key], key
    assert env["machine_tag"].startswith("cpu-")
