"""Task data in the form the models consume: raw sentences / uint8 images plus int64 labels."""

from __future__ import annotations

import numpy as np

from planner import data
from planner.config import validate_task

EVAL_SPLIT = {"sst2": "validation", "cifar10": "test"}
SUBSET_SEED = 0


def split_inputs(task: str, split: str, n: int | None = None) -> tuple[list[str] | np.ndarray, np.ndarray]:
    """``(inputs, labels)`` of a split; a fixed seeded random subset of ``n`` examples when ``n`` is given."""
    validate_task(task)
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1 or None, got {n}")
    if task == "sst2":
        frame = data.load_sst2(split)
        inputs, labels = frame["sentence"].astype(str).tolist(), frame["label"].to_numpy(np.int64)
    else:
        inputs, labels, _ = data.load_cifar10(split)
    if n is not None and n < len(labels):
        # A seeded random subset (kept in file order): the CIFAR-10 files are sorted by class, so a
        # prefix would hold a single class.
        keep = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(labels), size=n, replace=False))
        inputs = [inputs[i] for i in keep] if isinstance(inputs, list) else inputs[keep]
        labels = labels[keep]
    return inputs, labels


def eval_inputs(task: str, n: int | None = None) -> tuple[list[str] | np.ndarray, np.ndarray]:
    """Evaluation set: SST-2 dev sentences (list) or CIFAR-10 test images (uint8 N×32×32×3)."""
    return split_inputs(task, EVAL_SPLIT[validate_task(task)], n)


def train_inputs(task: str, n: int | None = None) -> tuple[list[str] | np.ndarray, np.ndarray]:
    """Training split (also the calibration source for static quantization)."""
    return split_inputs(task, "train", n)
