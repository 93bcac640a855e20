"""Where things live on disk: one place, so no module invents its own paths."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


def data_dir() -> Path:
    """Data directory: ``$PLANNER_DATA_DIR`` when set, else ``data/`` in the repo."""
    return Path(os.environ.get("PLANNER_DATA_DIR", REPO_ROOT / "data"))


def cache_dir() -> Path:
    """Checkpoints and exports (outside git): ``$PLANNER_CACHE_DIR`` or ``.cache/``."""
    path = Path(os.environ.get("PLANNER_CACHE_DIR", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(preset: str) -> Path:
    """Each preset writes to its own folder, so a quick run never touches the full results."""
    root = Path(os.environ.get("PLANNER_RESULTS_DIR", REPO_ROOT / "results"))
    path = root / preset
    path.mkdir(parents=True, exist_ok=True)
    return path


def cpu_model() -> str:
    """Human-readable CPU model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_tag(device: str = "cpu") -> str:
    """Stable tag naming the machine a profile was measured on, e.g. ``cpu-amd-epyc-2c``."""
    if device == "cuda":
        try:
            import torch

            name = torch.cuda.get_device_name(0)
        except Exception:  # pragma: no cover - only on GPU machines
            name = "cuda"
        return "cuda-" + _slug(name)
    return f"cpu-{_slug(cpu_model())}-{os.cpu_count()}c"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
