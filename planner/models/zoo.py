"""The model zoo: every (task, model, runtime, precision, device) variant behind one ``predict``.

Public API (fixed by the team contract): :func:`load_predictor`, :func:`variant_support`,
:func:`eval_inputs`, :func:`task_models`. Weights come from ``planner train`` checkpoints of a preset
(``cache_dir()/checkpoints/<preset>/<model>/model.pt``); DistilBERT comes from a fine-tuned checkpoint
named in configs/models.yaml, or - when absent - random weights with ``accuracy_available=False``.

Torch eager fast path (issue 8, item 6): CNNs run channels_last. Measured (15:55, 2 threads, shared
machine, median of 40): resnet18 b=1 8.3 -> 5.7 ms, b=8 15.2 -> 18.5 ms; mobilenet_v2 b=1 4.6 -> 3.9 ms,
b=8 11.0 -> 6.9 ms (contiguous -> channels_last). At 32x32 torch's heuristic still sends small-input
3x3 convolutions to ``aten::_slow_conv2d_forward`` at batch 1 in either layout; forcing oneDNN via
``torch.utils.mkldnn.to_mkldnn`` was slower (12.1 ms resnet18 b=1) and fails on mobilenet_v2 (no
hardtanh on MKLDNN tensors). The fast CNN paths on this CPU are ONNX Runtime and torch bf16.
Reproduce: ``benchmarks/bench_runtimes.py --eager-variants``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from planner import config
from planner.models import checkpoints as ckpt
from planner.models import extras
from planner.models import onnx_export as ox
from planner.models.base import (
    CUDA_RUNTIMES, DEVICES, EXPORT_PARAMS, PRECISIONS, RUNTIMES, TORCH_RUNTIMES, ModelUnavailableError, Predictor,
    UnsupportedVariantError, VariantSpec,
)
from planner.models.datasets import eval_inputs, train_inputs  # noqa: F401  (eval_inputs is public API)

VERIFY_EXAMPLES = 24
DEFAULT_CALIBRATION = 512


def task_models(task: str, preset: str | None = None) -> list[str]:
    """Models of a task, in configs/models.yaml order (with ``preset``: those it uses, :func:`config.task_models`)."""
    return config.task_models(task, preset)


def _cuda_reason(runtime: str) -> str | None:
    """Why ``runtime`` cannot run on this machine's GPU (no CUDA; an ONNX Runtime provider not listed)."""
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available on this machine (torch.cuda.is_available() is False)"
    if runtime in ox.GPU_PROVIDERS:
        return ox.provider_reason(runtime)
    return None


def variant_support(spec: VariantSpec) -> str | None:
    """None when the variant can be built here, else why it is infeasible (unknown model -> ConfigError)."""
    model = config.model_spec(spec.model)
    if model.task != spec.task:
        raise config.ConfigError(f"model {spec.model!r} is a {model.task} model, not a {spec.task} model")
    if spec.runtime not in RUNTIMES + CUDA_RUNTIMES:
        return f"unknown runtime {spec.runtime!r}; known: {list(RUNTIMES + CUDA_RUNTIMES)}"
    if spec.precision not in PRECISIONS:
        return f"unknown precision {spec.precision!r}; known: {list(PRECISIONS)}"
    if spec.device not in DEVICES:
        return f"unknown device {spec.device!r}; known: {list(DEVICES)}"
    missing_extra = extras.unavailable_reason(spec.model)
    if missing_extra:
        return missing_extra
    if spec.runtime in CUDA_RUNTIMES and spec.device != "cuda":
        return ox.ort_support(model.kind, spec.runtime, spec.precision, spec.device)
    if spec.device == "cuda":
        reason = _cuda_reason(spec.runtime)
        if reason:
            return reason
    if spec.runtime == "torch":
        from planner.models.variants import torch_support

        return torch_support(model.kind, spec.precision, spec.device)
    if spec.runtime == "torch_compile":
        from planner.models.variants import compile_support

        return compile_support(model.kind, spec.precision, spec.device)
    return ox.ort_support(model.kind, spec.runtime, spec.precision, spec.device)


def emulated_reason(spec: VariantSpec) -> str | None:
    """Why a buildable variant runs only emulated on this machine (None when native); see
    :func:`planner.models.variants.emulated_reason`. The sweep skips timing these when its preset says so."""
    from planner.models.variants import emulated_reason as reason

    return reason(spec.runtime, spec.precision, spec.device)


@dataclass
class BaseModel:
    """An fp32 module with its preprocessing and provenance."""

    module: Any
    preprocess: Callable[[Any], dict[str, np.ndarray]]
    accuracy_available: bool
    folder: Path
    source_key: str
    kind: str
    params: dict


def weights_key(task: str, model: str, preset: str) -> str | None:
    """sha256 of ``model``'s trained ``preset`` checkpoint (None without one, e.g. DistilBERT): the
    identity the profiler records, so that retrained weights are profiled again."""
    config.validate_task(task)
    weights = ckpt.weights_path(preset, model)
    return None if weights is None else ckpt.source_key_of(weights)


# training examples whose activations set the int8 smoothing scales (smoothed_for_int8)
SMOOTHING_EXAMPLES = 512


def base_model(task: str, model: str, preset: str) -> BaseModel:
    """The fp32 module of ``model`` with trained weights of ``preset`` (ModelUnavailableError if untrained)."""
    import torch

    spec = config.model_spec(model)
    config.validate_task(task)
    params = dict(spec.params)
    folder = ckpt.checkpoint_dir(preset, model)
    if spec.kind == "hf_pretrained_classifier":
        from planner.models.text import encode, load_distilbert

        module, tokenizer, available = load_distilbert(spec.source)
        max_length = int(params["max_length"])
        key = f"pretrained:{spec.source}" if available else "random-init:distilbert-base:seed0"
        return BaseModel(module, lambda xs: encode(tokenizer, xs, max_length), available, folder, key,
                         spec.kind, params)
    weights = ckpt.weights_path(preset, model)
    if weights is None:
        raise ModelUnavailableError(
            f"no trained {preset!r} checkpoint for {model!r} in {folder}; run "
            f"`python -m planner train --task {spec.task} --model {model} --preset {preset}`")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if spec.kind == "hf_encoder_finetune":
        from planner.models.text import encode, encoder_from_params, tokenizer_for

        module = encoder_from_params(spec.source, params, pretrained=False)
        tokenizer = tokenizer_for(model)
        max_length = int(params["max_length"])
        preprocess = lambda xs: encode(tokenizer, xs, max_length)  # noqa: E731
    else:
        from planner.models.vision import cnn_from_params, normalize_numpy

        module = cnn_from_params(params)
        preprocess = lambda xs: {"pixels": normalize_numpy(xs)}  # noqa: E731
    module.load_state_dict(state)
    return BaseModel(module.eval(), preprocess, True, folder, ckpt.source_key_of(weights), spec.kind, params)


def onnx_path(spec: VariantSpec, preset: str, n_threads: int = 2, base: BaseModel | None = None) -> Path:
    """Cached, verified ONNX file of a variant (fp32 export, or its int8 quantization; TensorRT's fp16
    builds from the fp32 graph)."""
    base = base or base_model(spec.task, spec.model, preset)
    verify_inputs, _ = eval_inputs(spec.task, VERIFY_EXAMPLES)
    fp32 = ox.ensure_fp32(base.folder, base.source_key, base.module, base.preprocess, verify_inputs, n_threads)
    if spec.precision == "fp32" or (spec.runtime == "onnxruntime_trt" and spec.precision == "fp16"):
        return fp32
    exclude = list(base.params.get("quant_exclude_nodes", [])) + _kept_fp32_nodes(base, fp32)
    from planner.models.variants import cpu_has_vnni

    reduce_range = not cpu_has_vnni()  # 7-bit weights where u8 x s8 products would saturate
    if base.kind == "torchvision_scratch":
        n_calib = int(base.params.get("calibration_examples", DEFAULT_CALIBRATION))
        return ox.ensure_int8_static(fp32, base.source_key, base.preprocess,
                                     lambda: train_inputs(spec.task, n_calib)[0],
                                     method=str(base.params.get("calibration_method", "MinMax")),
                                     per_channel=bool(base.params.get("per_channel", True)),
                                     exclude_nodes=exclude, n_calibration=n_calib, reduce_range=reduce_range)
    return ox.ensure_int8_dynamic(fp32, base.source_key, per_channel=bool(base.params.get("per_channel", False)),
                                  exclude_nodes=exclude, reduce_range=reduce_range)


def _kept_fp32_nodes(base: BaseModel, fp32: Path) -> list[str]:
    """The ONNX MatMul/Gemm nodes of the Linear layers ``int8_keep_fp32`` keeps in fp32 (the torch int8
    variant keeps the same layers, :func:`planner.models.variants.build_torch_variant`)."""
    patterns = list(base.params.get("int8_keep_fp32", []))
    if not patterns:
        return []
    from planner.models.variants import int8_linear_names

    return ox.matmul_nodes_of(fp32, int8_linear_names(base.module, patterns)[1])


def quantization_key(task: str, model: str) -> str:
    """The model's export and quantization settings (``EXPORT_PARAMS``), as recorded by the profiler: a
    change profiles the model's int8 configurations again (they are the ones these settings shape)."""
    import json

    from planner.models.variants import cpu_has_vnni

    params = config.model_spec(model).params
    config.validate_task(task)
    settings = {k: params[k] for k in EXPORT_PARAMS if k in params}
    if not cpu_has_vnni():  # the ONNX Runtime int8 models are built with 7-bit weights here
        settings["onnx_reduce_range"] = True
    return json.dumps(settings, sort_keys=True)


def smoothed_for_int8(spec: VariantSpec, base: BaseModel) -> Any:
    """``base.module`` with the Linear layers torch int8 quantizes smoothed (``int8_smooth_alpha``,
    :mod:`planner.models.smoothing`), their input scales read from :data:`SMOOTHING_EXAMPLES` training
    examples. torch only: ONNX Runtime's dynamic int8 quantizes activations with 8 bits, not fbgemm's 7."""
    import dataclasses

    from planner.models.predictors import TorchPredictor
    from planner.models.smoothing import input_channel_max, smooth_linears
    from planner.models.variants import int8_linear_names

    names = int8_linear_names(base.module, list(base.params.get("int8_keep_fp32", [])))[0]
    examples = train_inputs(spec.task, SMOOTHING_EXAMPLES)[0]
    fp32 = dataclasses.replace(spec, runtime="torch", precision="fp32", device="cpu")
    peaks = input_channel_max(base.module, names,
                              lambda module: TorchPredictor(fp32, module, base.preprocess).predict(examples, 32))
    return smooth_linears(base.module, peaks, float(base.params["int8_smooth_alpha"]))


def load_predictor(spec: VariantSpec, preset: str, n_threads: int | None = None, spin: bool = True) -> Predictor:
    """Build the predictor of ``spec`` from ``preset``'s checkpoint (``spin``: see
    :func:`planner.models.onnx_export.session`; ONNX Runtime variants only).

    Raises UnsupportedVariantError (naming the combination and the reason) for infeasible variants,
    ModelUnavailableError when weights are missing, ConfigError for unknown models/tasks.
    """
    import torch

    reason = variant_support(spec)
    if reason:
        raise UnsupportedVariantError(f"unsupported variant {spec.describe()}: {reason}")
    threads = int(n_threads or torch.get_num_threads())
    return predictor_from_base(spec, base_model(spec.task, spec.model, preset), preset, threads, spin)


def predictor_from_base(spec: VariantSpec, base: BaseModel, preset: str, threads: int, spin: bool = True) -> Predictor:
    """The predictor of ``spec`` built from ``base`` (its module, params and checkpoint folder): one
    construction for the zoo and for studies that vary a base's export params (e.g. ``int8_keep_fp32``)."""
    if spec.runtime in TORCH_RUNTIMES:
        from planner.models.predictors import TorchPredictor
        from planner.models.variants import build_torch_variant, compile_module

        module = base.module
        if spec.precision == "int8" and base.params.get("int8_smooth_alpha") is not None:
            module = smoothed_for_int8(spec, base)
        variant = build_torch_variant(module, base.kind, spec.precision, spec.device,
                                      keep_fp32=list(base.params.get("int8_keep_fp32", [])))
        module = compile_module(variant.module) if spec.runtime == "torch_compile" else variant.module
        return TorchPredictor(spec, module, base.preprocess, input_dtype=variant.input_dtype,
                              autocast_dtype=variant.autocast_dtype, channels_last=variant.channels_last,
                              accuracy_available=base.accuracy_available, n_threads=threads)
    from planner.models.predictors import OrtPredictor

    path = onnx_path(spec, preset, threads, base)
    return OrtPredictor(spec, ox.session(path, spec.device, threads, spec.runtime, spec.precision, spin),
                        base.preprocess,
                        accuracy_available=base.accuracy_available, n_threads=threads, model_path=str(path))
