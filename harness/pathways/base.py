"""The one small interface every pathway implements, and the registry suites are parametrized over."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from harness.artifacts import Artifact, write_manifest

if TYPE_CHECKING:
    from harness.models.base import ModelSpec

Tensors = dict[str, np.ndarray]


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


class Runner:
    """Executes one loaded artifact. Inputs and outputs use the reference model's names."""

    def __call__(self, inputs: Tensors) -> Tensors:
        raise NotImplementedError

    def layout(self) -> QuantLayout:
        raise NotImplementedError

    def describe(self) -> str:
        """Where it runs (execution providers, GPU): shown in the report."""
        return type(self).__name__


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


class Pathway:
    name: str = ""
    description: str = ""
    # Device kinds this pathway runs on; suites get one case per (model, pathway, device kind).
    devices: tuple[str, ...] = ("cpu",)
    # Python modules that must import for this pathway, with the install hint shown when missing.
    requires: dict[str, str] = {}
    # Modules needed only to build artifacts (not to load ones the user brings with --artifacts).
    build_requires: dict[str, str] = {}
    # Distributions whose versions are recorded in the manifest and key the build cache.
    tool_packages: tuple[str, ...] = ()
    # The pathway whose outputs this one must agree with (GPU FP8 -> the INC FP8 reference).
    reference_pathway: str | None = None
    # Whether the perf suite can time it: then quantize_module() turns a bf16 CUDA module into
    # this pathway's candidate in memory.
    measures_speed: bool = False

    def quantize_module(self, module: Any) -> Any:
        raise NotImplementedError(f"{self.name} has no in-memory candidate for the perf suite")

    @property
    def marker(self) -> str:
        return self.name.replace("-", "_")

    def unavailable(self, device: Device) -> str | None:
        """None when this pathway can run on `device`, else the precise reason it is skipped."""
        for module, hint in self.requires.items():
            if importlib.util.find_spec(module) is None:
                return f"{self.name}: Python package {module!r} is not installed ({hint})"
        if device.kind == "cuda" and device.capability is None:
            return f"{self.name}: needs a CUDA GPU, and torch sees none on this machine"
        return None

    def build_unavailable(self) -> str | None:
        for module, hint in self.build_requires.items():
            if importlib.util.find_spec(module) is None:
                return f"{self.name}: building artifacts needs Python package {module!r} ({hint}); or bring artifacts with --artifacts"
        return None

    def tool_versions(self) -> dict[str, str]:
        return {package: _version(package) for package in self.tool_packages}

    def finish(self, out_dir: Path, model: "ModelSpec", built_on: Device) -> Artifact:
        """Write the manifest for a payload the build has put into `out_dir`."""
        return write_manifest(
            out_dir,
            pathway=self.name,
            model_id=model.id,
            recipe=self.recipe(model),
            source_weights_sha256=model.weights_sha256,
            tool_versions=self.tool_versions(),
            built_on={"kind": built_on.kind, "name": built_on.name, "capability": built_on.capability},
        )

    def recipe(self, model: "ModelSpec") -> dict[str, Any]:
        """The quantization recipe recorded in the manifest; part of the artifact cache key."""
        raise NotImplementedError

    def build(self, model: "ModelSpec", calib: list[Tensors], out_dir: Path) -> Artifact:
        raise NotImplementedError

    def load(self, artifact: Artifact, device: Device) -> Runner:
        raise NotImplementedError


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


PATHWAYS: dict[str, Pathway] = {}


def register(cls: Callable[[], Pathway]) -> Callable[[], Pathway]:
    instance = cls()
    if instance.name in PATHWAYS:
        raise ValueError(f"pathway {instance.name!r} registered twice")
    PATHWAYS[instance.name] = instance
    return cls


def get_pathway(name: str) -> Pathway:
    _load_builtin()
    try:
        return PATHWAYS[name]
    except KeyError:
        raise KeyError(f"unknown pathway {name!r}; known: {', '.join(sorted(PATHWAYS))}") from None


def all_pathways() -> list[Pathway]:
    _load_builtin()
    return list(PATHWAYS.values())


def _load_builtin() -> None:
    # Importing the package registers the built-in pathways.
    import harness.pathways  # noqa: F401
