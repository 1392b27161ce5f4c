"""ONNX Runtime: a graph on one execution provider, with the provider asserted and per-node placement."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from harness.artifacts.errors import InvalidGraphError
from harness.artifacts.qdq import graph_problems, load_model, read_layout
from harness.core import Device, QuantLayout, Runner, Tensors


def ort_provider_missing(provider: str) -> str | None:
    """Why ONNX Runtime cannot offer `provider` here, or None."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "Python package 'onnxruntime' is not installed"
    available = ort.get_available_providers()
    if provider not in available:
        hint = " (install onnxruntime-gpu in place of onnxruntime)" if provider == "CUDAExecutionProvider" else ""
        return f"onnxruntime {ort.__version__} offers no {provider}{hint}; it has {', '.join(available)}"
    return None


class OrtQdqRunner(Runner):
    """Runs a QDQ graph on one ONNX Runtime execution provider, and refuses to fall back."""

    def __init__(self, path: Path, provider: str, provider_options: dict | None = None, artifact_dir: Path | None = None, weights_in_memory: bool = False):
        """`weights_in_memory`: keep the weights in `self.model` too, for a graph whose file will not
        outlive the runner (a temporary export). Otherwise the sessions read them from the files
        and `self.model` holds the graph with references to them (a 1B model's INT8 graph: 2.2 GB
        not held twice)."""
        import onnxruntime as ort

        self.model = load_model(path, artifact_dir, weights=weights_in_memory)  # refuses external data outside it and custom-op domains
        problems = graph_problems(self.model, path)  # before any session: its optimizer can hide them
        if problems:
            raise InvalidGraphError(f"{Path(path).name} is not a valid ONNX graph: " + "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
        missing = ort_provider_missing(provider)
        if missing:
            raise RuntimeError(missing)
        self.path, self.weights_in_memory = Path(path), weights_in_memory
        self.session = ort.InferenceSession(self._session_source(), providers=[(provider, provider_options or {})])
        used = self.session.get_providers()
        if not used or used[0] != provider:
            raise RuntimeError(f"ONNX Runtime fell back from {provider} to {used}")
        self.provider = provider
        self._placement: dict[str, list[str]] | None = None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._layout: QuantLayout | None = None

    def _session_source(self) -> str | bytes:
        """The graph's file, checked above (ONNX Runtime reads its external data itself): a graph
        over 2 GB cannot be serialized (protobuf's limit; a 1B model's INT8 QDQ graph is 2.2 GB), and
        serializing copies every weight once more. The bytes only when the file is gone (a graph
        exported into a temporary directory, its weights kept in memory)."""
        if self.path.is_file():
            return str(self.path)
        if not self.weights_in_memory:
            raise FileNotFoundError(f"{self.path}: the graph's file is gone and its weights were not kept in memory")
        return self.model.SerializeToString()

    def __call__(self, inputs: Tensors) -> Tensors:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"inputs missing for the ONNX graph: {sorted(missing)}")
        outputs = self.session.run(self.output_names, {name: inputs[name] for name in self.input_names})
        return dict(zip(self.output_names, outputs, strict=True))

    def layout(self) -> QuantLayout:
        if self._layout is None:
            self._layout = read_layout(self.model, self.path.parent)
        return self._layout

    def placement(self, inputs: Tensors) -> dict[str, list[str]]:
        """Which execution provider ran each node, from one profiled run (ORT places nodes it
        cannot run on the requested EP on the CPU without saying so)."""
        if self._placement is None:
            import json

            import onnxruntime as ort

            options = ort.SessionOptions()
            options.enable_profiling = True
            with tempfile.TemporaryDirectory(prefix="qconform-ort-profile-") as tmp:
                options.profile_file_prefix = str(Path(tmp) / "ort")
                session = ort.InferenceSession(self._session_source(), options, providers=[self.provider])
                session.run(None, {name: inputs[name] for name in self.input_names})
                events = json.loads(Path(session.end_profiling()).read_text())
            placement: dict[str, set[str]] = {}
            for event in events:
                args = event.get("args", {})
                if event.get("cat") == "Node" and "provider" in args:
                    placement.setdefault(args["provider"], set()).add(args.get("op_name", "?") + ":" + event["name"].removesuffix("_kernel_time"))
            self._placement = {provider: sorted(nodes) for provider, nodes in placement.items()}
        return self._placement

    def describe(self) -> str:
        return f"onnxruntime {self.provider}"


def ort_session(provider: str) -> Callable[[Device], str]:
    """The capability probe (harness/run/probes.py) of a pathway that runs on `provider`: a one-node
    graph (Relu) in an InferenceSession there, with the provider asserted."""

    def run(device: Device) -> str:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        with tempfile.TemporaryDirectory(prefix="qconform-probe-") as tmp:
            path = Path(tmp) / "relu.onnx"
            onnx.save(model, str(path))
            runner = OrtQdqRunner(path, provider)  # raises when the provider is missing or ORT falls back
        y = runner({"x": np.array([-1, 0, 2, 3], np.float32)})["y"]
        if y.tolist() != [0, 0, 2, 3]:
            raise RuntimeError(f"Relu on {provider} returned {y.tolist()}")
        return f"Relu session on {provider}"

    return run
