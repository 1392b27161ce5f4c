"""ModelSpec: how qconform gets a reference model, its data and its task metric.

A Hugging Face checkpoint, an fp32 ONNX file or `module:factory` becomes a ModelSpec through
harness.models.hf.model_from_source; anything else subclasses ModelSpec and registers it. Pathways
and suites see nothing else of a model: evaluate(run) gives what the gates compare (eval batches,
plus greedy generations for LLMs), task_metrics and evidence what the report shows, golden_digest
and golden_metrics what a golden keeps and how it is compared.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness.core import FP32_CPU, Precision, Tensors, costed, load_entry_points, module_path


class ModelSpec:
    id: str = ""
    description: str = ""
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    primary_output: str = ""
    # The kind of model: its kind object's name (harness/models/kinds.py: "causal-lm", "encoder" ...),
    # which policy table of defaults.toml gates a threshold the device profile lacks. None: the
    # device profile must have every threshold.
    kind: str | None = None
    # Which task metrics this model reports, higher is better; the accuracy suite gates each
    # against the profile's thresholds.
    task_metric_names: tuple[str, ...] = ()
    # Axes of each input/output that may vary (ONNX dynamic axes).
    dynamic_axes: dict[str, dict[int, str]] = {}
    # Weight layers INT8 recipes keep in float, as regexes over ONNX node names, each for a
    # measured reason given where it is set.
    int8_keep_float: tuple[str, ...] = ()
    # The project file's [recipes.<pathway>] tables (pathway name -> keys), set by the run: what each
    # pathway's artifact of this model must hold, and the build options it selects
    # (Pathway.recipe_options). Empty: every pathway's own recipe.
    recipe_overrides: dict[str, dict[str, Any]] = {}
    # Python modules the model needs (its weights' package), with the install hint.
    requires: dict[str, str] = {}
    # The module types that are weight layers (what an artifact quantizes, and what identity, layout
    # and localization checks compare it with), each with how it stores its weight: "out,in" (torch
    # Linear) or "in,out" (transformers' Conv1D, GPT-2's). A "module:Class" string is looked up only
    # once that module is imported (no model holds a Conv1D before). A kind or model extends it.
    weight_layer_types: dict[type | str, str] = {torch.nn.Linear: "out,in", "transformers.pytorch_utils:Conv1D": "in,out"}

    def unavailable(self) -> str | None:
        for module, hint in self.requires.items():
            if importlib.util.find_spec(module) is None:
                return f"model {self.id}: Python package {module!r} is not installed ({hint})"
        return None

    def validate(self) -> None:
        """Check what the model reads (tokenizer, data files, that its architecture loads) before any
        test runs, cheaply: no weights loaded. A problem is a ValueError naming the file (and line),
        in one line; the session turns it into a usage error. Default: nothing to check."""

    def build_reference(self) -> torch.nn.Module:
        raise NotImplementedError

    def calibration_inputs(self) -> list[Tensors]:
        """Small batches used to calibrate static activation ranges."""
        raise NotImplementedError

    def eval_inputs(self) -> Tensors:
        """One batch the accuracy and golden suites run; fixed and seeded."""
        raise NotImplementedError

    def task_metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        """Task-level quality of `candidate` outputs, measured against the reference outputs."""
        raise NotImplementedError

    # -- evaluation, evidence and goldens (defaults: one batch, full outputs) -------------------
    def eval_batches(self) -> list[Tensors]:
        """The evaluation data in the batches it is run in; eval_inputs() is their concatenation."""
        return [self.eval_inputs()]

    def evaluate(self, run: Callable[[Tensors], Tensors], costs: dict[str, Any] | None = None) -> Tensors:
        """Everything the gates compare, from a runner (or run_reference): each eval batch run
        on its own, outputs concatenated along the batch axis. `costs`: each part's wall time and
        forward passes land there (harness/core.costed)."""
        outputs = costed(costs, "eval batches", run, lambda counted: [counted(batch) for batch in self.eval_batches()])
        return {name: np.concatenate([o[name] for o in outputs]) for name in self.output_names}

    def evidence(self, reference: Tensors, candidate: Tensors) -> dict[str, Any]:
        """What the report shows beside the numbers (e.g. generated text side by side)."""
        return {}

    def floor_metrics(self, fp32: Tensors, reference: Tensors) -> dict[str, float]:
        """What precision alone costs: a non-fp32 reference's outputs against the fp32 model's."""
        from harness.judge.metrics import sqnr_db

        return {"sqnr_db": sqnr_db(fp32[self.primary_output], reference[self.primary_output])}

    def golden_inputs(self) -> Tensors:
        """Everything a golden's outputs depend on: its hash keys the golden."""
        return self.eval_inputs()

    def golden_digest(self, outputs: Tensors) -> Tensors:
        """What a golden stores of `evaluate`'s outputs: by default all of them."""
        return {name: outputs[name] for name in self.output_names}

    def golden_metrics(self, golden: Tensors, outputs: Tensors) -> dict[str, float]:
        """Current outputs against a stored digest, as threshold key -> measured value."""
        from harness.judge.metrics import sqnr_db

        return {"min_golden_sqnr_db": min(sqnr_db(golden[name], outputs[name]) for name in golden)}

    def unavailable_for(self, pathway: Any) -> str | None:
        """Why this model cannot feed `pathway` (e.g. an ONNX file to a torch pathway), or None."""
        return None

    def task_metric_samples(self, reference: Tensors) -> dict[str, int]:
        """Per task metric: the items it is measured on, for sample-size aware gates and the smallest
        detectable change (whether it is a proportion or a correlation is its harness/gates.Metric's
        `sample`). Empty when not known."""
        return {}

    # -- shared machinery -------------------------------------------------------------------
    @functools.cached_property
    def reference(self) -> torch.nn.Module:
        return self.build_reference().eval()

    def release_reference(self) -> bool:
        """Drop the loaded fp32 reference where it can be loaded again as it was (a checkpoint:
        HuggingFaceModel); its next use loads it. Whether it was dropped. By default it is kept: a
        module built in code need not come back the same."""
        return False

    def run_reference(self, inputs: Tensors) -> Tensors:
        return self.run_module(self.reference, inputs)

    def run_module(self, module: torch.nn.Module, inputs: Tensors, device: str = "cpu") -> Tensors:
        """One forward of a module of this model (the reference, or it in another precision) on numpy inputs."""
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(inputs[name]).to(device) for name in self.input_names))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.float().cpu().numpy() for name, out in zip(self.output_names, outputs, strict=True)}

    def load_module(self, precision: Precision) -> torch.nn.Module:
        """The model in `precision` on its device, as a fresh module (a pathway may quantize it in
        place). Default: a copy of the fp32 reference, converted; a checkpoint loads it straight
        from its files (HuggingFaceModel), so a release-size model never has an fp32 copy."""
        import copy

        if precision == FP32_CPU:
            return copy.deepcopy(self.reference)
        return copy.deepcopy(self.reference).to(device=precision.device, dtype=getattr(torch, precision.dtype)).eval()

    @property
    def skeleton(self) -> torch.nn.Module:
        """The reference's structure: module names, types and weight shapes (tensors may be on the
        meta device). Default: the reference itself; a checkpoint builds it from its config alone."""
        return self.reference

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.skeleton.parameters())

    @functools.cached_property
    def weights_sha256(self) -> str:
        """The state dict's hash as defined in harness/artifacts/weights.py (docs/artifacts.md): the same
        value `qconform hash-weights` gives for the checkpoint saved from it with safetensors."""
        from harness.artifacts.weights import state_dict_sha256

        return state_dict_sha256(self.reference.state_dict())

    def reference_weight(self, layer_name: str) -> np.ndarray | None:
        """The fp32 weight (out, in) of a layer named as a pathway names it: a module path
        ("layers.0.mlp.up_proj") or an ONNX node ("/layers.0/mlp/up_proj/MatMul_quant")."""
        weight = self.reference_weight_tensor(layer_name)
        return None if weight is None else weight.numpy()

    def reference_weight_tensor(self, layer_name: str, device: Any = "cpu") -> torch.Tensor | None:
        """`reference_weight` as a float32 torch tensor on `device` (where a GPU candidate's weights
        are compared with it)."""
        module = dict(self.reference.named_modules()).get(module_path(layer_name))
        weight = getattr(module, "weight", None)
        if weight is None:
            return None
        weight = weight.detach().float().to(device)
        return weight.T if self._weight_layout(module) == "in,out" else weight  # (out, in), as a Linear's

    def _weight_layer_types(self) -> dict[type, str]:
        found = {}
        for kind, layout in self.weight_layer_types.items():
            if isinstance(kind, str):
                module_name, _, class_name = kind.partition(":")
                kind = getattr(sys.modules.get(module_name), class_name, None)
            if isinstance(kind, type):
                found[kind] = layout
        return found

    def _weight_layout(self, module: Any) -> str | None:
        return next((layout for kind, layout in self._weight_layer_types().items() if isinstance(module, kind)), None)

    def weight_layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight layer's (weight_layer_types) weight shape, oriented (out, in), by module path:
        what an artifact must match."""
        types = self._weight_layer_types()
        shapes = {}
        for name, module in self.skeleton.named_modules():
            layout = next((layout for kind, layout in types.items() if isinstance(module, kind)), None)
            if layout is not None:
                shape = tuple(module.weight.shape)
                shapes[name] = shape[::-1] if layout == "in,out" else shape
        return shapes

    def weight_layer_names(self) -> list[str]:
        return list(self.weight_layer_shapes())

    # The names before weight layers were more than Linear layers (pathways call them).
    def linear_weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.weight_layer_shapes()

    def linear_layer_names(self) -> list[str]:
        return self.weight_layer_names()

    def export_onnx(self, path: Path, opset: int = 17) -> Path:
        """Export the fp32 reference with the TorchScript-based exporter (no onnxscript needed)."""
        example = self.eval_inputs()
        args = tuple(torch.from_numpy(example[name]) for name in self.input_names)
        with torch.inference_mode():
            torch.onnx.export(
                self.reference,
                args,
                str(path),
                input_names=list(self.input_names),
                output_names=list(self.output_names),
                dynamic_axes=self.dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        return path


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.id in MODELS:
        raise ValueError(f"model {spec.id!r} registered twice")
    MODELS[spec.id] = spec
    return spec


def _load_models() -> None:
    # The embedded defaults are registered by harness/models/__init__.py, which runs before this
    # module does. Other packages' models: entry points in group "qconform.models" (a module, a ModelSpec or its subclass).
    load_entry_points("qconform.models", ModelSpec, lambda spec: register_model(spec() if isinstance(spec, type) else spec), lambda spec: spec.id in MODELS)


def get_model(model_id: str) -> ModelSpec:
    _load_models()
    try:
        return MODELS[model_id]
    except KeyError:
        raise KeyError(f"unknown model {model_id!r}; known: {', '.join(sorted(MODELS))}") from None


def all_models() -> list[ModelSpec]:
    _load_models()
    return list(MODELS.values())
