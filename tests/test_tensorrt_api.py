"""Every TensorRT name qconform uses exists in TensorRT 11.4 (which removed weak typing:
BuilderFlag.INT8/FP16/FP8, the INT8 calibrator, ICudaEngine.device_memory_size, ...).

The builder side is checked against tests/data/tensorrt-11.4-api.txt, the surface of the
tensorrt-cu13-bindings 11.4.0.106 wheel (tools/tensorrt_api_surface.py). The runner side is also
resolved against the real lean runtime, `tensorrt_lean_bindings` 11.4, where it installs (the
`test` extra brings it on Linux x86_64)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from harness.artifacts.errors import ArtifactError
from harness.runtimes import tensorrt as trt_runtime

REPO = Path(__file__).resolve().parent.parent
SURFACE_FILE = REPO / "tests" / "data" / "tensorrt-11.4-api.txt"
# The declared TensorRT objects: variable name (or self.<name>) -> its class in the bindings.
# In files that import tensorrt, every attribute used on these names must exist on that class.
TRT_OBJECTS = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "layer": "ILayer",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
}
# What the runner must call (issue 17's list); the lean runtime has to offer each.
RUNNER_CALLS = {
    "Runtime",
    "Runtime.deserialize_cuda_engine",
    "Runtime.engine_host_code_allowed",
    "ICudaEngine.create_execution_context",
    "ICudaEngine.get_tensor_name",
    "ICudaEngine.get_tensor_mode",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
    "TensorIOMode.INPUT",
    "TensorIOMode.OUTPUT",
}


def surface() -> set[str]:
    return {line.strip() for line in SURFACE_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")}


def _chain(node: ast.AST) -> list[str] | None:
    """`trt.BuilderFlag.TF32` -> ["trt", "BuilderFlag", "TF32"]; None for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def trt_references(source: str) -> set[str]:
    """`Name`/`Class.member` of every TensorRT name `source` uses: `trt.X`, `trt.X.Y`, and, where the
    source imports tensorrt, attributes of the TRT_OBJECTS variables (also as self.<name>)."""
    tree = ast.parse(source)
    declared_objects = "import tensorrt" in source
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain = _chain(node)
        if chain is None:
            continue
        if chain[0] == "self":
            chain = chain[1:]
        if len(chain) < 2 or chain[1].startswith("_"):
            continue
        if chain[0] == "trt":
            found.add(".".join(chain[1:3]))  # Name or Class.member; deeper parts are values' attributes
        elif declared_objects and chain[0] in TRT_OBJECTS and len(chain) == 2:
            found.add(f"{TRT_OBJECTS[chain[0]]}.{chain[1]}")
    return found


def harness_references() -> dict[str, set[str]]:
    return {str(path.relative_to(REPO)): trt_references(path.read_text()) for path in sorted((REPO / "harness").rglob("*.py"))}


def missing_from(names: set[str], api: set[str]) -> list[str]:
    return sorted(name for name in names if name not in api)


def test_every_tensorrt_name_in_harness_exists_in_tensorrt_11_4():
    api = surface()
    used = harness_references()
    everything = set().union(*used.values())
    # The walker sees the code it must check (a walker that finds nothing passes vacuously).
    assert {"NetworkDefinitionCreationFlag.STRONGLY_TYPED", "BuilderFlag.TF32", "IBuilderConfig.clear_flag", "Builder.build_serialized_network"} <= everything
    assert RUNNER_CALLS <= everything
    problems = {path: missing_from(names, api) for path, names in used.items() if missing_from(names, api)}
    assert not problems, f"names TensorRT 11.4 does not have: {problems}"


def test_the_check_catches_apis_tensorrt_11_removed():
    planted = """
import tensorrt as trt
config = builder.create_builder_config()
config.set_flag(trt.BuilderFlag.INT8)
config.set_flag(trt.BuilderFlag.FP16)
config.int8_calibrator = calibrator
network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
size = self.engine.device_memory_size
"""
    assert missing_from(trt_references(planted), surface()) == [
        "BuilderFlag.FP16",
        "BuilderFlag.INT8",
        "IBuilderConfig.int8_calibrator",
        "ICudaEngine.device_memory_size",
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
    ]


def _lean():
    if importlib.util.find_spec("tensorrt_lean_bindings") is None:
        pytest.skip("tensorrt_lean_bindings is not installed (the 'test' extra installs tensorrt-lean-cu13-bindings and -libs 11.4 on Linux x86_64 only)")
    try:
        return importlib.import_module("tensorrt_lean_bindings")
    except (ImportError, OSError) as exc:
        pytest.skip(f"'import tensorrt_lean_bindings' fails here: {exc}")


def test_runner_side_names_resolve_in_the_lean_runtime():
    lean = _lean()
    runner_names = trt_references((REPO / "harness" / "runtimes" / "tensorrt.py").read_text())
    assert RUNNER_CALLS <= runner_names
    unresolved = []
    for name in sorted(runner_names):
        owner, _, member = name.partition(".")
        value = getattr(lean, owner, None)
        if value is None or (member and not hasattr(value, member)):
            unresolved.append(name)
    assert not unresolved, f"tensorrt_lean_bindings {lean.__version__} lacks {unresolved}"
    host_code = lean.Runtime.engine_host_code_allowed
    assert isinstance(host_code, property) and host_code.fset is not None, "Runtime.engine_host_code_allowed must be settable"
    assert set(trt_runtime.OUTPUT_DTYPES) <= set(lean.DataType.__members__)


def test_lean_runtime_refuses_host_code_and_bad_engines():
    lean = _lean()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        # Measured here: Runtime() logs "CUDA initialization failure with error: 35" and wraps a
        # NULL runtime; touching it crashes the process, so nothing past the import can run.
        pytest.skip("no CUDA GPU: TensorRT's Runtime cannot be created without one")
    logger = lean.Logger(lean.Logger.ERROR)
    runtime = trt_runtime.open_runtime(lean, logger)
    assert runtime.engine_host_code_allowed is False
    with pytest.raises(ArtifactError, match="could not deserialize the engine"):
        trt_runtime.deserialize(lean, b"not a TensorRT engine" * 64, logger)


def test_no_code_is_loaded_into_tensorrt_from_an_artifact():
    """Engines are deserialized only through open_runtime (host code disallowed), and nothing in
    harness loads a plugin library or serializes one into an engine."""
    sources = {path: path.read_text() for path in (REPO / "harness").rglob("*.py")}
    runtime_source = (REPO / "harness" / "runtimes" / "tensorrt.py").read_text()
    for path, source in sources.items():
        for call in (".load_library(", "init_libnvinfer_plugins(", ".plugins_to_serialize", "engine_host_code_allowed = True", "trt_extra_plugin_lib_paths"):
            assert call not in source, f"{path} uses {call}"
        if path.name != "tensorrt.py" or path.parent.name != "runtimes":
            assert ".deserialize_cuda_engine(" not in source, f"{path} deserializes an engine outside harness/runtimes/tensorrt.py"
    assert runtime_source.count(".deserialize_cuda_engine(") == 1
    assert runtime_source.index("runtime.engine_host_code_allowed = False") < runtime_source.index(".deserialize_cuda_engine(")
