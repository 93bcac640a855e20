"""Crash-safe result tables: whole appended rows, torn-line repair, content hashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from planner.schema import SchemaError
from planner.tables import (MANIFEST, append_rows, atomic_write_text, read_rows, verify_manifest,
                            write_manifest)

ROOT = Path(__file__).resolve().parents[1]


def rows(start: int, n: int) -> pd.DataFrame:
    """Evaluation-like rows: ids, floats, a string with a comma and a missing value."""
    return pd.DataFrame({"run": range(start, start + n), "method": "planner, v2",
                         "hit_rate": [0.1 * (i % 10) + 1 / 3 for i in range(start, start + n)],
                         "note": [None if i % 2 else "ok" for i in range(start, start + n)]})


def test_appended_rows_read_back_with_one_header(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 3))
    append_rows(path, rows(3, 2))
    assert path.read_bytes().endswith(b"\n")
    back = read_rows(path, ["run", "hit_rate"])
    assert back["run"].tolist() == [0, 1, 2, 3, 4]
    pd.testing.assert_frame_equal(back, pd.read_csv(path))
    assert back["method"].eq("planner, v2").all()


def test_appended_columns_are_matched_by_name_and_other_columns_refused(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 2))
    append_rows(path, rows(2, 1)[["note", "hit_rate", "run", "method"]])  # same columns, other order
    assert read_rows(path)["run"].tolist() == [0, 1, 2]
    with pytest.raises(SchemaError, match=r"runs\.csv.*missing \['note'\], extra \['extra'\]"):
        append_rows(path, rows(3, 1).drop(columns="note").assign(extra=1))


@pytest.mark.parametrize("cut", [1, 7, -3])
def test_a_torn_last_row_is_cut_off_and_the_next_append_starts_a_clean_line(tmp_path, cut):
    """A kill mid-write leaves part of a row and no newline: it is neither counted nor joined to the next row."""
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 4))
    complete = path.read_bytes()
    line = rows(4, 1).to_csv(index=False, header=False, lineterminator="\n").encode()
    with open(path, "ab") as handle:  # what a killed writer leaves: a prefix of the next row
        handle.write(line[:cut])
    back = read_rows(path, ["run"])
    assert back["run"].tolist() == [0, 1, 2, 3]
    assert path.read_bytes() == complete  # repaired on disk
    append_rows(path, rows(4, 2))
    assert pd.read_csv(path)["run"].tolist() == [0, 1, 2, 3, 4, 5]


def test_append_repairs_a_torn_file_itself(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 2))
    with open(path, "ab") as handle:
        handle.write(b"2,planner")
    append_rows(path, rows(2, 1))  # without a read_rows first
    assert pd.read_csv(path)["run"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("reader", ["read_rows", "append_rows"])
def test_a_last_line_with_the_wrong_field_count_is_torn(tmp_path, reader):
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 2))
    with open(path, "ab") as handle:
        handle.write(b"2,x\n")
    if reader == "read_rows":
        assert read_rows(path)["run"].tolist() == [0, 1]
    else:  # an append without a read first does not bury the bad line under a good one
        append_rows(path, rows(2, 1))
        assert pd.read_csv(path)["run"].tolist() == [0, 1, 2]


def test_a_torn_header_leaves_an_empty_file_that_takes_a_fresh_header(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_bytes(b"run,meth")
    assert read_rows(path, ["run"]).empty and path.read_bytes() == b""
    append_rows(path, rows(0, 1))
    assert read_rows(path)["run"].tolist() == [0]


def test_a_torn_quoted_field_is_cut_off(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 1))
    with open(path, "ab") as handle:
        handle.write(b'1,"planner,\n')  # killed right after a newline inside quotes
    append_rows(path, rows(1, 1))
    assert read_rows(path)["run"].tolist() == [0, 1]


def test_a_quoted_newline_inside_a_complete_row_is_kept(tmp_path):
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 1).assign(note="two\nlines"))
    append_rows(path, rows(1, 1).assign(note="end"))
    assert read_rows(path)["note"].tolist() == ["two\nlines", "end"]


def test_damage_before_the_last_line_is_an_error_naming_file_and_line(tmp_path):
    """The old splice: a half row followed by a whole one on the same line, then more rows."""
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 2))
    with open(path, "ab") as handle:
        handle.write(b"2,plan")
    with open(path, "ab") as handle:  # what to_csv(mode="a") did next
        handle.write(rows(2, 2).to_csv(index=False, header=False, lineterminator="\n").encode())
    before = path.read_bytes()
    with pytest.raises(SchemaError, match=r"runs\.csv: line 4 has 5 fields, the header has 4"):
        read_rows(path)
    assert path.read_bytes() == before  # nothing cut when the damage is not a torn tail


def test_missing_file_and_missing_columns_name_the_file(tmp_path):
    with pytest.raises(SchemaError, match=r"missing file .*none\.csv"):
        read_rows(tmp_path / "none.csv")
    path = tmp_path / "runs.csv"
    append_rows(path, rows(0, 1))
    with pytest.raises(SchemaError, match=r"runs\.csv: missing column\(s\) \['seed'\]"):
        read_rows(path, ["run", "seed"])


WRITER = """
import sys
import pandas as pd
from planner.tables import append_rows
path, i = sys.argv[1], int(sys.argv[2])
while True:  # rows of about 1 MB, so a kill often lands inside a write
    append_rows(path, pd.DataFrame({"run": range(i, i + 40), "payload": "x" * 25000}))
    i += 40
"""


def test_a_writer_killed_with_sigkill_leaves_a_file_that_resumes_cleanly(tmp_path):
    path = tmp_path / "runs.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for kill in range(3):
        before = len(read_rows(path)) if path.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(before)], env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < (kill + 1) * 3_000_000):
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        done = read_rows(path, ["run", "payload"])
        assert len(done) > before
        assert done["run"].tolist() == list(range(len(done)))  # whole rows only, none lost or repeated
        assert done["payload"].str.len().eq(25000).all()
        assert path.read_bytes().endswith(b"\n")
    append_rows(path, pd.DataFrame({"run": [len(done)], "payload": "y"}))
    final = pd.read_csv(path)
    assert final["run"].tolist() == list(range(len(done) + 1))


def test_manifest_names_a_flipped_byte_and_a_missing_file(tmp_path):
    for name, text in (("a.csv", "x\n1\n"), ("b.json", '{"v": 1}')):
        atomic_write_text(tmp_path / name, text)
    write_manifest(tmp_path, ["a.csv", "b.json"])
    assert verify_manifest(tmp_path) == ["a.csv", "b.json"]
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["files"]["a.csv"]["bytes"] == 4 and len(manifest["files"]["a.csv"]["sha256"]) == 64
    (tmp_path / "a.csv").write_text("x\n2\n")  # same size, one byte changed
    with pytest.raises(SchemaError, match=r"a\.csv: content differs from .*MANIFEST\.json"):
        verify_manifest(tmp_path)
    (tmp_path / "a.csv").unlink()
    with pytest.raises(SchemaError, match=r"a\.csv: listed in .*MANIFEST\.json but missing"):
        verify_manifest(tmp_path)
    with pytest.raises(SchemaError, match=r"c\.csv: cannot hash a missing file"):
        write_manifest(tmp_path, ["b.json", "c.csv"])
