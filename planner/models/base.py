"""The single interface every model variant serves: ``predict(inputs, batch_size) -> probabilities``.

Profilers, the cascade and live replay treat text and vision alike through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

RUNTIMES = ("torch", "onnxruntime", "torch_compile")
# the runtimes that run a model on torch's own kernels (eager or compiled): they share its precision support
TORCH_RUNTIMES = ("torch", "torch_compile")
# runtimes that exist only on a GPU (ONNX Runtime's TensorRT execution provider): the space enumerates
# them for device cuda alone (planner.profile.space.runtimes_for)
CUDA_RUNTIMES = ("onnxruntime_trt",)
# model params (configs/models.yaml) that shape only the ONNX export/quantization, never the trained
# weights: changing them must not invalidate a training checkpoint (planner.models.train.recipe)
EXPORT_PARAMS = ("per_channel", "quant_exclude_nodes", "calibration_method", "calibration_examples", "int8_keep_fp32",
                 "int8_smooth_alpha")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DEVICES = ("cpu", "cuda")


class UnsupportedVariantError(ValueError):
    """A (model, runtime, precision, device) combination that cannot be built; the message names it."""


class ModelUnavailableError(RuntimeError):
    """Weights for a model are not present (e.g. no fine-tuned DistilBERT checkpoint offline)."""


class CallStopped(RuntimeError):
    """A running call was stopped from outside before it answered (ONNX Runtime's ``RunOptions.terminate``,
    set by a server when every request in the batch would be answered after its deadline)."""


@dataclass(frozen=True)
class VariantSpec:
    task: str
    model: str
    runtime: str = "torch"
    precision: str = "fp32"
    device: str = "cpu"

    def describe(self) -> str:
        return f"{self.task}/{self.model}/{self.runtime}/{self.precision}/{self.device}"


@runtime_checkable
class Predictor(Protocol):
    """Anything that maps a batch of raw inputs to class probabilities.

    ``inputs`` is a list of sentences (text) or a uint8 array N×32×32×3 (vision); preprocessing
    (tokenisation, normalisation) happens inside, because a served request pays for it too.
    Returns float32 probabilities of shape (N, n_classes); ``batch_size`` splits N into calls.
    """

    spec: VariantSpec
    accuracy_available: bool

    def predict(self, inputs: Sequence[Any] | np.ndarray, batch_size: int) -> np.ndarray: ...
