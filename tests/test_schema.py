"""The table schema refuses values a stage would silently misuse (truncated batch sizes, unknown tasks...)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner import config
from planner.schema import (DOMINATED_COLUMNS, LATENCY_SAMPLE_COLUMNS, PREDICTION_COLUMNS, TASKS, TRACE_COLUMNS,
                            SchemaError, measured, validate, validate_dominated, validate_profiles)
from bundles import synthetic_bundle, synthetic_profiles


@pytest.fixture
def profiles() -> pd.DataFrame:
    return synthetic_profiles(6, seed=1)[0]


def poke(frame: pd.DataFrame, column: str, value: object, row: int = 2) -> pd.DataFrame:
    out = frame.copy()
    if column in out and not isinstance(value, str):
        out[column] = out[column].astype(object)
    out.loc[row, column] = value
    return out


@pytest.mark.parametrize("value", [0, -4])
def test_batch_size_below_one_is_refused_naming_the_config(profiles, value):
    with pytest.raises(SchemaError, match=rf"batch_size must be an integer >= 1.*{profiles.loc[2, 'config_id']}.*{value}"):
        validate_profiles(poke(profiles, "batch_size", value), "profiles.csv")


def test_fractional_batch_size_is_refused_not_truncated(profiles):
    with pytest.raises(SchemaError, match=r"profiles\.csv: column 'batch_size' must hold whole numbers, got \[1\.7\]"):
        validate_profiles(poke(profiles, "batch_size", 1.7), "profiles.csv")


def test_a_float_column_of_whole_numbers_is_an_integer_column(profiles):
    out = validate_profiles(profiles.assign(batch_size=profiles["batch_size"].astype(float)), "profiles.csv")
    assert out["batch_size"].dtype == np.int64
    assert out["batch_size"].tolist() == profiles["batch_size"].tolist()


def test_n_samples_must_be_at_least_one(profiles):
    with pytest.raises(SchemaError, match=r"n_samples must be an integer >= 1"):
        validate_profiles(poke(profiles, "n_samples", 0), "profiles.csv")


@pytest.mark.parametrize("value", [0.0, -3.0, np.inf, np.nan])
def test_throughput_must_be_positive_and_finite(profiles, value):
    with pytest.raises(SchemaError, match=r"profiles\.csv: .*throughput_items_s'? (must be positive and finite|has missing)"):
        validate_profiles(poke(profiles, "throughput_items_s", value), "profiles.csv")


@pytest.mark.parametrize("column, factor", [("lat_p50_ms", 1.5), ("lat_p99_ms", 0.5)])
def test_latency_percentiles_must_be_ordered(profiles, column, factor):
    bad = poke(profiles, column, profiles.loc[2, "lat_p95_ms"] * factor)
    with pytest.raises(SchemaError, match=rf"profiles\.csv: need lat_p\d\d_ms <= lat_p\d\d_ms, bad for "
                                          rf"{profiles.loc[2, 'config_id']}"):
        validate_profiles(bad, "profiles.csv")


def test_unknown_task_is_refused_listing_the_known_ones(profiles):
    with pytest.raises(SchemaError, match=r"unknown task\(s\) \['SST2'\].*known tasks: \['sst2', 'cifar10'\] \(lower case\)"):
        validate_profiles(poke(profiles, "task", "SST2"), "profiles.csv")


def test_the_config_layer_uses_the_schema_tasks():
    assert config.TASKS is TASKS


@pytest.mark.parametrize("columns, column", [
    (LATENCY_SAMPLE_COLUMNS, "call_index"), (PREDICTION_COLUMNS, "example_id"), (PREDICTION_COLUMNS, "label"),
    (PREDICTION_COLUMNS, "prediction"), (PREDICTION_COLUMNS, "stage"), (TRACE_COLUMNS, "request_id"),
    (TRACE_COLUMNS, "example_id"),
])
def test_integer_columns_refuse_fractions(columns, column):
    bundle = synthetic_bundle(n_configs=2, n_examples=5, n_samples=5)
    frame = {id(LATENCY_SAMPLE_COLUMNS): bundle.samples, id(PREDICTION_COLUMNS): bundle.predictions,
             id(TRACE_COLUMNS): pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.1, 0.2],
                                              "deadline_ms": 5.0, "example_id": [3, 1, 2]})}[id(columns)]
    assert validate(frame, columns, "t.parquet")[column].dtype == np.int64  # untouched: fine
    with pytest.raises(SchemaError, match=rf"t\.parquet: column '{column}' must hold whole numbers, got \[0\.5\]"):
        validate(poke(frame, column, 0.5, row=1), columns, "t.parquet")


def test_integer_strings_with_fractions_are_refused_too():
    frame = pd.DataFrame({"config_id": ["a", "a"], "call_index": ["0", "1.5"], "latency_ms": [1.0, 2.0]})
    with pytest.raises(SchemaError, match=r"'call_index' must hold whole numbers, got \[1\.5\]"):
        validate(frame, LATENCY_SAMPLE_COLUMNS, "samples")


def test_dominated_rows_follow_the_profile_rules_and_name_their_dominator(profiles):
    dominated = profiles.iloc[:2].assign(dominated_by=profiles["config_id"].iloc[3])
    assert validate_dominated(dominated, "dominated.csv")["dominated_by"].tolist() == [profiles["config_id"].iloc[3]] * 2
    assert validate_dominated(dominated.iloc[:0], "dominated.csv").empty  # nothing dominated is fine
    with pytest.raises(SchemaError, match=r"dominated\.csv: missing column\(s\) \['config_id'\]"):
        validate_dominated(dominated.drop(columns="config_id"), "dominated.csv")
    with pytest.raises(SchemaError, match=r"dominated\.csv: missing column\(s\) \['dominated_by'\]"):
        validate_dominated(dominated.drop(columns="dominated_by"), "dominated.csv")
    with pytest.raises(SchemaError, match=r"dominated\.csv: column 'batch_size' must hold whole numbers"):
        validate_dominated(poke(dominated, "batch_size", 2.5, row=0), "dominated.csv")
    assert set(DOMINATED_COLUMNS) - {"dominated_by"} == set(validate_profiles(profiles).columns) & set(DOMINATED_COLUMNS)


def test_measured_keeps_only_rows_with_measured_accuracy_of_the_asked_task(profiles):
    frame = pd.concat([profiles, profiles.assign(task="cifar10", config_id=profiles["config_id"] + "-c")],
                      ignore_index=True)
    frame.loc[1, ["accuracy_source", "accuracy", "calibration_accuracy"]] = ["unavailable", np.nan, np.nan]
    task = profiles.loc[0, "task"]
    kept = frame.loc[measured(frame, task), "config_id"].tolist()
    assert kept == [c for i, c in enumerate(profiles["config_id"]) if i != 1]
    assert int(measured(frame).sum()) == len(frame) - 1  # no task: both tasks' measured rows
