"""Dask as the engine that runs the evaluation's cells in parallel (this project has no scheduler of its own).

:class:`DaskPool` is a Dask client started on first use: either a ``LocalCluster`` of worker
processes bound to 127.0.0.1 only (one thread each, so a worker runs one cell at a time and its
timings stay comparable), or a connection to a cluster that already runs (``tcp://HOST:PORT``,
started elsewhere with ``dask scheduler`` and ``dask worker``). :func:`stream` ships one shared
object (the profile bundle) to every worker once, submits one task per item and yields the results
as they finish, in completion order; the caller writes them down, so the caller decides what a
killed run keeps. :func:`workers_needed` turns a measured per-cell cost into a cluster size.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

import pandas as pd

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

LOCALHOST = "127.0.0.1"  # a local cluster never listens on another interface
Item = TypeVar("Item")


def default_workers() -> int:
    """Worker processes for a local cluster: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class DaskPool:
    """A Dask client, started on first use and closed by :meth:`close` (or ``with``).

    ``scheduler`` (``tcp://HOST:PORT``) connects to an existing cluster, which stays up on close;
    otherwise ``workers`` processes (default: the cores) form a ``LocalCluster`` on 127.0.0.1
    that :meth:`close` shuts down. The dashboard link is announced when the client starts.
    """

    def __init__(self, workers: int | None = None, scheduler: str | None = None, dashboard_port: int = 8787,
                 connect_timeout_s: float = 30.0, announce: Callable[[str], None] | None = print):
        if scheduler is None and workers is not None and workers < 1:
            raise ValueError(f"a local Dask cluster needs workers >= 1, got {workers} (0 means: run serially, no pool)")
        if scheduler is not None and "://" not in scheduler:
            raise ValueError(f"scheduler address must look like tcp://HOST:PORT, got {scheduler!r}")
        self.workers = default_workers() if workers is None else int(workers)
        self.scheduler = scheduler
        self.dashboard_port = int(dashboard_port)
        self.connect_timeout_s = float(connect_timeout_s)
        self._announce = announce or (lambda _: None)
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> Client:
        """The client (starting the local cluster or connecting on the first call)."""
        if self._client is None:
            self._client = self._start()
        return self._client

    def _start(self) -> Client:
        # distributed (about a second to import) loads when a pool starts, not with every import of the grid
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            try:
                client = Client(self.scheduler, timeout=f"{self.connect_timeout_s}s", set_as_default=False)
            except OSError as exc:
                raise RuntimeError(f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None
            where = f"the Dask cluster at {self.scheduler} ({len(client.scheduler_info()['workers'])} workers)"
        else:
            start = time.perf_counter()
            self._cluster = LocalCluster(n_workers=self.workers, processes=True, threads_per_worker=1, host=LOCALHOST,
                                         dashboard_address=f"{LOCALHOST}:{self.dashboard_port}",
                                         worker_dashboard_address=f"{LOCALHOST}:0")
            try:
                client = Client(self._cluster, set_as_default=False)
            except BaseException:
                self._cluster.close()
                self._cluster = None
                raise
            where = f"a local Dask cluster of {self.workers} worker processes ({time.perf_counter() - start:.1f} s to start)"
        dashboard = client.dashboard_link if importlib.util.find_spec("bokeh") else "none (install bokeh to get one)"
        self._announce(f"running on {where}; dashboard: {dashboard}")
        return client

    def close(self) -> None:
        """Close the client and a local cluster this pool started (an existing cluster stays up)."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def __enter__(self) -> "DaskPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream(client: Client, fn: Callable[..., Any], shared: Any, items: Iterable[Item], *args: Any,
           **kwargs: Any) -> Iterator[tuple[Item, Any]]:
    """``(item, fn(shared, item, *args, **kwargs))`` for every item, in the order the tasks finish.

    ``shared`` is sent to every worker once (scattered, broadcast), not with each task. ``fn`` must be
    a module-level function (workers import it by name). A task that raises re-raises here; tasks not
    yet collected are cancelled when the caller stops iterating or fails.
    """
    from distributed import as_completed

    items = list(items)
    if not items:
        return
    handle = client.scatter(shared, broadcast=True, hash=False)
    futures = {client.submit(fn, handle, item, *args, pure=False, **kwargs): i for i, item in enumerate(items)}
    try:
        for future in as_completed(futures, loop=client.loop):
            result = future.result()
            yield items[futures[future]], result
            future.release()
    finally:
        client.cancel(list(futures))
        handle.release()


def _noop(i: int) -> int:
    return i


def task_overhead(client: Client, n_tasks: int = 200) -> dict[str, float]:
    """Scheduling cost of trivial tasks on ``client``'s cluster (seconds per task).

    ``throughput_s``: wall time of ``n_tasks`` no-op tasks submitted at once, divided by their number
    (what a cell pays when the queue is full); ``round_trip_s``: the median of 20 single
    submit-to-result round trips (what a lone task waits).
    """
    client.gather(client.map(_noop, range(10), pure=False))  # warm the connections
    start = time.perf_counter()
    client.gather(client.map(_noop, range(n_tasks), pure=False))
    throughput = (time.perf_counter() - start) / n_tasks
    trips = []
    for i in range(20):
        start = time.perf_counter()
        client.submit(_noop, i, pure=False).result()
        trips.append(time.perf_counter() - start)
    return {"throughput_s": throughput, "round_trip_s": sorted(trips)[len(trips) // 2]}


def workers_needed(n_cells: int, seconds_per_cell: float, budget_s: float = 600.0, overhead_s_per_cell: float = 0.0,
                   startup_s: float = 0.0, efficiency: float = 1.0) -> int:
    """Workers (one core each) that run ``n_cells`` cells within ``budget_s`` of wall time.

    Cells are the unit of work and never split, so the answer is at least 1 and never more than
    ``n_cells``; ``efficiency`` (measured speed-up / workers, <= 1) discounts what each added
    worker delivers, ``startup_s`` is paid once. Raises when one cell alone exceeds the budget.
    """
    if n_cells < 1 or not (seconds_per_cell > 0 and math.isfinite(seconds_per_cell)):
        raise ValueError(f"need n_cells >= 1 and a finite seconds_per_cell > 0, got {n_cells}, {seconds_per_cell}")
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency is a measured speed-up per worker in (0, 1], got {efficiency}")
    per_cell = seconds_per_cell + overhead_s_per_cell
    left = budget_s - startup_s
    if per_cell > left:
        raise ValueError(f"one cell takes {per_cell:.1f} s, more than the {left:.1f} s left of the budget")
    return min(n_cells, max(1, math.ceil(n_cells * per_cell / (left * efficiency))))


def size_from_benchmark(bench: pd.DataFrame, n_cells: int, budget_s: float = 600.0) -> dict[str, float]:
    """The cluster that runs ``n_cells`` cells in ``budget_s``, from ``benchmarks/bench_dask.py``'s table.

    Per-cell cost: the mean cell time with one worker; efficiency: the speed-up per worker at the
    largest worker count measured (assumed to hold for more workers); per-cell scheduling cost and
    start-up time: measured at that count. Returns those numbers and ``workers`` (one core each).
    """
    missing = [c for c in ("workers", "cell_s_mean", "speedup", "task_throughput_ms", "start_s") if c not in bench]
    if missing:
        raise ValueError(f"not a bench_dask table: missing column(s) {missing}")
    if not (bench["workers"] == 1).any():
        raise ValueError(f"the bench_dask table has no 1-worker row (workers: {sorted(bench['workers'])})")
    one = bench[bench["workers"] == 1].iloc[0]
    most = bench.loc[bench["workers"].idxmax()]
    efficiency = float(min(1.0, most["speedup"] / most["workers"]))
    per_cell = float(one["cell_s_mean"])
    overhead = float(most["task_throughput_ms"]) / 1000.0
    workers = workers_needed(n_cells, per_cell, budget_s, overhead, float(most["start_s"]), efficiency)
    return {"n_cells": n_cells, "seconds_per_cell": per_cell, "efficiency": efficiency,
            "overhead_s_per_cell": overhead, "startup_s": float(most["start_s"]),
            "cpu_hours": n_cells * per_cell / 3600.0, "workers": workers}
