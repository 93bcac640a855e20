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
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path / "results"))
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


def test_finished_training_publishes_verified_half_precision_weights_a_fresh_cache_installs(tiny_env, tmp_path,
                                                                                            monkeypatch):
    from planner.models import published

    trained = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    entry = published.read_manifest("quick")["models"]["mobilenet_v2"]
    stored = published.load_verified("quick", "mobilenet_v2", entry)
    assert {str(t.dtype) for t in stored.values() if t.is_floating_point()} == {"torch.float16"}
    cached = torch.load(trained.weights, weights_only=True)
    assert all(torch.equal(cached[k], stored[k].float() if stored[k].is_floating_point() else stored[k])
               for k in stored)  # what is cached (and profiled) is exactly what is published
    assert entry["record"]["eval_accuracy"] == trained.sidecar["eval_accuracy"]

    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "fresh-cache"))  # a fresh clone: no cache
    installed = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert installed.reused and "published mobilenet_v2.safetensors" in installed.sidecar["installed_from"]
    assert all(torch.equal(v, cached[k]) for k, v in torch.load(installed.weights, weights_only=True).items())
    again = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False, force=True)
    assert not again.reused  # --from-scratch trains anew even with published weights present

    path = published.weights_dir("quick") / entry["file"]
    path.write_bytes(path.read_bytes()[:-8])
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "third-cache"))
    with pytest.raises(published.PublishedWeightsError, match="has sha256 .* but MANIFEST.json records"):
        published.load_verified("quick", "mobilenet_v2", published.read_manifest("quick")["models"]["mobilenet_v2"])


def test_published_weights_are_used_only_for_the_same_recipe_and_data(tiny_env):
    from planner.models import published

    train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    rec = train_mod.recipe("mobilenet_v2", "quick")
    checksum = ckpt.data_checksum("cifar10")
    assert published.matching_entry("quick", "mobilenet_v2", rec, checksum) is not None
    assert published.matching_entry("quick", "mobilenet_v2", {**rec, "max_epochs": 99}, checksum) is None
    assert published.matching_entry("quick", "mobilenet_v2", rec, "0" * 64) is None


def test_rounding_for_publishing_falls_back_to_bf16_only_where_fp16_overflows():
    from planner.models import published

    state = {"w": torch.tensor([0.1, -2.0]), "huge": torch.tensor([1e6, 1.0]), "count": torch.tensor(7)}
    stored = published.round_for_publishing(state)
    assert stored["w"].dtype == torch.float16 and stored["huge"].dtype == torch.bfloat16
    assert stored["count"].dtype == torch.int64 and published.upcast(stored)["huge"][0] == pytest.approx(1e6, rel=1e-2)


def test_a_checkpoint_finished_before_publishing_is_rounded_rescored_and_published(tiny_env):
    from planner.models import published

    trained = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    side = dict(trained.sidecar)
    side.pop("weights_rounding")
    ckpt.write_sidecar("quick", "mobilenet_v2", side)
    (published.weights_dir("quick") / published.MANIFEST_FILE).unlink()
    result = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert "weights_rounding" in result.sidecar and "eval_accuracy_before_rounding" in result.sidecar
    assert "mobilenet_v2" in published.read_manifest("quick")["models"]


def test_a_recipe_that_freezes_layers_trains_and_publishes_only_the_rest(tiny_env, tmp_path, monkeypatch):
    """Frozen tensors keep their pretrained values, are left out of the published file and come back
    from the pretrained model when a fresh cache installs it."""
    from planner.models import published

    rec = train_mod.recipe("minilm-l3", "quick")
    assert train_mod.frozen_prefixes(rec["params"]) == ("encoder.embeddings.",)
    pretrained = train_mod._module(rec, pretrained=True).state_dict()
    trained = train_mod.train("sst2", "minilm-l3", "quick", progress=False)
    cached = torch.load(trained.weights, weights_only=True)
    frozen = [k for k in cached if k.startswith("encoder.embeddings.")]
    assert frozen and all(torch.equal(cached[k], pretrained[k]) for k in frozen)
    assert not torch.equal(cached["head.weight"], pretrained["head.weight"])
    entry = published.read_manifest("quick")["models"]["minilm-l3"]
    stored = published.load_verified("quick", "minilm-l3", entry)
    assert not any(k.startswith("encoder.embeddings.") for k in stored) and "head.weight" in stored
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "fresh-cache"))
    installed = train_mod.train("sst2", "minilm-l3", "quick", progress=False)
    assert installed.reused
    assert all(torch.equal(v, cached[k]) for k, v in torch.load(installed.weights, weights_only=True).items())
    assert train_mod.frozen_prefixes({"freeze_layers_below": 2}) == ("encoder.encoder.layer.0.", "encoder.encoder.layer.1.")


def test_learning_rate_cycles_repeat_the_schedule_scaled_and_reject_bad_shapes():
    schedule = train_mod.cycled(lambda q: 1.0 - q, [(3, 1.0), (1, 0.5)])
    assert schedule(0.0) == 1.0 and schedule(0.5) == pytest.approx(1 / 3)
    assert schedule(0.75) == 0.5 and schedule(0.875) == pytest.approx(0.25)
    assert train_mod.lr_cycles({}) == [(1.0, 1.0)]
    for bad in ([[8, 0.0]], [[8]], "8,6", []):
        with pytest.raises(ValueError, match="params.cycles"):
            train_mod.lr_cycles({"cycles": bad})


def _schedule(monkeypatch, original, cycles, epochs):
    """Train with ``cycles`` (None: one cycle) over ``epochs`` epochs instead of the configured schedule."""
    def patched(model, preset):
        rec = original(model, preset)
        params = {k: v for k, v in rec["params"].items() if k != "cycles"}
        return {**rec, "params": params if cycles is None else {**params, "cycles": cycles}, "max_epochs": epochs}
    monkeypatch.setattr(train_mod, "recipe", patched)


def test_a_longer_recipe_continues_from_the_finished_checkpoint_of_its_first_cycle(tiny_env, monkeypatch, capsys):
    """A second learning-rate cycle added to a finished recipe trains only the new epochs, and ends with
    the weights a from-scratch run of the longer recipe ends with."""
    original = train_mod.recipe
    _schedule(monkeypatch, original, None, 3)
    first = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert first.sidecar["steps"] == 3
    _schedule(monkeypatch, original, [[3, 1.0], [3, 0.3]], 6)
    continued = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    err = capsys.readouterr().err
    assert "continuing mobilenet_v2 (quick) from its finished checkpoint of the first 1 learning-rate" in err
    assert continued.sidecar["steps"] == 6 and [r["epoch"] for r in continued.sidecar["epoch_losses"]] == list(range(6))
    assert continued.sidecar["epoch_losses"][:3] == first.sidecar["epoch_losses"]
    kept = torch.load(continued.weights, weights_only=True)
    scratch = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False, force=True)
    assert "continuing" not in capsys.readouterr().err
    fresh = torch.load(scratch.weights, weights_only=True)
    for name, tensor in fresh.items():
        torch.testing.assert_close(kept[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    _schedule(monkeypatch, original, [[3, 1.0], [3, 0.3]], 5)  # the first cycle would end mid-epoch: no reuse
    assert train_mod._prefix_recipe(train_mod.recipe("mobilenet_v2", "quick"), 1) is None


def test_averaged_cycle_ends_are_published_and_a_longer_recipe_continues_from_the_kept_ends(tiny_env, monkeypatch,
                                                                                          capsys):
    """``average_cycles: k`` publishes the mean of the last k cycle ends (batch-norm statistics included);
    each cycle end is kept, so a longer averaged recipe trains only its new cycle and ends where a
    from-scratch run of it ends."""
    from planner.models import published

    original = train_mod.recipe

    def schedule(cycles, epochs, average):
        def patched(model, preset):
            rec = original(model, preset)
            # steps alone end the run: under a loaded machine the preset's time budget ran out first (8 of 9 steps)
            return {**rec, "params": {**rec["params"], "cycles": cycles, "average_cycles": average}, "max_epochs": epochs,
                    "time_budget_s": 3600.0}
        monkeypatch.setattr(train_mod, "recipe", patched)

    schedule([[3, 1.0], [3, 0.3]], 6, 1)
    plain = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert plain.sidecar["averaged_cycle_ends"] == 1
    ends = [torch.load(ckpt.checkpoint_dir("quick", "mobilenet_v2") / f"cycle_end_{k}.pt", weights_only=True)
            for k in (1, 2)]
    assert [e["steps"] for e in ends] == [3, 6] and ends[0]["recipe"]["max_epochs"] == 3
    last = torch.load(plain.weights, weights_only=True)
    assert all(torch.equal(last[n], t) for n, t in ends[1]["weights"].items())

    schedule([[3, 1.0], [3, 0.3], [3, 0.1]], 9, 2)
    averaged = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False)
    assert "from its finished checkpoint of the first 2 learning-rate" in capsys.readouterr().err
    assert averaged.sidecar["steps"] == 9 and averaged.sidecar["averaged_cycle_ends"] == 2
    third = torch.load(ckpt.checkpoint_dir("quick", "mobilenet_v2") / "cycle_end_3.pt", weights_only=True)["weights"]
    kept = torch.load(averaged.weights, weights_only=True)
    name = "features.1.conv.0.1.running_mean"  # a batch-norm statistic is averaged like a weight
    expected = published.upcast(published.round_for_publishing({name: (ends[1]["weights"][name] + third[name]) / 2}))
    torch.testing.assert_close(kept[name], expected[name])
    assert not torch.equal(kept[name], third[name])
    scratch = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False, force=True)
    fresh = torch.load(scratch.weights, weights_only=True)
    for key, tensor in fresh.items():
        torch.testing.assert_close(kept[key], tensor, rtol=1e-3, atol=1e-4, msg=key)
    schedule([[8, 1.0], [6, 0.3], [4, 0.1], [3, 0.05], [3, 0.05]], 6, 3)  # ends between epochs, two in one step
    short = train_mod.train("cifar10", "mobilenet_v2", "quick", progress=False, force=True)
    assert short.finished and short.sidecar["steps"] == 6 and short.sidecar["averaged_cycle_ends"] == 3
    for bad in (0, 4, 1.5, True):
        with pytest.raises(ValueError, match="params.average_cycles"):
            train_mod.averaged_cycles({"cycles": [[3, 1.0], [3, 0.3], [3, 0.1]], "average_cycles": bad})


PUBLISHED_BUDGET_BYTES = 150_000_000  # issue #14: all published checkpoints together


def test_committed_full_weights_verify_and_are_the_ones_make_report_installs(monkeypatch):
    """Every committed full-preset checkpoint verifies by sha256, was trained by the current recipe on the
    current data (so `make report PRESET=full` installs it instead of retraining), fits its network,
    and all of them stay within the publication budget."""
    from planner import config
    from planner.models import extras, published

    monkeypatch.delenv("PLANNER_RESULTS_DIR", raising=False)  # the committed results/full
    manifest = published.read_manifest("full")["models"]
    if not manifest:
        pytest.skip("no full-preset weights are published")
    assert sum(entry["bytes"] for entry in manifest.values()) <= PUBLISHED_BUDGET_BYTES
    for model, entry in manifest.items():
        spec = config.model_spec(model)
        assert published.matching_entry("full", model, train_mod.recipe(model, "full"),
                                        ckpt.data_checksum(spec.task)) is not None, model
        stored = published.load_verified("full", model, entry)
        if extras.unavailable_reason(model) is None:
            frozen = train_mod.frozen_prefixes(entry["recipe"]["params"])
            module = train_mod._module(entry["recipe"], pretrained=False)
            missing, unexpected = module.load_state_dict(published.upcast(stored), strict=False)
            assert not unexpected and all(k.startswith(frozen) for k in missing), model


def test_the_distillation_loss_is_the_label_loss_when_the_teacher_agrees_and_pulls_toward_the_teacher():
    from planner.models.distill import DistillationLoss

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]], requires_grad=True)
    labels = torch.tensor([0, 1])
    loss = DistillationLoss(alpha=0.5, temperature=2.0)
    hard = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(loss(logits, (labels, logits.detach())), 0.5 * hard)
    teacher = torch.tensor([[-3.0, 3.0], [-3.0, 3.0]])  # the teacher says class 1 for both
    DistillationLoss(alpha=1.0, temperature=2.0)(logits, (labels, teacher)).backward()
    assert (logits.grad[:, 1] < 0).all()  # descending the gradient raises the teacher's class
    for bad in ({"alpha": 0.0, "temperature": 1.0}, {"alpha": 0.5, "temperature": 0.0}):
        with pytest.raises(ValueError, match="distillation"):
            DistillationLoss(**bad)


def test_a_distilled_student_trains_on_its_teachers_cached_logits(tiny_env, monkeypatch):
    """The teacher is trained first; its logits over the training set (its own tokenizer) are cached
    beside the teacher and reused on the next run; the recipe names the teacher's recipe, so a changed
    teacher or loss weight is a different recipe, never a reused checkpoint."""
    from planner import config
    from planner.models import distill, published
    from planner.models.text import tokenizer_for

    train_cfg = config.preset("quick").train
    monkeypatch.setitem(train_cfg.distill, "minilm-l3",
                        config.DistillSpec(teacher="minilm-l6", alpha=0.7, temperature=2.0))
    rec = train_mod.recipe("minilm-l3", "quick")
    assert rec["distill"] == {"teacher": train_mod.recipe("minilm-l6", "quick"), "alpha": 0.7, "temperature": 2.0}
    clock = {"t": 0.0}

    def fake_clock():  # every call advances 1 s: a 3 s cap pauses the teacher's own training
        clock["t"] += 1.0
        return clock["t"]
    monkeypatch.setattr(train_mod.time, "perf_counter", fake_clock)
    waiting = train_mod.train("sst2", "minilm-l3", "quick", progress=False, max_run_s=3)
    assert not waiting.finished and waiting.sidecar["waiting_for_teacher"] == "minilm-l6"
    monkeypatch.setattr(train_mod.time, "perf_counter", __import__("time").perf_counter)
    student = train_mod.train("sst2", "minilm-l3", "quick", progress=False)
    assert student.finished and not student.reused
    teacher_weights = ckpt.checkpoint_dir("quick", "minilm-l6") / ckpt.WEIGHTS_FILE
    assert teacher_weights.exists()  # trained on the way
    cache = ckpt.checkpoint_dir("quick", "minilm-l6") / distill.LOGITS_FILE
    autocast = train_mod.training_autocast(rec["distill"]["teacher"]["params"])
    key = distill.logits_key(teacher_weights, ckpt.data_checksum("sst2"), 64, rec["train_subset"], autocast)
    assert distill.load_cached(cache, distill.logits_key(teacher_weights, ckpt.data_checksum("sst2"), 64,
                                                         rec["train_subset"], not autocast)) is None
    logits = distill.load_cached(cache, key)
    adapter = train_mod._TextAdapter(rec["distill"]["teacher"]["params"], rec["train_subset"], tokenizer_for("minilm-l6"))
    assert logits is not None and logits.shape == (adapter.n_train, 2)
    teacher = train_mod._module(rec["distill"]["teacher"], pretrained=False)
    teacher.load_state_dict(torch.load(teacher_weights, weights_only=True))
    teacher.eval()
    with torch.inference_mode():
        direct = teacher(*adapter.batch(np.arange(3), None)[0]).numpy()
    np.testing.assert_allclose(logits[:3], direct, rtol=0.05, atol=0.05)  # bf16 autocast in the cached pass
    assert published.read_manifest("quick")["models"]["minilm-l3"]["recipe"]["distill"]["alpha"] == 0.7

    def no_teacher_pass(*args, **kwargs):
        raise AssertionError("the cached teacher logits should have been reused")
    monkeypatch.setattr(distill, "compute_logits", no_teacher_pass)
    again = train_mod.train("sst2", "minilm-l3", "quick", progress=False, force=True)  # its teacher's logits: cached
    assert again.finished and not again.reused
    monkeypatch.setitem(train_cfg.distill, "minilm-l3",
                        config.DistillSpec(teacher="minilm-l6", alpha=0.3, temperature=2.0))
    assert published.matching_entry("quick", "minilm-l3", train_mod.recipe("minilm-l3", "quick"),
                                    ckpt.data_checksum("sst2")) is None


@pytest.mark.parametrize("student, teacher, match", [
    ("minilm-l3", "minilm-l3", "cannot learn from"),
    ("minilm-l3", "resnet18", "cannot learn from"),
    ("minilm-l3", "mpnet-l12", "needs an extra"),
])
def test_a_teacher_that_cannot_teach_is_a_clear_config_error(monkeypatch, student, teacher, match):
    from planner import config

    monkeypatch.setitem(config.preset("quick").train.distill, student,
                        config.DistillSpec(teacher=teacher, alpha=0.5, temperature=2.0))
    with pytest.raises(config.ConfigError, match=match):
        train_mod.recipe(student, "quick")


def test_bf16_autocast_trains_only_where_the_cpu_computes_bf16(monkeypatch, capsys):
    """Emulated bf16 made a quick MiniLM training step ~25 s on an AVX2 host (17x fp32 for an MLP): the
    recipe's ``autocast_bf16`` applies on CPUs with native bf16 and falls back to fp32, saying so."""
    from planner.models import train

    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: True)
    assert train.training_autocast({"autocast_bf16": True}) is True
    assert train.training_autocast({}) is False
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: False)
    assert train.training_autocast({"autocast_bf16": True}) is False
    assert "no native bf16" in capsys.readouterr().out
