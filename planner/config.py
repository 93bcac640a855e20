"""Validated configuration: the YAML files under ``configs/`` parsed into pydantic models.

Every value that shapes an experiment (seeds, deadlines, model sources, preset sizes) lives in
YAML, not in code. A bad value raises :class:`ConfigError` naming the file, the field and the value.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from planner.paths import CONFIG_DIR

TASKS = ("sst2", "cifar10")
Task = Literal["sst2", "cifar10"]


class ConfigError(ValueError):
    """A configuration file is missing or holds an invalid value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Protocol(_Strict):
    """Statistical protocol: seeds, metrics, significance level and tests."""

    seeds: list[int] = Field(min_length=1)
    primary_metrics: list[str] = Field(min_length=1)
    alpha: float = Field(gt=0, lt=1)
    confidence: float = Field(gt=0, lt=1)
    tests: list[Literal["paired_t", "wilcoxon"]] = Field(min_length=1)
    multiple_comparison: Literal["holm", "bonferroni", "none"] = "holm"

    @field_validator("primary_metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        from planner.metrics import METRICS

        unknown = [m for m in value if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        return value


class ModelSpec(_Strict):
    task: Task
    kind: Literal["hf_encoder_finetune", "hf_pretrained_classifier", "torchvision_scratch"]
    source: str
    optional: bool = False
    params: dict = Field(default_factory=dict)


class ModelsConfig(_Strict):
    models: dict[str, ModelSpec] = Field(min_length=1)
    cascades: dict[Task, list[tuple[str, str]]] = Field(default_factory=dict)
    thresholds: list[float] = Field(min_length=1)

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_unit_interval(cls, value: list[float]) -> list[float]:
        bad = [t for t in value if not 0 < t < 1]
        if bad:
            raise ValueError(f"cascade thresholds must lie in (0, 1), got {bad}")
        return value

    @model_validator(mode="after")
    def _cascade_members_known(self) -> "ModelsConfig":
        for task, pairs in self.cascades.items():
            for small, large in pairs:
                for name in (small, large):
                    if name not in self.models:
                        raise ValueError(f"cascade {small}>{large} names unknown model {name!r}")
                    if self.models[name].task != task:
                        raise ValueError(f"cascade model {name!r} is not a {task} model")
        return self


class DeadlinesConfig(_Strict):
    deadlines: dict[Task, list[float]]

    @field_validator("deadlines")
    @classmethod
    def _positive(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for task, values in value.items():
            if not values:
                raise ValueError(f"deadline list for {task} is empty")
            bad = [d for d in values if not (d > 0 and math.isfinite(d))]
            if bad:
                raise ValueError(f"deadlines must be positive finite ms, got {bad} for {task}")
        return value


class TrainPreset(_Strict):
    """How long and on how much data ``planner train`` runs; per-model budgets override the default."""

    time_budget_s: float = Field(gt=0)
    max_epochs: int = Field(ge=1)
    train_subset: int | None = Field(default=None, ge=1)
    eval_subset: int | None = Field(default=None, ge=1)
    model_time_budget_s: dict[str, float] = Field(default_factory=dict)
    checkpoint_every_s: float = Field(default=120.0, gt=0)

    @field_validator("model_time_budget_s")
    @classmethod
    def _positive_budgets(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not (v > 0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"per-model time budgets must be positive seconds, got {bad}")
        return value

    def budget_for(self, model: str) -> float:
        """Training time budget (s) for ``model``: its own entry, else the preset default."""
        return float(self.model_time_budget_s.get(model, self.time_budget_s))


class ProfilePreset(_Strict):
    warmup: int = Field(ge=10)
    min_passes: int = Field(ge=100)
    max_passes: int = Field(ge=100)
    ci_rel_halfwidth: float = Field(gt=0, lt=1)
    batch_sizes: list[int] = Field(min_length=1)
    eval_subset: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "ProfilePreset":
        if self.max_passes < self.min_passes:
            raise ValueError(f"max_passes {self.max_passes} < min_passes {self.min_passes}")
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        return self


class EvaluatePreset(_Strict):
    n_requests: int = Field(ge=10)
    seeds: list[int] = Field(min_length=1)


class Preset(_Strict):
    train: TrainPreset
    profile: ProfilePreset
    evaluate: EvaluatePreset


class PresetsConfig(_Strict):
    presets: dict[str, Preset]


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        value = err.get("input")
        lines.append(f"{path}: field '{field}' = {value!r}: {err['msg']}")
    return "\n".join(lines)


def load_yaml_model(model: type[BaseModel], path: Path) -> BaseModel:
    """Parse ``path`` into ``model``; any problem raises ConfigError naming file, field and value."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"missing config file {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None


@lru_cache(maxsize=None)
def protocol(config_dir: Path = CONFIG_DIR) -> Protocol:
    return load_yaml_model(Protocol, Path(config_dir) / "experimental_protocol.yaml")


@lru_cache(maxsize=None)
def models(config_dir: Path = CONFIG_DIR) -> ModelsConfig:
    return load_yaml_model(ModelsConfig, Path(config_dir) / "models.yaml")


@lru_cache(maxsize=None)
def deadlines(config_dir: Path = CONFIG_DIR) -> DeadlinesConfig:
    return load_yaml_model(DeadlinesConfig, Path(config_dir) / "deadlines.yaml")


@lru_cache(maxsize=None)
def presets(config_dir: Path = CONFIG_DIR) -> PresetsConfig:
    return load_yaml_model(PresetsConfig, Path(config_dir) / "presets.yaml")


def preset(name: str, config_dir: Path = CONFIG_DIR) -> Preset:
    """The named preset (``quick`` or ``full``); an unknown name is a clear error."""
    table = presets(config_dir).presets
    if name not in table:
        raise ConfigError(f"unknown preset {name!r}; known: {sorted(table)}")
    return table[name]


def model_spec(name: str, config_dir: Path = CONFIG_DIR) -> ModelSpec:
    """The spec of a model; an unknown name is a clear error listing the known ones."""
    table = models(config_dir).models
    if name not in table:
        raise ConfigError(f"unknown model {name!r}; known models: {sorted(table)}")
    return table[name]


def validate_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; known tasks: {list(TASKS)}")
    return task


def validate_deadline(deadline_ms: float) -> float:
    """A deadline must be a positive, finite number of milliseconds."""
    try:
        value = float(deadline_ms)
    except (TypeError, ValueError):
        raise ConfigError(f"deadline must be a number of ms, got {deadline_ms!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"deadline must be a positive finite number of ms, got {deadline_ms!r}")
    return value
