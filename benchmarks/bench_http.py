"""Per-request overhead of the web stacks the server could run on, side by side in one run.

Run: ``nice -n 5 .venv/bin/python benchmarks/bench_http.py [--requests 2000] [--rounds 5]
[--out results/full/benchmarks/http_stacks.csv]``.

Each stack serves the same no-op ``POST /v1/predict`` (parse the small JSON body, answer a small
JSON object) from its own process on 127.0.0.1; one client process (``httpx.Client``, one
keep-alive connection) sends ``--requests`` sequential requests per stack per round, the stacks
interleaved round by round (in a rotating order) so a neighbour's load falls on all of them alike.
What differs between stacks is only the server side: parsing, routing, the response and the event
loop. Stacks:

- ``fastapi-model``: FastAPI with a pydantic body model (how FastAPI is usually written);
- ``fastapi-raw``: FastAPI reading the raw body (the planner's server validates the body itself,
  to name each problem);
- ``starlette``: a bare Starlette route (FastAPI's base), same handler;
- ``stdlib``: ``http.server.ThreadingHTTPServer`` with HTTP/1.1 keep-alive and Nagle off, no
  framework at all (what :mod:`planner.serving.server` runs on, chosen by this measurement).

``--concurrency`` (default 32) also measures requests/s with that many requests always in flight
from the trace client's asyncio HTTP client (what an open-loop load generator does; the stdlib
server then needs one thread per connection). The three ASGI stacks run on uvicorn (h11, asyncio: no httptools/uvloop installed here). The
ratio column is each stack's median round trip over the fastest stack's.

``--clients`` measures the other side: the trace client's two async HTTP clients
(:func:`planner.serving.clients.http_client`: ``httpx`` and the asyncio-stream client) against the
Starlette server, at concurrency 1 and ``--concurrency`` (e.g. ``--out .../http_clients.csv``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

STACKS = ("fastapi-model", "fastapi-raw", "starlette", "stdlib")
BODY = json.dumps({"example_id": 7, "deadline_ms": 50.0}).encode()
ANSWER = {"label": 1, "confidence": 0.9, "config_id": "noop", "outcome": "on_time", "reason": "ok",
          "queue_ms": 0.0, "service_ms": 0.0}


# ---------------------------------------------------------------- the servers (child processes)

class Predict(BaseModel):
    example_id: int
    deadline_ms: float


def _asgi_app(stack: str):
    async def raw(request: Request) -> JSONResponse:
        payload = json.loads(await request.body())
        return JSONResponse({**ANSWER, "label": int(payload["example_id"]) % 2})

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    if stack == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(routes=[Route("/v1/predict", raw, methods=["POST"]), Route("/healthz", healthz)])
    from fastapi import FastAPI

    app = FastAPI()
    app.get("/healthz")(healthz)
    if stack == "fastapi-raw":
        app.post("/v1/predict")(raw)
        return app

    @app.post("/v1/predict")
    async def predict(body: Predict) -> dict:
        return {**ANSWER, "label": body.example_id % 2}

    return app


def _stdlib_server(port: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: without it, 40 ms delayed ACKs

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._send(json.dumps({**ANSWER, "label": int(payload["example_id"]) % 2}).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802
            self._send(b"ok", "text/plain")

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024  # the default backlog of 5 resets concurrent connects
        daemon_threads = True

    Server(("127.0.0.1", port), Handler).serve_forever()


def serve(stack: str, port: int) -> None:
    if stack == "stdlib":
        _stdlib_server(port)
        return
    import uvicorn

    uvicorn.run(_asgi_app(stack), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- the client (this process)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(stack: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", stack, "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{stack} did not start within 30 s")


def measure(url: str, n: int) -> np.ndarray:
    """Round-trip times (us) of ``n`` sequential requests over one keep-alive connection."""
    import httpx

    out = np.empty(n)
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for _ in range(50):  # warm the connection and the server's code paths
            client.post("/v1/predict", content=BODY, headers=headers)
        for i in range(n):
            t0 = time.perf_counter()
            r = client.post("/v1/predict", content=BODY, headers=headers)
            out[i] = (time.perf_counter() - t0) * 1e6
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
    return out


def measure_concurrent(url: str, n: int, concurrency: int) -> tuple[float, np.ndarray]:
    """Requests/s and round trips (us) with ``concurrency`` requests always in flight, sent by the
    trace client's asyncio HTTP client (httpx's async pool is slower than every server here: ``--clients``)."""
    return measure_client(url, "stream", n, concurrency)


def measure_client(url: str, kind: str, n: int, concurrency: int) -> tuple[float, np.ndarray]:
    """Requests/s and round trips (us) of the trace client's HTTP clients (planner.serving.clients)."""
    import asyncio

    from planner.serving.clients import http_client

    payload = json.loads(BODY)

    async def main() -> tuple[float, np.ndarray]:
        out: list[float] = []
        async with http_client(url, kind, max_connections=concurrency) as client:
            async def stream(k: int) -> None:
                for _ in range(k):
                    t0 = time.perf_counter()
                    status, _ = await client.post("/v1/predict", payload)
                    out.append((time.perf_counter() - t0) * 1e6)
                    if status != 200:
                        raise RuntimeError(f"{url}: HTTP {status}")
            await asyncio.gather(*(stream(5) for _ in range(concurrency)))
            out.clear()
            t0 = time.perf_counter()
            await asyncio.gather(*(stream(n // concurrency) for _ in range(concurrency)))
            wall = time.perf_counter() - t0
        return len(out) / wall, np.asarray(out)

    return asyncio.run(main())


def run_clients(n: int, rounds: int, levels: list[int]) -> pd.DataFrame:
    """The two async clients against the Starlette server, at each concurrency level, interleaved."""
    proc, url = start("starlette")
    results: dict[tuple[str, int], list] = {}
    try:
        for r in range(rounds):
            for kind in (("httpx", "stream") if r % 2 == 0 else ("stream", "httpx")):
                for c in levels:
                    results.setdefault((kind, c), []).append(measure_client(url, kind, n, c))
    finally:
        proc.terminate()
        proc.wait(10)
    rows = [{"client": kind, "concurrency": c, "rps": float(np.median([v for v, _ in got])),
             "p50_us": float(np.median(np.concatenate([t for _, t in got]))),
             "p95_us": float(np.percentile(np.concatenate([t for _, t in got]), 95)),
             "loadavg_1m": os.getloadavg()[0], "cpu_count": os.cpu_count()}
            for (kind, c), got in sorted(results.items())]
    return pd.DataFrame(rows)


def run(stacks: list[str], n: int, rounds: int, concurrency: int) -> pd.DataFrame:
    servers = {s: start(s) for s in stacks}
    times: dict[str, list[np.ndarray]] = {s: [] for s in stacks}
    rps: dict[str, list[float]] = {s: [] for s in stacks}
    conc: dict[str, list[np.ndarray]] = {s: [] for s in stacks}
    load_before = os.getloadavg()[0]
    try:
        for r in range(rounds):
            order = stacks[r % len(stacks):] + stacks[: r % len(stacks)]
            for s in order:
                times[s].append(measure(servers[s][1], n))
                if concurrency > 1:
                    value, lat = measure_concurrent(servers[s][1], n, concurrency)
                    rps[s].append(value)
                    conc[s].append(lat)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    rows = []
    for s in stacks:
        t = np.concatenate(times[s])
        rows.append({"stack": s, "n_requests": len(t), "p50_us": float(np.median(t)),
                     "p95_us": float(np.percentile(t, 95)), "mean_us": float(t.mean()),
                     "round_p50_min_us": float(min(np.median(x) for x in times[s])),
                     "round_p50_max_us": float(max(np.median(x) for x in times[s])),
                     "concurrency": concurrency,
                     "conc_rps": float(np.median(rps[s])) if rps[s] else np.nan,
                     "conc_p50_us": float(np.median(np.concatenate(conc[s]))) if conc[s] else np.nan,
                     "conc_p95_us": float(np.percentile(np.concatenate(conc[s]), 95)) if conc[s] else np.nan})
    table = pd.DataFrame(rows)
    table["ratio_p50"] = table["p50_us"] / table["p50_us"].min()
    table["loadavg_1m_before"] = load_before
    table["loadavg_1m_after"] = os.getloadavg()[0]
    table["cpu_count"] = os.cpu_count()
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stacks", nargs="+", choices=STACKS, default=list(STACKS))
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per stack per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32,
                        help="also measure requests/s with this many in flight (async client; 1: skip)")
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (e.g. results/full/benchmarks/http_stacks.csv)")
    parser.add_argument("--clients", action="store_true",
                        help="instead: the trace client's two async HTTP clients (httpx, stream) against Starlette "
                             "at concurrency 1 and --concurrency")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.clients:
        table = run_clients(args.requests, args.rounds, sorted({1, args.concurrency}))
    else:
        table = run(list(args.stacks), args.requests, args.rounds, args.concurrency)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
