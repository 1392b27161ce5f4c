"""Your own model: a local Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer
files), an fp32 ONNX file, or `module:factory` for anything else.

HuggingFaceModel loads the checkpoint (and its tokenizer), refuses what is not trusted and validates
architecture, tokenizer and data before any test runs. Everything that depends on the kind of model
(its inputs and evaluation, metrics, evidence, golden content, export wrapper, default metrics and
data) is its kind object's (harness/models/kinds.py; causal_lm.py: gated on perplexity ratio, KL
divergence, top-1 and greedy-generation agreement; encoder.py: embedding cosine and the ranking of
labeled sentence pairs), detected from config.json's architectures. Evaluation data and calibration
data are separate files; qconform ships small English defaults in harness/data/.

Everything is offline: local_files_only=True, trust_remote_code=False, safetensors weights only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from harness.core import FP32_CPU, Precision, module_path
from harness.models.base import ModelSpec, Tensors
from harness.models.kinds import ModelKind, all_kinds, get_kind, kind_for_config, kind_for_onnx

# The built-in kinds' names (ModelSpec.kind), for callers that compare with them (causal_lm.py and
# encoder.py define them).
CAUSAL_LM, ENCODER = "causal-lm", "encoder"


class _DefaultMetrics(Mapping):
    """kind name -> the metrics a model of that kind is gated on by default (the kind's default_metrics)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return get_kind(name).default_metrics

    def __iter__(self) -> Iterator[str]:
        return iter([kind.name for kind in all_kinds()])

    def __len__(self) -> int:
        return len(all_kinds())


DEFAULT_METRICS: Mapping[str, tuple[str, ...]] = _DefaultMetrics()


def sanitize_id(name: str) -> str:
    """A model id from a directory or file name: lowercase, [a-z0-9._-] only."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")
    return cleaned or "model"


def check_checkpoint_dir(path: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Refuse what would run code on load (harness/artifacts/trust.py); the from_pretrained options to load it with."""
    try:
        from harness.artifacts.trust import check_checkpoint_dir as trusted  # type: ignore[import-not-found]
    except ImportError:
        trusted = None
    if trusted is not None:
        return trusted(path, allow_pickle)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        found = f" (found pickle weights {', '.join(pickled)}: convert them to safetensors)" if pickled else ""
        raise ValueError(f"{path}: no *.safetensors weights{found}")
    return {"use_safetensors": True}


# Files that hold a tokenizer's vocabulary (tokenizer_config.json alone has none).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def unshare_weight_initializers(path: Path | str) -> bool:
    """Give every weight-bearing op (WEIGHT_OPS) an initializer of its own for its weight and bias.

    Why: torch's TorchScript exporter deduplicates parameters of equal value: one initializer is
    kept and each other parameter becomes Identity(<that initializer>). In a GPT-2 built from its
    config every Conv1D bias and LayerNorm bias is zero, so `h.0.attn.c_proj.bias`,
    `h.0.mlp.c_proj.bias` ... are Identity(`h.0.ln_1.bias`); ONNX Runtime's and Neural Compressor's
    optimizer folds the Identity nodes, INC then quantizes that one bias once per Gemm under the one
    name `<bias>_quantized`, and the graph it writes is invalid ONNX ("model.transformer.h.0.ln_1.bias_quantized
    initializer name is not unique"). Here each Identity of an initializer that feeds a weight op
    becomes a copy named as the Identity's output (the parameter's own name), and an initializer
    still feeding several weight ops directly gets a copy per op, named after the op's module. Other
    consumers (a LayerNorm) keep the original. The graph is rewritten in place (external data stays
    where it is: copies reference the same bytes); returns whether anything changed."""
    import onnx

    from harness.artifacts.qdq import WEIGHT_OPS
    from harness.core import module_path

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}

    def weight_inputs(node):
        return [(i, name) for i, name in enumerate(node.input) if node.op_type in WEIGHT_OPS and i >= WEIGHT_OPS[node.op_type] and name]

    def copy_of(name: str, fresh: str):
        tensor = onnx.TensorProto()
        tensor.CopyFrom(inits[name])
        tensor.name = fresh
        graph.initializer.append(tensor)
        inits[fresh] = tensor

    changed = False
    fed = {name for node in graph.node for _, name in weight_inputs(node)}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] in fed and node.output[0] not in outputs and node.output[0] not in inits:
            copy_of(node.input[0], node.output[0])
            graph.node.remove(node)
            changed = True
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in inits:
                uses.setdefault(name, []).append((node, index))
    taken = set(inits) | {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    for name, consumers in uses.items():
        weight_uses = [(node, i) for node, i in consumers if (i, name) in weight_inputs(node)]
        if len({id(node) for node, _ in weight_uses}) < 2:
            continue
        for node, index in weight_uses:
            base = f"{module_path(node.name) if node.name else node.output[0]}.{'weight' if index == WEIGHT_OPS[node.op_type] else 'bias'}"
            fresh, n = base, 1
            while fresh in taken:
                fresh, n = f"{base}.{n}", n + 1
            taken.add(fresh)
            copy_of(name, fresh)
            node.input[index] = fresh
        if len(weight_uses) == len(consumers) and name not in {i.name for i in graph.input} | outputs:
            graph.initializer.remove(inits.pop(name))
        changed = True
    if changed:
        onnx.save(model, str(path))
    return changed


def align_node_scopes(path: Path | str, module_paths: set[str]) -> bool:
    """Rename the nodes of a TorchScript export whose scope skips a module level to the module path
    they run in ("/model/decoder/layers.0/fc1/MatMul" -> "/model/model/decoder/layers.0/fc1/MatMul").

    Why: the exporter names a node by the chain of module *calls* it ran under, and OPTForCausalLM's
    forward calls `self.model.decoder(...)`, never OPTModel's forward: every layer's node then names a
    module the reference does not have, and the artifact identity check refuses the INT8 artifact
    ("graph layers ['model.decoder.layers.0.fc1', ...] are not layers of the model"). A scope is
    resolved from the root: a component that is no child of the path so far is looked up as the one
    shallowest module below it ending in that name, and the levels skipped are put back; a scope that
    does not resolve stays as it is. Returns whether anything changed."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)

    @functools.cache
    def resolve(scope: str) -> str:
        resolved, parts = "", []
        for component in scope.strip("/").split("/"):  # components like "layers.0" (a ModuleList entry)
            child = f"{resolved}.{component}" if resolved else component
            if child not in module_paths:
                below = [m for m in module_paths if m.endswith(f".{component}") and m.startswith(f"{resolved}." if resolved else "")]
                shallowest = [m for m in below if m.count(".") == min(b.count(".") for b in below)]
                if len(shallowest) != 1:
                    return scope
                child = shallowest[0]
                parts.append(child[len(resolved) : len(child) - len(component)].strip("."))  # the skipped levels
            parts.append(component)
            resolved = child
        return "/" + "/".join(parts)

    changed = False
    for node in model.graph.node:
        scope, _, op = node.name.rpartition("/")
        if node.name.startswith("/") and scope and resolve(scope) != scope:
            node.name = f"{resolve(scope)}/{op}"
            changed = True
    if changed:
        onnx.save(model, str(path))
    return changed


# Subclasses of torch.nn.Linear in transformers that compute exactly what nn.Linear computes
# (x @ W.T + b) and hold the same parameters. Neural Compressor's FP8 quantization patches modules by
# class *name* ("Linear"), so it measured a Falcon's LM head alone and the inc-fp8-ref artifact was
# refused ("the model's layers [...query_key_value, ...] are missing" from its statistics). As plain
# Linear modules they are quantized; the state dict (and so the weights hash) and the ONNX export are
# unchanged.
LINEAR_EQUIVALENTS = ("FalconLinear",)


def plain_linears(module: nn.Module) -> nn.Module:
    """`module` with every LINEAR_EQUIVALENTS submodule turned into a plain nn.Linear, in place."""
    for child in module.modules():
        if type(child).__name__ in LINEAR_EQUIVALENTS and isinstance(child, nn.Linear):
            child.__class__ = nn.Linear
    return module


def conv1d_as_linear(module: nn.Module) -> nn.Module:
    """`module` with every transformers Conv1D (GPT-2's weight layers, weight stored (in, out))
    replaced, in place and under the same name, by the nn.Linear computing the same (weight (out, in)).
    For a copy handed to a quantizer that patches nn.Linear only: Neural Compressor's FP8 leaves a
    GPT-2's Conv1D layers unmeasured, and the artifact is refused for lacking their statistics. Not
    for the reference itself, whose state dict (and weights hash) keeps the checkpoint's layout."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # no transformers: no model holds a Conv1D
        return module
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(child.weight.shape[0], child.nf, bias=child.bias is not None, dtype=child.weight.dtype, device=child.weight.device)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.T)
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, name, linear)
    return module


def checkpoint_kind(config: dict[str, Any]) -> str:
    """The kind's name (ModelSpec.kind) of a checkpoint from its config.json (harness/models/kinds.py)."""
    return kind_for_config(config).name


class HuggingFaceModel(ModelSpec):
    """A local checkpoint directory, gated on the evaluation data given (or the shipped defaults).
    Data files are keyword arguments named by the kind's data keys (eval_text, eval_prompts,
    eval_pairs, calibration_text ...); a key of another kind is ignored, as an unset one is."""

    def __init__(
        self,
        path: Path | str,
        *,
        id: str | None = None,
        metrics: tuple[str, ...] | list[str] | None = None,
        eval_tokens: int = 512,
        seq_len: int = 128,
        batch_size: int = 2,
        calibration_tokens: int = 512,
        new_tokens: int = 16,
        generation_prompts: int = 8,
        int8_keep_float: tuple[str, ...] | list[str] = (),
        allow_pickle: bool = False,
        description: str | None = None,
        lm_eval_tasks: tuple[str, ...] | list[str] = (),
        lm_eval_include: Path | str | None = None,
        speed_prefill: str | None = None,
        speed_decode: str | None = None,
        **data: Path | str | None,
    ):
        known = {key.name for kind in all_kinds() for key in kind.data}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeError(f"HuggingFaceModel got unknown data key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        self.path = Path(path).resolve()
        self._check_source(allow_pickle)
        self.model_kind: ModelKind = self._detect_kind()(self)
        self.kind = self.model_kind.name
        self.id = id or sanitize_id(self.path.stem if self.path.is_file() else self.path.name)
        self.description = description or f"{self.kind} from {self.path}"
        # Each data file the kind reads: the one given, else the kind's shipped default.
        self.data = {key.name: Path(data[key.name]) if data.get(key.name) else key.default_path() for key in self.model_kind.data}
        self.task_metric_names = tuple(metrics or self.model_kind.default_metrics)
        self.eval_tokens, self.seq_len, self.batch_size = eval_tokens, seq_len, batch_size
        self.calibration_tokens, self.new_tokens, self.generation_prompts = calibration_tokens, new_tokens, generation_prompts
        self.int8_keep_float = tuple(int8_keep_float)
        # The team's lm-evaluation-harness tasks (causal LMs): task names defined by the YAML configs
        # under lm_eval_include; they replace the shipped multiple-choice items as the labeled task.
        self.lm_eval_tasks = tuple(lm_eval_tasks)
        self.lm_eval_include = Path(lm_eval_include).resolve() if lm_eval_include else None
        if self.lm_eval_tasks and self.lm_eval_include is None:
            raise ValueError(f"model {self.id}: lm_eval_tasks {list(self.lm_eval_tasks)} need lm_eval_include, the directory of their task configs")
        # Own-model speed points ("BxT"; harness/models/llama8b_perf.own_points: defaults from the size).
        from harness.models.llama8b_perf import parse_point

        for setting in (speed_prefill, speed_decode):
            if setting:
                parse_point(setting)  # a bad value is refused here, before any test runs
        self.speed_prefill, self.speed_decode = speed_prefill, speed_decode
        self.input_names = self.model_kind.input_names
        self.output_names = self.model_kind.output_names
        self.dynamic_axes = self.model_kind.dynamic_axes
        self.primary_output = self.output_names[0]
        self.requires = {"transformers": "pip install transformers", "tokenizers": "pip install tokenizers"}

    # -- the checkpoint --------------------------------------------------------------------------
    def _check_source(self, allow_pickle: bool) -> None:
        # safetensors, or with the opt-in pickle weights read with weights_only=True
        self._use_safetensors = check_checkpoint_dir(self.path, allow_pickle).get("use_safetensors", True)

    def _detect_kind(self) -> type[ModelKind]:
        return kind_for_config(json.loads((self.path / "config.json").read_text()))

    @property
    def tokenizer_dir(self) -> Path:
        return self.path

    # -- up-front validation: tokenizer, data, architecture; no weights loaded -------------------
    def validate(self) -> None:
        self._check_config()
        if self.model_kind.uses_tokenizer:
            self._check_tokenizer()
        self._check_data()

    def _check_config(self) -> None:
        """transformers can build this architecture (AutoConfig and the Auto class of its kind)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers
        from transformers import AutoConfig
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        where, version = self.path / "config.json", transformers.__version__
        model_type = json.loads(where.read_text()).get("model_type")
        if model_type is not None and model_type not in CONFIG_MAPPING:
            raise ValueError(
                f"{where}: transformers {version} cannot load this architecture: model_type {model_type!r} is unknown to it "
                "(a newer transformers may know it; qconform never runs checkpoint code)"
            )
        try:
            config = AutoConfig.from_pretrained(str(self.path), local_files_only=True, trust_remote_code=False)
        except Exception as exc:
            raise ValueError(f"{where}: transformers {version} cannot load this architecture ({_first_line(exc)})") from None
        auto = getattr(transformers, self.model_kind.auto_class)
        if type(config) not in auto._model_mapping:
            raise ValueError(f"{where}: transformers {version} has no {auto.__name__} for model_type {config.model_type!r} ({type(config).__name__})")

    def _check_tokenizer(self) -> None:
        """Tokenizer files present and loading; the files that are missing named."""
        folder = self.tokenizer_dir
        present = [name for name in TOKENIZER_FILES if (folder / name).is_file()] + sorted(p.name for p in folder.glob("*.tiktoken"))
        if not present:
            alone = " (tokenizer_config.json alone holds no vocabulary)" if (folder / "tokenizer_config.json").is_file() else ""
            raise ValueError(
                f"{folder}: no tokenizer files{alone}: expected tokenizer.json, or a vocabulary (tokenizer.model, vocab.json + merges.txt, vocab.txt); "
                "copy the tokenizer the model was trained with beside its config.json"
            )
        if "vocab.json" in present and "tokenizer.json" not in present and not (folder / "merges.txt").is_file():
            raise ValueError(f"{folder}: vocab.json without merges.txt (a BPE tokenizer needs both, or tokenizer.json)")
        try:
            _ = self.tokenizer
        except Exception as exc:
            raise ValueError(f"{folder}: the tokenizer does not load from {', '.join(present)} ({type(exc).__name__}: {_first_line(exc)})") from None

    def _check_file(self, option: str, path: Path) -> None:
        if not Path(path).is_file():
            raise ValueError(f"model {self.id}: {option} {path}: no such file")
        try:
            text = Path(path).read_text()
        except UnicodeDecodeError as exc:
            raise ValueError(f"model {self.id}: {option} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not text.strip():
            raise ValueError(f"model {self.id}: {option} {path}: empty")

    def _check_data(self) -> None:
        """Every data file the kind reads exists, is not empty, parses (JSONL named file:line) and,
        for text, holds at least one window of seq_len tokens: tokenized here, once (cached)."""
        for option, path in self.model_kind.data_files().items():
            self._check_file(option, path)
        try:
            self.model_kind.check_data()
        except ValueError as exc:
            raise ValueError(f"model {self.id}: {_first_line(exc)}") from None

    def build_reference(self) -> nn.Module:
        return self.load_module(FP32_CPU)

    def _auto_class(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the files are local
        import transformers

        return getattr(transformers, self.model_kind.auto_class)

    def load_module(self, precision: Precision, max_memory: dict[int | str, int] | None = None) -> nn.Module:
        """The model straight from its safetensors files in `precision`, on its device (never an fp32
        copy first). fp32 on the CPU uses eager attention: the numerical reference, and what exports
        to ONNX and INC patches; on the GPU transformers' default (SDPA), as the team deploys it.
        `max_memory` (device -> bytes): accelerate's big-model placement (device_map="auto") across
        the GPUs, and the CPU when it is named, for a model larger than one GPU."""
        options: dict[str, Any] = dict(local_files_only=True, trust_remote_code=False, use_safetensors=getattr(self, "_use_safetensors", True), dtype=getattr(torch, precision.dtype))
        if precision.device == "cpu":
            options["attn_implementation"] = "eager"
        elif max_memory:
            options.update(device_map="auto", max_memory=max_memory)
        else:
            options["device_map"] = {"": torch.device(precision.device, torch.cuda.current_device())}
        auto, extra = self._auto_class(), self.model_kind.load_options
        try:
            module = auto.from_pretrained(str(self.path), **options, **extra)
        except TypeError:  # e.g. an encoder without a pooler takes no add_pooling_layer
            if not extra:
                raise
            module = auto.from_pretrained(str(self.path), **options)
        return self.model_kind.wrap(plain_linears(module)).eval()

    def release_reference(self) -> bool:
        """The checkpoint's files give the same module back on the next use."""
        return self.__dict__.pop("reference", None) is not None

    @functools.cached_property
    def _skeleton(self) -> nn.Module:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(self.path), local_files_only=True, trust_remote_code=False)
        auto, extra = self._auto_class(), self.model_kind.load_options
        with torch.device("meta"):
            try:
                module = auto.from_config(config, dtype=torch.float32, attn_implementation="eager", **extra)
            except TypeError:
                module = auto.from_config(config, dtype=torch.float32, attn_implementation="eager")
        return self.model_kind.wrap(plain_linears(module)).eval()

    @property
    def skeleton(self) -> nn.Module:
        """The fp32 reference when it is loaded, else the architecture built from config.json on the
        meta device: names and shapes without reading a weight (a release-size model's gates
        never need its fp32 copy in host memory)."""
        return self.__dict__["reference"] if "reference" in self.__dict__ else self._skeleton

    @functools.cached_property
    def _checkpoint_tensors(self) -> dict[str, Path]:
        from harness.artifacts.weights import safetensors_header

        return {name: path for path in sorted(self.path.glob("*.safetensors")) for name in safetensors_header(path)}

    def reference_weight_tensor(self, layer_name: str, device: Any = "cpu") -> torch.Tensor | None:
        """The fp32 weight of a layer on `device`: from the loaded reference, else read alone from the
        checkpoint file that holds it, straight onto `device` (bounded memory; the skeleton's parameter
        name without the kind's wrapper prefix is the file's tensor name)."""
        if "reference" in self.__dict__ or not self._use_safetensors:
            return super().reference_weight_tensor(layer_name, device)
        module = self._weight_modules.get(module_path(layer_name))
        if getattr(module, "weight", None) is None:
            return None
        key = self._parameter_names.get(id(module.weight))
        stored = next((k for k in (key, key and key.split(".", 1)[-1]) if k in self._checkpoint_tensors), None)
        if stored is None:  # renamed on load (a conversion mapping): read it from the loaded reference
            return super().reference_weight_tensor(layer_name, device)
        from safetensors import safe_open

        with safe_open(str(self._checkpoint_tensors[stored]), framework="pt", device=str(device)) as files:
            weight = files.get_tensor(stored).float()
        return weight.T if self._weight_layout(module) == "in,out" else weight

    @functools.cached_property
    def _weight_modules(self) -> dict[str, nn.Module]:
        return dict(self._skeleton.named_modules())

    @functools.cached_property
    def _parameter_names(self) -> dict[int, str]:
        return {id(p): name for name, p in self._skeleton.named_parameters()}

    @functools.cached_property
    def weights_sha256(self) -> str:
        """The checkpoint files' weights hash, as `qconform hash-weights DIR` prints it, streamed tensor
        by tensor (docs/artifacts.md)."""
        if not self._use_safetensors:
            return super().weights_sha256
        from harness.artifacts.weights import hash_weights

        return hash_weights(self.path)

    def export_onnx(self, path: Path, opset: int = 17) -> Path:
        """ModelSpec's fp32 export, with no weight or bias initializer shared between weight layers
        (the exporter merges equal-valued ones, and Neural Compressor's INT8 build of such a graph is
        invalid ONNX: unshare_weight_initializers) and every node named by the module it runs in (the
        exporter names it by the module calls it ran under: align_node_scopes)."""
        super().export_onnx(path, opset)
        unshare_weight_initializers(path)
        align_node_scopes(path, {name for name, _ in self.reference.named_modules() if name})
        return path

    @functools.cached_property
    def tokenizer(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir), local_files_only=True, trust_remote_code=False)

    # -- everything kind-specific: the kind object's -------------------------------------------------
    def eval_batches(self) -> list[Tensors]:
        return self.model_kind.eval_batches()

    def eval_inputs(self) -> Tensors:
        batches = self.eval_batches()
        return {name: np.concatenate([b[name] for b in batches]) for name in self.input_names}

    def calibration_inputs(self) -> list[Tensors]:
        return self.model_kind.calibration_inputs()

    def evaluate(self, run: Callable[[Tensors], Tensors], costs: dict[str, Any] | None = None) -> Tensors:
        return self.model_kind.evaluate(run, costs)

    def task_metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        measured = self.model_kind.metrics(reference, candidate)
        unknown = [name for name in self.task_metric_names if name not in measured]
        if unknown:
            raise KeyError(f"model {self.id}: metric(s) {', '.join(unknown)} not measured for a {self.kind}; measured: {', '.join(measured)}")
        return {name: measured[name] for name in self.task_metric_names}

    def task_metric_samples(self, reference: Tensors) -> dict[str, int]:
        return self.model_kind.task_metric_samples(reference)

    def evidence(self, reference: Tensors, candidate: Tensors) -> dict[str, Any]:
        return self.model_kind.evidence(reference, candidate)

    def floor_metrics(self, fp32: Tensors, reference: Tensors) -> dict[str, float]:
        return {**super().floor_metrics(fp32, reference), **self.model_kind.floor_metrics(fp32, reference)}

    def golden_inputs(self) -> Tensors:
        return self.model_kind.golden_inputs()

    def golden_digest(self, outputs: Tensors) -> Tensors:
        return self.model_kind.golden_digest(outputs)

    def golden_metrics(self, golden: Tensors, outputs: Tensors) -> dict[str, float]:
        return self.model_kind.golden_metrics(golden, outputs)


class OnnxFileModel(HuggingFaceModel):
    """An fp32 ONNX file (inputs input_ids + attention_mask; output `logits` for a causal LM, else
    an embedding) with tokenizer files beside it. The reference runs on ONNX Runtime's CPU EP;
    pathways that quantize a torch module cannot use it."""

    def _check_source(self, allow_pickle: bool) -> None:
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such ONNX file")
        if not (self.path.parent / "tokenizer.json").is_file() and not (self.path.parent / "tokenizer_config.json").is_file():
            raise ValueError(f"{self.path}: no tokenizer files (tokenizer.json, tokenizer_config.json) beside the ONNX file")

    @functools.cached_property
    def _session(self):
        import onnxruntime as ort

        return ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])

    def _detect_kind(self) -> type[ModelKind]:
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise ValueError(f"{self.path}: ONNX inputs {sorted(inputs)}; qconform feeds input_ids and attention_mask")
        outputs = [o.name for o in graph.output]
        self._onnx_outputs = outputs
        return kind_for_onnx(outputs)

    @property
    def tokenizer_dir(self) -> Path:
        return self.path.parent

    def _check_config(self) -> None:
        pass  # no config.json: the graph's inputs and outputs were checked when it was opened

    def build_reference(self) -> nn.Module:
        raise RuntimeError(f"model {self.id} is an ONNX file: it has no torch module")

    def unavailable_for(self, pathway: Any) -> str | None:
        if getattr(pathway, "needs_torch_model", False):
            return f"{pathway.name} quantizes a torch module; model {self.id} is an ONNX file ({self.path.name}): give its Hugging Face checkpoint directory instead"
        return None

    def run_reference(self, inputs: Tensors) -> Tensors:
        names = [o.name for o in self._session.get_outputs()]
        outputs = self._session.run(names[:1], {name: inputs[name] for name in self.input_names})
        return {self.primary_output: outputs[0].astype(np.float32)}

    @functools.cached_property
    def weights_sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def reference_weight_tensor(self, layer_name: str, device: Any = "cpu") -> torch.Tensor | None:
        return None

    def weight_layer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}  # no torch module to compare layers with: identity rests on the graph inputs and the weights hash

    def export_onnx(self, path: Path, opset: int = 17) -> Path:
        shutil.copy(self.path, path)
        unshare_weight_initializers(path)  # a torch export of the same model shares them alike (HuggingFaceModel.export_onnx)
        return path


def model_from_source(source: str, **options: Any) -> ModelSpec:
    """A checkpoint directory, an fp32 .onnx file, or `module:factory` (a callable returning a ModelSpec)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return HuggingFaceModel(path, **options)
    if path.suffix == ".onnx":
        return OnnxFileModel(path, **options)
    if ":" in source and not path.exists():
        module_name, _, factory_name = source.partition(":")
        factory = getattr(importlib.import_module(module_name), factory_name, None)
        if factory is None:
            raise ValueError(f"{source}: module {module_name} has no {factory_name!r}")
        spec = factory(**options)
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"{source}: returned {type(spec).__name__}, not a ModelSpec")
        return spec
    raise ValueError(f"{source}: not a checkpoint directory, an .onnx file, or module:factory")
