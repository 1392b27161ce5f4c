"""torchao-int8-dynamic: TorchAO `quantize_(model, Int8DynamicActivationInt8WeightConfig())`, W8A8:
per-channel symmetric int8 weights (one scale per output row), int8 activations quantized
dynamically per token (symmetric) at run time; the int8_rowwise row of torchao's published table.
Runs on the CPU and on CUDA GPUs (torch._int_mm).

The model is quantized from its torch reference in the precision of the machine that builds it:
fp32 on a CPU-only machine, bf16 on a GPU (as torchao-fp8-rowwise); the recipe's model_dtype says
which and keys the cache. The artifact is the quantized state dict: torchao 0.18's Int8Tensor
(qdata int8, scale float32 (N, 1), zero_point int8 zeros, block_size [1, K], act_quant_kwargs
QuantizeTensorToInt8Kwargs(PerRow(), SYMMETRIC)) is registered as a torch.load safe global, as are
the classes it holds, so it loads with `weights_only=True` (harness/artifacts/trust.py) once torchao is
imported. Loading re-applies the config to a fresh reference in the artifact's own dtype on the
case's device and checks that the stored tensors have exactly the layout the config makes.

torchao's symmetric int8 uses the full [-128, 127] range with scale = max|w| / 127.5 (its
choose_qparams_affine), so a channel's largest |code| is 127 or 128 and scale * 127 / max|w| is
127/127.5 (log2 -0.0057), not 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.artifacts.errors import ArtifactError
from harness.artifacts.manifest import Artifact
from harness.artifacts.payloads import read_quantized_state_dict
from harness.artifacts.trust import load_torch_file
from harness.core import Device, Precision, QuantLayout, Runner, Tensors
from harness.models.base import ModelSpec
from harness.pathways.base import Pathway, register
from harness.runtimes.torch import TorchRunner, load_quantized_state, torchao_layout

PAYLOAD = "model.pt"
CONFIG = "Int8DynamicActivationInt8WeightConfig()"
# How the layout reader names torchao's activation granularities (PerRow over the last dim: one
# scale per token).
ACTIVATION_GRANULARITY = {"PerRow": "per-token", "PerTensor": "per-tensor"}


def int8_config():
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig()


def quantize_module(module: torch.nn.Module) -> torch.nn.Module:
    """Quantize a module in place with the int8 dynamic config (every nn.Linear)."""
    from torchao.quantization import quantize_

    quantize_(module, int8_config())
    return module


def is_int8_weight(weight: Any) -> bool:
    from torchao.quantization import Int8Tensor

    return isinstance(weight, Int8Tensor)


def describe_int8(weight) -> dict[str, Any]:
    """What an Int8Tensor weight holds, in recipe terms (also read by `qconform import`)."""
    rows, cols = weight.shape[-2], weight.shape[-1]
    scales = weight.scale.numel()
    if scales == rows and list(weight.block_size)[-2:] == [1, cols]:
        granularity = "per-channel"
    elif scales == 1:
        granularity = "per-tensor"
    else:
        granularity = f"block {list(weight.block_size)}"
    act = weight.act_quant_kwargs
    if act is None:
        act_dtype, act_granularity = None, "none (weight-only)"
    else:
        act_dtype = "int8"
        name = type(act.granularity).__name__
        act_granularity = f"{ACTIVATION_GRANULARITY.get(name, name)} (dynamic{'' if act.mapping_type.name == 'SYMMETRIC' else ', ' + act.mapping_type.name.lower()})"
    return {
        "weight_dtype": str(weight.qdata.dtype).removeprefix("torch."),
        "weight_granularity": granularity,
        "weight_symmetric": weight.zero_point is None or not bool(torch.any(weight.zero_point != 0)),
        "activation_dtype": act_dtype,
        "activation_granularity": act_granularity,
    }


def read_layout(module: torch.nn.Module) -> QuantLayout:
    return torchao_layout(module, is_int8_weight, describe_int8)


def int8_dynamic_linear(device: Device) -> str:
    """The capability probe (harness/run/probes.py): one real int8 dynamic linear on the device, as
    the pathway runs it (torchao's Int8Tensor linear: per-token int8 activations, torch._int_mm)."""
    where = "cuda" if device.kind == "cuda" else "cpu"
    dtype = torch.bfloat16 if where == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(32, 64, generator=generator)
    x = torch.randn(32, 64, generator=generator)
    linear = torch.nn.Linear(64, 32, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    linear = quantize_module(linear.to(device=where, dtype=dtype).eval())
    if not is_int8_weight(linear.weight):
        raise RuntimeError(f"quantize_ left the weight a {type(linear.weight).__name__}, not an Int8Tensor")
    with torch.inference_mode():
        out = linear(x.to(device=where, dtype=dtype)).float().cpu()
    expected = x @ weight.t()
    rel = ((out - expected).norm() / expected.norm()).item()
    if not rel < 0.05:
        raise RuntimeError(f"int8 dynamic linear returned wrong values (relative error {rel:.3g})")
    return f"int8 dynamic linear 32x64 @ 64x32 on {where} ({str(dtype).removeprefix('torch.')}), relative error {rel:.2g}"


@register
class TorchaoInt8Dynamic(Pathway):
    name = "torchao-int8-dynamic"
    description = "TorchAO int8 dynamic activation (per token) + int8 per-channel weight quantization (CPU and CUDA)"
    devices = ("cpu", "cuda")
    requires = {"torchao": "pip install 'qconform[cpu]' or 'qconform[gpu]' (torchao >= 0.18 needs torch >= 2.11)"}
    tool_packages = ("torchao", "torch")
    needs_torch_model = True
    compute_dtype = "int8"  # harness/core.py DTYPES: 1 byte per weight, one fp32 scale per row

    def probe_operation(self, device: Device):
        return "torchao Int8DynamicActivationInt8WeightConfig on one Linear (per-token int8 activations, torch._int_mm)", int8_dynamic_linear

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        return {
            "config": CONFIG,
            # The precision the model is quantized from: the building machine's (bf16 on a GPU).
            "model_dtype": "bfloat16" if Device.detect().kind == "cuda" else "float32",
            "weight_dtype": "int8",
            "weight_granularity": "per-channel",  # one scale per output row
            "weight_symmetric": True,
            "activation_dtype": "int8",
            "activation_granularity": "per-token (dynamic)",
            "keep_float": [],  # quantize_ converts every nn.Linear
        }

    @staticmethod
    def _torch_device(device: Device) -> torch.device:
        # An explicit index: torchao's tensor subclasses refuse to mix "cuda" and "cuda:0" on assign.
        return torch.device("cuda", torch.cuda.current_device()) if device.kind == "cuda" else torch.device("cpu")

    deploys_from = {"cuda": "bfloat16"}

    def _fresh(self, model: ModelSpec, where: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return model.load_module(Precision(str(dtype).removeprefix("torch."), where.type))

    def build(self, model: ModelSpec, calib: list[Tensors], out_dir: Path) -> Artifact:
        built_on = Device.detect()
        dtype = getattr(torch, self.recipe(model)["model_dtype"])
        module = quantize_module(self._fresh(model, self._torch_device(built_on), dtype))
        torch.save(module.state_dict(), out_dir / PAYLOAD)
        return self.finish(out_dir, model, built_on)

    def read_payload(self, payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
        """A state dict saved after quantize_ with this config (Int8Tensor weights); the recipe
        from its Int8Tensors, the model dtype from the rest."""
        import torchao.quantization  # noqa: F401  registers torchao's tensor types as torch.load safe globals

        payload, recipe = read_quantized_state_dict(payloads, model, is_int8_weight, describe_int8, "no Int8Tensor weights: not a torchao int8 checkpoint")
        return {PAYLOAD: payload}, recipe

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        import torchao.quantization  # noqa: F401  registers torchao's tensor types as torch.load safe globals

        where = self._torch_device(device)
        path = artifact.file(PAYLOAD)
        state = load_torch_file(path, map_location="cpu", mmap=True)  # each tensor moves to `where` as it is assigned
        if not isinstance(state, dict):
            raise ArtifactError(f"{path}: not a state dict (holds a {type(state).__name__})")
        dtypes = {value.dtype for value in state.values() if is_int8_weight(value)}
        if len(dtypes) != 1:
            raise ArtifactError(f"{path}: expected Int8Tensor weights of one model dtype, found {sorted(map(str, dtypes)) or 'none'}")
        dtype = dtypes.pop()  # the artifact's own precision (fp32 from a CPU build, bf16 from a GPU one)
        module = quantize_module(self._fresh(model, where, dtype))  # re-apply the config, then take the stored tensors
        load_quantized_state(module, state, model, path)
        where_name = torch.cuda.get_device_name(where) if device.kind == "cuda" else "cpu"
        return TorchRunner(module, model.input_names, model.output_names, where.type, f"torchao int8 dynamic ({str(dtype).removeprefix('torch.')}) on {where_name}", read_layout)
