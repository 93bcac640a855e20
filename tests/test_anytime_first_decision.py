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
