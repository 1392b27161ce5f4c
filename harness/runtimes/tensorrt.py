"""TensorRT: a serialized engine run on torch CUDA tensors with execute_async_v3."""

from __future__ import annotations

import importlib.util

from harness.artifacts import ArtifactError
from harness.core import QuantLayout, Runner, Tensors
from harness.qdq import read_layout


def tensorrt_missing() -> str | None:
    """Why `import tensorrt` cannot work here: no package, or a package without its libraries."""
    if importlib.util.find_spec("tensorrt") is None:
        return "Python package 'tensorrt' is not installed (pip install 'qconform[trt]'; needs NVIDIA's TensorRT libraries)"
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:  # the wheel without libnvinfer raises here
        return f"'import tensorrt' fails: {exc}"
    return None


class TensorRTRunner(Runner):
    """Deserializes an engine and runs it on torch CUDA tensors."""

    def __init__(self, engine_bytes: bytes, qdq_model, output_names: tuple[str, ...]):
        import tensorrt as trt
        import torch

        self.torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ArtifactError("TensorRT could not deserialize the engine (corrupt, or built for another GPU/version)")
        self.context = self.engine.create_execution_context()
        self.qdq_model, self.output_names = qdq_model, output_names
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
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
            dtype = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16}[self.engine.get_tensor_dtype(name).name]
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
        import tensorrt as trt

        return f"TensorRT {trt.__version__} engine on {self.torch.cuda.get_device_name(0)}"
