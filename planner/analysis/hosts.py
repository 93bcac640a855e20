"""Which host measured a live result, in the book's words.

Why: live results are measured on the machine at hand, which need not be the one that timed the profiles
they plan from (two hosts sold under one tag can differ in CPU features, and their models' speeds move
apart). Every live stage records its host (:func:`planner.profile.fingerprint.host_record`); the
chapters that report live results say where each was measured, against the profiles' host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from planner.profile.fingerprint import HARDWARE_KEYS, hardware_differences

PROFILE_HOST = "the host that timed the profiles"


def is_profile_host(host: Mapping[str, Any] | None, profile_environment: Mapping[str, Any] | None) -> bool | None:
    """Whether ``host`` (a :func:`~planner.profile.fingerprint.hardware` record) is the host that timed
    the profiles (their ``environment.json``), by the rule the live stages warn by
    (:func:`~planner.profile.fingerprint.hardware_differences`); None where either side was not recorded."""
    if host is None or not profile_environment or not any(k in profile_environment for k in HARDWARE_KEYS):
        return None
    return not hardware_differences(dict(profile_environment), dict(host))


def host_phrase(host: Mapping[str, Any] | None, profile_environment: Mapping[str, Any] | None) -> str:
    """``host`` in words: "the host that timed the profiles", or its CPU model and features against the
    profiles' host, or "a host not recorded" for a run older than host records."""
    if host is None:
        return "a host not recorded (the run predates host records)"
    same = is_profile_host(host, profile_environment)
    if same is None:
        return f"a host ({host.get('cpu_model')}); the profiles' host was not recorded"
    if same:
        return PROFILE_HOST
    profile_flags = profile_environment.get("cpu_flags") or []
    return (f"a host ({host.get('cpu_model')}) with CPU features {', '.join(host.get('cpu_flags') or []) or 'none of note'}, "
            f"not {PROFILE_HOST} ({', '.join(profile_flags) or 'none of note'})")


def read_record(path: Path) -> dict[str, Any] | None:
    """A host record written beside a live result (:func:`~planner.profile.fingerprint.host_record`'s
    layout, with ``started_at``), or None where the file is missing (a result written before its stage
    recorded the host)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not a host record ({err})") from err
    if not isinstance(record, dict) or not isinstance(record.get("host"), dict):
        raise ValueError(f"{path}: not a host record (no 'host' object)")
    return record


def _host_of(record: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if record is None else record.get("host")


def measured_elsewhere(record: Mapping[str, Any] | None, profile_environment: Mapping[str, Any] | None) -> bool:
    """Whether a host record (:func:`read_record`) says the result was measured on another host than the
    one that timed the profiles (False where either side was not recorded)."""
    return is_profile_host(_host_of(record), profile_environment) is False


def measured_text(record: Mapping[str, Any] | None, profile_environment: Mapping[str, Any] | None) -> str:
    """Where and when a live result was measured, as the end of a sentence ("measured on ..."):
    :func:`host_phrase` of ``record``'s host, and its ``started_at`` (UTC) where recorded."""
    phrase = host_phrase(_host_of(record), profile_environment)
    started = None if record is None else record.get("started_at")
    when = pd.to_datetime(started, utc=True, errors="coerce") if started else pd.NaT
    return phrase if pd.isna(when) else f"{phrase}, from {when:%Y-%m-%d %H:%M} UTC"


__all__ = ["PROFILE_HOST", "host_phrase", "is_profile_host", "measured_elsewhere", "measured_text", "read_record"]
