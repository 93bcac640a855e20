"""Knowledge distillation for the text models: a trained teacher's logits as soft targets.

Why: the small encoders fine-tuned on SST-2's labels alone plateau below what a larger encoder
reaches (issue #14); DistilBERT, TinyBERT and MiniLM close much of that gap by matching a teacher's
softened output distribution as well as the labels (Hinton et al., 2015). The teacher's logits over
the training set are computed once, with the teacher's own tokenizer, and cached beside the teacher's
checkpoint keyed by its weights and the data, so every student of it and a resumed student see the same targets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from planner.tables import file_sha256

LOGITS_FILE = "train_logits.npz"  # in the teacher's checkpoint folder


class DistillationLoss(nn.Module):
    """``(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)``.

    The target is a ``(labels, teacher_logits)`` pair. T^2 keeps the soft term's gradient on the
    scale of the hard term's as T grows (Hinton et al.).
    """

    def __init__(self, alpha: float, temperature: float, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"distillation alpha must be in (0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"distillation temperature must be positive, got {temperature}")
        self.alpha, self.temperature, self.label_smoothing = float(alpha), float(temperature), float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        labels, teacher = target
        t = self.temperature
        hard = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        soft = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                        log_target=True, reduction="batchmean") * t * t
        return (1.0 - self.alpha) * hard + self.alpha * soft


def logits_key(teacher_weights: Path, data_checksum: str, teacher_max_length: int, train_subset: int | None,
               autocast_bf16: bool) -> str:
    """What the cached logits depend on: the teacher's weights, the data, its tokenization, the subset and
    whether the teacher ran under bf16 autocast (a CPU without native bf16 runs it in fp32)."""
    return json.dumps({"teacher_sha256": file_sha256(teacher_weights), "data": data_checksum,
                       "max_length": teacher_max_length, "train_subset": train_subset,
                       "autocast_bf16": bool(autocast_bf16)}, sort_keys=True)


@torch.inference_mode()
def compute_logits(teacher: nn.Module, inputs_for: Callable[[np.ndarray], Any], batches: list[np.ndarray], n: int,
                   autocast: bool, progress: bool = False) -> np.ndarray:
    """Teacher logits (n x classes, float32) over the training set, one forward pass per index batch."""
    from tqdm.auto import tqdm

    teacher.eval()
    out: np.ndarray | None = None
    for indices in tqdm(batches, desc="teacher logits", disable=not progress):
        inputs = inputs_for(indices)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = teacher(*inputs).float().numpy()
        if out is None:
            out = np.full((n, logits.shape[1]), np.nan, dtype=np.float32)
        out[indices] = logits
    if out is None or np.isnan(out).any():
        raise RuntimeError("teacher logits do not cover every training example")
    return out


def load_cached(path: Path, key: str) -> np.ndarray | None:
    """The cached logits at ``path`` if they were computed for ``key``; None otherwise (or unreadable)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) != key:
                return None
            return np.array(saved["logits"], dtype=np.float32)
    except (OSError, ValueError, KeyError):
        return None


def save_cached(path: Path, key: str, logits: np.ndarray) -> None:
    """Write atomically: a kill mid-write leaves the previous file (or none), never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, key=np.array(key), logits=logits.astype(np.float32))
    tmp.replace(path)
