"""Validated configuration: the YAML files under ``configs/`` parsed into pydantic models.

Every value that shapes an experiment (seeds, deadlines, model sources, preset sizes) lives in
YAML, not in code. A bad value raises :class:`ConfigError` naming the file, the field and the value.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from planner.metrics import METRICS
from planner.paths import CONFIG_DIR
from planner.schema import TASKS, check_deadline

# numpy's SeedSequence takes non-negative integers only
Seed = Annotated[int, Field(ge=0, strict=True)]


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"values must be distinct, got {values}")
    return values


Seeds = Annotated[list[Seed], AfterValidator(_distinct)]
Task = Literal["sst2", "cifar10"]


class ConfigError(ValueError):
    """A configuration file is missing or holds an invalid value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationSplit(_Strict):
    """The calibration/scored partition of every evaluation set (:mod:`planner.splits`)."""

    # fraction of each class's evaluation examples that methods may fit on (the rest is scored)
    share: float = Field(gt=0, lt=1)
    seed: Seed


STUDY_CELL_KEYS = ("task", "workload", "load")


class ComparisonFamily(_Strict):
    """The pre-registered family of method comparisons (:mod:`planner.analysis.study`): which metric
    is tested, by which test, per which cells, against which opponents. Written down before the
    results are read, so the family cannot grow or shrink to suit them."""

    metric: str
    primary_test: Literal["paired_t", "wilcoxon"]
    replication_unit: Literal["seed"] = "seed"
    cells: list[Literal["task", "workload", "load"]] = Field(min_length=1)
    opponent_roles: list[Literal["baseline", "ablation", "hindsight"]] = Field(min_length=1)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {sorted(METRICS)}")
        return value

    @field_validator("cells")
    @classmethod
    def _task_first(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or value[0] != "task":
            raise ValueError(f"cells must be distinct keys starting with 'task', got {value}")
        return value


class Protocol(_Strict):
    """Statistical protocol: seeds, metrics, significance level and tests, the pre-registered family of
    comparisons, and the calibration split."""

    seeds: Seeds = Field(min_length=1)
    primary_metrics: list[str] = Field(min_length=1)
    alpha: float = Field(gt=0, lt=1)
    confidence: float = Field(gt=0, lt=1)
    tests: list[Literal["paired_t", "wilcoxon"]] = Field(min_length=1)
    multiple_comparison: Literal["holm", "bonferroni", "none"] = "holm"
    family: ComparisonFamily
    calibration: CalibrationSplit

    @model_validator(mode="after")
    def _family_uses_a_listed_test(self) -> "Protocol":
        if self.family.primary_test not in self.tests:
            raise ValueError(f"family.primary_test {self.family.primary_test!r} is not among tests {self.tests}")
        return self

    @field_validator("primary_metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        return value


class ModelSpec(_Strict):
    task: Task
    kind: Literal["hf_encoder_finetune", "hf_pretrained_classifier", "torchvision_scratch"]
    source: str
    optional: bool = False
    # an optional dependency group the weights come from (planner.models.extras); only presets that
    # list it in their `extras` use the model
    requires_extra: str | None = None
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
            for d in values:
                check_deadline(d, f"deadlines.{task}")
        return value


class DistillSpec(_Strict):
    """A student trained against a teacher's softened logits as well as the labels (planner/models/distill.py)."""

    teacher: str
    alpha: float = Field(gt=0, le=1)  # weight of the soft (teacher) term; 1 - alpha on the labels
    temperature: float = Field(gt=0)


class TrainPreset(_Strict):
    """How long and on how much data ``planner train`` runs; per-model budgets override the default."""

    time_budget_s: float = Field(gt=0)
    max_epochs: int = Field(ge=1)
    train_subset: int | None = Field(default=None, ge=1)
    eval_subset: int | None = Field(default=None, ge=1)
    model_time_budget_s: dict[str, float] = Field(default_factory=dict)
    model_max_epochs: dict[str, int] = Field(default_factory=dict)
    checkpoint_every_s: float = Field(default=120.0, gt=0)
    # student model -> its teacher and loss weights; a model absent here learns from the labels alone
    distill: dict[str, DistillSpec] = Field(default_factory=dict)

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

    @field_validator("model_max_epochs")
    @classmethod
    def _positive_epochs(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"per-model epoch caps must be >= 1, got {bad}")
        return value

    def epochs_for(self, model: str) -> int:
        """Epoch cap for ``model``: its own entry, else the preset default."""
        return int(self.model_max_epochs.get(model, self.max_epochs))


Runtime = Literal["torch", "onnxruntime", "torch_compile", "onnxruntime_trt"]


class ProfilePreset(_Strict):
    """How hard the profiler measures; see planner/profile/latency.py for the stopping rule."""

    warmup: int = Field(ge=10)
    min_passes: int = Field(ge=100)
    max_passes: int = Field(ge=100)
    ci_rel_halfwidth: float = Field(gt=0, lt=1)
    batch_sizes: list[int] = Field(min_length=1)
    eval_subset: int | None = Field(default=None, ge=1)
    # the p95 CI is re-estimated every `check_every` passes, with `n_bootstrap` resamples
    check_every: int = Field(default=50, ge=1)
    n_bootstrap: int = Field(default=1000, ge=100)
    ci_confidence: float = Field(default=0.95, gt=0, lt=1)
    # safety cap on one configuration's timed passes (recorded as stop_reason="time_cap")
    max_seconds_per_config: float = Field(default=60.0, gt=0)
    # intra-op threads for torch and ONNX Runtime; null = os.cpu_count()
    threads: int | None = Field(default=None, ge=1)
    # examples on which batch-1 and batch-max predictions are compared (predictions are shared across batches)
    agreement_sample: int = Field(default=256, ge=1)
    # seconds of timed matmuls per precision for the roofline peaks
    roofline_seconds: float = Field(default=3.0, gt=0)
    # a slice of the space for small presets; null = every precision / every threshold in models.yaml
    precisions: list[Literal["fp32", "bf16", "fp16", "int8"]] | None = Field(default=None, min_length=1)
    thresholds: list[float] | None = Field(default=None, min_length=1)
    # cascades are profiled only at these precisions (null = all); pruned ones land in infeasible.csv
    cascade_precisions: list[Literal["fp32", "bf16", "fp16", "int8"]] | None = Field(default=None, min_length=1)
    # ... and only on these runtimes (null = all)
    cascade_runtimes: list[Runtime] | None = Field(default=None, min_length=1)
    # runtimes profiled at all (null = every runtime of the device); pruned ones land in infeasible.csv
    runtimes: list[Runtime] | None = Field(default=None, min_length=1)
    # record variants this machine only emulates (torch bf16 without AVX512-bf16/AMX) as infeasible instead
    # of timing them: CI's budget; a full study times them, so their cost stays visible
    skip_emulated: bool = False
    # before adding timings to a folder that holds some, re-time a few of its stored configurations and
    # refuse (or, with --rescale, correct) when this machine runs outside [1/t, t] of the folder's speed
    # (planner/profile/drift.py); null = no check
    drift_tolerance: float | None = Field(default=None, gt=1)
    drift_reference: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "ProfilePreset":
        if self.max_passes < self.min_passes:
            raise ValueError(f"max_passes {self.max_passes} < min_passes {self.min_passes}")
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.thresholds and any(not 0 < t < 1 for t in self.thresholds):
            raise ValueError(f"cascade thresholds must lie in (0, 1), got {self.thresholds}")
        return self


PositiveMs = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PoissonParams(_Params):
    """Steady arrivals: no parameters beyond the rate."""


class GammaParams(_Params):
    cv: PositiveMs = 4.0


class MMPPParams(_Params):
    peak_ratio: PositiveMs = 4.0
    high_share: Annotated[float, Field(gt=0, lt=1)] = 0.2
    mean_high_s: PositiveMs = 1.0


class SpikeParams(_Params):
    factor: PositiveMs = 4.0
    start_frac: Fraction = 0.4
    duration_frac: Annotated[float, Field(gt=0, le=1)] = 0.1
    start_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    duration_s: PositiveMs | None = None


class AzureParams(_Params):
    path: str = Field(min_length=1)
    function: str | int | None = None
    minute_s: PositiveMs = 60.0


class TwitterParams(_Params):
    """A real arrival trace (data/traces/twitter_{a,b}.txt, from Proteus); ``path``: another file in its format."""

    trace: Literal["a", "b"] = "a"
    path: Annotated[str, Field(min_length=1)] | None = None


# kind -> the keyword parameters its generator in planner.workloads takes (a test keeps them in step)
WORKLOAD_PARAMS: dict[str, type[_Params]] = {
    "poisson": PoissonParams, "gamma": GammaParams, "mmpp": MMPPParams, "spike": SpikeParams, "azure": AzureParams,
    "twitter": TwitterParams,
}


class DeadlineClass(_Strict):
    """One request class of a mixed-deadline trace: its share of requests and its deadline as a
    multiple of the cell's deadline (e.g. interactive 0.5x, relaxed 3x)."""

    share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    scale: PositiveMs


class WorkloadSpec(_Strict):
    """One named workload: a generator of planner.workloads (``kind``) and its keyword parameters.

    ``params`` is checked against the kind's typed parameters (:data:`WORKLOAD_PARAMS`), so a typo
    or ``cv: four`` fails when the preset is read, not when a trace is generated.

    ``deadline_classes`` makes the trace carry mixed per-request deadlines: each request draws a
    class by share (shares sum to 1) and gets the cell's deadline times that class's scale. With
    one deadline per trace a static method runs a single configuration; mixed classes exercise
    per-request planning.
    """

    kind: Literal["poisson", "gamma", "mmpp", "spike", "azure", "twitter"]
    params: dict[str, float | int | str | None] = Field(default_factory=dict)
    deadline_classes: dict[str, DeadlineClass] | None = None

    @field_validator("deadline_classes")
    @classmethod
    def _shares_sum_to_one(cls, value: dict[str, DeadlineClass] | None) -> dict[str, DeadlineClass] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("deadline_classes is empty; leave it out for one deadline per trace")
        total = sum(c.share for c in value.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"deadline_classes shares must sum to 1, got {total:g} "
                             f"({ {k: c.share for k, c in value.items()} })")
        return value

    @model_validator(mode="after")
    def _params_typed(self) -> "WorkloadSpec":
        model = WORKLOAD_PARAMS[self.kind]
        try:
            model.model_validate(self.params)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'} = {e.get('input')!r}: {e['msg']}"
                                 for e in exc.errors())
            raise ValueError(f"workload kind {self.kind!r}: {problems} (accepted: {sorted(model.model_fields)})") from None
        return self


class EvaluatePreset(_Strict):
    """Trace-driven evaluation (planner/evaluate.py): which traces, methods and serving setup.

    Each (workload, load, deadline, seed) cell gets one trace whose mean rate is ``load`` times the
    capacity (``throughput_items_s`` x servers) of the deadline planner's choice at that deadline.
    """

    n_requests: int = Field(ge=10)
    seeds: Seeds = Field(min_length=1)
    workloads: dict[str, WorkloadSpec] = Field(default_factory=lambda: {"steady": WorkloadSpec(kind="poisson")},
                                               min_length=1)
    loads: list[float] = Field(default=[0.8], min_length=1)
    # registered method names (planner.plan.registry); null = the registry's default methods
    methods: list[str] | None = Field(default=None, min_length=1)
    # typed parameters per method, checked against the method's own pydantic model in the registry
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    servers: int = Field(default=1, ge=1)
    queue: Literal["fifo", "edf"] = "fifo"
    drop_expired: bool = False
    # latency percentile every deadline-based method budgets with (a profile column: 50, 95 or 99)
    percentile: Literal[50, 95, 99] = 95
    # deadlines (ms) per task; null = configs/deadlines.yaml
    deadlines: dict[Task, list[float]] | None = None
    # per-batch dispatch cost the simulated server pays (planner.serving.simulator): "harness" = the live
    # replay's measured no-op median, measured once per results folder (eval/dispatch_overhead.json)
    # and reused on resume; "none" = 0; or a number of milliseconds
    dispatch_overhead: Literal["harness", "none"] | float = "none"

    @field_validator("dispatch_overhead")
    @classmethod
    def _overhead(cls, value: Any) -> Any:
        if isinstance(value, float) and not (0 <= value < float("inf")):
            raise ValueError(f"dispatch_overhead must be 'harness', 'none' or a finite number of ms >= 0, got {value}")
        return value

    @field_validator("loads")
    @classmethod
    def _positive_loads(cls, value: list[float]) -> list[float]:
        bad = [x for x in value if not (x > 0 and math.isfinite(x))]
        if bad:
            raise ValueError(f"loads are positive fractions of capacity, got {bad}")
        return value

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, value: list[str] | None) -> list[str] | None:
        # membership and parameters are checked against the method registry
        # (planner.plan.registry.check_methods) where methods are built: the registry sits above this module
        if value is not None and (len(set(value)) != len(value) or not all(m.isidentifier() for m in value)):
            raise ValueError(f"methods must be distinct method names (identifiers); got {value}")
        return value

    @field_validator("deadlines")
    @classmethod
    def _positive_deadlines(cls, value: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        for task, values in (value or {}).items():
            if not values:
                raise ValueError(f"deadlines for {task} must be a non-empty list of positive ms, got {values}")
            for d in values:
                check_deadline(d, f"deadlines.{task}")
        return value


class ValidationPoint(_Strict):
    """One live-vs-simulated comparison: a configuration at a load under a named workload."""

    name: str = Field(min_length=1)
    config: str = Field(min_length=1)      # a config_id of the preset's profiles
    load: float = Field(gt=0, lt=1)        # mean arrival rate / the configuration's capacity
    workload: str = Field(min_length=1)    # a key of ValidationPreset.workloads
    # the requests' deadline, exactly one of: this x the configuration's profiled p95 of one batch
    # call, or this quantile of the simulated end-to-end latency on the point's trace (so the
    # simulated hit-rate is about this value wherever the profiles come from)
    deadline_x_p95: float | None = Field(default=None, gt=0)
    deadline_sim_quantile: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_deadline_rule(self) -> "ValidationPoint":
        if (self.deadline_x_p95 is None) == (self.deadline_sim_quantile is None):
            raise ValueError(f"point {self.name!r}: give exactly one of deadline_x_p95 and deadline_sim_quantile")
        return self


class ValidationPreset(_Strict):
    """Simulator validation (planner/validation.py): live replay vs simulation at a few points.

    Each point's trace lasts about ``duration_s`` (``rate x duration_s`` requests, at most
    ``max_requests``); its live replay stops by itself after ``max_wall_s``. The simulated side is
    the mean over ``sim_seeds`` seeds of service draws on the very same trace.
    """

    duration_s: float = Field(gt=0)
    max_requests: int = Field(ge=10)
    max_wall_s: float = Field(gt=0)
    sim_seeds: int = Field(default=10, ge=1)
    warmup_calls: int = Field(default=10, ge=1)
    trace_seed: int = Field(default=0, ge=0)
    servers: int = Field(default=1, ge=1)
    queue: Literal["fifo", "edf"] = "fifo"
    drop_expired: bool = False
    # run a partial batch padded to the full batch size (what the simulator charges) instead of as is
    pad_partial: bool = False
    # per-batch dispatch cost the simulated side charges: "harness" = the replay's measured no-op
    # latency (median, planner.serving.replay.harness_overhead), "none" = 0, or a number of milliseconds
    dispatch_overhead: Literal["harness", "none"] | float = "harness"
    # calls timed just before each point's replay (0 = none): a second simulated side on fresh
    # service times, separating the simulator's queueing model from drift of the machine's speed
    calibration_calls: int = Field(default=200, ge=0)
    # the goal the issue sets: |hit-rate difference| in percentage points and |relative p95 difference|
    goal_hit_rate_pp: float = Field(default=2.0, gt=0)
    goal_p95_rel: float = Field(default=0.10, gt=0)
    workloads: dict[str, WorkloadSpec] = Field(min_length=1)
    points: list[ValidationPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "ValidationPreset":
        names = [p.name for p in self.points]
        if len(set(names)) != len(names):
            raise ValueError(f"validation point names must be distinct, got {names}")
        unknown = sorted({p.workload for p in self.points} - set(self.workloads))
        if unknown:
            raise ValueError(f"validation points name unknown workload(s) {unknown}; known: {sorted(self.workloads)}")
        mixed = sorted(name for name, spec in self.workloads.items() if spec.deadline_classes)
        if mixed:
            raise ValueError(f"validation workload(s) {mixed} have deadline_classes; a validation point sets "
                             "its own deadline, so leave them out here")
        if self.max_wall_s < self.duration_s:
            raise ValueError(f"max_wall_s {self.max_wall_s} is shorter than duration_s {self.duration_s}")
        if isinstance(self.dispatch_overhead, float) and not (0 <= self.dispatch_overhead < float("inf")):
            raise ValueError(f"dispatch_overhead must be 'harness', 'none' or a finite number of ms >= 0, "
                             f"got {self.dispatch_overhead}")
        return self


class LiveServerPreset(_Strict):
    """Live numbers over HTTP (planner/evaluation/live_server.py, `planner live-server`).

    Per task: ``anytime``, ``seed_p95`` and the best baseline behind the HTTP server at each of
    ``loads`` x the deadlines picked from the sweep by ``deadline_quantiles`` (0 = tightest, 1 =
    loosest), each on a ``duration_s`` Poisson trace; then the server's overhead against the
    in-process replay, and the three fault injections (raising configuration, CPU hog, load spike)
    on a ``fault_trace_s`` trace at the first load and deadline.
    """

    duration_s: float = Field(gt=0)
    loads: list[float] = Field(min_length=1)
    deadline_quantiles: list[float] = Field(min_length=1)
    # load relative to this machine's speed at start-up ("machine") or to the profiled capacity
    rate_basis: Literal["machine", "profile"] = "machine"
    # requests/s the HTTP path itself sustains here (server, client and models share one process and
    # its GIL): when set, a load is relative to min(the model's capacity, this), so "load 0.8" does not
    # overload the sockets before the models; None: the model's capacity alone (as the evaluation)
    server_capacity_rps: float | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0)
    warmup_calls: int = Field(default=10, ge=1)
    # calls timed per loaded configuration just before the runs: the validation's fresh service times
    calibration_calls: int = Field(default=30, ge=0)
    sim_seeds: int = Field(default=5, ge=1)
    wall_margin_s: float = Field(default=10.0, gt=0)
    overhead_load: float = Field(default=0.5, gt=0)
    fault_trace_s: float = Field(gt=0)
    fault_raise_s: float = Field(default=5.0, gt=0)
    fault_hog_s: float = Field(default=10.0, gt=0)
    fault_spike_s: float = Field(default=5.0, gt=0)
    # how long the client waits for answers after a fault trace's last arrival (a spike's backlog drains)
    fault_wall_margin_s: float = Field(default=60.0, gt=0)
    spike_factor: float = Field(default=5.0, gt=1)
    # a tiny MLPerf LoadGen Server-scenario run per task against the anytime server (0 = none)
    loadgen_queries: int = Field(default=0, ge=0)
    # the clients (trace replay and LoadGen's) send each deadline less this quantile of the client-server
    # path measured on earlier answers (planner/serving/budget.py); None (the default): as is
    path_quantile: float | None = Field(default=None, ge=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self) -> "LiveServerPreset":
        bad = [q for q in self.deadline_quantiles if not 0 <= q <= 1]
        if bad:
            raise ValueError(f"deadline_quantiles must lie in [0, 1], got {bad}")
        if any(not load > 0 for load in self.loads):
            raise ValueError(f"loads must be positive, got {self.loads}")
        longest = max(self.fault_raise_s, self.fault_hog_s, self.fault_spike_s)
        if longest >= self.fault_trace_s:
            raise ValueError(f"fault windows (longest {longest} s) must fit inside fault_trace_s {self.fault_trace_s}")
        return self


class Preset(_Strict):
    train: TrainPreset
    profile: ProfilePreset
    # the profiler's settings for device cuda (a GPU session is short: benchmarks/gpu_profile.sh); null = profile
    profile_cuda: ProfilePreset | None = None
    evaluate: EvaluatePreset
    validation: ValidationPreset | None = None
    live_server: LiveServerPreset | None = None
    # optional dependency groups whose models this preset uses (models.yaml `requires_extra`)
    extras: list[str] = Field(default_factory=list)
    # models of configs/models.yaml this preset leaves out (quick: DistilBERT, whose timing and scoring at
    # 66M parameters took about 40 % of a CI profile on a slow host, 2026-12-05)
    skip_models: list[str] = Field(default_factory=list)


class PresetsConfig(_Strict):
    presets: dict[str, Preset]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key repeated in one mapping is an error: plain YAML keeps the
    last value silently, so an edited preset could run with a value nobody meant."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


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
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
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


def task_models(task: str, preset_name: str | None = None) -> list[str]:
    """Models of ``task`` in configs/models.yaml order that ``preset_name`` uses: those needing no
    optional extra, plus those whose extra the preset lists, less those it skips (no preset: those
    needing no extra)."""
    validate_task(task)
    chosen = preset(preset_name) if preset_name is not None else None
    extras = set(chosen.extras) if chosen is not None else set()
    skipped = set(chosen.skip_models) if chosen is not None else set()
    unknown = sorted(skipped - set(models().models))
    if unknown:
        raise ConfigError(f"preset {preset_name!r}: skip_models names unknown models {unknown}; "
                          f"known: {sorted(models().models)}")
    return [name for name, spec in models().models.items()
            if spec.task == task and name not in skipped
            and (spec.requires_extra is None or spec.requires_extra in extras)]


def validate_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; known tasks: {list(TASKS)}")
    return task


def validate_deadline(deadline_ms: float) -> float:
    """A deadline given on the command line or in a config: :func:`planner.schema.check_deadline`."""
    return check_deadline(deadline_ms, "deadline", ConfigError)
