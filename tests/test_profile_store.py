"""Profile storage: a toy sweep end to end, validation on read naming the file, atomic writes,
content hashes and the cross-check of profile rows against their samples and predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from planner.config import ProfilePreset
from planner import cli
from planner import splits
from planner.profile.store import ProfileStore, atomic_write, load_bundle, rehash
from planner.profile.sweep import run_sweep
from planner.schema import SchemaError
from planner.tables import MANIFEST, manifest_names, write_manifest

TINY = ProfilePreset(warmup=10, min_passes=100, max_passes=150, ci_rel_halfwidth=0.05, batch_sizes=[1, 4],
                     check_every=50, n_bootstrap=200, max_seconds_per_config=5, agreement_sample=96,
                     roofline_seconds=0.01)
# torch/int8 in the toy zoo mimics dynamic quantization: its predictions depend on the batch
VARIANTS = "torch/fp32,torch/int8,onnxruntime/int8"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One toy sweep (sst2, two variants) in a private results dir, shared by the tests here."""
    root = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLANNER_RESULTS_DIR", str(root))
        mp.setenv("PLANNER_PROFILE_ZOO", "planner.profile.toy")
        mp.setenv("PLANNER_TOY_VARIANTS", VARIANTS)
        from planner.profile import toy

        profiles = run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=TINY, progress=False)["cpu"]
        bundle = load_bundle("quick")
    return root, profiles, bundle


@pytest.fixture
def copy(swept, tmp_path, monkeypatch):
    """A private copy of the swept results that a test may corrupt."""
    import shutil

    root = tmp_path / "results"
    shutil.copytree(swept[0], root)
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(root))
    return next((root / "quick" / "profiles").iterdir())


def test_sweep_writes_every_table_with_the_contract_schema(swept):
    _, profiles, bundle = swept
    folder = bundle.profiles["machine_tag"].iloc[0]
    assert len(bundle.profiles) == len(profiles) == 3 * 3 * 2 + 4 * 3 * 2  # 3 models, 4 cascades, 3 variants x 2 batches
    assert set(bundle.profiles["runtime"]) == {"torch", "onnxruntime"}
    counts = bundle.samples.groupby("config_id").size()
    assert (counts.reindex(bundle.profiles["config_id"]).to_numpy() == bundle.profiles["n_samples"].to_numpy()).all()
    assert bundle.profiles["n_samples"].between(100, 150).all()
    # DistilBERT: latency profiled, accuracy unavailable and never invented
    distil = bundle.profiles[bundle.profiles["model"] == "distilbert"]
    assert len(distil) == 6 and (distil["accuracy_source"] == "unavailable").all() and distil["accuracy"].isna().all()
    assert not bundle.predictions["config_id"].isin(distil["config_id"]).any()
    measured = bundle.profiles[bundle.profiles["accuracy_source"] == "measured"]
    n_eval = bundle.predictions.groupby("config_id").size()
    assert (n_eval.reindex(measured["config_id"]) == 96).all()
    cascades = measured[measured["cascade_small"].notna()]
    assert cascades["coverage"].between(0, 1).all()
    static = cascades["precision"] != "int8"
    assert cascades.loc[static, "cascade_check_agreement"].eq(1.0).all()
    assert cascades.loc[~static, "cascade_check_agreement"].between(0.5, 1.0).all()
    # stage 2 rows exist only for cascades, and coverage equals the stage-1 share
    stages = bundle.predictions.groupby("config_id")["stage"].apply(lambda s: (s == 1).mean())
    np.testing.assert_allclose(stages.reindex(cascades["config_id"]).to_numpy(), cascades["coverage"].to_numpy())
    # predictions are shared across batch sizes where batch-1 and batch-4 agree, else made per batch
    single = measured[measured["cascade_small"].isna()]
    dynamic = (single["runtime"] == "torch") & (single["precision"] == "int8")
    assert single.loc[~dynamic, "batch_agreement"].eq(1.0).all()
    assert single.loc[dynamic, "batch_agreement"].lt(1.0).all()
    acc = pd.read_csv(swept[0] / "quick" / "profiles" / folder / "accuracy_profiles.csv").set_index("config_id")
    keys = acc.loc[single["config_id"], "prediction_key"]
    assert (keys.str.contains("@b").to_numpy() == (dynamic & (single["batch_size"] == 1)).to_numpy()).all()
    from planner.models.base import VariantSpec
    from planner.profile import toy

    inputs, _ = toy.eval_inputs("sst2")
    b1 = toy.load_predictor(VariantSpec("sst2", "minilm-l6", "torch", "int8"), "quick").predict(inputs, 1).argmax(1)
    stored = bundle.predictions[bundle.predictions["config_id"] == "sst2/minilm-l6/torch/int8/b1/cpu"]
    np.testing.assert_array_equal(stored.sort_values("example_id")["prediction"].to_numpy(), b1)
    deltas = single.set_index(["runtime", "precision"])["accuracy_delta_vs_fp32"]
    assert deltas.loc[("torch", "fp32")].eq(0).all() and deltas.loc[("torch", "int8")].notna().all()
    assert deltas.loc[("onnxruntime", "int8")].isna().all()  # no onnxruntime fp32 reference in this sweep
    # roofline: every row with FLOPs has a finite percentage of the measured peak
    assert np.isfinite(bundle.profiles["pct_roofline"]).all() and (bundle.profiles["pct_roofline"] > 0).all()
    assert set(bundle.peaks["precision"]) >= {"fp32", "int8"}
    assert bundle.environment["machine_tag"] == folder and bundle.environment["n_threads"] >= 1
    # infeasible combinations are listed with a reason
    assert len(bundle.infeasible) and bundle.infeasible["reason"].str.contains("PLANNER_TOY_VARIANTS").any()


def test_profiles_hold_the_split_accuracies_of_their_predictions(swept):
    """accuracy is the scored part's mean of correct, calibration_accuracy the calibration part's."""
    _, _, bundle = swept
    split = splits.predictions_split(bundle.predictions, "sst2")
    assert len(split.calibration) + len(split.scored) == 96 and abs(len(split.calibration) - 48) <= 1
    preds = bundle.predictions.assign(calibration=bundle.predictions["example_id"].isin(split.calibration))
    means = preds.groupby(["config_id", "calibration"])["correct"].mean().unstack()
    measured = bundle.profiles[bundle.profiles["accuracy_source"] == "measured"].set_index("config_id")
    np.testing.assert_allclose(measured["accuracy"], means.loc[measured.index, False])
    np.testing.assert_allclose(measured["calibration_accuracy"], means.loc[measured.index, True])
    assert bundle.profiles.loc[bundle.profiles["accuracy_source"] == "unavailable", "calibration_accuracy"].isna().all()


def _before_the_split(folder):
    """Make ``folder`` look profiled before the calibration split: accuracy over every example and no
    calibration_accuracy column, under a manifest that vouches for those files."""
    preds = pd.read_parquet(folder / "predictions.parquet")
    everything = preds.groupby("config_id")["correct"].mean()
    for name in ("profiles.csv", "dominated.csv", "accuracy_profiles.csv"):
        frame = pd.read_csv(folder / name)
        measured = frame["accuracy_source"] == "measured"
        frame["accuracy"] = frame["config_id"].map(everything).where(measured)
        frame.drop(columns="calibration_accuracy").to_csv(folder / name, index=False)
    _reseal(folder)


def test_resplit_gives_a_folder_profiled_before_the_split_its_columns_without_re_timing(copy, capsys):
    split_files = {n: (copy / n).read_bytes() for n in ("profiles.csv", "dominated.csv", "accuracy_profiles.csv")}
    data_files = {n: (copy / n).read_bytes() for n in ("latency_samples.parquet", "predictions.parquet")}
    _before_the_split(copy)
    with pytest.raises(SchemaError, match=r"profiles\.csv: no calibration_accuracy column .*--resplit"):
        load_bundle("quick")
    assert cli.main(["profile", "--resplit", "--preset", "quick", "--machine-tag", copy.name]) == 0
    assert "calibration_accuracy of" in capsys.readouterr().out
    load_bundle("quick")  # hashes, schemas and every cross-check pass
    for name, content in {**split_files, **data_files}.items():  # what a fresh sweep wrote; samples untouched
        assert (copy / name).read_bytes() == content, name
    assert cli.main(["profile", "--resplit", "--preset", "quick", "--machine-tag", copy.name]) == 0
    assert (copy / "profiles.csv").read_bytes() == split_files["profiles.csv"]  # idempotent


def test_resplit_refuses_a_folder_whose_predictions_changed_after_hashing(copy, capsys):
    _before_the_split(copy)
    path = copy / "predictions.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cli.main(["profile", "--resplit", "--preset", "quick", "--machine-tag", copy.name]) == 2
    assert "predictions.parquet: content differs" in capsys.readouterr().err
    assert "calibration_accuracy" not in pd.read_csv(copy / "profiles.csv").columns  # nothing rewritten


def test_rerunning_a_finished_sweep_measures_nothing_new(swept, copy, monkeypatch):
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", VARIANTS)
    from planner.profile import toy

    before = pd.read_csv(copy / "profiles.csv")
    after = run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=TINY, progress=False)["cpu"]
    assert after["config_id"].tolist() == before["config_id"].tolist()
    np.testing.assert_array_equal(after["lat_p95_ms"], before["lat_p95_ms"])  # read back, not re-measured


def _reseal(folder):
    """Rewrite MANIFEST.json over the current files without checking them: as if a file had been
    damaged before its hash was recorded, so the checks behind the manifest are what must catch it."""
    write_manifest(folder, manifest_names(folder))


def _corrupt_csv(path, fn):
    frame = pd.read_csv(path)
    fn(frame).to_csv(path, index=False)
    _reseal(path.parent)


def test_missing_column_is_named_with_its_file(copy):
    _corrupt_csv(copy / "profiles.csv", lambda f: f.drop(columns="lat_p95_ms"))
    with pytest.raises(SchemaError, match=r"profiles\.csv.*missing column.*lat_p95_ms"):
        load_bundle("quick")


def test_nan_latency_is_rejected_with_its_file(copy):
    def poke(f):
        f.loc[3, "lat_p95_ms"] = np.nan
        return f
    _corrupt_csv(copy / "profiles.csv", poke)
    with pytest.raises(SchemaError, match=r"profiles\.csv.*lat_p95_ms"):
        load_bundle("quick")


@pytest.mark.parametrize("name", ["latency_samples.parquet", "predictions.parquet", "profiles.csv"])
def test_truncated_files_are_reported_by_name(copy, name):
    path = copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError, match=name.replace(".", r"\.")):
        load_bundle("quick")


def test_samples_missing_rows_are_a_partial_file(copy):
    path = copy / "latency_samples.parquet"
    frame = pd.read_parquet(path)
    frame.iloc[: len(frame) - 7].to_parquet(path, index=False)
    _reseal(copy)
    with pytest.raises(SchemaError, match=r"latency_samples\.parquet.*partial"):
        load_bundle("quick")


def test_bad_environment_json_is_named(copy):
    (copy / "environment.json").write_text("{not json")
    with pytest.raises(SchemaError, match=r"environment\.json"):
        load_bundle("quick")


def test_duplicated_rows_in_a_done_marker_file_are_rejected(copy):
    _corrupt_csv(copy / "latency_profiles.csv", lambda f: pd.concat([f, f.iloc[:1]]))
    with pytest.raises(SchemaError, match=r"latency_profiles\.csv.*duplicated"):
        ProfileStore(copy).latency_done()


def test_missing_bundle_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    with pytest.raises(SchemaError, match="planner profile"):
        load_bundle("quick")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"v": 1}))

    def broken(tmp):
        tmp.write_text('{"v": 2')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary left behind


def test_a_model_that_fails_to_load_is_recorded_infeasible_with_its_cascades(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from planner.models.base import ModelUnavailableError
    from planner.profile import toy

    def load_predictor(spec, preset="full"):
        if spec.model == "resnet18":
            raise ModelUnavailableError("no trained 'quick' checkpoint for 'resnet18'")
        return toy.load_predictor(spec, preset)

    zoo = SimpleNamespace(task_models=toy.task_models, variant_support=toy.variant_support,
                          eval_inputs=toy.eval_inputs, flops_per_item=toy.flops_per_item, load_predictor=load_predictor)
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "torch/fp32")
    profiles = run_sweep(["cifar10"], "quick", ["cpu"], zoo=zoo, profile=TINY.model_copy(update={"batch_sizes": [1]}),
                         progress=False)["cpu"]
    assert profiles["config_id"].tolist() == ["cifar10/mobilenet_v2/torch/fp32/b1/cpu"]
    infeasible = load_bundle("quick").infeasible.set_index("config_id")["reason"]
    assert "no trained 'quick' checkpoint" in infeasible["cifar10/resnet18/torch/fp32/b1/cpu"]
    cascade = infeasible["cifar10/cascade:mobilenet_v2>resnet18@0.9/torch/fp32/b1/cpu"]
    assert cascade.startswith("cascade member resnet18: ModelUnavailableError")


def test_remeasure_noisy_retimes_only_disturbed_configurations(swept, copy, monkeypatch):
    from planner.profile import toy

    monkeypatch.setenv("PLANNER_TOY_VARIANTS", VARIANTS)
    lat = pd.read_csv(copy / "latency_profiles.csv")
    lat["background_cpu_share"] = 0.0
    lat.loc[0, "background_cpu_share"] = 0.9
    lat.to_csv(copy / "latency_profiles.csv", index=False)
    noisy = lat.loc[0, "config_id"]
    before = pd.read_parquet(copy / "latency_samples.parquet").set_index("config_id")
    run_sweep(["sst2"], "quick", ["cpu"], zoo=toy, profile=TINY, progress=False, remeasure_noisy=0.5)
    after = pd.read_parquet(copy / "latency_samples.parquet").set_index("config_id")
    n_samples = pd.read_csv(copy / "profiles.csv").set_index("config_id")["n_samples"]
    assert after.groupby(level=0).size().reindex(n_samples.index).eq(n_samples).all()  # no duplicated samples
    others = [c for c in lat["config_id"] if c != noisy]
    pd.testing.assert_frame_equal(after.loc[others], before.loc[others])
    assert not np.array_equal(after.loc[[noisy], "latency_ms"].to_numpy()[:100], before.loc[[noisy], "latency_ms"].to_numpy()[:100])


def test_a_space_that_shrinks_and_grows_again_stays_consistent(tmp_path, monkeypatch):
    """Rows of configurations a preset has since pruned leave the merged files, and come back measured."""
    from planner.profile import toy

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("PLANNER_TOY_VARIANTS", "torch/fp32")
    wide = TINY.model_copy(update={"batch_sizes": [1], "thresholds": [0.8, 0.9]})
    narrow = wide.model_copy(update={"thresholds": [0.9]})
    ids = {}
    for name, preset in (("wide", wide), ("narrow", narrow), ("wide again", wide)):
        profiles = run_sweep(["cifar10"], "quick", ["cpu"], zoo=toy, profile=preset, progress=False)["cpu"]
        bundle = load_bundle("quick")  # validated: samples and predictions match the profiles
        assert set(bundle.samples["config_id"]) == set(profiles["config_id"]), name
        ids[name] = set(profiles["config_id"])
    pruned = "cifar10/cascade:mobilenet_v2>resnet18@0.8/torch/fp32/b1/cpu"
    assert pruned in ids["wide"] and pruned not in ids["narrow"] and ids["wide again"] == ids["wide"]


# ---- content hashes -----------------------------------------------------------------------------
def test_the_sweep_records_a_hash_of_every_bundle_file(swept):
    folder = next((swept[0] / "quick" / "profiles").iterdir())
    assert manifest_names(folder) == sorted(["dominated.csv", "environment.json", "infeasible.csv",
                                             "latency_samples.parquet", "model_sizes.csv", "predictions.parquet",
                                             "profiles.csv", "roofline_peaks.csv"])


@pytest.mark.parametrize("name", ["latency_samples.parquet", "predictions.parquet"])
def test_one_flipped_byte_in_a_parquet_file_is_named(copy, name):
    load_bundle("quick")  # untouched: loads
    path = copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SchemaError, match=rf"{name.replace('.', '[.]')}: content differs from .*MANIFEST\.json"):
        load_bundle("quick")


def test_a_changed_sample_is_caught_even_where_the_file_still_reads(copy):
    """The review's case: one sample 0.4286 -> 0.4296 ms, a file that parquet still reads."""
    path = copy / "latency_samples.parquet"
    frame = pd.read_parquet(path)
    frame.loc[5, "latency_ms"] += 0.001
    frame.to_parquet(path, index=False)
    with pytest.raises(SchemaError, match=r"latency_samples\.parquet: content differs"):
        load_bundle("quick")


def test_a_folder_without_manifest_says_how_to_make_one_and_rehash_makes_it(copy, capsys):
    (copy / MANIFEST).unlink()
    with pytest.raises(SchemaError, match=rf"MANIFEST\.json: missing.*planner profile --rehash --preset quick "
                                          rf"--machine-tag {copy.name}"):
        load_bundle("quick")
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    assert cli.main(["profile", "--rehash", "--preset", "quick", "--machine-tag", copy.name]) == 0
    assert "MANIFEST.json" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.name != MANIFEST} == before  # files untouched
    load_bundle("quick")


def test_rehash_refuses_a_folder_that_fails_its_checks(copy):
    (copy / MANIFEST).unlink()
    frame = pd.read_csv(copy / "profiles.csv")
    frame.loc[0, "lat_p95_ms"] *= 1.01
    frame.to_csv(copy / "profiles.csv", index=False)
    with pytest.raises(SchemaError, match=r"profiles\.csv: .*lat_p95_ms"):
        rehash("quick")
    assert not (copy / MANIFEST).exists()


def test_a_bundle_file_the_manifest_does_not_cover_is_refused(copy):
    write_manifest(copy, [n for n in manifest_names(copy) if n != "dominated.csv"])
    with pytest.raises(SchemaError, match=r"MANIFEST\.json: does not cover \['dominated\.csv'\]"):
        load_bundle("quick")


# ---- profile rows against their data -----------------------------------------------------------------
def test_an_edited_accuracy_is_refused_naming_file_config_and_both_values(copy):
    frame = pd.read_csv(copy / "profiles.csv")
    row = frame.index[frame["accuracy_source"] == "measured"][1]
    cid, true = frame.loc[row, "config_id"], frame.loc[row, "accuracy"]
    _corrupt_csv(copy / "profiles.csv", lambda f: f.assign(accuracy=f["accuracy"].where(f.index != row, 0.99)))
    with pytest.raises(SchemaError) as info:
        load_bundle("quick")
    message = str(info.value)
    assert "profiles.csv" in message and cid in message and "accuracy = 0.99" in message
    assert repr(float(true)) in message


@pytest.mark.parametrize("column", ["lat_p50_ms", "lat_p95_ms", "lat_p99_ms", "lat_mean_ms"])
def test_an_edited_latency_statistic_is_refused(copy, column):
    frame = pd.read_csv(copy / "profiles.csv")
    cid = frame.loc[4, "config_id"]

    def nudge(f):
        f.loc[4, column] *= 1 + 1e-6  # still ordered, positive, finite: only the samples disagree
        return f
    _corrupt_csv(copy / "profiles.csv", nudge)
    with pytest.raises(SchemaError, match=rf"profiles\.csv: {cid}: {column} = .* but its samples in "
                                          r"latency_samples\.parquet give"):
        load_bundle("quick")


def test_an_edited_cascade_coverage_is_refused(copy):
    frame = pd.read_csv(copy / "profiles.csv")
    row = frame.index[frame["coverage"].notna()][0]
    _corrupt_csv(copy / "profiles.csv", lambda f: f.assign(coverage=f["coverage"].where(f.index != row, 0.123)))
    with pytest.raises(SchemaError, match=rf"profiles\.csv: .*coverage = 0.123"):
        load_bundle("quick")


def test_dominated_csv_without_config_id_is_a_schema_error_naming_it(copy):
    _corrupt_csv(copy / "dominated.csv", lambda f: f.drop(columns="config_id"))
    with pytest.raises(SchemaError, match=r"dominated\.csv: missing column\(s\) \['config_id'\]"):
        load_bundle("quick")


def test_a_fractional_batch_size_in_profiles_csv_is_refused(copy):
    _corrupt_csv(copy / "profiles.csv", lambda f: f.assign(batch_size=f["batch_size"].where(f.index != 0, 1.7)))
    with pytest.raises(SchemaError, match=r"profiles\.csv: column 'batch_size' must hold whole numbers, got \[1\.7\]"):
        load_bundle("quick")


def test_the_committed_full_profiles_pass_every_check():
    """results/full holds the measured profiles the book reports; they load with hashes and cross-checks."""
    bundle = load_bundle("full")
    assert len(bundle.profiles) > 100 and bundle.dominated is not None
