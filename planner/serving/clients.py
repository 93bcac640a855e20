"""Open-loop trace replay against the HTTP server: the evaluation's traces, sent over loopback.

Each request of a trace (:data:`planner.schema.TRACE_COLUMNS`: Poisson, Gamma, the Twitter
replays, ...) is sent at its ``arrival_s`` on a monotonic clock, whether or not earlier ones have
been answered (open loop: a slow server does not slow the arrivals down), as
``{"example_id", "deadline_ms"}`` (or the raw input with ``send_inputs``). With ``path_quantile``
the deadline sent is the request's own less what the client-server path has been costing
(:mod:`planner.serving.budget`; column ``budget_ms``). The client records what
it sees: the latency from the request's scheduled arrival to the answer's last byte, the HTTP
status and the server's answer (outcome, configuration, ``queue_ms``, ``service_ms``).

The result is the per-request table of the simulator and the replay
(:data:`planner.schema.REQUEST_RESULT_COLUMNS` first), judged on the client's clock: a model's
answer is ``served`` (or ``degraded``) when the client got it within the deadline, else ``late``;
``shed`` and ``dropped`` are the server's; a request without a usable answer (HTTP error,
timeout, the wall limit) is ``dropped`` with the reason. So :func:`planner.serving.outcomes.run_metrics`
applies unchanged. ``start_s`` is the answer's time minus the server's ``service_ms`` (the client
does not see batch boundaries; ``cpu_s_per_request`` is therefore approximate).

Two HTTP clients: ``client="stream"`` (default) is a minimal HTTP/1.1 client on asyncio streams
(:class:`StreamClient`: a pool of keep-alive connections, ``Content-Length`` bodies only, which is
what this server sends); ``client="httpx"`` uses ``httpx.AsyncClient``. Measured here
(``benchmarks/bench_http.py --clients``), httpx's async pool sustains a few hundred requests/s
with 32 in flight against a server that answers thousands (a known limitation, encode/httpx#3215),
so at the evaluation's rates it would measure itself; httpx stays available to cross-check.

The replay stops by itself: at most ``max_requests`` requests (the first by arrival) and
``max_wall_s`` seconds; requests due after the wall limit are not sent (not in the output), and
answers still outstanding then are recorded as ``dropped`` (reason ``client_wall_limit``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import httpx
import numpy as np
import pandas as pd

from urllib.parse import urlsplit

from planner.schema import REQUEST_RESULT_COLUMNS
from planner.serving.batching import check_trace
from planner.serving.budget import BudgetError, DeadlineBudget
from planner.serving.api import STATUS_OF

CLIENT_COLUMNS = ("arrival_s", "deadline_ms", "example_id", "sent_lag_ms", "http_status", "server_outcome", "reason",
                  "label", "queue_ms", "service_ms", "server_latency_ms", "budget_ms")


class ClientError(RuntimeError):
    """The trace cannot be replayed as asked (the message says why)."""


@dataclass(frozen=True)
class ClientLimits:
    """Bounds of one replay: requests, wall time, and the per-request HTTP timeout."""

    max_requests: int = 10_000
    max_wall_s: float = 60.0
    timeout_s: float = 30.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.max_requests, bool) or not isinstance(self.max_requests, int) or self.max_requests < 1:
            raise ClientError(f"max_requests must be an integer >= 1, got {self.max_requests!r}")
        for name in ("max_wall_s", "timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ClientError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.max_connections < 1:
            raise ClientError(f"max_connections must be >= 1, got {self.max_connections!r}")


class StreamClient:
    """A lean HTTP/1.1 client for one loopback server: keep-alive connections (at most
    ``max_connections`` in use), JSON bodies, responses framed by ``Content-Length``."""

    def __init__(self, url: str, max_connections: int = 1000, timeout_s: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ClientError(f"url must look like http://host:port, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout_s = float(timeout_s)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[asyncio.StreamWriter] = set()

    async def post(self, path: str, payload: Any) -> tuple[int, Any]:
        """``(HTTP status, decoded JSON body)``; raises ``asyncio.TimeoutError`` or ``OSError``."""
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                status, data, keep = await asyncio.wait_for(self._exchange(conn, head + body), self.timeout_s)
            except BaseException:
                self._close(conn)
                raise
            if keep:
                self._idle.append(conn)
            else:
                self._close(conn)
        return status, json.loads(data) if data else None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout_s)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._open.add(writer)
        return reader, writer

    @staticmethod
    async def _exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> tuple[int, bytes, bool]:
        reader, writer = conn
        writer.write(request)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status = int(status_line.split()[1])
        length, keep = 0, True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and value != "identity":
                raise ClientError(f"unsupported Transfer-Encoding {value!r} (this client reads Content-Length bodies)")
            elif name == "connection" and value == "close":
                keep = False
        return status, await reader.readexactly(length) if length else b"", keep

    def _close(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self._open.discard(conn[1])
        conn[1].close()

    async def aclose(self) -> None:
        for writer in list(self._open):
            writer.close()
        self._open.clear()
        self._idle.clear()

    async def __aenter__(self) -> "StreamClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class _HttpxClient:
    """``httpx.AsyncClient`` behind :class:`StreamClient`'s ``post``."""

    def __init__(self, url: str, max_connections: int, timeout_s: float):
        pool = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s, limits=pool)

    async def post(self, path: str, payload: Any) -> tuple[int, Any]:
        response = await self._client.post(path, json=payload)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    async def __aenter__(self) -> "_HttpxClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.aclose()


def http_client(url: str, client: str = "stream", max_connections: int = 1000, timeout_s: float = 30.0):
    """An async client with ``post(path, payload) -> (status, json)``: ``"stream"`` or ``"httpx"``."""
    if client == "stream":
        return StreamClient(url, max_connections, timeout_s)
    if client == "httpx":
        return _HttpxClient(url, max_connections, timeout_s)
    raise ClientError(f"client must be 'stream' or 'httpx', got {client!r}")


def replay_http(url: str, trace: pd.DataFrame, *, labels: np.ndarray | None = None,
                inputs: Sequence[Any] | np.ndarray | None = None, limits: ClientLimits = ClientLimits(),
                method: str = "server", lead_s: float = 0.2, client: str = "stream",
                on_origin: Callable[[float], None] | None = None,
                path_quantile: float | None = None) -> pd.DataFrame:
    """Send ``trace`` to the server at ``url`` in real time; one row per sent request (``request_id`` order).

    ``labels`` (by example id) give ``correct``; without them ``correct`` is False throughout
    (``frame.attrs["labels"]`` says which). ``inputs`` (by example id) send raw inputs instead of
    example ids (images as base64). ``lead_s``: gap between starting the clock and time 0 of the trace.
    ``on_origin`` (if given) is called once with the trace's time 0 on ``time.monotonic``, when the
    client's clock starts (its connections open): what runs beside the replay on the trace's clock (an
    injected fault) takes that origin, not a guess made before the client was set up.
    ``path_quantile``: send each request's deadline less that quantile of the client-server path
    measured on earlier answers (:class:`planner.serving.budget.DeadlineBudget`; column ``budget_ms``);
    None sends the deadline as is. The client still judges every answer against the whole deadline.
    """
    return asyncio.run(replay_http_async(url, trace, labels=labels, inputs=inputs, limits=limits, method=method,
                                         lead_s=lead_s, client=client, on_origin=on_origin,
                                         path_quantile=path_quantile))


async def replay_http_async(url: str, trace: pd.DataFrame, *, labels: np.ndarray | None = None,
                            inputs: Sequence[Any] | np.ndarray | None = None, limits: ClientLimits = ClientLimits(),
                            method: str = "server", lead_s: float = 0.2, client: str = "stream",
                            on_origin: Callable[[float], None] | None = None,
                            path_quantile: float | None = None) -> pd.DataFrame:
    """:func:`replay_http` inside a running event loop."""
    if not isinstance(limits, ClientLimits):
        raise ClientError(f"limits must be a ClientLimits, got {type(limits).__name__}")
    try:
        budget = DeadlineBudget(path_quantile) if path_quantile is not None else None
    except BudgetError as exc:
        raise ClientError(f"path_quantile: {exc}") from None
    n_examples = len(labels) if labels is not None else (len(inputs) if inputs is not None else None)
    checked = check_trace(trace, ClientError, n_examples)
    capped = checked.iloc[: limits.max_requests]
    ordered = capped[capped["arrival_s"] < limits.max_wall_s - lead_s].reset_index(drop=True)
    if ordered.empty:
        raise ClientError(f"no request of the trace arrives within max_wall_s={limits.max_wall_s} s")
    n = len(ordered)
    arrival = ordered["arrival_s"].to_numpy(dtype=float)
    deadline = ordered["deadline_ms"].to_numpy(dtype=float)
    example = ordered["example_id"].to_numpy(dtype=np.int64)
    sent = np.full(n, np.nan)
    done = np.full(n, np.nan)
    budget_ms = np.full(n, np.nan)
    http_status = np.zeros(n, dtype=np.int64)
    answers: list[dict | None] = [None] * n
    errors: list[str | None] = [None] * n
    async with http_client(url, client, limits.max_connections, limits.timeout_s) as session:
        clock = time.perf_counter
        origin = clock() + lead_s
        wall_end = origin - lead_s + limits.max_wall_s
        if on_origin is not None:
            on_origin(time.monotonic() + (origin - clock()))

        async def send(i: int) -> None:
            budget_ms[i] = budget.budget_ms(float(deadline[i])) if budget is not None else float(deadline[i])
            body = {"deadline_ms": float(budget_ms[i])}
            if inputs is None:
                body["example_id"] = int(example[i])
            else:
                body["input"] = _wire(inputs[int(example[i])])
            sent[i] = clock() - origin
            try:
                code, answer = await session.post("/v1/predict", body)
            except (asyncio.TimeoutError, httpx.TimeoutException):
                errors[i] = "timeout"
            except (OSError, ValueError, httpx.HTTPError, asyncio.IncompleteReadError) as exc:
                errors[i] = f"http_error:{type(exc).__name__}"
            else:
                http_status[i] = code
                if code == 200 and isinstance(answer, dict):
                    answers[i] = answer
                else:
                    errors[i] = f"http_{code}"
            done[i] = clock() - origin
            if budget is not None and answers[i] is not None:  # the path this request took, from its due time
                budget.observe((done[i] - arrival[i]) * 1000.0, answers[i].get("latency_ms"))

        tasks = []
        for i in range(n):
            delay = arrival[i] - (clock() - origin)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i)))
        _finished, pending = await asyncio.wait(tasks, timeout=max(0.0, wall_end - clock())) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    frame = _table(ordered, arrival, deadline, budget_ms, example, sent, done, http_status, answers, errors, labels,
                   method)
    frame.attrs.update({"labels": labels is not None, "n_over_max_requests": len(checked) - len(capped),
                        "n_after_wall": len(capped) - n, "n_abandoned": int((frame["reason"] == "client_wall_limit").sum())})
    return frame


def _wire(value: Any) -> Any:
    """A raw input as JSON: text as is, an image as base64 of its uint8 bytes."""
    if isinstance(value, np.ndarray):
        return base64.b64encode(np.ascontiguousarray(value, dtype=np.uint8).tobytes()).decode("ascii")
    return value


def _table(ordered: pd.DataFrame, arrival: np.ndarray, deadline: np.ndarray, budget_ms: np.ndarray,
           example: np.ndarray, sent: np.ndarray,
           done: np.ndarray, http_status: np.ndarray, answers: list, errors: list, labels: np.ndarray | None,
           method: str) -> pd.DataFrame:
    n = len(ordered)
    latency = (done - arrival) * 1000.0
    rows = []
    for i in range(n):
        a = answers[i]
        if a is None:
            reason = errors[i] or "client_wall_limit"
            rows.append(("dropped", None, None, "", reason, None, math.nan, math.nan, math.nan))
            continue
        outcome = a.get("outcome")
        label = a.get("label")
        if label is None:  # shed or dropped by the server: no model answer
            status = STATUS_OF.get(outcome, "dropped")
        elif latency[i] <= deadline[i]:
            status = "degraded" if outcome == "degraded" else "served"
        else:
            status = "late"
        rows.append((status, a.get("config_id"), label, outcome, a.get("reason"), a.get("config_id"),
                     float(a.get("queue_ms", math.nan)), float(a.get("service_ms", math.nan)),
                     float(a.get("latency_ms", math.nan))))
    status, config, label, server_outcome, reason, _, queue_ms, service_ms, server_latency = (list(c) for c in zip(*rows))
    status = np.asarray(status, dtype=object)
    answered = np.isin(status, ["served", "late", "degraded"])
    label_arr = np.array([-1 if v is None else int(v) for v in label], dtype=np.int64)
    correct = answered & (label_arr == labels[example]) if labels is not None else np.zeros(n, dtype=bool)
    finish = np.where(answered | np.isin(status, ["shed"]), done, np.nan)
    service_s = np.nan_to_num(np.asarray(service_ms, dtype=float)) / 1000.0
    frame = pd.DataFrame({
        "request_id": ordered["request_id"].to_numpy(), "method": method,
        "config_id": pd.Series(config, dtype=object).where(answered, None),
        "start_s": np.where(answered, finish - service_s, finish), "finish_s": finish,
        "latency_ms": np.where(np.isnan(finish), np.nan, latency), "status": status,
        "hit": np.isin(status, ["served", "degraded"]), "correct": correct,
        "arrival_s": arrival, "deadline_ms": deadline, "example_id": example,
        "sent_lag_ms": (sent - arrival) * 1000.0, "http_status": http_status, "server_outcome": server_outcome,
        "reason": reason, "label": label_arr, "queue_ms": queue_ms, "service_ms": service_ms,
        "server_latency_ms": server_latency, "budget_ms": budget_ms,
    })
    assert list(frame.columns) == [*REQUEST_RESULT_COLUMNS, *CLIENT_COLUMNS]
    return frame.sort_values("request_id", kind="stable").reset_index(drop=True)
