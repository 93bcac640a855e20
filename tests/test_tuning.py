"""Comparing parameter variants of the proposed method on development seeds (planner.analysis.tuning)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from bundles import synthetic_bundle
from planner import config, splits
from planner.analysis import tuning
from planner.evaluation import grid

REF = {"late_step": 0.01, "late_target": 0.009, "member_quantile": 0.65}
FAST = {**REF, "late_step": 0.03}


def _runs(variant: str, params: dict, accuracy: dict, late: dict) -> pd.DataFrame:
    rows = []
    for (workload, load), value in accuracy.items():
        for deadline in (5.0, 20.0):
            for seed in (0, 1):
                rows.append({"task": "sst2", "variant": variant, "params": json.dumps(params, sort_keys=True),
                             "workload": workload, "load": load, "deadline_ms": deadline, "seed": seed,
                             "effective_accuracy": value, "late_rate": late[(workload, load)],
                             "examples": tuning.DEVELOPMENT, "arrival_rates": tuning.SCORED_RATES})
    return pd.DataFrame(rows)


@pytest.fixture
def runs() -> pd.DataFrame:
    cells = [("steady", 0.5), ("bursty", 0.5), ("bursty", 1.3)]
    reference = _runs("previous", REF, dict(zip(cells, (0.70, 0.50, 0.40))), dict(zip(cells, (0.005, 0.012, 0.030))))
    faster = _runs("step03", FAST, dict(zip(cells, (0.69, 0.49, 0.37))), dict(zip(cells, (0.004, 0.009, 0.020))))
    return pd.concat([reference, faster], ignore_index=True)


def test_changes_are_measured_against_the_reference_and_late_cells_counted_at_light_loads_only(runs):
    summary = tuning.compare_variants(runs, late_limit=0.01, reference="previous").set_index("variant")
    assert summary.loc["previous", "mean_change"] == 0.0
    assert summary.loc["step03", "mean_change"] == pytest.approx((-0.01 - 0.01 - 0.03) / 3)
    assert summary.loc["step03", "worst_change"] == pytest.approx(-0.03)
    assert summary.loc["step03", "worst_cell"] == "bursty @ 1.3"
    assert summary.loc["step03", "best_cell"] == "bursty @ 0.5" and summary.loc["step03", "n_cells_ahead"] == 0
    # the 3 % late cell is at load 1.3: outside the limit's scope; the 1.2 % one at 0.5 counts
    assert summary.loc["previous", "light_cells_over_late_limit"] == 1
    assert summary.loc["step03", "light_cells_over_late_limit"] == 0
    assert summary.loc["previous", "n_light_cells"] == 2


def test_a_missing_reference_or_column_is_named(runs):
    with pytest.raises(ValueError, match="reference variant 'preset'"):
        tuning.compare_variants(runs, late_limit=0.01)
    with pytest.raises(ValueError, match="late_rate"):
        tuning.compare_variants(runs.drop(columns="late_rate"), late_limit=0.01, reference="previous")


def test_the_text_names_the_variant_the_preset_uses_and_what_it_bought(runs):
    summary = tuning.compare_variants(runs, late_limit=0.01, reference="previous")
    text = tuning.variant_text(summary, FAST, late_limit=0.01)
    assert "step03 (late_step 0.03)" in text
    assert "0 of 2 light cells over 1% late (reference: 1)" in text
    assert tuning.variant_text(summary, {**FAST, "late_step": 0.05}, late_limit=0.01) == ""
    # a study run as `--variant` of the preset itself names it as such, not as "the parameters of preset"
    own = tuning.compare_variants(runs.replace({"variant": {"step03": "preset"}}), late_limit=0.01,
                                  reference="previous")
    assert "The preset uses its own parameters (late_step 0.03)" in tuning.variant_text(own, FAST, late_limit=0.01)
    table = tuning.variant_table(summary)
    assert list(table["parameters"]) == ["late_step 0.01", "late_step 0.03"]
    assert table["variant"].iloc[0] == "previous (reference)"
    assert list(table["cells ahead"]) == ["", "0 of 3"]


def test_a_variant_that_loses_on_average_shows_the_cells_it_wins(runs):
    """The mean and the worst cell hide a family of cells a variant wins; the best cell and the count show it."""
    mixed = runs.copy()
    mixed.loc[(mixed["variant"] == "step03") & (mixed["workload"] == "steady"), "effective_accuracy"] = 0.72
    summary = tuning.compare_variants(mixed, late_limit=0.01, reference="previous").set_index("variant")
    assert summary.loc["step03", "mean_change"] < 0
    assert summary.loc["step03", "best_cell"] == "steady @ 0.5"
    assert summary.loc["step03", "best_change"] == pytest.approx(0.02)
    assert summary.loc["step03", "n_cells_ahead"] == 1
    table = tuning.variant_table(summary.reset_index())
    assert table.set_index("variant").loc["step03", "best cell (change)"] == "steady @ 0.5 (+0.0200)"


def test_the_text_says_when_another_variant_beats_the_presets_within_the_late_limit(runs):
    # the reference now keeps its light cells within the limit and scores higher: the choice is overturned
    within = runs.assign(late_rate=runs["late_rate"].clip(upper=0.009))
    summary = tuning.compare_variants(within, late_limit=0.01, reference="previous")
    text = tuning.variant_text(summary, FAST, late_limit=0.01)
    assert "In these runs previous scores higher on every task (sst2 +0.0167 mean effective accuracy)" in text
    assert "the preset has not been moved to it" in text
    # the preset moved to the reference: nothing in the study beats it
    assert tuning.variant_text(summary, REF, late_limit=0.01) == (
        "The preset uses the reference parameters (previous). No other variant scores higher on every task with no "
        "light cell over the late limit.")
    # over the limit, the higher score does not count (the fixture's reference has a 1.2 % light cell)
    summary = tuning.compare_variants(runs, late_limit=0.01, reference="previous")
    assert "scores higher" not in tuning.variant_text(summary, FAST, late_limit=0.01)


def test_a_parameter_added_after_a_study_does_not_hide_the_variant_the_preset_uses(runs):
    summary = tuning.compare_variants(runs, late_limit=0.01, reference="previous")
    # the method gained a parameter after this study ran: the study still names its choice
    assert "step03 (late_step 0.03)" in tuning.variant_text(summary, {**FAST, "arrival_spread": True}, late_limit=0.01)
    # but a recorded parameter the preset no longer has is a different choice
    assert tuning.variant_text(summary, {k: v for k, v in FAST.items() if k != "late_target"}, late_limit=0.01) == ""


def test_a_study_run_before_the_preset_moved_another_parameter_names_what_differs(runs):
    summary = tuning.compare_variants(runs, late_limit=0.01, reference="previous")
    moved = {**FAST, "late_target": 0.007}
    assert tuning.variant_text(summary, moved, late_limit=0.01) == ""
    text = tuning.nearest_variant_text(summary, moved)
    assert "the nearest, step03, ran with late_target 0.009 (now 0.007)" in text
    # two parameters away from the reference, one from step03: the nearer one is named
    assert "previous" not in text
    assert "late_step" not in text


def test_a_variant_named_after_the_preset_is_marked_once_the_preset_has_moved(runs):
    own = tuning.compare_variants(runs.replace({"variant": {"step03": "preset"}}), late_limit=0.01,
                                  reference="previous")
    assert "preset" in list(tuning.variant_table(own, FAST)["variant"])
    moved = tuning.variant_table(own, REF)["variant"].tolist()
    assert sorted(moved) == ["preset (as the study ran)", "previous (reference)"]
    assert "the nearest, preset (as the study ran), ran with late_step 0.03 (now 0.05)" in \
        tuning.nearest_variant_text(own, {**REF, "late_step": 0.05})


def test_each_study_is_read_from_its_own_folder_and_rendered(tmp_path, monkeypatch, runs):
    monkeypatch.setattr(tuning, "results_dir", lambda preset: tmp_path / preset)
    assert tuning.studies("full") == []
    assert "no variant study" in tuning.studies_markdown("full", ["sst2"], FAST, 0.01)
    for study, frame in {"late_step": runs,
                         "other": runs.assign(variant=runs["variant"].str.replace("step03", "other"))}.items():
        folder = tuning.variants_dir("full", study)
        folder.mkdir(parents=True)
        for variant, part in frame.groupby("variant"):
            part.assign(reference="previous").to_csv(folder / f"sst2_{variant}.csv", index=False)
    assert tuning.studies("full") == ["late_step", "other"]
    assert set(tuning.load_variant_runs("full", "late_step")["variant"]) == {"previous", "step03"}
    text = tuning.studies_markdown("full", ["sst2"], FAST, 0.01)
    assert text.index("Study `late_step`") < text.index("Study `other`")
    assert "development seeds 0, 1" in text and "| previous (reference) |" in text
    assert "requests drawn from half of the calibration part" in text
    assert "each cell at the evaluation's arrival rate" in text
    assert tuning.studies_markdown("full", ["cifar10"], FAST, 0.01).startswith("This run has no variant study")


def test_the_book_says_when_a_study_drew_its_requests_from_the_scored_part(tmp_path, monkeypatch, runs):
    monkeypatch.setattr(tuning, "results_dir", lambda preset: tmp_path / preset)
    folder = tuning.variants_dir("full", "old")
    folder.mkdir(parents=True)
    for variant, part in runs.drop(columns="examples").groupby("variant"):  # written before development examples
        part.assign(reference="previous").to_csv(folder / f"sst2_{variant}.csv", index=False)
    assert "requests drawn from the scored part" in tuning.studies_markdown("full", ["sst2"], FAST, 0.01)
    runs[runs["variant"] == "step03"].assign(reference="previous").to_csv(folder / "sst2_step03.csv", index=False)
    assert "50% of its runs on development examples" in tuning.studies_markdown("full", ["sst2"], FAST, 0.01)
    for variant, part in runs.drop(columns="arrival_rates").groupby("variant"):  # written before 2026-12-08
        part.assign(reference="previous").to_csv(folder / f"sst2_{variant}.csv", index=False)
    assert "another rate than the evaluation's" in tuning.studies_markdown("full", ["sst2"], FAST, 0.01)


def test_committed_variant_runs_load_with_their_full_parameters():
    names = tuning.studies("full")
    if not names:
        pytest.skip("no committed variant study")
    for study in names:
        runs = tuning.load_variant_runs("full", study)
        assert runs is not None, study
        assert set(runs["seed"]).isdisjoint(config.preset("full").evaluate.seeds)  # development seeds only
        assert tuning.examples_of(runs) == tuning.DEVELOPMENT, study  # and development examples
        assert tuning.at_scored_rates(runs), study       # at the evaluation's arrival rates
        for params in runs["params"].unique():
            assert {"late_step", "late_target", "member_quantile"} <= set(json.loads(params))


def test_runs_are_reused_only_for_the_same_seeds_and_parameters_and_carry_this_studys_reference(tmp_path, runs):
    """A file copied from another study holds the right runs but that study's reference: reusing it
    stamps (and rewrites) this study's, so the book compares with the reference the study ran against."""
    path = tmp_path / "sst2_previous.csv"
    runs[runs["variant"] == "previous"].assign(reference="spaced").to_csv(path, index=False)
    assert tuning.reusable_runs(path, [0, 1], FAST, "previous") is None      # other parameters: run again
    assert tuning.reusable_runs(path, [0, 1, 2], REF, "previous") is None    # other seeds: run again
    assert tuning.reusable_runs(tmp_path / "missing.csv", [0, 1], REF, "previous") is None
    scored = tmp_path / "sst2_scored.csv"
    runs[runs["variant"] == "previous"].drop(columns="examples").to_csv(scored, index=False)
    assert tuning.reusable_runs(scored, [0, 1], REF, "previous") is None     # drawn from the scored part: run again
    own_rates = tmp_path / "sst2_own_rates.csv"
    runs[runs["variant"] == "previous"].drop(columns="arrival_rates").to_csv(own_rates, index=False)
    assert tuning.reusable_runs(own_rates, [0, 1], REF, "previous") is None  # the development bundle's rates: run again
    reused = tuning.reusable_runs(path, [1, 0], REF, "previous")
    assert reused is not None and len(reused) == 12 and set(reused["reference"]) == {"previous"}
    assert set(pd.read_csv(path)["reference"]) == {"previous"}


def test_development_runs_fit_on_one_calibration_half_and_draw_and_credit_on_the_other():
    """Nothing of the scored part reaches a development run: its planning accuracies come from one
    half of the calibration part, its requests from the other, and the bundle it was given is unchanged."""
    bundle = synthetic_bundle(n_configs=6, n_examples=300)
    before = bundle.profiles.copy()
    preds = bundle.predictions
    split = splits.predictions_split(preds, "sst2")
    fit, score = splits.development_halves(split, splits.labels_by_example(preds))
    dev, pool = tuning.development_bundle(bundle, "sst2")
    assert np.array_equal(pool, score) and tuning.development_sizes(bundle, "sst2") == (len(fit), len(score))
    for row in dev.profiles.itertuples(index=False):
        own = preds[preds["config_id"] == row.config_id].set_index("example_id")["correct"]
        assert row.calibration_accuracy == pytest.approx(own.loc[fit].mean())
        assert row.accuracy == pytest.approx(own.loc[score].mean())
    assert bundle.profiles.equals(before)
    settings = config.EvaluatePreset.model_validate({
        "n_requests": 300, "seeds": [0], "loads": [0.8], "workloads": {"steady": {"kind": "poisson"}},
        "deadlines": {"sst2": [5.0]}, "methods": ["anytime"]})
    served = grid.run_cell(dev, grid.Cell("steady", 0.8, 5.0, 0), "sst2", settings, keep_requests=True,
                           example_pool=pool).requests
    assert set(served["example_id"]) <= set(score) and len(set(served["example_id"])) > 0.8 * len(score)
    with pytest.raises(ValueError, match="no predictions for task 'cifar10'"):
        tuning.development_bundle(bundle, "cifar10")


def test_a_development_cell_arrives_at_the_evaluations_rate_whatever_its_half_part_accuracies_pick():
    """The load is a share of the seed rule's configuration's capacity; fitted on half the calibration
    part, the rule can pick another configuration (on the committed CIFAR-10 profiles at 50 ms, one with a
    twelfth of the capacity), so a development cell would be another load than the evaluation's cell."""
    bundle = synthetic_bundle(n_configs=6, n_examples=300)
    dev, pool = tuning.development_bundle(bundle, "sst2")
    settings = config.EvaluatePreset.model_validate({
        "n_requests": 200, "seeds": [0], "loads": [0.8], "workloads": {"steady": {"kind": "poisson"}},
        "deadlines": {"sst2": [50.0]}, "methods": ["anytime"]})
    cell = grid.Cell("steady", 0.8, 50.0, 0)
    scored = grid.run_cell(bundle, cell, "sst2", settings).trace
    profiles = dev.profiles.copy()
    capacity = profiles.set_index("config_id")["throughput_items_s"]
    other = profiles[(profiles["lat_p95_ms"] <= 50.0)
                     & (profiles["throughput_items_s"] != capacity[scored["reference_config"]])].index[0]
    profiles.loc[other, "calibration_accuracy"] = 1.0  # the half part's rule now picks another capacity
    tilted = dataclasses.replace(dev, profiles=profiles)
    own = grid.run_cell(tilted, cell, "sst2", settings, example_pool=pool).trace
    assert own["target_rate_rps"] != pytest.approx(scored["target_rate_rps"])
    matched = grid.run_cell(tilted, cell, "sst2", settings, example_pool=pool,
                            load_reference=grid.fit_load_reference(bundle, settings.percentile)).trace
    assert matched["reference_config"] == scored["reference_config"]
    assert matched["target_rate_rps"] == scored["target_rate_rps"]


def test_a_tolerance_chosen_on_development_examples_is_rescaled_to_the_whole_calibration_part(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "results_dir", lambda preset: tmp_path / preset)
    bundle = synthetic_bundle(n_configs=6, n_examples=300)
    cells = [("steady", 0.5), ("bursty", 1.3)]
    folder = tuning.variants_dir("full", "accuracy_tolerance")
    folder.mkdir(parents=True)
    for name, tol, acc in (("previous", 0.002, 0.50), ("tol02", 0.02, 0.52), ("tol03", 0.03, 0.53)):
        _runs(name, {**REF, "accuracy_tolerance": tol}, dict.fromkeys(cells, acc), dict.fromkeys(cells, 0.001)) \
            .assign(examples=tuning.DEVELOPMENT, reference="previous").to_csv(folder / f"sst2_{name}.csv", index=False)
    n_fit, n_score = tuning.development_sizes(bundle, "sst2")
    text = tuning.tolerance_scaling_text("full", bundle, "sst2", 0.02, 0.01)
    assert "best accuracy_tolerance on development examples is 0.03 (tol03, +0.0100" in text
    assert f"on {n_fit} examples, the evaluation on {n_fit + n_score}" in text
    assert f"about {0.03 / ((n_fit + n_score) / n_fit) ** 0.5:.3f} here" in text
    assert "is also the best" in tuning.tolerance_scaling_text("full", bundle, "sst2", 0.03, 0.01)
    assert tuning.tolerance_scaling_text("full", bundle, "cifar10", 0.02, 0.01) == ""
    for path in folder.glob("*.csv"):  # the same runs drawn from the scored part say nothing here
        pd.read_csv(path).drop(columns="examples").to_csv(path, index=False)
    assert tuning.tolerance_scaling_text("full", bundle, "sst2", 0.02, 0.01) == ""
