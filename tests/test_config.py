import inspect
import re
import shutil
from pathlib import Path
from typing import get_args

import pytest

from planner import config, workloads
from planner.paths import CONFIG_DIR


@pytest.fixture
def config_copy(tmp_path) -> Path:
    target = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_shipped_configs_are_valid():
    assert config.protocol().seeds == list(range(42, 52)) == config.preset("full").evaluate.seeds
    assert {"minilm-l6", "minilm-l3", "distilbert", "mobilenet_v2", "resnet18"} <= set(config.models().models)
    assert config.preset("quick").profile.min_passes >= 100
    assert all(d > 0 for d in config.deadlines().deadlines["sst2"])


def test_unknown_model_is_named(config_copy):
    _edit(config_copy / "models.yaml", "sst2: [[minilm-l3, minilm-l6],", "sst2: [[minilm-l3, bert-huge],")
    with pytest.raises(config.ConfigError, match=r"models\.yaml.*unknown model 'bert-huge'"):
        config.models(config_copy)
    with pytest.raises(config.ConfigError, match="unknown model 'bert-huge'; known models"):
        config.model_spec("bert-huge")


def test_negative_deadline_names_file_field_and_value(config_copy):
    _edit(config_copy / "deadlines.yaml", "sst2: [2,", "sst2: [-5,")
    with pytest.raises(config.ConfigError, match=r"deadlines\.yaml: field 'deadlines'.*-5"):
        config.deadlines(config_copy)
    with pytest.raises(config.ConfigError, match="positive"):
        config.validate_deadline(-1)


def test_empty_seed_list_is_rejected(config_copy):
    _edit(config_copy / "experimental_protocol.yaml", "seeds: [42, 43, 44, 45, 46, 47, 48, 49, 50, 51]", "seeds: []")
    with pytest.raises(config.ConfigError, match=r"experimental_protocol\.yaml: field 'seeds' = \[\]"):
        config.protocol(config_copy)


@pytest.mark.parametrize("old,new,names", [
    ("metric: effective_accuracy", "metric: speed", "unknown metric 'speed'"),
    ("primary_test: paired_t", "primary_test: sign_test", "primary_test"),
    ("opponent_roles: [baseline, ablation, hindsight]", "opponent_roles: [baseline, bound]", "opponent_roles"),
    ("cells: [task, workload, load]", "cells: [workload, load]", "starting with 'task'"),
    ("tests: [paired_t, wilcoxon]", "tests: [wilcoxon]", "not among tests"),
])
def test_the_preregistered_family_is_checked_where_it_is_read(config_copy, old, new, names):
    assert config.protocol().family.metric == "effective_accuracy"  # the study's family as registered
    _edit(config_copy / "experimental_protocol.yaml", old, new)
    with pytest.raises(config.ConfigError, match=names):
        config.protocol(config_copy)


@pytest.mark.parametrize("alpha", ["0", "1.5", "-0.1"])
def test_alpha_outside_unit_interval_is_rejected(config_copy, alpha):
    _edit(config_copy / "experimental_protocol.yaml", "alpha: 0.05", f"alpha: {alpha}")
    with pytest.raises(config.ConfigError, match=rf"field 'alpha' = {alpha}"):
        config.protocol(config_copy)


def test_unknown_preset_and_task_are_clear_errors():
    with pytest.raises(config.ConfigError, match="unknown preset 'huge'"):
        config.preset("huge")
    with pytest.raises(config.ConfigError, match="unknown task 'mnist'"):
        config.validate_task("mnist")


def test_not_yaml_mapping_is_rejected(config_copy):
    (config_copy / "deadlines.yaml").write_text("- just a list\n")
    with pytest.raises(config.ConfigError, match="expected a mapping"):
        config.deadlines(config_copy)


@pytest.mark.parametrize("kind", sorted(config.WORKLOAD_PARAMS))
def test_workload_params_match_the_generator_keywords(kind):
    """A preset's ``params`` are passed to the generator as keywords: the typed model must list exactly
    the generator's keyword parameters (after rate_rps, n, deadline_ms, example_ids, seed), with the
    same defaults, or a valid preset fails at generation time (or a generator option is unreachable)."""
    assert set(config.WORKLOAD_PARAMS) == set(workloads.GENERATORS) == set(workloads.TRACE_KINDS)
    params = list(inspect.signature(workloads.GENERATORS[kind]).parameters.values())
    assert [p.name for p in params[:5]] == ["rate_rps", "n", "deadline_ms", "example_ids", "seed"]
    fields = config.WORKLOAD_PARAMS[kind].model_fields
    assert [p.name for p in params[5:]] == list(fields)
    for p in params[5:]:
        field = fields[p.name]
        if field.is_required():
            assert p.default is inspect.Parameter.empty, f"{kind}.{p.name} is required in the config only"
        else:
            assert p.default == field.default, f"{kind}.{p.name}: generator {p.default!r} != config {field.default!r}"
    assert get_args(config.WorkloadSpec.model_fields["kind"].annotation) == tuple(workloads.GENERATORS)


@pytest.mark.parametrize("old, new, field", [
    ("bursty-cv4: {kind: gamma, params: {cv: 4}}", "bursty-cv4: {kind: gamma, params: {cv: four}}", "cv = 'four'"),
    ("bursty-cv4: {kind: gamma, params: {cv: 4}}", "bursty-cv4: {kind: gamma, params: {cv: 4, shape: 2}}",
     "shape = 2: Extra inputs are not permitted"),
    ("mmpp: {kind: mmpp, params: {peak_ratio: 4,", "mmpp: {kind: mmpp, params: {peak_ratio: -4,",
     "peak_ratio = -4"),
    ("steady: {kind: poisson}", "steady: {kind: poisson, params: {cv: 2}}", "cv = 2: Extra inputs"),
    ("steady: {kind: poisson}", "steady: {kind: twitter, params: {trace: c}}", "trace = 'c'"),
])
def test_bad_workload_params_in_a_preset_name_the_field(config_copy, old, new, field):
    _edit(config_copy / "presets.yaml", old, new)
    with pytest.raises(config.ConfigError, match=rf"presets\.yaml: field 'presets\.quick\.evaluate\.workloads\..*"
                                                 rf"{re.escape(field)}"):
        config.presets(config_copy)


def test_duplicate_yaml_key_is_an_error_not_last_wins(config_copy):
    _edit(config_copy / "experimental_protocol.yaml", "alpha: 0.05", "alpha: 0.05\nalpha: 0.5")
    with pytest.raises(config.ConfigError, match=r"experimental_protocol\.yaml: not valid YAML.*duplicate key 'alpha'"):
        config.protocol(config_copy)


@pytest.mark.parametrize("seeds", ["[-1]", "[1, 1]", "[1.5]", "['a']"])
def test_bad_seeds_fail_when_the_preset_is_read(config_copy, seeds):
    text = (config_copy / "presets.yaml").read_text()
    assert "seeds: [42, 43]" in text
    (config_copy / "presets.yaml").write_text(text.replace("seeds: [42, 43]", f"seeds: {seeds}", 1))
    with pytest.raises(config.ConfigError, match=r"presets\.yaml: field 'presets\.quick\.evaluate\.seeds"):
        config.presets(config_copy)


def test_per_model_epoch_caps_override_the_preset_and_must_be_positive():
    train = config.preset("full").train
    assert train.epochs_for("resnet18") == train.model_max_epochs["resnet18"]
    assert train.epochs_for("not-listed") == train.max_epochs
    with pytest.raises(ValueError, match="per-model epoch caps must be >= 1"):
        config.TrainPreset(time_budget_s=1, max_epochs=1, model_max_epochs={"resnet18": 0})
