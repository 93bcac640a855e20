"""Training: a real step lowers the loss; checkpoints carry a sidecar, are reused, and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from planner.models import checkpoints as ckpt
from planner.models import train as train_mod


@pytest.fixture
def tiny_env(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    return tiny_data_dir


def _loss_after_steps(rec, steps):
    torch.manual_seed(0)
    model, adapter, optimizer, _ = train_mod._build(rec)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * 0.5
    model.train()
    inputs, labels = adapter.batch(np.arange(min(16, adapter.n_train)), torch.Generator().manual_seed(0))
    losses = []
    for _ in range(steps):
        torch.manual_seed(1)
        loss = torch.nn.functional.cross_entropy(adapter.logits(model, inputs).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("model", ["mobilenet_v2", "minilm-l3"])
def test_a_training_step_lowers_the_loss(tiny_env, model):
    losses = _loss_after_steps(train_mod.recipe(model, "quick"), 4)
    assert losses[-1] < losses[0]


def test_train_writes_sidecar_and_reuses_matching_checkpoint(tiny_env):
    result = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert not result.reused and result.weights.exists()
    side = json.loads((result.weights.parent / ckpt.SIDECAR_FILE).read_text())
    assert side["data_checksum"] == ckpt.data_checksum("cifar10")
    assert side["recipe"]["model"] == "mobilenet_v2" and side["seed"] == 0
    assert side["eval_n"] == 200 and 0.0 <= side["eval_accuracy"] <= 1.0
    assert side["train_seconds"] > 0 and "torch" in side["library_versions"]
    assert side["steps"] == 6  # 200 images / batch 128 = 1 step per epoch, quick max_epochs 6
    assert not (result.weights.parent / ckpt.STATE_FILE).exists()
    again = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert again.reused and again.sidecar == side


def test_interrupted_training_resumes_from_the_last_epoch(tiny_env, monkeypatch, capsys):
    original = train_mod._VisionAdapter.batch
    calls = {"n": 0}

    def flaky(self, indices, generator):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, indices, generator)

    monkeypatch.setattr(train_mod._VisionAdapter, "batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    state = torch.load(ckpt.checkpoint_dir("quick", "mobilenet_v2") / ckpt.STATE_FILE, weights_only=False)
    assert state["loop"]["step"] == 3
    monkeypatch.setattr(train_mod._VisionAdapter, "batch", original)
    result = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert "resuming mobilenet_v2 (quick) at step 3" in capsys.readouterr().err
    assert result.sidecar["steps"] == 6


def test_wrong_task_and_untrainable_model_fail_clearly(tiny_env):
    with pytest.raises(ValueError, match="is a cifar10 model, not a sst2 model"):
        train_mod.train("sst2", "resnet18", "quick", progress=False)
    with pytest.raises(ValueError, match="not trained here"):
        train_mod.recipe("distilbert", "quick")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        train_mod.train("sst2", "nope", "quick", progress=False)


def test_every_finished_epoch_is_scored_and_recorded(tiny_env):
    side = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False).sidecar
    curve = side["epoch_losses"]
    assert [row["epoch"] for row in curve] == list(range(6))
    assert all(0.0 <= row["eval_accuracy"] <= 1.0 and row["mean_loss"] > 0 for row in curve)
    assert [row["train_seconds"] for row in curve] == sorted(row["train_seconds"] for row in curve)


def test_a_run_capped_by_max_run_s_pauses_and_the_next_run_finishes_it(tiny_env, monkeypatch):
    clock = {"t": 0.0}

    def fake_clock():  # every call advances 1 s: the cap of 5 s stops the first run after a few steps
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(train_mod.time, "perf_counter", fake_clock)
    paused = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False, max_run_s=5)
    assert not paused.finished and paused.weights is None and 0 < paused.sidecar["steps"] < 6
    assert ckpt.read_sidecar("quick", "mobilenet_v2") is None
    monkeypatch.setattr(train_mod.time, "perf_counter", __import__("time").perf_counter)
    done = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert done.finished and done.weights.exists() and done.sidecar["steps"] == 6
    with pytest.raises(ValueError, match="max_run_s must be positive"):
        train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False, max_run_s=0)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_the_cifar_stem_keeps_the_full_32x32_image_in_the_first_block(arch):
    from planner.models.vision import build_cnn

    for stem, size in (("cifar", 32), ("imagenet", 8 if arch == "resnet18" else 16)):
        module = build_cnn(arch, stem=stem).eval()
        stages = module.layer1 if arch == "resnet18" else module.features[1]
        seen = {}
        stages.register_forward_hook(lambda m, i, o: seen.update(hw=tuple(o.shape[-2:])))
        with torch.no_grad():
            assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert seen["hw"] == (size, size), (stem, seen)
    with pytest.raises(ValueError, match="unknown CNN stem 'tiny'"):
        build_cnn(arch, stem="tiny")
