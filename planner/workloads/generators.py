"""Seeded request-trace generators: steady, bursty, modulated, spiky and replayed (Azure, Twitter) arrivals.

A trace is a DataFrame ``[request_id, arrival_s, deadline_ms, example_id, workload, seed]`` sorted by
arrival. Every generator takes a mean rate, a request count, a deadline, the example ids to draw
from and a seed, and returns the same trace for the same arguments: arrival times and example ids
come from two independent child streams of ``np.random.SeedSequence(seed)``.

``example_ids`` is the evaluation set's *scored* part (:mod:`planner.splits`; the evaluation passes
``planner.splits.example_ids``), so no request is ever credited on an example a method was
calibrated on. An integer ``n`` stands for all ids ``0..n-1`` (synthetic data without a split).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from planner.config import WorkloadSpec
from planner.data import TRACE_FILES as TWITTER_TRACES
from planner.data import DataFileError, trace_path
from planner.schema import TRACE_COLUMNS, validate

# the example ids a trace draws from: an array of ids, or n for all of 0..n-1
ExampleIds = int | Sequence[int] | np.ndarray

TRACE_KINDS = ("poisson", "gamma", "mmpp", "spike", "azure", "twitter")
AZURE_ID_COLUMNS = ("HashOwner", "HashApp", "HashFunction", "Trigger")
MINUTES_PER_DAY = 1440
MAX_REPLAY_INVOCATIONS = 100_000_000
"""Most invocations a count file may expand into arrival times: each costs about 24 bytes while a
trace is built (minute index, uniform draw, sorted time), so the cap keeps one replay under ~2.4 GB;
a single count above it is refused as well, being no plausible per-minute count of one function."""


class WorkloadError(ValueError):
    """A generator got an argument that cannot describe a trace (the message names it)."""


# ---------------------------------------------------------------- helpers

def _positive(name: str, value: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise WorkloadError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(out) and out > 0):
        raise WorkloadError(f"{name} must be positive and finite, got {value!r}")
    return out


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise WorkloadError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def example_pool(example_ids: ExampleIds) -> np.ndarray:
    """The ids a trace draws from, checked: distinct integers >= 0 (an integer n: ``0..n-1``)."""
    if isinstance(example_ids, (int, np.integer)) and not isinstance(example_ids, (bool, np.bool_)):
        return np.arange(_count("example_ids", example_ids), dtype=np.int64)
    ids = np.asarray(example_ids)
    if ids.ndim != 1 or len(ids) == 0 or ids.dtype.kind not in "iu":
        raise WorkloadError(f"example_ids must be a non-empty 1-D array of integer ids or a count, got "
                            f"{type(example_ids).__name__} of shape {ids.shape} and dtype {ids.dtype}")
    if (ids < 0).any() or len(np.unique(ids)) != len(ids):
        raise WorkloadError("example_ids must be distinct ids >= 0")
    return ids.astype(np.int64)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent arrival and example-id streams, so changing one never shifts the other."""
    arrivals, examples = np.random.SeedSequence(int(seed)).spawn(2)
    return np.random.default_rng(arrivals), np.random.default_rng(examples)


def _deadlines(deadline_ms: float | Sequence[float], n: int) -> np.ndarray:
    values = np.broadcast_to(np.asarray(deadline_ms, dtype=float), (n,)) if np.ndim(deadline_ms) == 0 \
        else np.asarray(deadline_ms, dtype=float)
    if values.shape != (n,):
        raise WorkloadError(f"deadline_ms must be a scalar or have one value per request ({n}), got shape {values.shape}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise WorkloadError("deadline_ms must be positive and finite for every request")
    return values.copy()


def make_frame(arrival_s: np.ndarray, deadline_ms: float | Sequence[float], example_ids: ExampleIds, seed: int,
               workload: str, example_rng: np.random.Generator | None = None) -> pd.DataFrame:
    """Wrap sorted arrival times into a validated trace, drawing example ids uniformly from ``example_ids``."""
    arrival_s = np.asarray(arrival_s, dtype=float)
    n = len(arrival_s)
    if n == 0:
        raise WorkloadError("a trace needs at least one request")
    if np.any(np.diff(arrival_s) < 0) or not np.isfinite(arrival_s).all():
        raise WorkloadError("arrival times must be finite and non-decreasing")
    pool = example_pool(example_ids)
    rng = example_rng if example_rng is not None else _streams(seed)[1]
    frame = pd.DataFrame({
        "request_id": np.arange(n, dtype=np.int64),
        "arrival_s": arrival_s,
        "deadline_ms": _deadlines(deadline_ms, n),
        "example_id": pool[rng.integers(0, len(pool), n, dtype=np.int64)],
        "workload": workload,
        "seed": int(seed),
    })
    return validate(frame, TRACE_COLUMNS, f"{workload} trace")


def _piecewise_poisson(rng: np.random.Generator, edges_s: np.ndarray, rates: np.ndarray, n: int) -> np.ndarray:
    """First ``n`` arrivals of a Poisson process whose rate is ``rates[i]`` on ``[edges[i], edges[i+1])``.

    Exact, by time change: unit-rate Poisson points are mapped through the inverse of the cumulative
    intensity, which is piecewise linear. The last rate continues past the last edge.
    """
    cum = np.concatenate([[0.0], np.cumsum(rates * np.diff(edges_s))])
    unit = np.cumsum(rng.exponential(1.0, n))
    inside = unit <= cum[-1]
    if rates[-1] <= 0 and not inside.all():
        raise WorkloadError("the rate profile ends at zero before n arrivals were produced")
    out = np.empty(n)
    out[inside] = np.interp(unit[inside], cum, edges_s)
    out[~inside] = edges_s[-1] + (unit[~inside] - cum[-1]) / max(rates[-1], 1e-300)
    return out


# ---------------------------------------------------------------- generators

def poisson(rate_rps: float, n: int, deadline_ms: float | Sequence[float], example_ids: ExampleIds,
            seed: int) -> pd.DataFrame:
    """Steady load: exponential inter-arrival times with mean ``1/rate`` (CV = 1)."""
    rate, n = _positive("rate_rps", rate_rps), _count("n", n)
    arrivals, examples = _streams(seed)
    return make_frame(np.cumsum(arrivals.exponential(1.0 / rate, n)), deadline_ms, example_ids, seed,
                      "steady", examples)


def gamma(rate_rps: float, n: int, deadline_ms: float | Sequence[float], example_ids: ExampleIds, seed: int,
          cv: float = 4.0) -> pd.DataFrame:
    """Bursty load: Gamma inter-arrivals with shape ``1/CV^2`` and scale ``CV^2/rate`` (mean ``1/rate``)."""
    rate, n, cv = _positive("rate_rps", rate_rps), _count("n", n), _positive("cv", cv)
    arrivals, examples = _streams(seed)
    gaps = arrivals.gamma(1.0 / cv**2, cv**2 / rate, n)
    return make_frame(np.cumsum(gaps), deadline_ms, example_ids, seed, f"bursty-cv{cv:g}", examples)


def mmpp(rate_rps: float, n: int, deadline_ms: float | Sequence[float], example_ids: ExampleIds, seed: int,
         peak_ratio: float = 4.0, high_share: float = 0.2, mean_high_s: float = 1.0) -> pd.DataFrame:
    """Two-state Markov-modulated Poisson process with long-run mean rate ``rate_rps``.

    The high state's rate is ``peak_ratio`` times the low state's; the process spends a fraction
    ``high_share`` of time in the high state, with exponential dwell times of mean ``mean_high_s``
    there (and ``mean_high_s * (1 - high_share) / high_share`` in the low state).
    """
    rate, n = _positive("rate_rps", rate_rps), _count("n", n)
    peak_ratio, mean_high_s = _positive("peak_ratio", peak_ratio), _positive("mean_high_s", mean_high_s)
    if not 0 < high_share < 1:
        raise WorkloadError(f"high_share must lie in (0, 1), got {high_share!r}")
    low = rate / (1 - high_share + peak_ratio * high_share)
    state_rates = np.array([low, low * peak_ratio])
    dwell_means = np.array([mean_high_s * (1 - high_share) / high_share, mean_high_s])
    arrivals, examples = _streams(seed)
    state = int(arrivals.random() < high_share)  # start in the stationary distribution
    # Alternating dwell periods (in vectorised blocks) until they cover, with a wide margin, the
    # time n arrivals need; past the last period the last rate simply continues.
    need = 3.0 * n / rate + 10.0 * dwell_means.sum()
    blocks, covered = [], 0.0
    while covered < need:
        pairs = max(8, int(need / dwell_means.sum()) + 1)
        order = np.tile([state, 1 - state], pairs)
        block = arrivals.exponential(1.0, 2 * pairs) * dwell_means[order]
        blocks.append((block, order))
        covered += block.sum()
    durations = np.concatenate([b for b, _ in blocks])
    edges = np.concatenate([[0.0], np.cumsum(durations)])
    rates = state_rates[np.concatenate([o for _, o in blocks])]
    times = _piecewise_poisson(arrivals, edges, rates, n)
    return make_frame(times, deadline_ms, example_ids, seed, "mmpp", examples)


def spike(rate_rps: float, n: int, deadline_ms: float | Sequence[float], example_ids: ExampleIds, seed: int,
          factor: float = 4.0, start_frac: float = 0.4, duration_frac: float = 0.1,
          start_s: float | None = None, duration_s: float | None = None) -> pd.DataFrame:
    """Poisson load at ``rate_rps`` with one window at ``factor`` times the rate.

    The window is given either in seconds (``start_s``, ``duration_s``) or, by default, as fractions
    of the nominal trace length ``n / rate_rps`` so one spec works at any rate.
    """
    rate, n, factor = _positive("rate_rps", rate_rps), _count("n", n), _positive("factor", factor)
    nominal = n / rate
    start = start_frac * nominal if start_s is None else float(start_s)
    length = duration_frac * nominal if duration_s is None else float(duration_s)
    if not (math.isfinite(start) and start >= 0):
        raise WorkloadError(f"spike start must be >= 0 s, got {start!r}")
    length = _positive("spike duration", length)
    edges = np.array([0.0, start, start + length, start + length + 1.0])
    rates = np.array([rate, rate * factor, rate])
    if start == 0:  # no leading base-rate piece
        edges, rates = edges[1:], rates[1:]
    arrivals, examples = _streams(seed)
    times = _piecewise_poisson(arrivals, edges, rates, n)
    return make_frame(times, deadline_ms, example_ids, seed, f"spike-x{factor:g}", examples)


# ---------------------------------------------------------------- Azure Functions replay

def _first_bad_cell(path: Path, frame: pd.DataFrame, columns: list, values: np.ndarray) -> None:
    """Raise naming the file, line and column of the first count that is not a usable invocation count."""
    raw = frame[columns]
    missing = raw.isna().to_numpy()
    rule = "minute counts must be non-negative integers"
    problems = (
        (missing, f"is missing; {rule}"),
        (np.isnan(values) & ~missing, f"is not a number; {rule}"),
        (values < 0, f"is negative; {rule}"),
        (np.isfinite(values) & (values != np.round(values)), f"is not a whole number; {rule}"),
        (np.isinf(values), f"is not finite; {rule}"),
        (np.isfinite(values) & (values > MAX_REPLAY_INVOCATIONS),
         f"exceeds the cap of {MAX_REPLAY_INVOCATIONS:,} invocations (MAX_REPLAY_INVOCATIONS)"),
    )
    for mask, what in problems:
        if mask.any():
            row, col = np.argwhere(mask)[0]
            value = raw.iat[row, col]
            value = value.item() if isinstance(value, np.generic) else value
            raise WorkloadError(f"{path}: line {int(frame.index[row]) + 2}, column {str(columns[col])!r}: "
                                f"count {value!r} {what}")


def read_azure_counts(path: str | Path, function: str | int | None = None) -> np.ndarray:
    """Per-minute invocation counts from an Azure Functions 2019 ``invocations_per_function`` CSV.

    Columns: ``HashOwner, HashApp, HashFunction, Trigger, 1 .. 1440``. ``function`` selects one row by
    ``HashFunction`` (str) or position (int); ``None`` sums all rows (the whole app population).
    A malformed file (parser error, a repeated header row, a count that is missing, not a number,
    negative, fractional or above :data:`MAX_REPLAY_INVOCATIONS`) raises :class:`WorkloadError`
    naming the file, and the line and column where there is one.
    """
    path = Path(path)
    if not path.exists():
        raise WorkloadError(f"missing Azure invocation CSV {path}")
    try:
        # blank lines are kept as empty rows (dropped below) so that row i is line i + 2 of the file
        frame = pd.read_csv(path, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise WorkloadError(f"{path}: not a readable Azure invocation CSV: {exc}".strip()) from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the extra first column as an index
        raise WorkloadError(f"{path}: the first data row has more fields than the header's {frame.shape[1]}")
    frame = frame.dropna(how="all")
    missing = [c for c in AZURE_ID_COLUMNS if c not in frame.columns]
    minute_cols = [c for c in frame.columns if c not in AZURE_ID_COLUMNS]
    if missing:
        raise WorkloadError(f"{path}: missing column(s) {missing} of the Azure Functions 2019 format")
    expected = [str(i) for i in range(1, len(minute_cols) + 1)]
    if not minute_cols or [str(c) for c in minute_cols] != expected or len(minute_cols) > MINUTES_PER_DAY:
        raise WorkloadError(f"{path}: minute columns must be 1..N (N <= {MINUTES_PER_DAY}) in order, "
                            f"got {minute_cols[:3]}...{minute_cols[-2:]}")
    if frame.empty:
        raise WorkloadError(f"{path}: no function rows below the header")
    # a header row repeated inside the file (e.g. two files concatenated) would otherwise parse as
    # counts 1, 2, 3, ... since its minute cells are the column names
    header_again = np.flatnonzero((frame["HashFunction"].astype(str) == "HashFunction").to_numpy())
    if header_again.size:
        raise WorkloadError(f"{path}: line {int(frame.index[header_again[0]]) + 2} repeats the header row; "
                            f"remove it (were two files concatenated?)")
    block = frame[minute_cols]
    text = [c for c in minute_cols if not (pd.api.types.is_numeric_dtype(block[c])
                                           and not pd.api.types.is_bool_dtype(block[c]))]
    if text:
        block = block.copy()
        block[text] = block[text].astype(object).apply(
            lambda col: pd.to_numeric(col.where(~col.map(lambda v: isinstance(v, bool))), errors="coerce"))
    values = block.to_numpy(dtype=float)
    _first_bad_cell(path, frame, minute_cols, values)
    counts = values.astype(np.int64)
    if function is None:
        return counts.sum(axis=0)
    if isinstance(function, (bool, np.bool_)) or not isinstance(function, (str, int, np.integer)):
        raise WorkloadError(f"function must be a HashFunction (str), a row position (int) or None, got {function!r}")
    if isinstance(function, (int, np.integer)):
        if not 0 <= function < len(frame):
            raise WorkloadError(f"{path}: function index {function} out of range 0..{len(frame) - 1}")
        return counts[int(function)]
    hits = np.flatnonzero(frame["HashFunction"].astype(str).to_numpy() == str(function))
    if len(hits) == 0:
        raise WorkloadError(f"{path}: no row with HashFunction {function!r}")
    return counts[int(hits[0])]


def azure(rate_rps: float | None, n: int | None, deadline_ms: float | Sequence[float], example_ids: ExampleIds,
          seed: int, path: str | Path, function: str | int | None = None,
          minute_s: float = 60.0) -> pd.DataFrame:
    """Replay per-minute invocation counts of the CSV at ``path`` (required): each minute's count is
    spread uniformly within it.

    The day's shape is kept; time is rescaled so that the mean rate equals ``rate_rps`` (when given),
    otherwise a minute lasts ``minute_s`` seconds. ``n`` keeps the first n requests (None: all).
    """
    counts = read_azure_counts(path, function)
    total = int(counts.sum())
    if total == 0:
        raise WorkloadError(f"{path}: the selected invocation counts are all zero")
    if total > MAX_REPLAY_INVOCATIONS:  # refuse before allocating one arrival time per invocation
        busiest = int(np.argmax(counts))
        raise WorkloadError(f"{path}: the selected counts total {total:,} invocations, more than the "
                            f"{MAX_REPLAY_INVOCATIONS:,} one replay may expand (MAX_REPLAY_INVOCATIONS); "
                            f"the largest is column '{busiest + 1}' with {int(counts[busiest]):,}. "
                            f"Select one function or a smaller file")
    if n is not None and _count("n", n) > total:
        raise WorkloadError(f"{path}: the replayed profile has {total} invocations, fewer than n={n}")
    arrivals, examples = _streams(seed)
    minute_s = _positive("minute_s", minute_s)
    if rate_rps is not None:
        minute_s = total / (_positive("rate_rps", rate_rps) * len(counts))
    minute_of = np.repeat(np.arange(len(counts)), counts)
    times = np.sort((minute_of + arrivals.random(total)) * minute_s)
    if n is not None:
        times = times[:n]
    return make_frame(times, deadline_ms, example_ids, seed, "azure", examples)


# ---------------------------------------------------------------- Twitter arrival traces (Proteus)

@lru_cache(maxsize=8)
def _read_arrivals_ms(path_str: str, mtime_ns: int, size: int) -> np.ndarray:
    path = Path(path_str)
    try:
        column = pd.read_csv(path, header=None, usecols=[0], dtype=str, skip_blank_lines=False,
                             names=["arrival_ms"]).iloc[:, 0]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise WorkloadError(f"{path}: not a readable arrival trace: {exc}") from None
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values >= 0) & (values == np.round(values)))
    if bad.any():
        line = int(np.flatnonzero(bad)[0])
        value = column.iat[line]
        what = "is missing" if pd.isna(value) else f"{value!r} is not a whole number of ms >= 0"
        raise WorkloadError(f"{path}: line {line + 1}: arrival time {what} "
                            f"(format: one request per line, 'arrival_ms,...')")
    ms = values.astype(np.int64)
    back = np.flatnonzero(np.diff(ms) < 0)
    if back.size:
        raise WorkloadError(f"{path}: line {int(back[0]) + 2}: arrival time {int(ms[back[0] + 1])} ms is earlier "
                            f"than the line before ({int(ms[back[0]])} ms); arrivals must be in time order")
    ms.setflags(write=False)
    return ms


def read_arrivals_ms(path: str | Path) -> np.ndarray:
    """Arrival times in ms (int64, non-decreasing, read-only) of a trace in Proteus's format: one request
    per line, ``arrival_ms,<field>,<field>``; only the first column is used."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"missing arrival trace {path}")
    stat = path.stat()
    ms = _read_arrivals_ms(str(path), stat.st_mtime_ns, stat.st_size)
    if len(ms) == 0:
        raise WorkloadError(f"{path}: the arrival trace has no requests")
    return ms


def twitter(rate_rps: float, n: int, deadline_ms: float | Sequence[float], example_ids: ExampleIds, seed: int,
            trace: str = "a", path: str | Path | None = None) -> pd.DataFrame:
    """Replay a real arrival process: Twitter-derived traces published with Proteus (ASPLOS'24).

    ``trace`` picks ``data/traces/twitter_{a,b}.txt`` (28,721 and 13,583 requests over 291 s; gap
    CV ~1.7; installed, checksum-verified, by ``python -m planner data``); ``path`` replaces it with
    any file in the same format (not verified). The trace's timestamps are whole milliseconds, so
    each millisecond's count of requests is spread uniformly within that millisecond (as ``azure``
    does per minute): the burst shape is the real one down to the trace's resolution.

    Window: ``n`` consecutive requests. When the trace holds at least ``n``, the seed picks the
    first one uniformly among the ``len(trace) - n + 1`` possible, so different seeds replay
    different windows of the same real trace (and the same seed the same window); when it holds
    fewer, the trace is looped from its start, each copy one mean gap after the previous one ends. Time is then shifted to start at the window's first
    millisecond and rescaled so that the window's mean rate, ``(n - 1) / (last - first arrival)``,
    equals ``rate_rps`` exactly (a single request uses the whole trace's mean rate).
    """
    rate, n = _positive("rate_rps", rate_rps), _count("n", n)
    if path is None:
        if trace not in TWITTER_TRACES:
            raise WorkloadError(f"trace must be one of {sorted(TWITTER_TRACES)}, got {trace!r}")
        try:
            path = trace_path(trace)
        except DataFileError as exc:
            raise WorkloadError(str(exc)) from None
        label = f"twitter-{trace}"
    else:
        label = "twitter"
    ms = read_arrivals_ms(path)
    total = len(ms)
    span_ms = float(ms[-1] - ms[0])
    mean_gap_ms = span_ms / (total - 1) if total > 1 and span_ms > 0 else 1.0
    arrivals, examples = _streams(seed)
    if n <= total:
        first = int(arrivals.integers(0, total - n + 1))
        window = ms[first:first + n].astype(float)
    else:
        copies = -(-n // total)
        period = span_ms + mean_gap_ms
        window = ((ms - ms[0]).astype(float)[None, :] + period * np.arange(copies)[:, None]).ravel()[:n]
    times_ms = np.sort(window - window[0] + arrivals.random(n))  # uniform within each millisecond
    duration_ms = times_ms[-1] - times_ms[0]
    window_rate = (n - 1) / (duration_ms / 1000.0) if n > 1 and duration_ms > 0 else 1000.0 / mean_gap_ms
    times_s = times_ms / 1000.0 * (window_rate / rate)
    return make_frame(times_s, deadline_ms, example_ids, seed, label, examples)


# ---------------------------------------------------------------- registry and rate sweeps

GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "poisson": poisson, "gamma": gamma, "mmpp": mmpp, "spike": spike, "azure": azure, "twitter": twitter,
}


def make_trace(kind: str, rate_rps: float, n: int, deadline_ms: float | Sequence[float], example_ids: ExampleIds,
               seed: int, name: str | None = None, **params) -> pd.DataFrame:
    """Dispatch to a generator by name; ``name`` overrides the trace's ``workload`` label."""
    if kind not in GENERATORS:
        raise WorkloadError(f"unknown workload kind {kind!r}; known: {list(GENERATORS)}")
    try:
        trace = GENERATORS[kind](rate_rps, n, deadline_ms, example_ids, seed, **params)
    except TypeError as exc:
        raise WorkloadError(f"bad parameters for workload kind {kind!r}: {exc}") from None
    if name is not None:
        trace["workload"] = name
    return trace


def class_deadlines(n: int, deadline_ms: float, shares: Sequence[float], scales: Sequence[float],
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mixed per-request deadlines: each request draws a class by ``shares`` and gets ``deadline_ms``
    times its class's scale. Returns (class index, deadline in ms) per request.

    The draw uses a third child stream of ``SeedSequence(seed)``, so adding classes to a workload
    never moves its arrival times or example ids (the first two streams).
    """
    n = _count("n", n)
    deadline_ms = _positive("deadline_ms", deadline_ms)
    shares = np.asarray(shares, dtype=float)
    scales = np.asarray(scales, dtype=float)
    if shares.ndim != 1 or shares.shape != scales.shape or len(shares) == 0:
        raise WorkloadError(f"deadline classes need one share and one scale each, got {shares.tolist()} and {scales.tolist()}")
    if not (np.isfinite(shares).all() and (shares > 0).all() and abs(shares.sum() - 1.0) <= 1e-9):
        raise WorkloadError(f"deadline class shares must be positive and sum to 1, got {shares.tolist()}")
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise WorkloadError(f"deadline class scales must be positive and finite, got {scales.tolist()}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(3)[2])
    index = rng.choice(len(shares), size=n, p=shares / shares.sum())
    return index, deadline_ms * scales[index]


def spec_trace(spec: WorkloadSpec, rate_rps: float, n: int, deadline_ms: float, example_ids: ExampleIds, seed: int,
               name: str | None = None) -> pd.DataFrame:
    """The trace of a preset's workload spec: its generator, and its deadline classes if it has any."""
    trace = make_trace(spec.kind, rate_rps, n, deadline_ms, example_ids, seed, name=name, **spec.params)
    if spec.deadline_classes:
        classes = list(spec.deadline_classes.values())
        _, trace["deadline_ms"] = class_deadlines(len(trace), deadline_ms, [c.share for c in classes],
                                                  [c.scale for c in classes], seed)
    return trace


def workload_class(kind: str) -> str:
    """The planner's coarse workload hint: Poisson is ``steady``, everything else ``bursty``."""
    if kind not in GENERATORS:
        raise WorkloadError(f"unknown workload kind {kind!r}; known: {list(GENERATORS)}")
    return "steady" if kind == "poisson" else "bursty"


def capacity_rps(profiles: pd.DataFrame, config_id: str, servers: int = 1) -> float:
    """Requests/s a configuration sustains with full batches: ``throughput_items_s`` x servers."""
    rows = profiles.loc[profiles["config_id"] == config_id, "throughput_items_s"]
    if rows.empty:
        raise WorkloadError(f"config {config_id!r} is not in the profiles")
    value = float(rows.iloc[0])
    if not (math.isfinite(value) and value > 0):
        raise WorkloadError(f"config {config_id!r} has no positive throughput_items_s ({value})")
    return value * _count("servers", servers)


def rate_sweep(kind: str, fractions: Sequence[float], profiles: pd.DataFrame, config_id: str, n: int,
               deadline_ms: float | Sequence[float], example_ids: ExampleIds, seed: int, servers: int = 1,
               **params) -> dict[float, pd.DataFrame]:
    """One trace per load fraction, with mean rate ``fraction * capacity(config_id)``."""
    capacity = capacity_rps(profiles, config_id, servers)
    out = {}
    for fraction in fractions:
        fraction = _positive("load fraction", fraction)
        trace = make_trace(kind, fraction * capacity, n, deadline_ms, example_ids, seed, **params)
        trace["load"] = fraction
        out[fraction] = trace
    return out
