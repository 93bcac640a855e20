"""``planner serve``: the deadline-aware inference server over HTTP (see :mod:`planner.serving.server`).

    python -m planner serve --preset full --task sst2 --policy anytime --host 127.0.0.1 --port 8000

The port is bound first, so a taken one is refused before anything loads. Then the policy is fitted
on the preset's profiles (its typed parameters and latency percentile from the preset's
``evaluate`` section), the configurations it may choose are loaded (ONNX Runtime sessions, torch
modules, cascades from their members) and warmed up, with the threads the profiler used, and the
evaluation set is loaded so requests may name an ``example_id``. The proposed method then starts
from this machine's speed: its reference configurations are re-timed and the policy fitted again
with that start-up scale (``--no-retime``: from the profile's). Ctrl-C stops it gracefully.
"""

from __future__ import annotations

import argparse
import sys
import time

# handler threads must get the GIL promptly while a batcher thread runs Python code (the replay's value)
SWITCH_INTERVAL_S = 0.0005


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a task's models over HTTP with a deadline-aware policy "
                                                 "(POST /v1/predict, GET /healthz, GET /metrics)")
    parser.add_argument("--preset", default="quick", help="preset in configs/presets.yaml (quick|full)")
    parser.add_argument("--task", required=True, help="sst2 or cifar10")
    parser.add_argument("--policy", default="anytime", help="a registered method that can serve (default: anytime)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one; default 8000)")
    parser.add_argument("--machine-tag", default=None, help="which machine's profiles (default: this one)")
    parser.add_argument("--servers", type=int, default=None, help="batcher threads (default: the preset's evaluate.servers)")
    parser.add_argument("--queue", choices=["fifo", "edf"], default=None, help="default: the preset's evaluate.queue")
    parser.add_argument("--drop-expired", action="store_true", default=None,
                        help="drop requests whose deadline passed before their batch starts (default: the preset's)")
    parser.add_argument("--workload-class", choices=["steady", "bursty"], default="steady",
                        help="the workload hint a static method gets (default: steady)")
    parser.add_argument("--warmup-calls", type=int, default=3, help="full batches per configuration before serving")
    parser.add_argument("--no-retime", action="store_true",
                        help="start the proposed method at the profile's speed instead of re-timing its reference "
                             "configurations on this machine first")
    parser.add_argument("--max-text-chars", type=int, default=2000, help="longest text input accepted")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from planner.serving.server import bind_socket, socket_url

    sock = bind_socket(args.host, args.port)  # a taken port fails here, before minutes of loading
    try:
        app, batcher, about = _build(args)
    except BaseException:
        sock.close()
        raise
    from planner.serving.server import run_server

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    print(f"serving {about} on {socket_url(sock)}  (POST /v1/predict, GET /healthz, GET /metrics; Ctrl-C stops)",
          flush=True)
    run_server(app, sock)
    counts = {k: v for k, v in batcher.metrics.outcomes.items() if v}
    print(f"stopped after answering {sum(counts.values())} request(s): {counts}", flush=True)
    return 0


def _build(args: argparse.Namespace):
    from planner import config
    from planner.models.datasets import eval_inputs
    from planner.evaluation.live_fault import with_startup_scale
    from planner.plan.registry import METHODS, preset_method_params
    from planner.profile.fingerprint import announced_host_record, set_threads
    from planner.profile.store import load_bundle
    from planner.serving.replay import SERVING_ORT_SPIN, load_live_configs, warm_up
    from planner.serving.server import Batcher, ServerSettings, create_app, server_policy

    preset = config.preset(args.preset)
    settings = preset.evaluate
    bundle = load_bundle(args.preset, args.machine_tag)
    tasks = sorted(set(bundle.profiles["task"]))
    if args.task not in tasks:
        raise ValueError(f"no {args.task} profiles in the {args.preset} bundle (profiled tasks: {tasks})")
    # validated once, here where the preset enters; an unknown name is left to server_policy, which
    # lists the methods that can serve
    params = preset_method_params(args.preset, args.policy) if args.policy in METHODS else None
    policy, config_ids = server_policy(args.policy, bundle, args.task, settings.percentile, params, args.workload_class)
    threads = set_threads(preset.profile.threads)  # as the profiler did, before any session is built
    started = time.perf_counter()
    print(f"loading {len(config_ids)} configuration(s) of {args.task} for {args.policy}...", flush=True)
    configs = load_live_configs(bundle.profiles, config_ids, args.preset, threads)
    eval_subset = bundle.environment.get("profile_settings", {}).get("eval_subset", preset.profile.eval_subset)
    inputs, _labels = eval_inputs(args.task, n=eval_subset)
    warm_up(configs.values(), inputs, args.warmup_calls)
    print(f"loaded and warmed up in {time.perf_counter() - started:.1f} s ({threads} threads)", flush=True)
    host = announced_host_record(bundle.environment, lambda line: print(line, flush=True))
    scale = None
    if params is not None and not args.no_retime:
        retimed, scale = with_startup_scale(params, bundle, configs, inputs)
        if scale is not None:  # the policy again, starting from this machine's speed
            policy, _ = server_policy(args.policy, bundle, args.task, settings.percentile, retimed, args.workload_class)
            print(f"start-up scale {scale.scale:.3f} (re-timed median over profiled p50, geometric mean over "
                  f"{len(scale.table)} reference configuration(s))", flush=True)
    server_settings = ServerSettings(
        servers=args.servers or settings.servers, queue=args.queue or settings.queue,
        drop_expired=settings.drop_expired if args.drop_expired is None else True,
        max_text_chars=args.max_text_chars)
    batcher = Batcher(policy, configs, args.task, bundle.profiles, server_settings, settings.percentile)
    # the preset's parameters the policy runs with, so a measurement names them (a preset may change
    # later), and beside them what was measured here at start-up
    info = {"preset": args.preset, "method": args.policy, "threads": threads,
            "params": params.model_dump(mode="json") if params is not None else {},
            "startup_scale": None if scale is None else float(scale.scale), "ort_spinning": SERVING_ORT_SPIN,
            "host": host["host"]}  # a live measurement names the host it was taken on
    about = f"{args.task} with {args.policy} ({len(configs)} configurations, {len(inputs)} evaluation examples)"
    return create_app(batcher, inputs, info), batcher, about
