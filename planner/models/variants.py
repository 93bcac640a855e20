"""torch-eager precision variants: what each precision means and why some combinations are infeasible.

* ``fp32``: eval-mode module; CNNs run channels_last (the oneDNN path; see docs in zoo.py).
* ``bf16``: weights and activations cast with ``module.to(torch.bfloat16)`` (AVX512-bf16 kernels).
  Measured with 2 threads on full checkpoints (16:15, shared machine, median ms per call, b=1 / b=8):
  MiniLM-L6 fp32 16.0 / 105.2, autocast 12.1 / 56.9, ``.to(bf16)`` 9.7 / 52.8; MiniLM-L3 8.9 / 50.3,
  6.4 / 28.9, 5.3 / 27.6. ``.to(bf16)`` is the faster of the two bf16 paths, so it is the variant.
* ``fp16``: ``module.to(torch.float16)``; runs on CPU but slowly (no native fp16 compute on this CPU);
  kept and profiled for the transformers so the cost is visible rather than hidden; for the CNNs it is
  recorded infeasible on CPU with the measured reason (:data:`CNN_FP16_CPU_REASON`).
* ``int8`` (transformers): ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` - real
  int8 GEMM kernels (fbgemm/oneDNN), weights int8 per output channel, activations quantized per batch.
  Per-channel, because per-tensor weights lost 1.3-1.4 points on the quick MiniLM checkpoints
  (dev 80.85 -> 79.59 for L6) while per-channel kept them (81.08) at the same speed.
  The API is deprecated in favour of torchao but still ships working kernels in this torch.
  ``int8_keep_fp32`` (model params: glob patterns over module names, e.g. ``*.output.dense``) leaves the
  matching ``nn.Linear`` layers in fp32, in torch and in the ONNX Runtime int8 graph alike: the second
  feed-forward projection of MPNet reads GELU outputs with outliers that per-batch int8 activations cannot
  represent (all layers int8: 62.6 % on the calibration half of SST-2 dev against 94.0 % fp32; all but
  ``output.dense``: 92.2 %).
* ``int8`` (CNNs): torch eager has no dynamic int8 path for ``Conv2d`` (dynamic quantization leaves
  convolutions fp32), so it is reported infeasible; the CNN int8 variant is the ONNX Runtime static
  QDQ model (planner.models.onnx_export).

On cuda every float precision is the same ``module.to(device, dtype)``; the predictor moves each batch
to the GPU and casts floating inputs (``TorchPredictor._tensor``), and the profiler synchronizes the
GPU inside every timed call. fp16 runs on any CUDA GPU (tensor cores); bf16 needs native support
(compute capability >= 8.0, ``torch.cuda.is_bf16_supported(including_emulation=False)``), else the
variant is infeasible rather than emulated. int8 has no torch CUDA path here (see below).

Runtime ``torch_compile`` (issue 8) is the same module passed through ``torch.compile`` (inductor,
default mode, automatic dynamic shapes: a second batch size or sequence length triggers one dynamic
recompile instead of one per shape). Offered at fp32 and bf16; on CPU the profiles keep it only where
no other configuration dominates it (planner.profile.dominance). Measured by hand before the sweep
(18:15, 2 threads, median ms, eager -> compiled): resnet18 bf16 b=1 10.6 -> 11.1, b=8 12.7 -> 11.4;
MiniLM-L6 bf16 b=1 11.8 -> 11.1, b=8 38.8 -> 36.9; the first call of each shape compiled for 8-23 s.
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from planner.models.base import TORCH_RUNTIMES

TEXT_KINDS = ("hf_encoder_finetune", "hf_pretrained_classifier")
VISION_KINDS = ("torchvision_scratch",)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# measured in the full profile of 2026-11-28 (torch eager, batch 1, 2 threads, ImageNet stems)
CNN_FP16_CPU_REASON = (
    "torch fp16 CNNs are not profiled on CPU: this CPU has no fp16 arithmetic, and fp16 was slower than fp32 for "
    "every CNN measured (MobileNetV2 328 ms against 18.5 ms per image at batch 1, ResNet18 10.4 against 9.0 ms); "
    "with the CIFAR stems an accuracy pass of MobileNetV2 fp16 over the 10,000 test images takes about an hour. "
    "fp16 CNNs are profiled on CUDA")


# Overrides the detection ("1"/"0"): lets a machine with native bf16 exercise the path of one without
# (tests, and timing CI's emulated-bf16 case on an AVX-512 host).
NATIVE_BF16_ENV = "PLANNER_CPU_NATIVE_BF16"


def _cpu_feature(env: str, checks: tuple[str, ...]) -> bool:
    """The override in ``env`` ("0"/"1") if set, else whether any of torch's ``torch.cpu`` checks holds."""
    override = os.environ.get(env)
    if override is not None:
        if override not in ("0", "1"):
            raise ValueError(f"{env} must be 0 or 1, got {override!r}")
        return override == "1"
    return any(bool(getattr(torch.cpu, name)()) for name in checks if hasattr(torch.cpu, name))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-bf16 or AMX). Without it torch emulates bf16 and
    a bf16-autocast training step runs many times slower than fp32 (measured on an AVX2 EPYC: a
    384-1536-384 MLP forward and backward at 2,048 rows, 2.65 s against 0.15 s)."""
    return _cpu_feature(NATIVE_BF16_ENV, ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


VNNI_ENV = "PLANNER_CPU_VNNI"


def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies 8-bit integers into 32-bit sums in one step (AVX512-VNNI, AVX-VNNI or
    AMX). Without it ONNX Runtime's u8 x s8 kernels add pairs of products in 16 bits, which saturate
    (measured on an AVX2 EPYC: MobileNetV2 static int8 scored 0.8398 on the CIFAR-10 test set against
    0.8559 in fp32, and 0.8588 on an AVX-512 VNNI host); 7-bit weights (``reduce_range``) avoid the
    overflow. ``PLANNER_CPU_VNNI=0|1`` overrides the detection."""
    return _cpu_feature(VNNI_ENV, ("_is_vnni_supported", "_is_amx_tile_supported"))


def emulated_reason(runtime: str, precision: str, device: str) -> str | None:
    """Why a variant that builds here only runs emulated on this CPU (None when it runs natively).

    torch bf16 on a CPU without AVX512-bf16 or AMX converts every operand to fp32 and back: slower than
    fp32 at the same accuracy, so never the configuration to pick. A preset may skip timing such
    variants (``profile.skip_emulated``); they stay loadable, for a profile timed on another host."""
    if device == "cpu" and precision == "bf16" and runtime in TORCH_RUNTIMES and not cpu_has_native_bf16():
        return ("torch bf16 is emulated on this CPU (no AVX512-bf16 or AMX): slower than fp32 at the same "
                "accuracy; not timed by this preset (profile.skip_emulated)")
    return None


def torch_support(kind: str, precision: str, device: str) -> str | None:
    """None when torch eager can build (kind, precision, device), else the reason it cannot."""
    if precision == "int8":
        if kind in VISION_KINDS:
            return ("torch eager int8 is infeasible for CNNs: dynamic quantization leaves Conv2d in fp32 and "
                    "eager static quantization needs a model rewrite; use runtime onnxruntime (static QDQ int8)")
        if device == "cuda":
            return "torch dynamic int8 (quantize_dynamic) has CPU kernels only; no CUDA int8 path here"
    if precision == "fp16" and device == "cpu":
        if kind in VISION_KINDS:
            return CNN_FP16_CPU_REASON
        return None  # runs (slowly); recorded, not hidden
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return (f"bf16 needs a GPU with native bf16 (compute capability >= 8.0); "
                f"{torch.cuda.get_device_name(0)} would only emulate it")
    return None


def compile_support(kind: str, precision: str, device: str) -> str | None:
    """None when ``torch.compile`` of the eager variant is offered, else why not."""
    if precision == "int8":
        return ("torch.compile is not offered at int8: the torch int8 path here is the deprecated eager "
                "quantize_dynamic (torchao's compile-based int8 is not installed); int8 is served by onnxruntime")
    if precision == "fp16" and device == "cpu":
        return ("torch.compile is not offered at fp16 on CPU: this CPU has no fp16 arithmetic, eager fp16 "
                "is already slower than fp32 (runtime torch profiles it), and compiling cannot add it")
    return torch_support(kind, precision, device)


def compile_module(module: nn.Module) -> nn.Module:
    """``torch.compile`` with inductor defaults; compilation happens lazily on the first call of a shape."""
    return torch.compile(module, dynamic=None, fullgraph=False)


@dataclass(frozen=True)
class TorchVariant:
    module: nn.Module
    input_dtype: torch.dtype | None  # cast floating inputs to this
    autocast_dtype: torch.dtype | None  # run the forward under torch.autocast with this dtype
    channels_last: bool


def int8_linear_names(module: nn.Module, keep_fp32: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(names of the ``nn.Linear`` layers int8 quantizes, names of those kept fp32 by the glob patterns
    ``keep_fp32``); a pattern that matches no Linear layer is a ValueError (a typo would silently keep
    the lossy layer in int8)."""
    names = [name for name, m in module.named_modules() if type(m) is nn.Linear]
    kept = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in keep_fp32)]
    unused = [p for p in keep_fp32 if not any(fnmatch.fnmatchcase(name, p) for name in names)]
    if unused:
        raise ValueError(f"int8_keep_fp32 pattern(s) {unused} match no nn.Linear layer (e.g. {names[:3]})")
    return [name for name in names if name not in kept], kept


def build_torch_variant(module: nn.Module, kind: str, precision: str, device: str,
                        keep_fp32: Sequence[str] = ()) -> TorchVariant:
    """The eval-mode module and how to feed it, for one precision on one device (``keep_fp32``: int8
    only, glob patterns of Linear layers left in fp32)."""
    reason = torch_support(kind, precision, device)
    if reason:
        raise ValueError(reason)
    module = module.eval()
    channels_last = kind in VISION_KINDS
    if precision == "int8":
        quantized_names, _ = int8_linear_names(module, keep_fp32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            spec = {nn.Linear: qconfig} if not keep_fp32 else {name: qconfig for name in quantized_names}
            quantized = torch.ao.quantization.quantize_dynamic(module, spec, dtype=torch.qint8)
        return TorchVariant(quantized, None, None, False)
    dtype = DTYPES[precision]
    module = module.to(device=device, dtype=dtype)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return TorchVariant(module, dtype, None, channels_last)


def quantized_linear_count(module: nn.Module) -> tuple[int, int]:
    """(# dynamic-quantized Linear modules, # float nn.Linear modules left) - used by tests and reports."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear

    quantized = sum(isinstance(m, DynamicQuantLinear) for m in module.modules())
    floating = sum(type(m) is nn.Linear for m in module.modules())
    return quantized, floating
