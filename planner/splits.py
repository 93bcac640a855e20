"""The calibration/scored partition of each task's evaluation set: one fixed split, used everywhere.

Every choice a method makes from accuracy (which configuration, which cascade threshold, which
accuracy floor) is fitted on the ``calibration`` part; everything reported or credited (the
profiles' ``accuracy`` column, the example ids a trace draws, each served request's correctness)
comes from the ``scored`` part. Without the split a method would choose on the very examples it
is scored on, and a threshold tuned that way looks better than it is.

The split is label-stratified (each class contributes ``share`` of its examples to calibration,
rounded half up) and deterministic everywhere: an example's place in its class's order is the
sha256 of ``"<seed>/<task>/<example_id>"``, so it depends on nothing a machine or a library version
could change (NumPy keeps its random streams stable only for one build on one machine). The share
and the seed live in ``configs/experimental_protocol.yaml`` (``calibration``).

:func:`example_ids` is the pool every trace draws from (the scored part, of the examples every
measured configuration has a prediction for); it lives here, beside the split, so that the analysis
reads it without importing the simulator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from planner.config import ConfigError, protocol, validate_task
from planner.schema import ProfileBundle, measured

CALIBRATION, SCORED = "calibration", "scored"
PARTS: tuple[str, ...] = (CALIBRATION, SCORED)


class SplitError(ValueError):
    """Labels that cannot be split (empty, not whole numbers, or a part would be empty)."""


@dataclass(frozen=True, eq=False)
class Split:
    """The two parts of one task's evaluation set, as sorted example ids (disjoint, together all ids)."""

    task: str
    calibration: np.ndarray
    scored: np.ndarray
    share: float
    seed: int

    @property
    def n_examples(self) -> int:
        return len(self.calibration) + len(self.scored)

    def part(self, name: str) -> np.ndarray:
        """The ids of part ``name`` (``calibration`` or ``scored``)."""
        if name not in PARTS:
            raise SplitError(f"unknown part {name!r}; parts: {list(PARTS)}")
        return self.calibration if name == CALIBRATION else self.scored

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask over example ids ``0..n-1``: True in part ``name``."""
        out = np.zeros(self.n_examples, dtype=bool)
        out[self.part(name)] = True
        return out


@lru_cache(maxsize=16)
def _order_keys(task: str, seed: int, n: int) -> np.ndarray:
    """A fixed pseudo-random 64-bit key per example id (the first 8 bytes of a sha256); read-only."""
    keys = np.array([int.from_bytes(hashlib.sha256(f"{seed}/{task}/{i}".encode()).digest()[:8], "big")
                     for i in range(n)], dtype=np.uint64)
    keys.flags.writeable = False
    return keys


def partition(task: str, labels: np.ndarray | pd.Series, share: float | None = None,
              seed: int | None = None) -> Split:
    """Split the evaluation examples ``0..len(labels)-1`` of ``task`` (``labels[i]`` = example i's label).

    ``share`` of every class goes to calibration (``floor(share * n_class + 0.5)`` examples), the
    rest is scored; ``share`` and ``seed`` default to the protocol's. The same arguments give the
    same split on every machine.
    """
    validate_task(task)
    setting = protocol().calibration
    share = setting.share if share is None else share
    seed = setting.seed if seed is None else seed
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < float(share) < 1.0:
        raise ConfigError(f"calibration share must lie strictly between 0 and 1, got {share!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"calibration seed must be an integer >= 0, got {seed!r}")
    values = np.asarray(labels)
    if values.ndim != 1 or len(values) < 2:
        raise SplitError(f"{task}: need a 1-D array of at least 2 labels (one per example id), "
                         f"got shape {values.shape}")
    if values.dtype.kind not in "iu":
        raise SplitError(f"{task}: labels must be integers, got dtype {values.dtype}")
    keys = _order_keys(task, int(seed), len(values))
    calibration = []
    for label in np.unique(values):
        members = np.flatnonzero(values == label)
        ordered = members[np.lexsort((members, keys[members]))]
        calibration.append(ordered[: int(np.floor(float(share) * len(members) + 0.5))])
    calib = np.sort(np.concatenate(calibration)).astype(np.int64)
    scored = np.setdiff1d(np.arange(len(values), dtype=np.int64), calib)
    if len(calib) == 0 or len(scored) == 0:
        raise SplitError(f"{task}: a share of {share} of {len(values)} examples leaves the "
                         f"{CALIBRATION if len(calib) == 0 else SCORED} part empty")
    return Split(task, calib, scored, float(share), int(seed))


def labels_by_example(predictions: pd.DataFrame, name: str = "predictions") -> np.ndarray:
    """The label of every example id ``0..n-1`` in a predictions table of one task (any configurations).

    Every configuration sees the same evaluation set, so an example must have one label and the ids
    must run from 0 without a gap; anything else is a :class:`SplitError` naming ``name``.
    """
    if predictions.empty:
        raise SplitError(f"{name}: no predictions to split")
    per_example = predictions.groupby("example_id", sort=True)["label"]
    if (per_example.nunique() > 1).any():
        bad = per_example.nunique().index[per_example.nunique() > 1][:5].tolist()
        raise SplitError(f"{name}: example id(s) {bad} carry different labels in different configurations")
    labels = per_example.first()
    ids = labels.index.to_numpy()
    if ids[0] != 0 or ids[-1] != len(ids) - 1:
        raise SplitError(f"{name}: example ids must run 0..n-1 without gaps (the evaluation set's positions), "
                         f"got {len(ids)} ids from {ids[0]} to {ids[-1]}")
    return labels.to_numpy(dtype=np.int64)


def task_of(config_ids: pd.Series) -> pd.Series:
    """The task of each config id (its first part, :func:`planner.schema.config_id`)."""
    codes = pd.Categorical(config_ids.astype(str))  # split each distinct id once: tables hold millions of rows
    tasks = codes.categories.str.split("/", n=1).str[0].to_numpy(dtype=object)
    return pd.Series(tasks[codes.codes], index=config_ids.index, name=config_ids.name)


def predictions_split(predictions: pd.DataFrame, task: str) -> Split:
    """The split of ``task`` from a predictions table holding one or more tasks' configurations."""
    rows = predictions[task_of(predictions["config_id"]) == task] if "config_id" in predictions else predictions
    return partition(task, labels_by_example(rows, f"{task} predictions"))


DEVELOPMENT_SHARE = 0.5   # of the calibration part, the half a development run fits on
DEVELOPMENT_SEED_OFFSET = 1   # keys the development halves apart from the calibration split's own order


def development_halves(split: Split, labels: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The calibration part cut in two, label-stratified: ``(fit, score)`` example ids, sorted and disjoint.

    Why: a parameter of a method tuned by runs credited on the scored part is tuned on the examples it
    is then scored on, even when the runs use other seeds (every trace draws from the same scored
    part). A development run instead fits accuracies on ``fit`` and draws and credits its requests on
    ``score``, so the scored part informs no parameter. The halves are :func:`partition` of the
    calibration part's labels (positions within that part, keyed by the protocol's seed plus
    :data:`DEVELOPMENT_SEED_OFFSET`), so they too are the same on every machine.
    """
    values = np.asarray(labels)
    if values.ndim != 1 or len(values) != split.n_examples:
        raise SplitError(f"{split.task}: need one label per example id ({split.n_examples}), got shape {values.shape}")
    inner = partition(split.task, values[split.calibration], DEVELOPMENT_SHARE, split.seed + DEVELOPMENT_SEED_OFFSET)
    return split.calibration[inner.calibration], split.calibration[inner.scored]


def predicted_ids(bundle: ProfileBundle, task: str) -> np.ndarray:
    """The example ids of ``task`` every measured configuration has a prediction for, sorted."""
    ids = bundle.profiles.loc[measured(bundle.profiles, task), "config_id"]
    preds = bundle.predictions[bundle.predictions["config_id"].isin(ids)]
    if preds.empty:
        raise SplitError(f"no predictions for any measured {task} configuration")
    counts = preds.groupby("example_id")["config_id"].nunique()
    return np.sort(counts.index[counts == preds["config_id"].nunique()].to_numpy(dtype=np.int64))


def example_ids(bundle: ProfileBundle, task: str) -> np.ndarray:
    """The example ids traces draw from: the evaluation set's scored part (:func:`predictions_split`), of
    those every measured configuration of ``task`` has a prediction for. Methods were fitted on the
    calibration part, so no request is credited on an example a method chose by."""
    scored = np.intersect1d(predicted_ids(bundle, task), predictions_split(bundle.predictions, task).scored)
    if len(scored) == 0:
        raise SplitError(f"the measured {task} configurations share no example id in the scored part")
    return scored
