"""Shared types every other module uses: devices, tensors, quantized layouts, runners, errors.

Imports nothing of qconform's, so anything may import it (no cycles)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib.metadata
import re
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
    "weight_group_size",  # per-group weights (int4): elements along the input axis sharing one scale
    "keep_float",  # regexes over layer names (ONNX node names, or module paths) that stay float
    "quantize_outputs",  # whether weight ops' outputs are quantized too (a QDQ graph shows it)
    "smoothquant",  # whether SmoothQuant's per-input-channel smoothing is in the graph (a QDQ graph shows it)
)


# -- the one dtype table ------------------------------------------------------------------------


@dataclass(frozen=True)
class DType:
    """Facts about one storage or compute dtype. `qmax`/`qmin`: the largest and smallest code of an
    integer type, the largest finite value of a float (a max-abs scale maps max |w| onto qmax)."""

    name: str  # as QuantLayer.dtype and the recipes spell it (torch's name)
    bits: int
    qmax: float
    qmin: float
    quantized: bool  # a code type read with a scale (int8, FP8, ...), not a plain float
    fp8_format: str | None = None  # "E4M3" / "E5M2": INC's and the recipes' name of an FP8 format
    mantissa_bits: int | None = None  # floats
    min_subnormal: float | None = None  # floats: the smallest positive subnormal (OCP FP8 spec for FP8)

    @property
    def bytes(self) -> float:
        return self.bits / 8


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("int8", 8, 127.0, -128.0, True),
        DType("uint8", 8, 255.0, 0.0, True),
        DType("int4", 4, 7.0, -8.0, True),
        DType("float8_e4m3fn", 8, 448.0, -448.0, True, "E4M3", 3, 2.0**-9),
        DType("float8_e5m2", 8, 57344.0, -57344.0, True, "E5M2", 2, 2.0**-16),
        DType("bfloat16", 16, 3.3895313892515355e38, -3.3895313892515355e38, False, None, 7, 2.0**-133),
        DType("float16", 16, 65504.0, -65504.0, False, None, 10, 2.0**-24),
        DType("float32", 32, 3.4028234663852886e38, -3.4028234663852886e38, False, None, 23, 2.0**-149),
    )
}
# Short names used for compute dtypes (Pathway.compute_dtype, the roofline's peaks) and in profiles.
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp8": "float8_e4m3fn"}
# FP8 format name -> storage dtype ("E4M3" -> "float8_e4m3fn"), from the table.
FP8_FORMATS = {d.fp8_format: d.name for d in DTYPES.values() if d.fp8_format}


def dtype_info(name: str) -> DType:
    """The table's entry for a dtype name or alias ("int8", "float8_e4m3fn", "bf16", "torch.float16")."""
    name = name.removeprefix("torch.")
    try:
        return DTYPES[DTYPE_ALIASES.get(name, name)]
    except KeyError:
        raise KeyError(f"unknown dtype {name!r}; known: {', '.join([*DTYPES, *DTYPE_ALIASES])}") from None


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

    @property
    def device_class(self) -> str:
        """What outputs depend on: the CPU's int8 class (cpu_class), or the GPU model ("h100", "h200",
        "rtx5090", "l40s"; else the name, sanitized). Goldens are keyed by it, never by a profile's name."""
        if self.kind == "cpu":
            return cpu_class()
        if self.kind != "cuda":
            return self.kind
        name = self.name.lower()
        family = re.search(r"\b(rtx\s?(?:pro\s?)?\d{4}\w*|[a-z]{1,2}\d{1,3}[a-z]?)\b", re.sub(r"\b(nvidia|geforce|tesla)\b", " ", name))
        return re.sub(r"\s+", "", family.group(1)) if family else re.sub(r"[^a-z0-9]+", "-", name).strip("-")


@functools.cache  # the CPU does not change in a process; every threshold lookup asks
def cpu_class() -> str:
    """This CPU's class as its int8 kernels see it. x86 without VNNI (AVX2, AVX-512F): ONNX Runtime's
    U8S8 GEMM multiplies pairs through vpmaddubsw into int16 and saturates (its docs say so; INC
    warns "VNNI is not supported"), so int8 outputs differ from a VNNI/AMX CPU's (measured on
    tiny-llama: 16.4 vs 22.8 dB output SQNR). Other architectures: their machine name."""
    import platform

    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return f"cpu-{machine or 'unknown'}"
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "cpu-x86-vnni" if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags) else "cpu-x86"


@dataclass(frozen=True)
class Precision:
    """A reference's precision and the device it runs on: the model as the candidate is deployed from
    (Pathway.reference_precision): fp32 on the CPU, or bf16 on the GPU for a pathway that quantizes
    the bf16 model there."""

    dtype: str  # torch's name: "float32", "bfloat16"
    device: str  # "cpu" or "cuda"

    def __str__(self) -> str:
        return f"{self.dtype} on {self.device}"


FP32_CPU = Precision("float32", "cpu")


@dataclass
class QuantLayer:
    """What one quantized layer holds, as read back from the artifact itself."""

    name: str
    dtype: str  # storage dtype of weights: "int8", "float8_e4m3fn", ...
    weight_granularity: str  # "per-channel", "per-tensor", "per-row", "per-group"
    weight_axis: int | None
    weight_scales: np.ndarray
    weight_zero_points: np.ndarray | None = None
    activation_dtype: str | None = None
    activation_granularity: str | None = None  # "per-tensor", "per-row (dynamic)", ...
    activation_scale: np.ndarray | None = None
    activation_zero_point: np.ndarray | None = None
    output_channels: int | None = None
    # The weight as the runtime will see it (dequantized), oriented like the reference module's
    # weight (out_features, in_features); for per-layer error against the reference. A callable is
    # called on each read: a release-size model's layout never holds every layer's fp32 weight. It
    # may give a torch tensor where the runtime holds it (a GPU), so it is compared there.
    dequantized: Any = None  # np.ndarray | torch.Tensor | Callable[[], np.ndarray | torch.Tensor] | None
    # Per-group weights: input elements per scale (weight_scales then holds out x in/group_size).
    group_size: int | None = None
    # SmoothQuant: the per-input-channel factors s (in_features,) the graph divides this layer's
    # input by; its stored weight is then the model's times s along the input axis (the reference a
    # stored weight is compared with: harness/artifacts/qdq.py smoothed_reference). None: unsmoothed.
    input_smoothing: np.ndarray | None = None
    # Whether the layer's output is quantized again (a QDQ graph's QuantizeLinear on the weight op's
    # output); None where the payload does not say (torch layouts).
    output_quantized: bool | None = None

    @property
    def dequantized_weight(self) -> np.ndarray | None:
        weight = self.dequantized_tensor()
        return None if weight is None else weight.cpu().numpy()

    def dequantized_tensor(self) -> Any:
        """The dequantized weight as a float32 torch tensor on the device that holds it, or None."""
        import torch

        weight = self.dequantized() if callable(self.dequantized) else self.dequantized
        if weight is None or isinstance(weight, torch.Tensor):
            return weight
        return torch.from_numpy(np.asarray(weight, dtype=np.float32))


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


def release_host_memory() -> None:
    """Give freed host memory back to the operating system: glibc keeps the freed heap pages of a
    build (3.5 GiB after Gemma-3-270m's INT8 build) unless asked to trim."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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


class CountedRun:
    """A runner (`run(batch) -> outputs`) that counts what it is asked for: forward passes and the
    tokens (input elements) they carry. What an evaluation costs, counted rather than timed, so a
    test can hold it to a number (tests/test_evaluation_cost.py) and a record can state it."""

    def __init__(self, run: Callable[[Tensors], Tensors]):
        self.run, self.forwards, self.tokens = run, 0, 0

    def __call__(self, batch: Tensors) -> Tensors:
        self.forwards += 1
        first = next(iter(batch.values()), None)
        self.tokens += int(first.size) if first is not None else 0
        return self.run(batch)


def costed(costs: dict[str, Any] | None, label: str, run: Callable[[Tensors], Tensors], work: Callable[[Callable[[Tensors], Tensors]], Any]) -> Any:
    """`work(counted_run)`, with its wall time, forward passes and tokens stored in `costs[label]`
    (when `costs` is given)."""
    import time

    counted = CountedRun(run)
    start = time.perf_counter()
    result = work(counted)
    if costs is not None:
        costs[label] = {"seconds": round(time.perf_counter() - start, 2), "forwards": counted.forwards, "tokens": counted.tokens}
    return result
