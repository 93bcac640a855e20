"""``python -m planner profile``: argument handling and a toy run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_a_retrained_model_is_profiled_again_and_the_others_are_kept(tmp_path, monkeypatch, capsys):
    """Done-markers name a configuration, not its weights: the sweep records each model's weights
    identity and profiles again every configuration (cascades included) of a model whose weights changed."""
    import json

    from planner.profile.sweep import models_used

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "torch/fp32")
    monkeypatch.setattr("planner.profile.sweep.load_profile_preset", lambda preset, device="cpu": TINY)
    clock = iter(range(10_000))  # profiled_at: a counter instead of the second-resolution clock
    monkeypatch.setattr("planner.profile.sweep.now_iso", lambda: f"t{next(clock):05d}")
    args = ["profile", "--task", "cifar10", "--preset", "quick", "--device", "cpu", "--no-progress"]
    assert cli.main(args) == 0
    folder = next((tmp_path / "quick" / "profiles").iterdir())
    env = json.loads((folder / "environment.json").read_text())
    assert env["weights"] == {"mobilenet_v2": "toy:mobilenet_v2", "resnet18": "toy:resnet18"}
    first = pd.read_csv(folder / "profiles.csv").set_index("config_id")["profiled_at"]
    sizes_before = pd.read_csv(folder / "model_sizes.csv").set_index("model")
    assert sizes_before[["flops_per_item", "weight_elements", "activation_elements_per_item"]].notna().all().all()
    capsys.readouterr()

    assert cli.main(args) == 0  # same weights: nothing is profiled again
    assert "profiling their" not in capsys.readouterr().out
    monkeypatch.setenv("PLANNER_TOY_WEIGHTS", "resnet18=retrained")
    assert cli.main(args) == 0
    assert "the weights of resnet18 differ from the ones profiled: profiling their 5 configuration(s) again" \
        in capsys.readouterr().out  # resnet18 + its 4 cascades; mobilenet_v2 alone is kept
    again = pd.read_csv(folder / "profiles.csv").set_index("config_id")["profiled_at"]
    redone = {cid for cid in first.index if again[cid] != first[cid]}
    used = models_used(pd.read_csv(folder / "profiles.csv"))
    assert redone == {cid for cid in first.index if "resnet18" in used[cid]}
    assert json.loads((folder / "environment.json").read_text())["weights"]["resnet18"] == "retrained"
    # the retrained model's FLOPs and sizes are counted again (the toy's doubled), the others' kept
    sizes = pd.read_csv(folder / "model_sizes.csv").set_index("model")
    assert sizes.loc["resnet18", "flops_per_item"] == 2 * sizes_before.loc["resnet18", "flops_per_item"]
    assert sizes.loc["mobilenet_v2", "flops_per_item"] == sizes_before.loc["mobilenet_v2", "flops_per_item"]
    profiled = pd.read_csv(folder / "profiles.csv").set_index("config_id")["flops_per_item"]
    assert profiled["cifar10/resnet18/torch/fp32/b1/cpu"] == sizes.loc["resnet18", "flops_per_item"]
    assert used["cifar10/cascade:mobilenet_v2>resnet18@0.9/torch/fp32/b1/cpu"] == {"mobilenet_v2", "resnet18"}


def test_changed_int8_settings_profile_only_that_models_int8_configurations_again(tmp_path, monkeypatch, capsys):
    """int8 variants come from the weights *and* the model's quantization settings (layers kept fp32,
    per-channel, calibration): the sweep records the settings and re-profiles the int8 rows they shape."""
    import json

    from planner.profile.sweep import models_used

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "torch/fp32,torch/int8")
    monkeypatch.setattr("planner.profile.sweep.load_profile_preset", lambda preset, device="cpu": TINY)
    clock = iter(range(10_000))
    monkeypatch.setattr("planner.profile.sweep.now_iso", lambda: f"t{next(clock):05d}")
    args = ["profile", "--task", "cifar10", "--preset", "quick", "--device", "cpu", "--no-progress"]
    assert cli.main(args) == 0
    folder = next((tmp_path / "quick" / "profiles").iterdir())
    assert json.loads((folder / "environment.json").read_text())["quantization"] == {
        "mobilenet_v2": "toy-int8", "resnet18": "toy-int8"}
    first = pd.read_csv(folder / "profiles.csv").set_index("config_id")["profiled_at"]
    capsys.readouterr()
    monkeypatch.setenv("PLANNER_TOY_QUANTIZATION", "resnet18=head-kept-fp32")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "the int8 settings of resnet18 differ from the ones profiled" in out
    again = pd.read_csv(folder / "profiles.csv").set_index("config_id")["profiled_at"]
    used = models_used(pd.read_csv(folder / "profiles.csv"))
    redone = {cid for cid in first.index if again[cid] != first[cid]}
    assert redone and redone == {cid for cid in first.index if "resnet18" in used[cid] and "/int8/" in cid}
    assert json.loads((folder / "environment.json").read_text())["quantization"]["resnet18"] == "head-kept-fp32"


def _toy_profile_then_fingerprint(tmp_path, monkeypatch) -> tuple[list[str], Path, dict]:
    """A complete toy CPU profile; returns the CLI arguments, its folder and its recorded fingerprint."""
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "torch/fp32")
    monkeypatch.setattr("planner.profile.sweep.load_profile_preset", lambda preset, device="cpu": TINY)
    args = ["profile", "--task", "cifar10", "--preset", "quick", "--device", "cpu", "--no-progress"]
    assert cli.main(args) == 0
    folder = next((tmp_path / "quick" / "profiles").iterdir())
    return args, folder, json.loads((folder / "environment.json").read_text())


def test_a_sweep_refuses_to_resume_a_profile_timed_on_other_hardware(tmp_path, monkeypatch, capsys):
    """The machine tag names the CPU model and core count only; a folder timed on a host with other CPU
    features (e.g. no AVX-512) must not take this host's timings beside its own."""
    args, folder, env = _toy_profile_then_fingerprint(tmp_path, monkeypatch)
    env["cpu_flags"] = [*env["cpu_flags"], "amx_tile_from_elsewhere"]
    (folder / "environment.json").write_text(json.dumps(env))
    before = (folder / "latency_profiles.csv").read_bytes()
    capsys.readouterr()
    assert cli.main([*args, "--reprofile", "cifar10/resnet18/*"]) == 2
    err = capsys.readouterr().err
    assert "holds timings measured on other hardware" in err and "amx_tile_from_elsewhere" in err
    assert (folder / "latency_profiles.csv").read_bytes() == before  # nothing forgotten or re-timed
    assert json.loads((folder / "environment.json").read_text())["cpu_flags"] == env["cpu_flags"]


def test_a_complete_profile_from_other_hardware_is_used_as_it_is(tmp_path, monkeypatch, capsys):
    """``make report`` on another host reuses a committed, complete profile: nothing is re-timed and no
    file in the folder is rewritten (its fingerprint still names the host that timed it)."""
    args, folder, env = _toy_profile_then_fingerprint(tmp_path, monkeypatch)
    env["cpu_model"] = "Another CPU"
    (folder / "environment.json").write_text(json.dumps(env))
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "complete, timed on other hardware" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    monkeypatch.setenv("PLANNER_TOY_WEIGHTS", "resnet18=retrained")  # now there is work: refused
    assert cli.main(args) == 2
    assert "changed weights of resnet18" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_a_variant_answering_nan_is_recorded_infeasible_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    """A numerically broken build (NaN probabilities) must not stop a long sweep: its configurations and
    the cascades built on it go to infeasible.csv with the reason; everything else is profiled."""
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "torch/fp32,onnxruntime/fp32")
    monkeypatch.setenv("PLANNER_TOY_NONFINITE", "resnet18/onnxruntime/fp32")
    monkeypatch.setattr("planner.profile.sweep.load_profile_preset", lambda preset, device="cpu": TINY)
    args = ["profile", "--task", "cifar10", "--preset", "quick", "--device", "cpu", "--no-progress"]
    assert cli.main(args) == 0
    assert "cifar10/resnet18/onnxruntime/fp32/cpu: probabilities contain NaN or inf (1 of" in capsys.readouterr().out
    folder = next((tmp_path / "quick" / "profiles").iterdir())
    profiled = set(pd.read_csv(folder / "profiles.csv")["config_id"])
    infeasible = pd.read_csv(folder / "infeasible.csv").set_index("config_id")["reason"]
    broken = {"cifar10/resnet18/onnxruntime/fp32/b1/cpu"} | {
        f"cifar10/cascade:mobilenet_v2>resnet18@{tau}/onnxruntime/fp32/b1/cpu" for tau in (0.7, 0.8, 0.9, 0.95)}
    assert broken <= set(infeasible.index) and not broken & profiled
    assert infeasible["cifar10/resnet18/onnxruntime/fp32/b1/cpu"].startswith(
        "NonFiniteOutputs: probabilities contain NaN or inf")
    assert all("cascade member resnet18: NonFiniteOutputs" in infeasible[c] for c in broken if "cascade" in c)
    assert len(profiled) == 6 + 1  # torch: 2 models + 4 cascades; onnxruntime: mobilenet_v2 alone
    assert "cifar10/mobilenet_v2/onnxruntime/fp32/b1/cpu" in profiled
