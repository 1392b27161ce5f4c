"""TensorRT: a serialized engine run on torch CUDA tensors with execute_async_v3.

Written against the API TensorRT 10 and 11 share: every name used here is checked against the
11.4 API surface (tests/test_tensorrt_api.py), and the runner-side names against the 11.4 lean
runtime (`tensorrt_lean_bindings`) where it installs. The `trt` module is a parameter so the same
code runs on `tensorrt` or on the lean runtime's `tensorrt_lean_bindings`.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

from harness.artifacts.errors import ArtifactError
from harness.artifacts.manifest import Artifact
from harness.artifacts.qdq import read_layout
from harness.core import QuantLayout, Runner, Tensors

# Output dtypes the runner can hand back (TensorRT DataType member name -> torch dtype name).
OUTPUT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16"}
# What a plugin library would look like in an artifact: qconform never loads one (issue 18).
LIBRARY_SUFFIXES = (".so", ".dll", ".dylib")


def tensorrt_missing() -> str | None:
    """Why `import tensorrt` cannot work here: no package, or a package without its libraries."""
    if importlib.util.find_spec("tensorrt") is None:
        return "Python package 'tensorrt' is not installed (pip install 'qconform[trt]'; needs NVIDIA's TensorRT libraries)"
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:  # the wheel without libnvinfer raises here
        return f"'import tensorrt' fails: {exc}"
    return None


def refuse_plugin_libraries(artifact: Artifact) -> None:
    """An artifact never brings code: a shared library in it is refused before TensorRT starts."""
    for name in artifact.manifest["files"]:
        if any(suffix in name.lower() for suffix in LIBRARY_SUFFIXES):
            raise ArtifactError(f"{artifact.path / name}: an artifact may not carry plugin or shared libraries; qconform never loads code from an artifact")


def open_runtime(trt: ModuleType, logger: Any) -> Any:
    """A TensorRT runtime that refuses engines carrying host code (version-compatible engines
    embed a lean runtime, plugins embed kernels' host side): a release gate loads engines built
    by pipelines it does not control. 11.4 documents False as the default; set it anyway so the
    guarantee does not depend on the version. No plugin library is ever loaded
    (no `load_library`, no `init_libnvinfer_plugins`)."""
    runtime = trt.Runtime(logger)
    runtime.engine_host_code_allowed = False
    return runtime


def deserialize(trt: ModuleType, engine_bytes: bytes, logger: Any) -> Any:
    runtime = open_runtime(trt, logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise ArtifactError("TensorRT could not deserialize the engine (corrupt, built for another GPU/version, or it carries host code, which qconform refuses)")
    return engine


def io_tensors(trt: ModuleType, engine: Any) -> tuple[list[str], list[str]]:
    """The engine's input and output tensor names."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    return inputs, outputs


class TensorRTRunner(Runner):
    """Deserializes an engine and runs it on torch CUDA tensors."""

    def __init__(self, engine_bytes: bytes, qdq_model, output_names: tuple[str, ...], trt: ModuleType | None = None):
        import torch

        if trt is None:
            import tensorrt as trt
        self.trt, self.torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = deserialize(trt, engine_bytes, self.logger)
        self.context = self.engine.create_execution_context()
        self.qdq_model, self.output_names = qdq_model, output_names
        self.inputs, self.outputs = io_tensors(trt, self.engine)
        self._layout: QuantLayout | None = None

    def __call__(self, inputs: Tensors) -> Tensors:
        torch = self.torch
        stream = torch.cuda.current_stream()
        keep = {}
        for name in self.inputs:
            tensor = torch.from_numpy(inputs[name]).cuda().contiguous()
            keep[name] = tensor
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = getattr(torch, OUTPUT_DTYPES[self.engine.get_tensor_dtype(name).name])
            results[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, results[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return {name: results[name].float().cpu().numpy() for name in self.output_names}

    def layout(self) -> QuantLayout:
        # The engine follows the Q/DQ graph it was built from: precision is explicit there.
        if self._layout is None:
            self._layout = read_layout(self.qdq_model)
        return self._layout

    def describe(self) -> str:
        return f"TensorRT {self.trt.__version__} engine on {self.torch.cuda.get_device_name(0)}"
