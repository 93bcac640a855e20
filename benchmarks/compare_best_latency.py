"""Is every model's best profiled configuration within 1.2x of the best latency this CPU allows?

Reads the profiles (``planner.profile.store.load_bundle``) and the CSV written in the same session by
``benchmarks/bench_runtimes.py`` (plain ONNX Runtime sessions and plain torch models built outside
``planner``), and writes ``results/<preset>/profiles/<tag>/best_latency_ratio.csv``: for every model
and batch size, best profiled p50 / best independent p50 (target <= 1.2, issue 8).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_runtimes.py --planner-preset full --out results/full/bench_runtimes.csv
    python benchmarks/compare_best_latency.py --preset full [--bench PATH] [--target 1.2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from planner.paths import results_dir
from planner.profile.store import load_bundle, profile_root, write_csv

LATENCY_COLUMNS = ("p50_ms", "lat_p50_ms", "median_ms")
METHOD_COLUMNS = ("method", "variant")
RATIO_COLUMNS = ["task", "model", "batch_size", "best_profiled_config", "best_profiled_p50_ms",
                 "best_independent_method", "best_independent_p50_ms", "ratio", "target", "within_target",
                 "planner_same_run_p50_ms", "ratio_same_run", "within_target_same_run"]


def _pick(frame: pd.DataFrame, names: tuple[str, ...], path: Path, what: str) -> str:
    for name in names:
        if name in frame.columns:
            return name
    raise ValueError(f"{path}: no {what} column (expected one of {list(names)}); has {list(frame.columns)}")


def read_bench(path: Path) -> pd.DataFrame:
    """The independent benchmark's rows as [model, batch_size, method, p50_ms]."""
    if not path.exists():
        raise FileNotFoundError(f"missing {path}: run `python benchmarks/bench_runtimes.py` in the same session first")
    raw = pd.read_csv(path)
    missing = [c for c in ("model", "batch_size") if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(raw.columns)}")
    lat = _pick(raw, LATENCY_COLUMNS, path, "p50 latency")
    if {"runtime", "precision"} <= set(raw.columns):  # bench_runtimes.py writes runtime + precision
        method = raw["runtime"].astype(str) + "/" + raw["precision"].astype(str)
    else:
        method = raw[_pick(raw, METHOD_COLUMNS, path, "method (or runtime + precision)")].astype(str)
    out = pd.DataFrame({"model": raw["model"].astype(str), "batch_size": raw["batch_size"].astype(int),
                        "method": method, "p50_ms": pd.to_numeric(raw[lat], errors="coerce")})
    bad = out["p50_ms"].isna() | ~(out["p50_ms"] > 0)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} row(s) without a positive p50 latency")
    return out


def compare(profiles: pd.DataFrame, bench: pd.DataFrame, target: float = 1.2) -> pd.DataFrame:
    """One row per (model, batch) that both sides measured: best profiled p50 / best independent p50.

    ``ratio`` uses the p50 recorded in the profiles (measured during the sweep); where the benchmark
    also timed the planner's best configuration through planner's predictor in the same rounds
    (method ``planner/<config_id>``), ``ratio_same_run`` is that p50 over the best independent one:
    the comparison that a drifting machine cannot skew.
    """
    same_run = bench[bench["method"].str.startswith("planner/")]
    bench = bench[~bench["method"].str.startswith("planner/")]
    single = profiles[profiles["cascade_small"].isna() & (profiles["device"] == "cpu")]
    best_prof = single.loc[single.groupby(["model", "batch_size"])["lat_p50_ms"].idxmin(),
                           ["task", "model", "batch_size", "config_id", "lat_p50_ms"]]
    best_bench = bench.loc[bench.groupby(["model", "batch_size"])["p50_ms"].idxmin()]
    merged = best_prof.merge(best_bench, on=["model", "batch_size"], how="inner", validate="one_to_one")
    missing = sorted(set(map(tuple, best_bench[["model", "batch_size"]].to_numpy()))
                     - set(map(tuple, merged[["model", "batch_size"]].to_numpy())))
    if missing:
        print(f"note: benchmarked but not profiled (skipped): {missing}", file=sys.stderr)
    out = pd.DataFrame({
        "task": merged["task"], "model": merged["model"], "batch_size": merged["batch_size"],
        "best_profiled_config": merged["config_id"], "best_profiled_p50_ms": merged["lat_p50_ms"],
        "best_independent_method": merged["method"], "best_independent_p50_ms": merged["p50_ms"],
    })
    out["ratio"] = out["best_profiled_p50_ms"] / out["best_independent_p50_ms"]
    out["target"] = target
    out["within_target"] = out["ratio"] <= target
    planner_p50 = {(m, b, meth.split("/", 1)[1]): v for m, b, meth, v in
                   same_run[["model", "batch_size", "method", "p50_ms"]].itertuples(index=False)}
    out["planner_same_run_p50_ms"] = [planner_p50.get((m, b, c), float("nan")) for m, b, c in
                                      out[["model", "batch_size", "best_profiled_config"]].itertuples(index=False)]
    out["ratio_same_run"] = out["planner_same_run_p50_ms"] / out["best_independent_p50_ms"]
    out["within_target_same_run"] = out["ratio_same_run"] <= target
    return out[RATIO_COLUMNS].sort_values(["task", "model", "batch_size"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--machine-tag", default=None)
    parser.add_argument("--bench", type=Path, default=None,
                        help="CSV from benchmarks/bench_runtimes.py --out (default: results/<preset>/bench_runtimes.csv)")
    parser.add_argument("--target", type=float, default=1.2, help="acceptance ratio (issue 8: 1.2)")
    args = parser.parse_args(argv)
    bench_path = args.bench or results_dir(args.preset) / "bench_runtimes.csv"
    bundle = load_bundle(args.preset, args.machine_tag)
    table = compare(bundle.profiles, read_bench(bench_path), args.target)
    out = profile_root(args.preset, args.machine_tag) / "best_latency_ratio.csv"
    write_csv(table, out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{int(table['within_target'].sum())}/{len(table)} model x batch pairs within {args.target}x "
          f"(profiled p50 / independent p50)")
    if table["ratio_same_run"].notna().any():
        print(f"{int(table['within_target_same_run'].sum())}/{int(table['ratio_same_run'].notna().sum())} within "
              f"{args.target}x timed in the same rounds (planner's predictor / independent)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
