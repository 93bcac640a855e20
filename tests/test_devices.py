"""Cross-device latency ratios: configurations are matched on everything but the device."""

import pandas as pd

from planner.analysis.devices import latency_ratios


def _profiles(device: str, p50: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"config_id": [f"{key}/{device}" for key in p50],
                         "batch_size": [int(key.rsplit("/b", 1)[1]) for key in p50],
                         "lat_p50_ms": list(p50.values())})


def test_ratios_pair_configurations_across_devices_and_say_how_much_faster_the_other_is():
    cpu = _profiles("cpu", {"sst2/minilm-l3/pytorch/fp32/b1": 4.0, "sst2/minilm-l3/pytorch/fp32/b8": 24.0,
                            "sst2/minilm-l3/onnxruntime/int8/b1": 2.0})
    gpu = _profiles("cuda", {"sst2/minilm-l3/pytorch/fp32/b1": 1.0, "sst2/minilm-l3/pytorch/fp32/b8": 2.0,
                             "sst2/minilm-l3/pytorch/bf16/b1": 0.5})
    ratios = latency_ratios(cpu, gpu).set_index("key")
    assert sorted(ratios.index) == ["sst2/minilm-l3/pytorch/fp32/b1", "sst2/minilm-l3/pytorch/fp32/b8"]
    assert ratios.loc["sst2/minilm-l3/pytorch/fp32/b1", "p50_ratio"] == 4.0
    assert ratios.loc["sst2/minilm-l3/pytorch/fp32/b8", ["batch_size", "p50_ratio"]].tolist() == [8, 12.0]


def test_no_configuration_in_common_gives_no_ratio():
    cpu = _profiles("cpu", {"cifar10/resnet18/pytorch/fp32/b1": 3.0})
    gpu = _profiles("cuda", {"cifar10/resnet18/pytorch/bf16/b1": 0.2})
    assert latency_ratios(cpu, gpu).empty
