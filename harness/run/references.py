"""Reference outputs: the unquantized model's evaluation in the precision a candidate is made from,
on the device it runs on (Pathway.reference_precision), computed once and cached on disk.

The cache key covers everything the outputs depend on: the weights hash, the evaluation inputs and
data files, the tokenizer files, the model's evaluation settings, the precision, the device class
(fp32 on an AVX2 CPU and bf16 on an H200 are different numbers), the torch/transformers versions
and qconform's evaluation code. A second run, or a second pathway gated against the same
reference, reads the file instead of running the model; a changed data file computes it again.

A reference other than the resident fp32 one is loaded for its phase and released after it
(harness/models/hf.py loads it straight from the checkpoint files), so a release-size model's
bf16 reference and its candidate are never on the GPU at the same time by this module.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from harness.core import FP32_CPU, Device, Precision, Tensors, cpu_class, package_version, release_host_memory
from harness.models.base import ModelSpec
from harness.report.progress import phase

HARNESS_DIR = Path(__file__).resolve().parents[1]
TOOLCHAIN = ("torch", "transformers", "lm-eval")
# Model attributes that change what the evaluation computes (windows, generation, task items).
SETTINGS = ("eval_tokens", "seq_len", "batch_size", "new_tokens", "generation_prompts", "task_metric_names", "lm_eval_tasks")


def device_class(precision: Precision) -> str:
    return cpu_class() if precision.device == "cpu" else Device.detect().device_class


def _files_of(model: ModelSpec) -> list[Path]:
    """The data, tokenizer and lm-eval task files the model's evaluation reads."""
    files = [Path(p) for p in getattr(model, "data", {}).values() if p]
    folder = getattr(model, "tokenizer_dir", None)
    if folder is not None:
        files += sorted(p for p in Path(folder).iterdir() if p.is_file() and ("token" in p.name or p.name in ("vocab.json", "vocab.txt", "merges.txt", "spiece.model")))
    include = getattr(model, "lm_eval_include", None)
    if include is not None:
        files += sorted(p for p in Path(include).rglob("*") if p.is_file())
    return files


def reference_key(model: ModelSpec, precision: Precision) -> str:
    digest = hashlib.sha256()

    def add(label: str, value: Any) -> None:
        digest.update(json.dumps([label, value], sort_keys=True, default=str).encode())

    add("weights", model.weights_sha256)
    add("precision", [precision.dtype, precision.device, device_class(precision)])
    add("toolchain", {package: package_version(package) for package in TOOLCHAIN})
    add("settings", {name: getattr(model, name, None) for name in SETTINGS})
    for name, array in sorted(model.golden_inputs().items()):
        add(f"input {name}", [str(array.dtype), list(array.shape)])
        digest.update(np.ascontiguousarray(array).tobytes())
    for path in _files_of(model):
        add("file", path.name)
        digest.update(path.read_bytes())
    for source in sorted((HARNESS_DIR / "models").glob("*.py")):  # the evaluation code itself
        digest.update(source.read_bytes())
    return digest.hexdigest()


def release_memory() -> None:
    """Give freed tensors back: host memory to the operating system (release_host_memory), GPU memory to the driver."""
    release_host_memory()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


@contextlib.contextmanager
def loaded_module(model: ModelSpec, precision: Precision, beside: Any = None) -> Iterator[Any]:
    """The model in `precision` for the length of the block: the resident fp32 reference, or the
    model loaded for this phase (beside a candidate module: load_beside) and released after it.
    The block must not keep the module past its end (`del` it), or its memory stays taken."""
    if precision == FP32_CPU:
        yield model.reference
        return
    load = functools.partial(model.load_module, precision)
    module = load_beside(beside, load) if beside is not None else load()
    try:
        yield module
    finally:
        del module
        release_memory()


def load_beside(candidate: Any, load: Callable[[], Any]) -> Any:
    """`load()` a reference module beside `candidate`, holding once what both have: the candidate's
    plain (not quantized) parameters (embeddings, norms, an unquantized head) wait on the host while
    the reference loads, when they live on a GPU; then each takes the reference's tensor where the
    device, dtype, shape and values are the same, else goes back as it was. A release-size model's
    bf16 reference and its candidate then fit one GPU together (8B: its 1 GiB embedding is held
    once), with no moment where both copies are there. The candidate computes exactly what it did."""
    import torch

    plain = (torch.Tensor, torch.nn.Parameter)  # not a quantized tensor subclass
    waiting: list[tuple[str, Any, str, Any, Any]] = []  # (name, owner module, attribute, its device, its values on the host)
    parked: dict[int, Any] = {}  # one host copy per parameter: tied parameters stay tied
    for name, param in candidate.named_parameters(remove_duplicate=False):
        if type(param) in plain:
            owner, _, leaf = name.rpartition(".")
            device = param.device
            if device.type != "cpu":
                param = parked.setdefault(id(param), torch.nn.Parameter(param.detach().to("cpu"), requires_grad=False))
            waiting.append((name, candidate.get_submodule(owner), leaf, device, param))
    for _, module, leaf, _, param in waiting:
        module._parameters[leaf] = param
    release_memory()
    reference = None
    try:
        reference = load()
    finally:
        theirs = dict(reference.named_parameters(remove_duplicate=False)) if reference is not None else {}
        back: dict[int, Any] = {}
        for name, module, leaf, device, param in waiting:
            other = theirs.get(name)
            same = other is not None and type(other) in plain and other.device == device and other.dtype == param.dtype and other.shape == param.shape and torch.equal(other.detach().cpu(), param.detach())
            module._parameters[leaf] = other if same else param if device.type == "cpu" else back.setdefault(id(param), torch.nn.Parameter(param.detach().to(device), requires_grad=False))
    return reference


def fp32_floor_precision(model: ModelSpec, device: str, gpu_budget: int | None, host_budget: int) -> Precision | str:
    """Where the fp32 model for the precision floor runs: on the GPU when its weights fit what the GPU
    budget leaves beside what is allocated there, with a quarter to spare; else on the CPU when they
    fit a quarter of the host budget (an fp32 reference's peak is several times its weights); else why not."""
    need = 4 * model.parameter_count
    if device == "cuda" and gpu_budget is not None:
        import torch

        if need * 1.25 <= gpu_budget - torch.cuda.memory_allocated():
            return Precision("float32", "cuda")
    if need * 4 <= host_budget:
        return FP32_CPU
    room = f"the GPU budget {gpu_budget / 2**30:.1f} GiB less what is allocated, nor " if device == "cuda" and gpu_budget else ""
    return f"the fp32 model's weights ({need / 2**30:.1f} GiB) fit neither {room}a quarter of the host budget ({host_budget / 2**30:.1f} GiB)"


class ReferenceStore:
    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        self._outputs: dict[tuple[str, Precision], Tensors] = {}
        self.computed: list[tuple[str, Precision]] = []  # what this process ran the model for (tests read it)
        self.costs: dict[tuple[str, Precision], dict[str, dict[str, Any]]] = {}  # what computing (or loading) each cost

    def path_for(self, model: ModelSpec, precision: Precision) -> Path:
        return self.cache_dir / "references" / model.id / f"{precision.dtype}-{precision.device}-{reference_key(model, precision)[:16]}.npz"

    def outputs(self, model: ModelSpec, precision: Precision = FP32_CPU) -> Tensors:
        """The model's evaluation (model.evaluate) in `precision`: from this process, else the disk
        cache, else computed (then written to the cache)."""
        key = (model.id, precision)
        if key not in self._outputs:
            path = self.path_for(model, precision)
            costs = self.costs.setdefault(key, {})
            if path.is_file():
                with phase(f"reference outputs of {model.id} ({precision}) from the cache", into=costs, label="reference outputs (cached)"):
                    with np.load(path, allow_pickle=False) as stored:
                        self._outputs[key] = {name: stored[name] for name in stored.files}
            else:
                with phase(f"reference outputs of {model.id} ({precision})", into=costs, label="reference outputs"):
                    with loaded_module(model, precision) as module:
                        outputs = evaluate(model, lambda inputs: model.run_module(module, inputs, precision.device), costs, "reference")
                        del module  # released as the block ends
                self.computed.append(key)
                self._write(path, outputs)
                self._outputs[key] = outputs
        return self._outputs[key]

    @staticmethod
    def _write(path: Path, outputs: Tensors) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **outputs)
        os.replace(tmp.name, path)  # atomic: a killed run never leaves half a reference behind


def evaluate(model: ModelSpec, run: Callable[[Tensors], Tensors], costs: dict[str, dict[str, Any]], side: str) -> Tensors:
    """`model.evaluate(run)`, its parts' costs (wall time, forward passes) added to `costs` as
    "<side>: <part>". A model of a team's own plugin whose evaluate takes no `costs` is run as it is."""
    if "costs" not in inspect.signature(model.evaluate).parameters:
        return model.evaluate(run)
    parts: dict[str, dict[str, Any]] = {}
    outputs = model.evaluate(run, costs=parts)
    costs.update({f"{side}: {part}": cost for part, cost in parts.items()})
    return outputs
