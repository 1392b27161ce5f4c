"""Per-layer error localization: run the fp32 reference and the candidate with every weight layer's
output exposed, compute each layer's activation SQNR in execution order, and name the layer where
the error starts.

ONNX graphs run in ONNX Runtime with every weight op's output exposed as a graph output too (as
onnxruntime.quantization.qdq_loss_debug's `modify_model_output_intermediate_tensors` does), batch by
batch, the sums of each layer's SQNR carried over batches; the reference is the fp32 ONNX export of
the model, its weights as external data that the session reads itself; a QDQ tensor
`X_QuantizeInput` (the float output before its output QDQ) is matched with the fp32 tensor `X`, as
ORT's `create_activation_matching` does. Torch pathways (INC FP8, TorchAO) use
forward hooks on the same named Linear modules of the candidate and of the case's reference (fp32,
or the bf16 model on the GPU for torchao's GPU cases), compared batch by batch.
The same captures, run on the calibration data, give the activation ranges that static scales
and FP8 statistics are checked against.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from harness.core import Tensors, module_path, package_version, release_host_memory
from harness.judge.metrics import sqnr_from_sums, sqnr_sums

if TYPE_CHECKING:
    import onnx

    from harness.models.base import ModelSpec

LayerErrors = list[tuple[str, float]]  # (layer, activation SQNR in dB), in execution order
QUANT_INPUT_SUFFIX = "_QuantizeInput"  # onnxruntime.quantization.quant_utils.QUANT_INPUT_SUFFIX


class NotLocalizable(Exception):
    """This runner exposes no per-layer outputs (e.g. a TensorRT engine)."""


# -- capture ------------------------------------------------------------------------------------


def onnx_tensors(source: "Path | onnx.ModelProto", names: list[str], batches: list[Tensors], provider: str = "CPUExecutionProvider") -> Iterator[dict[str, np.ndarray]]:
    """Per batch, the named tensors of a graph (a file, or a model in memory): one ONNX Runtime session
    with them exposed as outputs too (as onnxruntime.quantization.qdq_loss_debug does), so memory
    holds one batch's tensors, and neither side's weights are copied into Python."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(source), load_external_data=False) if isinstance(source, Path) else source
    produced = {output for node in graph.graph.node for output in node.output}
    graph_inputs = {i.name for i in graph.graph.input}
    wanted = list(dict.fromkeys(names))
    fed = [name for name in wanted if name in graph_inputs]  # a graph input is what the batch holds
    names = [name for name in wanted if name in produced]
    outputs = [o.name for o in graph.graph.output]
    added = [name for name in names if name not in outputs]
    graph.graph.output.extend(onnx.ValueInfoProto(name=name) for name in added)
    # Unpacked weights: ONNX Runtime then computes from the external data it maps from the file
    # (page cache, shared and reclaimable) instead of a packed private copy of every weight. A 1B
    # model's fp32 export session took 4.9 GB of private memory (5.9 GB at its peak) with packing,
    # 0.2 GB without; the localization of its INT8 graph peaked 10 GiB over the run's resident.
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        if isinstance(source, Path):  # beside its external data, which ORT reads itself
            with _beside_external_data(graph, source) as exposed:
                session = ort.InferenceSession(str(exposed), options, providers=[provider])
        else:
            session = ort.InferenceSession(graph.SerializeToString(), options, providers=[provider])
    finally:
        del graph.graph.output[len(outputs) :]  # a model in memory goes back as it was
    inputs = {i.name for i in session.get_inputs()}
    for batch in batches:
        yield {**{name: batch[name] for name in fed if name in batch}, **dict(zip(names, session.run(names, {k: v for k, v in batch.items() if k in inputs}), strict=True))}


@contextlib.contextmanager
def _beside_external_data(graph: "onnx.ModelProto", source: Path) -> Iterator[Path]:
    """`graph` saved as a file whose external data resolves to `source`'s: ONNX Runtime reads
    external data only from the model file's own directory and rejects a symbolic link. Saved beside
    `source`; where that directory cannot be written (a read-only artifact), in a temporary directory
    with the data files hard-linked, or copied where a link cannot be made."""
    import onnx

    from harness.artifacts.trust import external_locations

    try:
        exposed = tempfile.NamedTemporaryFile(suffix=".onnx", dir=source.parent)
    except OSError:
        exposed = None
    if exposed is not None:
        with exposed:
            onnx.save(graph, exposed.name)
            yield Path(exposed.name)
        return
    with tempfile.TemporaryDirectory(prefix="qconform-exposed-") as tmp:
        for location in set(external_locations(graph).values()):
            (Path(tmp) / location).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source.parent / location, Path(tmp) / location)
            except OSError:
                shutil.copyfile(source.parent / location, Path(tmp) / location)
        onnx.save(graph, Path(tmp) / source.name)
        yield Path(tmp) / source.name


def torch_activations(module: Any, layers: list[str], batches: list[Tensors], input_names: tuple[str, ...], device: str = "cpu", which: str = "output") -> dict[str, np.ndarray]:
    """The output (or input) of each named module over `batches`, flattened, in the order the
    modules first ran."""
    import torch

    found: dict[str, list[np.ndarray]] = {}
    modules = dict(module.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise NotLocalizable(f"modules {missing[:5]} are not in the module")

    def hook(name):
        def record(_mod, args, output):
            tensor = args[0] if which == "input" else output
            found.setdefault(name, []).append(tensor.detach().float().cpu().numpy().ravel())

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        with torch.inference_mode():
            for batch in batches:
                module(*(torch.from_numpy(batch[name]).to(device) for name in input_names))
    finally:
        for handle in handles:
            handle.remove()
    return {name: np.concatenate(parts) for name, parts in found.items()}


EXPORT = "model.fp32.onnx"
EXPORT_OPSET = 17
# The run's cache while an artifact is built (ArtifactStore.build sets it): a build that quantizes
# the fp32 export finds the run's one there, whatever cache directory the run was given.
BUILD_CACHE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("BUILD_CACHE", default=None)


def export_key(model: "ModelSpec") -> str:
    """What the fp32 export depends on: the weights, the exporting packages, the graph's interface."""
    body = {
        "weights": model.weights_sha256,
        "module": type(model).__qualname__,
        "packages": {p: package_version(p) for p in ("torch", "transformers", "onnx")},
        "interface": [list(model.input_names), list(model.output_names), getattr(model, "dynamic_axes", None)],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def fp32_export(model: "ModelSpec", cache_dir: Path | None = None) -> Path:
    """The model's fp32 ONNX export (what the INT8 QDQ graph was quantized from), made once and kept
    in the run's cache (`cache_dir`; while a build runs, its store's: BUILD_CACHE; else $QCONFORM_CACHE: <cache>/exports/<model>/<key>), its
    weights as external data beside it: a session reads them from the file and Python holds no copy.
    The TorchScript export is the costly step (minutes and about 10x the fp32 weights in memory for
    Gemma-3-270m): a warm run makes none."""
    from harness.artifacts.manifest import default_cache_dir

    directory = Path(cache_dir or BUILD_CACHE.get() or default_cache_dir()) / "exports" / model.id / export_key(model)[:16]
    if not (directory / EXPORT).is_file():
        import onnx

        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".export-"))
        try:
            path = model.export_onnx(staging / EXPORT, opset=EXPORT_OPSET)
            graph = onnx.load(str(path))
            for extra in staging.iterdir():  # torch's own external data files, now held in `graph`
                if extra != path:
                    extra.unlink()
            onnx.save(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{EXPORT}.data", size_threshold=1024)
            del graph
            staging.chmod(0o755)
            os.replace(staging, directory)  # atomic: a concurrent run finds a whole export or none
        except OSError:
            if not (directory / EXPORT).is_file():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return directory / EXPORT


def fp32_graph(model: "ModelSpec") -> "onnx.ModelProto":
    """The model's fp32 ONNX export, loaded (weights included)."""
    import onnx

    return onnx.load(str(fp32_export(model)))


def _onnx_layer_tensors(graph: "onnx.ModelProto") -> list[tuple[str, str, str]]:
    """(layer node name, fp32 output tensor, fp32 input tensor) of each weight op, in graph order."""
    from harness.artifacts.qdq import WEIGHT_OPS, Graph

    g = Graph(graph)
    layers = []
    for node in graph.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) <= WEIGHT_OPS[node.op_type]:
            continue
        weight = node.input[WEIGHT_OPS[node.op_type]]
        dq = g.dequantize_of(weight)
        if weight not in g.inits and (dq is None or dq.input[0] not in g.inits):
            continue  # activation x activation
        source = node.input[0]
        act_dq = g.dequantize_of(source)
        if act_dq is not None and act_dq.input[0] in g.producer:  # X -> Q -> DQ -> MatMul: back to X
            source = g.producer[act_dq.input[0]].input[0].removesuffix(QUANT_INPUT_SUFFIX)
        layers.append((node.name or node.output[0], node.output[0].removesuffix(QUANT_INPUT_SUFFIX), source))
    return layers


def _graph_file(runner: Any) -> Path | None:
    """An ONNX runner's graph file, while it is there: its external data lie beside it (the runner's
    graph holds references to them, not the weights)."""
    path = getattr(runner, "path", None)
    return path if isinstance(path, Path) and path.is_file() else None


def _torch_layers(runner: Any) -> list[str]:
    layout = runner.layout()
    return list(layout.layers) + list(layout.unquantized)


# -- per-layer errors ---------------------------------------------------------------------------


def layer_errors(runner: Any, model: "ModelSpec", inputs: Tensors | list[Tensors], reference: Any = None, cache_dir: Path | None = None) -> LayerErrors:
    """Per-layer activation SQNR of `runner` against the reference on `inputs` (one batch, or batches
    for a torch runner): the fp32 ONNX export (kept in `cache_dir`, fp32_export) for an ONNX graph;
    for a torch module `reference()`, a context manager giving (reference module, its device), by
    default the fp32 reference on the CPU."""
    batches = [inputs] if isinstance(inputs, dict) else list(inputs)
    graph = getattr(runner, "model", None)
    if graph is not None and hasattr(graph, "graph"):  # an ONNX Runtime runner
        provider = getattr(runner, "provider", "CPUExecutionProvider")
        layers = _onnx_layer_tensors(graph)
        produced = {output for node in graph.graph.node for output in node.output}
        # A layer whose output is quantized computes `X_QuantizeInput`, the float output before its QDQ.
        computed = {out: out + QUANT_INPUT_SUFFIX if out + QUANT_INPUT_SUFFIX in produced else out for _, out, _ in layers}
        source = _graph_file(runner) or graph  # a file: no 2 GB limit, no copy
        # Two ONNX sessions are compared, the fp32 one from the export: the torch reference (4.6 GiB
        # at 1B, the peak's largest part) is not kept beside them; a later phase that needs it loads it.
        if model.release_reference():
            release_host_memory()
        try:
            candidate = onnx_tensors(source, list(computed.values()), batches, provider)
            first = next(candidate, None)
        except Exception as exc:  # onnxruntime's Fail/InvalidGraph: e.g. an EP that cannot take the extra outputs
            if provider == "CPUExecutionProvider":
                raise
            raise NotLocalizable(f"ONNX Runtime could not run the graph with its layer outputs exposed on {provider} ({type(exc).__name__}: {str(exc)[:200]})") from exc
        sums: dict[str, list[float]] = {}
        for ref, cand in zip(onnx_tensors(fp32_export(model, cache_dir), list(computed), batches), itertools.chain([first], candidate), strict=True):
            for out, name in computed.items():
                if out in ref and name in cand:
                    signal, noise = sqnr_sums(ref[out], cand[name])
                    total = sums.setdefault(out, [0.0, 0.0])
                    total[0], total[1] = total[0] + signal, total[1] + noise
        errors = [(module_path(name), sqnr_from_sums(*sums[out])) for name, out, _ in layers if out in sums]
        if not errors:
            raise NotLocalizable("no weight-op output of the graph matches a tensor of the model's fp32 ONNX export")
        return errors
    module = getattr(runner, "module", None)
    if module is None:
        raise NotLocalizable(f"{runner.describe()} exposes no per-layer outputs")
    with (reference() if reference is not None else contextlib.nullcontext((model.reference, "cpu"))) as (ref_module, ref_device):
        errors = torch_layer_sqnr(ref_module, ref_device, module, getattr(runner, "device", "cpu"), _torch_layers(runner), batches, model.input_names)
        del ref_module  # a reference loaded for this phase is released as the block ends
    return errors


def torch_layer_sqnr(reference: Any, reference_device: str, candidate: Any, candidate_device: str, layers: list[str], batches: list[Tensors], input_names: tuple[str, ...]) -> LayerErrors:
    """Each named layer's output SQNR, candidate against reference, over `batches`, in the order the
    candidate's layers ran. Batch by batch: the reference's layer outputs of one batch wait on the
    host, the candidate's are compared as they come (signal and noise summed in float64), so memory
    holds one batch's layer outputs of one side, whatever the model's size."""
    import torch

    for module in (reference, candidate):
        missing = [name for name in layers if name not in dict(module.named_modules())]
        if missing:
            raise NotLocalizable(f"modules {missing[:5]} are not in the module")
    sums: dict[str, list[float]] = {}  # layer -> [signal, noise], in execution order
    stored: dict[str, list[torch.Tensor]] = {}  # a module called more than once per forward keeps each call

    def keep(name):
        def record(_mod, _args, output):
            stored.setdefault(name, []).append(output.detach().to("cpu"))

        return record

    def compare(name):
        def record(_mod, _args, output):
            ref, cand = stored[name].pop(0).double(), output.detach().to("cpu").double()
            total = sums.setdefault(name, [0.0, 0.0])
            total[0] += float(torch.sum(ref**2))
            total[1] += float(torch.sum((ref - cand) ** 2)) if bool(torch.isfinite(cand).all()) else math.inf

        return record

    def run(module, device, hook, batch):
        modules = dict(module.named_modules())
        handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
        try:
            with torch.inference_mode():
                module(*(torch.from_numpy(batch[name]).to(device) for name in input_names))
        finally:
            for handle in handles:
                handle.remove()

    for batch in batches:
        run(reference, reference_device, keep, batch)
        run(candidate, candidate_device, compare, batch)
        stored.clear()
    return [(name, math.inf if noise == 0 else -math.inf if math.isinf(noise) else 10 * math.log10(signal / noise) if signal > 0 else -math.inf) for name, (signal, noise) in sums.items()]


def localize(case: Any) -> LayerErrors:
    """Per-layer activation SQNR of the case's artifact on its evaluation data (cached per case),
    against the case's reference (Case.reference_module: the fp32 model, or bf16 on the GPU):
    batch by batch."""
    if getattr(case, "_qc_layer_errors", None) is None:
        case._qc_layer_errors = layer_errors(case.runner, case.model, case.model.eval_batches(), getattr(case, "reference_module", None), case.harness.store.cache_dir)
    return case._qc_layer_errors


def first_bad_layer(errors: LayerErrors, threshold: float) -> tuple[str, float, float] | None:
    """(layer, SQNR before it, its SQNR): the first layer below `threshold`, else the layer with the
    largest drop from the layer before it. None for no layers."""
    if not errors:
        return None
    before = [math.inf] + [sqnr for _, sqnr in errors[:-1]]
    for (name, sqnr), prev in zip(errors, before, strict=True):
        if sqnr < threshold:
            return name, prev, sqnr
    drops = [(prev - sqnr if math.isfinite(prev) else -math.inf, i) for i, ((_, sqnr), prev) in enumerate(zip(errors, before, strict=True))]
    i = max(drops)[1]
    return errors[i][0], before[i], errors[i][1]


def describe_first_bad(errors: LayerErrors, threshold: float) -> str:
    found = first_bad_layer(errors, threshold)
    if found is None:
        return ""
    name, prev, sqnr = found
    return f"error starts at layer {name} (SQNR {prev:.1f} dB -> {sqnr:.1f} dB)"


# -- activation ranges on the calibration data --------------------------------------------------


def calibration_input_ranges(runner: Any, model: "ModelSpec", cache_dir: Path | None = None) -> dict[str, tuple[float, float]]:
    """(min, max) of each weight layer's input in the fp32 reference over the calibration data:
    what static activation scales and recorded input statistics must agree with (an ONNX graph's
    from the fp32 export kept in `cache_dir`)."""
    batches = model.calibration_inputs()
    graph = getattr(runner, "model", None)
    if graph is not None and hasattr(graph, "graph"):
        from harness.artifacts.qdq import Graph, smoothing_of

        file = _graph_file(runner)
        g = Graph(graph, file.parent if file else None)
        sources = {module_path(name): (src, smoothing_of(g, src)) for name, _, src in _onnx_layer_tensors(graph)}  # SmoothQuant: the op's input is x * (1/s) per channel
        ranges: dict[str, tuple[float, float]] = {}
        for reference in onnx_tensors(fp32_export(model, cache_dir), [smoothed[0] if smoothed else src for src, smoothed in sources.values()], batches):
            for layer, (src, smoothed) in sources.items():
                values = reference.get(smoothed[0] if smoothed else src)
                if values is not None:
                    values = values.reshape(-1, smoothed[1].size) * smoothed[1] if smoothed else values
                    low, high = ranges.get(layer, (math.inf, -math.inf))
                    ranges[layer] = (min(low, float(values.min())), max(high, float(values.max())))
        return ranges
    layers = _torch_layers(runner)
    found = torch_activations(model.reference, layers, batches, model.input_names, which="input")
    return {name: (float(values.min()), float(values.max())) for name, values in found.items()}
