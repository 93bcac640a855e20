"""The anytime policy's first decision costs what the others cost: fitting it loads the compiled kernel."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# a fresh interpreter: in this one another test may have run the kernel already
SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from bundles import synthetic_bundle
    from planner.plan.anytime import anytime
    from planner.plan.anytime_kernel import best_candidate
    from planner.plan.policies import PolicyContext
    import numpy as np

    assert not best_candidate.signatures, "the kernel ran before any policy was fitted"
    policy = anytime(synthetic_bundle(n_configs=12, seed=3), "sst2")
    loaded = list(best_candidate.signatures)
    assert loaded, "fit did not load the kernel"
    for rate, slacks in ((0.0, [30.0]), (50.0, [30.0, 12.0, 80.0])):  # with and without expected arrivals
        ctx = PolicyContext(0.0, "sst2", len(slacks), slacks[0], 30.0, 0, 1, 1, rate, np.array(slacks))
        policy(ctx)
        policy.observe(policy(ctx), 1, 5.0)
    print(len(loaded), len(best_candidate.signatures))
""")


def test_fitting_loads_the_kernel_so_no_decision_compiles_it():
    """Behind the HTTP server the first decision compiled the kernel (150-230 ms), which the estimator
    took for a service time 50x the profile's: the policy then shed the next 30 requests."""
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=str(Path(__file__).parent))],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, after = out.stdout.split()
    assert loaded == after  # the decisions found the kernel ready: no new compilation


def test_loading_the_kernel_leaves_no_table_behind(monkeypatch):
    """The warm call at fit must not seed a table a later decision reads: the finish times of a
    one-request window are built from the per-item time learned by then, not from fit's prior."""
    import numpy as np

    from bundles import synthetic_bundle
    from planner.plan.anytime import AnytimePolicy, anytime
    from planner.plan.policies import PolicyContext

    bundle = synthetic_bundle(n_configs=12, seed=3)
    warmed = anytime(bundle, "sst2")
    monkeypatch.setattr(AnytimePolicy, "_load_kernel", lambda self: None)
    plain = anytime(bundle, "sst2")
    for policy in (warmed, plain):  # a batch served before the first one-request window
        policy.observe(policy._ids[0], 4, 40.0 * policy._reference[policy._ids[0]])
    np.testing.assert_array_equal(warmed._continuation_latency(1, 1), plain._continuation_latency(1, 1))
    for slack in (1.0, 10.0, 100.0):
        ctx = PolicyContext(0.0, "sst2", 1, slack, slack, 0, 1, 1, 20.0, np.array([slack]))
        assert warmed(ctx) == plain(ctx)
