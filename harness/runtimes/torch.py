"""Runs a torch module (TorchAO FP8, INC FP8 emulation) on numpy inputs."""

from __future__ import annotations

from typing import Any, Callable

from harness.artifacts.errors import ArtifactError
from harness.artifacts.identity import align_state_dict, check_state_dict_matches
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


def load_quantized_state(module: Any, state: Any, model: Any, path: Any) -> Any:
    """Load a saved state dict into `module` (the model quantized afresh with the same config): it
    must be a state dict of this model's weights with exactly the config's tensor types and shapes."""
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: not a state dict (holds a {type(state).__name__})")
    expected = module.state_dict()
    state = align_state_dict(state, expected)
    check_state_dict_matches(state, model)
    if set(state) != set(expected):
        raise ArtifactError(f"{path}: tensors differ from the config's layout: missing {sorted(set(expected) - set(state))[:5]}, extra {sorted(set(state) - set(expected))[:5]}")
    for key, tensor in expected.items():
        if type(state[key]) is not type(tensor) or state[key].shape != tensor.shape:
            raise ArtifactError(f"{path}: {key} is {type(state[key]).__name__}{tuple(state[key].shape)}, the config makes {type(tensor).__name__}{tuple(tensor.shape)}")
    module.load_state_dict(state, assign=True)
    return module
