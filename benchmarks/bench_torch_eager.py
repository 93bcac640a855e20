"""Is torch-eager MobileNetV2 at batch 1 really ~30x slower than ONNX Runtime here? (issue 17, item 8)

The committed full profile reads ~18 ms (p50) for ``cifar10/mobilenet_v2/torch/fp32/b1`` against
~0.4 ms for ONNX Runtime, and that gap drives the "PyTorch only" ablation. This script re-times the
same predictor the profiler uses (:func:`planner.models.zoo.load_predictor`, ``inference_mode``,
channels_last weights and inputs, warm-up) side by side with variants of its setup, in interleaved
blocks of one run, so the ratios are comparable even on a shared machine:

- the profiler's predictor at 2 threads and at 1 thread;
- a plain ``torchvision`` MobileNetV2 (same CIFAR stem) in contiguous (NCHW) memory, at 2 threads;
- ONNX Runtime fp32 at 2 threads (the reference);
- ResNet18 torch and ONNX Runtime, for scale.

Timing only: the predictors' weights do not matter for latency, so the preset whose checkpoints are
present is used (``--preset``). Writes ``results/<out-preset>/benchmarks/torch_eager_check.csv``
with ``--out``.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_torch_eager.py --preset full --out
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from planner.models.base import VariantSpec
from planner.models.zoo import load_predictor
from planner.paths import cpu_model, results_dir


def _block(fn: Callable[[], object], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="full", help="whose checkpoints to load (latency does not depend on weights)")
    parser.add_argument("--blocks", type=int, default=20, help="interleaved blocks per variant")
    parser.add_argument("--calls", type=int, default=25, help="timed calls per block")
    parser.add_argument("--out", nargs="?", const="full", default=None, metavar="PRESET",
                        help="write results/<PRESET>/benchmarks/torch_eager_check.csv (default preset: full)")
    args = parser.parse_args()

    image = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    loaded = {}
    for model in ("mobilenet_v2", "resnet18"):
        for runtime in ("torch", "onnxruntime"):
            loaded[(model, runtime, 2)] = load_predictor(VariantSpec("cifar10", model, runtime, "fp32", "cpu"),
                                                         preset=args.preset, n_threads=2)
    torch_mbv2 = loaded[("mobilenet_v2", "torch", 2)]
    variants: dict[str, tuple[Callable[[], object], int]] = {
        f"{m} {r} (profiler setup)": ((lambda p=p: p.predict(image, 1)), 2) for (m, r, _), p in loaded.items()}
    variants["mobilenet_v2 torch (profiler setup, 1 thread)"] = ((lambda: torch_mbv2.predict(image, 1)), 1)

    x = torch.from_numpy(image).permute(0, 3, 1, 2).float().contiguous()

    @torch.inference_mode()
    def plain() -> object:
        return torch_mbv2.module(x)

    samples: dict[str, list[float]] = {name: [] for name in variants}
    samples["mobilenet_v2 torch (contiguous NCHW, no preprocessing)"] = []
    for name, (fn, threads) in variants.items():  # warm-up
        torch.set_num_threads(threads)
        _block(fn, 10)
    for _ in range(args.blocks):
        for name, (fn, threads) in variants.items():
            torch.set_num_threads(threads)
            samples[name] += _block(fn, args.calls)
    torch_mbv2.module.to(memory_format=torch.contiguous_format)  # in place: timed after the others
    torch.set_num_threads(2)
    _block(plain, 10)
    for _ in range(args.blocks):
        samples["mobilenet_v2 torch (contiguous NCHW, no preprocessing)"] += _block(plain, args.calls)

    reference = statistics.median(samples["mobilenet_v2 onnxruntime (profiler setup)"])
    rows = [{"variant": name, "median_ms": statistics.median(v), "p95_ms": float(np.percentile(v, 95)),
             "n": len(v), "ratio_to_mobilenet_ort": statistics.median(v) / reference, "cpu_model": cpu_model(),
             "checkpoints": args.preset} for name, v in samples.items()]
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    if args.out:
        path = results_dir(args.out) / "benchmarks" / "torch_eager_check.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
