"""Roofline: measured matmul peaks and the percentage-of-peak arithmetic."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def test_bytes_per_item_shares_weights_across_the_batch_and_sizes_by_precision():
    from planner.profile.roofline import arithmetic_intensity, bytes_per_item

    b = bytes_per_item([1000, 1000, 1000], [10, 10, 10], [1, 4, 4], pd.Series(["fp32", "fp32", "int8"]))
    assert b.tolist() == [4000 + 80, 1000 + 80, 250 + 80]  # int8 weights 1 byte, activations stay fp32
    ai = arithmetic_intensity(100.0, b)
    assert ai[1] > ai[0]  # a larger batch moves fewer weight bytes per item
    with pytest.raises(ValueError, match="unknown precision"):
        bytes_per_item(1, 1, 1, "fp8")
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        bytes_per_item(1, 1, 0, "fp32")


def test_footprint_counts_non_embedding_weights_and_leaf_outputs_per_item():
    import torch

    from planner.models.flops import footprint

    module = torch.nn.Sequential(torch.nn.Embedding(50, 4), torch.nn.Linear(4, 3), torch.nn.ReLU())
    fp = footprint(module, (torch.zeros(2, 5, dtype=torch.long),), batch_size=2)
    assert fp.weight_elements == 4 * 3 + 3  # the 50 x 4 table is not read whole
    assert fp.activation_elements_per_item == 5 * 4 + 5 * 3 + 5 * 3  # embedding, linear and relu outputs


def test_rows_with_stale_flops_are_left_out_of_the_roofline_and_the_others_are_placed():
    """A model retrained with a new architecture after it was profiled carries stale FLOPs (and a wrong
    share of the roofline): the chapter leaves its rows out, cascades built on it included."""
    from planner.profile.roofline import confirmed_rows, roofline_points

    profiles = pd.DataFrame({
        "task": ["cifar10"] * 4, "model": ["a", "b", "cascade:a>b@0.9", "a"],
        "cascade_small": [None, None, "a", None], "cascade_large": [None, None, "b", None],
        "coverage": [np.nan, np.nan, 0.75, np.nan], "flops_per_item": [1e6, 3e6, 1e6 + 0.25 * 3e6, 1e6],
        "pct_roofline": [1.0, 2.0, 3.0, 4.0], "batch_size": [1, 1, 1, 8], "precision": ["fp32"] * 3 + ["int8"],
        "throughput_items_s": [1000.0, 500.0, 800.0, 4000.0]})
    sizes = pd.DataFrame({"task": ["cifar10"] * 2, "model": ["a", "b"], "flops_per_item": [1e6, 3e6],
                          "weight_elements": [100.0, 300.0], "activation_elements_per_item": [10.0, 30.0]})
    rows, left_out = confirmed_rows(profiles, sizes)
    assert len(rows) == 4 and left_out == []
    sizes.loc[1, "flops_per_item"] = 12e6  # b has a new architecture since it was profiled
    rows, left_out = confirmed_rows(profiles, sizes)
    assert list(rows["model"]) == ["a", "a"] and left_out == ["b"]  # and the cascade built on b
    points = roofline_points(rows, sizes)
    # weights once per batch at the precision's width, activations written and read once
    assert points["bytes_per_item"].tolist() == [100 * 4 / 1 + 2 * 10 * 4, 100 * 1 / 8 + 2 * 10 * 4]
    assert points["achieved_gflops"].tolist() == [1e6 * 1000 / 1e9, 1e6 * 4000 / 1e9]
    assert roofline_points(rows, None).empty  # no sizes recorded: nothing placed, no error
