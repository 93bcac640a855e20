"""Train or fine-tune one zoo model on its task within a time budget, resumably.

Why a budget and not a fixed epoch count: the study runs on a shared 2-core CPU, so the preset fixes
wall-clock seconds per model (``train.model_time_budget_s``). The learning-rate schedule is driven by
``progress = max(train_seconds / budget, step / max_steps)`` (``max_steps`` = ``max_epochs`` epochs), so
it anneals to its end exactly when the budget or the epoch cap is reached, even when the shared machine
speeds up or slows down mid-run (a step count calibrated from the first steps under-used the budget when
a competing process finished). ``planned_steps`` (the step count the first steps' speed predicts) is
recorded for reference. Training stops when progress reaches 1. A resumable ``state.pt`` is written every ``checkpoint_every_s`` seconds and at the end
of every epoch; data order, augmentation and dropout are seeded per epoch/step so a resumed run
continues the same sequence. ``max_run_s`` stops a run early with its state saved, so a long recipe is
trained in several resumed runs. A recipe may split its schedule into several learning-rate cycles
(``params.cycles``: relative length and peak-lr scale of each, warm restarts): at each cycle's start the
weights are rounded as published and the optimizer state is reset, so a longer recipe continues from the
finished checkpoint of its first cycles exactly as a from-scratch run would pass through it (the
preset's time budget is not binding there). After every epoch the model is scored on the evaluation set (under
the training autocast, so the curve costs little) and the curve goes into the sidecar; the final
accuracy is the fp32 one.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from planner import config
from planner.models.base import EXPORT_PARAMS
from planner.models import checkpoints as ckpt
from planner.models import distill
from planner.models import published
from planner.models.variants import cpu_has_native_bf16
from planner.models.datasets import EVAL_SPLIT, eval_inputs, train_inputs

RECIPE_VERSION = 3  # 2: seeded random eval subsets (the CIFAR files are class-sorted); 3: per-model epochs, CIFAR stems
CALIBRATION_STEPS = 10  # steps timed (after 2 warm-up steps) to plan the step count


@dataclass(frozen=True)
class TrainResult:
    weights: Path | None  # None while a run paused by ``max_run_s`` leaves the recipe unfinished
    sidecar: dict[str, Any]
    reused: bool
    finished: bool = True


def recipe(model: str, preset: str) -> dict[str, Any]:
    """Everything that determines the trained weights; a checkpoint is reused only if this matches."""
    spec = config.model_spec(model)
    train_cfg = config.preset(preset).train
    if spec.kind not in ("hf_encoder_finetune", "torchvision_scratch"):
        raise ValueError(
            f"model {model!r} ({spec.kind}) is not trained here: it loads a fine-tuned checkpoint from {spec.source!r}"
        )
    averaged_cycles(spec.params)  # a malformed schedule fails here, before any data is loaded
    rec = {
        "version": RECIPE_VERSION, "task": spec.task, "model": model, "kind": spec.kind, "source": spec.source,
        "params": {k: v for k, v in spec.params.items() if k not in EXPORT_PARAMS},
        "time_budget_s": train_cfg.budget_for(model),
        "max_epochs": train_cfg.epochs_for(model), "train_subset": train_cfg.train_subset,
        "eval_subset": train_cfg.eval_subset,
    }
    teaching = train_cfg.distill.get(model)
    if teaching is not None:  # only then: a recipe without a teacher stays what it was before distillation existed
        rec["distill"] = {"teacher": _teacher_recipe(model, teaching.teacher, preset),
                          "alpha": teaching.alpha, "temperature": teaching.temperature}
    return rec


def _teacher_recipe(student: str, teacher: str, preset: str) -> dict[str, Any]:
    """The teacher's own recipe (what determines its weights, hence the student's targets)."""
    spec, student_spec = config.model_spec(teacher), config.model_spec(student)
    if teacher == student or spec.task != student_spec.task or spec.kind != "hf_encoder_finetune" \
            or student_spec.kind != "hf_encoder_finetune":
        raise config.ConfigError(f"presets.{preset}.train.distill: {student!r} cannot learn from {teacher!r}: "
                                 "teacher and student must be two different text encoders trained here")
    if teacher in config.preset(preset).train.distill:
        raise config.ConfigError(f"presets.{preset}.train.distill: teacher {teacher!r} is itself distilled")
    if teacher not in config.task_models(spec.task, preset):
        raise config.ConfigError(f"presets.{preset}.train.distill: teacher {teacher!r} needs an extra the "
                                 f"{preset!r} preset does not list ({spec.requires_extra})")
    return recipe(teacher, preset)


def lr_cycles(params: dict) -> list[tuple[float, float]]:
    """(relative length, peak-lr scale) of each learning-rate cycle; one full-scale cycle by default."""
    raw = params.get("cycles")
    if raw is None:
        return [(1.0, 1.0)]
    try:
        cycles = [(float(length), float(scale)) for length, scale in raw]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"params.cycles must be a list of [relative length, lr scale] pairs, got {raw!r}") from exc
    if not cycles or any(not (length > 0 and scale > 0) for length, scale in cycles):
        raise ValueError(f"params.cycles needs positive lengths and lr scales, got {raw!r}")
    return cycles


def averaged_cycles(params: dict) -> int:
    """How many cycle ends the published weights average (``params.average_cycles``; 1 = the last only).

    Why: the ends of consecutive low learning-rate cycles lie in one basin; their average (weights and
    batch-norm statistics alike, as in snapshot ensembles and SWA) generalises better than any one of
    them: ResNet18's ends at 18 and 21 epochs scored 89.68 % and 89.69 %, their average 89.99 %."""
    k = params.get("average_cycles", 1)
    n = len(lr_cycles(params))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"params.average_cycles must be an integer from 1 to the number of cycles ({n}), got {k!r}")
    return k


def cycle_starts(cycles: list[tuple[float, float]]) -> list[float]:
    """Schedule progress (0..1) at which each cycle starts."""
    total = sum(length for length, _ in cycles)
    return [sum(length for length, _ in cycles[:k]) / total for k in range(len(cycles))]


def cycle_index(progress: float, starts: list[float]) -> int:
    """The cycle that schedule progress ``progress`` falls in."""
    return max(k for k, start in enumerate(starts) if progress >= start or k == 0)


def cycled(factor: Callable[[float], float], cycles: list[tuple[float, float]]) -> Callable[[float], float]:
    """``factor`` (one cycle over progress 0..1) repeated over each cycle's share of the schedule, scaled."""
    starts = cycle_starts(cycles) + [1.0]

    def schedule(p: float) -> float:
        k = cycle_index(p, starts[:-1])
        q = (p - starts[k]) / (starts[k + 1] - starts[k])
        return cycles[k][1] * factor(min(1.0, max(0.0, q)))
    return schedule


# ----------------------------------------------------------------------------- task adapters


class _Adapter:
    """Task-specific pieces of the loop: batches, forward pass, evaluation."""

    n_train: int
    batch_size: int

    def batch(self, indices: np.ndarray, generator: torch.Generator) -> tuple[Any, torch.Tensor]: ...
    def logits(self, model: nn.Module, inputs: Any) -> torch.Tensor: ...
    def evaluate(self, model: nn.Module, n: int | None, autocast: bool = False) -> tuple[float, int]: ...


class _TextAdapter(_Adapter):
    def __init__(self, params: dict, subset: int | None, tokenizer: Any):
        self.max_length = int(params["max_length"])
        self.batch_size = int(params["batch_size"])
        self.tokenizer = tokenizer  # the model's own (planner.models.text.tokenizer_for)
        sentences, labels = train_inputs("sst2", subset)
        encoded = self.tokenizer(sentences, truncation=True, max_length=self.max_length)["input_ids"]
        self.ids = [np.asarray(row, dtype=np.int64) for row in encoded]
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))
        self.n_train = len(self.ids)
        self.pad_id = int(self.tokenizer.pad_token_id)

    def batch(self, indices, generator):
        rows = [self.ids[i] for i in indices]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, row in enumerate(rows):
            ids[k, : len(row)] = row
            mask[k, : len(row)] = 1
        return (torch.from_numpy(ids), torch.from_numpy(mask)), self.labels[indices]

    def logits(self, model, inputs):
        return model(*inputs)

    @torch.inference_mode()
    def evaluate(self, model, n, autocast=False):
        from planner.models.text import encode

        sentences, labels = eval_inputs("sst2", n)
        model.eval()
        preds = []
        for start in range(0, len(sentences), 64):
            batch = encode(self.tokenizer, sentences[start : start + 64], self.max_length)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
            preds.append(out.float().argmax(1).numpy())
        return float((np.concatenate(preds) == labels).mean()), len(labels)


class _VisionAdapter(_Adapter):
    def __init__(self, params: dict, subset: int | None):
        images, labels = train_inputs("cifar10", subset)
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))
        self.n_train = len(self.labels)
        self.batch_size = int(params["batch_size"])

    def batch(self, indices, generator):
        from planner.models.vision import augment, normalize

        idx = torch.as_tensor(indices)
        return normalize(augment(self.images[idx], generator)), self.labels[idx]

    def logits(self, model, inputs):
        return model(inputs)

    @torch.inference_mode()
    def evaluate(self, model, n, autocast=False):
        from planner.models.vision import normalize

        images, labels = eval_inputs("cifar10", n)
        model.eval()
        preds = []
        for s in range(0, len(labels), 256):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                preds.append(model(normalize(images[s : s + 256])).float().argmax(1).numpy())
        return float((np.concatenate(preds) == labels).mean()), len(labels)


def frozen_prefixes(params: dict) -> tuple[str, ...]:
    """State-dict prefixes a text recipe keeps at their pretrained values (``freeze_embeddings``,
    ``freeze_layers_below``; none for a recipe without them, e.g. every CNN's). Why: the frozen tensors need not be published (they come from the
    verified pretrained package), which keeps the shipped weights small, and they cost no backward pass."""
    prefixes = ["encoder.embeddings."] if params.get("freeze_embeddings") else []
    prefixes += [f"encoder.encoder.layer.{i}." for i in range(int(params.get("freeze_layers_below", 0)))]
    return tuple(prefixes)


def _module(rec: dict, pretrained: bool) -> nn.Module:
    """The recipe's network: a pretrained text encoder with its head, or a CNN (random init)."""
    if rec["kind"] == "hf_encoder_finetune":
        from planner.models.text import encoder_from_params

        return encoder_from_params(rec["source"], rec["params"], pretrained=pretrained)
    from planner.models.vision import cnn_from_params

    return cnn_from_params(rec["params"])


def _build(rec: dict) -> tuple[nn.Module, _Adapter, torch.optim.Optimizer, Callable[[float], float]]:
    params = rec["params"]
    if rec["kind"] == "hf_encoder_finetune":
        from planner.models.text import tokenizer_for

        model = _module(rec, pretrained=True)
        adapter: _Adapter = _TextAdapter(params, rec["train_subset"], tokenizer_for(rec["model"]))
        frozen = frozen_prefixes(params)
        for name, weight in model.named_parameters():
            weight.requires_grad_(not name.startswith(frozen))
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and p.requires_grad]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(params["weight_decay"])}, {"params": no_decay, "weight_decay": 0.0}],
            lr=float(params["lr"]),
        )
        warm = float(params["warmup_frac"])

        def factor(p: float) -> float:  # linear warm-up then linear decay to 0
            return p / warm if p < warm else max(0.0, (1.0 - p) / (1.0 - warm))
    else:
        model = _module(rec, pretrained=False).to(memory_format=torch.channels_last)
        adapter = _VisionAdapter(params, rec["train_subset"])
        optimizer = torch.optim.SGD(model.parameters(), lr=float(params["lr"]), momentum=float(params["momentum"]),
                                    nesterov=True, weight_decay=float(params["weight_decay"]))
        pct = float(params["pct_start"])

        def factor(p: float) -> float:  # one-cycle: cosine up from lr/25, cosine down to lr/1e4
            if p < pct:
                return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * p / pct)) / 2
            q = min(1.0, (p - pct) / (1 - pct))
            return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * q)) / 2
    return model, adapter, optimizer, cycled(factor, lr_cycles(params))


def _round_as_published(model: nn.Module, params: dict) -> dict[str, torch.Tensor]:
    """Round ``model``'s trained tensors as published (in place: the model keeps the rounded values)
    and return the rounded tensors; the tensors the recipe froze stay the pretrained ones."""
    frozen = frozen_prefixes(params)
    trained = {k: v for k, v in model.state_dict().items() if not k.startswith(frozen)}
    stored = published.round_for_publishing(trained)
    model.load_state_dict(published.upcast(stored), strict=not frozen)
    return stored


def _restart_cycle(model: nn.Module, optimizer: torch.optim.Optimizer, params: dict) -> None:
    """A new learning-rate cycle starts from the weights as published (rounded) with a fresh optimizer
    state, so it can equally start from a published or cached checkpoint of the earlier cycles."""
    _round_as_published(model, params)
    optimizer.state.clear()


def _prefix_recipe(rec: dict, k: int) -> dict | None:
    """The recipe of the first ``k`` cycles of ``rec`` (None where they do not end on an epoch)."""
    cycles = lr_cycles(rec["params"])
    epochs = rec["max_epochs"] * sum(length for length, _ in cycles[:k]) / sum(length for length, _ in cycles)
    if abs(epochs - round(epochs)) > 1e-9 or round(epochs) < 1:
        return None
    params = {p: v for p, v in rec["params"].items() if p not in ("cycles", "average_cycles")}
    if k > 1 or cycles[0][1] != 1.0:
        params["cycles"] = [list(c) for c in rec["params"]["cycles"][:k]]
    return {**rec, "params": params, "max_epochs": int(round(epochs))}


def _same_run(record: dict | None, want: dict, checksum: str, steps_per_epoch: int) -> bool:
    """Whether a kept checkpoint's ``record`` is a finished run of recipe ``want`` on this data
    (time budgets aside: they only cap a run that its epoch count ended)."""
    return bool(record) and record.get("data_checksum") == checksum \
        and {**record.get("recipe", {}), "time_budget_s": None} == {**want, "time_budget_s": None} \
        and record.get("steps") == want["max_epochs"] * steps_per_epoch


def _finished_prefix(rec: dict, checksum: str, preset: str, model_name: str,
                     steps_per_epoch: int) -> tuple[dict, dict, int] | None:
    """(weights, loop state, cycles done) of the longest kept finished run of this recipe's first cycles:
    a kept cycle end, or the cached checkpoint (a cache from before cycle ends were kept)."""
    n_cycles = len(lr_cycles(rec["params"]))
    side = ckpt.read_sidecar(preset, model_name)
    weights = ckpt.checkpoint_dir(preset, model_name) / ckpt.WEIGHTS_FILE
    for k in range(n_cycles - 1, 0, -1):
        want = _prefix_recipe(rec, k)
        if want is None:
            continue
        found = _cycle_end(rec, k, checksum, preset, model_name, steps_per_epoch)
        if found is None and weights.exists() and _same_run(side, want, checksum, steps_per_epoch):
            found = {**side, "weights": torch.load(weights, map_location="cpu", weights_only=True)}
        if found is not None:
            loop = {"step": int(found["steps"]), "train_seconds": float(found["train_seconds"]), "cycle": k - 1,
                    "planned_steps": steps_per_epoch * int(rec["max_epochs"]), "calibrated": False,
                    "epoch_losses": list(found.get("epoch_losses", []))}
            return found["weights"], loop, k
    return None


def _cycle_end_path(preset: str, model_name: str, k: int) -> Path:
    return ckpt.checkpoint_dir(preset, model_name) / f"cycle_end_{k}.pt"


def _save_cycle_end(rec: dict, k: int, checksum: str, preset: str, model_name: str, model: nn.Module,
                    state: dict) -> None:
    """Keep the (rounded) weights at the end of cycle ``k`` with the recipe of this run and, where the
    cycle ends on an epoch, the recipe of the first ``k`` cycles: a longer recipe continues from them,
    and ``average_cycles`` averages them."""
    _save_atomic({"recipe": _prefix_recipe(rec, k), "run": rec, "data_checksum": checksum,
                  "steps": int(state["step"]), "train_seconds": float(state["train_seconds"]),
                  "epoch_losses": list(state["epoch_losses"]), "weights": model.state_dict()},
                 _cycle_end_path(preset, model_name, k))


def _cycle_end(rec: dict, k: int, checksum: str, preset: str, model_name: str, steps_per_epoch: int,
               this_run: bool = False) -> dict | None:
    """The kept end of cycle ``k`` of a finished run of this recipe's first ``k`` cycles (same data and
    step count), or with ``this_run`` also one kept by a run of this very recipe; None otherwise."""
    want, path = _prefix_recipe(rec, k), _cycle_end_path(preset, model_name, k)
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if want is not None and _same_run(saved, want, checksum, steps_per_epoch):
        return saved
    return saved if this_run and saved.get("run") == rec and saved.get("data_checksum") == checksum else None


def _average_cycle_ends(model: nn.Module, rec: dict, checksum: str, preset: str, model_name: str,
                        steps_per_epoch: int) -> None:
    """Replace ``model``'s (last-cycle) weights by the mean over the last ``average_cycles`` cycle ends:
    every floating tensor, batch-norm statistics included; counters stay the last cycle's."""
    n, k = len(lr_cycles(rec["params"])), averaged_cycles(rec["params"])
    states = [model.state_dict()]
    for cycle in range(n - 1, n - k, -1):
        snapshot = _cycle_end(rec, cycle, checksum, preset, model_name, steps_per_epoch, this_run=True)
        if snapshot is None:
            raise RuntimeError(f"{model_name} ({preset}): the end of learning-rate cycle {cycle} that average_cycles "
                               f"needs is not in {ckpt.checkpoint_dir(preset, model_name)}; train with --from-scratch")
        states.append(snapshot["weights"])
    mean = {name: (torch.stack([s[name].float() for s in states]).mean(0).to(value.dtype)
                   if value.is_floating_point() else value) for name, value in states[0].items()}
    model.load_state_dict(mean)


# ----------------------------------------------------------------------------- the loop


def training_autocast(params: dict[str, Any]) -> bool:
    """bf16 autocast as the recipe asks (``autocast_bf16``), on CPUs that compute bf16 natively only:
    emulated bf16 would turn a minute of training into hours. The checkpoint's sidecar records what ran."""
    asked = bool(params.get("autocast_bf16", False))
    if asked and not cpu_has_native_bf16():
        print("bf16 autocast asked, but this CPU has no native bf16 (AVX512-bf16 or AMX): training in fp32",
              flush=True)
        return False
    return asked


def train_step(model: nn.Module, adapter: _Adapter, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
               inputs: Any, targets: Any, autocast: bool) -> torch.Tensor:
    """One optimisation step (forward under bf16 autocast when asked, loss in fp32); returns the loss.
    ``targets``: the labels, or (labels, teacher logits) for a distillation loss."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = adapter.logits(model, inputs)
    loss = loss_fn(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train(task: str, model_name: str, preset: str, force: bool = False, progress: bool = True,
          max_run_s: float | None = None) -> TrainResult:
    """Train ``model_name`` for ``preset``, or reuse what already exists for the same recipe and data.

    Reused, in order: a finished checkpoint in the cache, then the published weights of the preset
    (``planner.models.published``, installed after their sha256 verifies). ``force`` trains from
    scratch regardless (no cache, no resumable state, no published weights) and republishes.
    ``max_run_s`` pauses this run after that many seconds with its state saved (``finished=False``);
    calling again resumes it.
    """
    if max_run_s is not None and not max_run_s > 0:
        raise ValueError(f"max_run_s must be positive seconds, got {max_run_s}")
    config.validate_task(task)
    spec = config.model_spec(model_name)
    if spec.task != task:
        raise ValueError(f"model {model_name!r} is a {spec.task} model, not a {task} model")
    rec = recipe(model_name, preset)
    checksum = ckpt.data_checksum(task)
    folder = ckpt.checkpoint_dir(preset, model_name)
    existing = ckpt.matching_checkpoint(preset, model_name, rec, checksum)
    if existing is not None and not force:
        side = ckpt.read_sidecar(preset, model_name)
        if "weights_rounding" not in side:  # finished before checkpoints were published: round and publish it
            return _publish_cached(rec, checksum, preset, model_name, side)
        return TrainResult(existing, side, reused=True)
    entry = None if force else published.matching_entry(preset, model_name, rec, checksum)
    if entry is not None:
        return _install_published(preset, model_name, entry)

    teacher_logits = None
    if "distill" in rec:
        started = time.perf_counter()
        teacher_logits = _teacher_logits(rec, preset, checksum, progress, max_run_s)
        if teacher_logits is None:
            return TrainResult(None, {"steps": 0, "train_seconds": 0.0, "epochs": 0.0,
                                      "waiting_for_teacher": rec["distill"]["teacher"]["model"]},
                               reused=False, finished=False)
        if max_run_s is not None:
            max_run_s = max(1e-9, max_run_s - (time.perf_counter() - started))
    params = rec["params"]
    seed = int(params.get("seed", 0))
    torch.manual_seed(seed)
    model, adapter, optimizer, factor = _build(rec)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    budget = float(rec["time_budget_s"])
    steps_per_epoch = adapter.n_train // adapter.batch_size
    max_steps = steps_per_epoch * int(rec["max_epochs"])
    if steps_per_epoch < 1:
        raise ValueError(f"{adapter.n_train} training examples < batch size {adapter.batch_size}")
    autocast = training_autocast(params)
    smoothing = float(params.get("label_smoothing", 0.0))
    loss_fn: nn.Module = nn.CrossEntropyLoss(label_smoothing=smoothing)
    if teacher_logits is not None:
        if len(teacher_logits) != adapter.n_train:
            raise RuntimeError(f"{len(teacher_logits)} teacher logits for {adapter.n_train} training examples")
        loss_fn = distill.DistillationLoss(rec["distill"]["alpha"], rec["distill"]["temperature"], smoothing)
        soft_targets = torch.from_numpy(teacher_logits)

    state = {"step": 0, "train_seconds": 0.0, "planned_steps": max_steps, "calibrated": False, "epoch_losses": [],
             "cycle": 0}
    run_start = time.perf_counter()
    state_path = folder / ckpt.STATE_FILE
    resumed = False
    if state_path.exists() and not force:
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved.get("recipe") == rec and saved.get("data_checksum") == checksum:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["loop"]
            resumed = True
            print(f"resuming {model_name} ({preset}) at step {state['step']} after {state['train_seconds']:.0f}s",
                  file=sys.stderr)
    prefix = None if resumed or force else _finished_prefix(rec, checksum, preset, model_name, steps_per_epoch)
    if prefix is not None:
        weights_k, state, k = prefix
        model.load_state_dict(weights_k)
        print(f"continuing {model_name} ({preset}) from its finished checkpoint of the first {k} learning-rate "
              f"cycle(s) ({state['step'] // steps_per_epoch} epochs)", file=sys.stderr)
    starts = cycle_starts(lr_cycles(params))

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"recipe": rec, "data_checksum": checksum, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "loop": state}, tmp)
        tmp.replace(state_path)

    bar = tqdm(total=state["planned_steps"], initial=state["step"], desc=f"train {model_name} [{preset}]",
               disable=not progress, mininterval=0.5 if sys.stderr.isatty() else 15, file=sys.stderr)
    last_save = time.perf_counter()
    calib_times: list[float] = []
    running = float("nan")
    model.train()
    stop = paused = False
    while not stop:
        epoch, offset = divmod(state["step"], steps_per_epoch)
        if epoch >= int(rec["max_epochs"]):
            break
        order = np.random.default_rng(seed * 1000 + epoch).permutation(adapter.n_train)
        epoch_loss, epoch_n = 0.0, 0
        for b in range(offset, steps_per_epoch):
            progress_frac = max(state["step"] / max_steps, state["train_seconds"] / budget)
            if progress_frac >= 1.0:
                stop = True
                break
            if max_run_s is not None and time.perf_counter() - run_start >= max_run_s:
                stop = paused = True
                break
            t0 = time.perf_counter()
            cycle = cycle_index(progress_frac, starts)
            if cycle > state.get("cycle", 0):
                _restart_cycle(model, optimizer, params)
                for ended in range(state.get("cycle", 0) + 1, cycle + 1):  # a short cycle may pass within one step
                    _save_cycle_end(rec, ended, checksum, preset, model_name, model, state)
                state["cycle"] = cycle
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor(progress_frac)
            torch.manual_seed(seed * 1_000_003 + state["step"])  # dropout: same on resume
            generator = torch.Generator().manual_seed(seed * 7_919 + state["step"])
            indices = order[b * adapter.batch_size : (b + 1) * adapter.batch_size]
            inputs, labels = adapter.batch(indices, generator)
            targets = labels if teacher_logits is None else (labels, soft_targets[indices])
            loss = train_step(model, adapter, optimizer, loss_fn, inputs, targets, autocast)
            dt = time.perf_counter() - t0
            state["step"] += 1
            state["train_seconds"] += dt
            value = float(loss.detach())
            running = value if math.isnan(running) else 0.95 * running + 0.05 * value
            epoch_loss += value
            epoch_n += 1
            if not state["calibrated"]:
                calib_times.append(dt)
                if len(calib_times) >= CALIBRATION_STEPS + 2:
                    per_step = float(np.median(calib_times[2:]))
                    state["planned_steps"] = int(min(max_steps, max(state["step"] + 1, budget / per_step)))
                    state["calibrated"] = True
                    bar.total = state["planned_steps"]
                    bar.refresh()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", epoch=epoch,
                            refresh=False)
            if time.perf_counter() - last_save > config.preset(preset).train.checkpoint_every_s:
                save_state()
                last_save = time.perf_counter()
        if epoch_n and not paused:
            # An epoch's row is written once it ends (a resumed epoch reports the steps of its last run).
            finished_epoch = state["step"] % steps_per_epoch == 0 or stop
            entry = {"epoch": epoch, "mean_loss": epoch_loss / epoch_n, "steps": epoch_n,
                     "train_seconds": round(state["train_seconds"], 2)}
            if finished_epoch:
                acc, _ = adapter.evaluate(model, rec["eval_subset"], autocast=autocast)
                entry["eval_accuracy"] = acc
                model.train()
            state["epoch_losses"].append(entry)
        save_state()
        last_save = time.perf_counter()
    bar.close()
    if paused:
        print(f"paused {model_name} ({preset}) at step {state['step']} after {state['train_seconds']:.0f}s of "
              f"training; run again to resume", file=sys.stderr)
        return TrainResult(None, {"steps": state["step"], "train_seconds": round(state["train_seconds"], 2),
                                  "epochs": state["step"] / steps_per_epoch, "epoch_losses": state["epoch_losses"]},
                           reused=False, finished=False)

    n_cycles = len(lr_cycles(params))
    if n_cycles > 1:  # the last cycle's end (and any a short run never reached), kept like the others
        _round_as_published(model, params)
        for ended in range(state.get("cycle", 0) + 1, n_cycles + 1):
            _save_cycle_end(rec, ended, checksum, preset, model_name, model, state)
    if averaged_cycles(params) > 1:
        _average_cycle_ends(model, rec, checksum, preset, model_name, steps_per_epoch)
    sidecar = {
        "task": task, "model": model_name, "preset": preset, "recipe": rec, "seed": seed,
        "data_checksum": checksum, "train_seconds": round(state["train_seconds"], 2),
        "steps": state["step"], "planned_steps": state["planned_steps"],
        "epochs": state["step"] / steps_per_epoch, "n_train": adapter.n_train,
        "final_running_loss": running, "epoch_losses": state["epoch_losses"],
        "averaged_cycle_ends": averaged_cycles(params),
        "torch_threads": torch.get_num_threads(), "autocast_bf16": autocast,
        "library_versions": ckpt.library_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result = _finish(model, adapter, rec, checksum, preset, model_name, sidecar)
    state_path.unlink(missing_ok=True)
    return result


def _teacher_logits(rec: dict, preset: str, checksum: str, progress: bool,
                    max_run_s: float | None) -> np.ndarray | None:
    """The distillation teacher's logits over this recipe's training set (cached beside the teacher's
    checkpoint, shared by its students); the teacher is trained first, or reused/installed as any
    model is. None while the teacher's own training is paused by ``max_run_s``."""
    from planner.models.extras import unavailable_reason
    from planner.models.text import tokenizer_for

    teacher_rec = rec["distill"]["teacher"]
    name = teacher_rec["model"]
    missing = unavailable_reason(name)
    if missing:
        raise RuntimeError(f"{rec['model']} ({preset}) is distilled from {name}, which cannot be trained here: {missing}")
    trained = train(rec["task"], name, preset, progress=progress, max_run_s=max_run_s)
    if not trained.finished:
        print(f"{rec['model']} ({preset}) waits for its teacher {name}; run again to resume", file=sys.stderr)
        return None
    path = ckpt.checkpoint_dir(preset, name) / distill.LOGITS_FILE  # with the teacher: its students share them
    autocast = training_autocast(teacher_rec["params"])
    key = distill.logits_key(trained.weights, checksum, int(teacher_rec["params"]["max_length"]), rec["train_subset"],
                             autocast)
    cached = distill.load_cached(path, key)
    if cached is not None:
        return cached
    teacher = _module(teacher_rec, pretrained=False)
    teacher.load_state_dict(torch.load(trained.weights, map_location="cpu", weights_only=True))
    adapter = _TextAdapter(teacher_rec["params"], rec["train_subset"], tokenizer_for(name))
    by_length = np.argsort([len(ids) for ids in adapter.ids], kind="stable")  # little padding per batch
    batches = [by_length[i : i + 128] for i in range(0, len(by_length), 128)]
    logits = distill.compute_logits(teacher, lambda idx: adapter.batch(idx, None)[0], batches, adapter.n_train,
                                    autocast=autocast, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    distill.save_cached(path, key, logits)
    return logits


def _finish(model: nn.Module, adapter: _Adapter, rec: dict, checksum: str, preset: str, model_name: str,
            sidecar: dict) -> TrainResult:
    """Round the weights as published, score the rounded weights, cache them, publish them (without
    the tensors the recipe froze: those stay the verified pretrained ones)."""
    # what is evaluated, cached and profiled = what is published (+ the frozen pretrained tensors)
    stored = _round_as_published(model, rec["params"])
    eval_acc, eval_n = adapter.evaluate(model, rec["eval_subset"])
    weights = ckpt.checkpoint_dir(preset, model_name) / ckpt.WEIGHTS_FILE
    model.eval()
    _save_atomic(model.state_dict(), weights)
    sidecar = {**sidecar, "eval_split": EVAL_SPLIT[rec["task"]], "eval_n": eval_n, "eval_accuracy": eval_acc,
               "weights_rounding": "published fp16 (bf16 where fp16 overflows), upcast to fp32"}
    published.publish(preset, model_name, stored, rec, checksum, sidecar)
    ckpt.write_sidecar(preset, model_name, sidecar)
    return TrainResult(weights, sidecar, reused=False)


def _publish_cached(rec: dict, checksum: str, preset: str, model_name: str, sidecar: dict) -> TrainResult:
    """A finished cached checkpoint from before publishing existed: round, re-score and publish it."""
    model, adapter, _, _ = _build(rec)
    model.load_state_dict(torch.load(ckpt.checkpoint_dir(preset, model_name) / ckpt.WEIGHTS_FILE,
                                     map_location="cpu", weights_only=True))
    sidecar = {k: v for k, v in sidecar.items() if k not in ("eval_accuracy", "eval_n", "eval_split")}
    return _finish(model, adapter, rec, checksum, preset, model_name,
                   {**sidecar, "eval_accuracy_before_rounding": ckpt.read_sidecar(preset, model_name)["eval_accuracy"]})


def _save_atomic(state: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _install_published(preset: str, model_name: str, entry: dict) -> TrainResult:
    """Cache the verified published weights as this machine's checkpoint (fp32) with their record."""
    weights = ckpt.checkpoint_dir(preset, model_name) / ckpt.WEIGHTS_FILE
    state = published.upcast(published.load_verified(preset, model_name, entry))
    rec = entry["recipe"]
    frozen = frozen_prefixes(rec["params"])
    if frozen:  # the published file lacks the frozen tensors: start from the verified pretrained model
        module = _module(rec, pretrained=True)
        missing, unexpected = module.load_state_dict(state, strict=False)
        stray = [k for k in missing if not k.startswith(frozen)]
        if stray or unexpected:
            raise published.PublishedWeightsError(
                f"published {entry['file']} does not fit {model_name}: missing {stray[:5]}, unexpected {unexpected[:5]}")
        state = module.state_dict()
    _save_atomic(state, weights)
    sidecar = {**entry["record"], "installed_from": f"published {entry['file']} sha256 {entry['sha256']}"}
    ckpt.write_sidecar(preset, model_name, sidecar)
    return TrainResult(weights, sidecar, reused=True)
