"""A deterministic toy zoo with the real zoo's interface, for tests and dry runs of the profiler.

Selected by ``PLANNER_PROFILE_ZOO=planner.profile.toy``. Model names come from configs/models.yaml
so cascades enumerate as in a real sweep; predictors are small numpy linear classifiers over fixed
features of synthetic inputs. ``PLANNER_TOY_DELAY_MS`` adds a sleep per call so a sweep lasts long
enough to be interrupted. Nothing produced with this zoo is ever reported as a measurement.
"""

from __future__ import annotations

import os
import time
import zlib
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from planner import config
from planner.models.base import VariantSpec

DELAY_ENV = "PLANNER_TOY_DELAY_MS"
# optional comma list of runtime/precision pairs to offer (others infeasible), to keep test sweeps small
VARIANTS_ENV = "PLANNER_TOY_VARIANTS"
WEIGHTS_ENV = "PLANNER_TOY_WEIGHTS"
QUANTIZATION_ENV = "PLANNER_TOY_QUANTIZATION"
# optional comma list of model/runtime/precision variants that answer NaN (a numerically broken build)
NONFINITE_ENV = "PLANNER_TOY_NONFINITE"
N_EVAL = {"sst2": 96, "cifar10": 120}
N_CLASSES = {"sst2": 2, "cifar10": 10}
_DIM = 8
# toy weight noise (lower = more accurate) and relative size per model; unknown names get 1.0
_NOISE = {"minilm-l6": 0.6, "minilm-l3": 1.2, "distilbert": 0.8, "mobilenet_v2": 1.2, "resnet18": 0.6}
_SIZE = {"minilm-l6": 2.0, "minilm-l3": 1.0, "distilbert": 6.0, "mobilenet_v2": 1.0, "resnet18": 5.0}
_SHARPNESS = {"sst2": 2.0, "cifar10": 8.0}
# with PLANNER_TOY_DELAY_MS set, a call of this runtime sleeps this multiple of the delay (a slower runtime)
_RUNTIME_COST = {"torch_compile": 3.0}


def weights_key(task: str, model: str, preset: str) -> str | None:
    """The toy weights' identity: ``toy:<model>``, or what ``PLANNER_TOY_WEIGHTS`` (``model=key,...``)
    says, to stand for a retrained checkpoint."""
    given = dict(item.split("=", 1) for item in os.environ.get(WEIGHTS_ENV, "").split(",") if "=" in item)
    return given.get(model, f"toy:{model}")


def quantization_key(task: str, model: str) -> str:
    """The toy int8 settings' identity: ``toy-int8``, or what ``PLANNER_TOY_QUANTIZATION`` (``model=key,...``)
    says, to stand for changed quantization settings."""
    given = dict(item.split("=", 1) for item in os.environ.get(QUANTIZATION_ENV, "").split(",") if "=" in item)
    return given.get(model, "toy-int8")


def task_models(task: str, preset: str | None = None) -> list[str]:
    """The preset's models, less nothing it skips: the toy stands for every model of the registry, so a
    toy sweep on the quick preset still covers DistilBERT's accuracy-unavailable path."""
    used = set(config.task_models(task, preset))
    skipped = set(config.preset(preset).skip_models) if preset is not None else set()
    return [name for name, spec in config.models().models.items()
            if spec.task == task and (name in used or name in skipped)]


def variant_support(spec: VariantSpec) -> str | None:
    allowed = os.environ.get(VARIANTS_ENV)
    if allowed and f"{spec.runtime}/{spec.precision}" not in allowed.split(","):
        return f"toy zoo: {spec.runtime}/{spec.precision} excluded by {VARIANTS_ENV}={allowed}"
    if spec.device != "cpu":
        return f"toy zoo: {spec.describe()} needs {spec.device}, only cpu is simulated"
    if spec.precision == "fp16":
        return f"toy zoo: {spec.describe()} is unsupported (fp16 on cpu)"
    if spec.runtime == "torch_compile" and spec.precision == "int8":
        return f"toy zoo: {spec.describe()} is not offered (torch.compile at int8)"
    if spec.runtime == "onnxruntime" and spec.precision == "bf16":
        return f"toy zoo: {spec.describe()} is unsupported (no bf16 in onnxruntime)"
    return None


def _features(task: str, inputs: Sequence[Any] | np.ndarray) -> np.ndarray:
    if task == "sst2":
        feats = np.zeros((len(inputs), _DIM))
        for i, sentence in enumerate(inputs):
            for word in sentence.split():
                feats[i, int(word[1:]) % _DIM] += 1.0
        return feats - feats.mean(axis=1, keepdims=True)
    arr = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    return arr[:, : _DIM * 48].reshape(len(inputs), _DIM, 48).mean(axis=2) / 64.0 - 2.0


def _weights(name: str, task: str, noise: float) -> np.ndarray:
    truth = np.random.default_rng(7).normal(size=(_DIM, N_CLASSES[task]))
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return truth + noise * rng.normal(size=truth.shape)


def eval_inputs(task: str, n: int | None = None) -> tuple[Any, np.ndarray]:
    config.validate_task(task)
    size = min(n or N_EVAL[task], N_EVAL[task])
    rng = np.random.default_rng(11)
    if task == "sst2":
        inputs: Any = [" ".join(f"w{v}" for v in rng.integers(0, 50, rng.integers(3, 12))) for _ in range(size)]
    else:
        inputs = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
    labels = (_features(task, inputs) @ _weights("truth", task, 0.0)).argmax(axis=1)
    return inputs, labels.astype(np.int64)


def flops_per_item(task: str, model: str) -> float:
    """Proportional to the toy size; a retrained model (``PLANNER_TOY_WEIGHTS``) stands for a new
    architecture too (the real CNNs got a CIFAR stem with their retraining), so its FLOPs double."""
    retrained = weights_key(task, model, "") != f"toy:{model}"
    return 1e6 * _SIZE.get(model, 1.0) * (2.0 if retrained else 1.0)


def model_footprint(task: str, model: str) -> SimpleNamespace:
    """Weight and activation sizes, shaped like :class:`planner.models.flops.Footprint`."""
    return SimpleNamespace(weight_elements=_DIM * N_CLASSES[task], activation_elements_per_item=float(_DIM))


class ToyPredictor:
    """Softmax of a fixed linear map; int8 rounds the weights, and torch int8 (dynamic) also rounds the
    activations with a scale taken from the whole batch, so its predictions depend on the batch."""

    def __init__(self, spec: VariantSpec):
        self.spec = spec
        self.accuracy_available = spec.model != "distilbert"
        weights = _weights(spec.model, spec.task, _NOISE.get(spec.model, 1.0))
        self.weights = np.round(weights * 4) / 4 if spec.precision == "int8" else weights
        self.delay_s = float(os.environ.get(DELAY_ENV, "0")) / 1000.0 * _RUNTIME_COST.get(spec.runtime, 1.0)
        self.dynamic_int8 = spec.runtime == "torch" and spec.precision == "int8"
        broken = os.environ.get(NONFINITE_ENV, "").split(",")
        self.nonfinite = f"{spec.model}/{spec.runtime}/{spec.precision}" in broken

    def predict(self, inputs: Sequence[Any] | np.ndarray, batch_size: int) -> np.ndarray:
        out = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            if self.delay_s:
                time.sleep(self.delay_s)
            feats = _features(self.spec.task, chunk)
            if self.dynamic_int8:  # activation scale from the whole batch, as dynamic quantization does
                scale = np.abs(feats).max() / 3.0 or 1.0
                feats = np.round(feats / scale) * scale
            logits = _SHARPNESS[self.spec.task] * feats @ self.weights
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            out.append(p / p.sum(axis=1, keepdims=True))
        if self.nonfinite:
            out[0][0] = np.nan
        return np.concatenate(out).astype(np.float32)


def load_predictor(spec: VariantSpec, preset: str) -> ToyPredictor:
    reason = variant_support(spec)
    if reason:
        from planner.models.base import UnsupportedVariantError

        raise UnsupportedVariantError(reason)
    if spec.model not in task_models(spec.task, preset):
        raise ValueError(f"toy zoo: unknown model {spec.model!r} for {spec.task}")
    return ToyPredictor(spec)
