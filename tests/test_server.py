"""The HTTP server on a loopback port with tiny fake models: the API, bad input, failures, load.

Fake configurations sleep a fraction of a millisecond and answer fixed labels; profiles come from
the synthetic bundle. Times are never asserted as absolute values: counts, outcomes and codes only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from bundles import synthetic_bundle
from planner import workloads
from planner.cli import main as cli_main
from planner.plan import policies
from planner.serving import clients
from planner.serving.clients import ClientLimits, StreamClient, replay_http
from planner.serving.outcomes import run_metrics
from planner.serving.replay import CascadeStages, LiveConfig
from planner.serving.api import FieldError, RequestError, parse_predict
from planner.serving.server import (Batcher, PortTakenError, ServerError, ServerSettings, ServerThread, bind_socket,
                                    create_app, server_policy)

N_EX = 40
TEXTS = [f"sentence number {i}" for i in range(N_EX)]
LABELS = np.arange(N_EX) % 2
IMAGES = np.random.default_rng(0).integers(0, 256, (N_EX, 32, 32, 3), dtype=np.uint8)


def fake_config(config_id: str, batch_size: int, sleep_ms: float = 0.3, fail: threading.Event | None = None,
                calls: list | None = None) -> LiveConfig:
    """Sleeps, then answers label = (index of the text's number) % 2 (images: pixel[0,0,0] % 2)."""

    def run(inputs):
        if fail is not None and fail.is_set():
            raise RuntimeError(f"{config_id} is broken")
        time.sleep(sleep_ms / 1000.0)
        if calls is not None:
            calls.append(len(inputs))
        if isinstance(inputs, np.ndarray):
            labels = inputs[:, 0, 0, 0].astype(int) % 2
        else:
            labels = np.array([int(t.split()[-1]) % 2 if t.split()[-1].isdigit() else 0 for t in inputs])
        return np.eye(2, dtype=np.float32)[labels] * 0.9 + 0.05, None

    return LiveConfig(config_id, batch_size, run)


@pytest.fixture(scope="module")
def bundle():
    return synthetic_bundle(n_configs=8, task="sst2", n_examples=N_EX)


def make_app(bundle, method="anytime", configs=None, settings=ServerSettings(), task="sst2", inputs=TEXTS,
             policy=None):
    if policy is None:
        policy, ids = server_policy(method, bundle, task)
    else:
        ids = bundle.profiles["config_id"].tolist()
    configs = configs or {c: fake_config(c, int(bundle.profiles.set_index("config_id").at[c, "batch_size"]))
                          for c in ids}
    batcher = Batcher(policy, configs, task, bundle.profiles, settings)
    return create_app(batcher, inputs), batcher


@pytest.fixture(scope="module")
def server(bundle):
    app, batcher = make_app(bundle)
    with ServerThread(app) as running:
        yield running, batcher


def post(url, body, raw=False):
    return httpx.post(url + "/v1/predict", content=body if raw else json.dumps(body),
                      headers={"Content-Type": "application/json"}, timeout=10)


# ---------------------------------------------------------------- the API

def test_predict_by_example_id_and_by_raw_text(server):
    running, _ = server
    by_id = post(running.url, {"example_id": 3, "deadline_ms": 500})
    assert by_id.status_code == 200, by_id.text
    answer = by_id.json()
    assert {"label", "confidence", "config_id", "outcome", "reason", "queue_ms", "service_ms"} <= set(answer)
    assert answer["label"] == 1 and answer["outcome"] in ("on_time", "late") and answer["reason"] == "ok"
    assert answer["config_id"].startswith("sst2/")
    raw = post(running.url, {"input": "a raw sentence 4", "deadline_ms": 500}).json()
    assert raw["label"] == 0 and raw["queue_ms"] >= 0 and raw["service_ms"] >= 0


@pytest.mark.parametrize("body, code, words", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    ({"example_id": 1}, 422, "missing field 'deadline_ms'"),
    ({"example_id": 1, "deadline_ms": 0}, 422, "positive finite"),
    ({"example_id": 1, "deadline_ms": -5}, 422, "positive finite"),
    (b'{"example_id": 1, "deadline_ms": NaN}', 422, "positive finite"),
    (b'{"example_id": 1, "deadline_ms": 1e999}', 422, "positive finite"),
    ({"example_id": 1, "deadline_ms": "50"}, 422, "number of ms"),
    ({"example_id": 1, "deadline_ms": True}, 422, "number of ms"),
    ({"input": "", "deadline_ms": 50}, 422, "empty"),
    ({"input": "   ", "deadline_ms": 50}, 422, "empty"),
    ({"input": "x" * 2001, "deadline_ms": 50}, 422, "too long"),
    ({"input": [1, 2], "deadline_ms": 50}, 422, "string"),
    ({"example_id": N_EX, "deadline_ms": 50}, 422, "unknown example_id"),
    ({"example_id": -1, "deadline_ms": 50}, 422, "unknown example_id"),
    ({"example_id": 1.5, "deadline_ms": 50}, 422, "integer"),
    ({"example_id": 1, "deadline_ms": 50, "priority": 1}, 422, "unknown field(s) ['priority']"),
    ({"example_id": 1, "input": "hi", "deadline_ms": 50}, 422, "exactly one"),
    ({"deadline_ms": 50}, 422, "exactly one"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(server, body, code, words):
    running, _ = server
    response = post(running.url, body, raw=isinstance(body, bytes))
    assert response.status_code == code, response.text
    assert words in response.json()["error"]


@pytest.mark.parametrize("value, words", [
    (np.zeros((32, 32), dtype=int).tolist(), "wrong image shape"),
    (np.zeros((32, 32, 4), dtype=int).tolist(), "wrong image shape"),
    ([[[0, 0, 0]] * 32] * 31 + [[[0, 0]] * 32], "ragged"),
    (np.full((32, 32, 3), 0.5).tolist(), "wrong image dtype float64"),
    (np.full((32, 32, 3), 300).tolist(), "out of the uint8 range"),
    (base64.b64encode(b"\x00" * 100).decode(), "decodes to 100 bytes"),
    ("not base64!!", "not valid base64"),
    ({"pixels": 1}, "32x32x3 uint8 image"),
])
def test_image_checks_name_shape_and_dtype(value, words):
    body = json.dumps({"input": value, "deadline_ms": 50}).encode()
    with pytest.raises(FieldError, match=None) as info:
        parse_predict(body, "image", None)
    assert words in str(info.value)


def test_images_by_nested_list_and_base64_are_served():
    bundle = synthetic_bundle(n_configs=4, task="cifar10", n_examples=N_EX)
    app, _ = make_app(bundle, method="seed_p95", task="cifar10", inputs=IMAGES)
    with ServerThread(app) as running:
        image = IMAGES[5]
        nested = post(running.url, {"input": image.tolist(), "deadline_ms": 1000}).json()
        b64 = post(running.url, {"input": base64.b64encode(image.tobytes()).decode(), "deadline_ms": 1000}).json()
        by_id = post(running.url, {"example_id": 5, "deadline_ms": 1000}).json()
    assert nested["label"] == b64["label"] == by_id["label"] == int(image[0, 0, 0]) % 2


def test_healthz_and_metrics_counters_move(server):
    running, _ = server
    health = httpx.get(running.url + "/healthz").json()
    assert health["status"] == "ok" and health["task"] == "sst2" and health["policy"] == "anytime"

    def counter(text, name):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = httpx.get(running.url + "/metrics").text
    for i in range(3):
        assert post(running.url, {"example_id": i, "deadline_ms": 1000}).status_code == 200
    assert post(running.url, {"example_id": 1}).status_code == 422
    after = httpx.get(running.url + "/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert counter(text, "planner_requests_total") == counter(before, "planner_requests_total") + 3
    assert counter(text, "planner_config_requests_total") == counter(before, "planner_config_requests_total") + 3
    assert counter(text, "planner_request_latency_ms_count") == counter(before, "planner_request_latency_ms_count") + 3
    assert counter(text, 'planner_rejected_total{code="422"}') == counter(before, 'planner_rejected_total{code="422"}') + 1
    buckets = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("planner_request_latency_ms_bucket")]
    assert buckets == sorted(buckets)  # cumulative
    assert "# TYPE planner_request_latency_ms histogram" in text


def test_a_burst_of_200_concurrent_requests_each_get_exactly_one_answer(server):
    running, batcher = server
    before = sum(batcher.metrics.outcomes.values())

    async def burst():
        async with StreamClient(running.url, max_connections=200) as client:
            return await asyncio.gather(*(client.post("/v1/predict", {"example_id": i % N_EX, "deadline_ms": 20.0 + i})
                                          for i in range(200)))

    answers = asyncio.run(burst())
    assert [code for code, _ in answers] == [200] * 200
    ids = [a["request_id"] for _, a in answers]
    assert len(set(ids)) == 200
    outcomes = {a["outcome"] for _, a in answers}
    assert outcomes <= {"on_time", "late", "shed", "degraded", "dropped"}
    assert all((a["label"] is None) == (a["outcome"] in ("shed", "dropped")) for _, a in answers)
    assert sum(batcher.metrics.outcomes.values()) == before + 200
    assert batcher.state()["queue_len"] == 0


def test_two_batchers_edf_and_cut_off_arrival_lists_still_answer_each_request_once(bundle, monkeypatch):
    """The arrival lists are cut back while requests wait (a tiny threshold here): EDF order, two
    batcher threads, and still one answer per request, none lost. Two waves: the second's arrivals cut
    off the first's (answered, older than the rate window) while the second's own wait. Why not one
    burst: in EDF order the first request (the latest deadline) waits until the end, so one burst is cut
    back only when the client is slower than the server, which a busy machine can reverse."""
    from planner.serving import server as server_module

    monkeypatch.setattr(server_module, "COMPACT_AT", 16)
    ids = bundle.profiles["config_id"].tolist()
    configs = {c: fake_config(c, 2, sleep_ms=2.0) for c in ids}
    app, batcher = make_app(bundle, configs=configs, policy=policies.fixed(ids[0]),
                            settings=ServerSettings(servers=2, queue="edf", rate_window_s=0.01))
    with ServerThread(app) as running:
        async def wave(client, start: int, n: int):
            return await asyncio.gather(*(client.post("/v1/predict", {"example_id": i % N_EX,
                                                                       "deadline_ms": 1000.0 - i})
                                          for i in range(start, start + n)))

        async def burst():
            async with StreamClient(running.url, max_connections=100) as client:
                first = await wave(client, 0, 40)
                await asyncio.sleep(0.05)  # past the rate window (0.01 s): nothing needs the first wave's positions
                return first + await wave(client, 40, 80)

        answers = asyncio.run(burst())
    assert [code for code, _ in answers] == [200] * 120
    assert len({a["request_id"] for _, a in answers}) == 120
    assert all(a["label"] == (i % N_EX) % 2 for i, (_, a) in enumerate(answers))
    assert len(batcher._pending) < 120  # cut back at least once


# ---------------------------------------------------------------- failures

def test_a_model_that_raises_mid_batch_is_answered_by_the_fallback(bundle):
    broken = bundle.profiles.sort_values("accuracy")["config_id"].iloc[-1]
    fail = threading.Event()
    fail.set()
    configs = {c: fake_config(c, int(b), fail=fail if c == broken else None)
               for c, b in zip(bundle.profiles["config_id"], bundle.profiles["batch_size"])}
    always_broken = policies.fixed(broken, "always_broken")
    app, batcher = make_app(bundle, configs=configs, policy=always_broken,
                            settings=ServerSettings(failure_cooldown_s=0.05))
    with ServerThread(app) as running:
        answers = [post(running.url, {"example_id": i, "deadline_ms": 1000}).json() for i in range(5)]
        time.sleep(0.1)  # past the cool-down: the policy's pick is tried (and fails) again
        answers.append(post(running.url, {"example_id": 5, "deadline_ms": 1000}).json())
        fail.clear()
        time.sleep(0.1)
        healed = post(running.url, {"example_id": 6, "deadline_ms": 1000}).json()
        assert httpx.get(running.url + "/healthz").status_code == 200
        metrics = httpx.get(running.url + "/metrics").text
    for a in answers:
        assert a["config_id"] != broken and a["label"] is not None
        assert a["reason"] in ("fallback", "fallback_no_feasible")
    assert healed["config_id"] == broken and healed["reason"] == "ok"
    errors = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith(f'planner_model_errors_total{{config_id="{broken}"}}')]
    assert errors and errors[0] >= 2  # the first call and the one after the cool-down (more if requests were slow)


def test_a_policy_that_raises_is_answered_by_the_fallback(bundle):
    def bad(ctx):
        raise ValueError("policy bug")

    app, _ = make_app(bundle, policy=policies.FunctionPolicy(bad, "bad"))
    with ServerThread(app) as running:
        answer = post(running.url, {"example_id": 2, "deadline_ms": 1000}).json()
    assert answer["reason"] == "policy_error" and answer["label"] == 0


def test_no_configuration_left_still_answers(bundle):
    fail = threading.Event()
    fail.set()
    configs = {c: fake_config(c, int(b), fail=fail)
               for c, b in zip(bundle.profiles["config_id"], bundle.profiles["batch_size"])}
    app, _ = make_app(bundle, configs=configs, policy=policies.fixed(bundle.profiles["config_id"].iloc[0]))
    with ServerThread(app) as running:
        answer = post(running.url, {"example_id": 2, "deadline_ms": 1000}).json()
        assert httpx.get(running.url + "/healthz").status_code == 200
    assert answer["outcome"] == "dropped" and answer["reason"] == "no_configuration_left" and answer["label"] is None


def test_early_answers_from_a_cascade_first_stage_are_degraded():
    """A cascade whose second stage is far slower than any deadline: escalated requests get the
    first stage's answer on time (degraded), sure ones a normal answer."""
    bundle = synthetic_bundle(n_configs=4, task="sst2", n_examples=N_EX)
    cid = bundle.profiles["config_id"].iloc[0]

    def first(inputs):
        ids = np.array([int(t.split()[-1]) for t in inputs])
        confident = ids % 4 != 0  # every fourth example escalates
        return np.where(confident[:, None], [[0.95, 0.05]], [[0.55, 0.45]]).astype(np.float32)

    def second(inputs):
        time.sleep(0.3)
        return np.tile([[0.1, 0.9]], (len(inputs), 1)).astype(np.float32)

    stages = CascadeStages(first, second, lambda probs: probs.max(axis=1) < 0.9)
    cascade = LiveConfig(cid, 1, lambda x: (first(x), None), stages)

    class Early(policies.OnlinePolicy):
        name, needs = "early", policies.PolicyNeeds(early_answers=True)

        def __call__(self, ctx):
            return cid

    batcher = Batcher(Early(), {cid: cascade}, "sst2", bundle.profiles)
    batcher._stage2[cid].ms = 300.0  # what the server would have learned after one slow second stage
    with ServerThread(create_app(batcher, TEXTS)) as running:
        sure = post(running.url, {"example_id": 1, "deadline_ms": 100}).json()
        doomed = post(running.url, {"example_id": 4, "deadline_ms": 100}).json()
        patient = post(running.url, {"example_id": 8, "deadline_ms": 5000}).json()
    assert sure["outcome"] == "on_time" and sure["label"] == 0
    assert doomed["outcome"] == "degraded" and doomed["reason"] == "early_answer" and doomed["label"] == 0
    assert patient["label"] == 1  # waited for the second stage


def test_graceful_shutdown_answers_every_request_in_flight(bundle):
    ids = bundle.profiles["config_id"].tolist()
    configs = {c: fake_config(c, 1, sleep_ms=20.0) for c in ids}
    app, batcher = make_app(bundle, configs=configs, policy=policies.fixed(ids[0]))
    running = ServerThread(app).start()

    async def load():
        async with StreamClient(running.url, max_connections=30) as client:
            calls = [asyncio.create_task(client.post("/v1/predict", {"example_id": i, "deadline_ms": 5000}))
                     for i in range(15)]
            for _ in range(400):  # stop only once every request is in (a fixed sleep raced on a busy machine)
                state = batcher.state()
                if state["queue_len"] + state["busy_servers"] + sum(batcher.metrics.outcomes.values()) >= 15:
                    break
                await asyncio.sleep(0.025)
            stopper = threading.Thread(target=running.stop)
            stopper.start()
            out = await asyncio.gather(*calls, return_exceptions=True)
            stopper.join()
            return out

    answers = asyncio.run(load())
    assert all(not isinstance(a, BaseException) for a in answers), answers
    assert [code for code, _ in answers] == [200] * 15
    assert all(a["label"] is not None for _, a in answers)
    assert batcher.state()["closed"]
    with pytest.raises(ServerError, match="shutting down"):
        batcher.submit("late text", 100.0, lambda answer: None)


# ---------------------------------------------------------------- starting

def test_a_taken_port_is_refused_clearly():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortTakenError, match=f"port {port} on 127.0.0.1 is already in use"):
            bind_socket("127.0.0.1", port)


def test_missing_content_length_and_unknown_routes_are_refused(server):
    running, _ = server
    host, port = running.host, running.port
    with socket.create_connection((host, port)) as conn:
        conn.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        reply = conn.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 411") and "Content-Length" in reply
    assert httpx.get(running.url + "/nope").status_code == 404
    assert httpx.post(running.url + "/v2/predict", json={}).status_code == 404


def test_serve_command_refuses_a_taken_port_before_loading_anything(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = cli_main(["serve", "--preset", "quick", "--task", "sst2", "--port", str(port)])
    assert code == 2
    assert "already in use" in capsys.readouterr().err


def test_hindsight_and_bound_methods_are_refused(bundle):
    for method in ("best_fixed_hindsight", "clairvoyant"):
        with pytest.raises(ServerError, match="whole trace"):
            server_policy(method, bundle, "sst2")
    with pytest.raises(ServerError, match="unknown method"):
        server_policy("nope", bundle, "sst2")


def test_static_methods_load_only_their_decision_table(bundle):
    policy, configs = server_policy("seed_p95", bundle, "sst2")
    assert set(configs) <= set(bundle.profiles["config_id"]) and 1 <= len(configs) <= len(bundle.profiles)
    assert policy.config_for(1e-6) in configs and policy.config_for(1e6) in configs


# ---------------------------------------------------------------- load

def test_trace_replay_client_against_the_server(server):
    running, _ = server
    trace = workloads.poisson(200.0, 60, 50.0, N_EX, seed=3)
    rows = replay_http(running.url, trace, labels=LABELS, limits=ClientLimits(max_requests=1000, max_wall_s=20.0))
    assert sorted(rows["request_id"]) == sorted(trace["request_id"])
    assert set(rows["status"]) <= {"served", "late", "shed", "degraded", "dropped"}
    assert (rows["http_status"] == 200).all()
    answered = rows["status"].isin(["served", "late", "degraded"])
    assert (rows.loc[answered, "latency_ms"] >= rows.loc[answered, "server_latency_ms"]).all()
    metrics = run_metrics(rows)
    assert 0 <= metrics["effective_accuracy"] <= metrics["hit_rate"] <= 1
    assert rows.loc[answered, "correct"].mean() > 0.9  # the fakes answer every label right
    assert (rows["budget_ms"] == rows["deadline_ms"]).all()  # no path_quantile: every deadline as is


def test_the_replay_client_sends_each_deadline_less_the_path_it_measured(bundle):
    """The server plans from the moment it reads a request; the client takes what the path in between
    has been costing off each deadline it sends, and still judges the answer against the whole one."""
    app, batcher = make_app(bundle)
    trace = workloads.poisson(200.0, 60, 50.0, N_EX, seed=3)
    with ServerThread(app) as running:
        rows = replay_http(running.url, trace, labels=LABELS, limits=ClientLimits(max_requests=1000, max_wall_s=20.0),
                           path_quantile=0.5)
    in_order = rows.sort_values("arrival_s")
    assert in_order["budget_ms"].iloc[0] == 50.0  # before any answer: the whole deadline
    assert (rows["budget_ms"] <= 50.0).all() and (rows["budget_ms"] < 50.0).any()
    assert (rows["deadline_ms"] == 50.0).all()  # the client's own judgement is unchanged
    received = sorted(batcher._arrays.rel_deadline_ms)  # what the server planned with
    assert received == pytest.approx(sorted(rows["budget_ms"]))
    with pytest.raises(clients.ClientError, match="path_quantile"):
        replay_http("http://127.0.0.1:9", trace, path_quantile=1.0)


def test_the_replay_reports_its_own_time_zero_after_a_slow_client_set_up(server, monkeypatch):
    # a fault armed on the trace's clock must take the client's time 0, which is set only once the
    # client's connections are open: a slow set-up must not shift the fault against the requests
    running, _ = server
    real = clients.http_client

    class SlowOpen:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        async def __aenter__(self):
            await asyncio.sleep(0.3)
            return await self.inner.__aenter__()

        async def __aexit__(self, *exc):
            return await self.inner.__aexit__(*exc)

    monkeypatch.setattr(clients, "http_client", SlowOpen)
    origins: list[float] = []
    before = time.monotonic()
    rows = replay_http(running.url, workloads.poisson(100.0, 10, 50.0, N_EX, seed=4), labels=LABELS,
                       limits=ClientLimits(max_requests=100, max_wall_s=10.0), lead_s=0.1, on_origin=origins.append)
    after = time.monotonic()
    assert len(origins) == 1 and before + 0.3 + 0.1 <= origins[0] <= after
    assert len(rows) == 10


def test_trace_replay_client_stops_at_its_wall_limit(bundle):
    ids = bundle.profiles["config_id"].tolist()
    configs = {c: fake_config(c, 1, sleep_ms=200.0) for c in ids}
    app, _ = make_app(bundle, configs=configs, policy=policies.fixed(ids[0]), settings=ServerSettings(drain_s=0.5))
    trace = workloads.poisson(50.0, 20, 10_000.0, N_EX, seed=1)
    with ServerThread(app, graceful_s=1.0) as running:
        rows = replay_http(running.url, trace, limits=ClientLimits(max_requests=1000, max_wall_s=1.0))
    assert len(rows) == len(trace[trace["arrival_s"] < 0.8])
    assert (rows["reason"] == "client_wall_limit").sum() == rows.attrs["n_abandoned"] > 0


def test_loadgen_server_scenario_smoke(server, tmp_path):
    lg = pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    del lg
    from planner.evaluation.loadgen import LoadGenSettings, run_loadgen

    running, _ = server
    settings = LoadGenSettings(target_qps=200.0, deadline_ms=200.0, min_queries=100, max_queries=200,
                               min_duration_s=0.5, max_duration_s=5.0, path_quantile=0.5)
    result = run_loadgen(running.url, settings, np.arange(N_EX), tmp_path / "sst2_fixed", labels=LABELS)
    assert (tmp_path / "sst2_fixed" / "mlperf_log_summary.txt").exists()
    assert (tmp_path / "sst2_fixed" / "mlperf_log_detail.txt").exists()
    assert "Result is" in result.summary and result.summary["Scenario"] == "Server"
    assert 100 <= len(result.requests) <= 200
    assert (result.requests["http_status"] == 200).all()
    assert result.requests["correct"].mean() > 0.9
    from planner.evaluation.loadgen import read_runs
    kept = read_runs(tmp_path).iloc[0]  # what the book reads back: LoadGen's verdict beside both clocks
    assert (kept["task"], kept["method"], kept["n_queries"]) == ("sst2", "fixed", len(result.requests))
    assert kept["result"] == result.summary["Result is"] and kept["target_latency_ms"] == pytest.approx(200.0)
    assert kept["lat_p50_ms"] <= kept["lat_p99_ms"] and kept["path_added_p50_ms"] > 0
    # each query goes out with the target less the path measured on earlier answers: the first with all of it
    sent = result.requests.sort_values("sent_s")
    assert sent["budget_ms"].iloc[0] == 200.0 and (sent["budget_ms"] <= 200.0).all()
    assert (sent["budget_ms"] < 200.0).any() and kept["path_quantile"] == 0.5
    assert (sent["server_latency_ms"] < sent["latency_ms"]).all()


def test_loadgen_settings_refuse_a_bad_path_quantile_and_by_default_send_the_target_as_is(server, tmp_path):
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.evaluation.loadgen import LoadGenError, LoadGenSettings, read_runs, run_loadgen

    with pytest.raises(LoadGenError, match="path_quantile"):
        LoadGenSettings(target_qps=100.0, deadline_ms=50.0, path_quantile=1.5)
    running, _ = server
    settings = LoadGenSettings(target_qps=200.0, deadline_ms=200.0, min_queries=100, max_queries=100,
                               min_duration_s=0.2, max_duration_s=5.0)
    result = run_loadgen(running.url, settings, np.arange(N_EX), tmp_path / "sst2_fixed", labels=LABELS)
    assert (result.requests["budget_ms"] == 200.0).all()
    assert read_runs(tmp_path).iloc[0]["path_quantile"] is None


LOADGEN_SUMMARY = """================================================
MLPerf Results Summary
================================================
Scenario : Server
Completed samples per second    : 99.50
Result is : INVALID
  Performance constraints satisfied : NO
  Early stopping satisfied: NO
Recommendations:
 * Reduce target QPS to improve latency.
99.00 percentile latency (ns)   : 12500000
50.00 percentile latency (ns)   : 2000000
target_qps : 100
target_latency (ns): 5000000
"""


def test_loadgen_read_runs_puts_the_verdict_beside_the_client_and_server_clocks(tmp_path):
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.evaluation.loadgen import LoadGenError, read_runs

    assert read_runs(tmp_path).empty
    run = tmp_path / "cifar10_anytime"
    run.mkdir()
    (run / "mlperf_log_summary.txt").write_text(LOADGEN_SUMMARY)
    with pytest.raises(LoadGenError, match="requests.csv"):
        read_runs(tmp_path)
    pd.DataFrame({  # on time at the server but not at the client; late; shed (answered at once, no label)
        "latency_ms": [6.0, 9.0, 1.0, 3.0], "deadline_ms": 5.0, "label": [1, 1, None, 0],
        "correct": [True, True, False, True],
        "status": ["late", "late", "shed", "served"], "outcome": ["on_time", "late", "shed", "on_time"],
        "queue_ms": [1.0, 2.0, 0.0, 0.5], "service_ms": [3.0, 6.0, 0.0, 2.0]}).to_csv(run / "requests.csv", index=False)
    row = read_runs(tmp_path).iloc[0]
    assert (row["task"], row["method"], row["result"]) == ("cifar10", "anytime", "INVALID")
    assert not row["latency_constraint_met"] and not row["early_stopping_met"]
    assert (row["target_latency_ms"], row["lat_p99_ms"], row["completed_qps"]) == (5.0, 12.5, 99.5)
    assert (row["server_on_time"], row["client_within_deadline"], row["shed"]) == (0.5, 0.5, 0.25)
    assert row["path_added_p50_ms"] == pytest.approx(1.0)  # 2, 1, 0.5 ms over the server's queue + service
    assert row["effective_accuracy"] == 0.25  # correct and within the target at the client: the last one only
    assert row["main_config"] is None and row["path_quantile"] is None  # no configuration named; sent as is
    pd.read_csv(run / "requests.csv").assign(config_id=["a", "b", None, "a"]).to_csv(run / "requests.csv", index=False)
    row = read_runs(tmp_path).iloc[0]
    assert (row["main_config"], row["main_config_share"]) == ("a", pytest.approx(2 / 3))


def test_loadgen_sweep_summary_reads_the_highest_valid_rate_and_what_it_delivers(tmp_path):
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.evaluation.loadgen import SERVER_FILE, read_runs, sweep_summary

    def point(policy: str, qps: int, verdict: str, correct: list[bool]) -> None:
        run = tmp_path / f"sst2_{policy}_{qps}qps"  # the policy's own name comes from the server's file
        run.mkdir()
        (run / "mlperf_log_summary.txt").write_text(
            LOADGEN_SUMMARY.replace("INVALID", verdict).replace("target_qps : 100", f"target_qps : {qps}"))
        (run / SERVER_FILE).write_text(json.dumps({"task": "sst2", "policy": policy}))
        pd.DataFrame({"latency_ms": 1.0, "deadline_ms": 5.0, "label": [1] * len(correct), "correct": correct,
                      "status": "served", "outcome": "on_time", "queue_ms": 0.1, "service_ms": 0.5}
                     ).to_csv(run / "requests.csv", index=False)

    point("seed_p95", 50, "VALID", [True, True])
    point("seed_p95", 100, "VALID", [True, False])
    point("seed_p95", 200, "INVALID", [False, False])
    point("anytime", 50, "INVALID", [True, True])
    runs = read_runs(tmp_path)
    assert set(runs["method"]) == {"seed_p95", "anytime"}
    card = sweep_summary(runs).set_index("method")
    assert card.loc["seed_p95", "max_valid_qps"] == 100 and card.loc["seed_p95", "effective_accuracy_at_max_valid"] == 0.5
    assert (card.loc["seed_p95", "top_qps"], card.loc["seed_p95", "top_result"]) == (200, "INVALID")
    assert np.isnan(card.loc["anytime", "max_valid_qps"]) and card.loc["anytime", "n_rates"] == 1


def test_loadgen_runs_name_the_parameters_they_ran_with_and_a_changed_preset_is_said(tmp_path):
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.evaluation.loadgen import METHOD_PARAMS_FILE, SERVER_FILE, params_note, read_runs

    for policy, server_says in (("anytime", None), ("seed_p95", {"percentile": 95})):
        run = tmp_path / f"sst2_{policy}_50qps"
        run.mkdir()
        (run / "mlperf_log_summary.txt").write_text(LOADGEN_SUMMARY)
        about = {"task": "sst2", "policy": policy, **({"params": server_says} if server_says else {})}
        (run / SERVER_FILE).write_text(json.dumps(about))
        pd.DataFrame({"latency_ms": 1.0, "deadline_ms": 5.0, "label": [1], "correct": [True], "status": "served",
                      "outcome": "on_time", "queue_ms": 0.1, "service_ms": 0.5}).to_csv(run / "requests.csv", index=False)
    # the anytime server predates self-described parameters: the folder's record says what it ran with
    (tmp_path / METHOD_PARAMS_FILE).write_text(json.dumps({"anytime": {"late_step": 0.01, "late_target": 0.009}}))
    runs = read_runs(tmp_path).set_index("method")
    assert json.loads(runs.loc["anytime", "method_params"]) == {"late_step": 0.01, "late_target": 0.009}
    assert json.loads(runs.loc["seed_p95", "method_params"]) == {"percentile": 95}  # the server's own word wins
    runs = runs.reset_index()
    note = params_note(runs, {"anytime": {"late_step": 0.03, "late_target": 0.009}, "seed_p95": {"percentile": 95}})
    assert "`anytime` ran with late_step 0.01 (the preset now: late_step 0.03)" in note and "seed_p95" not in note
    assert params_note(runs, {"anytime": {"late_step": 0.01, "late_target": 0.009}, "seed_p95": {"percentile": 95}}) == ""
    # a parameter the method gained after the runs is named as such, not as a value of None
    note = params_note(runs, {"anytime": {"late_step": 0.01, "late_target": 0.009, "arrival_spread": True},
                              "seed_p95": {"percentile": 95}})
    assert "`anytime` ran before arrival_spread existed (the preset now: arrival_spread True)" in note
    assert "None" not in note
    # one added since at the value that does what the method did before it existed is no change; another is
    recorded = {"late_step": 0.01, "late_target": 0.009}
    assert params_note(runs, {"anytime": {**recorded, "geometric_reference": False}}) == ""
    assert "geometric_reference True" in params_note(runs, {"anytime": {**recorded, "geometric_reference": True}})


def _loadgen_point(folder, policy: str, qps: int, n_correct: int, n: int, config_id: str = "c") -> None:
    """One sweep point as `planner loadgen` keeps it: LoadGen's summary, the server's self-description, the queries."""
    from planner.evaluation.loadgen import SERVER_FILE

    run = folder / f"sst2_{policy}_{qps}qps"
    run.mkdir(parents=True)
    (run / "mlperf_log_summary.txt").write_text(LOADGEN_SUMMARY.replace("target_qps : 100", f"target_qps : {qps}"))
    (run / SERVER_FILE).write_text(json.dumps({"task": "sst2", "policy": policy}))
    pd.DataFrame({"latency_ms": 1.0, "deadline_ms": 5.0, "label": [1] * n, "correct": [True] * n_correct
                  + [False] * (n - n_correct), "status": "served", "outcome": "on_time", "queue_ms": 0.1,
                  "service_ms": 0.5, "config_id": config_id}).to_csv(run / "requests.csv", index=False)


def test_loadgen_rate_comparison_tests_each_rate_and_adjusts_over_the_sweep(tmp_path):
    """A sweep runs each rate once: the book says a gap is real only where Fisher's test, Holm-adjusted
    over the sweep's rates, says so; rates only one method ran are left out."""
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.analysis.sweep import comparison_text, rate_comparison
    from planner.evaluation.loadgen import read_runs

    def point(policy: str, qps: int, n_correct: int, n: int) -> None:
        _loadgen_point(tmp_path, policy, qps, n_correct, n)

    point("anytime", 50, 180, 200)    # 0.90 against 0.89: noise at 200 queries
    point("seed_p95", 50, 178, 200)
    point("anytime", 100, 180, 200)   # 0.90 against 0.40: real
    point("seed_p95", 100, 80, 200)
    point("anytime", 200, 10, 200)    # the baseline never ran this rate
    table = rate_comparison(read_runs(tmp_path), "anytime", "seed_p95").set_index("target_qps")
    assert list(table.index) == [50, 100]
    assert table.loc[50, "difference"] == pytest.approx(0.01) and not table.loc[50, "significant"]
    assert table.loc[100, "difference"] == pytest.approx(0.5) and table.loc[100, "significant"]
    assert (table["p_holm"] >= table["p"]).all()
    assert rate_comparison(read_runs(tmp_path), "anytime", "infaas").empty
    # the book's sentence: the significant lead counted, the noise not
    [sentence] = comparison_text(rate_comparison(read_runs(tmp_path), "anytime", "seed_p95"), "anytime", "seed_p95")
    assert "at 2 of the 2 rates tried" in sentence and "on 200 queries per method" in sentence
    assert "ahead at 1 rate(s) and behind at 0." in sentence


def test_budget_comparison_sets_each_methods_budgeted_runs_against_its_runs_sent_as_is(tmp_path):
    """The budget's effect is read method by method, rate by rate, one Holm family over all of them."""
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.analysis.sweep import budget_comparison, budget_text
    from planner.evaluation.loadgen import read_runs

    _loadgen_point(tmp_path / "budget", "anytime", 100, 180, 200)   # 0.90 against 0.40: the budget helped
    _loadgen_point(tmp_path / "as_is", "anytime", 100, 80, 200)
    _loadgen_point(tmp_path / "budget", "seed_p95", 100, 150, 200)  # 0.75 against 0.76: noise
    _loadgen_point(tmp_path / "as_is", "seed_p95", 100, 152, 200)
    _loadgen_point(tmp_path / "budget", "infaas", 100, 150, 200)    # never run without the budget: left out
    table = budget_comparison(read_runs(tmp_path / "budget"), read_runs(tmp_path / "as_is")).set_index("method")
    assert sorted(table.index) == ["anytime", "seed_p95"]
    assert table.loc["anytime", "difference"] == pytest.approx(0.5) and table.loc["anytime", "significant"]
    assert table.loc["seed_p95", "difference"] == pytest.approx(-0.01) and not table.loc["seed_p95", "significant"]
    assert (table["p_holm"] >= table["p"]).all()
    text = " ".join(budget_text(table.reset_index()))
    assert "`anytime` with the budget delivered more correct answers within the target at 1 of the 1 rates" in text
    assert "better at 1 rate(s) and worse at 0" in text and "better at 0 rate(s) and worse at 0" in text
    assert budget_comparison(read_runs(tmp_path / "budget"), read_runs(tmp_path / "none")).empty


def test_the_budget_section_reads_each_pair_of_runs_and_skips_a_pair_without_budgeted_runs(tmp_path):
    """The validation chapter's account of the budget: per pair of sweeps (as is, with the budget) its
    paragraphs and one table; a pair whose budgeted folder holds runs sent as is says nothing."""
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.analysis.sweep import budget_section
    from planner.evaluation.loadgen import read_runs

    for folder, policy, n_correct in (("as_is", "anytime", 80), ("as_is", "seed_p95", 152),
                                      ("budget", "anytime", 180), ("budget", "seed_p95", 150),
                                      ("tight", "anytime", 100), ("tight_budget", "anytime", 120)):
        _loadgen_point(tmp_path / folder, policy, 100, n_correct, 200)
    for run in (tmp_path / "budget").iterdir():   # `planner loadgen --path-quantile 0.5` records its setting
        (run / "settings.json").write_text(json.dumps({"path_quantile": 0.5, "latency_percentile": 0.99}))
    parts, table = budget_section({"relaxed": (read_runs(tmp_path / "as_is"), read_runs(tmp_path / "budget")),
                                   "tight": (read_runs(tmp_path / "tight"), read_runs(tmp_path / "tight_budget"))})
    assert list(table["targets"].unique()) == ["relaxed"]
    assert parts[0].startswith("**At relaxed latency targets, less the path's median** (5 ms)")
    assert "With the budget, LoadGen's verdicts and the two methods compare so:" in parts
    # the figure LoadGen judges, with the budget and without
    summary = tmp_path / "budget" / "sst2_anytime_100qps" / "mlperf_log_summary.txt"
    summary.write_text(summary.read_text().replace("12500000", "4800000"))
    parts, _ = budget_section({"relaxed": (read_runs(tmp_path / "as_is"), read_runs(tmp_path / "budget"))})
    assert ("On sst2, `anytime`'s 99th-percentile latency at the client over the rates: 4.8-4.8 ms with the "
            "budget; 12.5-12.5 ms sent as is (target 5 ms); with the budget it was within the target at 1 rate(s) "
            "that LoadGen still judged INVALID by its early-stopping rule: on the queries run, those over the target "
            "were too many for it to be sure that fewer than 1% would be.") in " ".join(parts)
    assert any(p.startswith("On sst2 with a latency target of 5 ms (1 rates), LoadGen judged the `anytime` server "
                            "INVALID at every rate tried") for p in parts)  # the verdicts with the budget
    assert parts[-1].startswith("For `anytime`, the budget changed the effective accuracy by +0.500 on average at "
                                "the relaxed targets less the path's median.")
    # a second pair of the same kind, at another quantile, is told apart by its qualifier and its quantile
    for run in (tmp_path / "budget").iterdir():
        (run / "settings.json").write_text(json.dumps({"path_quantile": 0.99, "latency_percentile": 0.99}))
    tail, _ = budget_section({"relaxed, tail": (read_runs(tmp_path / "as_is"), read_runs(tmp_path / "budget"))},
                             compare=())
    assert tail[0].startswith("**At relaxed latency targets, less the path's 99th percentile** (5 ms)")
    assert not any("LoadGen's verdicts" in p for p in tail)
    assert tail[-1].startswith("For `anytime`, the budget changed the effective accuracy by +0.500 on average at "
                               "the relaxed targets less the path's 99th percentile.")
    assert budget_section({"relaxed": (read_runs(tmp_path / "as_is"), read_runs(tmp_path / "none"))})[0] == []


def test_a_sweep_run_twice_says_which_verdicts_held_and_where_a_move_is_more_than_noise(tmp_path):
    """The same sweep, run again: the book reads a single run's verdict against how far a repeat lands;
    a point run with other method parameters is not a repeat and is left out."""
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.analysis.sweep import hosts_text, repeat_comparison, repeat_text, started_text
    from planner.evaluation.loadgen import DETAIL_FILE, SERVER_FILE, read_runs

    for folder, policy, qps, n_correct in (("first", "anytime", 50, 180), ("second", "anytime", 50, 178),   # noise
                                           ("first", "anytime", 100, 180), ("second", "anytime", 100, 80),  # real
                                           ("first", "seed_p95", 50, 150), ("second", "seed_p95", 50, 150),
                                           ("second", "seed_p95", 100, 150)):  # run once: no repeat
        _loadgen_point(tmp_path / folder, policy, qps, n_correct, 200)
    summary = tmp_path / "second" / "sst2_anytime_50qps" / "mlperf_log_summary.txt"
    summary.write_text(summary.read_text().replace("INVALID", "VALID"))
    (tmp_path / "first" / "sst2_anytime_50qps" / DETAIL_FILE).write_text(
        ':::MLLOG {"key": "test_datetime", "value": "2026-12-06T00:50:09Z", "time_ms": 0.0}\n')
    first, second = read_runs(tmp_path / "first"), read_runs(tmp_path / "second")
    table = repeat_comparison(first, second).set_index(["method", "target_qps"])
    assert sorted(table.index) == [("anytime", 50), ("anytime", 100), ("seed_p95", 50)]
    assert tuple(table.loc[("anytime", 50), ["result_first", "result_second"]]) == ("INVALID", "VALID")
    assert not table.loc[("anytime", 50), "significant"]
    assert table.loc[("anytime", 100), "difference"] == pytest.approx(-0.5) and table.loc[("anytime", 100), "significant"]
    assert (table["p_holm"] >= table["p"]).all()
    text = " ".join(repeat_text(first, second))
    assert "from 2026-12-06 00:50 UTC and again at a time not recorded." in text  # no re-timing recorded: no clause
    assert started_text(first) == "from 2026-12-06 00:50 UTC"  # the chapter dates each set of runs so
    assert "the same at 2 of the 3 points; it flipped for sst2 `anytime` at 50 queries/s (INVALID then VALID)" in text
    assert "calls the move real at 1, all of them drops (sst2 `anytime` at 100 queries/s, 0.900 then 0.400)" in text
    assert "as much the moment's as the method's" in text  # a verdict flipped
    assert "`anytime` 100.0% then 100.0%, `seed_p95` 100.0% then 100.0%" in text  # both sweeps' server clocks
    assert "added a median 0.40 ms per answer the first time and 0.40 ms the second" in text  # 1.0 - (0.1 + 0.5)
    assert "No rate found one method significantly ahead in one sweep and behind in the other." in text
    assert ("ahead of `seed_p95` at 1 and behind at 0 of 1 rates the first time, ahead at 1 and behind at 1 of 2 "
            "the second") in text
    for folder, scales in (("first", (1.1, 1.3)), ("second", (0.9, 0.9))):  # what the servers' re-timing found
        for run, scale in zip(sorted((tmp_path / folder).glob("sst2_anytime_*")), scales):
            (run / SERVER_FILE).write_text(json.dumps({"task": "sst2", "policy": "anytime", "startup_scale": scale}))
    text = " ".join(repeat_text(read_runs(tmp_path / "first"), read_runs(tmp_path / "second")))
    assert "found the machine's service times at x1.10-1.30 of the profile's the first time, x0.90 the second" in text
    # the servers that describe their host are named against the profiles' host; one that did not say is counted
    assert hosts_text(read_runs(tmp_path / "first"), {"cpu_flags": ["avx2"]}) == ""  # no server said
    run = sorted((tmp_path / "first").glob("sst2_anytime_*"))[0]
    (run / SERVER_FILE).write_text(json.dumps({"task": "sst2", "policy": "anytime", "host": {
        "cpu_model": "Intel(R) Xeon(R) Processor", "cpu_flags": ["avx2", "amx_int8"]}}))
    assert hosts_text(read_runs(tmp_path / "first"), {"cpu_flags": ["avx2"]}) == (
        "The servers of these runs ran on a host (Intel(R) Xeon(R) Processor) with CPU features avx2, amx_int8, not "
        "the host that timed the profiles (avx2) (some of them did not say).")
    # the second anytime @ 100 ran with other parameters: not a repeat of the first
    server = tmp_path / "second" / "sst2_anytime_100qps" / SERVER_FILE
    server.write_text(json.dumps({"task": "sst2", "policy": "anytime", "params": {"late_step": 0.03}}))
    table = repeat_comparison(first, read_runs(tmp_path / "second"))
    assert ("anytime", 100) not in set(zip(table["method"], table["target_qps"])) and len(table) == 2
    assert repeat_comparison(first, read_runs(tmp_path / "none")).empty and repeat_text(first, pd.DataFrame()) == []


def test_where_the_budget_costs_a_method_the_book_names_what_it_served_with_and_without(tmp_path):
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.analysis.sweep import budget_comparison, budget_cost_text
    from planner.evaluation.loadgen import read_runs

    _loadgen_point(tmp_path / "budget", "seed_p95", 300, 50, 200, config_id="small-batch")   # 0.25 against 0.90
    _loadgen_point(tmp_path / "as_is", "seed_p95", 300, 180, 200, config_id="large-batch")
    _loadgen_point(tmp_path / "budget", "anytime", 300, 182, 200)                           # noise: not named
    _loadgen_point(tmp_path / "as_is", "anytime", 300, 180, 200)
    budgeted, as_sent = read_runs(tmp_path / "budget"), read_runs(tmp_path / "as_is")
    [sentence] = budget_cost_text(budget_comparison(budgeted, as_sent), budgeted, as_sent)
    assert sentence.startswith("At 300 queries/s on sst2, `seed_p95` with the budget served `small-batch` for 100%")
    assert "`large-batch` for 100% with the whole 5 ms" in sentence


def test_a_run_loadgen_ended_before_its_minimum_duration_is_named_as_invalid_whatever_its_latencies(tmp_path):
    """1,000 queries at 300 queries/s last 3.3 s: LoadGen calls such a run INVALID for its length, and the
    book must not read that verdict as a latency failure."""
    pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")
    from planner.analysis.sweep import short_runs_text
    from planner.evaluation.loadgen import read_runs

    for qps, line in ((100, "  Min duration satisfied : Yes\n"), (300, "  Min duration satisfied : NO\n"), (50, "")):
        _loadgen_point(tmp_path / "sweep", "anytime", qps, 180, 200)
        summary = tmp_path / "sweep" / f"sst2_anytime_{qps}qps" / "mlperf_log_summary.txt"
        summary.write_text(summary.read_text().replace("  Early stopping", line + "  Early stopping"))
    runs = read_runs(tmp_path / "sweep").set_index("target_qps")
    assert runs.loc[100, "min_duration_met"] is True and runs.loc[300, "min_duration_met"] is False
    assert runs.loc[50, "min_duration_met"] is None  # a summary without the line says nothing either way
    text = short_runs_text({"sweep": read_runs(tmp_path / "sweep"), "other": read_runs(tmp_path / "none")})
    assert text == ("LoadGen ended 1 run(s) before its minimum duration, and judged them INVALID whatever their "
                    "latencies: sweep/sst2_anytime_300qps.")
    assert short_runs_text({"sweep": read_runs(tmp_path / "sweep").query("target_qps != 300")}) == ""

