"""The tables that connect the stages, with validation on write and on read.

A malformed or partial file fails with :class:`SchemaError` naming the file and the problem,
instead of propagating NaNs into the planner.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# the tasks every table, config and command knows (lower case, as in config ids and file names)
TASKS: tuple[str, ...] = ("sst2", "cifar10")

# column -> kind: "str", "int", "float", "bool"; a trailing "?" marks nullable
PROFILE_COLUMNS: dict[str, str] = {
    "config_id": "str", "task": "str", "model": "str", "runtime": "str", "precision": "str",
    "batch_size": "int", "device": "str", "cascade_small": "str?", "cascade_large": "str?",
    "threshold": "float?", "lat_p50_ms": "float", "lat_p95_ms": "float", "lat_p99_ms": "float",
    "lat_mean_ms": "float", "lat_p95_ci_low_ms": "float", "lat_p95_ci_high_ms": "float",
    "n_samples": "int", "throughput_items_s": "float", "accuracy": "float?", "calibration_accuracy": "float?",
    "accuracy_source": "str", "coverage": "float?", "flops_per_item": "float?",
    "pct_roofline": "float?", "machine_tag": "str", "cpu_model": "str", "n_threads": "int",
    "torch_version": "str", "profiled_at": "str",
}
# Accuracy is split (planner.splits): ``accuracy`` is the evaluation set's scored part (what is reported
# and credited), ``calibration_accuracy`` its calibration part, the only accuracy a method may choose by
PLANNING_ACCURACY = "calibration_accuracy"
# measured rows pruned as dominated (planner.profile.dominance): a profile row plus its dominator's id
DOMINATED_COLUMNS: dict[str, str] = {**PROFILE_COLUMNS, "dominated_by": "str"}
LATENCY_SAMPLE_COLUMNS = {"config_id": "str", "call_index": "int", "latency_ms": "float"}
PREDICTION_COLUMNS = {
    "config_id": "str", "example_id": "int", "label": "int", "prediction": "int",
    "confidence": "float", "correct": "bool", "stage": "int",
}
TRACE_COLUMNS = {"request_id": "int", "arrival_s": "float", "deadline_ms": "float", "example_id": "int"}
REQUEST_RESULT_COLUMNS = {
    "request_id": "int", "method": "str", "config_id": "str?", "start_s": "float?", "finish_s": "float?",
    "latency_ms": "float?", "status": "str", "hit": "bool", "correct": "bool",
}
ACCURACY_SOURCES = ("measured", "unavailable")
# served: on time; late: after the deadline; dropped: never started (drop_expired); shed: refused at
# once by admission control; degraded: a cascade's first-stage answer sent on time instead of a late second
REQUEST_STATUSES = ("served", "late", "dropped", "shed", "degraded")
#: runtimes whose running call a server can stop at a deadline (ONNX Runtime: ``RunOptions.terminate``);
#: the simulator stops them, and a policy that asks for stops may plan on it
CANCELLABLE_RUNTIMES = ("onnxruntime",)


class SchemaError(ValueError):
    """A table does not have the columns or values its stage promises."""


class DeadlineError(ValueError):
    """A deadline is not a positive, finite number of milliseconds."""


def check_deadline(deadline_ms: object, what: str = "deadline_ms",
                   error: type[ValueError] = DeadlineError) -> float:
    """The one rule for a deadline, wherever it enters (config, trace, API, planner): a real number
    of milliseconds, positive and finite. Booleans, arrays, strings and NaN are refused with
    ``error`` naming ``what`` and the value."""
    if isinstance(deadline_ms, (bool, np.bool_)) or not isinstance(deadline_ms, numbers.Real):
        raise error(f"{what} must be a number of ms, got {deadline_ms!r}")
    value = float(deadline_ms)
    if not (0.0 < value < math.inf):
        raise error(f"{what} must be a positive finite number of ms, got {deadline_ms!r}")
    return value


def check_deadlines(values: object, what: str = "deadline_ms", error: type[ValueError] = DeadlineError) -> np.ndarray:
    """:func:`check_deadline` for a column of deadlines (a trace's): every value, vectorised."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise error(f"{what} must be numbers of ms") from None
    if np.asarray(values).dtype == bool:
        raise error(f"{what} must be numbers of ms, got booleans")
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        raise error(f"{what} must be positive finite numbers of ms; {int(bad.sum())} are not "
                    f"(e.g. {arr[bad][:3].tolist()})")
    return arr


def config_id(task: str, model: str, runtime: str, precision: str, batch_size: int, device: str,
              cascade: tuple[str, str, float] | None = None) -> str:
    """Stable, readable id, e.g. ``sst2/minilm-l6/onnxruntime/int8/b4/cpu``.

    A cascade's model part is ``cascade:small>large@tau``.
    """
    if cascade is not None:
        small, large, tau = cascade
        model = f"{CASCADE_PREFIX}{small}>{large}@{tau:g}"
    return f"{task}/{model}/{runtime}/{precision}/b{int(batch_size)}/{device}"


CASCADE_PREFIX = "cascade:"


def model_of(config_id: str) -> str:
    """The model part of a :func:`config_id` (the ``model`` column: a model, or ``cascade:small>large@tau``);
    empty when the id has none."""
    parts = str(config_id).split("/")
    return parts[1] if len(parts) > 1 else ""


def is_cascade_id(config_id: str) -> bool:
    """Whether a :func:`config_id` names a cascade (its model part starts with ``cascade:``)."""
    return model_of(config_id).startswith(CASCADE_PREFIX)


def measured(profiles: pd.DataFrame, task: str | None = None) -> pd.Series:
    """Boolean mask of the rows with a measured accuracy (of ``task`` when given).

    Why one place: these are the configurations a method may pick and the only ones with predictions;
    the filter is read by the planner, the servers, the bound and the book alike."""
    mask = profiles["accuracy_source"] == "measured"
    if task is not None:
        mask &= profiles["task"] == task
    return mask


def validate(frame: pd.DataFrame, columns: dict[str, str], name: str = "table") -> pd.DataFrame:
    """Check columns, kinds and nulls; return the frame with canonical dtypes and column order."""
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(f"{name}: expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}")
    out = frame.copy()
    for column, kind in columns.items():
        nullable = kind.endswith("?")
        kind = kind.rstrip("?")
        values = out[column]
        if not nullable and values.isna().any():
            rows = np.flatnonzero(values.isna().to_numpy())[:5].tolist()
            raise SchemaError(f"{name}: column {column!r} has missing values (rows {rows})")
        try:
            if kind == "float":
                out[column] = pd.to_numeric(values, errors="raise").astype("float64")
            elif kind == "int":
                out[column] = _integers(pd.to_numeric(values, errors="raise"), column, name)
            elif kind == "bool":
                out[column] = values.astype(bool)
            else:
                out[column] = values.astype("object").where(values.notna(), None)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"{name}: column {column!r} is not {kind}: {exc}") from None
    return out[list(columns) + [c for c in out.columns if c not in columns]]


def _integers(values: pd.Series, column: str, name: str) -> pd.Series:
    """``values`` as int64; a fractional or infinite float (1.7, which astype would truncate) is refused."""
    if values.dtype.kind == "f":
        arr = values.to_numpy(dtype=float)
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise SchemaError(f"{name}: column {column!r} must hold whole numbers, got {arr[bad][:3].tolist()} "
                              f"(rows {np.flatnonzero(bad)[:5].tolist()})")
    return values.astype("int64")


def _bad_rows(out: pd.DataFrame, mask: pd.Series, column: str) -> str:
    """The first offending config ids with their values, for an error message."""
    rows = out.loc[mask, ["config_id", column]].head(5)
    return ", ".join(f"{c}: {v!r}" for c, v in rows.itertuples(index=False))


def _profile_row_rules(out: pd.DataFrame, name: str) -> None:
    """Rules every measured profile row obeys (profiles.csv and dominated.csv alike)."""
    unknown = sorted(set(out["task"]) - set(TASKS))
    if unknown:
        raise SchemaError(f"{name}: unknown task(s) {unknown} ({_bad_rows(out, ~out['task'].isin(TASKS), 'task')}); "
                          f"known tasks: {list(TASKS)} (lower case)")
    for column in ("batch_size", "n_samples"):
        low = out[column] < 1
        if low.any():
            raise SchemaError(f"{name}: {column} must be an integer >= 1, bad for {_bad_rows(out, low, column)}")
    for column in ("lat_p50_ms", "lat_p95_ms", "lat_p99_ms", "lat_mean_ms", "throughput_items_s"):
        bad = ~(out[column] > 0) | ~np.isfinite(out[column])
        if bad.any():
            raise SchemaError(f"{name}: {column} must be positive and finite, bad for {_bad_rows(out, bad, column)}")
    for lower, upper in (("lat_p50_ms", "lat_p95_ms"), ("lat_p95_ms", "lat_p99_ms")):
        bad = out[lower] > out[upper]
        if bad.any():
            rows = out.loc[bad, ["config_id", lower, upper]].head(5)
            raise SchemaError(f"{name}: need {lower} <= {upper}, bad for "
                              + ", ".join(f"{c}: {a!r} > {b!r}" for c, a, b in rows.itertuples(index=False)))
    bad_source = set(out["accuracy_source"]) - set(ACCURACY_SOURCES)
    if bad_source:
        raise SchemaError(f"{name}: accuracy_source must be one of {ACCURACY_SOURCES}, got {bad_source}")
    measured_rows = measured(out)
    for column in ("accuracy", PLANNING_ACCURACY):
        bad = measured_rows & (out[column].isna() | (out[column] < 0) | (out[column] > 1))
        if bad.any():
            raise SchemaError(f"{name}: measured {column} must lie in [0, 1], bad for {_bad_rows(out, bad, column)}")
        if out.loc[~measured_rows, column].notna().any():
            raise SchemaError(f"{name}: rows with accuracy_source='unavailable' must have no {column}")


def validate_profiles(frame: pd.DataFrame, name: str = "profiles") -> pd.DataFrame:
    """Profiles table rules on top of column kinds: unique ids, known tasks, whole positive batch
    sizes and sample counts, ordered finite latencies, sane throughput and accuracies."""
    out = validate(frame, PROFILE_COLUMNS, name)
    if out.empty:
        raise SchemaError(f"{name}: no rows")
    duplicated = out["config_id"][out["config_id"].duplicated()].tolist()
    if duplicated:
        raise SchemaError(f"{name}: duplicated config_id(s) {duplicated[:5]}")
    _profile_row_rules(out, name)
    return out


def validate_dominated(frame: pd.DataFrame, name: str = "dominated") -> pd.DataFrame:
    """Dominated rows: the profile row rules (an empty table is fine) plus the dominator's id."""
    out = validate(frame, DOMINATED_COLUMNS, name)
    duplicated = out["config_id"][out["config_id"].duplicated()].tolist()
    if duplicated:
        raise SchemaError(f"{name}: duplicated config_id(s) {duplicated[:5]}")
    if len(out):
        _profile_row_rules(out, name)
    return out


def read_table(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read a CSV or Parquet file and validate it, naming the file in any error."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"missing file {path}")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # truncated parquet, broken CSV quoting, ...
        raise SchemaError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if columns is PROFILE_COLUMNS:
        return validate_profiles(frame, str(path))
    if columns is DOMINATED_COLUMNS:
        return validate_dominated(frame, str(path))
    return validate(frame, columns, str(path))


def read_profiles(path: Path) -> pd.DataFrame:
    return read_table(path, PROFILE_COLUMNS)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, invalid or non-object file is a SchemaError naming it."""
    if not path.exists():
        raise SchemaError(f"missing file {path}")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SchemaError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


@dataclass
class ProfileBundle:
    """Everything the planner and simulator read about one machine's profiles (validated)."""

    profiles: pd.DataFrame
    samples: pd.DataFrame
    predictions: pd.DataFrame
    environment: dict = field(default_factory=dict)
    infeasible: pd.DataFrame | None = None
    peaks: pd.DataFrame | None = None
    dominated: pd.DataFrame | None = None  # measured, then pruned as dominated (planner.profile.dominance)
    model_sizes: pd.DataFrame | None = None  # per model: FLOPs and sizes (planner.models.flops), for the roofline
