"""The deadline a client sends the server: its own less the path the server cannot see."""

import math

import pytest

from planner.serving.budget import MIN_BUDGET_SHARE, BudgetError, DeadlineBudget


def test_before_any_answer_the_whole_deadline_goes_out():
    assert DeadlineBudget().budget_ms(8.0) == 8.0


def test_the_deadline_is_sent_less_the_paths_median():
    budget = DeadlineBudget(quantile=0.5, window=8)
    for client_ms, server_ms in [(3.0, 2.0), (4.5, 2.5), (9.0, 6.0)]:  # paths 1, 2 and 3 ms
        budget.observe(client_ms, server_ms)
    assert budget.path_ms == pytest.approx(2.0)
    assert budget.budget_ms(8.0) == pytest.approx(6.0)


def test_a_path_that_slows_is_followed_within_one_window():
    budget = DeadlineBudget(quantile=0.5, window=4)
    for _ in range(4):
        budget.observe(2.0, 1.0)
    assert budget.path_ms == pytest.approx(1.0)
    for _ in range(4):  # the path now costs 3 ms: the old answers have left the window
        budget.observe(5.0, 2.0)
    assert budget.path_ms == pytest.approx(3.0)


def test_a_hopeless_request_still_goes_out_with_a_positive_deadline():
    budget = DeadlineBudget()
    budget.observe(12.0, 1.0)  # the path takes 11 ms, more than a 3 ms deadline
    assert budget.budget_ms(3.0) == pytest.approx(MIN_BUDGET_SHARE * 3.0)
    assert budget.budget_ms(3.0) > 0


def test_unusable_answers_teach_nothing_and_clock_rounding_counts_as_no_path():
    budget = DeadlineBudget()
    for client_ms, server_ms in [(math.nan, 1.0), (2.0, None), (2.0, "x"), (math.inf, 1.0)]:
        budget.observe(client_ms, server_ms)
    assert budget.n_observed == 0 and budget.budget_ms(5.0) == 5.0
    budget.observe(1.0, 1.0000001)
    assert budget.path_ms == 0.0 and budget.budget_ms(5.0) == 5.0


@pytest.mark.parametrize("kwargs", [{"quantile": 1.0}, {"quantile": -0.1}, {"quantile": True}, {"window": 0},
                                    {"window": 2.5}])
def test_bad_settings_are_refused_with_their_name(kwargs):
    with pytest.raises(BudgetError, match=next(iter(kwargs))):
        DeadlineBudget(**kwargs)


def test_the_loadgen_command_takes_a_path_quantile_or_none_and_refuses_anything_else(capsys):
    from planner.cli import build_parser

    parser = build_parser()
    base = ["loadgen", "--task", "sst2", "--qps", "50", "--deadline-ms", "20"]
    assert parser.parse_args(base).path_quantile is None
    assert parser.parse_args([*base, "--path-quantile", "none"]).path_quantile is None
    assert parser.parse_args([*base, "--path-quantile", "0.5"]).path_quantile == 0.5
    assert parser.parse_args([*base, "--path-quantile", "0.9"]).path_quantile == 0.9
    for bad in ("1", "-0.5", "median"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--path-quantile", bad])
        assert "quantile in [0, 1) or 'none'" in capsys.readouterr().err
