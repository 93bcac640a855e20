"""Execute every notebook and build the book on a synthetic results folder (opt-in: minutes, not seconds).

``make test`` already executes every notebook on the real quick preset; this variant needs no trained
models, so the notebooks and the book can be checked while the upstream stages are being built:
``PLANNER_NOTEBOOK_TESTS=1 .venv/bin/pytest -q tests/test_notebooks_synthetic.py``. The synthetic
folder lives in a temporary PLANNER_RESULTS_DIR and is never reported as a measurement.
"""

from __future__ import annotations

import os

import nbformat
import pytest

from planner.report import book as report

pytestmark = pytest.mark.skipif(os.environ.get("PLANNER_NOTEBOOK_TESTS") != "1",
                                reason="opt-in (minutes): set PLANNER_NOTEBOOK_TESTS=1; "
                                       "make test checks the notebooks on the real quick preset")


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory):
    from fake_results import write_fake_results

    root = tmp_path_factory.mktemp("results")
    old = os.environ.get("PLANNER_RESULTS_DIR")
    os.environ["PLANNER_RESULTS_DIR"] = str(root)
    write_fake_results(root, "quick")
    yield root / "quick"
    if old is None:
        os.environ.pop("PLANNER_RESULTS_DIR", None)
    else:
        os.environ["PLANNER_RESULTS_DIR"] = old


def test_notebooks_execute_and_book_builds(fake_results):
    runs = report.execute_all("quick", progress=False)
    assert {r.status for r in runs} == {"executed"}
    for r in runs:
        nb = nbformat.read(r.output, as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, f"{r.name}: error outputs"
    again = report.execute_all("quick", progress=False)
    assert {r.status for r in again} == {"skipped"}, "up-to-date notebooks must not re-run"
    figures = list((fake_results / "figures").glob("*.png"))
    assert len(figures) >= 12, f"expected at least 12 figures, got {sorted(f.name for f in figures)}"
    index = report.build_book("quick")
    assert index.exists()
