"""Runs a torch module (TorchAO FP8, INC FP8 emulation) on numpy inputs."""

from __future__ import annotations

from typing import Any, Callable

from harness.core import QuantLayout, Runner, Tensors


class TorchRunner(Runner):
    """Runs a torch module on numpy inputs; `read_layout` reads its quantized layers (once)."""

    def __init__(self, module: Any, input_names: tuple[str, ...], output_names: tuple[str, ...], device: str, description: str, read_layout: Callable[[Any], QuantLayout]):
        self.module, self.input_names, self.output_names = module, input_names, output_names
        self.device, self.description, self.read_layout = device, description, read_layout
        self._layout: QuantLayout | None = None

    def layout(self) -> QuantLayout:
        if self._layout is None:
            self._layout = self.read_layout(self.module)
        return self._layout

    def __call__(self, inputs: Tensors) -> Tensors:
        import torch

        args = [torch.from_numpy(inputs[name]).to(self.device) for name in self.input_names]
        with torch.inference_mode():
            outputs = self.module(*args)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.float().cpu().numpy() for name, out in zip(self.output_names, outputs, strict=True)}

    def describe(self) -> str:
        return self.description
