"""inc-int8-qdq: Intel Neural Compressor static post-training quantization to an ONNX QDQ graph,
executed with ONNX Runtime.

INC's ONNX line is the `onnx-neural-compressor` package (INC 3.x moved ONNX out of
`neural-compressor`; the 2.x `PostTrainingQuantConfig(backend="onnxrt_qdq")` API pins numpy<2 and
pulls pycocotools/opencv for nothing we use). Its `StaticQuantConfig` + `quantize` is the
supported static PTQ entry point (onnx_neural_compressor/quantization/quantize.py).

Build options a project's `[recipes.inc-int8-qdq]` may set (IncInt8Qdq.recipe_options), for LLMs
whose layer inputs carry outlier channels (SmolLM2-135M's down_proj inputs: channels up to 2930x the
median; the default recipe measured logits SQNR 1.8 dB, top-1 0.36 in exact QDQ arithmetic, -1.1 dB
and 0.01 on ONNX Runtime's AVX2 kernels; SmoothQuant 0.5 or 0.8 with float outputs and float
down_proj passed the policy thresholds: 20.4 dB / 21.9 dB, KL 0.037 / 0.032, top-1 0.88 / 0.90):
- `smoothquant = true` runs INC's SmoothQuant first (`SmoothQuantConfig`: each weight op's input is
  divided by s = max|x|^alpha / max|w|^(1-alpha) per input channel, its weight multiplied by s), then
  the same static quantization. `smoothquant_alpha` is alpha (INC's default 0.5), or "auto": INC's
  per-layer search over alpha 0.3 .. 0.65 (its auto_alpha_args defaults).
- `keep_float`: weight layers kept in float (regexes over ONNX node names), replacing the model's
  `int8_keep_float`: the project's table states the whole list the artifact holds.
- `quantize_outputs`: false keeps the weight ops' outputs float (INC also quantizes them by default).
(No calibration-method option: onnx-neural-compressor 1.0 gave bit-identical activation scales for
minmax, percentile and entropy on the tiny Llama of tests/test_smoothquant.py, so it is not offered.)
A default build records none of the SmoothQuant keys: its recipe, and so its cache key, are unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.artifacts.errors import ArtifactError
from harness.artifacts.identity import check_onnx_matches, check_weight_values, weight_value_mismatch
from harness.artifacts.manifest import Artifact
from harness.artifacts.payloads import ImportRefused, external_data_files, pick, refuse, same_model, single
from harness.core import Device, QuantLayout, Runner, Tensors, release_host_memory
from harness.measure.localize import EXPORT_OPSET, fp32_export
from harness.models.base import ModelSpec
from harness.pathways.base import Pathway, register
from harness.runtimes.onnxruntime import OrtQdqRunner, ort_provider_missing, ort_session

PAYLOAD = "model.qdq.onnx"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# recipe "calibration" -> onnxruntime.quantization.CalibrationMethod member
CALIBRATION_METHODS = {"minmax": "MinMax"}
SMOOTHQUANT_ALPHA = 0.5  # INC's default (SmoothQuantConfig)


def _calibration_reader(batches: list[Tensors]):
    from onnx_neural_compressor import data_reader

    class Reader(data_reader.CalibrationDataReader):
        """One pass over the batches, then None, then the next pass: INC's SmoothQuant alpha search
        reads the reader once per layer and alpha without rewinding it; a reader that stays empty
        makes every loss 0 and silently picks alpha_min for every layer."""

        def __init__(self) -> None:
            self.rewind()

        def get_next(self):
            batch = next(self._it, None)
            if batch is None:
                self.rewind()
            return batch

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


def export_for_quantization(model: ModelSpec, recipe: dict[str, Any], tmp: Path) -> tuple[Path, list[str]]:
    """The fp32 ONNX export at the recipe's opset, and the names of its nodes the recipe keeps in
    float. At the exporter's default opset it is the run's cached export (localize.fp32_export, its
    weights as external data): one TorchScript export per model and run, shared with localization,
    instead of one per build."""
    fp32 = fp32_export(model) if recipe["opset"] == EXPORT_OPSET else model.export_onnx(tmp / "model.fp32.onnx", opset=recipe["opset"])
    names = [node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node]
    return fp32, [n for n in names if any(re.search(p, n) for p in recipe["keep_float"])]


def build_qdq(model: ModelSpec, calib: list[Tensors], out_path: Path, recipe: dict[str, Any]) -> Path:
    """INC static PTQ of the fp32 export to a QDQ graph at `out_path`, as `recipe` says
    (IncInt8Qdq.recipe's keys; the TensorRT pathways change the activation dtype and symmetry)."""
    from onnx_neural_compressor.quantization import config
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    with tempfile.TemporaryDirectory(prefix="qconform-export-") as tmp:
        fp32, keep_float = export_for_quantization(model, recipe, Path(tmp))
        # INC reads only the export, and holds the graph up to three times while it calibrates: the
        # torch module (4.6 GiB at 1B) is not kept beside them; a later phase that needs it loads it.
        if model.release_reference():
            release_host_memory()
        unmatched = [p for p in recipe["keep_float"] if not any(re.search(p, n) for n in keep_float)]
        if unmatched:
            raise ArtifactError(f"keep_float patterns {unmatched} match no node of the {model.id} ONNX export (node names look like {keep_float[:1] or _weight_op_names(fp32)[:2]})")
        if recipe.get("smoothquant"):
            calib = _uniform_rows(calib)
        static = dict(
            calibration_data_reader=_calibration_reader(calib),
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[recipe["calibration"]]),
            quant_format=QuantFormat.QDQ,
            activation_type={"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[recipe["activation_dtype"]],
            weight_type=QuantType.QInt8,
            op_types_to_quantize=recipe["op_types"],
            nodes_to_exclude=keep_float,
            per_channel=recipe["weight_granularity"] == "per-channel",
            execution_provider="CPUExecutionProvider",
            extra_options={"WeightSymmetric": recipe["weight_symmetric"], "ActivationSymmetric": recipe.get("activation_symmetric", False)},
        )
        if not recipe.get("quantize_outputs", True):
            # INC's static MatMul/Gemm also quantizes its output (per tensor) unless its op type is
            # excluded (algorithms/post_training_quant/operators/matmul.py StaticMatMulOperator).
            static["extra_options"] = {**static["extra_options"], "OpTypesToExcludeOutputQuantization": list(recipe["op_types"])}
        if recipe.get("smoothquant"):
            # quantize() runs SmoothQuant only when extra_options says so, with the SmoothQuantConfig's
            # own arguments. folding=False keeps every smoothing a visible `<node>_smooth_mul` in front
            # of its op (harness/artifacts/qdq.py smoothing_of reads it back); folded into a
            # preceding op's weights it could not be told from the model's own. scales_per_op: one
            # scale per op (q, k and v each get theirs), INC's default.
            static["extra_options"] = {**static["extra_options"], "SmoothQuant": True}
            quant_config = config.SmoothQuantConfig(alpha=recipe["smoothquant_alpha"], folding=False, op_types=list(recipe["op_types"]), scales_per_op=True, calib_iter=len(calib), **static)
        else:
            quant_config = config.StaticQuantConfig(**static)
        # INC's quantize() optimizes the graph first (ORT_ENABLE_BASIC); alpha "auto" needs that in one file.
        source = _basic_optimized(fp32, Path(tmp), one_file=recipe.get("smoothquant_alpha") == "auto")
        inc_logger = logging.getLogger("onnx_neural_compressor")
        level = inc_logger.level
        inc_logger.setLevel(logging.WARNING)  # its per-op statistics table is noise in a test log
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # SmoothQuant prints a progress bar
                if recipe.get("smoothquant"):
                    _smooth_then_quantize(source, quant_config, out_path, Path(tmp))
                else:
                    _static_quantize(source, quant_config, out_path)
        finally:
            inc_logger.setLevel(level)
    if not out_path.is_file():
        raise ArtifactError(f"{out_path}: Neural Compressor produced no model")
    fix_bias_axes(out_path)
    return out_path


def fix_bias_axes(path: Path) -> bool:
    """Give each per-channel bias DequantizeLinear axis 0, the only axis of its 1-D tensor.

    Why: onnx-neural-compressor 1.0 gives a Gemm's int32 bias DequantizeLinear the axis of the
    weight's (quantizer.py quantize_bias_tensor copies it). A Gemm with transB=0 (transformers'
    Conv1D: GPT-2's c_attn, c_fc, c_proj) holds its weight (in, out), quantized along axis 1, and
    so its bias gets axis 1 on a 1-D tensor: invalid ONNX that ONNX Runtime's optimizer folds away
    (an unoptimized session raises "axis 1 is not in valid range [-1,0]"). The bias's scales are
    input_scale * weight_scale[c], one per output channel c, which is the bias's element c: axis 0
    is what INC computed them for, so the artifact's numbers stay INC's, now in a valid graph
    (harness/artifacts/qdq.py qdq_axis_problems checks every artifact, whoever made it).
    Rewritten in place, external data untouched; returns whether anything changed."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    changed = False
    for node in model.graph.node:
        data = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if data is None or len(data.dims) != 1 or data.data_type != onnx.TensorProto.INT32:
            continue
        for attr in node.attribute:
            if attr.name == "axis" and attr.i not in (0, -1):
                attr.i, changed = 0, True
    if changed:
        onnx.save(model, str(path))
    return changed


def _uniform_rows(calib: list[Tensors]) -> list[Tensors]:
    """The calibration batches one row each: INC's SmoothQuant stacks every batch's layer inputs
    into one array (algorithms/smoother/calibrator.py _get_max_per_channel), so they must share a
    shape, and a last batch holding fewer windows (3 windows in batches of 2) does not."""
    rows = [{name: value[i : i + 1] for name, value in batch.items()} for batch in calib for i in range(len(next(iter(batch.values()))))]
    shapes = {tuple(sorted((name, value.shape) for name, value in row.items())) for row in rows}
    if len(shapes) > 1:
        raise ArtifactError(f"SmoothQuant needs calibration inputs of one shape (INC stacks them); these have {len(shapes)}: {sorted(shapes)[:2]}")
    return rows


def _basic_optimized(fp32: Path, tmp: Path, one_file: bool = False) -> Path:
    """The ORT_ENABLE_BASIC optimization INC's quantize() applies first, its weights as external
    data, or in one file (`one_file`): INC's SmoothQuant alpha search runs its sessions from a copy
    saved before it adds the layer outputs it reads, and with external data that copy fails
    ("Invalid output name", onnx_neural_compressor 1.0 algorithms/smoother/core.py _get_output_loss)."""
    import onnxruntime as ort

    path = tmp / "model.basic.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    if not one_file:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{path.name}.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    try:
        ort.InferenceSession(str(_copied_into(fp32, tmp, one_file)), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's Fail or onnx's ValueError: e.g. a graph over protobuf's 2 GB in one file
        if not one_file:
            raise
        raise ArtifactError(f"smoothquant_alpha = \"auto\": INC's alpha search needs the model in one ONNX file, which failed ({type(exc).__name__}: {str(exc)[:200]})") from exc
    return path


def _copied_into(fp32: Path, tmp: Path, one_file: bool) -> Path:
    """`fp32` and its external data files copied into `tmp`, or saved there as one file: the
    optimized graph refers to the data of the initializers ORT did not change by their file's
    relative name, which must resolve beside it (as a regular file: onnx refuses a symbolic or hard
    link to external data)."""
    from harness.artifacts.trust import onnx_external_data

    if fp32.parent == tmp:  # exported there (another opset than the cached export's), in one file
        return fp32
    if one_file:
        onnx.save_model(onnx.load(str(fp32)), str(tmp / fp32.name))
        return tmp / fp32.name
    for source in (fp32, *{fp32.parent / location for location in onnx_external_data(fp32).values()}):
        shutil.copyfile(source, tmp / source.name)
    return tmp / fp32.name


def _augmented_graph_without_weights(augment: Any) -> None:
    """For a graph over 2 GB, INC's calibration saves its augmented copy of the graph with the weights
    as external data and makes its session from that file, but keeps the copy while the session runs
    (calibrate.py augment_graph). onnx's save clears the weights from the copy, yet protobuf keeps
    their memory in the copy's arena until the copy goes: the copy is replaced by the saved graph
    loaded without its weights, which nothing reads from it. Llama-3.2-1B's shapes: the build's peak
    17.7 -> 14.8 GiB, the same artifact (the copy held 5.5 GiB; trimming the heap alone changed
    nothing)."""
    augment_graph = augment.augment_graph

    def augment_then_drop_weights() -> None:
        augment_graph()
        if augment.model_wrapper.is_large_model:
            augment.augmented_model = onnx.load(augment.model_wrapper.model_path + "_augment.onnx", load_external_data=False)
            release_host_memory()

    augment.augment_graph = augment_then_drop_weights


# INC's entries (onnx_neural_compressor 1.0 quantization/algorithm_entry.py smooth_quant_entry and
# static_quantize_entry), step by step with each step's objects released before the next: the
# entries keep the Smoother (its model and augmented copy) alive through the static quantization,
# and the calibration's augmented model through the quantizer's own copy. On the 135M Llama shapes
# with SmoothQuant the build's peak RSS went 5.9 -> 3.5 GiB, and 4.1 GiB stayed taken after it
# (1.4 GiB now). The steps and their arguments are INC's own; the artifact is the same.
def _static_quantize(source: Path, quant_config: Any, out_path: Path) -> None:
    from onnx_neural_compressor.algorithms.post_training_quant import calibrate, quantizer
    from onnx_neural_compressor.quantization import config

    model = str(source)
    mapping = quant_config.config_mapping or quant_config.to_config_mapping(model_info=config.StaticQuantConfig.get_model_info(model=model))
    reader = quant_config.calibration_data_reader
    reader.rewind()
    augment = calibrate.ONNXRTAugment(model, reader, dump_op_types=quant_config.op_types_to_quantize, execution_provider=quant_config.execution_provider, iterations=list(range(quant_config.calibration_sampling_size)))
    _augmented_graph_without_weights(augment)
    parameters = augment.dump_calibration(mapping, min_max=augment.dump_minmax(mapping))
    del augment
    release_host_memory()
    quant = quantizer.StaticQuantizer(
        model, mapping, quant_format=quant_config.quant_format.name.lower(), quantization_params=parameters,
        op_types_to_quantize=quant_config.op_types_to_quantize, execution_provider=quant_config.execution_provider,
        optypes_to_exclude_output_quant=quant_config.optypes_to_exclude_output_quant,
        dedicated_qdq_pair=quant_config.dedicated_qdq_pair, add_qdq_pair_to_weight=quant_config.add_qdq_pair_to_weight,
    )
    quant.quantize_model()
    quant.model.save(str(out_path))
    del quant
    release_host_memory()


def _smooth_then_quantize(source: Path, quant_config: Any, out_path: Path, tmp: Path) -> None:
    from onnx_neural_compressor.algorithms.smoother import core

    reader = quant_config.calibration_data_reader
    reader.rewind()
    smoother = core.Smoother(str(source), reader, execution_provider=quant_config.execution_provider)
    smoothed = smoother.transform(**quant_config.to_dict())
    del smoother
    release_host_memory()
    path = tmp / "model.smooth.onnx"
    onnx.save_model(smoothed, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{path.name}.data", size_threshold=1024, convert_attribute=False)
    # INC leaves its smoothing Mul nodes in float (smooth_quant_entry's nodes_to_exclude).
    quant_config.nodes_to_exclude.extend(node.name for node in smoothed.graph.node if node.name.endswith("_smooth_mul"))
    del smoothed
    release_host_memory()
    _static_quantize(path, quant_config, out_path)


def _weight_op_names(fp32: Path) -> list[str]:
    from harness.artifacts.qdq import WEIGHT_OPS

    return [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node if n.op_type in WEIGHT_OPS]


def int8_qdq_recipe(model: ModelSpec) -> dict[str, Any]:
    """The default INC INT8 QDQ recipe for `model` (no project options applied)."""
    return {
        "format": "QDQ",
        "opset": 17,
        "op_types": ["MatMul", "Gemm"],  # the weight-bearing ops; W8A8 for Linear layers
        "weight_dtype": "int8",
        "weight_granularity": "per-channel",
        "weight_symmetric": True,
        "activation_dtype": "uint8",
        "activation_granularity": "per-tensor",
        "calibration": "minmax",
        "calibration_batches": len(model.calibration_inputs()),
        "keep_float": list(model.int8_keep_float),  # regexes over ONNX node names
    }


RECIPE_OPTIONS = {
    "smoothquant": "true: Neural Compressor's SmoothQuant before static quantization (per-input-channel scales move activation outliers into the weights)",
    "smoothquant_alpha": 'SmoothQuant migration strength in [0, 1] (default 0.5), or "auto" (INC\'s per-layer search over 0.3 .. 0.65); selects SmoothQuant',
    "keep_float": "weight layers kept in float, regexes over ONNX node names; replaces the model's int8_keep_float",
    "quantize_outputs": "false: weight ops' outputs stay float (INC's static QDQ also quantizes each MatMul/Gemm output per tensor by default)",
}


def option_problem(key: str, value: Any) -> str | None:
    """What is wrong with one recipe option's value (None: valid)."""
    if key in ("smoothquant", "quantize_outputs") and not isinstance(value, bool):
        return f"must be true or false, not {value!r}"
    if key == "smoothquant_alpha":
        if value == "auto":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            return f'must be a number in [0, 1] or "auto", not {value!r}'
    if key == "keep_float":
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            return f"must be a list of regexes (strings), not {value!r}"
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                return f"{pattern!r} is not a regex ({exc})"
    return None


def with_options(recipe: dict[str, Any], options: dict[str, Any], where: str = "recipe") -> dict[str, Any]:
    """`recipe` with the selected build options applied; every option selected is recorded (so the
    manifest states it and the cache key changes with it), none that is not: a build that selects
    nothing keeps the default recipe byte for byte. Raises ValueError for an invalid value."""
    for key, value in options.items():
        problem = option_problem(key, value)
        if problem:
            raise ValueError(f"{where} {key}: {problem}")
    if options.get("smoothquant") is False and "smoothquant_alpha" in options:
        raise ValueError(f"{where}: smoothquant_alpha = {options['smoothquant_alpha']!r} with smoothquant = false")
    recipe = dict(recipe)
    if "keep_float" in options:
        recipe["keep_float"] = list(options["keep_float"])
    if "quantize_outputs" in options:
        recipe["quantize_outputs"] = options["quantize_outputs"]
    if "smoothquant" in options or "smoothquant_alpha" in options:
        recipe["smoothquant"] = options.get("smoothquant", True)
        if recipe["smoothquant"]:
            alpha = options.get("smoothquant_alpha", SMOOTHQUANT_ALPHA)
            recipe["smoothquant_alpha"] = alpha if alpha == "auto" else float(alpha)
    return recipe


def qdq_recipe(layout: QuantLayout, onnx_model, payload: Path) -> dict[str, Any]:
    """The recipe a QDQ graph states about itself."""
    layers = list(layout.layers.values())
    if not layers:
        raise ImportRefused(f"{payload}: no weight layer is quantized (no DequantizeLinear feeds a MatMul/Gemm/Conv weight)")
    ops = {n.name or n.output[0]: n.op_type for n in onnx_model.graph.node}
    recipe: dict[str, Any] = {
        "format": "QDQ",
        "opset": next(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")),
        "op_types": sorted({ops[layer.name] for layer in layers}),
        "weight_dtype": single({layer.dtype for layer in layers}, "weight dtype", payload),
        "weight_granularity": single({layer.weight_granularity for layer in layers}, "weight granularity", payload),
        "weight_symmetric": all(layer.weight_zero_points is None or not np.any(layer.weight_zero_points) for layer in layers),
    }
    axes = {layer.weight_axis for layer in layers if layer.weight_axis is not None}
    if len(axes) == 1:
        recipe["weight_axis"] = axes.pop()
    act_dtypes = {layer.activation_dtype for layer in layers if layer.activation_dtype}
    act_granularities = {layer.activation_granularity for layer in layers if layer.activation_granularity}
    if act_dtypes:
        recipe["activation_dtype"] = single(act_dtypes, "activation dtype", payload)
    if act_granularities:
        recipe["activation_granularity"] = single(act_granularities, "activation granularity", payload)
    if any(layer.input_smoothing is not None for layer in layers):
        recipe["smoothquant"] = True  # its alpha is not in the graph: only the scales it gave
    if not any(layer.output_quantized for layer in layers):
        recipe["quantize_outputs"] = False  # no weight op's output is quantized (INC's default quantizes them)
    if onnx_model.producer_name:
        recipe["producer"] = f"{onnx_model.producer_name} {onnx_model.producer_version}".strip()
    return recipe


def read_qdq_payload(payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
    """`qconform import` of a QDQ graph (any QDQ producer: INC, ONNX Runtime's quantize_static, ...):
    checked against the model (inputs, layer names, weight shapes and values), with the ONNX
    external data it references; the recipe read from the graph."""
    from harness.artifacts.qdq import load_model, read_layout, smoothed_reference

    payload = pick(payloads, (".onnx",), "ONNX QDQ graph")
    try:
        onnx_model = load_model(payload)
    except ArtifactError as exc:
        raise ImportRefused(str(exc)) from exc
    same_model(check_onnx_matches, onnx_model, model, payload)  # graph inputs, layer names, weight shapes
    layout = read_layout(onnx_model)
    references = {name: smoothed_reference(model.reference_weight(name), layer) for name, layer in layout.layers.items()}
    refuse([weight_value_mismatch(name, layer.dequantized_weight, references[name]) for name, layer in layout.layers.items() if references[name] is not None], payload, model)
    files = {PAYLOAD: payload, **external_data_files(payload, reserved={PAYLOAD})}
    return files, qdq_recipe(layout, onnx_model, payload)


@register
class IncInt8Qdq(Pathway):
    name = "inc-int8-qdq"
    description = "Intel Neural Compressor static PTQ to ONNX QDQ (per-channel int8 weights), run with ONNX Runtime"
    devices = ("cpu", "cuda")  # ONNX Runtime CPU EP; CUDA EP on GPUs
    requires = {"onnxruntime": "pip install onnxruntime"}
    build_requires = {"onnx_neural_compressor": "pip install 'qconform[cpu]'"}

    def unavailable(self, device: Device) -> str | None:
        reason = super().unavailable(device)
        if reason is None and device.kind == "cuda":
            missing = ort_provider_missing(PROVIDERS["cuda"])
            reason = f"{self.name}: {missing}" if missing else None
        return reason

    tool_packages = ("onnx-neural-compressor", "onnxruntime", "onnx", "torch")

    def probe_operation(self, device: Device):
        provider = PROVIDERS[device.kind]
        return f"onnxruntime InferenceSession on {provider}", ort_session(provider)

    recipe_options = RECIPE_OPTIONS

    def recipe_option_problem(self, key: str, value: Any) -> str | None:
        return option_problem(key, value)

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        return with_options(int8_qdq_recipe(model), self.selected_options(model), f"[recipes.{self.name}]")

    def build(self, model: ModelSpec, calib: list[Tensors], out_dir: Path) -> Artifact:
        build_qdq(model, calib, out_dir / PAYLOAD, self.recipe(model))
        return self.finish(out_dir, model, Device.detect())

    def read_payload(self, payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
        return read_qdq_payload(payloads, model)

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        runner = OrtQdqRunner(artifact.file(PAYLOAD), PROVIDERS[device.kind], artifact_dir=artifact.path)
        check_onnx_matches(runner.model, model)  # inputs, layer names, weight shapes
        check_weight_values(runner.layout(), model)  # and sampled weight values
        return runner

    def float_baseline(self, model: ModelSpec, device: Device) -> Runner:
        """The fp32 model on the same execution provider: what the INT8 graph must beat."""
        with tempfile.TemporaryDirectory(prefix="qconform-fp32-") as tmp:
            return OrtQdqRunner(model.export_onnx(Path(tmp) / "model.fp32.onnx"), PROVIDERS[device.kind], weights_in_memory=True)
