"""Text encoders: the builder keyed by source, layer truncation (first / alternate), each model's own
tokenizer everywhere, the optional mpnet extra (verification, gating, skips) and, where the extra is
installed, the real all-mpnet-base-v2 archive."""

from __future__ import annotations

from planner.tables import file_sha256

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from planner import config
from planner.commands import train as train_cmd
from planner.models import checkpoints as ckpt
from planner.models import extras, mpnet, text, zoo
from planner.models import train as train_mod
from planner.models.base import ModelUnavailableError, VariantSpec
from planner.profile import toy
from planner.profile.space import enumerate_space

MPNET_WORDS = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>", "the", "a", "movie", "film", "good", "bad", "is", "was",
               "it", "not", "great", "!", ".", ","]
HAS_EXTRA = not mpnet.missing_packages()
needs_extra = pytest.mark.skipif(not HAS_EXTRA, reason=f"optional extra 'mpnet' not installed ({mpnet.INSTALL_HINT})")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory) -> dict[str, Path]:
    """Random-weight stand-ins saved like the real sources: a 4-layer BERT with MiniLM's tokenizer
    and a 12-layer MPNet with an MPNet tokenizer of its own (pad id 1, <s> = 0)."""
    from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel, MPNetTokenizer

    root = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    bert_tok = text.load_tokenizer()
    bert = BertModel(BertConfig(vocab_size=bert_tok.vocab_size, hidden_size=16, num_hidden_layers=4,
                                num_attention_heads=2, intermediate_size=32), add_pooling_layer=False)
    bert.save_pretrained(root / "bert")
    bert_tok.save_pretrained(root / "bert")
    mp = MPNetModel(MPNetConfig(vocab_size=len(MPNET_WORDS), hidden_size=16, num_hidden_layers=12,
                                num_attention_heads=2, intermediate_size=32), add_pooling_layer=False)
    mp.save_pretrained(root / "mpnet")
    MPNetTokenizer(vocab={w: i for i, w in enumerate(MPNET_WORDS)}).save_pretrained(root / "mpnet")
    return {"bert": root / "bert", "mpnet": root / "mpnet"}


@pytest.fixture
def tiny_mpnet(tiny_sources, monkeypatch) -> Path:
    """The tiny MPNet installed as the ``all-mpnet-base-v2`` source (no extra needed)."""
    monkeypatch.setitem(text.SOURCES, mpnet.SOURCE, lambda: tiny_sources["mpnet"])
    monkeypatch.setitem(text.SOURCES, "tiny-bert", lambda: tiny_sources["bert"])
    return tiny_sources["mpnet"]


# ----------------------------------------------------------------------------- builder and layer maps


@pytest.mark.parametrize("n, layer_map, total, keep", [
    (6, "first", 12, [0, 1, 2, 3, 4, 5]), (6, "alternate", 12, [0, 2, 4, 6, 8, 10]),
    (12, "first", 12, list(range(12))), (3, "alternate", 6, [0, 2, 4]), (1, "alternate", 1, [0]),
])
def test_kept_layers(n, layer_map, total, keep):
    assert text.kept_layers(n, total, layer_map) == keep


@pytest.mark.parametrize("n, layer_map, total, needle", [
    (7, "alternate", 12, "1..6"), (13, "first", 12, "1..12"), (0, "first", 12, "got 0"), (3, "every-third", 12, "layer_map"),
])
def test_kept_layers_rejects_impossible_maps(n, layer_map, total, needle):
    with pytest.raises(ValueError, match=needle):
        text.kept_layers(n, total, layer_map)


@pytest.mark.parametrize("source, n, layer_map", [
    (mpnet.SOURCE, 6, "alternate"), (mpnet.SOURCE, 4, "first"), (mpnet.SOURCE, 12, "first"),
    ("tiny-bert", 2, "alternate"), ("tiny-bert", 3, "first"),
])
def test_truncated_encoder_holds_the_chosen_source_layers(tiny_mpnet, source, n, layer_map):
    from transformers import AutoModel

    full = _state(AutoModel.from_pretrained(str(text.source_dir(source)), local_files_only=True,
                                            add_pooling_layer=False))
    model = text.build_encoder(source, n, layer_map, pretrained=True)
    got = model.encoder.state_dict()
    keep = text.kept_layers(n, 12 if source == mpnet.SOURCE else 4, layer_map)
    assert model.encoder.config.num_hidden_layers == n == len(model.encoder.encoder.layer)
    layer_keys = [k for k in got if k.startswith("encoder.layer.")]
    assert {int(k.split(".")[2]) for k in layer_keys} == set(range(n))
    for key in layer_keys:
        i = int(key.split(".")[2])
        source_key = key.replace(f"encoder.layer.{i}.", f"encoder.layer.{keep[i]}.", 1)
        torch.testing.assert_close(got[key], full[source_key], rtol=0, atol=0)
    for key in (k for k in got if not k.startswith("encoder.layer.")):  # embeddings, shared position bias
        torch.testing.assert_close(got[key], full[key], rtol=0, atol=0)


def test_bare_shape_takes_a_trained_state_and_forward_signature(tiny_mpnet):
    trained = text.build_encoder(mpnet.SOURCE, 6, "alternate", pretrained=True).eval()
    bare = text.encoder_from_params(mpnet.SOURCE, {"num_layers": 6, "layer_map": "alternate"}, pretrained=False)
    bare.load_state_dict(trained.state_dict(), strict=True)
    batch = text.encode(text.load_tokenizer(tiny_mpnet), ["the movie was good", "a bad film !"], 16)
    args = (torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
    with torch.inference_mode():
        logits = bare.eval()(*args)
        torch.testing.assert_close(logits, trained(*args))
    assert logits.shape == (2, text.N_CLASSES)


def test_minilm_builder_is_unchanged(tiny_mpnet):
    """``build_minilm`` stays the first-layers MiniLM that existing checkpoints were trained as."""
    model = text.build_minilm(3, pretrained=False)
    assert len(model.encoder.encoder.layer) == 3 and model.head.in_features == 384
    spec = config.model_spec("minilm-l3")
    assert set(text.encoder_from_params(spec.source, spec.params, pretrained=False).state_dict()) == set(model.state_dict())


def test_unknown_source_is_a_config_error():
    with pytest.raises(config.ConfigError, match="unknown text encoder source 'gpt9'"):
        text.build_encoder("gpt9", 2)


# ----------------------------------------------------------------------------- tokenizer routing


def test_each_text_model_gets_its_own_tokenizer(tiny_mpnet):
    minilm, mp = text.tokenizer_for("minilm-l6"), text.tokenizer_for("mpnet-l12")
    assert Path(minilm.name_or_path) == text.minilm_dir() and minilm.pad_token_id == 0
    assert Path(mp.name_or_path) == tiny_mpnet and (mp.pad_token_id, mp.cls_token_id) == (1, 0)
    assert Path(text.tokenizer_for("distilbert").name_or_path) == text.minilm_dir()  # no checkpoint: BERT vocab
    with pytest.raises(config.ConfigError, match="not a text model"):
        text.tokenizer_for("resnet18")


def test_training_and_serving_tokenise_with_the_models_tokenizer(tiny_mpnet, tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    rec = dict(train_mod.recipe("mpnet-l12", "quick"), train_subset=16)
    torch.manual_seed(0)
    model, adapter, _, _ = train_mod._build(rec)
    assert Path(adapter.tokenizer.name_or_path) == tiny_mpnet and adapter.pad_id == 1
    (ids, mask), _ = adapter.batch(np.arange(4), torch.Generator())
    assert (ids[:, 0] == 0).all() and (ids[mask == 0] == 1).all()
    torch.save(model.state_dict(), ckpt.checkpoint_dir("quick", "mpnet-l12") / ckpt.WEIGHTS_FILE)
    base = zoo.base_model("sst2", "mpnet-l12", "quick")
    feeds = base.preprocess(["the movie was good", "bad"])
    assert feeds["input_ids"].tolist() == [[0, 5, 7, 12, 9, 2], [0, 10, 2, 1, 1, 1]]
    with torch.inference_mode():
        assert base.module(*(torch.from_numpy(v) for v in feeds.values())).shape == (2, 2)


# ----------------------------------------------------------------------------- the optional extra


def test_presets_use_extra_models_only_when_they_list_the_extra():
    core = ["minilm-l6", "minilm-l3", "distilbert"]
    assert config.task_models("sst2") == core == zoo.task_models("sst2")
    assert config.task_models("sst2", "quick") == ["minilm-l6", "minilm-l3"]  # quick skips DistilBERT
    assert "mpnet" in config.preset("full").extras and "mpnet" not in config.preset("quick").extras
    full = config.task_models("sst2", "full")
    assert "mpnet-l12" in full and set(core) <= set(full)
    assert config.task_models("cifar10", "full") == config.task_models("cifar10")


def test_profile_space_of_a_preset():
    """A preset's space holds its models and only the cascades whose members it uses."""
    cfg = config.models().model_copy(update={"cascades": {"sst2": [("minilm-l3", "minilm-l6"), ("minilm-l6", "mpnet-l12")]}})
    spaces = {p: enumerate_space(["sst2"], [1], ["cpu"], toy, runtimes=["torch"], precisions=["fp32"],
                                 models_config=cfg, thresholds=[0.9], preset=p) for p in ("quick", "full")}
    singles = {p: {c.model for c in s.feasible if c.model} for p, s in spaces.items()}
    cascades = {p: {c.cascade[:2] for c in s.feasible if c.cascade} for p, s in spaces.items()}
    assert singles["quick"] == {"minilm-l6", "minilm-l3", "distilbert"} and cascades["quick"] == {("minilm-l3", "minilm-l6")}
    assert singles["full"] == singles["quick"] | {"mpnet-l12"}  # the toy zoo keeps what a preset skips
    assert cascades["full"] == {("minilm-l3", "minilm-l6"), ("minilm-l6", "mpnet-l12")}
    assert spaces["quick"].infeasible.empty


def test_a_preset_skipping_an_unknown_model_is_a_clear_error(monkeypatch):
    bad = config.preset("quick").model_copy(update={"skip_models": ["distilbart"]})
    monkeypatch.setattr(config, "preset", lambda name=None: bad)
    with pytest.raises(config.ConfigError, match=r"skip_models names unknown models \['distilbart'\]"):
        config.task_models("sst2", "quick")


def test_missing_extra_is_a_one_line_skip_everywhere(monkeypatch, capsys):
    monkeypatch.setattr(mpnet, "missing_packages", lambda: [mpnet.PACKAGES[2]])
    monkeypatch.setitem(extras.EXTRAS, mpnet.EXTRA, (mpnet.missing_packages, mpnet.INSTALL_HINT))
    reason = extras.unavailable_reason("mpnet-l12")
    assert "optional extra 'mpnet'" in reason and mpnet.PACKAGES[2] in reason and "\n" not in reason
    assert extras.unavailable_reason("minilm-l6") is None
    assert zoo.variant_support(VariantSpec("sst2", "mpnet-l12")) == extras.unavailable_reason("mpnet-l12")
    args = argparse.Namespace(task="sst2", model="mpnet-l12", preset="full", threads=1, force=False, max_run_minutes=None)
    assert train_cmd.run(args) == 0
    line = json.loads(capsys.readouterr().out)
    assert line == {"status": "skipped", "reason": reason}
    assert train_cmd.run(argparse.Namespace(**{**vars(args), "preset": "quick"})) == 0
    assert "not part of preset 'quick'" in json.loads(capsys.readouterr().out)["reason"]


def test_missing_packages_raise_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(mpnet, "missing_packages", lambda: list(mpnet.PACKAGES))
    with pytest.raises(ModelUnavailableError, match="make venv PRESET=full"):
        mpnet.part_files()


def _split_archive(tmp_path: Path, weights: bytes) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"{mpnet.SOURCE}/config.json", "{}")
        zf.writestr(f"{mpnet.SOURCE}/{mpnet.WEIGHTS_FILE}", weights)
        zf.writestr(f"{mpnet.SOURCE}/desktop.ini", "junk")
    data = buffer.getvalue()
    parts = []
    for i, start in enumerate(range(0, len(data), 100), start=1):
        parts.append(tmp_path / f"{mpnet.SOURCE}.zip.{i:03d}")
        parts[-1].write_bytes(data[start:start + 100])
    return parts


def test_archive_is_joined_verified_and_unzipped_once(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    weights = b"weights" * 50
    parts = _split_archive(tmp_path, weights)
    joined = b"".join(p.read_bytes() for p in parts)
    monkeypatch.setattr(mpnet, "part_files", lambda: parts)
    monkeypatch.setattr(mpnet, "ZIP_SHA256", hashlib.sha256(joined).hexdigest())
    monkeypatch.setattr(mpnet, "WEIGHTS_SHA256", hashlib.sha256(weights).hexdigest())
    monkeypatch.setattr(mpnet, "WEIGHTS_BYTES", len(weights))
    folder = mpnet.model_dir()
    assert (folder / mpnet.WEIGHTS_FILE).read_bytes() == weights and not (folder / "desktop.ini").exists()
    note = json.loads((folder / mpnet.NOTE_FILE).read_text())
    assert note["zip_sha256"] == mpnet.ZIP_SHA256 and note["packages"] == {p: mpnet.VERSION for p in mpnet.PACKAGES}
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no zip or temp folder left
    monkeypatch.setattr(mpnet, "part_files", lambda: pytest.fail("a verified folder is not rebuilt"))
    assert mpnet.model_dir() == folder


@pytest.mark.parametrize("which", ["zip", "weights"])
def test_a_checksum_mismatch_leaves_nothing_behind(tmp_path, monkeypatch, which):
    import hashlib

    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    weights = b"weights" * 50
    parts = _split_archive(tmp_path, weights)
    monkeypatch.setattr(mpnet, "part_files", lambda: parts)
    good_zip = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    monkeypatch.setattr(mpnet, "ZIP_SHA256", "0" * 64 if which == "zip" else good_zip)
    monkeypatch.setattr(mpnet, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(ModelUnavailableError, match="expected " + "0" * 64):
        mpnet.model_dir()
    assert not any((tmp_path / "cache" / "pretrained").iterdir())


# ----------------------------------------------------------------------------- the real archive (extra installed)


@needs_extra
def test_real_archive_config_parameters_and_weights_checksum():
    from transformers import AutoConfig

    folder = mpnet.model_dir()
    cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == ("mpnet", 768, 12, 30527)
    assert file_sha256(folder / mpnet.WEIGHTS_FILE) == mpnet.WEIGHTS_SHA256
    full = text.build_encoder(mpnet.SOURCE, 12, pretrained=False)
    assert sum(p.numel() for p in full.encoder.parameters()) == 108_895_872
    half = text.build_encoder(mpnet.SOURCE, 6, "alternate", pretrained=False)
    assert sum(p.numel() for p in half.encoder.parameters()) == 66_368_640
    assert type(text.tokenizer_for("mpnet-l12")).__name__.startswith("MPNetTokenizer")


@needs_extra
def test_real_encoder_ranks_paraphrases_above_unrelated_pairs():
    torch.set_num_threads(2)
    paraphrases = [("A man is playing a guitar.", "A person plays the guitar."),
                   ("The movie was wonderful and moving.", "I loved this film, it was touching."),
                   ("How do I reset my password?", "What are the steps to change my password?"),
                   ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
                   ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon.")]
    firsts, seconds = zip(*paraphrases)
    unrelated = list(zip(firsts, seconds[1:] + seconds[:1]))
    model = text.build_encoder(mpnet.SOURCE, 12, pretrained=True).eval()
    tokenizer = text.tokenizer_for("mpnet-l12")

    def cosines(pairs):
        a = text.encode(tokenizer, [p[0] for p in pairs], 64)
        b = text.encode(tokenizer, [p[1] for p in pairs], 64)
        with torch.inference_mode():
            ea = model.pooled(*(torch.from_numpy(v) for v in a.values()))
            eb = model.pooled(*(torch.from_numpy(v) for v in b.values()))
        return torch.nn.functional.cosine_similarity(ea, eb).numpy()

    same, other = cosines(paraphrases), cosines(unrelated)
    assert same.min() > 0.6 and other.max() < 0.3, (same, other)


def test_mpnet_encoder_exports_to_onnx_and_matches_torch(tiny_mpnet, tmp_path):
    """The export path the zoo uses (dynamic batch and sequence axes, verified against torch fp32)."""
    from planner.models import onnx_export as ox

    torch.manual_seed(0)
    module = text.build_encoder(mpnet.SOURCE, 6, "alternate", pretrained=True).eval()
    tokenizer = text.load_tokenizer(tiny_mpnet)
    sentences = [" ".join(MPNET_WORDS[5 + (i * 7 + j) % 14] for j in range(1 + i % 9)) for i in range(24)]
    path = ox.ensure_fp32(tmp_path, "key", module, lambda xs: text.encode(tokenizer, xs, 64), sentences, 1)
    assert path.exists() and json.loads(path.with_suffix(".json").read_text())["verify_rel_l2"] <= ox.MAX_REL_L2
