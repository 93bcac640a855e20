"""Enumeration of the configuration space: complete, stable ids, infeasible rows kept with reasons."""

from __future__ import annotations


import pytest

from planner import config
from planner.models.base import PRECISIONS
from planner.profile import toy
from planner.profile.space import Configuration, enumerate_space, load_zoo, runtimes_for


def test_every_combination_is_either_feasible_or_recorded_with_a_reason():
    space = enumerate_space(["sst2", "cifar10"], [1, 8], ["cpu", "cuda"], toy)
    cfg = config.models()
    expected = 0
    for task in ("sst2", "cifar10"):
        n_models = len(toy.task_models(task)) + len(_pairs_without_extras(task)) * len(cfg.thresholds)
        # 2 batch sizes; cuda adds the GPU-only runtimes (ONNX Runtime's TensorRT provider)
        expected += n_models * (len(runtimes_for("cpu")) + len(runtimes_for("cuda"))) * len(PRECISIONS) * 2
    ids = [c.config_id for c in space.feasible] + space.infeasible["config_id"].tolist()
    assert len(ids) == expected == len(set(ids))
    assert space.infeasible["reason"].str.len().gt(0).all()
    assert space.infeasible.loc[space.infeasible["device"] == "cuda", "reason"].str.contains("cuda").all()
    # a cascade is infeasible exactly when one of its members is, and says which
    fp16 = space.infeasible[space.infeasible["model"].str.startswith("cascade:") & (space.infeasible["precision"] == "fp16")]
    assert len(fp16) and fp16["reason"].str.contains("cascade member").all()
    assert not any(c.precision == "fp16" for c in space.feasible)


def test_config_ids_follow_the_contract_and_are_stable():
    c = Configuration("cifar10", None, "torch", "fp32", 8, "cpu", ("mobilenet_v2", "resnet18", 0.9))
    assert c.config_id == "cifar10/cascade:mobilenet_v2>resnet18@0.9/torch/fp32/b8/cpu"
    assert c.model_name == "cascade:mobilenet_v2>resnet18@0.9"
    assert [m.model for m in c.members] == ["mobilenet_v2", "resnet18"]
    assert c.variant_key == "cifar10/cascade:mobilenet_v2>resnet18@0.9/torch/fp32/cpu"
    single = Configuration("sst2", "minilm-l6", "onnxruntime", "int8", 4, "cpu")
    assert single.config_id == "sst2/minilm-l6/onnxruntime/int8/b4/cpu"
    assert single.identity()["cascade_small"] is None
    first = [c.config_id for c in enumerate_space(["sst2"], [1, 4], ["cpu"], toy).feasible]
    assert first == [c.config_id for c in enumerate_space(["sst2"], [1, 4], ["cpu"], toy).feasible]


def _pairs_without_extras(task: str) -> set[tuple[str, str]]:
    """The configured cascade pairs whose members need no optional extra."""
    plain = set(config.task_models(task))
    return {tuple(p) for p in config.models().cascades[task] if set(p) <= plain}


def test_cascades_use_the_configured_pairs_and_thresholds():
    space = enumerate_space(["sst2"], [1], ["cpu"], toy, runtimes=["torch"], precisions=["fp32"])
    taus = sorted(c.cascade[2] for c in space.feasible if c.is_cascade)
    assert taus == sorted(config.models().thresholds * len(_pairs_without_extras("sst2")))
    assert {c.cascade[:2] for c in space.feasible if c.is_cascade} == _pairs_without_extras("sst2")


def test_a_cascade_with_a_member_from_an_extra_is_in_the_space_only_of_presets_listing_the_extra():
    pairs = {tuple(p) for p in config.models().cascades["sst2"]}
    assert ("minilm-l6", "mpnet-l12") in pairs and ("minilm-l6", "mpnet-l12") not in _pairs_without_extras("sst2")
    quick = enumerate_space(["sst2"], [1], ["cpu"], toy, runtimes=["torch"], precisions=["fp32"], preset="quick")
    full = enumerate_space(["sst2"], [1], ["cpu"], toy, runtimes=["torch"], precisions=["fp32"], preset="full")
    def cascades(space) -> set:  # feasible or recorded infeasible (e.g. the extra is not installed here)
        rows = {c.cascade[:2] for c in space.feasible if c.is_cascade}
        members = space.infeasible[["cascade_small", "cascade_large"]].dropna()
        return rows | set(members.itertuples(index=False, name=None))
    assert cascades(quick) == _pairs_without_extras("sst2")
    assert cascades(full) == pairs


def test_unknown_task_is_a_clear_error():
    with pytest.raises(config.ConfigError, match="unknown task"):
        enumerate_space(["imagenet"], [1], ["cpu"], toy)


def test_the_hidden_hook_selects_a_zoo_module(monkeypatch):
    monkeypatch.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
    assert load_zoo() is toy


def test_the_real_zoo_gives_the_sweep_both_identities_it_guards_on(monkeypatch):
    """The sweep re-profiles a model whose weights or int8 settings changed only if the zoo reports them."""
    import json

    monkeypatch.delenv("PLANNER_PROFILE_ZOO", raising=False)
    monkeypatch.setenv("PLANNER_CPU_VNNI", "1")
    real = load_zoo()
    assert callable(real.weights_key)
    assert json.loads(real.quantization_key("sst2", "minilm-l3")) == {
        "int8_keep_fp32": ["*.attention.output.dense"], "int8_smooth_alpha": 0.75, "per_channel": True}
    assert json.loads(real.quantization_key("cifar10", "resnet18")) == {}
    monkeypatch.setenv("PLANNER_CPU_VNNI", "0")  # ONNX Runtime int8 is built with 7-bit weights there
    assert json.loads(real.quantization_key("cifar10", "resnet18")) == {"onnx_reduce_range": True}


@pytest.mark.parametrize("native", ["0", "1"])
def test_a_preset_skipping_emulated_variants_records_cpu_bf16_without_bf16_arithmetic_as_infeasible(monkeypatch, native):
    """CI's preset must not spend minutes per configuration timing bf16 a CPU only emulates (AVX2 hosts),
    and a CPU that computes bf16 keeps its bf16 rows; a preset that times everything keeps them either way."""
    from types import SimpleNamespace

    from planner.models import zoo as real

    monkeypatch.setenv("PLANNER_CPU_NATIVE_BF16", native)
    zoo = SimpleNamespace(task_models=toy.task_models, variant_support=toy.variant_support,
                          emulated_reason=real.emulated_reason)
    skipped = enumerate_space(["sst2"], [1], ["cpu"], zoo, precisions=["fp32", "bf16"], skip_emulated=True)
    timed = enumerate_space(["sst2"], [1], ["cpu"], zoo, precisions=["fp32", "bf16"])
    bf16 = {c.config_id for c in timed.feasible if c.precision == "bf16" and c.runtime in ("torch", "torch_compile")}
    assert bf16  # the toy zoo builds torch bf16
    feasible = {c.config_id for c in skipped.feasible}
    if native == "1":
        assert feasible == {c.config_id for c in timed.feasible}
    else:
        assert not bf16 & feasible and feasible == {c.config_id for c in timed.feasible} - bf16
        reasons = skipped.infeasible.set_index("config_id").loc[sorted(bf16), "reason"]
        assert reasons.str.contains("emulated on this CPU").all()
        assert any(c.precision == "fp32" for c in skipped.feasible)


def test_the_native_bf16_override_rejects_anything_but_0_or_1(monkeypatch):
    from planner.models.variants import cpu_has_native_bf16

    monkeypatch.setenv("PLANNER_CPU_NATIVE_BF16", "yes")
    with pytest.raises(ValueError, match="PLANNER_CPU_NATIVE_BF16 must be 0 or 1"):
        cpu_has_native_bf16()
