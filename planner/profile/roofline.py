"""This machine's measured matmul peaks and each configuration's share of them (% of roofline).

Peaks are sustained rates of large matrix products, measured in the same sweep as the profiles:
``torch.matmul`` for fp32, bf16 and fp16, and for int8 the better of ``torch._int_mm`` and an ONNX
Runtime ``MatMulInteger`` session (the kernels the int8 variants actually use), plus
``torch.nn.functional.linear`` per float precision (the path nn.Linear takes; on this CPU its fp16
kernel is several times faster than ``torch.matmul``'s). Each precision's peak is its best kernel.
The matrix size grows until one product takes a measurable time, then products are timed for
``seconds`` after a warm-up; short runs under-read the bf16 peak, so the preset keeps this several
seconds long, and the sweep measures at its start and its end and keeps the best reading.
``pct_roofline = flops_per_item x throughput / peak(precision) x 100``.

Bytes moved are not measured (no hardware counters here), so the roofline's arithmetic intensity is
an estimate (:func:`bytes_per_item`, from the sizes :func:`planner.models.flops.model_footprint`
counts and the sweep records in ``model_sizes.csv``): every weight read once per batch at the
variant's precision, and every leaf module's output written once and read once per item. Embedding tables are
not counted as weights (a batch reads only the rows it looks up, which the embedding's output
counts). Activations are kept at fp32 for int8 variants (dynamic quantisation quantises them on the
fly and returns fp32) and at the compute type otherwise. Attention's functional products are not
leaf modules, so activation traffic is a lower bound and the intensity an upper estimate.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd

PEAK_COLUMNS = {"device": "str", "precision": "str", "kernel": "str", "n": "int", "reps": "int",
                "seconds": "float", "flops_per_s": "float", "phase": "str"}


def _rate(fn: Callable[[], object], flops: float, seconds: float, sync: Callable[[], None]) -> tuple[int, float, float]:
    """(reps, elapsed, FLOP/s) of ``fn`` run back to back for at least ``seconds`` (min 3 reps)."""
    fn(); fn(); sync()  # warm-up: kernel selection, JIT, caches
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < seconds:
        fn()
        reps += 1
        if reps % 4 == 0:
            sync()
    sync()
    elapsed = time.perf_counter() - start
    return reps, elapsed, flops * reps / elapsed


def _size_for(make: Callable[[int], Callable[[], object]], seconds: float, sync: Callable[[], None],
              sizes: tuple[int, ...]) -> int:
    """Largest size whose single product takes at most seconds/10 (slow dtypes stay small)."""
    chosen = sizes[0]
    for n in sizes:
        fn = make(n)
        fn(); sync()
        t0 = time.perf_counter()
        fn(); sync()
        if time.perf_counter() - t0 > seconds / 10:
            break
        chosen = n
    return chosen


def _ort_int8(n: int, threads: int) -> Callable[[], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    b = rng.integers(-128, 127, (n, n), dtype=np.int8)
    return lambda: session.run(None, {"A": a, "B": b})


def measure_peaks(device: str = "cpu", seconds: float = 3.0,
                  sizes: tuple[int, ...] = (256, 512, 1024, 2048, 4096)) -> pd.DataFrame:
    """One row per (precision, kernel) with the sustained FLOP/s (int8: OP/s) on ``device``."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    rows = []

    def matmul(dtype: torch.dtype) -> Callable[[int], Callable[[], object]]:
        def make(n: int) -> Callable[[], object]:
            a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
            b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
            return lambda: torch.matmul(a, b)
        return make

    def linear(dtype: torch.dtype) -> Callable[[int], Callable[[], object]]:
        # nn.Linear's path (addmm with bias): on CPU its fp16 kernel is far faster than torch.matmul's
        def make(n: int) -> Callable[[], object]:
            a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
            w = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
            b = torch.randn(n, generator=gen).to(device=device, dtype=dtype)
            return lambda: torch.nn.functional.linear(a, w, b)
        return make

    def int_mm(n: int) -> Callable[[], object]:
        a = torch.randint(-128, 127, (n, n), generator=gen, dtype=torch.int8).to(device)
        b = torch.randint(-128, 127, (n, n), generator=gen, dtype=torch.int8).to(device)
        return lambda: torch._int_mm(a, b)

    kernels: list[tuple[str, str, Callable[[int], Callable[[], object]]]] = [
        ("fp32", "torch.matmul", matmul(torch.float32)), ("bf16", "torch.matmul", matmul(torch.bfloat16)),
        ("fp16", "torch.matmul", matmul(torch.float16)), ("int8", "torch._int_mm", int_mm),
        *((p, "torch.nn.functional.linear", linear(dt)) for p, dt in
          (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)))]
    if device == "cpu":
        threads = torch.get_num_threads()
        kernels.append(("int8", "onnxruntime.MatMulInteger", lambda n: _ort_int8(n, threads)))
    with torch.inference_mode():
        for precision, kernel, make in kernels:
            try:
                n = _size_for(make, seconds, sync, sizes)
                reps, elapsed, rate = _rate(make(n), 2.0 * n ** 3, seconds, sync)
            except (RuntimeError, NotImplementedError) as exc:  # kernel absent on this build/device
                print(f"roofline: {precision} via {kernel} unavailable on {device}: {exc}")
                continue
            rows.append({"device": device, "precision": precision, "kernel": kernel, "n": n, "reps": reps,
                         "seconds": elapsed, "flops_per_s": rate, "phase": "measured"})
    return pd.DataFrame(rows, columns=list(PEAK_COLUMNS))


def peak_by_precision(peaks: pd.DataFrame) -> dict[str, float]:
    """The best kernel's rate per precision."""
    return {str(k): float(v) for k, v in peaks.groupby("precision")["flops_per_s"].max().items()}


def pct_roofline(flops_per_item: float | np.ndarray, throughput_items_s: float | np.ndarray,
                 peak_flops_per_s: float | np.ndarray) -> float | np.ndarray:
    """Achieved FLOP/s as a percentage of the peak (NaN when FLOPs or the peak are unknown)."""
    return np.asarray(flops_per_item, dtype=float) * np.asarray(throughput_items_s, dtype=float) \
        / np.asarray(peak_flops_per_s, dtype=float) * 100.0


# Bytes of one weight / one activation element per precision (see the module docstring).
WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 4}


def bytes_per_item(weight_elements: float | np.ndarray, activation_elements_per_item: float | np.ndarray,
                   batch_size: float | np.ndarray, precision: str | pd.Series) -> np.ndarray:
    """Estimated bytes moved per example: the weights once per batch, shared by its examples, plus
    each activation written and read once."""
    precision = pd.Series(precision if isinstance(precision, pd.Series) else [precision])
    unknown = sorted(set(precision) - set(WEIGHT_BYTES))
    if unknown:
        raise ValueError(f"bytes_per_item: unknown precision(s) {unknown}; known {sorted(WEIGHT_BYTES)}")
    wb = precision.map(WEIGHT_BYTES).to_numpy(dtype=float)
    ab = precision.map(ACTIVATION_BYTES).to_numpy(dtype=float)
    batch = np.asarray(batch_size, dtype=float)
    if np.any(batch < 1):
        raise ValueError(f"bytes_per_item: batch sizes must be >= 1, got {batch_size!r}")
    return np.asarray(weight_elements, dtype=float) * wb / batch \
        + 2.0 * np.asarray(activation_elements_per_item, dtype=float) * ab


def arithmetic_intensity(flops_per_item: float | np.ndarray, bytes_moved_per_item: float | np.ndarray) -> np.ndarray:
    """FLOPs per byte moved (the roofline's x axis)."""
    return np.asarray(flops_per_item, dtype=float) / np.asarray(bytes_moved_per_item, dtype=float)


def item_flops(rows: pd.DataFrame, model_sizes: pd.DataFrame | None) -> np.ndarray:
    """FLOPs per example of each profile row from the per-model FLOPs recorded in ``model_sizes``
    (``model_sizes.csv``): a single model's own; a cascade's small + (1 - coverage) x large (the large
    model runs only on escalated items). NaN where a model has no record. One rule for the sweep's
    merged profiles and for the roofline's check of them."""
    sizes = model_sizes if model_sizes is not None else pd.DataFrame(columns=["task", "model", "flops_per_item"])
    recorded = {(t, m): f for t, m, f in sizes[["task", "model", "flops_per_item"]].itertuples(index=False)}
    nan = float("nan")

    def one(row) -> float:
        if pd.isna(row.cascade_small):
            return recorded.get((row.task, row.model), nan)
        return recorded.get((row.task, row.cascade_small), nan) \
            + (1.0 - row.coverage) * recorded.get((row.task, row.cascade_large), nan)

    return np.array([one(r) for r in rows.itertuples(index=False)], dtype=float)


def confirmed_rows(profiles: pd.DataFrame, model_sizes: pd.DataFrame | None) -> tuple[pd.DataFrame, list[str]]:
    """(rows, left out): the profile rows with a roofline estimate whose FLOPs agree (1 %) with
    :func:`item_flops` of the sizes the profile folder records, and the models of the others (a
    cascade built on a left-out model goes unnamed with it). Why: a model whose architecture changed
    after it was profiled carries stale FLOPs, hence a wrong share of the roofline; it is left out."""
    rows = profiles[profiles["pct_roofline"].notna() & profiles["flops_per_item"].notna()]
    ok = np.isclose(item_flops(rows, model_sizes), rows["flops_per_item"].to_numpy(dtype=float), rtol=0.01)
    single = rows["cascade_small"].isna().to_numpy()
    stale = set(rows.loc[~ok & single, "model"])
    # a cascade is named only when neither of its members explains it (their rows are named instead)
    odd = {r.model for r in rows[~ok & ~single].itertuples(index=False)
           if not {r.cascade_small, r.cascade_large} & stale}
    return rows[ok].reset_index(drop=True), sorted(stale | odd)


def roofline_points(rows: pd.DataFrame, model_sizes: pd.DataFrame | None) -> pd.DataFrame:
    """The single-model ``rows`` (from :func:`confirmed_rows`) with their estimated ``bytes_per_item``,
    ``arithmetic_intensity`` and ``achieved_gflops``, from the sizes the sweep recorded per model
    (none recorded: no points)."""
    single = rows[rows["cascade_small"].isna()]
    columns = ["task", "model", "weight_elements", "activation_elements_per_item"]
    sizes = (model_sizes if model_sizes is not None else pd.DataFrame(columns=columns))[columns].dropna()
    points = single.merge(sizes, on=["task", "model"], how="inner", validate="many_to_one")
    points["bytes_per_item"] = bytes_per_item(points["weight_elements"], points["activation_elements_per_item"],
                                              points["batch_size"], points["precision"])
    points["arithmetic_intensity"] = arithmetic_intensity(points["flops_per_item"], points["bytes_per_item"])
    points["achieved_gflops"] = points["flops_per_item"] * points["throughput_items_s"] / 1e9
    return points
