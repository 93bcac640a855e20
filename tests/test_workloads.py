"""Trace generators: schema, seeding, the statistics each one promises, and the analyzer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner import config, workloads
from bundles import synthetic_bundle
from planner.workloads import WorkloadError, analyze

# A synthetic file in the Azure Functions 2019 invocations_per_function format (HashOwner, HashApp,
# HashFunction, Trigger, 1..1440), made for these tests: an http function with a diurnal Poisson
# profile and a +120/min burst in minutes 601-610, a queue function, and a timer firing every 5 min.
AZURE = Path(__file__).parent / "fixtures" / "azure_functions_2019_tiny.csv"
# Synthetic stand-ins (same format) for data/traces/twitter_{a,b}.txt: 2,000 and 600 requests with
# bursty gaps (see tests/fixtures/data/traces/PROVENANCE.md); the real traces never enter git.
TWITTER_A = Path(__file__).parent / "fixtures" / "data" / "traces" / "twitter_a.txt"

KINDS = {"poisson": {}, "gamma": {"cv": 4}, "mmpp": {}, "spike": {}}


@pytest.mark.parametrize("kind", KINDS)
def test_schema_seeding_and_mean_rate(kind):
    trace = workloads.make_trace(kind, 200.0, 20_000, 5.0, 300, seed=42, **KINDS[kind])
    assert list(trace.columns) == ["request_id", "arrival_s", "deadline_ms", "example_id", "workload", "seed"]
    assert trace["request_id"].tolist() == list(range(20_000))
    assert trace["arrival_s"].is_monotonic_increasing and (trace["arrival_s"] > 0).all()
    assert trace["example_id"].between(0, 299).all() and trace["example_id"].nunique() == 300
    assert (trace["deadline_ms"] == 5.0).all() and (trace["seed"] == 42).all()
    again = workloads.make_trace(kind, 200.0, 20_000, 5.0, 300, seed=42, **KINDS[kind])
    other = workloads.make_trace(kind, 200.0, 20_000, 5.0, 300, seed=43, **KINDS[kind])
    pd.testing.assert_frame_equal(trace, again)
    assert not np.allclose(trace["arrival_s"], other["arrival_s"])
    if kind != "spike":  # the spike adds load on top of the base rate
        assert analyze(trace)["rate_rps"] == pytest.approx(200.0, rel=0.1)


def test_example_ids_do_not_depend_on_arrivals():
    """Arrivals and example ids use independent streams: same ids whatever the arrival process."""
    a = workloads.poisson(100.0, 500, 5.0, 50, seed=1)
    b = workloads.gamma(900.0, 500, 5.0, 50, seed=1, cv=8)
    assert a["example_id"].tolist() == b["example_id"].tolist()


@pytest.mark.parametrize("cv", [2, 4, 8])
def test_gamma_cv_and_burstiness(cv):
    stats = analyze(workloads.gamma(50.0, 200_000, 5.0, 10, seed=3, cv=cv))
    assert stats["cv"] == pytest.approx(cv, rel=0.12)
    assert stats["burstiness"] == pytest.approx((cv - 1) / (cv + 1), abs=0.05)
    assert stats["idc"] > 2


def test_poisson_statistics():
    stats = analyze(workloads.poisson(50.0, 200_000, 5.0, 10, seed=3))
    assert stats["cv"] == pytest.approx(1.0, abs=0.02)
    assert abs(stats["burstiness"]) < 0.02
    assert stats["idc"] == pytest.approx(1.0, abs=0.1)


def test_mmpp_rate_split_and_clustering():
    trace = workloads.mmpp(100.0, 200_000, 5.0, 10, seed=5, peak_ratio=6.0, high_share=0.25, mean_high_s=2.0)
    stats = analyze(trace)
    assert stats["rate_rps"] == pytest.approx(100.0, rel=0.08)
    assert stats["idc"] > 5  # modulation clusters arrivals far beyond Poisson
    # per-second counts are bimodal: low state 100/(0.75+1.5)=44.4/s, high 266.7/s
    counts = np.bincount(trace["arrival_s"].astype(int))
    assert np.percentile(counts, 25) < 70 and np.percentile(counts, 95) > 200


def test_spike_window_rate():
    trace = workloads.spike(100.0, 50_000, 5.0, 10, seed=2, factor=5.0, start_s=100.0, duration_s=50.0)
    t = trace["arrival_s"]
    inside = ((t >= 100) & (t < 150)).sum() / 50.0
    before = (t < 100).sum() / 100.0
    assert before == pytest.approx(100.0, rel=0.1)
    assert inside == pytest.approx(500.0, rel=0.1)
    starts_at_zero = workloads.spike(100.0, 5_000, 5.0, 10, seed=2, factor=5.0, start_s=0.0, duration_s=5.0)
    assert ((starts_at_zero["arrival_s"] < 5).sum() / 5.0) == pytest.approx(500.0, rel=0.15)


def test_rate_sweep_is_a_fraction_of_capacity():
    bundle = synthetic_bundle(n_configs=6)
    cid = bundle.profiles["config_id"].iloc[2]
    capacity = float(bundle.profiles["throughput_items_s"].iloc[2])
    assert workloads.capacity_rps(bundle.profiles, cid, servers=2) == pytest.approx(2 * capacity)
    sweep = workloads.rate_sweep("poisson", [0.25, 0.5, 0.9], bundle.profiles, cid, 20_000, 5.0, 100, seed=1)
    for fraction, trace in sweep.items():
        assert analyze(trace)["rate_rps"] == pytest.approx(fraction * capacity, rel=0.05)
        assert (trace["load"] == fraction).all()
    with pytest.raises(WorkloadError, match="not in the profiles"):
        workloads.capacity_rps(bundle.profiles, "nope")


def test_azure_replay_keeps_the_per_minute_profile():
    counts = workloads.read_azure_counts(AZURE, "fn-http")
    assert len(counts) == 1440 and counts[600:610].min() >= 120
    trace = workloads.azure(None, None, 50.0, 100, seed=0, path=AZURE, function="fn-http")
    assert len(trace) == counts.sum()
    per_minute = np.bincount((trace["arrival_s"] // 60).astype(int), minlength=1440)
    assert per_minute.tolist() == counts.tolist()
    # rescaled to a mean rate: same shape, compressed time
    fast = workloads.azure(500.0, None, 50.0, 100, seed=0, path=AZURE, function=0)
    assert analyze(fast)["rate_rps"] == pytest.approx(500.0, rel=0.05)
    assert analyze(fast)["idc"] > 3  # the burst and the diurnal swing survive the rescaling
    everything = workloads.read_azure_counts(AZURE)
    assert everything.sum() == sum(workloads.read_azure_counts(AZURE, i).sum() for i in range(3))
    assert len(workloads.azure(None, 100, 50.0, 100, seed=0, path=AZURE, function="fn-timer")) == 100


def test_azure_bad_files_are_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("HashOwner,HashApp,Trigger,1,2\na,b,http,1,2\n")
    with pytest.raises(WorkloadError, match="missing column.*HashFunction"):
        workloads.read_azure_counts(bad)
    bad.write_text("HashOwner,HashApp,HashFunction,Trigger,1,3\na,b,f,http,1,2\n")
    with pytest.raises(WorkloadError, match="minute columns must be 1..N"):
        workloads.read_azure_counts(bad)
    with pytest.raises(WorkloadError, match="no row with HashFunction 'zzz'"):
        workloads.read_azure_counts(AZURE, "zzz")
    with pytest.raises(WorkloadError, match="fewer than n"):
        workloads.azure(None, 10**6, 50.0, 10, seed=0, path=AZURE, function="fn-timer")
    with pytest.raises(WorkloadError, match="missing Azure"):
        workloads.read_azure_counts(tmp_path / "nope.csv")



def _azure_copy(tmp_path: Path, edit=None, insert: dict[int, str] | None = None) -> Path:
    """The fixture with ``edit(cells)`` applied to its first data row (fn-http, line 2) and extra lines
    inserted before the given 0-based line numbers."""
    lines = AZURE.read_text().splitlines()
    if edit is not None:
        cells = lines[1].split(",")
        edit(cells)
        lines[1] = ",".join(cells)
    for at, text in sorted((insert or {}).items(), reverse=True):
        lines.insert(at, text)
    path = tmp_path / "edited.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_azure_repeated_header_row_is_named_not_counted(tmp_path):
    header = AZURE.read_text().splitlines()[0]
    path = _azure_copy(tmp_path, insert={2: header})
    for function in (None, "fn-queue", 2):
        with pytest.raises(WorkloadError, match=r"edited\.csv: line 3 repeats the header row"):
            workloads.read_azure_counts(path, function)


def test_azure_parser_errors_name_the_file(tmp_path):
    path = _azure_copy(tmp_path, edit=lambda cells: cells.append("7"))  # line 2: one field too many
    with pytest.raises(WorkloadError, match=r"edited\.csv: the first data row has more fields"):
        workloads.read_azure_counts(path)
    path = _azure_copy(tmp_path, insert={3: AZURE.read_text().splitlines()[2] + ",7"})
    with pytest.raises(WorkloadError, match=r"edited\.csv: .*Expected 1444 fields in line 4, saw 1445"):
        workloads.read_azure_counts(path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(WorkloadError, match=r"empty\.csv"):
        workloads.read_azure_counts(empty)
    only_header = tmp_path / "header.csv"
    only_header.write_text(AZURE.read_text().splitlines()[0] + "\n")
    with pytest.raises(WorkloadError, match=r"header\.csv: no function rows"):
        workloads.read_azure_counts(only_header)


@pytest.mark.parametrize("value, problem", [
    ("four", "is not a number"), ("-3", "is negative"), ("2.5", "is not a whole number"),
    ("", "is missing"), ("inf", "is not finite"), ("1e12", "exceeds the cap"),
])
def test_azure_bad_counts_name_file_line_and_column(tmp_path, value, problem):
    def edit(cells):
        cells[4 + 16] = value  # minute column '17'
    path = _azure_copy(tmp_path, edit=edit, insert={2: ""})  # a blank line does not shift line numbers
    with pytest.raises(WorkloadError, match=rf"edited\.csv: line 2, column '17': count .* {problem}"):
        workloads.read_azure_counts(path, "fn-timer")
    with pytest.raises(WorkloadError, match=rf"edited\.csv: line 2, column '17'"):
        workloads.azure(None, 10, 50.0, 10, seed=0, path=path)


def test_azure_replay_refuses_a_total_over_the_cap_before_allocating(tmp_path):
    cap = workloads.MAX_REPLAY_INVOCATIONS

    def edit(cells):
        cells[4:] = ["0"] * (len(cells) - 4)
        cells[4 + 99] = str(cap)  # minute '100': at the cap, allowed on its own
        cells[4 + 100:4 + 1400] = [str(cap // 2)] * 1300  # 6.5e10 invocations in all: ~1.5 TB to expand
    path = _azure_copy(tmp_path, edit=edit)
    assert workloads.read_azure_counts(path, "fn-http").sum() > 100 * cap  # reading the counts is fine
    with pytest.raises(WorkloadError, match=r"edited\.csv: .*MAX_REPLAY_INVOCATIONS.*column '100'"):
        workloads.azure(1000.0, 100, 50.0, 10, seed=0, path=path, function="fn-http")
    # a selection within the cap still replays from the same file
    assert len(workloads.azure(None, 100, 50.0, 10, seed=0, path=path, function="fn-timer")) == 100


def test_azure_function_selector_must_be_a_name_or_position():
    with pytest.raises(WorkloadError, match="function must be"):
        workloads.read_azure_counts(AZURE, True)
    with pytest.raises(WorkloadError, match="function must be"):
        workloads.read_azure_counts(AZURE, 1.0)

def test_bad_arguments_are_named():
    with pytest.raises(WorkloadError, match="rate_rps must be positive"):
        workloads.poisson(0.0, 10, 5.0, 10, seed=0)
    with pytest.raises(WorkloadError, match="n must be an integer"):
        workloads.poisson(1.0, 0, 5.0, 10, seed=0)
    with pytest.raises(WorkloadError, match="deadline_ms must be positive"):
        workloads.poisson(1.0, 10, -1.0, 10, seed=0)
    with pytest.raises(WorkloadError, match="one value per request"):
        workloads.poisson(1.0, 10, [5.0, 6.0], 10, seed=0)
    with pytest.raises(WorkloadError, match="high_share"):
        workloads.mmpp(1.0, 10, 5.0, 10, seed=0, high_share=1.0)
    with pytest.raises(WorkloadError, match="unknown workload kind 'weibull'"):
        workloads.make_trace("weibull", 1.0, 10, 5.0, 10, seed=0)
    with pytest.raises(WorkloadError, match="bad parameters for workload kind 'gamma'"):
        workloads.make_trace("gamma", 1.0, 10, 5.0, 10, seed=0, shape=3)


def test_analyze_many_and_mixed_deadlines():
    trace = workloads.poisson(10.0, 100, [5.0, 50.0] * 50, 10, seed=0)
    assert sorted(trace["deadline_ms"].unique()) == [5.0, 50.0]
    table = workloads.analyze_traces({"a": trace, "b": workloads.gamma(10.0, 100, 5.0, 10, seed=0, cv=2)})
    assert table["trace"].tolist() == ["a", "b"] and {"rate_rps", "cv", "burstiness", "idc"} <= set(table.columns)
    with pytest.raises(WorkloadError, match="at least 3 arrivals"):
        analyze(trace.head(2))



def test_deadline_classes_mix_by_share_and_keep_arrivals():
    """A mixed-deadline workload draws each request's class by share, scales the cell's deadline by
    the class's factor, and leaves arrivals and example ids exactly as the single-deadline trace."""
    spec = config.WorkloadSpec.model_validate(
        {"kind": "gamma", "params": {"cv": 2},
         "deadline_classes": {"interactive": {"share": 0.3, "scale": 0.5}, "relaxed": {"share": 0.7, "scale": 3}}})
    mixed = workloads.spec_trace(spec, 50.0, 4000, 20.0, 100, seed=7)
    plain = workloads.make_trace("gamma", 50.0, 4000, 20.0, 100, seed=7, cv=2)
    pd.testing.assert_frame_equal(mixed.drop(columns="deadline_ms"), plain.drop(columns="deadline_ms"))
    assert sorted(mixed["deadline_ms"].unique()) == [10.0, 60.0]
    assert abs((mixed["deadline_ms"] == 10.0).mean() - 0.3) < 0.03
    again = workloads.spec_trace(spec, 50.0, 4000, 20.0, 100, seed=7)
    assert again["deadline_ms"].equals(mixed["deadline_ms"])
    other = workloads.spec_trace(spec, 50.0, 4000, 20.0, 100, seed=8)
    assert not other["deadline_ms"].equals(mixed["deadline_ms"])


@pytest.mark.parametrize("classes, problem", [
    ({"a": {"share": 0.5, "scale": 1}}, "sum to 1"),
    ({}, "empty"),
    ({"a": {"share": 0.5, "scale": 0}, "b": {"share": 0.5, "scale": 1}}, "greater than 0"),
    ({"a": {"share": 1.0, "scale": 1, "weight": 2}}, "weight"),
])
def test_bad_deadline_classes_are_named(classes, problem):
    with pytest.raises(ValueError, match=problem):
        config.WorkloadSpec.model_validate({"kind": "poisson", "deadline_classes": classes})
    with pytest.raises(WorkloadError, match="sum to 1"):
        workloads.class_deadlines(10, 5.0, [0.5, 0.2], [1.0, 2.0], seed=0)


# ---------------------------------------------------------------- Twitter arrival traces


def _window_of(trace: pd.DataFrame, ms: np.ndarray) -> int:
    """Index of the first request of the one contiguous window of ``ms`` whose shape the trace replays:
    after undoing the shift and the rescaling, arrival i lies in millisecond ``ms[first + i]`` (+-1.5
    ms for the scale, which is estimated from the last arrival)."""
    t = trace["arrival_s"].to_numpy()
    n = len(t)
    matches = []
    for first in range(len(ms) - n + 1):
        window = (ms[first:first + n] - ms[first]).astype(float)
        if window[-1] < 100:
            continue
        in_ms = t * (window[-1] + 0.5) / t[-1]
        if np.all(np.abs(in_ms - (window + 0.5)) <= 2.0):
            matches.append(first)
    assert len(matches) == 1, f"the trace matches windows {matches[:5]} of the file"
    return matches[0]


@pytest.mark.parametrize("rate", [5.0, 200.0, 3000.0])
def test_twitter_mean_rate_is_the_requested_one(tiny_data_dir, rate):
    for seed in range(3):
        trace = workloads.twitter(rate, 400, 20.0, 50, seed)
        assert analyze(trace)["rate_rps"] == pytest.approx(rate, rel=0.03)
        assert trace["arrival_s"].is_monotonic_increasing and len(trace) == 400
        assert (trace["workload"] == "twitter-a").all()


def test_twitter_is_seeded_and_seeds_pick_different_windows(tiny_data_dir):
    ms = workloads.read_arrivals_ms(TWITTER_A)
    trace = workloads.twitter(100.0, 300, 20.0, 50, seed=4)
    pd.testing.assert_frame_equal(trace, workloads.twitter(100.0, 300, 20.0, 50, seed=4))
    pd.testing.assert_frame_equal(trace, workloads.make_trace("twitter", 100.0, 300, 20.0, 50, 4, trace="a"))
    starts = {seed: _window_of(workloads.twitter(100.0, 300, 20.0, 50, seed), ms) for seed in range(6)}
    assert len(set(starts.values())) == 6  # 1,701 possible windows: six seeds, six windows
    assert starts[4] == _window_of(trace, ms)
    # the same window at another rate is the same shape, compressed
    fast = workloads.twitter(400.0, 300, 20.0, 50, seed=4)
    assert np.allclose(fast["arrival_s"] * 4, trace["arrival_s"])
    assert workloads.workload_class("twitter") == "bursty"


def test_twitter_windows_are_bursty(tiny_data_dir):
    stats = workloads.analyze_traces([workloads.twitter(50.0, 500, 20.0, 50, seed) for seed in range(5)])
    assert (stats["cv"] > 1.3).all() and (stats["burstiness"] > 0.1).all()
    assert analyze(workloads.poisson(50.0, 500, 20.0, 50, seed=0))["cv"] < 1.2  # the contrast


def test_twitter_loops_a_trace_shorter_than_n(tiny_data_dir):
    trace = workloads.twitter(30.0, 1500, 20.0, 50, seed=1, trace="b")  # the file holds 600
    assert len(trace) == 1500 and trace["arrival_s"].is_monotonic_increasing
    assert analyze(trace)["rate_rps"] == pytest.approx(30.0, rel=0.01)
    gaps = np.diff(trace["arrival_s"].to_numpy())
    assert np.allclose(gaps[600:1199], gaps[:599], atol=2 * gaps.mean() / 40)  # the copy repeats the shape
    assert (trace["workload"] == "twitter-b").all()


def test_twitter_reads_another_file_in_the_format_via_path(tmp_path):
    own = tmp_path / "mine.txt"
    own.write_text("".join(f"{v},1,75\n" for v in (0, 0, 3, 10, 10, 10, 11, 40, 41, 1000)))
    trace = workloads.twitter(20.0, 10, 20.0, 5, seed=0, path=own)
    assert (trace["workload"] == "twitter").all() and analyze(trace)["rate_rps"] == pytest.approx(20.0)
    assert workloads.twitter(20.0, 1, 20.0, 5, seed=0, path=own)["arrival_s"].iloc[0] >= 0


def test_twitter_missing_or_corrupted_data_says_what_to_run(tiny_data_dir):
    (tiny_data_dir / "traces" / "twitter_b.txt").unlink()
    with pytest.raises(WorkloadError, match=r"missing data file .*twitter_b\.txt.*python -m planner data"):
        workloads.twitter(10.0, 10, 20.0, 5, seed=0, trace="b")
    path = tiny_data_dir / "traces" / "twitter_a.txt"
    path.write_text(path.read_text() + "999999,1,300\n")  # still a valid trace, but not the installed one
    with pytest.raises(WorkloadError, match=r"twitter_a\.txt is corrupted.*python -m planner data"):
        workloads.twitter(10.0, 10, 20.0, 5, seed=0)
    with pytest.raises(WorkloadError, match=r"trace must be one of \['a', 'b'\], got 'c'"):
        workloads.twitter(10.0, 10, 20.0, 5, seed=0, trace="c")


@pytest.mark.parametrize("lines, problem", [
    (["5,1,300", "x,1,300"], r"line 2: arrival time 'x' is not a whole number of ms"),
    (["5,1,300", "-1,1,300"], r"line 2: arrival time '-1' is not"),
    (["5,1,300", "7.5,1,300"], r"line 2: arrival time '7.5' is not"),
    (["5,1,300", "", "9,1,300"], r"line 2: arrival time is missing"),
    (["5,1,300", "9,1,300", "8,1,300"], r"line 3: arrival time 8 ms is earlier than the line before \(9 ms\)"),
    ([], r"the arrival trace has no requests"),
])
def test_twitter_bad_trace_files_are_named_with_the_line(tmp_path, lines, problem):
    path = tmp_path / "bad.txt"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(WorkloadError, match=rf"bad\.txt: {problem}"):
        workloads.twitter(10.0, 1, 20.0, 5, seed=0, path=path)
    with pytest.raises(WorkloadError, match=r"missing arrival trace .*nope\.txt"):
        workloads.twitter(10.0, 1, 20.0, 5, seed=0, path=tmp_path / "nope.txt")
