"""``planner train``: train/fine-tune a zoo model on its task for a preset (resumable, cached, published).

Without ``--from-scratch`` a matching cached checkpoint or verified published weights file is used as is.
"""

from __future__ import annotations

import argparse
import json
import os

from planner.config import TASKS


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train or fine-tune a model on its task (cached checkpoints)")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model", required=True, help="model name from configs/models.yaml")
    parser.add_argument("--preset", default="quick", help="preset in configs/presets.yaml (quick|full)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    parser.add_argument("--from-scratch", "--force", dest="force", action="store_true",
                        help="train anew even if a matching cached checkpoint or published weights file exists "
                             "(reproduces and republishes results/<preset>/models/weights/)")
    parser.add_argument("--max-run-minutes", type=float, default=None,
                        help="pause after this many minutes with the state saved; run again to resume")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from planner import config
    from planner.models.extras import unavailable_reason
    from planner.models.train import train

    spec = config.models().models.get(args.model)
    if spec is not None and spec.requires_extra is not None:  # skipped with a one-line reason, exit 0
        reason = (unavailable_reason(args.model) if spec.requires_extra in config.preset(args.preset).extras else
                  f"{args.model} is not part of preset {args.preset!r}: it needs the optional extra "
                  f"{spec.requires_extra!r}, which the preset's `extras` (configs/presets.yaml) do not list")
        if reason:
            print(json.dumps({"status": "skipped", "reason": reason}))
            return 0
    torch.set_num_threads(max(1, args.threads))
    max_run_s = None if args.max_run_minutes is None else 60.0 * args.max_run_minutes
    result = train(args.task, args.model, args.preset, force=args.force, max_run_s=max_run_s)
    side = result.sidecar
    if not result.finished:
        print(json.dumps({"status": "paused", "steps": side["steps"], "train_seconds": side["train_seconds"],
                          "epochs": round(side["epochs"], 3),
                          **{k: side[k] for k in ("waiting_for_teacher",) if k in side}}))
        return 3
    status = "reused" if result.reused else "trained"
    print(json.dumps({"status": status, "weights": str(result.weights), "train_seconds": side["train_seconds"],
                      "epochs": round(side["epochs"], 3), "eval_split": side["eval_split"],
                      "eval_n": side["eval_n"], "eval_accuracy": side["eval_accuracy"]}))
    return 0
