"""Which profiles a stored result was computed from, so that a resume never splices two profile sets;
and which method parameters runs that do not name their own ran with (:func:`recorded_params`).

Why: ``evaluate``, ``live-fault`` and ``live-server`` resume from the rows already on disk, keyed by
trace cell and method. Those keys do not name the profiles the methods planned from, so after a
re-profile (new weights, another machine, a re-timing) a resume would silently keep rows planned on
the old profiles beside rows planned on the new ones. Each result therefore records the digest of
the profiles it used in ``inputs.json`` beside it; a command whose stored result was made from other
profiles, or from unrecorded ones, starts that result afresh and says why.

The digest covers what the planners and the simulator read (profiles, latency samples, per-example
predictions), taken from the profile folder's verified ``MANIFEST.json``; a re-run of the sweep that
changes nothing keeps it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from planner.schema import SchemaError, read_json
from planner.tables import MANIFEST, atomic_write_text, manifest_entries

INPUTS = "inputs.json"
# beside runs that do not name their own parameters (servers before they described themselves, live
# replays before they recorded them): {method: parameters} they ran with
METHOD_PARAMS_FILE = "method_params.json"
# the bundle files a simulated or live result depends on (environment.json changes on every sweep run)
DIGEST_FILES = ("profiles.csv", "latency_samples.parquet", "predictions.parquet")


def profiles_digest(profile_folder: Path) -> str:
    """One sha256 over the manifest entries of :data:`DIGEST_FILES` in ``profile_folder``."""
    files = manifest_entries(profile_folder)
    missing = [name for name in DIGEST_FILES if name not in files]
    if missing:
        raise SchemaError(f"{Path(profile_folder) / MANIFEST}: does not list {missing}")
    text = "".join(f"{name}:{files[name]['sha256']}\n" for name in DIGEST_FILES)
    return hashlib.sha256(text.encode()).hexdigest()


def recorded_inputs(out_dir: Path) -> dict[str, dict[str, Any]]:
    """``out_dir/inputs.json``: result name -> {'profiles_sha256', 'profiles'} ({} when there is none)."""
    path = Path(out_dir) / INPUTS
    if not path.exists():
        return {}
    entries = read_json(path)
    if not isinstance(entries, dict) or not all(isinstance(v, dict) and "profiles_sha256" in v
                                                for v in entries.values()):
        raise SchemaError(f"{path}: expected {{result: {{'profiles_sha256': ..., 'profiles': ...}}}}")
    return entries


def stale_reason(out_dir: Path, result: str, digest: str, exists: bool) -> str | None:
    """Why the stored ``result`` in ``out_dir`` cannot be resumed on profiles ``digest`` (None: it can).

    ``exists`` says whether any of the result's files are on disk; nothing stored is never stale.
    """
    if not exists:
        return None
    entry = recorded_inputs(out_dir).get(result)
    if entry is None:
        return f"{result} in {out_dir} records no profiles it was computed from"
    if entry["profiles_sha256"] != digest:
        return (f"{result} in {out_dir} was computed from other profiles ({entry.get('profiles', '?')}, "
                f"digest {entry['profiles_sha256'][:12]}…; now {digest[:12]}…)")
    return None


def record_inputs(out_dir: Path, result: str, digest: str, profile_folder: Path) -> None:
    """Record (atomically) that ``result`` in ``out_dir`` is computed from the profiles ``digest``."""
    entries = recorded_inputs(out_dir)
    entries[result] = {"profiles_sha256": digest, "profiles": f"{Path(profile_folder).parent.parent.name}/"
                                                              f"profiles/{Path(profile_folder).name}"}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_dir) / INPUTS, json.dumps(dict(sorted(entries.items())), indent=2) + "\n")


def recorded_params(folder: Path) -> dict[str, dict]:
    """``{method: parameters}`` recorded for runs that do not name their own (servers before they
    described themselves, live fault replays before they recorded them): the
    :data:`METHOD_PARAMS_FILE` beside them, else the one in the folder above (a live stage records one
    for all its runs); empty when neither exists."""
    for candidate in (Path(folder) / METHOD_PARAMS_FILE, Path(folder).parent / METHOD_PARAMS_FILE):
        if candidate.exists():
            return {k: v for k, v in json.loads(candidate.read_text()).items() if isinstance(v, dict)}
    return {}
