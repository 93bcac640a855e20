"""SmoothQuant-style rebalancing of Linear inputs before torch dynamic int8 (issue 14, item 4).

Why: torch's dynamic int8 ``Linear`` quantizes its input per batch with one scale for the whole
tensor, and on fbgemm with 7 bits (``reduce_range=True``, its guard against int16 overflow in AVX2's
``vpmaddubsw``; ONNX Runtime's dynamic int8 uses 8). A few input channels with large values (the
LayerNorm outlier dimensions of BERT-style encoders) then take the whole range and every other channel
keeps only a few levels. SmoothQuant (Xiao et al., ICML 2023) moves that difficulty into the weights,
which are quantized per output channel and tolerate it:

    y = x Wᵀ = (x / s) (W diag(s))ᵀ,   s_j = max|x_j|^α / max_i |W_ij|^(1-α)

with ``max|x_j|`` measured on training sentences (never on the evaluation set) and ``α`` the share of
the difficulty moved. In a post-LayerNorm encoder the division cannot be folded into the LayerNorm
before the layer (its output is also the residual branch), so it stays an elementwise multiply in front
of the layer (:class:`SmoothedInput`): one pass over the activations, small next to the matmul.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn


class SmoothedInput(nn.Module):
    """``linear(x * inverse_scale)``: the input side of a smoothed layer (its weight holds ``scale``)."""

    def __init__(self, linear: nn.Linear, inverse_scale: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("inverse_scale", inverse_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inverse_scale)


def input_channel_max(module: nn.Module, names: Sequence[str], run: Callable[[nn.Module], object]
                      ) -> dict[str, torch.Tensor]:
    """Per input channel, the largest |value| each named Linear layer reads while ``run(module)`` runs."""
    layers = dict(module.named_modules())
    unknown = [n for n in names if not isinstance(layers.get(n), nn.Linear)]
    if unknown:
        raise ValueError(f"not nn.Linear layers of the module: {unknown}")
    seen: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable:
        def hook(_module: nn.Module, inputs: tuple, _output: object) -> None:
            x = inputs[0].detach().float()
            peak = x.abs().reshape(-1, x.shape[-1]).amax(0)
            seen[name] = peak if name not in seen else torch.maximum(seen[name], peak)
        return hook

    handles = [layers[n].register_forward_hook(record(n)) for n in names]
    try:
        run(module)
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(f"the calibration run never reached {missing}")
    return seen


def smooth_scales(input_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel scale ``s_j = max|x_j|^α / max_i |W_ij|^(1-α)``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must lie in [0, 1], got {alpha}")
    w = weight.detach().float().abs().amax(0).clamp(min=1e-5)
    return (input_max.clamp(min=1e-5) ** alpha / w ** (1.0 - alpha)).clamp(min=1e-5)


def smooth_linears(module: nn.Module, input_max: Mapping[str, torch.Tensor], alpha: float) -> nn.Module:
    """A copy of ``module`` whose named Linear layers are smoothed (same function in exact arithmetic);
    each becomes ``<name>.linear`` inside a :class:`SmoothedInput`."""
    module = copy.deepcopy(module)
    layers = dict(module.named_modules())
    for name, peak in input_max.items():
        linear = layers[name]
        scale = smooth_scales(peak, linear.weight, alpha).to(linear.weight.dtype)
        with torch.no_grad():
            linear.weight.mul_(scale)
        parent, _, leaf = name.rpartition(".")
        setattr(layers[parent] if parent else module, leaf, SmoothedInput(linear, 1.0 / scale))
    return module
