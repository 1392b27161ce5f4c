"""Shared types every other module uses: devices, tensors, quantized layouts, runners, errors.

Imports nothing of qconform's, so anything may import it (no cycles)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

Tensors = dict[str, np.ndarray]

# The recipe keys that describe a quantized layout, checked against what the payload holds.
# A pathway's expected recipe (Pathway.expected_recipe, overridable per (pathway, model) in a
# profile's [pathway.model.expect] table) sets them; a manifest's recipe only claims them.
RECIPE_KEYS = (
    "weight_dtype",
    "weight_granularity",
    "weight_symmetric",
    "activation_dtype",
    "activation_granularity",
    "keep_float",  # regexes over layer names (ONNX node names, or module paths) that stay float
)


@dataclass(frozen=True)
class Device:
    """The machine a runner executes on."""

    kind: str  # "cpu" or "cuda"
    name: str
    capability: tuple[int, int] | None = None  # CUDA compute capability

    @classmethod
    def detect(cls) -> "Device":
        try:
            import torch

            if torch.cuda.is_available():
                return cls("cuda", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
        except ImportError:
            pass
        import platform

        return cls("cpu", platform.processor() or platform.machine())

    def describe(self) -> str:
        cap = f" (sm_{self.capability[0]}{self.capability[1]})" if self.capability else ""
        return f"{self.kind}: {self.name}{cap}"


@dataclass
class QuantLayer:
    """What one quantized layer holds, as read back from the artifact itself."""

    name: str
    dtype: str  # storage dtype of weights: "int8", "float8_e4m3fn", ...
    weight_granularity: str  # "per-channel", "per-tensor", "per-row"
    weight_axis: int | None
    weight_scales: np.ndarray
    weight_zero_points: np.ndarray | None = None
    activation_dtype: str | None = None
    activation_granularity: str | None = None  # "per-tensor", "per-row (dynamic)", ...
    activation_scale: np.ndarray | None = None
    activation_zero_point: np.ndarray | None = None
    output_channels: int | None = None
    # The weight as the runtime will see it (dequantized), oriented like the reference module's
    # weight (out_features, in_features); for per-layer error against the reference.
    dequantized_weight: np.ndarray | None = None


@dataclass
class QuantLayout:
    layers: dict[str, QuantLayer] = field(default_factory=dict)
    unquantized: list[str] = field(default_factory=list)  # weight-bearing layers left in float

    def granularities(self) -> set[str]:
        return {layer.weight_granularity for layer in self.layers.values()}


def module_path(layer_name: str) -> str:
    """The torch module path of a layer as a pathway names it: a module path stays as it is
    ("layers.0.mlp.up_proj"); an ONNX node of the torch export loses its op name
    ("/layers.0/mlp/up_proj/MatMul_quant" -> "layers.0.mlp.up_proj")."""
    if layer_name.startswith("/"):
        return ".".join(layer_name.strip("/").split("/")[:-1])
    return layer_name


class Runner:
    """Executes one loaded artifact. Inputs and outputs use the reference model's names."""

    def __call__(self, inputs: Tensors) -> Tensors:
        raise NotImplementedError

    def layout(self) -> QuantLayout:
        raise NotImplementedError

    def describe(self) -> str:
        """Where it runs (execution providers, GPU): shown in the report."""
        return type(self).__name__


# -- plugins from other packages -------------------------------------------------------------

_LOADED_GROUPS: set[str] = set()


def load_entry_points(group: str, kind: type, add: Callable[[Any], Any], known: Callable[[Any], bool]) -> None:
    """Load other packages' pathways or models, once: an entry point names a module (which
    registers on import) or a Pathway subclass / ModelSpec (registered here)."""
    if group in _LOADED_GROUPS:
        return
    _LOADED_GROUPS.add(group)
    for entry in importlib.metadata.entry_points(group=group):
        try:
            obj = entry.load()
        except Exception as exc:
            raise RuntimeError(f"entry point {entry.name} = {entry.value} ({group}, from {entry.dist.name if entry.dist else '?'}) failed to load: {type(exc).__name__}: {exc}") from exc
        if ((isinstance(obj, type) and issubclass(obj, kind)) or isinstance(obj, kind)) and not known(obj):
            add(obj)
