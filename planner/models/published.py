"""Published weights: finished checkpoints shipped with the repository and verified by sha256.

Why: the full recipes take hours on a 2-core CPU, so ``planner train`` installs a published checkpoint
instead of training when its recipe and training data match the current ones and its file verifies.
Layout, per preset: ``results/<preset>/models/weights/<model>.safetensors`` and ``MANIFEST.json``
(sha256, size, recipe, data checksum and the training record of every file). Floating tensors are
stored in fp16 (half the bytes of fp32); a tensor that would overflow fp16 is stored in bf16 instead.
Training ends by rounding its weights this way and evaluating the rounded ones, and the cached
``model.pt`` is the rounded weights upcast to fp32, so a fresh clone that installs the published file
profiles exactly the weights this machine profiled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from planner.data import sha256_file
from planner.paths import results_dir

if TYPE_CHECKING:  # torch is imported where tensors are handled, so reading the manifest stays light
    import torch

MANIFEST_FILE = "MANIFEST.json"
SUFFIX = ".safetensors"


class PublishedWeightsError(ValueError):
    """A published weights file is missing, altered, or disagrees with its manifest."""


def weights_dir(preset: str) -> Path:
    return results_dir(preset) / "models" / "weights"


def read_manifest(preset: str) -> dict[str, Any]:
    """The preset's manifest (``{"models": {}}`` when nothing is published)."""
    path = weights_dir(preset) / MANIFEST_FILE
    if not path.exists():
        return {"models": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PublishedWeightsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest.get("models"), dict):
        raise PublishedWeightsError(f"{path} has no 'models' mapping")
    return manifest


def round_for_publishing(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 copies of the floating tensors (bf16 where fp16 would overflow); other tensors unchanged."""
    import torch

    stored = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            half = tensor.to(torch.float16)
            if bool(torch.isfinite(tensor).all()) and not bool(torch.isfinite(half).all()):
                half = tensor.to(torch.bfloat16)
            tensor = half
        stored[name] = tensor.contiguous()
    return stored


def upcast(stored: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fp32 state dict a model is loaded with (integer buffers such as BN counters unchanged)."""
    return {k: v.float() if v.is_floating_point() else v.clone() for k, v in stored.items()}


def publish(preset: str, model: str, stored: Mapping[str, torch.Tensor], recipe: Mapping[str, Any],
            data_checksum: str, record: Mapping[str, Any]) -> Path:
    """Write ``model``'s rounded weights and its manifest entry (each file replaced atomically)."""
    from safetensors.torch import save_file

    folder = weights_dir(preset)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model}{SUFFIX}"
    tmp = path.with_suffix(".tmp")
    save_file(dict(stored), str(tmp), metadata={"model": model, "preset": preset})
    tmp.replace(path)
    manifest = read_manifest(preset)
    manifest["models"][model] = {
        "file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
        "n_parameters": int(sum(t.numel() for t in stored.values() if t.is_floating_point())),
        "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in stored.values()}),
        "recipe": json.loads(json.dumps(recipe)), "data_checksum": data_checksum,
        "record": json.loads(json.dumps(record)),
    }
    manifest_path = folder / MANIFEST_FILE
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(manifest_path)
    return path


def matching_entry(preset: str, model: str, recipe: Mapping[str, Any], data_checksum: str) -> dict | None:
    """The manifest entry of ``model`` when it was trained with exactly this recipe on this data."""
    entry = read_manifest(preset)["models"].get(model)
    if entry is None:
        return None
    if entry.get("recipe") != json.loads(json.dumps(recipe)) or entry.get("data_checksum") != data_checksum:
        return None
    return entry


def load_verified(preset: str, model: str, entry: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The published tensors of ``model`` after checking the file against its manifest sha256."""
    from safetensors.torch import load_file

    path = weights_dir(preset) / str(entry["file"])
    if not path.exists():
        raise PublishedWeightsError(f"{path} is listed in {MANIFEST_FILE} but missing")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise PublishedWeightsError(
            f"{path} has sha256 {digest}, but {MANIFEST_FILE} records {entry['sha256']}: the file was altered "
            f"or truncated; restore it from git or retrain with `planner train --from-scratch`")
    return load_file(str(path))
