"""The method chapter's decision-cost sentence judges each machine's row against the budget."""

from __future__ import annotations

import pandas as pd

from planner.analysis import results


def _row(median_us: float, select_us: float, cpu: str) -> pd.DataFrame:
    return pd.DataFrame([{"configs": 300, "front": 45, "waiting": 64, "anytime_median_us": median_us,
                          "anytime_p95_us": 2 * median_us, "select_median_us": select_us,
                          "ratio_anytime_over_select": median_us / select_us,
                          "anytime_switch_cost_median_us": median_us, "ratio_switch_cost_over_select": median_us / select_us,
                          "cpu_model": cpu, "python": "3.11.7", "measured_at": "2026-12-04T00:00:00"}])


def test_a_slow_machine_is_over_the_budget_and_a_fast_one_within_it(tmp_path):
    _row(40.6, 1.52, "AMD EPYC").to_csv(tmp_path / results.DECISION_CSV, index=False)
    text = results.decision_text(tmp_path)
    assert "40.6 µs" in text and "27 times" in text and f"over the {results.DECISION_BUDGET_US:g} µs budget" in text
    assert "GPU machine" not in text
    # a row that records the CPU's vector extensions names them (one host model name, with or without AVX-512)
    _row(30.0, 1.5, "AMD EPYC").assign(cpu_flags="avx2").to_csv(tmp_path / results.DECISION_CSV, index=False)
    assert "30.0 µs on this CPU (AMD EPYC; avx2) on 2026-12-04" in results.decision_text(tmp_path)
    _row(19.3, 1.4, "AMD EPYC").to_csv(tmp_path / results.DECISION_CSV, index=False)
    assert f"within the {results.DECISION_BUDGET_US:g} µs budget" in results.decision_text(tmp_path)
    _row(11.6, 0.42, "Intel Xeon").to_csv(tmp_path / results.OTHER_DECISION_CSV, index=False)
    text = results.decision_text(tmp_path)
    assert "Intel Xeon" in text and "11.6 µs" in text and "within the budget there" in text


def test_the_gap_reading_decision_is_reported_and_judged_too(tmp_path):
    _row(12.0, 0.5, "AMD EPYC").assign(anytime_gaps_median_us=23.4, anytime_gaps_p95_us=80.0,
                                       ratio_gaps_over_select=46.8).to_csv(tmp_path / results.DECISION_CSV, index=False)
    text = results.decision_text(tmp_path)
    assert "reading the recent gaps" in text and "23.4 µs (47 times; p95 80.0 µs)" in text
    assert f"over the {results.DECISION_BUDGET_US:g} µs budget" in text   # the slower of the two is judged


def test_without_a_benchmark_the_chapter_says_so(tmp_path):
    assert "has not been run" in results.decision_text(tmp_path)
