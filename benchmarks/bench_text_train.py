"""Training throughput of the text models, side by side (sizing their fine-tuning recipes).

Each model is built exactly as ``planner train`` builds it (``planner.models.train._build``: its
pretrained encoder, its own tokenizer, AdamW) and trained on real SST-2 batches (batch size and
max_length from configs/models.yaml, bf16 autocast as the recipe says). Steps are timed in
interleaved rounds (one step of each model per round), so drift of a shared machine's speed hits all
models alike: on a busy machine read the ratios, not the absolute speeds.

    OMP_WAIT_POLICY=PASSIVE nice -n 15 .venv/bin/python benchmarks/bench_text_train.py --models minilm-l6 mpnet-l6 mpnet-l12
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from planner.models.train import _build, recipe, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-l6", "mpnet-l6", "mpnet-l12"])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (one step of each model per round)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--subset", type=int, default=2048, help="training sentences tokenised per model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    runs = {}
    for name in args.models:
        rec = dict(recipe(name, args.preset), train_subset=args.subset)
        torch.manual_seed(0)
        model, adapter, optimizer, _ = _build(rec)
        order = np.random.default_rng(0).permutation(adapter.n_train)
        runs[name] = (model.train(), adapter, optimizer, bool(rec["params"].get("autocast_bf16", False)), order)
    loss_fn = nn.CrossEntropyLoss()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.warmup + args.rounds):
        for name, (model, adapter, optimizer, autocast, order) in runs.items():
            bs = adapter.batch_size
            inputs, labels = adapter.batch(order[step * bs: (step + 1) * bs], torch.Generator().manual_seed(step))
            t0 = time.perf_counter()
            train_step(model, adapter, optimizer, loss_fn, inputs, labels, autocast)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    base = args.models[0]
    rows = []
    for name, (_, adapter, _, autocast, _) in runs.items():
        per_step = statistics.median(times[name])
        rows.append({"model": name, "params_m": sum(p.numel() for p in runs[name][0].parameters()) / 1e6,
                     "batch_size": adapter.batch_size, "bf16": autocast, "median_step_s": per_step,
                     "examples_per_s": adapter.batch_size / per_step,
                     f"step_time_vs_{base}": per_step / statistics.median(times[base])})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
