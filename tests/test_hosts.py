"""Where a live result was measured, in the book's words (planner.analysis.hosts): the live chapters
name the host of each live measurement against the host that timed the profiles it plans from."""

from __future__ import annotations

import json

import pytest

from planner.analysis import hosts
from planner.evaluation import live_server

PROFILE_FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
PROFILE_ENV = {"cpu_model": "AMD EPYC", "cpu_flags": PROFILE_FLAGS, "machine_tag": "amd-epyc-2c"}  # environment.json
OTHER = {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_flags": [*PROFILE_FLAGS, "amx_bf16"], "logical_cpus": 2}


def test_a_host_is_named_against_the_profiles_host():
    assert hosts.host_phrase({"cpu_model": "AMD EPYC", "cpu_flags": PROFILE_FLAGS}, PROFILE_ENV) == hosts.PROFILE_HOST
    other = hosts.host_phrase(OTHER, PROFILE_ENV)
    assert other.startswith("a host (Intel(R) Xeon(R) Processor) with CPU features avx2, avx512f, avx512_vnni, "
                            "avx512_bf16, amx_bf16, not the host that timed the profiles (avx2, avx512f")
    assert hosts.is_profile_host(OTHER, PROFILE_ENV) is False
    assert "not recorded" in hosts.host_phrase(None, PROFILE_ENV)
    assert hosts.is_profile_host(None, PROFILE_ENV) is None
    assert hosts.host_phrase(OTHER, None) == "a host (Intel(R) Xeon(R) Processor); the profiles' host was not recorded"


def test_a_host_record_says_where_and_when_and_a_broken_one_names_its_file(tmp_path):
    path = tmp_path / "simulator_validation_host.json"
    assert hosts.read_record(path) is None  # written before the stage recorded its host
    assert "not recorded" in hosts.measured_text(None, PROFILE_ENV)
    path.write_text(json.dumps({"host": OTHER, "profile_host_differences": ["cpu_flags: ..."],
                                "started_at": "2026-12-07T13:50:56+00:00"}))
    text = hosts.measured_text(hosts.read_record(path), PROFILE_ENV)
    assert text.startswith("a host (Intel(R) Xeon(R) Processor)") and text.endswith(", from 2026-12-07 13:50 UTC")
    assert hosts.measured_elsewhere(hosts.read_record(path), PROFILE_ENV)
    assert not hosts.measured_elsewhere(None, PROFILE_ENV)  # not recorded: not claimed to be elsewhere
    path.write_text('{"host": ')
    with pytest.raises(ValueError, match="simulator_validation_host.json: not a host record"):
        hosts.read_record(path)
    path.write_text(json.dumps({"started_at": "2026-12-07T13:50:56+00:00"}))
    with pytest.raises(ValueError, match="no 'host' object"):
        hosts.read_record(path)


def test_the_server_runs_hosts_come_from_each_tasks_latest_startup(tmp_path):
    live_server.paths(tmp_path, "cifar10")["record"].write_text(json.dumps(
        {"spec": {}, "startups": [{"host": {"cpu_model": "AMD EPYC", "cpu_flags": PROFILE_FLAGS}}, {"host": OTHER}]}))
    live_server.paths(tmp_path, "sst2")["record"].write_text(json.dumps({"spec": {}, "startups": [{"startup_scale": 1.0}]}))
    assert live_server.recorded_hosts(tmp_path, ["cifar10", "sst2", "imagenet"]) == {"cifar10": OTHER, "sst2": None}
