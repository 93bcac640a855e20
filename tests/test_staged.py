"""A cascade served stage by stage (``needs.early_answers``) in the live replay, the HTTP server and the
simulator: every
member is answered exactly once; an escalated request whose second stage overruns gets the first
stage's answer at its deadline (degraded), one whose second stage cannot fit by the running estimate
gets it at once, and the others get the second stage's answer; a stopped stage frees the server.

Times are never asserted as absolute values: where an answer must be on time, the alarm's guard is
a large share of the deadline, and elsewhere answers are only asserted to come before the slow
second stage they did not wait for would have ended."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from bundles import synthetic_bundle, toy_bundle
from planner.models.base import CallStopped
from planner.plan.policies import OnlinePolicy, PolicyNeeds
from planner.serving.replay import CascadeStages, LiveConfig, replay
from planner.serving.server import Batcher, ServerThread, create_app
from planner.serving.simulator import prepare, simulate
from planner.serving.staged import EARLY_GUARD_S, AlarmGuard, SecondStageEstimate, run_staged
from planner.serving.stopping import CallStopper

SLOW_S = 0.4  # the slow second stage; every deadline that must not wait for it is far below it
N_EX = 16
TEXTS = [f"sentence number {i}" for i in range(N_EX)]
LABELS = np.ones(N_EX, dtype=int)  # the second stage is right, the first stage's unsure answers wrong


def _ids(inputs) -> np.ndarray:
    return np.array([int(str(t).split()[-1]) for t in inputs])


def first_stage(inputs) -> np.ndarray:
    """Sure (0.95 for label 1) on odd examples, unsure (0.55 for label 0) on even ones."""
    odd = _ids(inputs) % 2 == 1
    return np.where(odd[:, None], [[0.05, 0.95]], [[0.55, 0.45]]).astype(np.float32)


def second_stage(seconds: float = SLOW_S, calls: list | None = None):
    def run(inputs, options=None):
        if calls is not None:
            calls.append(len(inputs))
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            if options is not None and options.terminate:
                raise CallStopped("second stage stopped")
            time.sleep(0.0005)
        return np.tile([[0.1, 0.9]], (len(inputs), 1)).astype(np.float32)
    return run


def unsure(probs) -> np.ndarray:
    return np.asarray(probs).max(axis=1) < 0.9


def stages(seconds: float = SLOW_S, calls: list | None = None, stoppable: bool = False) -> CascadeStages:
    second = second_stage(seconds, calls)
    return CascadeStages(first_stage, second, unsure, None, second if stoppable else None)


class _Options:
    terminate = False


def _collect():
    got: dict[int, list] = {}
    lock = threading.Lock()

    def answer(i, probs, at, early):
        with lock:
            got.setdefault(i, []).append((int(np.asarray(probs).argmax()), at, early))
    return got, answer


# ---------------------------------------------------------------- the staged call

def test_an_overrunning_second_stage_leaves_its_tight_request_the_first_stage_answer_at_its_deadline():
    timer = CallStopper(make_options=_Options)
    got, answer = _collect()
    now = time.perf_counter()
    # 0: unsure, tight deadline; 1: sure; 2: unsure, patient. The estimate says the second stage fits.
    deadlines = [now + 0.15, now + 0.15, now + 30.0]
    estimate = SecondStageEstimate(1.0)
    guard = AlarmGuard(floor_s=0.1)
    call = run_staged(stages(), TEXTS[:3], deadlines, answer, estimate, timer, time.perf_counter, guard=guard)
    timer.close()
    assert sorted(got) == [0, 1, 2] and all(len(v) == 1 for v in got.values())  # each exactly once
    (label0, at0, early0), (label1, at1, early1), (label2, at2, early2) = (got[i][0] for i in range(3))
    assert early0 and label0 == 0 and at0 <= deadlines[0]  # the first stage's answer, on time
    assert not early1 and label1 == 1 and at1 == call.first_done  # sure: at once
    assert not early2 and label2 == 1 and at2 == call.finish  # waited for the second stage
    assert call.escalated.tolist() == [True, False, True] and not call.stopped
    assert estimate.ms > 1.0  # learned the slow second stage
    assert guard.seconds() >= 0.1 and len(guard._late) == 1  # and how late its one alarm rang


def test_a_second_stage_the_estimate_says_is_too_slow_is_not_run():
    timer = CallStopper(make_options=_Options)
    got, answer = _collect()
    calls: list = []
    now = time.perf_counter()
    call = run_staged(stages(calls=calls), TEXTS[:2], [now + 0.1, now + 0.1], answer,
                      SecondStageEstimate(SLOW_S * 1000.0), timer, time.perf_counter)
    timer.close()
    assert calls == [] and call.finish == call.first_done
    assert got[0] == [(0, call.first_done, True)] and got[1] == [(1, call.first_done, False)]


def test_a_stoppable_second_stage_is_stopped_once_its_requests_have_had_their_early_answers():
    timer = CallStopper(make_options=_Options)
    got, answer = _collect()
    now = time.perf_counter()
    estimate = SecondStageEstimate(0.0)
    call = run_staged(stages(stoppable=True), [TEXTS[0], TEXTS[2]], [now + 0.05, now + 0.06], answer, estimate,
                      timer, time.perf_counter, stop_calls=True)
    elapsed = time.perf_counter() - now
    timer.close()
    assert timer.n_stopped == 1 and elapsed < SLOW_S / 2 + 0.1  # the server was freed well before the end
    assert [got[i][0][0] for i in (0, 1)] == [0, 0] and all(got[i][0][2] for i in (0, 1))
    assert not call.stopped and estimate.ms > 0.0  # a stopped stage only raises the estimate


def test_a_first_stage_stopped_at_the_deadline_answers_nobody():
    timer = CallStopper(make_options=_Options)
    got, answer = _collect()
    slow_first = second_stage()
    cascade = CascadeStages(slow_first, slow_first, unsure, slow_first, slow_first)
    now = time.perf_counter()
    call = run_staged(cascade, TEXTS[:2], [now + 0.02, now + 0.03], answer, SecondStageEstimate(0.0), timer,
                      time.perf_counter, stop_calls=True)
    timer.close()
    assert call.stopped and got == {}


def test_the_guard_rings_as_early_as_the_latest_recent_alarm_was_late():
    guard = AlarmGuard(floor_s=0.001, window=3, margin=2.0)
    assert guard.seconds() == 0.001
    for late in (0.004, -0.5, 0.002):
        guard.observe(late)
    assert guard.seconds() == 0.008
    guard.observe(0.0)  # the 4 ms one leaves the window
    assert guard.seconds() == 0.004
    guard.observe(0.0)
    guard.observe(0.0)
    assert guard.seconds() == 0.001  # back to the floor
    with pytest.raises(ValueError, match="floor_s"):
        AlarmGuard(floor_s=-1.0)
    with pytest.raises(ValueError, match="window"):
        AlarmGuard(window=0)
    with pytest.raises(ValueError, match="margin"):
        AlarmGuard(margin=0.5)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_alarms_ring_in_time_order_unless_cancelled_and_a_failing_one_does_not_stop_the_rest():
    timer = CallStopper(make_options=_Options)
    rung: list = []
    now = time.perf_counter()

    def broken():
        raise ValueError("alarm broke")

    timer.alarm(now + 0.03, lambda: rung.append("b"))
    timer.alarm(now + 0.01, lambda: rung.append("a"))
    timer.alarm(now + 0.015, broken)
    timer.cancel(timer.alarm(now + 0.02, lambda: rung.append("cancelled")))
    for _ in range(200):
        if len(rung) == 2:
            break
        time.sleep(0.01)
    timer.close()
    assert rung == ["a", "b"]
    assert [str(e) for e in timer.alarm_errors] == ["alarm broke"]


# ---------------------------------------------------------------- the replay and the server

class _Early(OnlinePolicy):
    """Always the cascade; asks for early answers (and, optionally, stopped calls)."""

    def __init__(self, config_id: str, cancels: bool = False):
        self.config_id, self.name, self.task = config_id, "early", "sst2"
        self.needs = PolicyNeeds(early_answers=True, cancels=cancels)

    def __call__(self, ctx) -> str:
        return self.config_id


CID = "sst2/cascade:small>large@0.9/onnxruntime/fp32/b1/cpu"


def _cascade() -> LiveConfig:
    both = stages()

    def run(inputs):  # both stages in one call, for policies without early answers
        probs = both.first(inputs)
        esc = unsure(probs)
        if esc.any():
            probs[esc] = both.second([x for x, e in zip(inputs, esc) if e])
        return probs, np.where(esc, 2, 1)
    return LiveConfig(CID, 1, run, both)


def test_the_replay_sends_a_doomed_escalation_the_first_stage_answer_and_waits_for_the_patient_one():
    trace = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.001, 0.002],
                          "deadline_ms": [100.0, 30_000.0, 30_000.0], "example_id": [4, 2, 3], "task": "sst2"})
    rows = replay(trace, _Early(CID), [_cascade()], TEXTS, LABELS, task="sst2").set_index("request_id")
    # 0 is unsure and its second stage (tried: nothing has timed one yet) overruns its deadline: it gets
    # the first stage's (wrong) answer then, not the second stage's
    assert rows.loc[0, "status"] in ("degraded", "late") and not rows.loc[0, "correct"]
    assert not rows.loc[0, "escalated"] and rows.loc[0, "finish_s"] < rows.loc[0, "start_s"] + SLOW_S / 2
    # 1 waits for its second stage; 2 is sure
    assert rows.loc[1, "status"] == "served" and rows.loc[1, "correct"] and rows.loc[1, "escalated"]
    assert rows.loc[2, "status"] == "served" and rows.loc[2, "correct"] and not rows.loc[2, "escalated"]
    # without early answers the same cascade runs in one call, and the tight request is late
    plain = _Early(CID)
    plain.needs = PolicyNeeds()
    rows = replay(trace, plain, [_cascade()], TEXTS, LABELS, task="sst2").set_index("request_id")
    assert rows.loc[0, "status"] == "late" and rows.loc[0, "correct"]


def test_the_server_answers_at_the_deadline_when_the_second_stage_overruns_its_estimate():
    bundle = synthetic_bundle(n_configs=4, task="sst2", n_examples=N_EX)
    cid = bundle.profiles["config_id"].iloc[0]
    cascade = LiveConfig(cid, 1, lambda x: (first_stage(x), None), stages())
    batcher = Batcher(_Early(cid), {cid: cascade}, "sst2", bundle.profiles)
    batcher._stage2[cid].ms = 0.0  # the estimate says the second stage fits any deadline
    with ServerThread(create_app(batcher, TEXTS)) as running:
        answer = httpx.post(running.url + "/v1/predict", json={"example_id": 2, "deadline_ms": 100}, timeout=10).json()
    assert answer["reason"] == "early_answer" and answer["label"] == 0
    assert answer["outcome"] in ("degraded", "late") and answer["latency_ms"] < SLOW_S * 1000.0 / 2


# ---------------------------------------------------------------- the simulator, by the same rule

def _sim_cascade(runtime: str = "torch", large_ms=(40.0, 10.0, 10.0, 10.0, 10.0), batch: int = 1):
    """Small member 1 ms, sure and right on even examples, unsure and wrong on odd ones; large member
    (profiled median 10 ms: the estimate before any second stage ran) right everywhere. Samples are
    served in order, so the first second stage takes ``large_ms[0]``."""
    ex = np.arange(N_EX)
    even = ex % 2 == 0
    specs = [dict(model="small", batch_size=batch, samples_ms=np.full(5, 1.0), correct=even,
                  confidence=np.where(even, 0.95, 0.5), runtime=runtime),
             dict(model="large", batch_size=batch, samples_ms=np.asarray(large_ms), correct=np.ones(N_EX, bool),
                  runtime=runtime),
             dict(model="x", batch_size=batch, samples_ms=np.full(5, 100.0), correct=np.zeros(N_EX, bool),
                  cascade=("small", "large", 0.8), runtime=runtime)]
    catalog = prepare(toy_bundle("sst2", specs))
    catalog.ordered_samples = True
    return catalog, catalog.profiles.index[2]


def _sim_trace(arrivals_ms, deadlines_ms, examples) -> pd.DataFrame:
    return pd.DataFrame({"request_id": np.arange(len(examples)), "arrival_s": np.asarray(arrivals_ms) / 1000.0,
                         "deadline_ms": deadlines_ms, "example_id": examples, "workload": "toy", "seed": 0})


def _ms(rows: pd.DataFrame, column: str) -> list[float]:
    return rows[column].mul(1000.0).round(6).tolist()


def test_the_simulator_decides_on_the_estimate_and_charges_an_overrunning_second_stage():
    """The estimate (10 ms) says the second stage fits the 20 ms deadline; it takes 40: the alarm
    answers at the deadline less the guard, and the server is busy until the second stage ends (a
    torch call cannot be stopped), as live. The estimate learns (10 + 0.2 * 30 = 16 ms), so the next
    escalation at 15 ms is answered by the first stage at once and no second stage runs."""
    catalog, cid = _sim_cascade()
    trace = _sim_trace([0.0, 5.0, 50.0], [20.0, 1000.0, 15.0], [1, 2, 3])
    rows = simulate(trace, _Early(cid), catalog)
    assert rows["status"].tolist() == ["degraded", "served", "degraded"]
    assert rows["correct"].tolist() == [False, True, False] and not rows["escalated"].any()
    assert _ms(rows, "finish_s") == pytest.approx([20.0 - EARLY_GUARD_S * 1000, 42.0, 51.0])
    assert _ms(rows, "start_s") == pytest.approx([0.0, 41.0, 50.0])  # the doomed stage held the server
    # stoppable (ONNX Runtime) and asked to stop: the server is free at the deadline instead, and the
    # stopped stage teaches only that it took at least 19 ms (estimate 11.8 ms), so the third request
    # waits for its second stage (10 ms) and gets its answer
    catalog, cid = _sim_cascade("onnxruntime")
    rows = simulate(trace, _Early(cid, cancels=True), catalog)
    assert rows["status"].tolist() == ["degraded", "served", "served"]
    assert _ms(rows, "start_s") == pytest.approx([0.0, 20.0, 50.0])
    assert _ms(rows, "finish_s")[2] == pytest.approx(61.0) and rows["correct"].tolist() == [False, True, True]


def test_the_simulator_answers_a_sure_request_when_the_first_stage_ends():
    """Batch 2: the sure request is answered at the first stage's end and the escalated one by the
    second stage; without early answers both wait for the whole batch, as the live replay's one call."""
    catalog, cid = _sim_cascade(large_ms=(10.0,) * 5, batch=2)
    trace = _sim_trace([0.0, 0.0], [50.0, 50.0], [2, 3])
    rows = simulate(trace, _Early(cid), catalog)
    assert rows["status"].tolist() == ["served", "served"] and rows["correct"].all()
    assert rows["escalated"].tolist() == [False, True] and _ms(rows, "finish_s") == pytest.approx([1.0, 11.0])
    plain = _Early(cid)
    plain.needs = PolicyNeeds()
    catalog, cid = _sim_cascade(large_ms=(10.0,) * 5, batch=2)
    assert _ms(simulate(trace, plain, catalog), "finish_s") == pytest.approx([11.0, 11.0])


# ---------------------------------------------------------------- what the book says of it

def test_the_books_sentence_on_the_alarm_reads_the_benchmark(tmp_path):
    from planner.analysis.results import ALARM_CSV, early_alarm_text

    assert early_alarm_text(tmp_path) == ""  # not run: nothing said
    pd.DataFrame({"config_id": ["a/b1", "a/b8"], "batch_size": [1, 8], "second_median_ms": [14.0, 100.0],
                  "floor_ms": 0.5, "lateness_p50_ms": [0.3, 0.2], "lateness_max_ms": [1.1, 4.5],
                  "share_on_time": [0.98, 0.95], "share_on_time_learned": [1.0, 0.97], "learn_tries": 5,
                  "margin": 2.0, "share_on_time_learned_margin1": [0.9, 0.8],
                  "share_on_time_floor_only": [0.6, 0.55], "cpu_model": "AMD EPYC", "cpu_flags": "avx2",
                  "measured_at": "2026-12-07T05:00:00"}).to_csv(tmp_path / ALARM_CSV, index=False)
    text = early_alarm_text(tmp_path)
    assert "median of 0.20 to 0.30 ms" in text and "at worst 4.5 ms (a/b8, while a 100 ms" in text
    assert "95% to 98%" in text and "97% to 100% after the first 5 batches" in text and "55% to 60%" in text
    assert "80% to 90% had the guard been the largest recent lateness alone rather than 2 times it" in text
    assert "fixed guard of 0.5 ms" in text and "AMD EPYC; avx2" in text


def test_live_results_say_which_serving_changes_they_predate(tmp_path):
    from planner.evaluation import live_fault, live_server
    from planner.serving.revision import SERVING_REVISION, serving_revision, stale_serving_note

    assert serving_revision([{}, {"serving_revision": SERVING_REVISION}]) == 1  # the oldest start-up
    assert serving_revision([{"serving_revision": SERVING_REVISION}]) == SERVING_REVISION
    assert stale_serving_note(SERVING_REVISION, "The runs") == ""  # current: nothing to say
    assert "stage by stage" in stale_serving_note(1, "The runs")
    assert "would not change them" in stale_serving_note(1, "The runs", {"`anytime` on x": 0})
    # a fault replay: only methods with early answers count, by the cascades they used
    record = {"startups": [{"at": "then"}], "runs": {
        "anytime": {"configs_used": {"t/cascade:a>b@0.7/x/b1": 12, "t/a/x/b1": 30}, "params": {"early_answers": True}},
        "seed_p95": {"configs_used": {"t/cascade:a>b@0.7/x/b1": 40}, "params": {}}}}
    result = live_fault.LiveFaultResult(pd.DataFrame(), pd.DataFrame(), record)
    assert live_fault.serving_text({"t": result}, tmp_path).endswith("12 (`anytime` on t).")
    record["startups"].append({"serving_revision": SERVING_REVISION})
    assert "predate" in live_fault.serving_text({"t": result}, tmp_path)  # one old start-up is enough
    record["startups"] = [{"serving_revision": SERVING_REVISION}]
    assert live_fault.serving_text({"t": result}, tmp_path) == ""
    # server runs: the record's start-ups, the runs' rows and the parameters beside them
    where = live_server.paths(tmp_path, "t")
    where["runs"].mkdir(parents=True)
    where["record"].write_text('{"startups": [{}]}')
    (tmp_path / "method_params.json").write_text('{"anytime": {"early_answers": true}, "seed_p95": {}}')
    pd.DataFrame({"method": ["anytime", "anytime", "seed_p95"],
                  "config_id": ["t/cascade:a>b@0.7/x/b1", "t/a/x/b1", "t/cascade:a>b@0.7/x/b1"]}).to_parquet(
        where["runs"] / "run_x.parquet")
    assert live_server.serving_text(tmp_path, ["t"]).endswith("1 (`anytime` on t).")
    assert live_server.serving_text(tmp_path, ["other"]) == ""  # nothing recorded
