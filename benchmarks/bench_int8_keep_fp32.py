"""Which Linear layers must a transformer's int8 keep in fp32 to stay within a point of fp32? (issue 14, item 4)

Dynamic int8 quantizes every ``nn.Linear`` by default. On the published SST-2 models that lost more
than a point (MPNet's feed-forward output projections read GELU outputs whose outliers a per-batch
int8 activation scale cannot hold). A model's ``int8_keep_fp32`` (``configs/models.yaml``: globs over
module names) leaves the matching layers fp32 in both runtimes. This script measures candidate
settings the way the profiler serves them (the zoo's torch ``quantize_dynamic`` and ONNX Runtime
dynamic int8 builds, batch sizes 1/4/8) on the **calibration half** of SST-2 dev only
(:func:`planner.splits.partition`), so that the choice never looks at the scored half that the
profiles report. The committed layer list is the cheapest candidate (fewest fp32 layers) whose worst
batch stays within a point of fp32 on that half in both runtimes.

torch's dynamic int8 also has ``int8_smooth_alpha`` (SmoothQuant-style input rebalancing,
:mod:`planner.models.smoothing`; torch only, because its activations get 7 bits where ONNX Runtime's
get 8): with the committed layer list, the candidate with the fewest predictions that differ from fp32
(``flips``) at its worst batch is committed. Flips, not the accuracy difference: a difference nets the
flips that gain against those that lose, so on 436 sentences it moves by a point with three of them.

ONNX Runtime candidates are quantized in a temporary folder, so the cached int8 graphs that the
profiler and the live runs load are never touched. Writes
``results/<preset>/models/int8_keep_fp32.csv`` (one row per model, runtime, candidate and batch size).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_int8_keep_fp32.py --preset full
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from planner import config
from planner.models.base import VariantSpec
from planner.models.zoo import BaseModel, base_model, eval_inputs, onnx_path, predictor_from_base
from planner.paths import results_dir
from planner.splits import partition
from planner.tables import atomic_write_text

BATCH_SIZES = (1, 4, 8)
# candidates per model: label -> int8_keep_fp32 globs; the committed setting is added as "committed"
CANDIDATES: dict[str, dict[str, list[str]]] = {
    "minilm-l3": {"every Linear int8": [], "attention output": ["*.attention.output.dense"]},
    "minilm-l6": {"every Linear int8": [], "attention output": ["*.attention.output.dense"],
                  "attention output + FFN intermediate": ["*.attention.output.dense", "*.intermediate.dense"]},
    "mpnet-l12": {"every Linear int8": [], "FFN output": ["*.output.dense"]},
}
# torch only: smoothing strengths tried with the committed layer list (None: no smoothing)
SMOOTH_ALPHAS = (None, 0.5, 0.75)


def _accuracy(predictor, xs: list, ys: np.ndarray, batch_size: int) -> float:
    return float((predictor.predict(xs, batch_size).argmax(1) == ys).mean())


def _trial_predictor(base: BaseModel, spec: VariantSpec, keep: list[str], alpha: float | None, folder: Path,
                     preset: str, threads: int):
    """The zoo's int8 predictor of ``base`` with ``keep`` left fp32 and smoothing ``alpha``. ORT quantizes
    next to its fp32 graph, so the trial base points at ``folder``, holding a copy of the cached fp32
    graph: the profiler's cached int8 graphs stay as they are."""
    params = {k: v for k, v in base.params.items() if k != "int8_smooth_alpha"}
    trial = dataclasses.replace(base, params={**params, "int8_keep_fp32": keep,
                                              **({} if alpha is None else {"int8_smooth_alpha": alpha})})
    if spec.runtime == "onnxruntime":
        fp32 = onnx_path(dataclasses.replace(spec, precision="fp32"), preset, threads, base)
        folder.mkdir(parents=True, exist_ok=True)
        for name in (fp32.name, fp32.with_suffix(".json").name):
            if not (folder / name).exists():
                shutil.copy2(fp32.parent / name, folder / name)
        trial = dataclasses.replace(trial, folder=folder)
    return predictor_from_base(spec, trial, preset, threads)


def _predictions(predictor, xs: list, batch_size: int) -> np.ndarray:
    return predictor.predict(xs, batch_size).argmax(1)


def measure(models: list[str], preset: str, runtimes: list[str], threads: int) -> pd.DataFrame:
    inputs, labels = eval_inputs("sst2", None)
    labels = np.asarray(labels)
    idx = partition("sst2", labels).calibration
    xs, ys = [inputs[i] for i in idx], labels[idx]
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8_keep_") as tmp:
        for model in models:
            base = base_model("sst2", model, preset)
            params = config.model_spec(model).params
            committed = list(params.get("int8_keep_fp32", []))
            layer_candidates = {**CANDIDATES.get(model, {"every Linear int8": []}), "committed layers": committed}
            for runtime in runtimes:
                fp32 = predictor_from_base(VariantSpec("sst2", model, runtime, "fp32"), base, preset, threads)
                reference = {b: _predictions(fp32, xs, b) for b in BATCH_SIZES}
                trials = [(label, keep, None) for label, keep in layer_candidates.items()]
                if runtime == "torch":
                    trials += [(f"committed, smoothing alpha {a}", committed, a) for a in SMOOTH_ALPHAS if a is not None]
                for i, (label, keep, alpha) in enumerate(tqdm(trials, desc=f"{model} {runtime}")):
                    spec = VariantSpec("sst2", model, runtime, "int8")
                    start = time.monotonic()
                    predictor = _trial_predictor(base, spec, keep, alpha, Path(tmp) / model / str(i), preset, threads)
                    for b in BATCH_SIZES:
                        predicted = _predictions(predictor, xs, b)
                        accuracy, fp32_accuracy = float((predicted == ys).mean()), float((reference[b] == ys).mean())
                        rows.append({"model": model, "runtime": runtime, "candidate": label,
                                     "int8_keep_fp32": json.dumps(keep), "int8_smooth_alpha": alpha,
                                     "batch_size": b, "split": "calibration", "n_examples": len(ys),
                                     "accuracy": accuracy, "fp32_accuracy": fp32_accuracy,
                                     "delta_pt": 100 * (accuracy - fp32_accuracy),
                                     "flips": int((predicted != reference[b]).sum()),
                                     "seconds": time.monotonic() - start})
    return mark_committed(pd.DataFrame(rows))


def mark_committed(frame: pd.DataFrame) -> pd.DataFrame:
    """``is_committed``: the row's settings are the model's in ``configs/models.yaml`` now (layers, and
    for torch the smoothing strength; ONNX Runtime is never smoothed)."""
    def committed(row: pd.Series) -> bool:
        params = config.model_spec(row["model"]).params
        alpha = None if pd.isna(row["int8_smooth_alpha"]) else float(row["int8_smooth_alpha"])
        return (json.loads(row["int8_keep_fp32"]) == list(params.get("int8_keep_fp32", []))
                and (row["runtime"] != "torch" or alpha == params.get("int8_smooth_alpha")))
    return frame.assign(is_committed=frame.apply(committed, axis=1) if len(frame) else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--models", nargs="+", default=["minilm-l3", "minilm-l6", "mpnet-l12"])
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mark-only", action="store_true",
                        help="measure nothing: mark the committed rows of the existing CSV again (after a "
                             "setting in configs/models.yaml was chosen from it)")
    args = parser.parse_args()
    out = results_dir(args.preset) / "models" / "int8_keep_fp32.csv"
    frame = (mark_committed(pd.read_csv(out)) if args.mark_only
             else measure(args.models, args.preset, args.runtimes, args.threads))
    atomic_write_text(out, frame.to_csv(index=False))
    worst = frame.groupby(["model", "runtime", "candidate"], sort=False).agg(
        worst_delta_pt=("delta_pt", "min"), worst_flips=("flips", "max")).round(2)
    print(worst.to_string())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
