"""MLPerf LoadGen, Server scenario, against the HTTP server over loopback.

LoadGen (``mlcommons-loadgen``, imported as ``mlperf_loadgen``) is the field's load generator: in
the Server scenario it issues queries with Poisson arrivals at ``target_qps`` and judges the
``server_target_latency_percentile`` (99 % by default) of their latency against
``server_target_latency_ns``, with its own early-stopping rule. Nobody here wrote it, so its numbers
check ours.

The system under test (SUT) sends each query as one ``POST /v1/predict`` with the query's sample
as ``example_id`` and the run's deadline (the LoadGen latency target) as ``deadline_ms``, or with
``path_quantile`` that deadline less what the client-server path has been costing
(:mod:`planner.serving.budget`), from an asyncio loop in a helper thread, and tells LoadGen the
query is complete when the answer arrives (or fails: LoadGen must hear about every query). Each answer is also kept: one row per query with
the client's latency, the server's outcome and configuration, so attainment can be read next to
LoadGen's verdict.

LoadGen writes ``mlperf_log_summary.txt`` and ``mlperf_log_detail.txt`` (and an accuracy log,
empty in performance mode) into the output folder; :func:`parse_summary` reads the summary's
``key : value`` lines. The run is bounded by ``max_queries`` and ``max_duration_s`` (both handed to
LoadGen), and every HTTP request by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlperf_loadgen as lg
import numpy as np
import pandas as pd

from planner.evaluation.provenance import METHOD_PARAMS_FILE, recorded_params
from planner.plan.registry import as_recorded, changed_params, describe_params
from planner.serving.budget import BudgetError, DeadlineBudget
from planner.serving.clients import http_client
from planner.serving.api import STATUS_OF

SUMMARY_FILE = "mlperf_log_summary.txt"
SERVER_FILE = "server.json"
DETAIL_FILE = "mlperf_log_detail.txt"


class LoadGenError(RuntimeError):
    """LoadGen cannot run as asked (the message says why)."""


@dataclass(frozen=True)
class LoadGenSettings:
    """One Server-scenario run: target rate, latency target (= every request's deadline) and bounds."""

    target_qps: float
    deadline_ms: float
    min_queries: int = 100
    max_queries: int = 5000
    min_duration_s: float = 1.0
    max_duration_s: float = 60.0
    latency_percentile: float = 0.99
    timeout_s: float = 30.0
    seed: int = 0
    client: str = "stream"
    max_connections: int = 1000
    # the quantile of the client-server path each query's deadline is sent less of (planner.serving.budget);
    # None (the default): the latency target goes to the server as is
    path_quantile: float | None = None

    def __post_init__(self) -> None:
        for name in ("target_qps", "deadline_ms", "min_duration_s", "max_duration_s", "timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise LoadGenError(f"{name} must be a positive finite number, got {value!r}")
        if not 1 <= self.min_queries <= self.max_queries:
            raise LoadGenError(f"need 1 <= min_queries <= max_queries, got {self.min_queries} and {self.max_queries}")
        if self.min_duration_s > self.max_duration_s:
            raise LoadGenError(f"min_duration_s {self.min_duration_s} exceeds max_duration_s {self.max_duration_s}")
        if not 0 < self.latency_percentile < 1:
            raise LoadGenError(f"latency_percentile must be in (0, 1), got {self.latency_percentile!r}")
        if self.path_quantile is not None:
            try:
                DeadlineBudget(self.path_quantile)
            except BudgetError as exc:
                raise LoadGenError(f"path_quantile: {exc}") from None


@dataclass
class LoadGenResult:
    summary: dict[str, str]      # LoadGen's summary, key -> value (strings as written)
    requests: pd.DataFrame       # one row per query the SUT sent
    out_dir: Path


def parse_summary(path: Path) -> dict[str, str]:
    """The ``key : value`` lines of LoadGen's summary log (``Result is``, percentiles, QPS, ...)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        match = re.match(r"^\s*([^:=]+?)\s*:\s*(.+?)\s*$", line)
        if match and not line.lstrip().startswith("*"):
            out.setdefault(match.group(1), match.group(2))
    return out


def started_at(run: Path) -> str | None:
    """When LoadGen started the run (its detail log's ``test_datetime``, UTC, ISO 8601), or None where
    the log is missing or does not say. Why: a file's modification time does not survive a clone."""
    path = Path(run) / DETAIL_FILE
    if not path.exists():
        return None
    with path.open() as lines:
        for line in lines:
            if '"test_datetime"' in line and ":::MLLOG" in line:
                try:
                    return str(json.loads(line.split(":::MLLOG", 1)[1])["value"])
                except (ValueError, KeyError):
                    return None
    return None


class _AsyncThread:
    """An asyncio loop in a daemon thread: LoadGen's issue thread hands coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="loadgen-sut", daemon=True)
        self.thread.start()

    def submit(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def run_loadgen(url: str, settings: LoadGenSettings, example_ids: np.ndarray, out_dir: Path,
                labels: np.ndarray | None = None) -> LoadGenResult:
    """Run LoadGen's Server scenario (performance mode) against the server at ``url``.

    ``example_ids``: the evaluation examples LoadGen samples from (its query sample library);
    ``labels`` (by example id) give ``correct``. Logs and ``requests.csv`` go to ``out_dir``.
    """
    ids = np.asarray(example_ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0 or (ids < 0).any():
        raise LoadGenError("example_ids must be a non-empty list of example ids >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    worker = _AsyncThread()
    origin = time.perf_counter()

    async def open_client() -> Any:
        client = http_client(url, settings.client, settings.max_connections, settings.timeout_s)
        await client.__aenter__()
        return client

    client = worker.submit(open_client()).result(30)
    budget = DeadlineBudget(settings.path_quantile) if settings.path_quantile is not None else None

    async def one(query_id: int, index: int) -> None:
        example = int(ids[index])
        sent = time.perf_counter() - origin
        sent_deadline = budget.budget_ms(settings.deadline_ms) if budget is not None else settings.deadline_ms
        row: dict[str, Any] = {"query_id": query_id, "example_id": example, "sent_s": sent,
                               "deadline_ms": settings.deadline_ms, "budget_ms": sent_deadline}
        try:
            code, answer = await client.post("/v1/predict", {"example_id": example, "deadline_ms": sent_deadline})
            row["http_status"] = code
            if code == 200 and isinstance(answer, dict):
                row.update({k: answer.get(k) for k in ("label", "confidence", "config_id", "outcome", "reason",
                                                       "queue_ms", "service_ms")})
                row["server_latency_ms"] = answer.get("latency_ms")
            else:
                row["reason"] = f"http_{code}"
        except Exception as exc:  # noqa: BLE001 - LoadGen must hear of every query, whatever failed
            row["http_status"] = 0
            row["reason"] = f"client_error:{type(exc).__name__}"
        finally:
            row["finish_s"] = time.perf_counter() - origin
            if budget is not None and row.get("server_latency_ms") is not None:  # the path this query took
                budget.observe((row["finish_s"] - sent) * 1000.0, row["server_latency_ms"])
            with lock:
                records.append(row)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(query_id, 0, 0)])

    def issue_queries(samples: list) -> None:
        for s in samples:
            worker.submit(one(s.id, s.index))

    def flush_queries() -> None:
        pass

    def noop(_samples: list) -> None:
        pass

    test = lg.TestSettings()
    test.scenario = lg.TestScenario.Server
    test.mode = lg.TestMode.PerformanceOnly
    test.server_target_qps = float(settings.target_qps)
    test.server_target_latency_ns = int(settings.deadline_ms * 1e6)
    test.server_target_latency_percentile = float(settings.latency_percentile)
    test.min_query_count = int(settings.min_queries)
    test.max_query_count = int(settings.max_queries)
    test.min_duration_ms = int(settings.min_duration_s * 1000)
    test.max_duration_ms = int(settings.max_duration_s * 1000)
    test.qsl_rng_seed = test.sample_index_rng_seed = test.schedule_rng_seed = int(settings.seed)
    log_output = lg.LogOutputSettings()
    log_output.outdir = str(out)
    log_output.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_output
    log_settings.enable_trace = False
    sut = lg.ConstructSUT(issue_queries, flush_queries)
    qsl = lg.ConstructQSL(len(ids), min(len(ids), 1024), noop, noop)
    try:
        lg.StartTestWithLogSettings(sut, qsl, test, log_settings)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)

        async def close_client() -> None:
            await client.__aexit__(None, None, None)

        try:
            worker.submit(close_client()).result(10)
        finally:
            worker.close()
    summary_path = out / SUMMARY_FILE
    if not summary_path.exists():
        raise LoadGenError(f"LoadGen wrote no {SUMMARY_FILE} in {out}")
    requests = _requests(records, labels)
    requests.to_csv(out / "requests.csv", index=False)
    (out / "settings.json").write_text(pd.Series(asdict(settings)).to_json(indent=2))
    return LoadGenResult(parse_summary(summary_path), requests, out)


def _requests(records: list[dict[str, Any]], labels: np.ndarray | None) -> pd.DataFrame:
    columns = ["query_id", "example_id", "sent_s", "finish_s", "latency_ms", "deadline_ms", "budget_ms", "http_status",
               "status", "hit", "correct", "label", "confidence", "config_id", "outcome", "reason", "queue_ms",
               "service_ms", "server_latency_ms"]
    frame = pd.DataFrame(records)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    for column in columns:
        if column not in frame:
            frame[column] = None
    frame["latency_ms"] = (frame["finish_s"] - frame["sent_s"]) * 1000.0
    answered = frame["label"].notna()
    on_time = frame["latency_ms"] <= frame["deadline_ms"]
    server = frame["outcome"].map(STATUS_OF).fillna("dropped")
    frame["status"] = np.where(answered, np.where(on_time, np.where(frame["outcome"] == "degraded", "degraded", "served"),
                                                  "late"), server)
    frame["hit"] = answered & on_time
    if labels is not None:
        label = pd.to_numeric(frame["label"], errors="coerce")
        frame["correct"] = answered & (label.to_numpy() == np.asarray(labels)[frame["example_id"].to_numpy()])
    else:
        frame["correct"] = False
    return frame[columns].sort_values("sent_s", kind="stable").reset_index(drop=True)


def _ns_to_ms(summary: dict[str, str], key: str) -> float:
    value = summary.get(key)
    return float(value) / 1e6 if value is not None else math.nan


def read_runs(folder: Path) -> pd.DataFrame:
    """One row per LoadGen run kept under ``folder`` (subfolders ``<task>_<method>`` as
    :func:`run_loadgen` writes them): LoadGen's verdict and latencies next to what the client and the
    server recorded per query. Why both clocks: LoadGen times a query from issue to completion at the
    client, the server plans and labels outcomes from the moment the request reaches it, so the
    difference is what the HTTP path costs a deadline. ``method_params``: the parameters the server's
    method ran with (JSON; from its self-description, else from a :data:`METHOD_PARAMS_FILE` beside the
    runs; None when neither says). ``started_at``: when LoadGen ran it (:func:`started_at`). ``host``: the
    hardware the server said it ran on (JSON; None for a server that did not say). Empty when no run
    was kept."""
    rows = []
    by_method = recorded_params(folder)
    for summary_path in sorted(Path(folder).glob(f"*/{SUMMARY_FILE}")):
        run = summary_path.parent
        task, _, method = run.name.partition("_")
        server = {}
        if (run / SERVER_FILE).exists():  # `planner loadgen` keeps what the server said it runs
            server = json.loads((run / SERVER_FILE).read_text())
            task, method = server.get("task", task), server.get("policy", method)
        params = server.get("params", by_method.get(method))
        summary = parse_summary(summary_path)
        settings = json.loads((run / "settings.json").read_text()) if (run / "settings.json").exists() else {}
        requests_path = run / "requests.csv"
        if not requests_path.exists():
            raise LoadGenError(f"{run}: LoadGen summary without the client's requests.csv")
        requests = pd.read_csv(requests_path)
        answered = requests["label"].notna()
        server_ms = requests["queue_ms"] + requests["service_ms"]
        status = requests["status"].value_counts(normalize=True)
        within = requests["latency_ms"] <= requests["deadline_ms"]
        served = requests["config_id"].dropna() if "config_id" in requests else pd.Series(dtype=object)
        main = served.value_counts()
        rows.append({
            "run": run.name, "task": task, "method": method, "scenario": summary.get("Scenario", ""),
            "result": summary.get("Result is", ""),
            "latency_constraint_met": summary.get("Performance constraints satisfied", "") == "Yes",
            "early_stopping_met": summary.get("Early stopping satisfied", "") == "Yes",
            # LoadGen judges a run shorter than its minimum duration INVALID whatever its latencies
            "min_duration_met": {"Yes": True, "NO": False}.get(summary.get("Min duration satisfied", "")),
            "target_qps": float(summary.get("target_qps", "nan")),
            "completed_qps": float(summary.get("Completed samples per second", "nan")),
            "target_latency_ms": _ns_to_ms(summary, "target_latency (ns)"),
            "latency_percentile": float(settings.get("latency_percentile", math.nan)),
            "lat_p50_ms": _ns_to_ms(summary, "50.00 percentile latency (ns)"),
            "lat_p99_ms": _ns_to_ms(summary, "99.00 percentile latency (ns)"),
            "n_queries": len(requests),
            "client_within_deadline": float(within.mean()),
            "effective_accuracy": float((within & requests["correct"].astype(bool)).mean()),
            "n_correct_within": int((within & requests["correct"].astype(bool)).sum()),
            "server_on_time": float((requests["outcome"] == "on_time").mean()),
            "server_late": float((requests["outcome"] == "late").mean()),
            "shed": float(status.get("shed", 0.0)),
            "degraded": float(status.get("degraded", 0.0)),
            "path_added_p50_ms": float((requests["latency_ms"] - server_ms)[answered].median()),
            # runs written before the budget existed sent the latency target as is (no path_quantile)
            "path_quantile": settings.get("path_quantile"),
            "seed": settings.get("seed"),  # LoadGen's query, sample and schedule seeds
            "budget_p50_ms": float(requests["budget_ms"].median()) if "budget_ms" in requests else math.nan,
            # the configuration that answered most queries, and its share of the answers
            "main_config": str(main.index[0]) if len(main) else None,
            "main_config_share": float(main.iloc[0] / len(served)) if len(main) else math.nan,
            "method_params": json.dumps(params, sort_keys=True) if params is not None else None,
            "started_at": started_at(run),
            # the server's start-up re-timing: the machine's speed that hour against the stored profile's
            "startup_scale": float(server.get("startup_scale") or math.nan),
            "host": json.dumps(server["host"], sort_keys=True) if server.get("host") else None,
        })
    return pd.DataFrame(rows)


def sweep_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method, latency target) of a sweep over target rates (:func:`read_runs` of
    ``benchmarks/loadgen_sweep.sh``'s folder): the highest rate LoadGen judged VALID (MLPerf's Server
    figure; NaN when none was) with the effective accuracy delivered there, and the verdict, effective
    accuracy and shed share at the highest rate tried. Why the accuracy: a shed answer is a completed
    query to LoadGen, so a method that sheds can stay VALID while answering little."""
    rows = []
    for (task, method, target), part in runs.groupby(["task", "method", "target_latency_ms"], sort=True):
        part = part.sort_values("target_qps")
        valid = part[part["result"] == "VALID"]
        top = part.iloc[-1]
        best = valid.iloc[-1] if len(valid) else None
        rows.append({
            "task": task, "method": method, "target_latency_ms": float(target), "n_rates": len(part),
            "max_valid_qps": float(best["target_qps"]) if best is not None else np.nan,
            "effective_accuracy_at_max_valid": float(best["effective_accuracy"]) if best is not None else np.nan,
            "shed_at_max_valid": float(best["shed"]) if best is not None else np.nan,
            "top_qps": float(top["target_qps"]), "top_result": top["result"],
            "effective_accuracy_at_top": float(top["effective_accuracy"]), "shed_at_top": float(top["shed"]),
        })
    return pd.DataFrame(rows)


def stale_params_note(ran: dict[str, dict], current: dict[str, dict]) -> str:
    """A sentence naming the parameters in which methods ran (``ran``) differ from ``current`` (their
    parameters in the preset now), so a measurement taken before a preset changed is not read as one of
    the present method; empty when none differs."""
    parts = []
    for method in sorted(ran):
        now = current.get(method)
        if now is None:
            continue
        before = as_recorded(method, ran[method], now)  # a parameter added since, at the value it ran with then
        changed = changed_params(before, now)
        if not changed:
            continue
        # a parameter absent from the record was added to the method after these runs
        newer = {k: b for k, (_a, b) in changed.items() if k not in before}
        older = {k: ab for k, ab in changed.items() if k in before}
        said = []
        if older:
            said.append(f"with {describe_params({k: a for k, (a, _b) in older.items()})} "
                        f"(the preset now: {describe_params({k: b for k, (_a, b) in older.items()})})")
        if newer:
            said.append(f"before {', '.join(sorted(newer))} existed (the preset now: {describe_params(newer)})")
        parts.append(f"`{method}` ran " + " and ".join(said))
    if not parts:
        return ""
    return ("These runs predate a change of parameters: " + "; ".join(parts)
            + ". They are reported as measured and were not repeated with the present parameters.")


def params_note(runs: pd.DataFrame, current: dict[str, dict]) -> str:
    """:func:`stale_params_note` of :func:`read_runs`' rows (each method's first recorded parameters)."""
    if runs.empty or "method_params" not in runs.columns:
        return ""
    ran = {m: json.loads(p) for m, p in
           runs.dropna(subset=["method_params"]).groupby("method")["method_params"].first().items()}
    return stale_params_note(ran, current)


__all__ = ["METHOD_PARAMS_FILE", "LoadGenError", "LoadGenResult", "LoadGenSettings", "params_note", "parse_summary",
           "read_runs", "recorded_params", "run_loadgen", "stale_params_note", "started_at", "sweep_summary"]
