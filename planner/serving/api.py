"""The HTTP API's contract: which bodies ``POST /v1/predict`` accepts, what outcome a per-request status
is on the wire, and the counters ``GET /metrics`` renders (Prometheus text format, written here: a
few dozen lines, no client library). The server (:mod:`planner.serving.server`) and the load
clients read the contract from here, so a field or an outcome is named in one place.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from bisect import bisect_left
from collections import Counter
from typing import Any, Literal, Mapping

import numpy as np

from planner.schema import REQUEST_STATUSES, check_deadline

# the API's outcome for each per-request status of the study's tables
OUTCOMES: dict[str, str] = {"served": "on_time", "late": "late", "degraded": "degraded", "shed": "shed",
                            "dropped": "dropped"}
assert set(OUTCOMES) == set(REQUEST_STATUSES)
STATUS_OF: dict[str, str] = {v: k for k, v in OUTCOMES.items()}
FIELDS = ("input", "example_id", "deadline_ms")
INPUT_KINDS: dict[str, Literal["text", "image"]] = {"sst2": "text", "cifar10": "image"}
IMAGE_SHAPE = (32, 32, 3)
LATENCY_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


class RequestError(ValueError):
    """A request the server refuses: ``status`` is the HTTP code, the message names the problem."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class FieldError(RequestError):
    """A field of a well-formed JSON body is missing or invalid (HTTP 422)."""

    status = 422


# ---------------------------------------------------------------- request checks

def input_kind(task: str) -> Literal["text", "image"]:
    if task not in INPUT_KINDS:
        raise ValueError(f"unknown task {task!r}; the server knows {list(INPUT_KINDS)}")
    return INPUT_KINDS[task]


def parse_predict(body: bytes, kind: Literal["text", "image"], n_examples: int | None,
                  max_text_chars: int = 2000) -> tuple[Any, int | None, float]:
    """``(raw input or None, example id or None, deadline_ms)`` of a predict body, or a
    :class:`RequestError` naming the problem. Exactly one of ``input`` and ``example_id``."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"malformed JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(f"the body must be a JSON object with {list(FIELDS)}, got a {type(payload).__name__}")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise FieldError(f"unknown field(s) {unknown}; a predict request has 'deadline_ms' and one of "
                         "'input' or 'example_id'")
    if "deadline_ms" not in payload:
        raise FieldError("missing field 'deadline_ms' (a positive number of milliseconds)")
    deadline = check_deadline(payload["deadline_ms"], "deadline_ms", FieldError)
    has_input, has_id = "input" in payload, "example_id" in payload
    if has_input == has_id:
        raise FieldError("give exactly one of 'input' (the raw input) and 'example_id' (an evaluation example), "
                         f"got {'both' if has_input else 'neither'}")
    if has_id:
        return None, _example_id(payload["example_id"], n_examples), deadline
    value = payload["input"]
    return (_text(value, max_text_chars) if kind == "text" else _image(value)), None, deadline


def _example_id(value: Any, n_examples: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"example_id must be an integer, got {value!r}")
    if not n_examples:
        raise FieldError("this server has no evaluation set loaded: send the raw 'input' instead of an example_id")
    if not 0 <= value < n_examples:
        raise FieldError(f"unknown example_id {value}: the evaluation set has {n_examples} examples "
                         f"(ids 0..{n_examples - 1})")
    return value


def _text(value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise FieldError(f"input must be a string of text for this task, got {type(value).__name__}")
    if not value.strip():
        raise FieldError("input text is empty")
    if len(value) > max_chars:
        raise FieldError(f"input text is too long: {len(value)} characters, at most {max_chars}")
    return value


def _image(value: Any) -> np.ndarray:
    """A uint8 32x32x3 image from a nested list of integers 0..255 or a base64 string of its 3072 bytes."""
    n_bytes = int(np.prod(IMAGE_SHAPE))
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FieldError(f"input is a string but not valid base64 ({exc}); send a 32x32x3 uint8 image as "
                             "base64 of its 3072 bytes or as a nested list") from None
        if len(raw) != n_bytes:
            raise FieldError(f"wrong image size: base64 input decodes to {len(raw)} bytes, expected {n_bytes} "
                             "(32x32x3 uint8, row-major HWC)")
        return np.frombuffer(raw, dtype=np.uint8).reshape(IMAGE_SHAPE).copy()
    if not isinstance(value, list):
        raise FieldError(f"input must be a 32x32x3 uint8 image (nested list or base64 string), got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except ValueError:
        raise FieldError("wrong image shape: the nested list is ragged; expected 32x32x3") from None
    if arr.dtype == object or arr.shape != IMAGE_SHAPE:
        raise FieldError(f"wrong image shape {arr.shape if arr.dtype != object else 'ragged'}: expected "
                         f"{'x'.join(map(str, IMAGE_SHAPE))} (height, width, RGB)")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise FieldError(f"wrong image dtype {arr.dtype}: pixel values must be integers 0..255 (uint8)")
    if arr.min() < 0 or arr.max() > 255:
        raise FieldError(f"image values out of the uint8 range 0..255 (min {arr.min()}, max {arr.max()})")
    return arr.astype(np.uint8)


# ---------------------------------------------------------------- metrics (Prometheus text format)

def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServerMetrics:
    """Counters and a latency histogram, rendered in the Prometheus text exposition format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: Counter[str] = Counter({o: 0 for o in OUTCOMES.values()})
        self.by_config: Counter[tuple[str, str]] = Counter()
        self.batches: Counter[str] = Counter()
        self.stopped_batches: Counter[str] = Counter()
        self.model_errors: Counter[str] = Counter()
        self.policy_errors = 0
        self.rejected: Counter[int] = Counter()
        self.buckets = [0] * len(LATENCY_BUCKETS_MS)
        self.latency_sum_ms = 0.0
        self.latency_count = 0

    def answered(self, outcome: str, config_id: str | None, latency_ms: float | None) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if config_id is not None:
                self.by_config[(config_id, outcome)] += 1
            if latency_ms is not None:
                self.latency_sum_ms += latency_ms
                self.latency_count += 1
                i = bisect_left(LATENCY_BUCKETS_MS, latency_ms)
                if i < len(self.buckets):
                    self.buckets[i] += 1

    def count(self, counter: str, key: Any) -> None:
        with self._lock:
            getattr(self, counter)[key] += 1

    def render(self, gauges: Mapping[str, float]) -> str:
        with self._lock:
            lines = ["# HELP planner_requests_total Predict requests answered, by outcome.",
                     "# TYPE planner_requests_total counter"]
            lines += [f'planner_requests_total{{outcome="{o}"}} {n}' for o, n in sorted(self.outcomes.items())]
            lines += ["# HELP planner_config_requests_total Requests answered by a configuration, by outcome.",
                      "# TYPE planner_config_requests_total counter"]
            lines += [f'planner_config_requests_total{{config_id="{_label(c)}",outcome="{o}"}} {n}'
                      for (c, o), n in sorted(self.by_config.items())]
            lines += ["# HELP planner_batches_total Batches run, by configuration.", "# TYPE planner_batches_total counter"]
            lines += [f'planner_batches_total{{config_id="{_label(c)}"}} {n}' for c, n in sorted(self.batches.items())]
            lines += ["# HELP planner_stopped_batches_total Batches stopped at their members' latest deadline, by "
                      "configuration.", "# TYPE planner_stopped_batches_total counter"]
            lines += [f'planner_stopped_batches_total{{config_id="{_label(c)}"}} {n}'
                      for c, n in sorted(self.stopped_batches.items())]
            lines += ["# HELP planner_model_errors_total Batches whose configuration raised, by configuration.",
                      "# TYPE planner_model_errors_total counter"]
            lines += [f'planner_model_errors_total{{config_id="{_label(c)}"}} {n}'
                      for c, n in sorted(self.model_errors.items())]
            lines += ["# HELP planner_policy_errors_total Batches whose policy raised or chose an unloaded configuration.",
                      "# TYPE planner_policy_errors_total counter", f"planner_policy_errors_total {self.policy_errors}"]
            lines += ["# HELP planner_rejected_total Requests refused before queueing, by HTTP status.",
                      "# TYPE planner_rejected_total counter"]
            lines += [f'planner_rejected_total{{code="{c}"}} {n}' for c, n in sorted(self.rejected.items())]
            lines += ["# HELP planner_request_latency_ms Arrival to answer of model-answered requests (ms).",
                      "# TYPE planner_request_latency_ms histogram"]
            cumulative = 0
            for edge, n in zip(LATENCY_BUCKETS_MS, self.buckets):
                cumulative += n
                lines.append(f'planner_request_latency_ms_bucket{{le="{edge:g}"}} {cumulative}')
            lines += [f'planner_request_latency_ms_bucket{{le="+Inf"}} {self.latency_count}',
                      f"planner_request_latency_ms_sum {self.latency_sum_ms:.6f}",
                      f"planner_request_latency_ms_count {self.latency_count}"]
        for name, value in gauges.items():
            lines += [f"# TYPE planner_{name} gauge", f"planner_{name} {value:g}"]
        return "\n".join(lines) + "\n"
