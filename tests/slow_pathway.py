"""A planted slow candidate for the speedup gate: FP8 weights that are dequantized to bf16 on every
call and multiplied in bf16. Numerically fine, never faster. Loaded with `-p tests.slow_pathway`."""

import torch

from harness.pathways.base import Pathway, register


class DequantizeThenMatmul(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        scale = weight.abs().amax(dim=1, keepdim=True).float() / 448.0
        self.register_buffer("qdata", (weight.float() / scale).to(torch.float8_e4m3fn))
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, (self.qdata.float() * self.scale).to(x.dtype))


@register
class SlowDequantPathway(Pathway):
    name = "planted-slow-dequant"
    devices = ("cuda",)
    measures_speed = True

    def quantize_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if isinstance(module, torch.nn.Linear):
            return DequantizeThenMatmul(module)
        for name, child in module.named_children():
            setattr(module, name, self.quantize_module(child))
        return module
