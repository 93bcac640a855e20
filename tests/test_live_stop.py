"""Stopping a live call at the deadline (``PolicyNeeds.cancels``), as the simulator does: an ONNX Runtime
call is stopped through its ``RunOptions.terminate`` once the latest deadline of its batch has passed, its
requests are shed (keeping their batch), the policy observes ``cancelled=True`` and the server is free
for the next batch; calls that cannot be stopped, and policies that do not ask, run to their end.

Times are never asserted as absolute values: a stopped call is only asserted to end before the call it
stopped would have, by a wide margin."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from bundles import synthetic_bundle
from planner.models.base import CallStopped, VariantSpec
from planner.models.predictors import OrtPredictor
from planner.plan.policies import OnlinePolicy, PolicyNeeds
from planner.models.cascade import Cascade
from planner.serving.replay import LiveConfig, from_cascade, from_predictor, replay
from planner.serving.server import Batcher, ServerThread, create_app
from planner.serving.stopping import CallStopper

SLOW_MS = 400.0   # a call's full length; every deadline it is stopped at is far below it
N_EX = 8
TEXTS = [f"sentence number {i}" for i in range(N_EX)]
LABELS = np.arange(N_EX) % 2


def _answer(inputs) -> np.ndarray:
    ids = np.array([int(str(t).split()[-1]) for t in inputs])
    return np.eye(2, dtype=np.float32)[ids % 2] * 0.9 + 0.05


def stoppable_sleeper(config_id: str, ms: float = SLOW_MS, calls: list | None = None,
                      stops: list | None = None) -> LiveConfig:
    """Runs ``ms`` in short steps and stops, as ONNX Runtime does between nodes, once told to (``stops``
    gets the share of the call it had run: the stop came before the end, however loaded the machine)."""

    def run_stoppable(inputs, options):
        if calls is not None:
            calls.append(len(inputs))
        start = time.perf_counter()
        end = start + ms / 1000.0
        while time.perf_counter() < end:
            if options.terminate:
                if stops is not None:
                    stops.append((time.perf_counter() - start) * 1000.0 / ms)
                raise CallStopped(f"{config_id}: stopped")
            time.sleep(0.0005)
        return _answer(inputs), None

    class _Never:
        terminate = False

    return LiveConfig(config_id, 1, lambda inputs: run_stoppable(inputs, _Never()), run_stoppable=run_stoppable)


def plain_sleeper(config_id: str, ms: float = SLOW_MS) -> LiveConfig:
    """The same call where the runtime cannot stop it (torch)."""

    def run(inputs):
        time.sleep(ms / 1000.0)
        return _answer(inputs), None

    return LiveConfig(config_id, 1, run)


class _Always(OnlinePolicy):
    """Serves everything on one configuration and asks the server to stop what answers nobody on time."""

    def __init__(self, config_id: str, cancels: bool = True):
        self.config_id, self.name, self.task = config_id, "always", "sst2"
        self.needs = PolicyNeeds(observes=True, cancels=cancels)
        self.seen: list[tuple] = []

    def __call__(self, ctx) -> str:
        return self.config_id

    def observe(self, config_id, batch_n, service_ms, n_late=0, cancelled=False) -> None:
        self.seen.append((batch_n, service_ms, n_late, cancelled))


# ---------------------------------------------------------------- the stopper

class _Options:
    terminate = False


def test_the_stopper_stops_a_running_call_at_its_time_and_leaves_a_call_that_ends_first_alone():
    stopper = CallStopper(make_options=_Options)
    done = []

    def runs_until_told(options):
        while not options.terminate:
            time.sleep(0.0005)
        raise CallStopped("told")

    started = time.perf_counter()
    assert stopper.call(runs_until_told, started + 0.02) is None
    stopped_after = time.perf_counter() - started
    assert stopper.call(lambda options: done.append(options.terminate) or "answer", time.perf_counter() + 5.0) == "answer"
    assert done == [False] and stopper.n_stopped == 1
    # many calls at once, each stopped at its own time, none left waiting
    results: list = []
    threads = [threading.Thread(target=lambda k=k: results.append(
        stopper.call(runs_until_told, time.perf_counter() + 0.005 * k))) for k in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10.0)
    assert results == [None] * 5 and stopper.n_stopped == 6
    stopper.close()
    assert stopped_after >= 0.02  # never before its time
    with pytest.raises(RuntimeError, match="closed"):
        stopper.call(runs_until_told, time.perf_counter())


def test_a_call_that_raises_otherwise_is_not_taken_for_a_stop():
    stopper = CallStopper(make_options=_Options)

    def broken(options):
        raise ValueError("model broke")

    with pytest.raises(ValueError, match="model broke"):
        stopper.call(broken, time.perf_counter() + 1.0)
    stopper.close()


def _slow_onnx_model(path, width: int = 256, depth: int = 60) -> None:
    """A chain of ``depth`` MatMul+Tanh nodes on (batch, width): long enough to stop part-way."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        prev = f"t{i}"
    head = numpy_helper.from_array(np.ones((width, 2), np.float32), "head")
    nodes.append(helper.make_node("MatMul", [prev, "head"], ["logits"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])], inits + [head])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_an_onnx_runtime_call_is_stopped_through_its_run_options(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "slow.onnx"
    _slow_onnx_model(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    predictor = OrtPredictor(VariantSpec("sst2", "slow", "onnxruntime"), session,
                             lambda chunk: {"x": np.ones((len(chunk), 256), np.float32)})
    config = from_predictor("sst2/slow/onnxruntime/fp32/b512/cpu", predictor, 512)
    assert config.run_stoppable is not None
    # stoppable exactly where the simulator stops calls (planner.schema.CANCELLABLE_RUNTIMES): not TensorRT
    trt = OrtPredictor(VariantSpec("sst2", "slow", "onnxruntime_trt", device="cuda"), session, predictor.preprocess)
    assert from_predictor("sst2/slow/onnxruntime_trt/fp16/b512/cuda", trt, 512).run_stoppable is None
    batch = list(range(512))
    started = time.perf_counter()
    probs, _ = config.run(batch)
    full = time.perf_counter() - started
    assert probs.shape == (512, 2)
    stopper = CallStopper()
    started = time.perf_counter()
    assert stopper.call(lambda o: config.run_stoppable(batch, o), started + full / 10) is None
    assert time.perf_counter() - started < full / 2
    # not stopped: the same answers as the plain call
    again, _ = stopper.call(lambda o: config.run_stoppable(batch, o), time.perf_counter() + 60.0)
    np.testing.assert_allclose(again, probs)
    # a cascade of such calls: each of its stages, served apart (planner.serving.staged), can be stopped
    stages = from_cascade("sst2/cascade:slow>slow@0.9/onnxruntime/fp32/b512/cpu",
                          Cascade(predictor, predictor, 0.9), 512).stages
    assert stages.first_stoppable is not None and stages.second_stoppable is not None
    started = time.perf_counter()
    assert stopper.call(lambda o: stages.second_stoppable(batch, o), started + full / 10) is None
    assert time.perf_counter() - started < full / 2
    stopper.close()


# ---------------------------------------------------------------- the live replay

def _trace(deadlines_ms=(40.0, 5000.0), gap_s=0.005) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, gap_s], "deadline_ms": list(deadlines_ms),
                         "example_id": [1, 2], "task": "sst2"})


def test_the_replay_stops_a_batch_at_its_deadline_and_serves_the_next_request_from_then():
    cid = "sst2/slow/onnxruntime/fp32/b1/cpu"
    policy = _Always(cid)
    stops: list = []
    rows = replay(_trace(), policy, [stoppable_sleeper(cid, stops=stops)], TEXTS, LABELS,
                  task="sst2").set_index("request_id")
    assert rows["status"].tolist() == ["shed", "served"]
    assert rows.loc[0, "batch_id"] >= 0 and rows.loc[0, "config_id"] == cid  # it keeps its batch
    assert not rows.loc[0, "hit"] and not rows.loc[0, "correct"]
    # stopped part-way, never before its deadline (how far past it depends on the machine's load)
    assert len(stops) == 1 and stops[0] < 1.0 and rows.loc[0, "latency_ms"] >= 40.0
    assert rows.loc[1, "start_s"] == pytest.approx(rows.loc[0, "finish_s"], abs=0.05)  # the server was free
    assert rows.loc[1, "hit"] and rows.loc[1, "correct"]
    assert [s[3] for s in policy.seen] == [True, False] and policy.seen[0][2] == 0


@pytest.mark.parametrize("case", ["cannot_stop", "not_asked", "stack_off"])
def test_the_replay_runs_a_call_to_its_end_where_it_cannot_be_stopped_or_nobody_asks(case):
    cid = "sst2/slow/onnxruntime/fp32/b1/cpu"
    config = plain_sleeper(cid) if case == "cannot_stop" else stoppable_sleeper(cid)
    policy = _Always(cid, cancels=case != "not_asked")
    rows = replay(_trace(), policy, [config], TEXTS, LABELS, task="sst2",
                  can_cancel=case != "stack_off").set_index("request_id")
    assert rows.loc[0, "status"] == "late" and rows.loc[0, "latency_ms"] >= SLOW_MS
    assert not any(s[3] for s in policy.seen)


# ---------------------------------------------------------------- the HTTP server

def test_the_server_answers_a_stopped_batch_as_shed_with_its_reason_and_counts_it():
    bundle = synthetic_bundle(n_configs=4, task="sst2", n_examples=N_EX)
    cid = bundle.profiles["config_id"].iloc[0]
    calls: list = []
    stops: list = []
    policy = _Always(cid)
    batcher = Batcher(policy, {cid: stoppable_sleeper(cid, calls=calls, stops=stops)}, "sst2", bundle.profiles)
    with ServerThread(create_app(batcher, TEXTS)) as running:
        doomed = httpx.post(running.url + "/v1/predict", json={"example_id": 1, "deadline_ms": 40}, timeout=10).json()
        metrics = httpx.get(running.url + "/metrics", timeout=10).text
    assert doomed["outcome"] == "shed" and doomed["reason"] == "stopped_at_deadline" and doomed["label"] is None
    assert doomed["config_id"] == cid and doomed["latency_ms"] >= 40.0   # never before its deadline
    assert len(stops) == 1 and stops[0] < 1.0                             # stopped part-way
    assert calls == [1] and policy.seen[0][3] is True
    assert f'planner_stopped_batches_total{{config_id="{cid}"}} 1' in metrics


def test_the_books_sentence_on_how_late_a_stop_lands_reads_the_benchmark(tmp_path):
    from planner.analysis.results import STOP_CSV, stop_overshoot_text

    assert stop_overshoot_text(tmp_path) == ""  # not run: nothing said
    pd.DataFrame({"config_id": ["a/b1", "a/b8"], "batch_size": [1, 8], "n_stops": [30, 30],
                  "call_median_ms": [2.0, 100.0], "overshoot_p50_ms": [0.4, 3.0], "overshoot_max_ms": [0.9, 12.0],
                  "overshoot_p50_share": [0.2, 0.03], "cpu_model": "AMD EPYC", "cpu_flags": "avx2",
                  "measured_at": "2026-12-06T23:00:00"}).to_csv(tmp_path / STOP_CSV, index=False)
    text = stop_overshoot_text(tmp_path)
    assert "0.40 to 3.00 ms" in text and "3.0% to 20.0%" in text and "12.0 ms (a/b8, a 100 ms call)" in text
    assert "AMD EPYC; avx2" in text and "largest share for a/b1, a 2.0 ms call" in text
