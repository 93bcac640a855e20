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
