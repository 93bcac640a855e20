"""``planner export``: build and cache every ONNX export / quantized variant and measure variant accuracy.

Writes ``results/<preset>/models/variant_accuracy.csv`` (accuracy of each runtime x precision and its
delta vs torch fp32 on the evaluation set), ``int8_remedies.csv`` (attempts for lossy CNN int8) and
``checkpoints.csv`` (training time and accuracy of each checkpoint, from the sidecars) and
``training_curves.csv`` (loss and evaluation accuracy after every epoch, from the sidecars).
"""

from __future__ import annotations

import argparse
import os

from planner.config import TASKS


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="cache ONNX/int8 variants and measure their accuracy vs fp32")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--task", choices=TASKS, help="only this task (default: both)")
    parser.add_argument("--models", nargs="+", help="only these models")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"],
                        help="precisions to evaluate (fp16 runs but is slow on CPU)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-remedies", action="store_true", help="skip the int8 remedy attempts")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size of the accuracy passes (default: the preset's smallest profiled batch; "
                             "dynamic int8 scales depend on the batch, and profiles.csv holds every batch size)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from planner import config
    from planner.models import checkpoints as ckpt
    from planner.models import zoo
    from planner.models.variant_accuracy import zoo_accuracy
    from planner.paths import results_dir

    torch.set_num_threads(max(1, args.threads))
    tasks = [args.task] if args.task else list(TASKS)
    models = [(t, m) for t in tasks for m in zoo.task_models(t, args.preset) if not args.models or m in args.models]
    n_eval = config.preset(args.preset).profile.eval_subset
    batch_size = args.batch_size or min(config.preset(args.preset).profile.batch_sizes)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    table, remedies = zoo_accuracy(args.preset, models, n_eval, tuple(args.precisions), args.threads,
                                   remedies=not args.no_remedies, batch_size=batch_size)
    out = results_dir(args.preset) / "models"
    out.mkdir(parents=True, exist_ok=True)
    table = _merge(out / "variant_accuracy.csv", table, models)
    table.to_csv(out / "variant_accuracy.csv", index=False)
    print(table.drop(columns=[c for c in ("reason",) if c in table]).to_string(index=False))
    if not remedies.empty:
        remedies = _merge(out / "int8_remedies.csv", remedies, models)
        remedies.to_csv(out / "int8_remedies.csv", index=False)
        print(remedies.to_string(index=False))
    sidecars, curves = [], []
    for task, model in [(t, m) for t in TASKS for m in zoo.task_models(t, args.preset)]:  # every trained model, always
        side = ckpt.read_sidecar(args.preset, model)
        if side:
            curves += [{"task": task, "model": model, **row} for row in side.get("epoch_losses", [])]
            sidecars.append({k: side.get(k) for k in ("task", "model", "preset", "train_seconds", "steps", "epochs",
                                                      "eval_split", "eval_n", "eval_accuracy", "seed",
                                                      "torch_threads", "autocast_bf16", "finished_at")})
    if sidecars:
        pd.DataFrame(sidecars).to_csv(out / "checkpoints.csv", index=False)
    if curves:
        pd.DataFrame(curves).to_csv(out / "training_curves.csv", index=False)
    print(f"wrote {out}")
    return 0


def _merge(path, fresh, models):
    """Replace the rows of the (task, model) pairs just measured; keep other models' earlier rows."""
    import pandas as pd

    if not path.exists():
        return fresh
    old = pd.read_csv(path)
    measured = {f"{t}/{m}" for t, m in models}
    keep = old[~(old["task"].astype(str) + "/" + old["model"].astype(str)).isin(measured)]
    return pd.concat([keep, fresh], ignore_index=True)
