"""The one small interface every pathway implements, and the registry suites are parametrized over."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.artifacts.manifest import Artifact, write_manifest
from harness.artifacts.payloads import NoPayloadReader
from harness.core import FP32_CPU, RECIPE_KEYS, Device, Precision, Runner, Tensors, load_entry_points, package_version
from harness.measure import memory

if TYPE_CHECKING:
    from harness.models.base import ModelSpec

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
    # Whether it quantizes the model's torch module (so a model given as an ONNX file can't feed it).
    needs_torch_model: bool = False
    # The dtype its candidate computes in ("bf16", "fp8"): which peak the roofline compares
    # against, and how many bytes a weight takes (harness/measure/roofline.py).
    compute_dtype: str = "bf16"
    # The dtype its candidate is made from, per device kind it runs on (default fp32): the reference
    # it is gated against is the model in that precision on that device (reference_precision).
    deploys_from: dict[str, str] = {}

    # Peak host memory over the fp32 weights of a case built on the host (harness/measure/memory.py).
    host_weights_factor: float = memory.HOST_WEIGHTS_FACTOR

    def memory_estimate(self, size: memory.ModelSize, model: "ModelSpec", kind: str) -> memory.Estimate:
        """Peak GPU and host memory of this pathway's case for a model of `size` on `kind` (one of
        self.devices), before any work: a torch pathway's CUDA case quantizes the bf16 model on the
        GPU into compute_dtype; every other case builds (for ONNX pathways: exports) on the host
        from the fp32 model. The formulas live in harness/measure/memory.py; a pathway whose peak
        differs picks or adds one there."""
        if kind == "cuda" and self.needs_torch_model:
            return memory.gpu_quantize_estimate(size, model, self.compute_dtype)
        return memory.host_build_estimate(size, model, on_gpu=kind == "cuda", weights_factor=self.host_weights_factor)

    def reference_precision(self, kind: str) -> Precision:
        """The reference this pathway's `kind` cases are gated against: the model as the candidate is
        made from it, on the device it runs on (bf16 on the GPU for torchao's GPU cases, as torchao's
        own accuracy tables compare); fp32 references run on the CPU."""
        dtype = self.deploys_from.get(kind, "float32")
        return FP32_CPU if dtype == "float32" else Precision(dtype, kind)

    def quantize_module(self, module: Any) -> Any:
        raise NotImplementedError(f"{self.name} has no in-memory candidate for the perf suite")

    def kernel_path(self, module: Any) -> str | None:
        """The GEMM kernels a timed candidate actually runs, where the pathway's library chooses
        among several (a speed record names it: another kernel is another number)."""
        return None

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

    def probe_operation(self, device: Device) -> tuple[str, Callable[[Device], str]] | None:
        """One tiny real operation of this pathway's backend on `device` (harness/run/probes.py), as
        (what it does, callable raising on failure); its failure becomes the cases' skip reason."""
        return None

    def build_unavailable(self) -> str | None:
        for module, hint in self.build_requires.items():
            if importlib.util.find_spec(module) is None:
                return f"{self.name}: building artifacts needs Python package {module!r} ({hint}); or bring artifacts with --artifacts"
        return None

    def tool_versions(self) -> dict[str, str]:
        return {package: package_version(package) for package in self.tool_packages}

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

    # Recipe keys a project's [recipes.<pathway>] may set to change how artifacts are built (key ->
    # what it selects); recipe() applies them with selected_options(). Every other key of that
    # table is an expectation only: the artifact must hold it (the project_recipe check).
    recipe_options: dict[str, str] = {}

    def recipe(self, model: "ModelSpec") -> dict[str, Any]:
        """The quantization recipe recorded in the manifest; part of the artifact cache key."""
        raise NotImplementedError

    def recipe_option_problem(self, key: str, value: Any) -> str | None:
        """What is wrong with a project's value for one of recipe_options (None: valid); checked
        before any test runs."""
        return None

    def selected_options(self, model: "ModelSpec") -> dict[str, Any]:
        """The build options the project selects for this pathway (its recipe_options keys)."""
        chosen = model.recipe_overrides.get(self.name, {})
        return {key: value for key, value in chosen.items() if key in self.recipe_options}

    def expected_recipe(self, model: "ModelSpec") -> dict[str, Any]:
        """What an artifact of this pathway for `model` must hold (RECIPE_KEYS): the reference the
        payload's real layout is gated against; the manifest's recipe must agree with it."""
        return {key: value for key, value in self.recipe(model).items() if key in RECIPE_KEYS}

    # Whether its artifacts carry calibration statistics (recorded_statistics below is gated).
    records_statistics: bool = False

    def recorded_statistics(self, artifact: Artifact) -> dict[str, dict[str, float]] | None:
        """Calibration statistics the artifact carries, per layer ("weight_amax", "input_amax"),
        or None when this pathway records none."""
        return None

    def build(self, model: "ModelSpec", calib: list[Tensors], out_dir: Path) -> Artifact:
        raise NotImplementedError

    def load(self, artifact: Artifact, device: Device, model: "ModelSpec") -> Runner:
        """A runner for `artifact` on `device`; `model` is the reference it was built from."""
        raise NotImplementedError

    def read_payload(self, payloads: list[Path], model: "ModelSpec") -> tuple[dict[str, Path], dict[str, Any]]:
        """`qconform import`: payload files made outside qconform -> (artifact file name -> source
        file, the recipe read from the payload itself), after checking they belong to `model`
        (refusals: harness/artifacts/payloads.py). Without a reader the recipe must come from --set."""
        raise NoPayloadReader(f"qconform cannot read a {self.name} payload's recipe; give it with --set KEY=VALUE (docs/artifacts.md)")


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
    # The built-in pathways are registered already: importing this module first runs the package's
    # __init__ (harness/pathways/__init__.py), which imports every pathway module. Then plugins'.
    load_entry_points("qconform.pathways", Pathway, _add_pathway, lambda p: p.name in PATHWAYS)


def _add_pathway(obj: Any) -> None:
    if isinstance(obj, type):
        register(obj)
    else:
        PATHWAYS[obj.name] = obj

