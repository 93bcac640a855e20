"""benchmarks/compare_best_latency.py: best profiled p50 over best independent p50, per model and batch."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from planner.paths import REPO_ROOT

spec = importlib.util.spec_from_file_location("compare_best_latency", REPO_ROOT / "benchmarks" / "compare_best_latency.py")
compare_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_mod)


def _profiles():
    rows = []
    for model, runtime, precision, b, p50 in [
        ("resnet18", "torch", "fp32", 1, 4.0), ("resnet18", "onnxruntime", "int8", 1, 0.8),
        ("resnet18", "onnxruntime", "int8", 8, 2.0), ("minilm-l6", "torch", "bf16", 8, 14.0),
    ]:
        rows.append({"task": "x", "model": model, "runtime": runtime, "precision": precision, "batch_size": b,
                     "device": "cpu", "cascade_small": None, "lat_p50_ms": p50,
                     "config_id": f"x/{model}/{runtime}/{precision}/b{b}/cpu"})
    rows.append({"task": "x", "model": "cascade:a>b@0.9", "runtime": "torch", "precision": "fp32", "batch_size": 1,
                 "device": "cpu", "cascade_small": "a", "lat_p50_ms": 0.01, "config_id": "casc"})
    return pd.DataFrame(rows)


def test_ratio_uses_the_best_of_each_side(tmp_path):
    bench = tmp_path / "bench.csv"
    pd.DataFrame({"model": ["resnet18", "resnet18", "resnet18", "minilm-l6"], "batch_size": [1, 1, 8, 8],
                  "runtime": ["onnxruntime", "onnxruntime", "onnxruntime", "torch"],
                  "precision": ["fp32", "int8", "int8", "bf16"],
                  "lat_p50_ms": [0.71, 0.67, 1.81, 13.9]}).to_csv(bench, index=False)
    table = compare_mod.compare(_profiles(), compare_mod.read_bench(bench), target=1.2)
    got = {(r.model, r.batch_size): r.ratio for r in table.itertuples()}
    assert got == pytest.approx({("minilm-l6", 8): 14.0 / 13.9, ("resnet18", 1): 0.8 / 0.67, ("resnet18", 8): 2.0 / 1.81})
    assert table.loc[table["model"] == "resnet18", "best_independent_method"].tolist() == ["onnxruntime/int8"] * 2
    assert table["within_target"].tolist() == [True, True, True]
    assert "casc" not in set(table["best_profiled_config"])


def test_bad_benchmark_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench_runtimes"):
        compare_mod.read_bench(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"model": ["m"], "batch_size": [1], "method": ["x"], "p50_ms": [np.nan]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="bad.csv.*positive p50"):
        compare_mod.read_bench(bad)
    pd.DataFrame({"model": ["m"], "batch_size": [1], "p50_ms": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="bad.csv.*method"):
        compare_mod.read_bench(bad)


def test_same_run_ratio_uses_the_planner_rows_and_never_counts_them_as_independent(tmp_path):
    bench = tmp_path / "bench.csv"
    pd.DataFrame({"model": ["resnet18", "resnet18", "resnet18"], "batch_size": [1, 1, 8],
                  "runtime": ["onnxruntime", "planner", "onnxruntime"],
                  "precision": ["int8", "x/resnet18/onnxruntime/int8/b1/cpu", "int8"],
                  "lat_p50_ms": [0.70, 0.63, 1.81]}).to_csv(bench, index=False)
    table = compare_mod.compare(_profiles(), compare_mod.read_bench(bench), target=1.2).set_index("batch_size")
    assert table.loc[1, "best_independent_p50_ms"] == 0.70  # the planner row (0.63) is not an independent one
    assert table.loc[1, "ratio_same_run"] == pytest.approx(0.63 / 0.70) and table.loc[1, "within_target_same_run"]
    assert np.isnan(table.loc[8, "ratio_same_run"])  # not timed in the same run
