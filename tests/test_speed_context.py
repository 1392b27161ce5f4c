"""What a speed record states about what could change its number (harness/measure/timing.py
speed_context): the compile cache's state, the FP8 kernel torchao runs, the GPU's clocks."""

import subprocess

import pytest
import torch

from harness.measure import timing


def test_compile_cache_state_says_cold_warm_mixed_or_none(monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setitem(counters, "inductor", counters["inductor"].copy())
    before = timing.compile_cache_counts()
    assert timing.compile_cache_state(before).startswith("no compilation")
    counters["inductor"]["fxgraph_cache_miss"] += 2
    assert timing.compile_cache_state(before) == "cold (2 graphs compiled)"
    counters["inductor"]["fxgraph_cache_hit"] += 3
    assert timing.compile_cache_state(before).startswith("mixed (2 graphs compiled, 3 loaded")
    assert timing.compile_cache_state(timing.compile_cache_counts() | {"fx_graph_hit": 0}).startswith("warm (")


def test_gpu_conditions_read_nvidia_smi_and_name_the_clock_events(monkeypatch):
    line = "1830 MHz, 1980 MHz, 2619 MHz, 681.21 W, 700.00 W, 57, 0x0000000000000004\n"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=line, stderr=""))
    found = timing.gpu_conditions()
    assert found["clocks.sm"] == "1830 MHz" and found["power.limit"] == "700.00 W" and found["clock_events"] == "software power cap"

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(subprocess, "run", missing)
    assert timing.gpu_conditions() == {}


@pytest.mark.parametrize("preference, expected", [("AUTO", "torch._scaled_mm"), ("TORCH", "torch._scaled_mm"), ("MSLK", "mslk.f8f8bf16_rowwise")])
def test_the_fp8_kernel_path_is_read_off_the_candidates_weights(preference, expected):
    """On this CPU (no sm_90, no mslk) AUTO takes torch._scaled_mm; a weight that prefers MSLK is
    named as such. On the H100 with mslk-cuda installed, AUTO named MSLK's kernel. The weight is made
    by the Float8Tensor.from_hp call quantize_ makes on a GPU (quantize_ itself refuses a CPU)."""
    pytest.importorskip("torchao")
    from torchao.quantization import Float8Tensor, PerRow
    from torchao.quantization.quantize_.common.kernel_preference import KernelPreference
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import QuantizeTensorToFloat8Kwargs

    from harness.pathways.base import get_pathway

    linear = torch.nn.Linear(32, 16, bias=False).to(torch.bfloat16)
    weight = Float8Tensor.from_hp(linear.weight.detach(), torch.float8_e4m3fn, PerRow(), act_quant_kwargs=QuantizeTensorToFloat8Kwargs(torch.float8_e4m3fn, PerRow()))
    weight.kernel_preference = KernelPreference[preference]  # MSLK cannot be asked for on a CPU
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    path = get_pathway("torchao-fp8-rowwise").kernel_path(torch.nn.Sequential(linear))
    assert path.startswith(expected) and f"KernelPreference.{preference}" in path
    assert get_pathway("torchao-fp8-rowwise").kernel_path(torch.nn.Linear(4, 4)) is None
