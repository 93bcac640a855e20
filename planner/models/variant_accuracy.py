"""Accuracy of every buildable variant against its fp32 reference, on the evaluation set.

Also builds (and so caches) every ONNX export and quantized model, so the profilers never pay for an
export. For a CNN whose ORT int8 model loses more than ``MAX_INT8_DROP`` accuracy, the documented
remedies are tried in turn - other calibration methods (Entropy, Percentile) and excluding the first
convolution and the classifier from quantization - and every attempt is reported.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from planner.models import onnx_export as ox
from planner.models import zoo
from planner.models.base import ModelUnavailableError, VariantSpec
from planner.models.predictors import OrtPredictor

MAX_INT8_DROP = 0.01
RUNTIME_PRECISIONS = (("torch", "fp32"), ("torch", "bf16"), ("torch", "int8"), ("onnxruntime", "fp32"),
                      ("onnxruntime", "int8"), ("torch", "fp16"))


def _accuracy(predictor, inputs, labels, batch_size: int) -> tuple[float, float]:
    start = time.perf_counter()
    probs = predictor.predict(inputs, batch_size)
    return float((probs.argmax(1) == labels).mean()), time.perf_counter() - start


def variant_accuracy(task: str, model: str, preset: str, n_eval: int | None = None,
                     precisions: tuple[str, ...] = ("fp32", "bf16", "int8"), batch_size: int = 64,
                     n_threads: int = 2) -> pd.DataFrame:
    """One row per (runtime, precision): accuracy, delta vs torch fp32, feasibility reason."""
    inputs, labels = zoo.eval_inputs(task, n_eval)
    rows = []
    reference = None
    for runtime, precision in RUNTIME_PRECISIONS:
        if precision not in precisions:
            continue
        spec = VariantSpec(task, model, runtime, precision, "cpu")
        reason = zoo.variant_support(spec)
        row = {"task": task, "model": model, "runtime": runtime, "precision": precision, "n_eval": len(labels),
               "batch_size": batch_size}
        if reason:
            rows.append({**row, "status": "infeasible", "reason": reason})
            continue
        predictor = zoo.load_predictor(spec, preset, n_threads=n_threads)
        acc, seconds = _accuracy(predictor, inputs, labels, batch_size)
        if not predictor.accuracy_available:
            rows.append({**row, "status": "accuracy_unavailable", "reason": "no fine-tuned checkpoint; latency only",
                         "eval_seconds": seconds})
            continue
        if reference is None and (runtime, precision) == ("torch", "fp32"):
            reference = acc
        extra = {}
        if runtime == "onnxruntime":
            note = ox.Path(predictor.model_path).with_suffix(".json")
            extra["onnx_file"] = ox.Path(predictor.model_path).name
            if precision == "fp32" and note.exists():
                extra["verify_rel_l2"] = json.loads(note.read_text()).get("verify_rel_l2")
        rows.append({**row, "status": "measured", "accuracy": acc, "eval_seconds": seconds, **extra})
    frame = pd.DataFrame(rows)
    if reference is not None and "accuracy" in frame:
        frame["delta_vs_torch_fp32"] = frame["accuracy"] - reference
    return frame


def int8_remedies(task: str, model: str, preset: str, n_eval: int | None = None, batch_size: int = 64,
                  n_threads: int = 2) -> pd.DataFrame:
    """Try the documented remedies for a lossy ORT int8 model; one row per attempt."""
    import onnx

    inputs, labels = zoo.eval_inputs(task, n_eval)
    base = zoo.base_model(task, model, preset)
    fp32_path = zoo.onnx_path(VariantSpec(task, model, "onnxruntime", "fp32"), preset, n_threads, base)
    fp32_acc, _ = _accuracy(zoo.load_predictor(VariantSpec(task, model, "onnxruntime", "fp32"), preset, n_threads),
                            inputs, labels, batch_size)
    if base.kind != "torchvision_scratch":
        return _dynamic_remedies(task, model, base, fp32_path, fp32_acc, inputs, labels, batch_size, n_threads)
    n_calib = int(base.params.get("calibration_examples", zoo.DEFAULT_CALIBRATION))
    calib, _ = zoo.train_inputs(task, n_calib)
    nodes = [n for n in onnx.load(str(fp32_path.with_name("model.fp32.prep.onnx"))).graph.node]
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    heads = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    attempts = [
        ("MinMax per-channel (default)", dict(method="MinMax", per_channel=True)),
        ("MinMax per-tensor", dict(method="MinMax", per_channel=False)),
        ("Entropy per-channel", dict(method="Entropy", per_channel=True)),
        ("Percentile per-channel", dict(method="Percentile", per_channel=True)),
        ("MinMax per-channel, first conv + classifier kept fp32",
         dict(method="MinMax", per_channel=True, exclude_nodes=convs[:1] + heads)),
    ]
    rows = []
    for label, kwargs in attempts:
        start = time.perf_counter()
        path = ox.ensure_int8_static(fp32_path, base.source_key, base.preprocess, calib, n_calibration=n_calib, **kwargs)
        rows.append({**_attempt(task, model, label, path, base, fp32_acc, inputs, labels, batch_size, n_threads, start),
                     "calibration_examples": len(calib), **ox.quantized_conv_report(path)})
    return pd.DataFrame(rows)


def zoo_accuracy(preset: str, models: list[tuple[str, str]], n_eval: int | None, precisions: tuple[str, ...],
                 n_threads: int = 2, remedies: bool = True, batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Variant accuracy table for ``models`` (accuracy passes at ``batch_size``) and, for an ORT int8
    variant losing more than MAX_INT8_DROP, the remedy attempts at the same batch size."""
    tables, remedy_tables = [], []
    for task, model in models:
        try:
            table = variant_accuracy(task, model, preset, n_eval, precisions, batch_size=batch_size, n_threads=n_threads)
        except ModelUnavailableError as exc:
            table = pd.DataFrame([{"task": task, "model": model, "status": "unavailable", "reason": str(exc)}])
        tables.append(table)
        ort_int8 = table[(table.get("runtime") == "onnxruntime") & (table.get("precision") == "int8")] \
            if "runtime" in table else table.iloc[0:0]
        lossy = (not ort_int8.empty and "delta_vs_torch_fp32" in ort_int8
                 and float(ort_int8["delta_vs_torch_fp32"].iloc[0]) < -MAX_INT8_DROP)
        if remedies and lossy:
            remedy_tables.append(int8_remedies(task, model, preset, n_eval, batch_size=batch_size, n_threads=n_threads))
    return pd.concat(tables, ignore_index=True), (pd.concat(remedy_tables, ignore_index=True)
                                                  if remedy_tables else pd.DataFrame())



def _attempt(task, model, label, path, base, fp32_acc, inputs, labels, batch_size, n_threads, start) -> dict:
    """One remedy row: the quantized file's accuracy on the evaluation set against the fp32 export."""
    predictor = OrtPredictor(VariantSpec(task, model, "onnxruntime", "int8"), ox.session(path, "cpu", n_threads),
                             base.preprocess, n_threads=n_threads, model_path=str(path))
    acc, _ = _accuracy(predictor, inputs, labels, batch_size)
    return {"task": task, "model": model, "attempt": label, "onnx_file": path.name, "accuracy": acc,
            "fp32_onnx_accuracy": fp32_acc, "delta_vs_fp32": acc - fp32_acc, "n_eval": len(labels),
            "batch_size": batch_size, "seconds": time.perf_counter() - start}


def _dynamic_remedies(task, model, base, fp32_path, fp32_acc, inputs, labels, batch_size, n_threads) -> pd.DataFrame:
    """Transformer dynamic int8: per-tensor (default), per-channel, and per-channel with the head kept fp32."""
    import onnx

    ox.ensure_int8_dynamic(fp32_path, base.source_key)  # makes the prep file
    nodes = onnx.load(str(fp32_path.with_name("model.fp32.prep.onnx"))).graph.node
    matmuls = [n.name for n in nodes if n.op_type in ("MatMul", "Gemm")]
    attempts = [
        ("dynamic per-tensor (default)", dict(per_channel=False)),
        ("dynamic per-channel", dict(per_channel=True)),
        ("dynamic per-channel, classifier kept fp32", dict(per_channel=True, exclude_nodes=matmuls[-1:])),
    ]
    rows = []
    for label, kwargs in attempts:
        start = time.perf_counter()
        path = ox.ensure_int8_dynamic(fp32_path, base.source_key, **kwargs)
        rows.append(_attempt(task, model, label, path, base, fp32_acc, inputs, labels, batch_size, n_threads, start))
    return pd.DataFrame(rows)
