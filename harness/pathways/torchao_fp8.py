"""torchao-fp8-rowwise: TorchAO `quantize_(model, Float8DynamicActivationFloat8WeightConfig(
granularity=PerRow()))` on bf16 models, on GPUs with compute capability >= 8.9.

Weights are stored as float8_e4m3fn with one scale per output row; activations are quantized
dynamically per row at run time. The artifact is the quantized state dict (torchao's Float8Tensor
is a torch.load safe global) plus the recipe; loading re-applies the config to a fresh reference
and checks that the stored tensors have exactly the layout the config produces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.artifacts.manifest import Artifact
from harness.artifacts.payloads import read_quantized_state_dict
from harness.artifacts.trust import load_torch_file
from harness.core import Device, QuantLayout, Runner, Tensors, package_version
from harness.models.base import ModelSpec
from harness.pathways.base import Pathway, register
from harness.runtimes.torch import TorchRunner, load_quantized_state, torchao_layout

PAYLOAD = "model.pt"
MIN_CAPABILITY = (8, 9)


def fp8_config():
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


def quantize_module(module: torch.nn.Module) -> torch.nn.Module:
    """Quantize a bf16 CUDA module in place with the rowwise FP8 config (used by the perf suite too)."""
    from torchao.quantization import quantize_

    quantize_(module, fp8_config())
    return module


def is_fp8_weight(weight: torch.Tensor | None) -> bool:
    from torchao.quantization import Float8Tensor

    return isinstance(weight, Float8Tensor)


def describe_float8(weight) -> dict[str, str | None]:
    """What a Float8Tensor weight holds, in recipe terms (also read by `qconform import`)."""
    rows = weight.shape[0]
    per_row = weight.scale.numel() == rows and list(weight.block_size) == [1, weight.shape[1]]
    act = weight.act_quant_kwargs
    return {
        "weight_dtype": str(weight.qdata.dtype).removeprefix("torch."),
        "weight_granularity": "per-channel" if per_row else ("per-tensor" if weight.scale.numel() == 1 else f"block {list(weight.block_size)}"),
        "activation_dtype": str(act.float8_dtype).removeprefix("torch.") if act is not None else None,
        "activation_granularity": f"dynamic {type(act.granularity).__name__}" if act is not None else "none (weight-only)",
    }


def rowwise_scaled_mm(device: Device) -> str:
    """The capability probe (harness/run/probes.py): the GEMM torchao's Float8 rowwise recipe runs,
    float8_e4m3fn operands, one float32 scale per row of A and per column of B, bf16 out, B
    column-major."""
    where = "cuda" if device.kind == "cuda" else "cpu"
    a = torch.randn(16, 32, device=where).to(torch.float8_e4m3fn)
    w = torch.randn(16, 32, device=where).to(torch.float8_e4m3fn)
    scale_a = torch.full((16, 1), 0.5, device=where)
    scale_b = torch.full((1, 16), 2.0, device=where)
    out = torch._scaled_mm(a, w.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
    expected = a.float() @ w.float().t()
    if not torch.allclose(out.float(), expected, rtol=2e-2, atol=2e-2):
        raise RuntimeError(f"row-wise _scaled_mm returned wrong values (max error {(out.float() - expected).abs().max().item():.3g})")
    return f"16x32 @ 32x16 on {where}"


def kernel_path(module: torch.nn.Module) -> str | None:
    """The rowwise FP8 GEMM torchao runs for this module's Float8Tensor weights: with its default
    KernelPreference.AUTO, MSLK's f8f8bf16_rowwise where the mslk package imports on sm_90+ (it has
    SM90/SM100 builds only), else torch._scaled_mm (cuBLAS on sm_90, CUTLASS on sm_100/sm_120, by
    torch). Measured on the H100 at M = 1 and 8 (benchmarks/speed_swing.py --kernels): MSLK 1.05-1.30x
    faster than torch._scaled_mm on the Llama-3.1-8B shapes."""
    from torchao.quantization.quantize_.common.kernel_preference import KernelPreference
    from torchao.utils import _is_mslk_available, is_sm_at_least_90

    weight = next((m.weight for m in module.modules() if is_fp8_weight(getattr(m, "weight", None))), None)
    if weight is None:
        return None
    preference = weight.kernel_preference
    mslk = preference == KernelPreference.MSLK or (preference == KernelPreference.AUTO and _is_mslk_available() and is_sm_at_least_90())
    chosen = "mslk.f8f8bf16_rowwise" if mslk else "torch._scaled_mm"
    return f"{chosen} (torchao KernelPreference.{preference.name}; mslk-cuda {package_version('mslk-cuda')})"


def read_layout(module: torch.nn.Module) -> QuantLayout:
    return torchao_layout(module, is_fp8_weight, describe_float8)


@register
class TorchaoFp8Rowwise(Pathway):
    name = "torchao-fp8-rowwise"
    description = "TorchAO FP8 rowwise dynamic activation + weight quantization (CUDA, sm_89+)"
    devices = ("cuda",)
    requires = {"torchao": "pip install 'qconform[gpu]' (torchao >= 0.18 needs torch >= 2.11)"}
    tool_packages = ("torchao", "torch")
    measures_speed = True
    compute_dtype = "fp8"
    reference_pathway = "inc-fp8-ref"
    needs_torch_model = True

    def quantize_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return quantize_module(module)

    def kernel_path(self, module: torch.nn.Module) -> str | None:
        return kernel_path(module)

    def unavailable(self, device: Device) -> str | None:
        reason = super().unavailable(device)
        if reason:
            return reason
        if device.capability is not None and device.capability < MIN_CAPABILITY:
            cap = f"sm_{device.capability[0]}{device.capability[1]}"
            return f"{self.name}: needs CUDA compute capability >= 8.9 for FP8, {device.name} is {cap}"
        return None

    def probe_operation(self, device: Device):
        return "torch._scaled_mm, float8_e4m3fn with row-wise scales (torchao's rowwise FP8 GEMM)", rowwise_scaled_mm

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        return {
            "config": "Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())",
            "model_dtype": "bfloat16",
            "weight_dtype": "float8_e4m3fn",
            "weight_granularity": "per-channel",  # one scale per output row
            "activation_dtype": "float8_e4m3fn",
            "activation_granularity": "dynamic PerRow",
        }

    deploys_from = {"cuda": "bfloat16"}

    def _fresh(self, model: ModelSpec) -> torch.nn.Module:
        return model.load_module(self.reference_precision("cuda"))

    def read_payload(self, payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
        """A state dict saved after quantize_ (Float8Tensor weights: torch.load safe globals once
        torchao is imported); the recipe from its Float8Tensors."""
        import torchao.quantization  # noqa: F401  registers torchao's tensor types as torch.load safe globals

        payload, recipe = read_quantized_state_dict(payloads, model, is_fp8_weight, describe_float8, "no Float8Tensor weights: not a torchao FP8 checkpoint")
        return {PAYLOAD: payload}, recipe

    def build(self, model: ModelSpec, calib: list[Tensors], out_dir: Path) -> Artifact:
        module = quantize_module(self._fresh(model))
        torch.save(module.state_dict(), out_dir / PAYLOAD)
        return self.finish(out_dir, model, Device.detect())

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        module = quantize_module(self._fresh(model))  # re-apply the config, then take the stored tensors
        path = artifact.file(PAYLOAD)
        # Memory-mapped on the host; each tensor moves to the module's device as it is assigned.
        load_quantized_state(module, load_torch_file(path, map_location="cpu", mmap=True), model, path)
        return TorchRunner(module, model.input_names, model.output_names, "cuda", f"torchao FP8 rowwise on {torch.cuda.get_device_name(0)}", read_layout)
