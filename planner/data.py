"""Evaluation and training data: SST-2 (GLUE) and CIFAR-10, loaded offline from checksummed files,
plus two real request-arrival traces (``traces/``, Twitter-derived, from Proteus) that
:func:`planner.workloads.twitter` replays.

Files live in :func:`planner.paths.data_dir`. ``MANIFEST.json`` there lists the sha256 of each
file; loading verifies it, so a truncated or corrupted copy fails loudly instead of silently
shifting every accuracy number. ``download=True`` opts into the real online loaders
(``datasets`` / ``torchvision``) and converts their output to the same on-disk format.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from planner.paths import data_dir
from planner.tables import file_sha256

MANIFEST = "MANIFEST.json"
SST2_FILES = {"train": "sst2/train.tsv", "validation": "sst2/dev.tsv"}
CIFAR10_FILES = {"train": "cifar10/cifar10_train.npz", "test": "cifar10/cifar10_test.npz"}
# arrival traces are copied from the mirror only (their licence allows use "for comparison purposes
# only", so they are never downloaded or committed); PROVENANCE.md travels with them
TRACE_FILES = {"a": "traces/twitter_a.txt", "b": "traces/twitter_b.txt"}
TRACE_PROVENANCE = "traces/PROVENANCE.md"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
HOW_TO_GET = (
    "run `make data` (copies the offline mirror ../shared/data) or "
    "`python -m planner data --download` (uses the online loaders)"
)

HOW_TO_GET_TRACES = "run `python -m planner data` (copies the offline mirror ../shared/data, traces included)"


def mirrored_files() -> list[str]:
    """Every file ``python -m planner data`` copies from the mirror and the manifest lists."""
    return [*SST2_FILES.values(), *CIFAR10_FILES.values(), *TRACE_FILES.values(), TRACE_PROVENANCE]


class DataFileError(RuntimeError):
    """A data file is missing, corrupted or malformed."""


sha256_file = file_sha256  # one streaming hash for data files, checkpoints and result tables


def _manifest(root: Path) -> dict[str, dict]:
    path = root / MANIFEST
    if not path.exists():
        raise DataFileError(f"missing data manifest {path}: {HOW_TO_GET}")
    try:
        return json.loads(path.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise DataFileError(f"malformed data manifest {path}: {exc}") from exc


@lru_cache(maxsize=32)
def _verified(path_str: str, mtime_ns: int, expected: str) -> bool:
    return sha256_file(Path(path_str)) == expected


def verified_path(relative: str, root: Path | None = None, how_to_get: str = HOW_TO_GET) -> Path:
    """Return the path of a data file after checking it exists and matches its manifest sha256."""
    root = Path(root) if root is not None else data_dir()
    path = root / relative
    if not path.exists():
        raise DataFileError(f"missing data file {path}: {how_to_get}")
    entry = _manifest(root).get(relative)
    if entry is None:
        raise DataFileError(f"data file {path} is not listed in {root / MANIFEST}")
    if not _verified(str(path), path.stat().st_mtime_ns, entry["sha256"]):
        raise DataFileError(
            f"data file {path} is corrupted: its sha256 does not match {root / MANIFEST}; "
            f"delete it and {how_to_get}"
        )
    return path


def trace_path(name: str, root: Path | None = None) -> Path:
    """The verified path of arrival trace ``name`` (a key of :data:`TRACE_FILES`) under ``traces/``."""
    if name not in TRACE_FILES:
        raise ValueError(f"unknown arrival trace {name!r}; expected one of {sorted(TRACE_FILES)}")
    return verified_path(TRACE_FILES[name], root, HOW_TO_GET_TRACES)


def load_sst2(split: str = "validation", download: bool = False, root: Path | None = None) -> pd.DataFrame:
    """SST-2 as a DataFrame ``[sentence, label]``; ``split`` is ``train`` or ``validation``."""
    if split not in SST2_FILES:
        raise ValueError(f"unknown SST-2 split {split!r}; expected one of {sorted(SST2_FILES)}")
    if download:
        _download_sst2(Path(root) if root else data_dir())
    path = verified_path(SST2_FILES[split], root)
    rows = []
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n")
        if header != "sentence\tlabel":
            raise DataFileError(f"{path}: expected header 'sentence<TAB>label', got {header!r}")
        for number, line in enumerate(handle, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                sentence, label = line.rsplit("\t", 1)
                rows.append((sentence.strip(), int(label)))
            except ValueError as exc:
                raise DataFileError(f"{path}:{number}: malformed row {line!r}") from exc
    frame = pd.DataFrame(rows, columns=["sentence", "label"])
    frame["label"] = frame["label"].astype("int64")
    return frame


def load_cifar10(
    split: str = "test", download: bool = False, root: Path | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """CIFAR-10 as ``(x uint8 N×32×32×3 RGB, y int64, class_names)``; ``split`` is ``train`` or ``test``."""
    if split not in CIFAR10_FILES:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; expected one of {sorted(CIFAR10_FILES)}")
    if download:
        _download_cifar10(Path(root) if root else data_dir())
    path = verified_path(CIFAR10_FILES[split], root)
    with np.load(path) as arrays:
        x, y = arrays["x"], arrays["y"]
        names = tuple(str(n) for n in arrays["class_names"]) if "class_names" in arrays else CIFAR10_CLASSES
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or len(x) != len(y):
        raise DataFileError(f"{path}: expected x uint8 (N,32,32,3) and y (N,), got {x.shape} {x.dtype}, {y.shape}")
    return x, y.astype(np.int64), names


# ----------------------------------------------------------------------------- filling data/


def write_manifest(root: Path, sources: dict[str, str]) -> Path:
    """Record the sha256 and source of every file in ``root`` (sorted, stable)."""
    files = {}
    for relative in sorted(mirrored_files()):
        path = root / relative
        if path.exists():
            files[relative] = {"sha256": sha256_file(path), "bytes": path.stat().st_size,
                               "source": sources.get(relative, "unknown")}
    manifest = root / MANIFEST
    manifest.write_text(json.dumps({"files": files}, indent=2) + "\n")
    return manifest


def fill_from_mirror(mirror: Path, root: Path | None = None) -> list[Path]:
    """Copy the data files and arrival traces from a local mirror (default ``../shared/data``),
    verifying each against the manifest."""
    root = Path(root) if root else data_dir()
    expected = _manifest(root)
    copied = []
    for relative in mirrored_files():
        target = root / relative
        if target.exists() and sha256_file(target) == expected.get(relative, {}).get("sha256"):
            continue
        source = Path(mirror) / relative
        if not source.exists():
            raise DataFileError(f"mirror {mirror} lacks {relative}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(target)
        if relative in expected and sha256_file(target) != expected[relative]["sha256"]:
            raise DataFileError(f"{source} does not match the sha256 in {root / MANIFEST}")
    return copied


def _download_sst2(root: Path) -> None:  # pragma: no cover - needs the network
    from datasets import load_dataset

    glue = load_dataset("glue", "sst2")
    for split, relative in SST2_FILES.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write("sentence\tlabel\n")
            for row in glue[split]:
                handle.write(f"{row['sentence']}\t{row['label']}\n")
    _update_manifest(root, SST2_FILES.values(), "datasets.load_dataset('glue','sst2')")


def _download_cifar10(root: Path) -> None:  # pragma: no cover - needs the network
    from torchvision.datasets import CIFAR10

    raw = root / "cifar10" / "raw"
    for split, relative in CIFAR10_FILES.items():
        dataset = CIFAR10(str(raw), train=split == "train", download=True)
        np.savez_compressed(root / relative, x=np.asarray(dataset.data, dtype=np.uint8),
                            y=np.asarray(dataset.targets, dtype=np.int64),
                            class_names=np.array(dataset.classes))
    _update_manifest(root, CIFAR10_FILES.values(), "torchvision.datasets.CIFAR10(download=True), lossless")


def _update_manifest(root: Path, relatives, source: str) -> None:  # pragma: no cover
    manifest = root / MANIFEST
    files = json.loads(manifest.read_text())["files"] if manifest.exists() else {}
    for relative in relatives:
        path = root / relative
        files[relative] = {"sha256": sha256_file(path), "bytes": path.stat().st_size, "source": source}
    manifest.write_text(json.dumps({"files": files}, indent=2) + "\n")
