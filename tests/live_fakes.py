"""Sleeping toy models for the live experiments' tests (live fault replay, live server): two
configurations of a toy sst2 bundle, an accurate one (always right) and a fast batched one (wrong on
every third example), whose real predictors sleep their profiled time per call."""

from __future__ import annotations

import time

import numpy as np

from bundles import toy_bundle
from planner.evaluation.validation import TaskData
from planner.schema import config_id
from planner.serving.replay import from_predictor

N_EX = 60
INPUTS = np.arange(N_EX)
LABELS = INPUTS % 2
RIGHT = INPUTS % 3 != 0


class Sleeper:
    """Sleeps ``ms`` per call and answers right except on every third example (the accurate one: always)."""

    def __init__(self, ms: float, always_right: bool = False):
        self.ms, self.always_right, self.calls = ms, always_right, 0

    def predict(self, inputs, batch_size):
        self.calls += 1
        time.sleep(self.ms / 1000.0)
        ids = np.asarray(inputs)
        right = np.ones(len(ids), bool) if self.always_right else ids % 3 != 0
        return np.eye(2, dtype=np.float32)[np.where(right, ids % 2, 1 - ids % 2)]


def cid(model, b):
    return config_id("sst2", model, "torch", "fp32", b, "cpu")


def sleeper_toy(accurate_ms: float, fast_ms: float):
    """(bundle, load, loaded): the toy bundle, a loader of its sleeping configurations (as the
    experiments' ``load`` hook expects) and the list of id lists it was asked to load."""
    bundle = toy_bundle("sst2", [
        dict(model="acc", batch_size=1, samples_ms=np.full(40, accurate_ms), correct=np.ones(N_EX, bool)),
        dict(model="fast", batch_size=4, samples_ms=np.full(40, fast_ms), correct=RIGHT)])
    preds = bundle.predictions
    preds["label"] = LABELS[preds["example_id"]]
    preds["prediction"] = np.where(preds["correct"], preds["label"], 1 - preds["label"])
    predictors = {cid("acc", 1): Sleeper(accurate_ms, always_right=True), cid("fast", 4): Sleeper(fast_ms)}
    configs = {c: from_predictor(c, p, int(c.split("/b")[1].split("/")[0])) for c, p in predictors.items()}
    loaded: list[list[str]] = []

    def load(ids):
        loaded.append(list(ids))
        return {c: configs[c] for c in ids}, TaskData(INPUTS, LABELS)

    return bundle, load, loaded
