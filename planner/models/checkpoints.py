"""Where trained weights live and how a checkpoint proves what it is.

Checkpoints sit outside git in ``cache_dir()/checkpoints/<preset>/<model>/``:
``state.pt`` (resumable training state, rewritten during training), ``model.pt`` (final weights) and
``model.json`` (sidecar: data checksum, recipe, seed, training time, eval accuracy, library versions).
A finished checkpoint is reused only when its data checksum and recipe match the current ones.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from planner.data import CIFAR10_FILES, MANIFEST, SST2_FILES
from planner.paths import cache_dir, data_dir

STATE_FILE = "state.pt"
WEIGHTS_FILE = "model.pt"
SIDECAR_FILE = "model.json"
TASK_FILES = {"sst2": SST2_FILES, "cifar10": CIFAR10_FILES}
_LIBRARIES = ("torch", "torchvision", "transformers", "onnx", "onnxruntime", "numpy", "tokenizers")


def checkpoint_dir(preset: str, model: str) -> Path:
    """Folder of one model's checkpoint for a preset (created on demand)."""
    path = cache_dir() / "checkpoints" / preset / model
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_checksum(task: str) -> str:
    """sha256 over the manifest hashes of the task's files, so a data change invalidates checkpoints."""
    manifest = json.loads((data_dir() / MANIFEST).read_text())["files"]
    digest = hashlib.sha256()
    for relative in sorted(TASK_FILES[task].values()):
        if relative not in manifest:
            raise FileNotFoundError(f"{relative} is not listed in {data_dir() / MANIFEST}")
        digest.update(f"{relative}:{manifest[relative]['sha256']}\n".encode())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def read_sidecar(preset: str, model: str) -> dict[str, Any] | None:
    path = checkpoint_dir(preset, model) / SIDECAR_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_sidecar(preset: str, model: str, payload: dict[str, Any]) -> Path:
    path = checkpoint_dir(preset, model) / SIDECAR_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def matching_checkpoint(preset: str, model: str, recipe: dict[str, Any], checksum: str) -> Path | None:
    """Path of finished weights trained with exactly this recipe on exactly this data, else None."""
    sidecar = read_sidecar(preset, model)
    weights = checkpoint_dir(preset, model) / WEIGHTS_FILE
    if sidecar is None or not weights.exists():
        return None
    if sidecar.get("recipe") != json.loads(json.dumps(recipe)) or sidecar.get("data_checksum") != checksum:
        return None
    return weights


def weights_path(preset: str, model: str) -> Path | None:
    """Finished weights of a model for a preset, or None when it has not been trained."""
    path = cache_dir() / "checkpoints" / preset / model / WEIGHTS_FILE
    return path if path.exists() else None


def source_key_of(weights: Path) -> str:
    """sha256 of a weights file: the identity exports and quantized models are cached under."""
    from planner.data import sha256_file

    return sha256_file(weights)
