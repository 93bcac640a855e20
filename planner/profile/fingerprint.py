"""The environment a profile was measured in, so a number is never separated from its machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from planner.paths import cpu_model, machine_tag

# the facts that make two machines time the same configuration differently (versions and thread
# settings are recorded too, but a sweep may be resumed across them on the same hardware)
HARDWARE_KEYS = ("device", "cpu_model", "cpu_flags", "logical_cpus", "gpu_name")
_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
# threading knobs that change latencies (e.g. OpenMP spin-waiting steals cores from ONNX Runtime)
_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")


def set_threads(n_threads: int | None) -> int:
    """Fix torch's intra-op threads (None = all logical CPUs) and return the value in force.

    ONNX Runtime sessions built by the zoo read the same number (``torch.get_num_threads()``).
    """
    import torch

    n = int(n_threads or os.cpu_count() or 1)
    torch.set_num_threads(n)
    return torch.get_num_threads()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in _FLAGS_OF_INTEREST if f in present]
    except OSError:
        pass
    return []


def _physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where unavailable."""
    try:
        cores, phys = set(), None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":", 1)[1].strip()
            elif line.startswith("core id"):
                cores.add((phys, line.split(":", 1)[1].strip()))
        return len(cores) or None
    except OSError:
        return None


def hardware_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"key: recorded -> current"`` for each :data:`HARDWARE_KEYS` fact that differs between two
    fingerprints. Why: the machine tag names only the CPU model and core count, so two hosts sold as one
    model (say, with and without AVX-512) share a profile folder; a sweep resumed on the other one would
    splice its timings into the first one's profile. A fact the recorded fingerprint lacks is not compared."""
    return [f"{key}: {recorded[key]!r} -> {current.get(key)!r}" for key in HARDWARE_KEYS
            if key in recorded and recorded[key] != current.get(key)]


def hardware(device: str = "cpu") -> dict[str, Any]:
    """The :data:`HARDWARE_KEYS` facts of this machine: recorded beside live results, which are measured
    on the machine at hand and may come from another host than the profile they plan from."""
    env = fingerprint(device)
    return {key: env[key] for key in HARDWARE_KEYS if key in env}


def host_record(profile_environment: dict[str, Any]) -> dict[str, Any]:
    """This host's hardware facts and how they differ from those of the host that timed the profile
    (``environment.json``). Why: a live replay plans from the profile but is measured here; on another
    host sold under the same tag (measured: the same "AMD EPYC" without AVX-512 ran the CIFAR-10
    reference 6.5x slower) the start-up scale carries the profile over, but the deadlines and loads
    chosen from it may no longer fit, and the record must say so."""
    host = hardware()
    return {"host": host, "profile_host_differences": hardware_differences(profile_environment, host)}


def foreign_host_warning(record: dict[str, Any]) -> str | None:
    """One line for the log when :func:`host_record` found differences, else None."""
    differences = record.get("profile_host_differences") or []
    if not differences:
        return None
    return (f"warning: this host differs from the one that timed the profile ({'; '.join(differences)}); "
            f"the start-up scale carries the profile over, but its deadlines and loads may not fit here")


def announced_host_record(profile_environment: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """:func:`host_record`, with :func:`foreign_host_warning`'s line passed to ``say`` when there is one:
    every live stage records the host and warns the same way."""
    record = host_record(profile_environment)
    if (warning := foreign_host_warning(record)) is not None:
        say(warning)
    return record


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def fingerprint(device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, threads, library versions, device and date."""
    import torch

    env: dict[str, Any] = {
        "machine_tag": machine_tag(device),
        "device": device,
        "cpu_model": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": _physical_cores(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "onnxruntime_version": _version("onnxruntime"),
        "transformers_version": _version("transformers"),
        "numpy_version": _version("numpy"),
        "thread_env": {k: os.environ.get(k) for k in _THREAD_ENV},
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "date": now_iso(),
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu_name"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
    return env
