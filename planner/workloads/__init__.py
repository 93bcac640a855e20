"""Request traces: seeded arrival generators (``generators``) and their description (``analyze``)."""

from planner.workloads.analyze import analyze, analyze_traces
from planner.workloads.rates import rate_for_load
from planner.workloads.generators import (
    GENERATORS, MAX_REPLAY_INVOCATIONS, TRACE_KINDS, WorkloadError, azure, capacity_rps, class_deadlines, example_pool,
    gamma, make_frame, make_trace, mmpp, poisson, rate_sweep, read_arrivals_ms, read_azure_counts, spec_trace, spike,
    twitter, workload_class,
)

__all__ = [
    "GENERATORS", "MAX_REPLAY_INVOCATIONS", "TRACE_KINDS", "WorkloadError", "analyze", "analyze_traces", "azure",
    "capacity_rps", "class_deadlines", "example_pool", "gamma", "make_frame", "make_trace", "mmpp", "poisson", "rate_for_load", "rate_sweep",
    "read_arrivals_ms", "read_azure_counts", "spec_trace", "spike", "twitter", "workload_class",
]
