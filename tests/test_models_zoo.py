"""Zoo: loading, variants (dtypes, quantized modules/graphs), ONNX export checks, errors, FLOPs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from planner import config
from planner.models import checkpoints as ckpt
from planner.models import onnx_export as ox
from planner.models import zoo
from planner.models.base import ModelUnavailableError, Predictor, UnsupportedVariantError, VariantSpec


@pytest.fixture
def cache(tiny_data_dir, tmp_path, monkeypatch):
    """Tiny data + a private cache holding random-weight 'quick' checkpoints (no training needed)."""
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    return tmp_path / "cache"


def _fake_checkpoint(model: str) -> None:
    from planner.models.text import build_minilm
    from planner.models.vision import cnn_from_params

    torch.manual_seed(0)
    params = config.model_spec(model).params
    module = cnn_from_params(params) if "arch" in params else build_minilm(int(params["num_layers"]), pretrained=False)
    torch.save(module.state_dict(), ckpt.checkpoint_dir("quick", model) / ckpt.WEIGHTS_FILE)


def test_task_models_and_eval_inputs(tiny_data_dir):
    assert zoo.task_models("sst2") == ["minilm-l6", "minilm-l3", "distilbert"]
    assert zoo.task_models("cifar10") == ["mobilenet_v2", "resnet18"]
    x, y = zoo.eval_inputs("cifar10", 50)
    assert x.dtype == np.uint8 and x.shape == (50, 32, 32, 3) and len(np.unique(y)) > 1  # not one class
    s, y2 = zoo.eval_inputs("sst2")
    assert isinstance(s, list) and isinstance(s[0], str) and len(s) == len(y2)


def test_unknown_model_and_missing_checkpoint_errors(cache):
    with pytest.raises(config.ConfigError, match="unknown model 'gpt9'"):
        zoo.load_predictor(VariantSpec("sst2", "gpt9"), preset="quick")
    with pytest.raises(config.ConfigError, match="is a cifar10 model, not a sst2 model"):
        zoo.variant_support(VariantSpec("sst2", "resnet18"))
    with pytest.raises(ModelUnavailableError, match="planner train --task cifar10 --model resnet18 --preset quick"):
        zoo.load_predictor(VariantSpec("cifar10", "resnet18"), preset="quick")


@pytest.mark.parametrize("spec, needle", [
    (VariantSpec("cifar10", "resnet18", "torch", "int8"), "Conv2d"),
    (VariantSpec("cifar10", "resnet18", "onnxruntime", "bf16"), "no bf16 kernels"),
    (VariantSpec("sst2", "minilm-l6", "onnxruntime", "fp16"), "no fp16 kernels"),
    (VariantSpec("cifar10", "mobilenet_v2", "torch", "fp16"), "no fp16 arithmetic"),
    (VariantSpec("sst2", "minilm-l6", "tvm", "fp32"), "unknown runtime"),
])
def test_unsupported_variants_name_the_combination(cache, spec, needle):
    assert needle in zoo.variant_support(spec)
    with pytest.raises(UnsupportedVariantError) as err:
        zoo.load_predictor(spec, preset="quick")
    assert spec.describe() in str(err.value) and needle in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU reason")
def test_cuda_variant_reports_missing_gpu(cache):
    assert "CUDA is not available" in zoo.variant_support(VariantSpec("sst2", "minilm-l3", device="cuda"))


def test_cnn_torch_variants_have_the_right_dtypes(cache):
    _fake_checkpoint("mobilenet_v2")
    x, _ = zoo.eval_inputs("cifar10", 6)
    ref = None
    for precision, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16)]:  # fp16: not on CPU (above)
        predictor = zoo.load_predictor(VariantSpec("cifar10", "mobilenet_v2", "torch", precision), preset="quick")
        assert isinstance(predictor, Predictor) and predictor.accuracy_available
        assert {p.dtype for p in predictor.module.parameters()} == {dtype}
        probs = predictor.predict(x, batch_size=4)
        assert probs.dtype == np.float32 and probs.shape == (6, 10)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
        ref = probs if ref is None else ref
        assert np.abs(probs - ref).max() < 0.1  # low precision stays close to fp32


def test_transformer_torch_int8_quantizes_every_linear_but_the_ones_kept_fp32(cache):
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    from planner.models.variants import quantized_linear_count

    _fake_checkpoint("minilm-l3")
    assert config.model_spec("minilm-l3").params["int8_keep_fp32"] == ["*.attention.output.dense"]
    predictor = zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "torch", "int8"), preset="quick")
    n_quant, n_float = quantized_linear_count(predictor.module)
    assert n_quant == 3 * 5 + 1 and n_float == 3  # 6 Linear per BERT layer + the head; one per layer kept fp32
    head = predictor.module.head  # smoothed (int8_smooth_alpha): the quantized layer sits inside the wrapper
    head = head.linear if config.model_spec("minilm-l3").params.get("int8_smooth_alpha") is not None else head
    assert isinstance(head, QLinear)
    assert head.weight().dtype == torch.qint8
    sentences, _ = zoo.eval_inputs("sst2", 5)
    probs = predictor.predict(sentences, 2)
    assert probs.shape == (5, 2)


def test_transformer_bf16_runs_its_matmuls_in_bf16(cache):
    _fake_checkpoint("minilm-l3")
    predictor = zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "torch", "bf16"), preset="quick")
    assert {p.dtype for p in predictor.module.parameters()} == {torch.bfloat16}
    seen = []
    predictor.module.head.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    sentences, _ = zoo.eval_inputs("sst2", 4)
    probs = predictor.predict(sentences, 4)
    assert seen == [torch.bfloat16] and probs.dtype == np.float32


def test_cnn_onnx_export_is_verified_and_int8_convs_are_quantized(cache):
    _fake_checkpoint("resnet18")
    x, _ = zoo.eval_inputs("cifar10", 9)
    fp32 = zoo.load_predictor(VariantSpec("cifar10", "resnet18", "onnxruntime", "fp32"), preset="quick", n_threads=1)
    note = json.loads(ox.Path(fp32.model_path).with_suffix(".json").read_text())
    assert note["verify_rel_l2"] <= ox.MAX_REL_L2
    torch_probs = zoo.load_predictor(VariantSpec("cifar10", "resnet18"), preset="quick").predict(x, 4)
    np.testing.assert_allclose(fp32.predict(x, 4), torch_probs, atol=1e-4)
    assert fp32.session.get_session_options().intra_op_num_threads == 1

    int8 = zoo.load_predictor(VariantSpec("cifar10", "resnet18", "onnxruntime", "int8"), preset="quick", n_threads=1)
    report = ox.quantized_conv_report(ox.Path(int8.model_path))
    assert report["conv_nodes"] == 20 and report["int8_weight_convs"] == report["conv_nodes"]
    assert ox.quantized_conv_report(ox.Path(fp32.model_path))["int8_weight_convs"] == 0
    int8_note = json.loads(ox.Path(int8.model_path).with_suffix(".json").read_text())
    assert int8_note["calibration_split"] == "train" and int8_note["per_channel"] is True
    assert int8.predict(x, 4).shape == (9, 10)


def test_transformer_onnx_int8_is_dynamic_quantized(cache):
    import onnx

    _fake_checkpoint("minilm-l3")
    predictor = zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "onnxruntime", "int8"), preset="quick", n_threads=1)
    ops = {n.op_type for n in onnx.load(predictor.model_path).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    sentences, _ = zoo.eval_inputs("sst2", 4)
    assert predictor.predict(sentences, 3).shape == (4, 2)


def test_int8_keep_fp32_leaves_the_same_linear_layers_fp32_in_torch_and_onnx_runtime(cache, monkeypatch):
    """``int8_keep_fp32`` (model params) names Linear layers by glob; both int8 runtimes keep exactly those in
    fp32 (the lossy feed-forward output projections of MPNet, here of a tiny MiniLM), and a pattern that
    matches nothing is an error, not a silently fully quantized model."""
    import onnx

    from planner.models.variants import quantized_linear_count

    real = config.model_spec

    def keep(patterns):
        spec = real("minilm-l3")
        patched = spec.model_copy(update={"params": {**spec.params, "int8_keep_fp32": patterns}})
        monkeypatch.setattr(config, "model_spec", lambda name: patched if name == "minilm-l3" else real(name))

    _fake_checkpoint("minilm-l3")
    keep(["*.layer.?.output.dense"])  # the second feed-forward Linear of each of the 3 layers, not attention's
    torch_int8 = zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "torch", "int8"), preset="quick")
    assert quantized_linear_count(torch_int8.module) == (3 * 6 + 1 - 3, 3)
    assert type(torch_int8.module.encoder.encoder.layer[0].output.dense) is torch.nn.Linear
    ort_int8 = zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "onnxruntime", "int8"), preset="quick", n_threads=1)
    nodes = onnx.load(ort_int8.model_path).graph.node
    float_matmuls = {n.name for n in nodes if n.op_type == "MatMul" and "/dense/" in n.name}
    assert float_matmuls == {f"/encoder/encoder/layer.{i}/output/dense/MatMul" for i in range(3)}
    assert sum(n.op_type == "MatMulInteger" for n in nodes) >= 3 * 6 - 3
    sentences, _ = zoo.eval_inputs("sst2", 4)
    fp32 = zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "onnxruntime", "fp32"), preset="quick", n_threads=1)
    assert ort_int8.predict(sentences, 2).shape == torch_int8.predict(sentences, 2).shape == (4, 2)
    assert ox.Path(fp32.model_path) != ox.Path(ort_int8.model_path)
    keep(["*.layer.?.output.dence"])
    with pytest.raises(ValueError, match=r"int8_keep_fp32 pattern\(s\) \['\*.layer.\?.output.dence'\] match no nn.Linear"):
        zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "torch", "int8"), preset="quick")


def test_distilbert_loads_a_saved_finetuned_checkpoint(cache, tmp_path, monkeypatch):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from planner.models.text import load_tokenizer

    folder = tmp_path / "tiny-distilbert-sst2"
    torch.manual_seed(0)
    tiny = DistilBertForSequenceClassification(DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=2, num_labels=2))
    tiny.save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    real_spec = config.model_spec

    def patched(name, *args, **kwargs):
        spec = real_spec(name, *args, **kwargs)
        return spec.model_copy(update={"source": str(folder)}) if name == "distilbert" else spec

    monkeypatch.setattr(config, "model_spec", patched)
    predictor = zoo.load_predictor(VariantSpec("sst2", "distilbert"), preset="quick")
    assert predictor.accuracy_available
    assert predictor.module.model.config.dim == 32
    sentences, _ = zoo.eval_inputs("sst2", 3)
    with torch.inference_mode():
        batch = tiny.eval()(**{k: torch.from_numpy(v) for k, v in predictor.preprocess(sentences).items()})
    np.testing.assert_allclose(predictor.predict(sentences, 3), torch.softmax(batch.logits, 1).numpy(), atol=1e-5)


def test_distilbert_without_checkpoint_is_latency_only(cache):
    predictor = zoo.load_predictor(VariantSpec("sst2", "distilbert"), preset="quick")
    assert predictor.accuracy_available is False
    assert predictor.module.model.config.dim == 768  # the distilbert-base architecture


def test_flops_per_item(tiny_data_dir):
    from planner.models.flops import flops_per_item

    r18, mb2 = flops_per_item("cifar10", "resnet18"), flops_per_item("cifar10", "mobilenet_v2")
    assert r18 > mb2 > 0
    l6, l3 = flops_per_item("sst2", "minilm-l6"), flops_per_item("sst2", "minilm-l3")
    assert l6 == pytest.approx(2 * l3, rel=0.05)
    with pytest.raises(config.ConfigError, match="not a sst2 model"):
        flops_per_item("sst2", "resnet18")


def test_torch_compile_predictor_matches_eager_across_batch_sizes(cache):
    _fake_checkpoint("mobilenet_v2")
    x, _ = zoo.eval_inputs("cifar10", 9)
    eager = zoo.load_predictor(VariantSpec("cifar10", "mobilenet_v2", "torch", "fp32"), preset="quick")
    compiled = zoo.load_predictor(VariantSpec("cifar10", "mobilenet_v2", "torch_compile", "fp32"), preset="quick")
    assert compiled.module is not eager.module and hasattr(compiled.module, "_orig_mod")  # an OptimizedModule
    for b in (1, 4):  # 9 items at batch 4 also feeds a partial batch of 1
        np.testing.assert_allclose(compiled.predict(x, b), eager.predict(x, b), atol=1e-4)


def test_dynamic_int8_remedies_report_every_attempt_at_the_requested_batch(cache):
    from planner.models.variant_accuracy import int8_remedies

    _fake_checkpoint("minilm-l3")
    table = int8_remedies("sst2", "minilm-l3", "quick", n_eval=12, batch_size=1, n_threads=1)
    assert table["attempt"].tolist() == ["dynamic per-tensor (default)", "dynamic per-channel",
                                         "dynamic per-channel, classifier kept fp32"]
    assert (table["batch_size"] == 1).all() and (table["n_eval"] == 12).all()
    assert np.allclose(table["delta_vs_fp32"], table["accuracy"] - table["fp32_onnx_accuracy"])
    assert table["onnx_file"].nunique() == 3  # three distinct quantized files


def test_int8_smoothing_wraps_the_quantized_layers_of_torch_int8_only(cache, monkeypatch):
    """``int8_smooth_alpha`` rebalances the input of every Linear torch int8 quantizes (the ones
    ``int8_keep_fp32`` keeps stay plain fp32 layers), from training examples; fp32 and ONNX Runtime are
    built as before."""
    from planner.models.smoothing import SmoothedInput
    from planner.models.variants import quantized_linear_count

    real = config.model_spec
    spec = real("minilm-l3")
    patched = spec.model_copy(update={"params": {**spec.params, "int8_keep_fp32": ["*.layer.?.output.dense"],
                                                 "int8_smooth_alpha": 0.75}})
    monkeypatch.setattr(config, "model_spec", lambda name: patched if name == "minilm-l3" else real(name))
    _fake_checkpoint("minilm-l3")
    int8 = zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "torch", "int8"), preset="quick")
    wrapped = [name for name, m in int8.module.named_modules() if isinstance(m, SmoothedInput)]
    assert len(wrapped) == 3 * 6 + 1 - 3 and quantized_linear_count(int8.module) == (3 * 6 + 1 - 3, 3)
    assert type(int8.module.encoder.encoder.layer[0].output.dense) is torch.nn.Linear
    fp32 = zoo.load_predictor(VariantSpec("sst2", "minilm-l3", "torch", "fp32"), preset="quick")
    assert not any(isinstance(m, SmoothedInput) for m in fp32.module.modules())
    sentences, _ = zoo.eval_inputs("sst2", 6)
    gap = np.abs(int8.predict(sentences, 3) - fp32.predict(sentences, 3)).max()
    assert 0 < gap < 0.02, gap  # quantized, and the same function up to int8 noise


@pytest.mark.parametrize("vnni", ["0", "1"])
def test_onnx_int8_uses_7_bit_weights_only_where_the_cpu_lacks_vnni(cache, monkeypatch, vnni):
    """Without VNNI, ONNX Runtime's u8 x s8 kernels sum product pairs in 16 bits and saturate (a CNN lost
    1.6 points on an AVX2 host): there the int8 graphs carry 7-bit weights, a separate cached file, and
    the profiler's int8 settings say so (so a profile's int8 rows are redone when the build changes)."""
    import onnx
    from onnx import numpy_helper

    monkeypatch.setenv("PLANNER_CPU_VNNI", vnni)
    reduced = vnni == "0"
    _fake_checkpoint("mobilenet_v2")
    int8 = zoo.load_predictor(VariantSpec("cifar10", "mobilenet_v2", "onnxruntime", "int8"), preset="quick",
                              n_threads=1)
    path = ox.Path(int8.model_path)
    assert path.name.endswith(f"{ox.REDUCED_RANGE_TAG}.onnx") is reduced
    assert json.loads(path.with_suffix(".json").read_text())["reduce_range"] is reduced
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert (largest <= 64) if reduced else (largest > 64)
    assert ("onnx_reduce_range" in json.loads(zoo.quantization_key("cifar10", "mobilenet_v2"))) is reduced


def test_a_bad_vnni_override_is_named(monkeypatch):
    from planner.models.variants import cpu_has_vnni

    monkeypatch.setenv("PLANNER_CPU_VNNI", "yes")
    with pytest.raises(ValueError, match="PLANNER_CPU_VNNI must be 0 or 1"):
        cpu_has_vnni()


def test_serving_sessions_do_not_spin_and_profiling_sessions_keep_the_default(cache, monkeypatch):
    """A server holds many ONNX Runtime sessions on two cores: by default their threads spin-wait, so
    the session just left keeps a core busy while the next one serves (measured behind the HTTP server:
    the anytime policy met 0.60 of its deadlines at 300 q/s with spinning, 0.98 without). Profiles time
    one session at a time and keep ORT's default, so the committed profiles stay comparable."""
    import pandas as pd

    from planner.serving.replay import load_live_configs

    _fake_checkpoint("resnet18")
    spec = VariantSpec("cifar10", "resnet18", "onnxruntime", "fp32")

    def stops(sess) -> str | None:  # "0": its threads sleep
        try:
            return sess.get_session_options().get_session_config_entry(ox.ORT_SPINNING_KEY)
        except RuntimeError:  # never set: ORT's default (spin)
            return None

    assert stops(zoo.load_predictor(spec, preset="quick", n_threads=1).session) is None
    assert stops(zoo.load_predictor(spec, preset="quick", n_threads=1, spin=False).session) == "0"

    built: list[str | None] = []
    real_session = ox.session

    def recording_session(*args, **kwargs):
        sess = real_session(*args, **kwargs)
        built.append(stops(sess))
        return sess

    monkeypatch.setattr(ox, "session", recording_session)
    cid = "cifar10/resnet18/onnxruntime/fp32/b1/cpu"
    profiles = pd.DataFrame([{"config_id": cid, "task": "cifar10", "model": "resnet18", "runtime": "onnxruntime",
                              "precision": "fp32", "batch_size": 1, "device": "cpu", "cascade_small": None,
                              "cascade_large": None, "threshold": None}])
    live = load_live_configs(profiles, [cid], "quick", n_threads=1)
    x, _ = zoo.eval_inputs("cifar10", 2)
    assert live[cid].run(x[:1])[0].shape == (1, 10)
    assert built == ["0"]
    load_live_configs(profiles, [cid], "quick", n_threads=1, spin=True)
    assert built == ["0", None]
