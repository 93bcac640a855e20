"""The configuration space: task x model x runtime x precision x batch x device x cascade.

Every combination is either a :class:`Configuration` to profile or a row of ``infeasible`` with the
reason the zoo gave (``zoo.variant_support``); nothing is dropped silently. Cascades come from
``configs/models.yaml`` (small->large pairs, each threshold); a cascade shares runtime, precision,
batch size and device with both of its members and is infeasible when either member is.

Runtimes per device (:func:`runtimes_for`): every device has ``RUNTIMES``; cuda adds the GPU-only
``CUDA_RUNTIMES`` (ONNX Runtime's TensorRT execution provider). On a GPU the zoo offers torch at
fp32/fp16/bf16 and an ONNX Runtime provider only where ``onnxruntime.get_available_providers()``
lists it; otherwise the rows are infeasible with that reason, never CPU timings labelled cuda.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd

from planner import config
from planner.models.base import CUDA_RUNTIMES, PRECISIONS, RUNTIMES, VariantSpec
from planner.schema import config_id, model_of

# Hidden hook for tests and dry runs: a module path providing the Zoo functions (e.g. planner.profile.toy).
ZOO_ENV = "PLANNER_PROFILE_ZOO"

IDENTITY_COLUMNS = ["config_id", "task", "model", "runtime", "precision", "batch_size", "device",
                    "cascade_small", "cascade_large", "threshold"]
INFEASIBLE_COLUMNS = {**{c: "str" for c in IDENTITY_COLUMNS}, "batch_size": "int",
                      "cascade_small": "str?", "cascade_large": "str?", "threshold": "float?", "reason": "str"}


class Zoo(Protocol):
    """What the profiler needs from the model zoo (planner.models.zoo + planner.models.flops)."""

    def task_models(self, task: str, preset: str | None = None) -> list[str]: ...
    def variant_support(self, spec: VariantSpec) -> str | None: ...
    def load_predictor(self, spec: VariantSpec, preset: str) -> Any: ...
    def eval_inputs(self, task: str, n: int | None = None) -> tuple[Any, np.ndarray]: ...
    def flops_per_item(self, task: str, model: str) -> float: ...
    # optional: the model's planner.models.flops.Footprint (weights and activation sizes, for the roofline)
    # def model_footprint(self, task: str, model: str) -> Footprint: ...
    # optional: identity of a model's trained weights (None: none here); a change re-profiles the model
    # def weights_key(self, task: str, model: str, preset: str) -> str | None: ...
    # optional: why a buildable variant only runs emulated here (None: native); a preset may skip those
    # def emulated_reason(self, spec: VariantSpec) -> str | None: ...


def load_zoo(module: str | None = None) -> Zoo:
    """The real zoo, or the module named by ``$PLANNER_PROFILE_ZOO`` (a toy zoo in tests)."""
    module = module or os.environ.get(ZOO_ENV)
    if module:
        return importlib.import_module(module)  # type: ignore[return-value]
    zoo = importlib.import_module("planner.models.zoo")
    flops = importlib.import_module("planner.models.flops")
    return SimpleNamespace(task_models=zoo.task_models, variant_support=zoo.variant_support,
                           load_predictor=zoo.load_predictor, eval_inputs=zoo.eval_inputs,
                           flops_per_item=flops.flops_per_item, model_footprint=flops.model_footprint,
                           weights_key=zoo.weights_key,
                           quantization_key=zoo.quantization_key,
                           emulated_reason=zoo.emulated_reason)  # type: ignore[return-value]


def available_devices() -> list[str]:
    """``cpu``, plus ``cuda`` when torch sees a GPU."""
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def runtimes_for(device: str) -> tuple[str, ...]:
    """The runtimes enumerated on ``device``: all of them, plus the GPU-only ones on cuda."""
    return RUNTIMES + CUDA_RUNTIMES if device == "cuda" else RUNTIMES


@dataclass(frozen=True)
class Configuration:
    """One point of the space; a cascade has ``cascade=(small, large, tau)`` and ``model=None``."""

    task: str
    model: str | None
    runtime: str
    precision: str
    batch_size: int
    device: str
    cascade: tuple[str, str, float] | None = None

    @property
    def config_id(self) -> str:
        return config_id(self.task, self.model or "", self.runtime, self.precision, self.batch_size,
                         self.device, self.cascade)

    @property
    def model_name(self) -> str:
        """The ``model`` column: the model, or ``cascade:small>large@tau``."""
        return model_of(self.config_id)

    @property
    def is_cascade(self) -> bool:
        return self.cascade is not None

    def variant(self, model: str | None = None) -> VariantSpec:
        """The zoo variant of this model (or of a named cascade member)."""
        name = model or self.model
        if name is None:
            raise ValueError(f"{self.config_id} is a cascade; name the member")
        return VariantSpec(self.task, name, self.runtime, self.precision, self.device)

    @property
    def members(self) -> tuple[VariantSpec, ...]:
        if self.cascade is None:
            return (self.variant(),)
        return (self.variant(self.cascade[0]), self.variant(self.cascade[1]))

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Configurations sharing this key can share loaded predictors."""
        return (self.task, self.runtime, self.precision, self.device)

    @property
    def variant_key(self) -> str:
        """The id without the batch size: predictions are computed once per variant or cascade."""
        return config_id(self.task, self.model or "", self.runtime, self.precision, 0, self.device,
                         self.cascade).replace("/b0/", "/")

    def identity(self) -> dict[str, Any]:
        small, large, tau = self.cascade if self.cascade else (None, None, np.nan)
        return {"config_id": self.config_id, "task": self.task, "model": self.model_name,
                "runtime": self.runtime, "precision": self.precision, "batch_size": int(self.batch_size),
                "device": self.device, "cascade_small": small, "cascade_large": large,
                "threshold": float(tau)}


@dataclass
class Space:
    feasible: list[Configuration]
    infeasible: pd.DataFrame  # IDENTITY_COLUMNS + reason


def infeasible_frame(rows: Sequence[tuple[Configuration, str]]) -> pd.DataFrame:
    """Rows of ``infeasible.csv``: the configuration's identity and the reason."""
    return pd.DataFrame([{**c.identity(), "reason": r} for c, r in rows], columns=list(INFEASIBLE_COLUMNS))


def enumerate_space(tasks: Sequence[str], batch_sizes: Sequence[int], devices: Sequence[str], zoo: Zoo,
                    runtimes: Sequence[str] | None = None, precisions: Sequence[str] = PRECISIONS,
                    models_config: config.ModelsConfig | None = None,
                    thresholds: Sequence[float] | None = None,
                    cascade_precisions: Sequence[str] | None = None,
                    cascade_runtimes: Sequence[str] | None = None,
                    profile_runtimes: Sequence[str] | None = None, preset: str | None = None,
                    skip_emulated: bool = False) -> Space:
    """Every combination, split into feasible configurations and recorded infeasible ones.

    ``runtimes`` None means :func:`runtimes_for` each device. ``precisions`` and ``thresholds`` let a
    preset (quick) profile a slice of the space; ``thresholds=None`` means every cascade threshold in
    ``configs/models.yaml``. ``profile_runtimes`` (a preset's ``runtimes``) prunes the other runtimes,
    recording each pruned configuration in ``infeasible.csv`` with that reason (e.g. torch.compile,
    whose compilation alone would outlast a GPU session). ``cascade_precisions`` prunes cascades at
    other precisions, likewise recorded (their members' single-model rows are profiled);
    ``cascade_runtimes`` does the same by runtime. Models (and cascades with a member) that ``preset``
    does not use (:func:`planner.config.task_models`: a model needing an optional extra the preset
    does not list) are not part of its space. ``skip_emulated`` records the variants the zoo's optional
    ``emulated_reason`` names (bf16 on a CPU without bf16 arithmetic) as infeasible with that reason.
    """
    cfg = models_config or config.models()
    taus = list(thresholds) if thresholds is not None else list(cfg.thresholds)
    emulated = getattr(zoo, "emulated_reason", None) if skip_emulated else None
    feasible: list[Configuration] = []
    infeasible: list[tuple[Configuration, str]] = []
    for task in tasks:
        config.validate_task(task)
        models = list(zoo.task_models(task, preset))
        pairs = [tuple(p) for p in cfg.cascades.get(task, []) if set(p) <= set(config.task_models(task, preset))]
        for device in devices:
            for runtime in (runtimes if runtimes is not None else runtimes_for(device)):
                pruned = None
                if profile_runtimes is not None and runtime not in profile_runtimes:
                    pruned = (f"runtime {runtime} not profiled on {device}: pruned by the preset's profiler "
                              f"settings (runtimes = {list(profile_runtimes)})")
                for precision in precisions:
                    specs = {m: VariantSpec(task, m, runtime, precision, device)
                             for m in sorted({*models, *(n for p in pairs for n in p)})}
                    reasons = {m: zoo.variant_support(spec) or pruned or (emulated(spec) if emulated else None)
                               for m, spec in specs.items()}
                    for b in batch_sizes:
                        for m in models:
                            c = Configuration(task, m, runtime, precision, int(b), device)
                            (infeasible.append((c, reasons[m])) if reasons[m] else feasible.append(c))
                        for small, large in pairs:
                            why = "; ".join(f"cascade member {n}: {reasons[n]}" for n in (small, large) if reasons[n])
                            if not why and cascade_precisions is not None and precision not in cascade_precisions:
                                why = (f"cascade not profiled at {precision}: pruned by the preset "
                                       f"(profile.cascade_precisions = {list(cascade_precisions)}); "
                                       f"its members' single-model {precision} rows are profiled")
                            if not why and cascade_runtimes is not None and runtime not in cascade_runtimes:
                                why = (f"cascade not profiled on runtime {runtime}: pruned by the preset "
                                       f"(profile.cascade_runtimes = {list(cascade_runtimes)}); "
                                       f"its members' single-model {runtime} rows are profiled")
                            for tau in taus:
                                c = Configuration(task, None, runtime, precision, int(b), device,
                                                  (small, large, float(tau)))
                                (infeasible.append((c, why)) if why else feasible.append(c))
    return Space(feasible, infeasible_frame(infeasible))
