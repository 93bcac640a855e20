"""SmoothQuant-style input rebalancing before torch dynamic int8 (planner.models.smoothing)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from planner.models.smoothing import SmoothedInput, input_channel_max, smooth_linears
from planner.models.variants import build_torch_variant


def _net_and_inputs() -> tuple[nn.Module, torch.Tensor]:
    """Two Linear layers whose first reads a few outlier channels (like a LayerNorm outlier dimension)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(256, 64)
    x[:, :2] *= 60.0
    return net, x


def _int8_error(net: nn.Module, x: torch.Tensor, reference: torch.Tensor) -> float:
    quantized = build_torch_variant(net, "hf_encoder_finetune", "int8", "cpu").module
    with torch.inference_mode():
        return float((quantized(x) - reference).abs().mean())


def test_smoothing_keeps_the_function_and_cuts_int8_error_on_outlier_channels():
    net, x = _net_and_inputs()
    with torch.inference_mode():
        reference = net(x)
    peaks = input_channel_max(net, ["0", "2"], lambda module: module(x))
    assert peaks["0"].shape == (64,) and float(peaks["0"][:2].min()) > 10 * float(peaks["0"][2:].max())
    smoothed = smooth_linears(net, peaks, alpha=0.75)
    assert isinstance(smoothed[0], SmoothedInput) and isinstance(net[0], nn.Linear)  # the original is untouched
    with torch.inference_mode():
        torch.testing.assert_close(smoothed(x), reference, rtol=1e-4, atol=1e-4)  # same function in fp32
    plain, rebalanced = _int8_error(net, x, reference), _int8_error(smoothed, x, reference)
    assert rebalanced < 0.5 * plain, (plain, rebalanced)


def test_bad_smoothing_inputs_are_clear_errors():
    net, x = _net_and_inputs()
    peaks = input_channel_max(net, ["0"], lambda module: module(x))
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        smooth_linears(net, peaks, alpha=1.5)
    with pytest.raises(ValueError, match=r"not nn.Linear layers of the module: \['1'\]"):
        input_channel_max(net, ["1"], lambda module: module(x))
    with pytest.raises(ValueError, match=r"never reached \['0'\]"):
        input_channel_max(net, ["0"], lambda module: None)


def test_the_smoothing_strength_is_part_of_the_int8_settings_the_sweep_records(monkeypatch):
    """Changing ``int8_smooth_alpha`` must re-profile the model's int8 rows, as the layer list does."""
    from planner import config
    from planner.models import zoo

    spec = config.model_spec("minilm-l6")
    before = json.loads(zoo.quantization_key("sst2", "minilm-l6"))
    assert before["int8_smooth_alpha"] == spec.params["int8_smooth_alpha"]
    patched = spec.model_copy(update={"params": {**spec.params, "int8_smooth_alpha": 0.5}})
    monkeypatch.setattr(config, "model_spec", lambda name: patched if name == "minilm-l6" else spec)
    assert json.loads(zoo.quantization_key("sst2", "minilm-l6"))["int8_smooth_alpha"] == 0.5
