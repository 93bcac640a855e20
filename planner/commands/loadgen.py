"""``planner loadgen`` and ``planner replay-http``: load a running server (``planner serve``) over loopback.

    python -m planner loadgen --preset full --task sst2 --qps 100 --deadline-ms 50
    python -m planner replay-http --preset full --task sst2 --workload steady --load 0.8 --deadline-ms 50

``loadgen`` runs MLPerf LoadGen's Server scenario (:mod:`planner.evaluation.loadgen`) and keeps its
summary and detail logs with one row per query; ``replay-http`` sends one of the evaluation's
traces open loop (:mod:`planner.serving.clients`), generated exactly as the evaluation generates it
(workload spec, load relative to the seed rule's choice at the deadline, seed, example ids every
measured configuration has a prediction for), and writes the per-request rows. Both stop by
themselves (query/request count and wall time). Output defaults to ``results/<preset>/live/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default="http://127.0.0.1:8000", help="the running server (default: %(default)s)")
    common.add_argument("--preset", default="quick", help="preset whose evaluation set and profiles the server uses")
    common.add_argument("--task", required=True, help="sst2 or cifar10 (must be the server's task)")
    common.add_argument("--deadline-ms", type=float, required=True, help="every request's deadline (ms)")
    common.add_argument("--client", choices=["stream", "httpx"], default="stream", help="HTTP client (default: stream)")
    common.add_argument("--out", type=Path, default=None, help="output folder (default: results/<preset>/live/...)")
    common.add_argument("--machine-tag", default=None, help="which machine's profiles (default: this one)")
    common.add_argument("--path-quantile", type=_quantile_or_none, default=None,
                        help="send each deadline less this quantile of the client-server path measured on earlier "
                             "answers (planner.serving.budget, e.g. 0.5); 'none' (the default) sends it as is")

    lg = subparsers.add_parser("loadgen", parents=[common],
                               help="MLPerf LoadGen Server scenario against a running server (logs + per-query rows)")
    lg.add_argument("--qps", type=float, required=True, help="LoadGen's server_target_qps (Poisson arrivals)")
    lg.add_argument("--min-queries", type=int, default=1000,
                    help="LoadGen's min_query_count (its p99 early stopping needs several hundred; default 1000)")
    lg.add_argument("--max-queries", type=int, default=5000, help="stop after this many queries")
    lg.add_argument("--min-seconds", type=float, default=10.0, help="LoadGen's min_duration (default 10 s)")
    lg.add_argument("--max-seconds", type=float, default=60.0, help="stop after this long")
    lg.add_argument("--percentile", type=float, default=0.99, help="latency percentile LoadGen judges (default 0.99)")
    lg.add_argument("--seed", type=int, default=0, help="LoadGen's schedule and sample seeds")
    lg.set_defaults(func=run_loadgen_command)

    rp = subparsers.add_parser("replay-http", parents=[common],
                               help="send one of the evaluation's traces to a running server, open loop")
    rp.add_argument("--workload", default="steady", help="a workload of the preset's evaluate section")
    group = rp.add_mutually_exclusive_group(required=True)
    group.add_argument("--load", type=float, help="mean rate as a fraction of the seed rule's choice's capacity")
    group.add_argument("--rate", type=float, help="mean rate in requests/s")
    rp.add_argument("--requests", type=int, default=2000, help="trace length (default 2000)")
    rp.add_argument("--seed", type=int, default=42)
    rp.add_argument("--max-seconds", type=float, default=120.0, help="stop after this long")
    rp.set_defaults(func=run_replay_command)


def _quantile_or_none(text: str) -> float | None:
    """``--path-quantile``: 'none', or a quantile the deadline budget accepts (its rule, not a copy)."""
    from planner.serving.budget import BudgetError, DeadlineBudget

    if text.strip().lower() == "none":
        return None
    try:
        return DeadlineBudget(float(text)).quantile
    except (ValueError, BudgetError):
        raise argparse.ArgumentTypeError(f"expected a quantile in [0, 1) or 'none', got {text!r}") from None


def _server_info(url: str) -> dict:
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/healthz", timeout=10.0)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"no server answers at {url} ({type(exc).__name__}); start one with `python -m planner "
                           "serve ...`") from None
    info = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"the server at {url} is not ready: {info}")
    return info


def _check_task(info: dict, task: str, url: str) -> None:
    if info.get("task") != task:
        raise ValueError(f"the server at {url} serves {info.get('task')!r}, not {task!r}")
    if not info.get("examples"):
        raise ValueError(f"the server at {url} has no evaluation set loaded; example_id requests need one")


def _labels(preset_name: str, task: str, machine_tag: str | None):
    from planner import config
    from planner.models.datasets import eval_inputs
    from planner.profile.store import load_bundle

    bundle = load_bundle(preset_name, machine_tag)
    subset = bundle.environment.get("profile_settings", {}).get("eval_subset", config.preset(preset_name).profile.eval_subset)
    return bundle, eval_inputs(task, n=subset)[1]


def run_loadgen_command(args: argparse.Namespace) -> int:
    from planner.splits import example_ids
    from planner.evaluation.loadgen import SERVER_FILE, LoadGenSettings, run_loadgen
    from planner.paths import results_dir
    from planner.tables import refresh_manifest

    info = _server_info(args.url)
    _check_task(info, args.task, args.url)
    bundle, labels = _labels(args.preset, args.task, args.machine_tag)
    ids = example_ids(bundle, args.task)
    settings = LoadGenSettings(args.qps, args.deadline_ms, args.min_queries, args.max_queries, args.min_seconds,
                               args.max_seconds, args.percentile, seed=args.seed, client=args.client,
                               path_quantile=args.path_quantile)
    out = args.out or (results_dir(args.preset) / "live" / "loadgen" /
                       f"{args.task}_{info.get('policy')}_{args.qps:g}qps_{args.deadline_ms:g}ms")
    result = run_loadgen(args.url, settings, ids, out, labels)
    (Path(out) / SERVER_FILE).write_text(json.dumps(info, indent=2))
    refresh_manifest(Path(out))
    keys = ["Scenario", "Result is", "Performance constraints satisfied", "Early stopping satisfied",
            "Completed samples per second", "Scheduled samples per second", "50.00 percentile latency (ns)",
            "99.00 percentile latency (ns)", "Early stopping 99th percentile estimate"]
    for key in keys:
        if key in result.summary:
            print(f"{key}: {result.summary[key]}")
    requests = result.requests
    print(f"{len(requests)} queries: hit rate {requests['hit'].mean():.3f}, accuracy of answers "
          f"{requests.loc[requests['label'].notna(), 'correct'].mean():.3f}; outcomes "
          f"{requests['outcome'].value_counts(dropna=False).to_dict()}")
    print(f"wrote {out}")
    return 0


def run_replay_command(args: argparse.Namespace) -> int:
    from planner import config
    from planner.splits import example_ids
    from planner.paths import results_dir
    from planner.plan.planner import DeadlinePlanner
    from planner.serving.clients import ClientLimits, replay_http
    from planner.serving.outcomes import run_metrics
    from planner.tables import atomic_write_text, refresh_manifest
    from planner.workloads import rate_for_load, spec_trace

    info = _server_info(args.url)
    _check_task(info, args.task, args.url)
    settings = config.preset(args.preset).evaluate
    if args.workload not in settings.workloads:
        raise ValueError(f"unknown workload {args.workload!r}; the {args.preset} preset has {list(settings.workloads)}")
    bundle, labels = _labels(args.preset, args.task, args.machine_tag)
    ids = example_ids(bundle, args.task)
    if args.rate is not None:
        rate = args.rate
    else:  # as the evaluation defines load: the seed rule's choice at this deadline
        reference = DeadlinePlanner(settings.percentile).fit(bundle.profiles).select(args.task, args.deadline_ms).config_id
        rate = rate_for_load(bundle.profiles, reference, args.load, settings.servers)
    spec = settings.workloads[args.workload]
    trace = spec_trace(spec, rate, args.requests, args.deadline_ms, len(ids), args.seed, name=args.workload)
    trace["example_id"] = ids[trace["example_id"].to_numpy()]
    method = info.get("method") or info.get("policy") or "server"
    rows = replay_http(args.url, trace, labels=labels, method=method, client=args.client,
                       limits=ClientLimits(max_requests=args.requests, max_wall_s=args.max_seconds),
                       path_quantile=args.path_quantile)
    rows = rows.assign(task=args.task, workload=args.workload, rate_rps=rate, seed=args.seed)
    load_tag = f"load{args.load:g}" if args.load is not None else f"{rate:g}rps"
    out = args.out or (results_dir(args.preset) / "live" / "replay")
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.task}_{method}_{args.workload}_{load_tag}_{args.deadline_ms:g}ms_s{args.seed}"
    rows.to_parquet(out / f"{name}.parquet", index=False)
    metrics = run_metrics(rows)
    atomic_write_text(out / f"{name}.json", json.dumps({"server": info, "rate_rps": rate, **rows.attrs, **metrics},
                                                      indent=2, default=str))
    refresh_manifest(out)
    print(f"{len(rows)} requests at {rate:.1f}/s: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    print(f"wrote {out / name}.parquet")
    return 0
