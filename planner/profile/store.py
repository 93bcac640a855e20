"""Resumable, validated storage of one machine's profiles under ``results/<preset>/profiles/<tag>/``.

Crash safety: every file is replaced atomically (write a temporary file in the same folder, fsync,
``os.replace``). A configuration's bulky data (latency samples, per-variant predictions) goes to a
part file under ``parts/`` first; its row in ``latency_profiles.csv`` / ``accuracy_profiles.csv``
is written after, and that row is the done-marker. A ``kill -9`` at any point therefore leaves
either the old or the new version of each file: a rerun skips exactly the configurations whose row
exists and redoes the rest, so no row is lost or duplicated. :meth:`ProfileStore.finalize` builds
the merged ``profiles.csv``, ``latency_samples.parquet`` and ``predictions.parquet`` and then drops
the parts (consolidated files are read back if a later run adds configurations).

Integrity: finalize ends by writing ``MANIFEST.json`` (sha256 and size of every file
:func:`load_bundle` reads, :mod:`planner.tables`). :func:`load_bundle` checks the hashes first, then
the schemas, then every row against its data: latency statistics recomputed from the samples with
the sweep's own :func:`planner.profile.latency.summarize`, accuracy and coverage from the predictions.

Calibration split (:mod:`planner.splits`): ``accuracy`` is the mean correctness over the evaluation
set's scored part and ``calibration_accuracy`` over its calibration part, both computed from the
stored predictions of every evaluation example (:func:`planner.profile.accuracy.apply_split`) when a
folder is finalized and checked on load. :func:`resplit` gives an existing folder the split (or a
changed one) by recomputing those columns and the dominance pruning that depends on them, without
timing or running a model again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from planner.paths import machine_tag as this_machine_tag
from planner.paths import results_dir
from planner.profile.accuracy import PART_COLUMNS, SPLIT_COLUMNS, apply_split, precision_deltas, split_accuracy
from planner.profile.dominance import split_dominated
from planner.profile.latency import summarize
from planner.profile.roofline import PEAK_COLUMNS, item_flops, pct_roofline, peak_by_precision
from planner.profile.space import IDENTITY_COLUMNS, INFEASIBLE_COLUMNS
from planner.schema import (DOMINATED_COLUMNS, LATENCY_SAMPLE_COLUMNS, PREDICTION_COLUMNS, PROFILE_COLUMNS,
                            ProfileBundle, SchemaError, measured, read_json, read_table, validate,
                            validate_profiles)
from planner.tables import MANIFEST, atomic_write, atomic_write_text, manifest_names, verify_manifest, write_manifest

_IDENTITY = {**{c: "str" for c in IDENTITY_COLUMNS}, "batch_size": "int", "cascade_small": "str?",
             "cascade_large": "str?", "threshold": "float?"}
LATENCY_PROFILE_COLUMNS: dict[str, str] = {
    **_IDENTITY, "lat_p50_ms": "float", "lat_p95_ms": "float", "lat_p99_ms": "float", "lat_mean_ms": "float",
    "lat_p95_ci_low_ms": "float", "lat_p95_ci_high_ms": "float", "ci_rel_halfwidth": "float",
    "n_samples": "int", "throughput_items_s": "float", "stop_reason": "str", "n_warmup": "int",
    "n_threads": "int", "ort_intra_op_threads": "float?", "wall_s": "float", "background_cpu_share": "float?",
    "machine_tag": "str",
    "cpu_model": "str", "torch_version": "str", "profiled_at": "str",
    # the drift factor the samples were divided by (--rescale, planner/profile/drift.py); 1 = as measured
    "timing_scale": "float?",
}
ACCURACY_PROFILE_COLUMNS: dict[str, str] = {
    **_IDENTITY, "accuracy": "float?", "calibration_accuracy": "float?", "accuracy_source": "str",
    "coverage": "float?", "n_eval": "int",
    "prediction_key": "str?", "prediction_batch_size": "int", "batch_agreement": "float?",
    "batch_max_abs_diff": "float?", "agreement_n": "float?", "cascade_check_agreement": "float?",
    "accuracy_delta_vs_fp32": "float?",
}
# per model: FLOPs per example and the sizes that set the bytes a call moves (planner.models.flops)
MODEL_SIZE_COLUMNS = {"task": "str", "model": "str", "flops_per_item": "float?", "weight_elements": "float?",
                      "activation_elements_per_item": "float?"}
# extra columns carried into profiles.csv after the contract's PROFILE_COLUMNS
MERGED_EXTRAS = ["ci_rel_halfwidth", "stop_reason", "background_cpu_share", "n_eval", "accuracy_delta_vs_fp32",
                 "batch_agreement", "cascade_check_agreement"]

FILES = {
    "latency": "latency_profiles.csv", "accuracy": "accuracy_profiles.csv", "profiles": "profiles.csv",
    "samples": "latency_samples.parquet", "predictions": "predictions.parquet", "infeasible": "infeasible.csv",
    "environment": "environment.json", "peaks": "roofline_peaks.csv", "model_sizes": "model_sizes.csv",
    "dominated": "dominated.csv",
}
# the files load_bundle reads; MANIFEST.json holds their sha256 (profiles, samples, predictions and
# environment always, the others where present). The done-marker tables are the sweep's working state.
BUNDLE_FILES = ("profiles", "samples", "predictions", "environment", "infeasible", "peaks", "dominated",
                "model_sizes")
# profile columns that summarize() derives from a configuration's latency samples
SAMPLE_STATISTICS = ("lat_p50_ms", "lat_p95_ms", "lat_p99_ms", "lat_mean_ms", "throughput_items_s")
RTOL = 1e-9  # stored statistic vs recomputed: a CSV round trip, not a different computation
RESPLIT_HINT = "`python -m planner profile --resplit --preset <preset> --machine-tag <tag>` recomputes them"
# the files resplit rewrites (everything else it reads is checked against MANIFEST.json first)
RESPLIT_FILES = ("accuracy", "profiles", "dominated")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _empty(columns: Mapping[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if k.rstrip("?") == "float" else
                                      "int64" if k.rstrip("?") == "int" else "object")
                         for c, k in columns.items()})


def _split_rows(acc: pd.DataFrame, predictions: pd.DataFrame, name: str) -> pd.DataFrame:
    """Accuracy rows with the split's two accuracy columns recomputed from ``predictions``
    (:func:`planner.profile.accuracy.apply_split`) and the fp32 deltas that follow from them."""
    try:
        out = apply_split(acc, predictions)
    except ValueError as exc:
        raise SchemaError(f"{name}: {exc}") from None
    return out.assign(accuracy_delta_vs_fp32=precision_deltas(out))


class ProfileStore:
    """The files of one (preset, machine tag); safe to reopen after a crash."""

    def __init__(self, root: Path, create: bool = True):
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self.parts = self.root / "parts"

    def path(self, name: str) -> Path:
        return self.root / FILES[name]

    # ---- tables with done-markers -------------------------------------------------------------
    def _read(self, name: str, columns: Mapping[str, str]) -> pd.DataFrame:
        path = self.path(name)
        if not path.exists():
            return _empty(columns)
        try:
            frame = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise SchemaError(f"{path}: empty or truncated file") from None
        except Exception as exc:
            raise SchemaError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
        for column, kind in columns.items():  # optional columns added after a file was written
            if kind.endswith("?") and column not in frame.columns:
                frame[column] = np.nan
        frame = validate(frame, dict(columns), str(path))
        dup = frame["config_id"][frame["config_id"].duplicated()].tolist()
        if dup:
            raise SchemaError(f"{path}: duplicated config_id(s) {dup[:5]}")
        return frame

    def latency_rows(self) -> pd.DataFrame:
        return self._read("latency", LATENCY_PROFILE_COLUMNS)

    def accuracy_rows(self) -> pd.DataFrame:
        return self._read("accuracy", ACCURACY_PROFILE_COLUMNS)

    def infeasible_rows(self) -> pd.DataFrame:
        return self._read("infeasible", INFEASIBLE_COLUMNS)

    def latency_done(self) -> set[str]:
        return set(self.latency_rows()["config_id"])

    def accuracy_done(self) -> set[str]:
        return set(self.accuracy_rows()["config_id"])

    def _upsert(self, name: str, columns: Mapping[str, str], rows: list[dict[str, Any]]) -> None:
        new = validate(pd.DataFrame(rows), dict(columns), f"new rows of {self.path(name)}")
        old = self._read(name, columns)
        old = old[~old["config_id"].isin(new["config_id"])]
        frame = new if old.empty else pd.concat([old, new], ignore_index=True)
        write_csv(frame[list(columns)], self.path(name))

    def add_latency(self, row: dict[str, Any], samples_ms: np.ndarray) -> None:
        """Store one configuration's samples, then its row (the done-marker)."""
        cid = row["config_id"]
        samples = validate(pd.DataFrame({"config_id": cid, "call_index": np.arange(len(samples_ms)),
                                         "latency_ms": np.asarray(samples_ms, dtype=float)}),
                           LATENCY_SAMPLE_COLUMNS, f"samples of {cid}")
        if len(samples) != row["n_samples"]:
            raise SchemaError(f"{cid}: {len(samples)} samples but n_samples={row['n_samples']}")
        write_parquet(samples, self.parts / "latency" / f"{_key(cid)}.parquet")
        self._upsert("latency", LATENCY_PROFILE_COLUMNS, [row])

    def add_accuracy(self, rows: list[dict[str, Any]], parts: Mapping[str, pd.DataFrame]) -> None:
        """Store a variant's (or cascade's) per-example predictions by key, then its rows (the done-marker)."""
        for key, predictions in parts.items():
            part = validate(predictions, PART_COLUMNS, f"predictions of {key}")
            write_parquet(part.assign(prediction_key=key), self.parts / "predictions" / f"{_key(key)}.parquet")
        self._upsert("accuracy", ACCURACY_PROFILE_COLUMNS, rows)

    def forget_latency(self, config_ids: set[str]) -> None:
        """Drop latency done-markers so those configurations are measured again (e.g. disturbed ones)."""
        rows = self.latency_rows()
        write_csv(rows[~rows["config_id"].isin(config_ids)][list(LATENCY_PROFILE_COLUMNS)], self.path("latency"))

    def forget_accuracy(self, config_ids: set[str]) -> None:
        """Drop accuracy done-markers so those configurations' predictions are computed again."""
        rows = self.accuracy_rows()
        write_csv(rows[~rows["config_id"].isin(config_ids)][list(ACCURACY_PROFILE_COLUMNS)], self.path("accuracy"))

    def add_infeasible(self, frame: pd.DataFrame) -> None:
        if len(frame):
            self._upsert("infeasible", INFEASIBLE_COLUMNS, frame.to_dict("records"))

    def write_infeasible(self, frame: pd.DataFrame) -> None:
        """Replace the list (the space is re-enumerated on every run)."""
        write_csv(validate(frame, INFEASIBLE_COLUMNS, str(self.path("infeasible")))[list(INFEASIBLE_COLUMNS)],
                  self.path("infeasible"))

    # ---- small side files ---------------------------------------------------------------------
    def write_environment(self, env: dict[str, Any]) -> None:
        atomic_write_text(self.path("environment"), json.dumps(env, indent=2, default=str))

    def environment(self) -> dict[str, Any]:
        return read_json(self.path("environment"))

    def write_peaks(self, peaks: pd.DataFrame) -> None:
        write_csv(validate(peaks, PEAK_COLUMNS, str(self.path("peaks"))), self.path("peaks"))

    def peaks(self) -> pd.DataFrame | None:
        return read_table(self.path("peaks"), PEAK_COLUMNS) if self.path("peaks").exists() else None

    def write_model_sizes(self, frame: pd.DataFrame) -> None:
        path = self.path("model_sizes")
        write_csv(validate(frame, MODEL_SIZE_COLUMNS, str(path))[list(MODEL_SIZE_COLUMNS)], path)

    def model_sizes(self) -> pd.DataFrame:
        path = self.path("model_sizes")
        return read_table(path, MODEL_SIZE_COLUMNS) if path.exists() else _empty(MODEL_SIZE_COLUMNS)

    # ---- reading parts back -------------------------------------------------------------------
    def prediction_part(self, key: str) -> pd.DataFrame:
        """A variant's per-example predictions (from its part, or the consolidated file after finalize)."""
        path = self.parts / "predictions" / f"{_key(key)}.parquet"
        if path.exists():
            return read_table(path, PART_COLUMNS).drop(columns="prediction_key")
        consolidated = self.path("predictions")
        acc = self.accuracy_rows()
        ids = acc.loc[acc["prediction_key"] == key, "config_id"]
        if consolidated.exists() and len(ids):
            frame = pd.read_parquet(consolidated, filters=[("config_id", "==", ids.iloc[0])])
            if len(frame):
                return validate(frame, PREDICTION_COLUMNS, str(consolidated))[list(PART_COLUMNS)].reset_index(drop=True)
        raise SchemaError(f"no stored predictions for {key} (looked for {path} and in {consolidated})")

    def _samples(self, ids: list[str]) -> pd.DataFrame:
        frames, missing = [], []
        consolidated = None
        for cid in ids:
            path = self.parts / "latency" / f"{_key(cid)}.parquet"
            if path.exists():
                frames.append(read_table(path, LATENCY_SAMPLE_COLUMNS))
                continue
            if consolidated is None:
                p = self.path("samples")
                consolidated = read_table(p, LATENCY_SAMPLE_COLUMNS) if p.exists() else _empty(LATENCY_SAMPLE_COLUMNS)
            part = consolidated[consolidated["config_id"] == cid]
            (frames.append(part) if len(part) else missing.append(cid))
        if missing:
            raise SchemaError(f"{self.root}: latency samples missing for {missing[:5]}")
        return pd.concat(frames, ignore_index=True) if frames else _empty(LATENCY_SAMPLE_COLUMNS)

    # ---- consolidation ------------------------------------------------------------------------
    def finalize(self, keep: set[str] | None = None) -> pd.DataFrame:
        """Write merged ``profiles.csv`` plus the Parquet files, validated; returns the profiles.

        ``keep`` is the current space's config ids: rows measured under an earlier definition of the
        space (e.g. a configuration a preset has since pruned) are left out of the merged files.
        """
        lat, acc = self.latency_rows(), self.accuracy_rows()
        if keep is not None:
            lat, acc = lat[lat["config_id"].isin(keep)], acc[acc["config_id"].isin(keep)]
        if lat.empty:
            raise SchemaError(f"{self.path('latency')}: no measured configurations to finalize")
        only_lat = sorted(set(lat["config_id"]) - set(acc["config_id"]))
        only_acc = sorted(set(acc["config_id"]) - set(lat["config_id"]))
        if only_lat or only_acc:
            raise SchemaError(f"{self.root}: latency and accuracy rows disagree; latency only {only_lat[:3]}, "
                              f"accuracy only {only_acc[:3]} (rerun the sweep to complete them)")
        samples = self._samples(lat["config_id"].tolist())
        counts = samples.groupby("config_id").size()
        bad = [c for c, n in zip(lat["config_id"], lat["n_samples"]) if counts.get(c, 0) != n]
        if bad:
            raise SchemaError(f"{self.root}: sample counts differ from n_samples for {bad[:5]}")
        predictions = []
        cache: dict[str, pd.DataFrame] = {}
        for row in acc.itertuples(index=False):
            if row.accuracy_source != "measured":
                continue
            if row.prediction_key not in cache:
                cache[row.prediction_key] = self.prediction_part(row.prediction_key)
            predictions.append(cache[row.prediction_key].assign(config_id=row.config_id))
        predictions = (validate(pd.concat(predictions, ignore_index=True), PREDICTION_COLUMNS, "predictions")
                       [list(PREDICTION_COLUMNS)] if predictions else _empty(PREDICTION_COLUMNS))
        acc = _split_rows(acc, predictions, str(self.path("accuracy")))
        merged, dominated = split_dominated(self._merge(lat, acc))
        # samples and predictions of dominated rows stay in the Parquet files (load_bundle filters them)
        write_parquet(samples[list(LATENCY_SAMPLE_COLUMNS)], self.path("samples"))
        write_parquet(predictions, self.path("predictions"))
        write_csv(acc[list(ACCURACY_PROFILE_COLUMNS)], self.path("accuracy"))
        # stale done-markers go too: their parts are removed below, so a space that re-includes them re-measures
        write_csv(lat[list(LATENCY_PROFILE_COLUMNS)], self.path("latency"))
        write_csv(merged, self.path("profiles"))
        write_csv(dominated, self.path("dominated"))
        shutil.rmtree(self.parts, ignore_errors=True)
        self.write_manifest()
        return merged

    def write_manifest(self) -> Path:
        """``MANIFEST.json``: sha256 and size of each bundle file present (written last, after finalize)."""
        return write_manifest(self.root, [FILES[n] for n in BUNDLE_FILES if self.path(n).exists()])

    def _merge(self, lat: pd.DataFrame, acc: pd.DataFrame) -> pd.DataFrame:
        acc_cols = ["config_id", "accuracy", "calibration_accuracy", "accuracy_source", "coverage", "n_eval",
                    "accuracy_delta_vs_fp32", "batch_agreement", "cascade_check_agreement"]
        merged = lat.merge(acc[acc_cols], on="config_id", how="left", validate="one_to_one")
        merged["flops_per_item"] = item_flops(merged, self.model_sizes())
        nan = float("nan")
        peaks = self.peaks()
        peak = peak_by_precision(peaks) if peaks is not None else {}
        merged["pct_roofline"] = pct_roofline(merged["flops_per_item"], merged["throughput_items_s"],
                                              merged["precision"].map(lambda p: peak.get(p, nan)))
        columns = list(PROFILE_COLUMNS) + MERGED_EXTRAS
        return validate_profiles(merged[columns], str(self.path("profiles")))


def profile_root(preset: str, machine_tag: str | None = None) -> Path:
    """``results/<preset>/profiles/<tag>``; without a tag: this machine's CPU tag, else the first one."""
    base = results_dir(preset) / "profiles"
    if machine_tag is not None:
        return base / machine_tag
    tags = sorted(p.parent.name for p in base.glob("*/profiles.csv"))
    if not tags:
        raise SchemaError(f"no profiles under {base}; run `python -m planner profile --task all --preset {preset}`")
    mine = this_machine_tag("cpu")
    return base / (mine if mine in tags else tags[0])


def _manifest_hint(preset: str, root: Path) -> str:
    return (f"`python -m planner profile --rehash --preset {preset} --machine-tag {root.name}` records the "
            "current files (after checking them) for a folder profiled before manifests existed")


def load_bundle(preset: str, machine_tag: str | None = None) -> ProfileBundle:
    """Read and cross-validate one machine's profiles, samples, predictions and environment.

    First every bundle file is checked against the sha256 in ``MANIFEST.json`` (flipped bytes, a
    truncated or edited file), then each table's schema, then the tables against each other.
    """
    root = profile_root(preset, machine_tag)
    store = ProfileStore(root, create=False)
    if not (root / MANIFEST).exists():
        raise SchemaError(f"{root / MANIFEST}: missing, so the files cannot be checked for corruption; "
                          + _manifest_hint(preset, root))
    try:
        listed = set(verify_manifest(root))
    except SchemaError as exc:
        raise SchemaError(f"{exc} (a `planner profile` run still going, or interrupted, rewrites environment.json, "
                          "infeasible.csv and roofline_peaks.csv before it finalizes: let it finish)") from None
    unlisted = [FILES[n] for n in BUNDLE_FILES if store.path(n).exists() and FILES[n] not in listed]
    if unlisted:
        raise SchemaError(f"{root / MANIFEST}: does not cover {unlisted} (added after the manifest was written?); "
                          + _manifest_hint(preset, root))
    return _read_bundle(store)


def rehash(preset: str, machine_tag: str | None = None) -> Path:
    """Validate an existing profile folder (schemas and cross-checks) and write its ``MANIFEST.json``.

    For folders finalized before manifests existed; a folder that fails validation gets no manifest.
    """
    store = ProfileStore(profile_root(preset, machine_tag), create=False)
    _read_bundle(store)
    return store.write_manifest()


def resplit(preset: str, machine_tag: str | None = None) -> pd.DataFrame:
    """Apply the protocol's calibration split to an existing profile folder; returns the new profiles.

    From the stored predictions (every evaluation example, :mod:`planner.splits`) it recomputes each
    measured row's ``accuracy`` (scored part), ``calibration_accuracy`` and fp32 delta, then the
    dominance pruning, which compares calibration accuracies (a row may move between
    ``profiles.csv`` and ``dominated.csv``). Nothing is timed or run again. The files it reads are
    checked against ``MANIFEST.json`` first; the result passes :func:`load_bundle`'s checks in memory
    before ``accuracy_profiles.csv``, ``profiles.csv`` and ``dominated.csv`` and the manifest are
    rewritten. Running it twice gives the same files.
    """
    root = profile_root(preset, machine_tag)
    store = ProfileStore(root, create=False)
    rewritten = [FILES[n] for n in RESPLIT_FILES]
    if (root / MANIFEST).exists():
        verify_manifest(root, skip=rewritten)
        unlisted = [FILES[n] for n in BUNDLE_FILES if store.path(n).exists() and FILES[n] not in rewritten
                    and FILES[n] not in manifest_names(root)]
        if unlisted:
            raise SchemaError(f"{root / MANIFEST}: does not cover {unlisted}; " + _manifest_hint(preset, root))
    predictions = read_table(store.path("predictions"), PREDICTION_COLUMNS)
    acc = _split_rows(store.accuracy_rows(), predictions, str(store.path("accuracy")))
    frames = [_raw_csv(store.path("profiles"))]
    if store.path("dominated").exists():
        frames.append(_raw_csv(store.path("dominated")).drop(columns="dominated_by", errors="ignore"))
    rows = pd.concat(frames, ignore_index=True)
    unknown = sorted(set(rows["config_id"]) - set(acc["config_id"]))
    if unknown:
        raise SchemaError(f"{store.path('accuracy')}: no accuracy rows for profiled configuration(s) {unknown[:5]}")
    by_id = acc.set_index("config_id")
    for column in (*SPLIT_COLUMNS.values(), "accuracy_delta_vs_fp32"):
        rows[column] = rows["config_id"].map(by_id[column]).astype(float)
    if store.path("latency").exists():  # finalize's order: the latency rows'
        order = {c: i for i, c in enumerate(store.latency_rows()["config_id"])}
        rows = rows.iloc[np.argsort(rows["config_id"].map(order).fillna(len(order)).to_numpy(), kind="stable")]
    rows = validate_profiles(rows[list(PROFILE_COLUMNS) + MERGED_EXTRAS].reset_index(drop=True), str(root))
    merged, dominated = split_dominated(rows)  # the frames finalize writes, in its column order
    validate(dominated, DOMINATED_COLUMNS, str(store.path("dominated")))
    samples = read_table(store.path("samples"), LATENCY_SAMPLE_COLUMNS)
    data = _DataSummary(samples, store.path("samples"), predictions, store.path("predictions"))
    data.check(merged, store.path("profiles"))
    data.check(dominated, store.path("dominated"))
    write_csv(acc[list(ACCURACY_PROFILE_COLUMNS)], store.path("accuracy"))
    write_csv(merged, store.path("profiles"))
    write_csv(dominated, store.path("dominated"))
    store.write_manifest()
    _read_bundle(store)
    return merged


def _raw_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except Exception as exc:
        raise SchemaError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def _read_bundle(store: ProfileStore) -> ProfileBundle:
    try:
        header = pd.read_csv(store.path("profiles"), nrows=0).columns
    except Exception:  # missing or unreadable: read_table below names the problem
        header = None
    if header is not None and "calibration_accuracy" not in header:
        raise SchemaError(f"{store.path('profiles')}: no calibration_accuracy column (profiled before the "
                          f"calibration split, planner.splits); {RESPLIT_HINT}")
    profiles = read_table(store.path("profiles"), PROFILE_COLUMNS)
    all_samples = read_table(store.path("samples"), LATENCY_SAMPLE_COLUMNS)
    all_predictions = read_table(store.path("predictions"), PREDICTION_COLUMNS)
    environment = read_json(store.path("environment"))
    dominated = read_table(store.path("dominated"), DOMINATED_COLUMNS) if store.path("dominated").exists() else None
    samples, predictions = all_samples, all_predictions
    if dominated is not None and len(dominated):  # their samples/predictions stay on disk; the bundle omits them
        both = sorted(set(dominated["config_id"]) & set(profiles["config_id"]))
        if both:
            raise SchemaError(f"{store.path('dominated')}: config_id(s) also in {store.path('profiles')}: {both[:5]}")
        pruned = set(dominated["config_id"])
        samples = samples[~samples["config_id"].isin(pruned)].reset_index(drop=True)
        predictions = predictions[~predictions["config_id"].isin(pruned)].reset_index(drop=True)
    counts = samples.groupby("config_id").size()
    wrong = [c for c, n in zip(profiles["config_id"], profiles["n_samples"]) if counts.get(c, 0) != n]
    if wrong:
        raise SchemaError(f"{store.path('samples')}: sample counts disagree with {store.path('profiles')} "
                          f"for {wrong[:5]} (partial file?)")
    stray = sorted(set(samples["config_id"]) - set(profiles["config_id"]))
    if stray:
        raise SchemaError(f"{store.path('samples')}: samples for unknown config_id(s) {stray[:5]}")
    expected = set(profiles.loc[measured(profiles), "config_id"])
    have = set(predictions["config_id"])
    if expected - have or have - expected:
        raise SchemaError(f"{store.path('predictions')}: predictions do not match measured configurations "
                          f"(missing {sorted(expected - have)[:3]}, unexpected {sorted(have - expected)[:3]})")
    data = _DataSummary(all_samples, store.path("samples"), all_predictions, store.path("predictions"))
    data.check(profiles, store.path("profiles"))
    if dominated is not None and len(dominated):
        data.check(dominated, store.path("dominated"))
    infeasible = (read_table(store.path("infeasible"), INFEASIBLE_COLUMNS)
                  if store.path("infeasible").exists() else None)
    peaks = read_table(store.path("peaks"), PEAK_COLUMNS) if store.path("peaks").exists() else None
    sizes = read_table(store.path("model_sizes"), MODEL_SIZE_COLUMNS) if store.path("model_sizes").exists() else None
    return ProfileBundle(profiles, samples, predictions, environment, infeasible, peaks, dominated, sizes)


class _DataSummary:
    """Per-configuration samples and prediction means, to check profile rows against their data."""

    def __init__(self, samples: pd.DataFrame, samples_path: Path, predictions: pd.DataFrame,
                 predictions_path: Path):
        ordered = samples.sort_values(["config_id", "call_index"], kind="stable")
        self.samples = dict(tuple(ordered.groupby("config_id", sort=False)["latency_ms"]))
        self.coverage = (predictions["stage"] == 1).groupby(predictions["config_id"], sort=False).mean()
        self.samples_path, self.predictions_path = samples_path, predictions_path
        try:
            self.means = split_accuracy(predictions)
        except ValueError as exc:
            raise SchemaError(f"{predictions_path}: {exc}") from None

    def check(self, rows: pd.DataFrame, rows_path: Path) -> None:
        """Each row's numbers are what its data says: the latency statistics are
        :func:`planner.profile.latency.summarize` of its samples (in call order, as the sweep timed
        them), a measured ``accuracy`` and ``calibration_accuracy`` are the means of ``correct`` in its
        predictions over the split's scored and calibration parts, and a cascade's coverage is its
        stage-1 share."""
        for row in rows.itertuples(index=False):
            x = self.samples.get(row.config_id)
            if x is None or len(x) != row.n_samples:
                raise SchemaError(f"{self.samples_path}: {0 if x is None else len(x)} samples for {row.config_id}, "
                                  f"but {rows_path} says n_samples={row.n_samples} (partial file?)")
            try:
                stats = summarize(x.to_numpy(), row.batch_size, ci=(np.nan, np.nan))
            except ValueError as exc:
                raise SchemaError(f"{self.samples_path}: {row.config_id}: {exc}") from None
            for column in SAMPLE_STATISTICS:
                stored = getattr(row, column)
                if not np.isclose(stored, stats[column], rtol=RTOL, atol=0.0):
                    raise SchemaError(f"{rows_path}: {row.config_id}: {column} = {stored!r}, but its samples in "
                                      f"{self.samples_path.name} give {stats[column]!r}")
        measured_rows = rows[measured(rows)]
        missing = sorted(set(measured_rows["config_id"]) - set(self.means.index))
        if missing:
            raise SchemaError(f"{self.predictions_path}: no predictions for measured configuration(s) {missing[:5]} "
                              f"of {rows_path}")
        for row in measured_rows.itertuples(index=False):
            for part, column in SPLIT_COLUMNS.items():
                stored, value = getattr(row, column), float(self.means.loc[row.config_id, column])
                if not np.isclose(stored, value, rtol=RTOL, atol=0.0):
                    raise SchemaError(f"{rows_path}: {row.config_id}: {column} = {stored!r}, but its predictions in "
                                      f"{self.predictions_path.name} give {value!r} (mean of 'correct' over the "
                                      f"{part} part; a folder profiled before the split: {RESPLIT_HINT})")
            coverage = float(self.coverage.loc[row.config_id])
            if row.coverage == row.coverage and not np.isclose(row.coverage, coverage, rtol=RTOL, atol=0.0):
                raise SchemaError(f"{rows_path}: {row.config_id}: coverage = {row.coverage!r}, but its predictions "
                                  f"in {self.predictions_path.name} give {coverage!r} (share answered by stage 1)")
