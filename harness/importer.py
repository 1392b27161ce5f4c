"""`qconform import`: wrap an artifact made by your own pipeline in a manifest, and
`qconform hash-weights`: the source-weights identity of a checkpoint.

The recipe is read from the payload itself wherever it says it (an ONNX QDQ graph's weight dtype,
granularity, axis, zero points and activation quantizers; a torchao state dict's Float8Tensor
weights; INC FP8 dumps' formats and scales), and the payload is checked against the model first:
a payload of another model is refused with the mismatch named."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.artifacts import ArtifactError, load_artifact, write_manifest
from harness.config import find_model
from harness.core import Device, QuantLayout
from harness.identity import align_state_dict, check_onnx_matches, check_state_dict_matches, weight_value_mismatch
from harness.models.base import ModelSpec
from harness.pathways.base import Pathway, get_pathway

# A dequantized weight this far from the reference weight is another model's (same shapes,
# other values). Measured on tiny-llama (ORT quantize_static), worst layer's cosine to the
# reference: per-channel int8 0.99995, per-tensor int8 (outliers set the scale) 0.989; the same
# architecture with another seed's weights 0.011 at best.
FP8_MAX = {"E4M3": 448.0, "E5M2": 57344.0}
FP8_DTYPES = {"E4M3": "float8_e4m3fn", "E5M2": "float8_e5m2"}


class ImportRefused(ValueError):
    """The payload cannot be imported for this model and pathway; the message says why."""


# -- identity checks: does the payload belong to the model? ------------------------------------


def _same_model(check: Callable, payload_content: Any, model: ModelSpec, payload: Path) -> None:
    """The shared identity checks (harness/identity.py, also run when artifacts load), as a refusal."""
    try:
        check(payload_content, model)
    except ArtifactError as exc:
        raise ImportRefused(f"{payload}: {exc}") from None


def _refuse(problems: list[str], payload: Path, model: ModelSpec) -> None:
    problems = [p for p in problems if p]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ImportRefused(f"{payload}: does not belong to model {model.id}: {shown}")


def _single(values: set, what: str, payload: Path) -> Any:
    if len(values) != 1:
        raise ImportRefused(f"{payload}: {what} is not uniform ({sorted(map(str, values))}); give it with --set KEY=VALUE")
    return next(iter(values))


# -- readers: payload -> (files to place, recipe) ------------------------------------------------


def _pick(payloads: list[Path], suffixes: tuple[str, ...], what: str) -> Path:
    found = [p for p in payloads if p.suffix in suffixes]
    if len(found) != 1:
        raise ImportRefused(f"expected exactly one {what} ({'/'.join(suffixes)}) among {[str(p) for p in payloads]}")
    return found[0]


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
        "weight_dtype": _single({layer.dtype for layer in layers}, "weight dtype", payload),
        "weight_granularity": _single({layer.weight_granularity for layer in layers}, "weight granularity", payload),
        "weight_symmetric": all(layer.weight_zero_points is None or not np.any(layer.weight_zero_points) for layer in layers),
    }
    axes = {layer.weight_axis for layer in layers if layer.weight_axis is not None}
    if len(axes) == 1:
        recipe["weight_axis"] = axes.pop()
    act_dtypes = {layer.activation_dtype for layer in layers if layer.activation_dtype}
    act_granularities = {layer.activation_granularity for layer in layers if layer.activation_granularity}
    if act_dtypes:
        recipe["activation_dtype"] = _single(act_dtypes, "activation dtype", payload)
    if act_granularities:
        recipe["activation_granularity"] = _single(act_granularities, "activation granularity", payload)
    if onnx_model.producer_name:
        recipe["producer"] = f"{onnx_model.producer_name} {onnx_model.producer_version}".strip()
    return recipe


def read_qdq(payloads: list[Path], model: ModelSpec, pathway: Pathway) -> tuple[dict[str, Path], dict[str, Any]]:
    from harness.pathways.inc_int8_qdq import PAYLOAD
    from harness.qdq import load_model, read_layout

    payload = _pick(payloads, (".onnx",), "ONNX QDQ graph")
    try:
        onnx_model = load_model(payload)
    except ArtifactError as exc:
        raise ImportRefused(str(exc)) from exc
    _same_model(check_onnx_matches, onnx_model, model, payload)  # graph inputs, layer names, weight shapes
    layout = read_layout(onnx_model)
    references = {name: model.reference_weight(name) for name in layout.layers}
    _refuse([weight_value_mismatch(name, layer.dequantized_weight, references[name]) for name, layer in layout.layers.items() if references[name] is not None], payload, model)
    files = {PAYLOAD: payload}
    if pathway.name == "tensorrt":
        from harness.pathways.tensorrt import ENGINE

        files[ENGINE] = _pick(payloads, (".engine", ".plan"), "TensorRT engine")
    recipe = qdq_recipe(layout, onnx_model, payload)
    if pathway.name.startswith("tensorrt"):
        recipe["runtime"] = pathway.name
    return files, recipe


def read_torchao(payloads: list[Path], model: ModelSpec, pathway: Pathway) -> tuple[dict[str, Path], dict[str, Any]]:
    import torch
    from torchao.quantization import Float8Tensor  # registers torchao's tensor types as torch.load safe globals

    from harness.pathways.torchao_fp8 import PAYLOAD, describe_float8

    payload = _pick(payloads, (".pt", ".pth", ".bin"), "torch state dict")
    try:
        state = torch.load(payload, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ImportRefused(f"{payload}: not a loadable state dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ImportRefused(f"{payload}: holds a {type(state).__name__}, not a state dict (save module.state_dict())")
    expected = model.reference.state_dict()
    state = align_state_dict(state, expected)  # saved from the bare AutoModel: keys without the wrapper's prefix
    _same_model(check_state_dict_matches, state, model, payload)  # tensor names and shapes
    fp8 = {k: v for k, v in state.items() if isinstance(v, Float8Tensor)}
    values = [weight_value_mismatch(k.removesuffix(".weight"), v.dequantize(torch.float32).numpy(), expected[k].float().numpy()) for k, v in fp8.items()]
    _refuse(values, payload, model)
    if not fp8:
        raise ImportRefused(f"{payload}: no Float8Tensor weights: not a torchao FP8 checkpoint")
    described = [describe_float8(tensor) for tensor in fp8.values()]
    recipe = {key: _single({d[key] for d in described}, key.replace("_", " "), payload) for key in described[0]}
    floats = {str(v.dtype).removeprefix("torch.") for k, v in state.items() if k not in fp8 and v.is_floating_point()}
    if len(floats) == 1:
        recipe["model_dtype"] = floats.pop()
    return {PAYLOAD: payload}, recipe


def read_inc_fp8(payloads: list[Path], model: ModelSpec, pathway: Pathway) -> tuple[dict[str, Path], dict[str, Any]]:
    """INC's dump_stats_path files (<prefix>_hooks_maxabs.json/.npz, ..._MAXABS_POW2.json/.npz, ..._mod_list.json)."""
    from harness.pathways.inc_fp8_ref import STATS

    files, docs = {}, {}
    for path in payloads:
        match = re.search(r"_hooks_.*\.(json|npz)$", path.name)
        if match is None:
            raise ImportRefused(f"{path}: not an INC FP8 dump (expected <prefix>_hooks_*.json or .npz from dump_stats_path)")
        files[STATS + match.group(0)] = path  # INC finds them by the prefix the pathway gives it
        if path.suffix == ".json":  # the .npz files hold the same numbers for INC's own reload
            docs[match.group(0)] = json.loads(path.read_text())
    modules = next((d for d in docs.values() if isinstance(d, list)), None)
    measured = next((d for d in docs.values() if isinstance(d, dict) and d.get("Mode") == "DynamicRange"), None)
    scales_name, scales = next(((n, d) for n, d in docs.items() if isinstance(d, dict) and d.get("Mode") == "Scale"), (None, None))
    if modules is None or measured is None or scales is None:
        raise ImportRefused(f"need the measurement, scale and mod_list dumps of one INC run; got {[str(p) for p in payloads]}")
    linears = set(model.linear_layer_names())
    problems = [f"layer {name}: not a Linear layer of model {model.id}" for name in modules if name not in linears]
    for name, node in measured["Nodes"].items():
        reference = model.reference_weight(name)
        if reference is not None and "weight" in node.get("params", {}):
            amax, expected = float(np.max(node["params"]["weight"])), float(np.abs(reference).max())
            if not np.isclose(amax, expected, rtol=1e-3):
                problems.append(f"layer {name}: measured weight amax {amax:.6g} differs from the model's {expected:.6g}")
    _refuse(problems, payloads[0], model)
    # pow2 scales put amax/scale within (fmax*backoff/2, fmax*backoff]; E4M3's fmax is 448, E5M2's 57344.
    ratio = max(float(np.max(measured["Nodes"][n]["params"]["weight"])) / float(s["params"]["weight"]) for n, s in scales["Nodes"].items() if "weight" in s.get("params", {}))
    fp8_format = next((f for f, fmax in FP8_MAX.items() if ratio <= fmax), None)
    if fp8_format is None:
        raise ImportRefused(f"{files and payloads[0]}: weight amax/scale reaches {ratio:.4g}, beyond any FP8 format's range")
    pathway_format = getattr(pathway, "fp8_format", fp8_format)
    if pathway_format != fp8_format:
        raise ImportRefused(f"the dumps hold {fp8_format} scales (amax/scale up to {ratio:.4g}); pathway {pathway.name} quantizes {pathway_format}")
    recipe = {
        "fp8_format": fp8_format,
        "weight_dtype": FP8_DTYPES[fp8_format],
        "weight_granularity": "per-tensor",
        "activation": "static per-tensor, measured amax",
        "scale_method": scales_name.removeprefix("_hooks_maxabs_").removesuffix(".json").lower(),
        "module_types": ["Linear"],
    }
    return files, recipe


def reader_for(pathway: Pathway) -> Callable | None:
    from harness.pathways.inc_fp8_ref import IncFp8Reference
    from harness.pathways.inc_int8_qdq import IncInt8Qdq
    from harness.pathways.tensorrt import _FromQdq
    from harness.pathways.torchao_fp8 import TorchaoFp8Rowwise

    for kind, reader in ((IncInt8Qdq, read_qdq), (_FromQdq, read_qdq), (IncFp8Reference, read_inc_fp8), (TorchaoFp8Rowwise, read_torchao)):
        if isinstance(pathway, kind):
            return reader
    return None


# -- the commands ---------------------------------------------------------------------------------


def _assignments(items: list[str], what: str, parse: bool = True) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ImportRefused(f"{what} {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value) if parse else value
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


def import_artifact(pathway: Pathway, model: ModelSpec, payloads: list[Path], out_root: Path, overrides: dict[str, Any], tools: dict[str, str]) -> Path:
    """Check, copy and hash the payload into OUT/<model>/<pathway>/ with its manifest; returns that directory."""
    for path in payloads:
        if not path.is_file():
            raise ImportRefused(f"{path}: no such file")
    reader = reader_for(pathway)
    if reader is None:
        if not overrides:
            raise ImportRefused(f"qconform cannot read a {pathway.name} payload's recipe; give it with --set KEY=VALUE (docs/artifacts.md)")
        files, recipe = {p.name: p for p in payloads}, {}
    else:
        files, recipe = reader(payloads, model, pathway)
    target = out_root / model.id / pathway.name
    if target.exists():
        raise ImportRefused(f"{target}: already exists; remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".import-"))
    try:
        for name, source in files.items():
            shutil.copyfile(source, staging / name)
        device = Device.detect()
        write_manifest(
            staging,
            pathway=pathway.name,
            model_id=model.id,
            recipe={**recipe, **overrides},
            source_weights_sha256=model.weights_sha256,  # the identity checks above tie the payload to these weights
            tool_versions={**pathway.tool_versions(), **tools},
            built_on={"kind": device.kind, "name": device.name, "capability": list(device.capability) if device.capability else None},
        )
        load_artifact(staging, pathway=pathway.name, model_id=model.id)  # the contract, before it is published
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def cmd_import(args: argparse.Namespace) -> int:
    try:
        pathway, model = get_pathway(args.pathway), find_model(args.model, Path.cwd())
        target = import_artifact(pathway, model, [Path(p) for p in args.payload], Path(args.out), _assignments(args.set, "--set"), _assignments(args.tool_version, "--tool-version", parse=False))
    except (ImportRefused, ArtifactError, KeyError) as exc:
        print(f"qconform import: {exc.args[0] if isinstance(exc, KeyError) else exc}")
        return 1
    artifact = load_artifact(target)
    print(f"qconform: imported {pathway.name} for {model.id} -> {target}")
    print(f"  recipe: {json.dumps(artifact.recipe, sort_keys=True)}")
    print(f"  run it: qconform run --artifacts {args.out} --models {model.id} --pathways {pathway.name}")
    return 0


def cmd_hash_weights(args: argparse.Namespace) -> int:
    from harness.weights import hash_weights

    try:
        print(hash_weights(Path(args.path)))
    except (ValueError, OSError) as exc:
        print(f"qconform hash-weights: {exc}")
        return 1
    return 0


def add_parsers(sub) -> None:
    """The `import` and `hash-weights` subcommands (cli.main dispatches through COMMANDS)."""
    imp = sub.add_parser("import", help="wrap an artifact made by your own pipeline in a manifest (checked against the model)")
    imp.add_argument("--pathway", required=True, help="pathway that will load it, e.g. inc-int8-qdq")
    imp.add_argument("--model", required=True, help="the model the payload was made from: a checkpoint directory, .onnx file, module:factory, or a model id (project file or built-in)")
    imp.add_argument("payload", nargs="+", help="payload file(s): a QDQ .onnx (+ .engine for tensorrt), a torchao state dict .pt, INC FP8 *_hooks_*.json dumps")
    imp.add_argument("--out", required=True, help="artifacts root; writes OUT/<model>/<pathway>/ for `qconform run --artifacts OUT`")
    imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="add or override a recipe entry (VALUE parsed as JSON if it can be)")
    imp.add_argument("--tool-version", action="append", default=[], metavar="DIST=VERSION", help="record the version of a tool that made the payload")
    hw = sub.add_parser("hash-weights", help="print the source-weights sha256 of a checkpoint dir, .safetensors or .onnx (docs/artifacts.md)")
    hw.add_argument("path")


COMMANDS = {"import": cmd_import, "hash-weights": cmd_hash_weights}
