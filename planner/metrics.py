"""One registry of metric names, so the simulator, statistics, plots and book name a metric once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    unit: str = ""
    description: str = ""


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("hit_rate", "Deadline hit-rate", True, "", "fraction of requests finished by their deadline (SLO attainment)"),
        Metric("accuracy", "Accuracy (served)", True, "", "fraction correct among served requests"),
        Metric("effective_accuracy", "Effective accuracy", True, "", "fraction of all requests both correct and on time"),
        Metric("lat_p50_ms", "p50 latency", False, "ms", "median end-to-end latency"),
        Metric("lat_p95_ms", "p95 latency", False, "ms", "95th percentile end-to-end latency"),
        Metric("lat_p99_ms", "p99 latency", False, "ms", "99th percentile end-to-end latency"),
        Metric("throughput_rps", "Throughput", True, "req/s", "served requests per second of simulated time"),
        Metric("n_late", "Late requests", False, "", "requests served after their deadline"),
        Metric("n_dropped", "Dropped requests", False, "", "requests never started (expired in the queue)"),
        Metric("n_shed", "Shed requests", False, "", "requests refused at once by admission control"),
        Metric("n_degraded", "Early answers", False, "", "cascade first-stage answers sent on time instead of a late second stage"),
        Metric("late_rate", "Late fraction", False, "", "requests answered after their deadline, over all requests"),
        Metric("cpu_s_per_request", "CPU-seconds per request", False, "s", "busy server time divided by requests"),
        Metric("hypervolume", "Hypervolume", True, "", "area dominated by a latency/accuracy front"),
    ]
}


# metrics each simulated or live run reports (hypervolume belongs to a set of runs, not to one)
RUN_METRICS: list[str] = [m for m in METRICS if m != "hypervolume"]


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    return METRICS[name]
