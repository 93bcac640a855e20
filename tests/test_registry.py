"""The method registry: one entry is all a new method needs, and every reader takes it from there."""

from __future__ import annotations

import pytest

from bundles import synthetic_bundle
from planner.analysis import plots, results
from planner.config import ConfigError, EvaluatePreset
from planner.evaluation import grid
from planner.plan import policies, registry


def test_entries_are_complete_and_one_method_is_proposed():
    assert registry.proposed() in registry.METHODS
    for name, entry in registry.METHODS.items():
        assert entry.name == name and entry.label and entry.role in registry.ROLES
        assert entry.color.startswith("#") and entry.marker
        entry.params()  # every parameter has a default
    assert set(registry.with_role("baseline")) >= {"infaas", "static_small", "static_large", "throughput_autotuner"}
    assert results.PLANNER_METHOD == registry.proposed()


def test_adding_a_method_is_one_entry(monkeypatch):
    """A new entry runs in the evaluation, is drawn in its colour and is counted as a baseline."""
    entry = registry.Method(
        "always_first", "Always the first", "#123456", "o", "baseline",
        fit=lambda bundle, task, percentile, params: bundle.profiles.loc[bundle.profiles["task"] == task,
                                                                         "config_id"].iloc[0],
        policy=lambda state, ctx: policies.fixed(state, "always_first"))
    monkeypatch.setitem(registry.METHODS, "always_first", entry)
    bundle = synthetic_bundle(n_configs=6, n_examples=200)
    settings = EvaluatePreset.model_validate(dict(n_requests=100, seeds=[1, 2], methods=["seed_p95", "always_first"],
                                                  workloads={"steady": {"kind": "poisson"}}))
    runs = grid.evaluate(bundle, "sst2", settings, [5.0], progress=False).runs
    assert set(runs["method"]) == {"seed_p95", "always_first"}
    assert (runs.loc[runs["method"] == "always_first", "main_config"] == bundle.profiles["config_id"].iloc[0]).all()
    assert plots.method_style("always_first")["color"] == "#123456"
    assert plots.method_order(["always_first", "seed_p95"]) == ["seed_p95", "always_first"]
    assert "always_first" in registry.with_role("baseline") and "always_first" in registry.default_methods()


def test_unknown_methods_and_parameters_are_named():
    with pytest.raises(ConfigError, match="presets.quick.evaluate.methods: .*unknown \\['magic'\\]"):
        registry.check_methods(["seed_p95", "magic"], "presets.quick.evaluate.methods")
    with pytest.raises(ConfigError, match="method_params.slack_aware: lookahead = 0"):
        registry.check_method_params({"slack_aware": {"lookahead": 0}})
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        registry.method("nope")
    assert registry.method_params("infaas", None).accuracy_margin == 0.02


def test_preset_params_are_what_the_preset_sets_now():
    """What a recorded measurement is compared with: the preset's values over the method's defaults,
    unknown names in a results table skipped rather than refused."""
    from planner import config

    raw = config.preset("full").evaluate.method_params.get("anytime", {})
    params = registry.preset_params("full", ["not_a_method", "anytime", "seed_p95"])
    assert list(params) == ["anytime", "seed_p95"]
    assert params["anytime"] == registry.method_params("anytime", None).model_copy(update=raw).model_dump(mode="json")
    assert all(params["anytime"][k] == v for k, v in raw.items())
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        registry.preset_method_params("full", "nope")


def test_changed_params_and_their_description():
    before, after = {"late_step": 0.01, "shed": True, "gone": 1}, {"late_step": 0.03, "shed": True, "new": "x"}
    assert registry.changed_params(before, after) == {"gone": (1, None), "late_step": (0.01, 0.03), "new": (None, "x")}
    assert registry.changed_params(before, dict(before)) == {}
    assert registry.describe_params({"late_step": 0.030, "shed": False, "lookahead": 64}) == \
        "late_step 0.03, lookahead 64, shed False"
    assert registry.describe_params({}) == "the same parameters"
