"""Dask, the engine behind the project's parallel work (it has no scheduler of its own).

:class:`DaskPool` is a Dask client started on first use: either a ``LocalCluster`` of worker
processes bound to 127.0.0.1 only (one thread each, so a worker runs one task at a time and its
timings stay comparable), or a connection to a cluster that already runs (``tcp://HOST:PORT``,
started elsewhere with ``dask scheduler`` and ``dask worker``). :func:`stream` ships one shared
object to every worker once, submits one task per item and yields the results as they finish (the
evaluation grid's cells); :func:`once_per_host` runs one task on each machine of the cluster (the
profiling sweep, which must run alone on its machine to time cleanly). It sits at the bottom layer
so that both the profiler and the evaluation use it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

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


def hosts(client: Client) -> dict[str, str]:
    """One worker per machine of ``client``'s cluster: ``{host: worker address}``.

    Workers are grouped by the host the scheduler sees them on; each host's worker is the lowest
    address, so a rerun on the same cluster picks the same one. Raises when the cluster has no worker.
    """
    workers = client.scheduler_info()["workers"]
    if not workers:
        raise RuntimeError(f"the Dask cluster at {client.scheduler.address} has no workers")
    chosen: dict[str, str] = {}
    for address, info in sorted(workers.items()):
        chosen.setdefault(str(info.get("host") or address), address)
    return chosen


def once_per_host(client: Client, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``{host: fn(*args, **kwargs)}``, run by exactly one worker on each machine of the cluster.

    Each task is pinned to its worker (never moved to another, never cached), so machines run their
    task side by side while within one machine nothing else of this call runs. ``fn`` must be a
    module-level function. A task that raises re-raises here, after the others were cancelled.
    """
    chosen = hosts(client)
    futures = {host: client.submit(fn, *args, workers=[address], allow_other_workers=False, pure=False, **kwargs)
               for host, address in chosen.items()}
    try:
        results = client.gather(list(futures.values()))
    finally:
        client.cancel(list(futures.values()))
    return dict(zip(futures, results))
