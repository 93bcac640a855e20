"""Crash-safe result files: atomic replacement, whole appended rows, content hashes.

Three ways a stored table goes bad, and the answer to each:

* a file replaced while a process dies: :func:`atomic_write` writes a temporary file in the same
  folder, fsyncs it and ``os.replace``\\ s it, so a reader sees the old or the new file, never half;
* a CSV that grows by appended rows (an evaluation grid) and a process killed mid-append:
  :func:`append_rows` writes whole rows ending in a newline and fsyncs; :func:`read_rows` finds a
  torn last line, cuts the file back to its last complete row (atomically) and returns only complete
  rows, while damage anywhere before the last line is a :class:`SchemaError` naming file and line;
* flipped bytes in a finished folder: :func:`write_manifest` records every file's sha256 and size in
  ``MANIFEST.json``; :func:`verify_manifest` names the file that no longer matches.

One writer per file is assumed (the runners here are single processes).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from planner.schema import SchemaError, read_json

MANIFEST = "MANIFEST.json"
_log = logging.getLogger(__name__)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via ``write(tmp)`` then fsync and ``os.replace``: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are shared and committed
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of a text (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# ---- appended CSV rows ---------------------------------------------------------------------------
def _complete_length(path: Path, data: bytes) -> tuple[int, list[str] | None]:
    """Bytes of ``data`` holding the header and every complete row, and the header (None if none).

    The last record is torn when the file does not end with a newline, its field count differs from
    the header's, or it ends inside a quoted field; an earlier malformed record is a SchemaError.
    """
    pieces = data.split(b"\n")
    lines = [p + b"\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    reader = csv.reader((line.decode("utf-8", errors="surrogateescape") for line in lines), strict=True)
    header: list[str] | None = None
    while True:
        start = reader.line_num
        try:
            fields = next(reader)
        except StopIteration:
            return len(data), header
        except csv.Error as exc:
            if reader.line_num < len(lines):
                raise SchemaError(f"{path}: line {start + 1} is not valid CSV ({exc}); the file is damaged "
                                  "before its last line (not an interrupted append): repair or remove it") from None
            return offsets[start], header  # ends inside a quoted field: torn
        end = reader.line_num
        if not fields:  # blank line (pandas skips them too)
            continue
        last = end == len(lines)
        if last and not data.endswith(b"\n"):
            return offsets[start], header
        if header is None:
            header = fields
            continue
        if len(fields) != len(header):
            if last:
                return offsets[start], header
            raise SchemaError(f"{path}: line {start + 1} has {len(fields)} fields, the header has {len(header)}; "
                              "the file is damaged before its last line (not an interrupted append): "
                              "repair or remove it")


def _repair(path: Path) -> tuple[bytes, list[str] | None]:
    """Cut a torn last line off ``path`` (atomically); returns the complete bytes and the header."""
    data = path.read_bytes()
    length, header = _complete_length(path, data)
    if length < len(data):
        _log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted write", path, len(data) - length)
        data = data[:length]
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return data, header


def read_rows(path: Path, required_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The complete rows of an appended CSV, repairing a torn last line left by a killed writer.

    A missing file or missing ``required_columns`` is a SchemaError naming the file; an empty file
    (created, killed before its header) reads as no rows.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"missing file {path}")
    data, header = _repair(path)
    if header is None:
        return pd.DataFrame(columns=list(required_columns))
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any parser failure is the file's fault
        raise SchemaError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    missing = [c for c in required_columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}")
    return frame


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def append_rows(path: Path, frame: pd.DataFrame) -> None:
    """Append ``frame``'s rows to the CSV ``path`` as whole lines, then flush and fsync.

    The header is written when the file is new or empty. An existing file must have the same columns
    (in any order; rows are written in the file's order), else SchemaError. A torn last line left by
    an earlier killed writer is cut off first, so a new row never joins a half row.
    """
    path = Path(path)
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(f"{path}: expected a DataFrame to append, got {type(frame).__name__}")
    if frame.columns.duplicated().any():
        raise SchemaError(f"{path}: duplicated column(s) {frame.columns[frame.columns.duplicated()].tolist()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    header: list[str] | None = None
    if not created and path.stat().st_size:
        header = _complete_length(path, _head(path))[1] if _last_byte(path) == b"\n" else None
        if header is None or not _last_line_fits(path, header):
            header = _repair(path)[1]  # the full scan, only when the tail looks torn
    if header is not None:
        columns = [str(c) for c in frame.columns]
        if sorted(columns) != sorted(header):
            raise SchemaError(f"{path}: rows to append have other columns than the file (missing "
                              f"{[c for c in header if c not in columns]}, extra {[c for c in columns if c not in header]}); "
                              "write to a fresh file")
        frame = frame.set_axis(columns, axis=1)[header]
    if frame.empty and header is not None:
        return
    payload = frame.to_csv(index=False, header=header is None, lineterminator="\n").encode("utf-8")
    with open(path, "ab") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    if created:
        _fsync_dir(path.parent)


def _last_line_fits(path: Path, header: list[str], window: int = 1 << 16) -> bool:
    """Cheap check of an appended file's tail: its last line has the header's field count and no open
    quote. False also when unsure (a last line longer than ``window``), which costs a full scan."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - window))
        tail = handle.read()[:-1]
    if b"\n" not in tail and size > window:
        return False
    last = tail.rsplit(b"\n", 1)[-1]
    if last.count(b'"') % 2:
        return False
    return len(next(csv.reader([last.decode("utf-8", errors="surrogateescape")]), [])) == len(header)


def _head(path: Path) -> bytes:
    """The file's first line (its header), newline included."""
    with open(path, "rb") as handle:
        return handle.readline()


# ---- content hashes --------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, names: Iterable[str]) -> Path:
    """Write ``folder/MANIFEST.json`` with the sha256 and byte size of each named file (atomically)."""
    folder = Path(folder)
    files = {}
    for name in sorted(set(names)):
        path = folder / name
        if not path.is_file():
            raise SchemaError(f"{path}: cannot hash a missing file for {folder / MANIFEST}")
        files[name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    target = folder / MANIFEST
    atomic_write_text(target, json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n")
    return target


def manifest_names(folder: Path) -> list[str]:
    """The file names ``folder/MANIFEST.json`` covers (SchemaError if it is missing or malformed)."""
    return sorted(manifest_entries(folder))


def manifest_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """``folder/MANIFEST.json``'s files: name -> {'sha256', 'bytes'} (SchemaError if missing or malformed)."""
    path = Path(folder) / MANIFEST
    manifest = read_json(path)
    files = manifest.get("files")
    if manifest.get("algorithm") != "sha256" or not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
            for v in files.values()):
        raise SchemaError(f"{path}: expected {{'algorithm': 'sha256', 'files': {{name: {{'sha256', 'bytes'}}}}}}")
    return files


def verify_manifest(folder: Path, skip: Iterable[str] = ()) -> list[str]:
    """Check every file listed in ``folder/MANIFEST.json`` against its size and sha256; returns the names.

    A missing listed file or one whose content changed is a SchemaError naming that file. Files named
    in ``skip`` are not checked (a command about to rewrite them from the checked ones).
    """
    folder = Path(folder)
    names = manifest_names(folder)
    files = read_json(folder / MANIFEST)["files"]
    for name in (n for n in names if n not in set(skip)):
        path = folder / name
        expected = files[name]
        if not path.is_file():
            raise SchemaError(f"{path}: listed in {folder / MANIFEST} but missing")
        size = path.stat().st_size
        digest = file_sha256(path)
        if size != expected["bytes"] or digest != expected["sha256"]:
            raise SchemaError(f"{path}: content differs from {folder / MANIFEST} (sha256 {digest[:16]}…, "
                              f"{size} bytes; recorded {expected['sha256'][:16]}…, {expected['bytes']} bytes): "
                              "the file was corrupted or edited after it was written")
    return names


def refresh_manifest(folder: Path, patterns: Sequence[str] = ("*.csv", "*.json", "*.parquet")) -> Path:
    """Rewrite ``folder/MANIFEST.json`` over every file matching ``patterns`` (the manifest aside).

    For folders several commands write into (``results/<preset>/eval``): each command calls it once
    its files are complete, so a manifest never vouches for a half-written table.
    """
    folder = Path(folder)
    names = sorted({p.name for pattern in patterns for p in folder.glob(pattern) if p.name != MANIFEST})
    return write_manifest(folder, names)
