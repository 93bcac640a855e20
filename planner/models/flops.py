"""FLOPs per example, counted by ``torch.utils.flop_counter`` on the fp32 module, and the weight and
activation sizes that set the bytes a call moves (both for the roofline).

Text models are counted at the mean token length of the SST-2 dev set under the model's tokenizer
(dynamic padding makes per-batch cost vary; the mean is what a served request costs on average).
FLOPs do not depend on weights, so the architecture is built without loading any checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from planner import config

COUNT_BATCH = 8


def build_for_count(model: str) -> tuple[torch.nn.Module, str]:
    """(fp32 module without trained weights, 'vision' | 'text'): the architecture FLOPs are counted on."""
    spec = config.model_spec(model)
    params = spec.params
    if spec.kind == "torchvision_scratch":
        from planner.models.vision import cnn_from_params

        return cnn_from_params(params).eval(), "vision"
    if spec.kind == "hf_encoder_finetune":
        from planner.models.text import encoder_from_params

        return encoder_from_params(spec.source, params, pretrained=False).eval(), "text"
    from planner.models.text import load_distilbert

    module, _, _ = load_distilbert(spec.source)
    return module, "text"


@lru_cache(maxsize=None)
def mean_sequence_length(task: str = "sst2", max_length: int = 64, model: str = "minilm-l6") -> int:
    """Mean tokenised length (with special tokens, truncated at ``max_length``) of the eval sentences
    under ``model``'s own tokenizer."""
    from planner.models.datasets import eval_inputs
    from planner.models.text import tokenizer_for

    sentences, _ = eval_inputs(task)
    lengths = [len(ids) for ids in tokenizer_for(model)(sentences, truncation=True, max_length=max_length)["input_ids"]]
    return int(round(sum(lengths) / len(lengths)))


@lru_cache(maxsize=None)
def flops_per_item(task: str, model: str) -> float:
    """Forward-pass FLOPs of one example (multiply-add = 2 FLOPs), counted on a batch and divided."""
    spec = config.model_spec(model)
    config.validate_task(task)
    if spec.task != task:
        raise config.ConfigError(f"model {model!r} is a {spec.task} model, not a {task} model")
    module, kind = build_for_count(model)
    args = count_inputs(task, model, kind, COUNT_BATCH)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*args)
    return counter.get_total_flops() / COUNT_BATCH


def count_inputs(task: str, model: str, kind: str, batch_size: int) -> tuple[torch.Tensor, ...]:
    """The input batch FLOPs are counted on: 32x32 images, or token ids and mask at the mean length."""
    if kind == "vision":
        return (torch.zeros(batch_size, 3, 32, 32),)
    length = mean_sequence_length(task, int(config.model_spec(model).params.get("max_length", 64)), model)
    return (torch.ones(batch_size, length, dtype=torch.long), torch.ones(batch_size, length, dtype=torch.long))


@dataclass(frozen=True)
class Footprint:
    """Sizes of one model that set its memory traffic: weight elements (embeddings excluded) and the
    elements its leaf modules output per example."""

    weight_elements: int
    activation_elements_per_item: float


def footprint(module: torch.nn.Module, inputs: tuple, batch_size: int) -> Footprint:
    """Count ``module``'s non-embedding weights and, with forward hooks on its leaf modules, the
    elements they output for ``inputs`` (a batch of ``batch_size`` examples), per example."""
    weights = sum(p.numel() for m in module.modules() if not isinstance(m, torch.nn.Embedding)
                  for p in m.parameters(recurse=False))
    outputs = [0]

    def count(_module, _args, out) -> None:
        tensors = out if isinstance(out, (tuple, list)) else (out,)
        outputs[0] += sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.inference_mode():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return Footprint(int(weights), outputs[0] / batch_size)


@lru_cache(maxsize=None)
def model_footprint(task: str, model: str, batch_size: int = COUNT_BATCH) -> Footprint:
    """``model``'s :class:`Footprint`, built without weights at the input shapes FLOPs are counted at
    (for the roofline's bytes moved, :func:`planner.profile.roofline.bytes_per_item`). The sweep
    records it beside the FLOPs, so the roofline is drawn from the profile folder alone."""
    module, kind = build_for_count(model)
    return footprint(module, count_inputs(task, model, kind, batch_size), batch_size)
