"""One registry of methods: everything the evaluation, the plots, the README table and the book
need to know about a method, in one entry.

Each :class:`Method` gives its name, display label, colour and marker, its role (the ``proposed``
method, a ``baseline``, a ``bound`` or an ``ablation``), its typed parameters (a pydantic model,
filled from the preset's ``evaluate.method_params[name]``), how it is fitted once per task
(``fit(bundle, task, percentile, params) -> state``) and how it builds the policy that serves one
trace (``policy(state, trace_context) -> OnlinePolicy``). Adding a method is one entry here; the
preset chooses which registered methods run (default: every entry with ``default=True``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from planner.config import ConfigError
from planner.metrics import METRICS
from planner.plan import policies
from planner.plan.anytime import AnytimePolicy
from planner.plan.baselines import INFaaSStyle, Oracle, StaticLarge, StaticSmall, ThroughputAutotuner
from planner.plan.planner import DeadlinePlanner
from planner.schema import ProfileBundle

# proposed: the method the study puts forward; baseline: what it is compared against; hindsight: a
# reference that sees the trace before choosing (not an online method); bound: an upper bound no
# online method can exceed; ablation: the proposed method or a predecessor with a part removed.
# Every method fits on the profiles' calibration accuracy (planner.splits); hindsight and bound
# entries see the scored trace itself by definition, which is why they are references, not methods.
Role = Literal["proposed", "baseline", "hindsight", "bound", "ablation"]
ROLES: tuple[Role, ...] = ("proposed", "baseline", "hindsight", "bound", "ablation")


class MethodParams(BaseModel):
    """Base of every method's parameters: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(MethodParams):
    """A method without parameters of its own (the shared latency percentile aside)."""


class InfaasParams(MethodParams):
    # accuracy floor = the task's best calibration accuracy minus this margin (learned in fit)
    accuracy_margin: float = Field(default=0.02, ge=0, le=1)


class SlackParams(MethodParams):
    # queued requests the value rule looks at per batch
    lookahead: int = Field(default=64, ge=1)


class AnytimeParams(MethodParams):
    lookahead: int = Field(default=64, ge=1)
    # observations over which the service-time calibration halves its memory
    halflife: float = Field(default=8.0, gt=0)
    shed: bool = True
    early_answers: bool = True
    # pad the window with the arrivals expected while it is served, valued over the recent deadline mix
    # (with continuation, what prices a slow choice; see planner.plan.anytime)
    expected_arrivals: bool = True
    # shed a batch member whose slack is below this quantile of the chosen configuration (None: never)
    # (0.65 was chosen on probe runs of the full profiles under the whole-window value rule, not re-tuned since)
    member_quantile: float | None = 0.65
    # steer that quantile online so the share of served requests answered late settles at this target
    # (None: keep member_quantile fixed); late_step: how far one late answer moves the quantile
    late_target: float | None = Field(default=None, gt=0, lt=1)
    late_step: float = Field(default=0.02, gt=0, lt=1)
    # value a candidate on the head batch only, the positions behind it served after it at the per-item
    # service time the policy has been achieving (the server time a slow choice takes from them)
    continuation: bool = True
    # learn what serving a configuration right after another costs (cold caches) and charge it to a
    # switch (idle in the simulator, whose draws carry no such cost)
    switch_aware: bool = True
    # drop a candidate that another, faster one matches within this accuracy (epsilon-dominance): a
    # difference the calibration examples cannot resolve does not buy server time (0: exact dominance)
    accuracy_tolerance: float = Field(default=0.0, ge=0, lt=1)
    # the expected arrivals at the quantiles of a Poisson process's arrival times at the recent rate,
    # not evenly spaced (1 - 1/e = 63 % of Poisson inter-arrival times are shorter than their mean)
    arrival_spread: bool = True
    # ask the server to stop a batch that would answer nobody on time, at the deadline, where the
    # runtime can stop a running call (ONNX Runtime; the simulator, the live replay and the HTTP server)
    cancel_at_deadline: bool = True
    # the member cut-off quantile of a one-request configuration the server can stop at the deadline:
    # such a call answers on time or nobody, so a try costs server time but no late answer
    # (None: the same cut-off as the others)
    stoppable_quantile: float | None = None
    # the law of the expected arrivals' times: "poisson" (the recent rate) or "empirical" (the recent gaps'
    # own law, a renewal process conditioned on the time since the last arrival; planner.plan.arrivals)
    arrival_model: Literal["poisson", "empirical"] = "poisson"
    # value a shed request as taking no server time: a head-batch member below the cut-off makes room for
    # the next one (as the serving rule fills a batch), and one behind the head batch that would be late at
    # the median when its turn comes is shed then (False: each holds its place, the rule before 2026-12-07)
    shed_frees_time: bool = False
    # compare each observed service time with its configuration's geometric mean in the profile, not its
    # median: the log-space calibration then learns scale 1 from the profile's own draws whatever their
    # shape (a cascade's, two-humped, taught 0.82x-1.42x against the median; False: the median, as before)
    geometric_reference: bool = False
    # the service-time calibration's starting factor: the machine's speed now over the profile's.
    # 1 in the simulator (its service times come from the profile itself); a live replay sets it
    # from the re-timed reference (planner.profile.reference, planner.evaluation.live_fault)
    startup_scale: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class HindsightParams(MethodParams):
    # the metric the best fixed configuration maximises on each trace (higher is better)
    metric: str = "effective_accuracy"

    @field_validator("metric")
    @classmethod
    def _higher_is_better(cls, value: str) -> str:
        if value not in METRICS or not METRICS[value].higher_is_better:
            raise ValueError(f"metric must be a higher-is-better metric, one of "
                             f"{sorted(m for m, v in METRICS.items() if v.higher_is_better)}; got {value!r}")
        return value


@dataclass(frozen=True)
class TraceContext:
    """What a method may know about the trace it is about to serve.

    Online methods use only ``task``, ``deadline_ms`` (the nominal deadline of the cell) and
    ``workload_class``; hindsight methods may also replay the trace: ``score(config_id, metric)``
    simulates a fixed configuration on this very trace and returns the metric, and
    ``correct_fraction(config_id)`` (cheap) is the fraction of the trace's requests it answers
    correctly, an upper bound of its effective accuracy. ``upper_bound()`` is the clairvoyant
    bound on the effective accuracy of any schedule of this trace (the evaluation supplies it).
    """

    task: str
    deadline_ms: float
    workload_class: str
    trace: pd.DataFrame
    score: Callable[[str, str], float]
    correct_fraction: Callable[[str], float]
    upper_bound: Callable[[], float] = lambda: float("nan")


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    color: str
    marker: str
    role: Role
    fit: Callable[[ProfileBundle, str, int, Any], Any]
    policy: Callable[[Any, TraceContext], policies.OnlinePolicy] | None
    params: type[MethodParams] = NoParams
    default: bool = True
    description: str = ""
    # a bound is not run: it reports a number per trace (effective accuracy), other metrics are NaN
    bound: Callable[[Any, TraceContext], float] | None = None

    def __post_init__(self) -> None:
        if (self.policy is None) == (self.bound is None):
            raise ValueError(f"method {self.name!r}: give exactly one of policy and bound")


# ---------------------------------------------------------------- builders shared by entries

def _static_method(estimator: Callable[[int, Any], Any]) -> tuple[Callable, Callable]:
    """fit/policy pair for a method with the planner interface (fit(profiles), select(task, deadline, workload))."""

    def fit(bundle: ProfileBundle, task: str, percentile: int, params: Any) -> Any:
        return estimator(percentile, params).fit(bundle.profiles)

    def policy_of(state: Any, ctx: TraceContext, name: str) -> policies.OnlinePolicy:
        return policies.static(state, ctx.task, ctx.workload_class, name=name)

    return fit, policy_of


def _entry(name: str, label: str, color: str, marker: str, role: Role, estimator: Callable[[int, Any], Any],
           params: type[MethodParams] = NoParams, default: bool = True, description: str = "") -> Method:
    fit, policy_of = _static_method(estimator)
    return Method(name, label, color, marker, role, fit, lambda state, ctx: policy_of(state, ctx, name), params,
                  default, description)


def _slack(name: str, rule: str) -> tuple[Callable, Callable]:
    def fit(bundle: ProfileBundle, task: str, percentile: int, params: Any) -> policies.SlackAwarePolicy:
        lookahead = params.lookahead if isinstance(params, SlackParams) else 64
        return policies.SlackAwarePolicy(task, percentile, rule, lookahead, name).fit(bundle)

    return fit, lambda state, ctx: state


def _hindsight_fit(bundle: ProfileBundle, task: str, percentile: int, params: HindsightParams) -> dict:
    return {"profiles": bundle.profiles, "percentile": percentile, "metric": params.metric}


def _hindsight_policy(state: dict, ctx: TraceContext) -> policies.OnlinePolicy:
    """Best fixed configuration for this very trace; exact pruning by the correct fraction when the
    metric is effective accuracy (a configuration cannot be on time and correct more often than correct)."""
    metric = state["metric"]
    bound = ctx.correct_fraction if metric == "effective_accuracy" else None
    oracle = Oracle(lambda c: ctx.score(c, metric), state["percentile"], upper_bound_fn=bound)
    choice = oracle.fit(state["profiles"], task=ctx.task).select_for_trace(ctx.task).config_id
    return policies.fixed(choice, "best_fixed_hindsight")


def _anytime_fit(bundle: ProfileBundle, task: str, percentile: int, params: AnytimeParams) -> AnytimePolicy:
    return AnytimePolicy(task, **params.model_dump()).fit(bundle)


def _anytime_policy(state: AnytimePolicy, ctx: TraceContext) -> policies.OnlinePolicy:
    return copy.copy(state).fresh()  # its own calibration state for this trace


_slack_fit, _slack_policy = _slack("slack_aware", "value")
_drain_fit, _drain_policy = _slack("slack_aware_drain", "drain")

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("anytime", "Anytime (proposed)", "#d62728", "*", "proposed", _anytime_fit, _anytime_policy, AnytimeParams,
           description="per batch, the configuration maximising expected correct on-time answers in the queue "
                       "and the arrivals expected meanwhile, on service times calibrated online; sheds "
                       "unreachable requests, answers early from a cascade's first stage"),
    _entry("seed_p95", "Seed rule (static p95)", "#1f77b4", "o", "baseline",
           lambda p, _: DeadlinePlanner(p),
           description="the seed's static rule: most accurate configuration whose profiled p95 meets the deadline"),
    Method("slack_aware", "Slack-aware (queue)", "#ff7f0e", "s", "ablation", _slack_fit, _slack_policy, SlackParams,
           description="per batch, the configuration maximising expected correct on-time answers in the queue"),
    _entry("infaas", "INFaaS-style", "#2ca02c", "^", "baseline",
           lambda p, params: INFaaSStyle(params.accuracy_margin, p), InfaasParams,
           description="cheapest configuration meeting the deadline and an accuracy floor"),
    _entry("throughput_autotuner", "Throughput autotuner", "#17becf", "D", "baseline",
           lambda p, _: ThroughputAutotuner(p),
           description="highest throughput meeting the deadline, accuracy-blind"),
    _entry("static_small", "Static small", "#9467bd", "v", "baseline", lambda p, _: StaticSmall(p),
           description="always the fastest configuration"),
    _entry("static_large", "Static large", "#8c564b", "P", "baseline", lambda p, _: StaticLarge(p),
           description="always the most accurate configuration"),
    Method("best_fixed_hindsight", "Best fixed (hindsight)", "#e377c2", "X", "hindsight", _hindsight_fit,
           _hindsight_policy,
           HindsightParams, description="the best fixed configuration for each trace, chosen after seeing it"),
    Method("clairvoyant", "Clairvoyant bound", "#000000", "_", "bound", lambda *_: None, None,
           bound=lambda state, ctx: ctx.upper_bound(),
           description="an upper bound on effective accuracy no schedule of the trace can exceed (window LP, HiGHS)"),
    Method("slack_aware_drain", "Slack-aware (drain rule)", "#7f7f7f", "<", "ablation", _drain_fit, _drain_policy,
           default=False, description="the simpler drain rule of the slack-aware policy"),
]}


# ---------------------------------------------------------------- lookups

def method(name: str) -> Method:
    """The registered method ``name``; an unknown name is a clear error listing the known ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; registered methods: {list(METHODS)}")
    return METHODS[name]


def default_methods() -> list[str]:
    """The methods a preset runs when it names none: every entry with ``default=True``, in registry order."""
    return [m.name for m in METHODS.values() if m.default]


def check_methods(names: list[str] | None, where: str = "evaluate.methods") -> list[str]:
    """``names`` (or the defaults when None), checked against the registry; ``where`` names the field."""
    if names is None:
        return default_methods()
    unknown = [n for n in names if n not in METHODS]
    if unknown or len(set(names)) != len(names):
        raise ConfigError(f"{where}: methods must be distinct registered names; unknown {unknown} in {names}; "
                          f"registered: {list(METHODS)}")
    return list(names)


def method_params(name: str, raw: dict | None, where: str = "evaluate.method_params") -> MethodParams:
    """The typed parameters of ``name`` from a preset's raw mapping (missing keys take defaults)."""
    entry = method(name)
    try:
        return entry.params.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}.{name}: {problems}") from None


def check_method_params(params: dict[str, dict], where: str = "evaluate.method_params") -> dict[str, MethodParams]:
    """Every entry of a preset's ``method_params``: known method names, valid typed values."""
    return {name: method_params(name, raw, where) for name, raw in params.items()}


def preset_method_params(preset: str, name: str) -> MethodParams:
    """The typed parameters ``name`` has in ``preset`` now (configs/presets.yaml; defaults where it is silent)."""
    from planner import config

    return method_params(name, config.preset(preset).evaluate.method_params.get(name),
                         f"configs/presets.yaml: presets.{preset}.evaluate.method_params")


def preset_params(preset: str, methods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{method: parameters}`` of every registered name in ``methods`` as ``preset`` sets them now,
    JSON-ready: what a measurement's recorded parameters are compared with (unknown names are skipped,
    so the methods of a results table can be passed as they are)."""
    return {m: preset_method_params(preset, m).model_dump(mode="json") for m in order(methods) if m in METHODS}


def params_record(methods: Iterable[str], params: Mapping[str, MethodParams] | None = None) -> dict[str, dict[str, Any]]:
    """``{method: parameters}`` a run of ``methods`` uses (``params``, else each method's defaults),
    JSON-ready: written beside a measurement so that it names what it ran with."""
    given = params or {}
    return {m: (given.get(m) or method_params(m, None)).model_dump(mode="json") for m in methods}


# Parameters added to a method after runs that record their parameters were made, each with the value that
# does what the method did before it existed: a record without it ran with that value, so it is no change
# (planner.evaluation.loadgen.stale_params_note). A parameter whose addition changed what the method does
# (the preset set it otherwise) is not listed: records without it did run differently.
AS_BEFORE_ADDED: dict[str, dict[str, Any]] = {"anytime": {"geometric_reference": False}}


def as_recorded(method: str, params: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, Any]:
    """A record's ``params`` of ``method`` with each parameter added since (:data:`AS_BEFORE_ADDED`) that
    ``now`` (the parameters it is compared with) names, at the value it ran with then."""
    added = AS_BEFORE_ADDED.get(method, {})
    return {**{k: v for k, v in added.items() if k in now}, **params}


def changed_params(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (before, after)}`` for every parameter whose value differs (absent counts as None)."""
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def describe_value(value: Any) -> str:
    """One parameter value as the book prints it: numbers in short form (0.03, not 0.030000)."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def describe_params(values: Mapping[str, Any]) -> str:
    """``"name value, ..."`` sorted by name, numbers in short form; "the same parameters" when empty."""
    return ", ".join(f"{k} {describe_value(v)}" for k, v in sorted(values.items())) or "the same parameters"


def order(names) -> list[str]:
    """Names in registry order, unknown ones after, sorted: stable legends and table columns."""
    present = list(dict.fromkeys(str(n) for n in names))
    return [m for m in METHODS if m in present] + sorted(n for n in present if n not in METHODS)


def with_role(*roles: Role) -> list[str]:
    """Registered method names with one of ``roles``, in registry order."""
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise ValueError(f"unknown role(s) {bad}; roles: {list(ROLES)}")
    return [m.name for m in METHODS.values() if m.role in roles]


def proposed() -> str:
    """The one proposed method (the book's and README's headline)."""
    names = with_role("proposed")
    if len(names) != 1:
        raise AssertionError(f"the registry must hold exactly one proposed method, has {names}")
    return names[0]
