"""Predictor implementations: torch eager and ONNX Runtime, for text and vision alike.

Both own their preprocessing (tokenisation / normalisation) because a served request pays for it,
and both return float32 softmax probabilities of shape (N, n_classes).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from planner.models.base import CallStopped, VariantSpec

Preprocess = Callable[[Any], dict[str, np.ndarray]]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _chunks(inputs: Sequence[Any] | np.ndarray, batch_size: int):
    for start in range(0, len(inputs), batch_size):
        yield inputs[start : start + batch_size]


class TorchPredictor:
    """torch eager: ``module(**preprocess(batch))`` under inference mode, in ``dtype`` on ``device``."""

    def __init__(self, spec: VariantSpec, module: nn.Module, preprocess: Preprocess, *,
                 input_dtype: torch.dtype | None = None, autocast_dtype: torch.dtype | None = None,
                 channels_last: bool = False, accuracy_available: bool = True, n_threads: int | None = None,
                 notes: str = ""):
        self.spec = spec
        self.module = module.eval()
        self.preprocess = preprocess
        self.input_dtype = input_dtype
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.accuracy_available = accuracy_available
        self.n_threads = n_threads or torch.get_num_threads()
        self.device = torch.device(spec.device)
        self.notes = notes

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array).to(self.device)
        if t.is_floating_point():
            if self.input_dtype is not None:
                t = t.to(self.input_dtype)
            if self.channels_last and t.ndim == 4:
                t = t.contiguous(memory_format=torch.channels_last)
        return t

    @torch.inference_mode()
    def predict(self, inputs: Sequence[Any] | np.ndarray, batch_size: int) -> np.ndarray:
        batch_size = _check_batch_size(batch_size)
        outs = []
        for chunk in _chunks(inputs, batch_size):
            feeds = {k: self._tensor(v) for k, v in self.preprocess(chunk).items()}
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                                enabled=self.autocast_dtype is not None):
                logits = self.module(*feeds.values())
            outs.append(logits.float().cpu().numpy())
        return softmax(np.concatenate(outs)) if outs else np.zeros((0, 0), np.float32)


class OrtPredictor:
    """ONNX Runtime session fed with the same preprocessed arrays as the torch predictor.

    A call can be stopped from another thread: pass ``run_options`` (an ``onnxruntime.RunOptions``)
    and set its ``terminate``; the call then raises :class:`CallStopped` at ONNX Runtime's next check
    between graph nodes."""

    def __init__(self, spec: VariantSpec, session, preprocess: Preprocess, *, accuracy_available: bool = True,
                 n_threads: int | None = None, model_path: str = "", notes: str = ""):
        self.spec = spec
        self.session = session
        self.preprocess = preprocess
        self.accuracy_available = accuracy_available
        self.n_threads = n_threads
        self.model_path = model_path
        self.input_names = [i.name for i in session.get_inputs()]
        self.notes = notes

    def predict(self, inputs: Sequence[Any] | np.ndarray, batch_size: int, run_options: Any = None) -> np.ndarray:
        batch_size = _check_batch_size(batch_size)
        outs = []
        for chunk in _chunks(inputs, batch_size):
            feeds = self.preprocess(chunk)
            try:
                outs.append(self.session.run(None, {name: feeds[name] for name in self.input_names}, run_options)[0])
            except Exception as exc:
                if run_options is not None and run_options.terminate:
                    raise CallStopped(f"{self.spec.describe()}: stopped by its run options") from exc
                raise
        return softmax(np.concatenate(outs)) if outs else np.zeros((0, 0), np.float32)
