"""ONNX export (verified against torch fp32) and ONNX Runtime int8 quantization, cached per checkpoint.

* Export: ``torch.onnx.export`` (TorchScript exporter, opset 17) with a dynamic batch axis (and a
  dynamic sequence axis for text). Every export is checked against the torch fp32 module on real
  evaluation inputs at several batch sizes: relative L2 of the logits must be <= ``MAX_REL_L2``.
* CNN int8: static QDQ quantization (``quantize_static``): per-channel int8 weights, uint8
  activations, calibrated on a seeded random sample of real *training-split* images. The graph then
  holds ``DequantizeLinear -> Conv`` pairs with int8 weight initializers, which ORT fuses into
  int8 convolution kernels.
* Transformer int8: ``quantize_dynamic`` (int8 weights for MatMul/Gemm, activations quantized at run
  time).
Files live in ``<checkpoint dir>/onnx/`` with a JSON note of the source weights' sha256, so a retrained
checkpoint gets a fresh export.

Execution providers (:func:`session`): on cpu the CPU provider; on cuda runtime ``onnxruntime`` is the
CUDA provider and runtime ``onnxruntime_trt`` the TensorRT provider (fp16 through ``trt_fp16_enable`` on
the fp32 graph, int8 from the static QDQ graph). A GPU provider is used only where
``onnxruntime.get_available_providers()`` lists it (:func:`provider_reason`), and a session whose
provider did not load (ORT then silently runs everything on the CPU) is refused, so CPU timings are
never labelled cuda. The CPU-only ``onnxruntime`` wheel lists neither GPU provider.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from planner.data import sha256_file
from planner.models.base import UnsupportedVariantError

MAX_REL_L2 = 1e-4
# file-name mark of an int8 model with 7-bit weights (for CPUs without VNNI)
REDUCED_RANGE_TAG = ".rr7"
OPSET = 17
VERIFY_BATCHES = (1, 7, 16)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)) / max(np.linalg.norm(b), 1e-12))


def source_key(weights: Path | None, fallback: str) -> str:
    """Identity of the weights an export was made from (sha256 of the checkpoint file)."""
    return sha256_file(weights) if weights is not None else fallback


def _note_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _cached(path: Path, key: str) -> dict | None:
    note = _note_path(path)
    if path.exists() and note.exists():
        meta = json.loads(note.read_text())
        if meta.get("source_key") == key:
            return meta
    return None


def _write_note(path: Path, meta: dict) -> None:
    _note_path(path).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def input_names(feeds: dict[str, np.ndarray]) -> list[str]:
    return list(feeds)


def export_fp32(module: nn.Module, path: Path, feeds: dict[str, np.ndarray]) -> None:
    """Export ``module`` (fp32, eval) with dynamic batch (and sequence) axes to ``path``."""
    names = input_names(feeds)
    dynamic = {name: ({0: "batch", 1: "sequence"} if feeds[name].ndim == 2 else {0: "batch"}) for name in names}
    dynamic["logits"] = {0: "batch"}
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval().float(), args, str(tmp), dynamo=False, input_names=names,
                          output_names=["logits"], dynamic_axes=dynamic, opset_version=OPSET)
    tmp.replace(path)


# the execution provider each ONNX Runtime runtime uses on a GPU
GPU_PROVIDERS = {"onnxruntime": "CUDAExecutionProvider", "onnxruntime_trt": "TensorrtExecutionProvider"}


def provider_reason(runtime: str) -> str | None:
    """None when this onnxruntime offers ``runtime``'s GPU provider, else why not (names what it lists)."""
    import onnxruntime as ort

    provider = GPU_PROVIDERS[runtime]
    available = ort.get_available_providers()
    if provider in available:
        return None
    build = "onnxruntime-gpu with TensorRT" if runtime == "onnxruntime_trt" else "onnxruntime-gpu"
    return f"onnxruntime {ort.__version__} here has no {provider} (it lists {available}); it needs {build}"


def ort_support(kind: str, runtime: str, precision: str, device: str) -> str | None:
    """None when ONNX Runtime runs (kind, runtime, precision) on ``device`` in this zoo, else why not.

    ``kind`` is the model kind of configs/models.yaml; GPU providers are checked by :func:`provider_reason`.
    """
    if runtime == "onnxruntime_trt":
        if device != "cuda":
            return "runtime onnxruntime_trt is ONNX Runtime's TensorRT provider, which runs on CUDA GPUs only"
        if precision == "bf16":
            return "ONNX Runtime's TensorRT provider has no bf16 switch (it offers fp32, fp16 and QDQ int8)"
        if precision == "int8" and kind != "torchvision_scratch":
            return ("TensorRT runs static QDQ int8 graphs only; the transformers' int8 graph is dynamic "
                    "(DynamicQuantizeLinear), which TensorRT does not implement")
        return None
    if precision in ("bf16", "fp16"):
        if device == "cpu":
            return (f"ONNX Runtime's CPU execution provider has no {precision} kernels for these graphs "
                    f"(a converted model falls back to casts around fp32 ops), so {precision} is not offered on CPU")
        return f"ONNX Runtime {precision} on CUDA is not implemented in this zoo"
    if precision == "int8" and device == "cuda":
        return ("ONNX Runtime's CUDA provider runs the int8 graphs' quantized nodes (QDQ convolutions, "
                "DynamicQuantizeLinear) on CPU kernels; the GPU int8 path is runtime onnxruntime_trt")
    return None


def providers_for(device: str, runtime: str = "onnxruntime", precision: str = "fp32",
                  engine_cache: Path | None = None) -> list:
    """The ``providers`` argument of an ORT session for a variant (CPU provider alone on cpu)."""
    if device != "cuda":
        return ["CPUExecutionProvider"]
    if runtime == "onnxruntime_trt":
        options = {"trt_fp16_enable": precision == "fp16", "trt_int8_enable": precision == "int8"}
        if engine_cache is not None:
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache))
        return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider"]
    return ["CUDAExecutionProvider"]


# ONNX Runtime's session option: intra-op threads spin-wait for work ("1", the default) or sleep ("0")
ORT_SPINNING_KEY = "session.intra_op.allow_spinning"


def session(path: Path, device: str = "cpu", n_threads: int = 2, runtime: str = "onnxruntime",
            precision: str = "fp32", spin: bool = True):
    """An ORT session with ``n_threads`` intra-op threads on ``device``'s provider for ``runtime``.

    ``spin=False`` makes its intra-op threads sleep while they wait for work (:data:`ORT_SPINNING_KEY`)
    instead of spin-waiting, within a call and after it. ORT's default (True) is how the profiles
    were timed, one session at a time: back to back it is the faster. A server that keeps many
    sessions and its HTTP path on a few cores wants False: see
    :func:`planner.serving.replay.load_live_configs`.
    On cuda an unlisted provider, or one that failed to load, raises UnsupportedVariantError.
    """
    import onnxruntime as ort

    if device == "cuda":
        reason = provider_reason(runtime)
        if reason:
            raise UnsupportedVariantError(reason)
    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry(ORT_SPINNING_KEY, "0")
    providers = providers_for(device, runtime, precision, Path(path).parent / "trt_engines")
    sess = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if device == "cuda" and GPU_PROVIDERS[runtime] not in sess.get_providers():
        raise UnsupportedVariantError(
            f"{GPU_PROVIDERS[runtime]} is listed but did not load for {Path(path).name} (the session runs on "
            f"{sess.get_providers()}); refusing to time CPU execution as cuda")
    return sess


def verify(path: Path, module: nn.Module, preprocess: Callable[[Any], dict[str, np.ndarray]],
           inputs: Any, n_threads: int = 2) -> float:
    """Largest relative L2 between ORT and torch fp32 logits over real inputs at several batch sizes."""
    sess = session(path, n_threads=n_threads)
    worst = 0.0
    start = 0
    for b in VERIFY_BATCHES:
        chunk = inputs[start : start + b]
        start += b
        feeds = preprocess(chunk)
        with torch.inference_mode():
            ref = module(*(torch.from_numpy(v) for v in feeds.values())).float().numpy()
        got = sess.run(None, feeds)[0]
        worst = max(worst, rel_l2(got, ref))
    return worst


def ensure_fp32(folder: Path, key: str, module: nn.Module, preprocess: Callable[[Any], dict[str, np.ndarray]],
                inputs: Any, n_threads: int = 2) -> Path:
    """Cached, verified fp32 ONNX export; raises if the export disagrees with torch beyond MAX_REL_L2."""
    path = folder / "onnx" / "model.fp32.onnx"
    if _cached(path, key):
        return path
    module = module.eval().float()
    export_fp32(module, path, preprocess(inputs[:2]))
    err = verify(path, module, preprocess, inputs, n_threads)
    if err > MAX_REL_L2:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX export of {folder.name} disagrees with torch fp32: rel L2 {err:.2e} > {MAX_REL_L2}")
    _write_note(path, {"source_key": key, "opset": OPSET, "verify_rel_l2": err, "verify_batches": list(VERIFY_BATCHES),
                       "torch_version": torch.__version__})
    return path


class _Calibration:
    """ORT CalibrationDataReader over real training-split images, fed in batches."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._iter = iter(feeds)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):  # pragma: no cover - API completeness
        pass


def _range_mark(reduce_range: bool) -> tuple[str, str]:
    """(file-name suffix, cache-key suffix) of an int8 build: a 7-bit one is cached apart from an 8-bit one."""
    return (REDUCED_RANGE_TAG, ":reduce_range") if reduce_range else ("", "")


def ensure_int8_static(fp32_path: Path, key: str, preprocess: Callable[[Any], dict[str, np.ndarray]],
                       calibration_inputs: Any, method: str = "MinMax", per_channel: bool = True,
                       exclude_nodes: list[str] | None = None, n_calibration: int | None = None,
                       reduce_range: bool = False) -> Path:
    """Static QDQ int8 (per-channel s8 weights, u8 activations) calibrated on ``calibration_inputs``
    (an array, or a zero-argument callable returning one, so a cached model never loads the data).
    ``n_calibration`` (the requested sample size) keys the cache; it defaults to ``len(calibration_inputs)``.
    ``reduce_range``: 7-bit weights, for CPUs without VNNI (:func:`planner.models.variants.cpu_has_vnni`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tag = f"int8.static.{method.lower()}{'' if per_channel else '.pertensor'}"
    if exclude_nodes:
        tag += ".excl" + str(len(exclude_nodes))
    path = fp32_path.with_name(f"model.{tag}{_range_mark(reduce_range)[0]}.onnx")
    if n_calibration is None:
        calibration_inputs = calibration_inputs() if callable(calibration_inputs) else calibration_inputs
        n_calibration = len(calibration_inputs)
    full_key = f"{key}:{n_calibration}:{sorted(exclude_nodes or [])}{_range_mark(reduce_range)[1]}"
    if _cached(path, full_key):
        return path
    calibration_inputs = calibration_inputs() if callable(calibration_inputs) else calibration_inputs
    prepped = fp32_path.with_name("model.fp32.prep.onnx")
    quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
    _check_nodes(prepped, exclude_nodes)
    batches = [preprocess(calibration_inputs[s : s + 64]) for s in range(0, len(calibration_inputs), 64)]
    quantize_static(str(prepped), str(path), _Calibration(batches), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method), reduce_range=reduce_range,
                    nodes_to_exclude=list(exclude_nodes or []))
    _write_note(path, {"source_key": full_key, "format": "QDQ", "per_channel": per_channel,
                       "activations": "uint8", "weights": "int8", "reduce_range": reduce_range,
                       "calibration_method": method,
                       "calibration_examples": len(calibration_inputs), "calibration_split": "train",
                       "nodes_excluded": list(exclude_nodes or [])})
    return path


def ensure_int8_dynamic(fp32_path: Path, key: str, per_channel: bool = False,
                        exclude_nodes: list[str] | None = None, reduce_range: bool = False) -> Path:
    """Dynamic int8 (int8 weights; activations quantized at run time) for transformers; ``reduce_range``
    as in :func:`ensure_int8_static`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tag = "int8.dynamic" + (".perchannel" if per_channel else "") + (f".excl{len(exclude_nodes)}" if exclude_nodes else "")
    path = fp32_path.with_name(f"model.{tag}{_range_mark(reduce_range)[0]}.onnx")
    full_key = f"{key}:{sorted(exclude_nodes or [])}{_range_mark(reduce_range)[1]}"
    if _cached(path, full_key):
        return path
    prepped = fp32_path.with_name("model.fp32.prep.onnx")
    quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)  # symbolic inference fails on HF masks
    _check_nodes(prepped, exclude_nodes)
    quantize_dynamic(str(prepped), str(path), weight_type=QuantType.QInt8, per_channel=per_channel,
                     reduce_range=reduce_range, nodes_to_exclude=list(exclude_nodes or []))
    _write_note(path, {"source_key": full_key, "format": "dynamic", "weights": "int8", "per_channel": per_channel,
                       "reduce_range": reduce_range,
                       "nodes_excluded": list(exclude_nodes or [])})
    return path


def _check_nodes(path: Path, names: list[str] | None) -> None:
    """Every node to keep out of quantization exists in the graph about to be quantized (ORT would
    silently ignore an unknown name and quantize the layer)."""
    import onnx

    if not names:
        return
    present = {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}
    missing = [n for n in names if n not in present]
    if missing:
        raise ValueError(f"{path}: nodes to keep in fp32 are not in the graph: {missing[:3]}")


def onnx_scope(module_name: str) -> str:
    """The node-name prefix the TorchScript ONNX exporter gives a module's operators: ``encoder.layer.0.output``
    -> ``/encoder/layer.0/output/`` (a ModuleList index stays joined to its list by a dot)."""
    return "/" + re.sub(r"\.(?!\d)", "/", module_name) + "/"


def matmul_nodes_of(path: Path, module_names: list[str]) -> list[str]:
    """MatMul/Gemm node names of the ONNX graph at ``path`` that belong to the named modules (each must
    own at least one, else a ValueError: the export's naming changed and the exclusion would be lost)."""
    stat = Path(path).stat()
    nodes = _matmul_node_names(str(path), stat.st_mtime_ns, stat.st_size)
    found, missing = [], []
    for name in module_names:
        mine = [n for n in nodes if n.startswith(onnx_scope(name))]
        (found.extend(mine) if mine else missing.append(name))
    if missing:
        raise ValueError(f"{path}: no MatMul/Gemm node under {[onnx_scope(m) for m in missing[:3]]}; "
                         f"node names look like {nodes[:2]}")
    return found


@functools.lru_cache(maxsize=8)
def _matmul_node_names(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    """The graph's MatMul/Gemm node names, parsed once per file version: every int8 load of a model asks
    for them, and parsing a 400 MB fp32 graph each time costs seconds (the file's mtime and size key it)."""
    import onnx

    return tuple(n.name for n in onnx.load(path, load_external_data=False).graph.node
                 if n.op_type in ("MatMul", "Gemm"))


def quantized_conv_report(path: Path) -> dict[str, int]:
    """Count Conv nodes and how many take an int8 weight through DequantizeLinear (or are QLinearConv)."""
    import onnx

    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type in ("Conv", "QLinearConv")]
    quantized = 0
    for node in convs:
        if node.op_type == "QLinearConv":
            quantized += 1
            continue
        weight_src = producers.get(node.input[1])
        if weight_src is not None and weight_src.op_type == "DequantizeLinear":
            init = inits.get(weight_src.input[0])
            if init is not None and init.data_type == onnx.TensorProto.INT8:
                quantized += 1
    return {"conv_nodes": len(convs), "int8_weight_convs": quantized}
