"""The torch.compile runtime (issue 8): offered where it can run, kept only where not dominated."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest

from planner.config import ProfilePreset
from planner.models.base import RUNTIMES, VariantSpec
from planner.profile.dominance import dominated_by, split_dominated


def _rows(*rows):
    cols = ["config_id", "task", "model", "runtime", "precision", "batch_size", "device", "accuracy", "lat_p95_ms"]
    frame = pd.DataFrame([dict(zip(cols, r)) for r in rows])
    return frame.assign(calibration_accuracy=frame["accuracy"])  # pruning compares calibration accuracy


def test_a_compiled_configuration_is_dropped_only_when_another_is_as_accurate_and_faster():
    frame = _rows(
        ("a/ort", "t", "m", "onnxruntime", "int8", 1, "cpu", 0.80, 1.0),
        ("a/compile-slow", "t", "m", "torch_compile", "fp32", 1, "cpu", 0.80, 5.0),   # ORT: same acc, faster
        ("a/compile-acc", "t", "m", "torch_compile", "bf16", 1, "cpu", 0.82, 4.0),    # more accurate: kept
        ("a/compile-b8", "t", "m", "torch_compile", "fp32", 8, "cpu", 0.80, 9.0),     # alone in its batch: kept
        ("a/eager", "t", "m", "torch", "fp32", 1, "cpu", 0.70, 0.5),                  # not a pruned runtime
    )
    by = dominated_by(frame)
    assert by.tolist() == [None, "a/ort", None, None, None]
    kept, dropped = split_dominated(frame)
    assert set(kept["config_id"]) == {"a/ort", "a/compile-acc", "a/compile-b8", "a/eager"}
    assert dropped[["config_id", "dominated_by"]].values.tolist() == [["a/compile-slow", "a/ort"]]


def test_equal_points_do_not_dominate_and_the_fastest_dominator_is_named():
    frame = _rows(
        ("tie", "t", "m", "torch", "fp32", 1, "cpu", 0.8, 2.0),
        ("c", "t", "m", "torch_compile", "fp32", 1, "cpu", 0.8, 2.0),
        ("slow-better", "t", "n", "torch", "fp32", 1, "cpu", 0.9, 1.5),
        ("fast-better", "t", "n", "onnxruntime", "fp32", 1, "cpu", 0.85, 1.0),
    )
    assert dominated_by(frame).tolist() == [None, "fast-better", None, None]
    assert dominated_by(frame.iloc[:2]).tolist() == [None, None]  # identical accuracy and p95: kept


def test_latency_only_models_are_compared_with_themselves_only():
    frame = _rows(
        ("d/eager", "t", "distilbert", "torch", "bf16", 1, "cpu", np.nan, 3.0),
        ("d/compile", "t", "distilbert", "torch_compile", "bf16", 1, "cpu", np.nan, 4.0),
        ("d/compile-fast", "t", "distilbert", "torch_compile", "fp32", 1, "cpu", np.nan, 2.0),
        ("other", "t", "m", "onnxruntime", "int8", 1, "cpu", 0.9, 0.1),
    )
    assert dominated_by(frame).tolist() == [None, "d/compile-fast", None, None]


def test_compile_comparison_pairs_each_compiled_row_with_its_eager_twin():
    from planner.profile.dominance import compile_comparison

    frame = _rows(
        ("e1", "t", "m", "torch", "fp32", 1, "cpu", 0.80, 4.0),
        ("c1", "t", "m", "torch_compile", "fp32", 1, "cpu", 0.80, 2.0),
        ("o1", "t", "m", "onnxruntime", "int8", 1, "cpu", 0.80, 1.0),
    ).assign(cascade_small=None)
    kept, dropped = split_dominated(frame)
    table = compile_comparison(kept, dropped)
    row = table.iloc[0]
    assert len(table) == 1 and row["config_id"] == "c1" and row["speedup_vs_torch"] == pytest.approx(2.0)
    assert row["accuracy_change"] == 0 and not row["kept"] and row["dominated_by"] == "o1"


def test_the_zoo_offers_compile_at_fp32_and_bf16_and_says_why_not_elsewhere():
    from planner.models import zoo

    assert "torch_compile" in RUNTIMES
    assert zoo.variant_support(VariantSpec("cifar10", "resnet18", "torch_compile", "fp32")) is None
    assert zoo.variant_support(VariantSpec("sst2", "minilm-l6", "torch_compile", "bf16")) is None
    assert "int8" in zoo.variant_support(VariantSpec("sst2", "minilm-l6", "torch_compile", "int8"))
    assert "fp16" in zoo.variant_support(VariantSpec("cifar10", "resnet18", "torch_compile", "fp16"))


def test_numpy_normalisation_matches_the_training_transform():
    from planner.models.vision import normalize, normalize_numpy

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fast = normalize_numpy(images)
    assert fast.dtype == np.float32 and fast.shape == (5, 3, 32, 32) and fast.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(fast, normalize(images, channels_last=False).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        normalize_numpy(images.astype(np.float32))


def test_a_sweep_moves_dominated_compiled_rows_out_of_the_profiles_and_keeps_their_data(tmp_path, monkeypatch):
    from planner.profile import toy
    from planner.profile.store import load_bundle
    from planner.profile.sweep import run_sweep

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "torch/fp32,torch_compile/fp32")
    monkeypatch.setenv("PLANNER_TOY_DELAY_MS", "2")  # the toy's compiled calls sleep 3x as long
    preset = ProfilePreset(warmup=10, min_passes=100, max_passes=100, ci_rel_halfwidth=0.05, batch_sizes=[1], check_every=50,
                           n_bootstrap=200,
                           max_seconds_per_config=5, agreement_sample=16, roofline_seconds=0.01,
                           thresholds=[0.9], cascade_runtimes=["torch"])
    profiles = run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False)["cpu"]
    assert (profiles["runtime"] == "torch").all()
    bundle = load_bundle("quick")
    dominated = bundle.dominated
    assert set(dominated["runtime"]) == {"torch_compile"} and len(dominated) == len(toy.task_models("sst2"))
    kept = bundle.profiles.set_index("config_id")
    for row in dominated.itertuples():  # each dominator is a kept configuration at least as good on both axes
        by = kept.loc[row.dominated_by]
        assert by["runtime"] == "torch" and by["lat_p95_ms"] <= row.lat_p95_ms
        assert by["accuracy"] >= row.accuracy or (np.isnan(row.accuracy) and by["model"] == row.model)
    assert not bundle.samples["config_id"].isin(dominated["config_id"]).any()
    # the cascade was pruned by the preset, with the reason recorded
    inf = bundle.infeasible
    pruned = inf[(inf["runtime"] == "torch_compile") & (inf["precision"] == "fp32") & inf["model"].str.startswith("cascade:")]
    assert pruned["reason"].str.contains("cascade_runtimes").all() and len(pruned)
    # nothing measured is lost: a resumed sweep re-times nothing and reproduces the split
    again = run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False)["cpu"]
    assert sorted(again["config_id"]) == sorted(profiles["config_id"])
    assert load_bundle("quick").dominated["config_id"].tolist() == dominated["config_id"].tolist()


def test_remeasure_glob_retimes_only_matching_configurations(tmp_path, monkeypatch, capsys):
    from planner.profile import toy
    from planner.profile.store import load_bundle
    from planner.profile.sweep import run_sweep

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "onnxruntime/int8")
    # profiled_at from a clock that moves on every call: the real one has one-second resolution, and on a
    # quiet machine both sweeps finish within the same second (seen 2026-12-07: nothing looked re-timed)
    start, ticks = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), itertools.count()
    monkeypatch.setattr("planner.profile.sweep.now_iso",
                        lambda: (start + dt.timedelta(seconds=next(ticks))).isoformat(timespec="seconds"))
    preset = ProfilePreset(warmup=10, min_passes=100, max_passes=100, ci_rel_halfwidth=0.05, batch_sizes=[1], check_every=50,
                           n_bootstrap=200,
                           max_seconds_per_config=5, agreement_sample=16, roofline_seconds=0.01, thresholds=[0.9])
    run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False)
    before = load_bundle("quick").profiles.set_index("config_id")
    run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False, remeasure="sst2/minilm-l6/*")
    assert "re-measuring the latency of 1 configuration(s)" in capsys.readouterr().out
    after = load_bundle("quick").profiles.set_index("config_id")
    changed = [c for c in before.index if before.loc[c, "profiled_at"] != after.loc[c, "profiled_at"]]
    assert changed == ["sst2/minilm-l6/onnxruntime/int8/b1/cpu"]
    pd.testing.assert_series_equal(after["accuracy"].reindex(before.index), before["accuracy"])


def test_reprofile_glob_recomputes_latency_and_accuracy(tmp_path, monkeypatch, capsys):
    from planner.profile import toy
    from planner.profile.store import load_bundle
    from planner.profile.sweep import run_sweep

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "onnxruntime/int8")
    preset = ProfilePreset(warmup=10, min_passes=100, max_passes=100, ci_rel_halfwidth=0.05, batch_sizes=[1],
                           check_every=50, n_bootstrap=200, max_seconds_per_config=5, agreement_sample=16,
                           roofline_seconds=0.01, thresholds=[0.9])
    run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False)
    before = load_bundle("quick").profiles.set_index("config_id")
    monkeypatch.setattr(toy, "_NOISE", {**toy._NOISE, "minilm-l6": 5.0})  # the model changed: worse weights
    run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False, reprofile="sst2/minilm-l6/*")
    assert "profiling again (latency and accuracy) 1 configuration(s)" in capsys.readouterr().out
    after = load_bundle("quick").profiles.set_index("config_id")
    cid = "sst2/minilm-l6/onnxruntime/int8/b1/cpu"
    assert after.loc[cid, "accuracy"] != before.loc[cid, "accuracy"]
    others = [c for c in before.index if c != cid]
    pd.testing.assert_series_equal(after.loc[others, "profiled_at"], before.loc[others, "profiled_at"])


def test_a_sweep_of_one_task_leaves_the_other_tasks_profiles_alone(tmp_path, monkeypatch):
    from planner.profile import toy
    from planner.profile.store import load_bundle
    from planner.profile.sweep import run_sweep

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "onnxruntime/int8")
    preset = ProfilePreset(warmup=10, min_passes=100, max_passes=100, ci_rel_halfwidth=0.05, batch_sizes=[1],
                           check_every=50, n_bootstrap=200, max_seconds_per_config=5, agreement_sample=16,
                           roofline_seconds=0.01, thresholds=[0.9])
    run_sweep(["sst2", "cifar10"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False)
    both = load_bundle("quick")
    run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False, reprofile="sst2/minilm-l3/*")
    after = load_bundle("quick")
    assert sorted(after.profiles["config_id"]) == sorted(both.profiles["config_id"])
    assert set(after.infeasible["task"]) == {"sst2", "cifar10"} and len(after.infeasible) == len(both.infeasible)
    assert set(after.samples["config_id"]) == set(both.samples["config_id"])
