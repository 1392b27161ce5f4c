"""inc-fp8-ref: Intel Neural Compressor's PyTorch FP8 quantization (measure, then quantize) in its CPU
QDQ emulation: the numerical reference the GPU FP8 pathways are checked against.

The supported CPU route in neural-compressor-pt 3.10 (neural_compressor/torch/algorithms/fp8_quant):
`FP8Config(..., use_qdq=True)` (_quant_common/quant_config.py refuses anything else on CPU) with a
scale method that is not Gaudi-specific: the default "maxabs_hw" fails on CPU with KeyError: None
(_core/scale_methods/round_scales_function.py), so the recipe uses "maxabs_pow2" (amax / (fp8 max *
backoff), rounded up to a power of two; per-tensor). `prepare(mode="MEASURE")` + calibration +
`finalize_calibration` dump the measured amax; `convert(mode="QUANTIZE")` derives and dumps the
scales. Both dumps are the artifact; loading re-runs `convert` on a fresh reference from them.

INC writes each dump twice, as .json and as .npz, and reads only the .npz, with
`np.load(fname, allow_pickle=True)` (_core/common.py `load_npz`): its .npz holds a pickled dict, so
an artifact's .npz could run any code on load. The artifact therefore keeps the .json dumps only;
`load` refuses any .npz in it and writes INC's .npz itself from the .json, so INC only ever
unpickles a file qconform wrote from plain JSON numbers.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from harness.artifacts.errors import ArtifactError
from harness.artifacts.identity import check_layer_names
from harness.artifacts.manifest import Artifact
from harness.artifacts.payloads import ImportRefused, WrongArtifact, refuse
from harness.artifacts.trust import check_npz
from harness.core import DTYPES, FP8_FORMATS, Device, QuantLayer, QuantLayout, Runner, Tensors
from harness.measure import memory
from harness.models.base import ModelSpec
from harness.models.hf import conv1d_as_linear
from harness.pathways.base import Pathway, register
from harness.runtimes.torch import TorchRunner

# The reference is INC's CPU emulation, GPU or not. INC picks its accelerator when it is first
# imported; on a CUDA machine it would pick CUDA and refuse to save calibration results ("supported
# only in HPU", seen on an H200), so CPU is set before any INC import here.
os.environ.setdefault("INC_TARGET_DEVICE", "cpu")
STATS = "measure"  # INC's dump_stats_path prefix inside the artifact


def npz_stats(dump: dict[str, Any]) -> dict[str, Any]:
    """The object INC's save_npz pickles, from its .json dump: every tensor as a float32 array.

    json.dump writes a float32 (widened to a Python float) exactly, so this is bit-identical to the
    .npz INC wrote at build time (tests/test_trust.py compares them)."""

    def arrays(node: dict[str, Any]) -> dict[str, Any]:
        out = dict(node)
        for field in ("inputs", "outputs"):
            if field in node:
                out[field] = [np.asarray(tensor, dtype=np.float32) for tensor in node[field]]
        if "params" in node:
            out["params"] = {name: np.asarray(tensor, dtype=np.float32) for name, tensor in node["params"].items()}
        return out

    return {**dump, "Nodes": {name: arrays(node) for name, node in dump["Nodes"].items()}}


def _fp8_config(fmt: str, stats_dir: Path, mode: str):
    from neural_compressor.torch.quantization import FP8Config

    return FP8Config(
        mode=mode,
        fp8_config=fmt,
        hp_dtype="fp32",
        use_qdq=True,
        scale_method="maxabs_pow2",
        allowlist={"names": [], "types": ["Linear"]},
        dump_stats_path=str(stats_dir / STATS),
    )


def float8_round_trip(device: Device) -> str:
    """The capability probe (harness/run/probes.py): INC's FP8 CPU emulation casts to torch's float8
    dtypes and back."""
    import torch

    values = torch.tensor([0.5, -1.5, 448.0])
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        back = values.to(dtype).float()
        if not torch.equal(back, values):
            raise RuntimeError(f"{dtype} round trip changed {values.tolist()} to {back.tolist()}")
    return "float8_e4m3fn and float8_e5m2 casts on cpu"


def read_layout(module) -> QuantLayout:
    layout = QuantLayout()
    for name, child in module.named_modules():
        if type(child).__name__ == "PatchedLinear":
            weight, scale = child.weight.detach(), float(child.dequant_weights.scale)
            layout.layers[name] = QuantLayer(
                name=name,
                dtype=str(weight.dtype).removeprefix("torch."),
                weight_granularity="per-tensor",
                weight_axis=None,
                weight_scales=np.array([scale]),
                activation_dtype=str(child.quant_input.lp_dtype).removeprefix("torch."),  # what the input is cast to
                activation_granularity="per-tensor (measured amax)",
                activation_scale=np.array([float(child.quant_input.scale)]),
                output_channels=child.out_features,
                # INC keeps the FP8 weight transposed, (in, out).
                dequantized=lambda weight=weight, scale=scale: (weight.float() * scale).T,  # on each read: one layer's fp32 copy at a time
            )
        elif type(child).__name__ == "Linear":
            layout.unquantized.append(name)
    return layout


def dequantize_weights_once(module) -> None:
    """INC's CPU QDQ emulation dequantizes every FP8 weight on every forward (PatchedLinear's
    run_linear_qdq: `dequant_weights(self.weight)`, a float8 -> fp32 cast and a scale multiply), 83%
    of a Gemma-3-270m forward measured with torch.profiler (1.86 s against 0.41 s for fp32). The
    weights are constants: each layer's dequantized weight is computed by INC's own module once and
    reused while the FP8 weight is unchanged (its storage and version), so every output is
    bit-identical and INC's emulation is what runs. Costs one fp32 copy of the quantized weights."""
    for child in module.modules():
        dequant = getattr(child, "dequant_weights", None)
        if dequant is None or not callable(getattr(dequant, "forward", None)):
            continue
        memo: dict[str, Any] = {}

        def forward(weight, *args, _compute=dequant.forward, _memo=memo):
            key = (weight.data_ptr(), weight._version, weight.dtype, tuple(weight.shape), args)
            if _memo.get("key") != key:
                _memo["key"], _memo["value"] = key, _compute(weight, *args)
            return _memo["value"]

        dequant.forward = forward


def _forget_patched_modules() -> None:
    """INC records the modules it patches in process-wide dicts, never cleared:
    fp8_quant/_core/patching_common.py parent_child_mod_dict (module -> its name and parent, read while
    patching) kept each FP8 model INC made alive with its weights (3.4 GiB per Gemma-3-270m case), and
    fp8_quant/model_configs.py IMOD_DICT (module -> name, read while measuring) kept the measured
    copy's Linear layers after every build (4.0 GiB of fp32 weights at Llama-3.2-1B's shapes)."""
    from neural_compressor.torch.algorithms.fp8_quant import model_configs
    from neural_compressor.torch.algorithms.fp8_quant._core import patching_common

    patching_common.parent_child_mod_dict.clear()
    model_configs.IMOD_DICT.clear()


def _write_npz(source: Path, target: Path) -> None:
    """Write the .npz INC reads (as its save_npz does: np.savez of the dict) from a stats .json."""
    try:
        dump = json.loads(source.read_text())
        if isinstance(dump, dict) and "Nodes" in dump:  # the module list dump has no .npz twin
            np.savez(target, npz_stats(dump))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{source}: not a Neural Compressor stats dump ({type(exc).__name__}: {exc})") from exc


def _linear_copy(model: ModelSpec, share_linear_weights: bool):
    """An fp32 copy of the reference for INC, which patches nn.Linear only: GPT-2's Conv1D layers
    become the nn.Linear computing the same, under the same names (harness/models/hf.conv1d_as_linear).

    The copy's modules are new (INC replaces them), its fp32 tensors the reference's own: measuring
    only reads the weights, so it shares all of them (`share_linear_weights`); quantizing replaces
    each Linear's weight with an FP8 one, so it shares the others (embeddings, norms) only. A
    Llama-3.2-1B-shaped build peaked at 14.7 GiB with a whole fp32 copy; tests/test_case_lifetime.py
    checks that the reference's weights are unchanged."""
    import torch

    reference = model.reference
    linear = {id(t) for m in reference.modules() if isinstance(m, torch.nn.Linear) for t in m.parameters(recurse=False)}
    tensors = itertools.chain(reference.parameters(), reference.buffers())
    shared = {id(t): t for t in tensors if t.dtype == torch.float32 and (share_linear_weights or id(t) not in linear)}
    return conv1d_as_linear(copy.deepcopy(reference, memo=shared).float().eval())


@register
class IncFp8Reference(Pathway):
    name = "inc-fp8-ref"
    records_statistics = True
    description = "Intel Neural Compressor FP8 E4M3 (measure, then quantize) in CPU QDQ emulation: the FP8 reference"
    devices = ("cpu",)
    requires = {"neural_compressor": "pip install 'qconform[cpu]' (neural-compressor-pt >= 3.5 has the CPU QDQ path)"}
    tool_packages = ("neural-compressor-pt", "torch")
    needs_torch_model = True
    fp8_format = "E4M3"
    host_weights_factor = memory.HOST_WEIGHTS_FACTOR_INC_FP8

    def probe_operation(self, device: Device):
        return "torch float8 cast round trip", float8_round_trip

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        return {
            "fp8_format": self.fp8_format,
            "weight_dtype": FP8_FORMATS[self.fp8_format],
            "weight_granularity": "per-tensor",
            "activation": "static per-tensor, measured amax",
            "scale_method": "maxabs_pow2",
            "mode": "QDQ emulation on CPU",
            "module_types": ["Linear"],
            "calibration_batches": len(model.calibration_inputs()),
            "stats_files": "INC .json dumps (no pickled .npz)",
        }

    def expected_recipe(self, model: ModelSpec) -> dict[str, Any]:
        fp8 = FP8_FORMATS[self.fp8_format]
        return {
            "weight_dtype": fp8,
            "weight_granularity": "per-tensor",
            "weight_symmetric": True,
            "activation_dtype": fp8,
            "activation_granularity": "per-tensor (measured amax)",
            "keep_float": [],
        }

    def recorded_statistics(self, artifact: Artifact) -> dict[str, dict[str, float]]:
        """The measured amax INC dumped (its JSON dump; the .npz twin is a pickle, not read here)."""
        path = artifact.file(f"{STATS}_hooks_maxabs.json")
        try:
            nodes = json.loads(path.read_text())["Nodes"]
            return {
                name: {"input_amax": float(np.max(node["inputs"])), "weight_amax": float(np.max(node["params"]["weight"]))}
                for name, node in nodes.items()
            }
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: not Neural Compressor's maxabs statistics ({type(exc).__name__}: {exc})") from exc

    def read_payload(self, payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
        """INC's dump_stats_path files (<prefix>_hooks_maxabs.json/.npz, ..._MAXABS_POW2.json/.npz,
        ..._mod_list.json), renamed to the prefix the pathway gives INC; the FP8 format from the
        scales (harness/core.py DTYPES: E4M3's largest value 448, E5M2's 57344)."""
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
        refuse(problems, payloads[0], model)
        # pow2 scales put amax/scale within (fmax*backoff/2, fmax*backoff]: the smallest format whose largest value it fits.
        ratio = max(float(np.max(measured["Nodes"][n]["params"]["weight"])) / float(s["params"]["weight"]) for n, s in scales["Nodes"].items() if "weight" in s.get("params", {}))
        fp8_format = next((f for f, name in sorted(FP8_FORMATS.items(), key=lambda item: DTYPES[item[1]].qmax) if ratio <= DTYPES[name].qmax), None)
        if fp8_format is None:
            raise ImportRefused(f"{files and payloads[0]}: weight amax/scale reaches {ratio:.4g}, beyond any FP8 format's range")
        if self.fp8_format != fp8_format:
            raise WrongArtifact(f"the dumps hold {fp8_format} scales (amax/scale up to {ratio:.4g}); pathway {self.name} quantizes {self.fp8_format}")
        recipe = {
            "fp8_format": fp8_format,
            "weight_dtype": FP8_FORMATS[fp8_format],
            "weight_granularity": "per-tensor",
            "activation": "static per-tensor, measured amax",
            "scale_method": scales_name.removeprefix("_hooks_maxabs_").removesuffix(".json").lower(),
            "module_types": ["Linear"],
        }
        return files, recipe

    def _quantize(self, model: ModelSpec, stats_dir: Path):
        from neural_compressor.torch.quantization import convert

        quantized = convert(_linear_copy(model, share_linear_weights=False), _fp8_config(self.fp8_format, stats_dir, "QUANTIZE"))
        _forget_patched_modules()
        return quantized

    def dump_stats(self, model: ModelSpec, calib: list[Tensors], out_dir: Path) -> None:
        """INC's measurement and derived scales, each as .json and (pickled) .npz, into `out_dir`."""
        import torch
        from neural_compressor.torch.algorithms.fp8_quant._core import save_measure
        from neural_compressor.torch.quantization import finalize_calibration, prepare

        # INC appends every measured model's layer list to one process-wide list (save_measure.gmod_list)
        # and dumps all of it: a second build in the process would carry the first model's layers.
        save_measure.gmod_list.clear()
        measured = prepare(_linear_copy(model, share_linear_weights=True), _fp8_config(self.fp8_format, out_dir, "MEASURE"))
        with torch.inference_mode():
            for batch in calib:
                measured(*(torch.from_numpy(batch[name]) for name in model.input_names))
        finalize_calibration(measured)
        save_measure.gmod_list.clear()
        _forget_patched_modules()
        del measured
        self._quantize(model, out_dir)  # writes the derived scales beside the measurement

    def build(self, model: ModelSpec, calib: list[Tensors], out_dir: Path) -> Artifact:
        self.dump_stats(model, calib, out_dir)
        for pickled in out_dir.glob("*.npz"):
            pickled.unlink()  # a pickle of the .json beside it; load() rebuilds it
        return self.finish(out_dir, model, Device.detect())

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        for name in artifact.manifest["files"]:
            if name.endswith(".npz"):
                check_npz(artifact.file(name))  # names a pickle as such
                raise ArtifactError(f"{artifact.file(name)}: an inc-fp8-ref artifact holds INC's .json dumps only (INC unpickles any .npz); rebuild it with this qconform")
        check_layer_names(self.recorded_statistics(artifact), model, "statistics for layers")
        with tempfile.TemporaryDirectory(prefix="qconform-inc-fp8-") as tmp:
            for name in artifact.manifest["files"]:  # INC reads its dumps from dump_stats_path
                shutil.copy(artifact.file(name), Path(tmp) / name)
                if name.endswith(".json"):
                    _write_npz(artifact.file(name), Path(tmp) / f"{name.removesuffix('.json')}.npz")
            try:
                module = self._quantize(model, Path(tmp))
            except (FileNotFoundError, ValueError, KeyError) as exc:
                raise ArtifactError(f"{artifact.path}: Neural Compressor cannot quantize from these stats ({type(exc).__name__}: {exc})") from exc
        dequantize_weights_once(module)
        return TorchRunner(module, model.input_names, model.output_names, "cpu", f"Neural Compressor FP8 {self.fp8_format} QDQ emulation on CPU (weights dequantized once)", read_layout)


@register
class IncFp8ReferenceE5M2(IncFp8Reference):
    name = "inc-fp8-ref-e5m2"
    description = "Intel Neural Compressor FP8 E5M2 in CPU QDQ emulation"
    fp8_format = "E5M2"
