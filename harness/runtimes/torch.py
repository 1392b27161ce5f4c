"""Runs a torch module (TorchAO FP8, INC FP8 emulation) on numpy inputs."""

from __future__ import annotations

from typing import Any, Callable

from harness.artifacts.errors import ArtifactError
from harness.artifacts.identity import align_state_dict, check_state_dict_matches
from harness.core import QuantLayer, QuantLayout, Runner, Tensors


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
    # One tensor at a time onto the device of the one it replaces (an explicit index: Float8Tensor
    # refuses to mix "cuda" and "cuda:0" storages): the stored weights and the module's own are
    # never all on the GPU at once.
    for key in list(state):
        module.load_state_dict({key: state.pop(key).to(expected[key].device)}, strict=False, assign=True)
    return module


def torchao_layout(module: Any, is_quantized: Callable[[Any], bool], describe: Callable[[Any], dict[str, Any]]) -> QuantLayout:
    """The layout of a module whose Linear weights are torchao tensor subclasses (Float8Tensor,
    Int8Tensor): `describe(weight)` gives the recipe fields the subclass states about itself."""
    import numpy as np
    import torch

    layout = QuantLayout()
    for name, child in module.named_modules():
        if not isinstance(child, torch.nn.Linear):
            continue
        weight = child.weight
        if not is_quantized(weight):
            layout.unquantized.append(name)
            continue
        described = describe(weight)
        zero_point = getattr(weight, "zero_point", None)  # Int8Tensor has one (None when symmetric); Float8Tensor none
        layout.layers[name] = QuantLayer(
            name=name,
            dtype=described["weight_dtype"],
            weight_granularity=described["weight_granularity"],
            weight_axis=0 if described["weight_granularity"] == "per-channel" else None,
            weight_scales=weight.scale.detach().float().cpu().numpy().reshape(-1).astype(np.float64),
            weight_zero_points=None if zero_point is None else zero_point.detach().cpu().numpy().reshape(-1),
            activation_dtype=described["activation_dtype"],
            activation_granularity=described["activation_granularity"],
            output_channels=weight.shape[0],
            dequantized=lambda weight=weight: weight.dequantize(torch.float32),  # compared where it lives
        )
    return layout
