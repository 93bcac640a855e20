import json

import numpy as np
import pytest

from planner import data, workloads
from planner.paths import REPO_ROOT, data_dir


def test_sst2_fixture_loads_sentences_and_binary_labels(tiny_data_dir):
    frame = data.load_sst2("validation")
    assert list(frame.columns) == ["sentence", "label"]
    assert len(frame) == 32
    assert set(frame["label"]) == {0, 1}
    assert frame["label"].dtype == np.int64
    assert not frame["sentence"].str.endswith(" ").any()  # trailing GLUE space stripped


def test_cifar10_fixture_loads_uint8_images_and_names(tiny_data_dir):
    x, y, names = data.load_cifar10("test")
    assert x.shape == (200, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [20] * 10
    assert names[0] == "airplane" and len(names) == 10


def test_corrupted_file_is_rejected_naming_the_file(tiny_data_dir):
    path = tiny_data_dir / "sst2" / "dev.tsv"
    path.write_text(path.read_text().replace("\t1", "\t0", 1))
    with pytest.raises(data.DataFileError, match=r"dev\.tsv is corrupted.*make data"):
        data.load_sst2("validation")


def test_missing_file_says_how_to_obtain_it(tiny_data_dir):
    (tiny_data_dir / "cifar10" / "cifar10_train.npz").unlink()
    with pytest.raises(data.DataFileError, match=r"missing data file .*cifar10_train\.npz.*make data"):
        data.load_cifar10("train")


def test_unknown_split_is_a_clear_error(tiny_data_dir):
    with pytest.raises(ValueError, match="unknown SST-2 split 'test'"):
        data.load_sst2("test")


def test_fill_from_mirror_copies_and_verifies(tiny_data_dir, tmp_path):
    target = tmp_path / "fresh"
    target.mkdir()
    (target / data.MANIFEST).write_text((tiny_data_dir / data.MANIFEST).read_text())
    copied = data.fill_from_mirror(tiny_data_dir, target)
    assert len(copied) == 7
    assert len(data.load_sst2("train", root=target)) == 48


def test_fill_from_mirror_copies_and_verifies_the_arrival_traces(tiny_data_dir, tmp_path):
    target = tmp_path / "fresh"
    target.mkdir()
    (target / data.MANIFEST).write_text((tiny_data_dir / data.MANIFEST).read_text())
    copied = data.fill_from_mirror(tiny_data_dir, target)
    for relative in ("traces/twitter_a.txt", "traces/twitter_b.txt", "traces/PROVENANCE.md"):
        assert target / relative in copied
        assert (target / relative).read_bytes() == (tiny_data_dir / relative).read_bytes()
    assert data.trace_path("b", root=target) == target / "traces" / "twitter_b.txt"
    assert data.fill_from_mirror(tiny_data_dir, target) == []  # verified copies are not copied again
    # a mirror whose trace differs from the manifest is refused, naming the file
    (tiny_data_dir / "traces" / "twitter_a.txt").write_text("1,1,300\n")
    (target / "traces" / "twitter_a.txt").unlink()
    with pytest.raises(data.DataFileError, match=r"twitter_a\.txt does not match the sha256"):
        data.fill_from_mirror(tiny_data_dir, target)


def test_a_missing_trace_says_to_run_planner_data(tiny_data_dir):
    (tiny_data_dir / "traces" / "twitter_a.txt").unlink()
    with pytest.raises(data.DataFileError, match=r"missing data file .*twitter_a\.txt: run `python -m planner data`"):
        data.trace_path("a")
    with pytest.raises(ValueError, match="unknown arrival trace 'c'"):
        data.trace_path("c")


def test_the_shipped_manifest_lists_every_mirrored_file():
    listed = json.loads((REPO_ROOT / "data" / data.MANIFEST).read_text())["files"]
    assert sorted(listed) == sorted(data.mirrored_files())
    assert listed["traces/twitter_a.txt"]["sha256"].startswith("5e80efed")  # as in the mirror's PROVENANCE.md
    assert listed["traces/twitter_b.txt"]["sha256"].startswith("17a58daa")


full_data = pytest.mark.skipif(
    not (data_dir() / "cifar10" / "cifar10_train.npz").exists(), reason="full data not installed (make data)"
)


@full_data
def test_full_data_has_the_published_counts(monkeypatch):
    monkeypatch.delenv("PLANNER_DATA_DIR", raising=False)
    assert len(data.load_sst2("train")) == 67_349
    assert len(data.load_sst2("validation")) == 872
    x_train, y_train, _ = data.load_cifar10("train")
    x_test, y_test, _ = data.load_cifar10("test")
    assert len(y_train) == 50_000 and len(y_test) == 10_000
    assert np.bincount(y_test).tolist() == [1000] * 10


full_traces = pytest.mark.skipif(
    not (data_dir() / "traces" / "twitter_b.txt").exists(), reason="arrival traces not installed (make data)"
)


@full_traces
def test_real_traces_have_the_published_statistics(monkeypatch):
    """The numbers of the mirror's PROVENANCE.md: requests, span, mean rate, gap CV."""
    monkeypatch.delenv("PLANNER_DATA_DIR", raising=False)
    for name, requests, rate, cv in (("a", 28_721, 98.8, 1.74), ("b", 13_583, 46.7, 1.70)):
        ms = workloads.read_arrivals_ms(data.trace_path(name))
        gaps = np.diff(ms)
        assert len(ms) == requests and (ms[-1] - ms[0]) / 1000 == pytest.approx(291, abs=1)
        assert len(ms) / 291.0 == pytest.approx(rate, rel=0.01)
        assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.02)
