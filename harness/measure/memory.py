"""Peak GPU and host memory of a case, estimated before any test runs (DESIGN.md: a case that cannot
fit the machine's memory is refused, or skipped with the numbers, before work).

ModelSize reads a checkpoint's safetensors headers (no weights loaded); the formulas below turn it
into an Estimate for one (model, pathway, device kind). Pathways pick a formula
(Pathway.memory_estimate); harness/run/memory.py holds the machine's budget and the session glue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from harness.artifacts.weights import safetensors_header
from harness.core import dtype_info

GiB = 1 << 30
# Bytes per element of the safetensors dtype names.
SAFETENSORS_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}


@dataclass(frozen=True)
class ModelSize:
    """What memory depends on, read from a checkpoint without loading it."""

    parameters: int
    checkpoint_bytes: int  # in the checkpoint's own dtype(s)
    embedding_parameters: int  # tensors named "*embed*"
    lm_head_parameters: int  # tensors named "*lm_head*": 0 when tied (the checkpoint holds that matrix once)
    largest_tensor_bytes: int
    largest_shard_bytes: int
    vocab_size: int | None = None
    hidden_size: int | None = None
    num_hidden_layers: int | None = None


def checkpoint_size(path: Path) -> ModelSize:
    """A checkpoint directory's size from its *.safetensors headers and config.json."""
    shards = sorted(Path(path).glob("*.safetensors"))
    if not shards:
        raise ValueError(f"{path}: no *.safetensors files")
    parameters = nbytes = embedding = lm_head = largest = 0
    for shard in shards:
        for name, info in safetensors_header(shard).items():
            count = prod(info["shape"])
            parameters += count
            nbytes += count * SAFETENSORS_BYTES.get(info["dtype"], 4)
            largest = max(largest, count * SAFETENSORS_BYTES.get(info["dtype"], 4))
            if "lm_head" in name:
                lm_head += count
            elif "embed" in name:
                embedding += count
    config = _config(Path(path))
    return ModelSize(
        parameters, nbytes, embedding, lm_head, largest, max(s.stat().st_size for s in shards),
        config.get("vocab_size"), config.get("hidden_size"), config.get("num_hidden_layers"),
    )


def _config(path: Path) -> dict[str, Any]:
    """config.json's shape keys; a multimodal config keeps them in its text_config (Gemma 3)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {**config.get("text_config", {}), **{k: v for k, v in config.items() if k != "text_config"}}


def model_size(model: Any) -> ModelSize | None:
    """The size of a model given as a checkpoint directory (HuggingFaceModel.path), else None:
    no estimate, never refused (module:factory models and the embedded demos are tiny; an ONNX
    file's weights are not read here)."""
    path = getattr(model, "path", None)
    if isinstance(path, Path) and path.is_dir() and any(path.glob("*.safetensors")):
        return checkpoint_size(path)
    return None


@dataclass(frozen=True)
class Estimate:
    """Peak memory of one case; the bases name each term, for the refusal line."""

    gpu_bytes: int  # 0: the case uses no GPU memory
    host_bytes: int
    host_basis: str  # "runtime 3.0 GiB + largest shard 4.6 GiB + reference outputs 0.1 GiB"
    gpu_basis: str = ""  # "bf16 weights 15.0 GiB + fp8 candidate 7.5 GiB + activations 2.3 GiB"

    @property
    def basis(self) -> str:
        return "; ".join(f"{where}: {terms}" for where, terms in (("GPU", self.gpu_basis), ("host", self.host_basis)) if terms)


def gib(n: float) -> str:
    """A size for a message: GiB, or MiB below a tenth of one (a budget of 1MB reads 1.0 MiB, not 0.0 GiB)."""
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.1f} MiB"


def _terms(terms: list[tuple[str, float]]) -> str:
    return " + ".join(f"{label} {gib(n)}" for label, n in terms)


def output_width(size: ModelSize, model: Any) -> int:
    """Floats per token of the model's output: a causal LM's logits (vocabulary), else a hidden state."""
    width = size.vocab_size if getattr(model, "kind", None) == "causal-lm" else size.hidden_size
    return int(width or size.hidden_size or 0)


def _eval_shape(model: Any) -> tuple[int, int, int]:
    """(eval tokens, batch size, sequence length) of the model's evaluation (HuggingFaceModel's defaults)."""
    return int(getattr(model, "eval_tokens", 512)), int(getattr(model, "batch_size", 2)), int(getattr(model, "seq_len", 128))


# -- GPU pathways: quantized on the GPU from the bf16 model -----------------------------------------
# The reference is the bf16 model on the GPU, loaded from safetensors; localization and the
# own-artifact timing hold it beside the candidate (the embedding once: run/references.load_beside).
# Measured on an H200 (torch 2.11, torchao 0.18), Llama-3.1-8B shapes, warm run: 25.3 GiB reserved
# by torch at its peak (the bf16 reference beside the candidate), which the CUDA context (~0.5 GiB)
# adds to; the old 10% headroom estimated 25.6 GiB in all, under that. 15% of the weights plus the
# context gives 27.5 GiB. (The cold run peaked at 30.5 GiB, nvidia-smi, before a build's and a
# load's freed blocks were given back and the allocator was held to the budget: not re-measured.)
# Host: anonymous RSS of the run's process tree (torch, CUDA, inductor's compile workers) peaked at
# 8.5 GiB for the 1B shapes (its fp32 floor loaded on the GPU) and 8.7 GiB for the 8B; the runtime
# term is set so that both are under the estimate (9.0 and 11.4 GiB). The checkpoint's file pages
# the loader maps are not counted: clean page cache (the 8B's total RSS peaked at 19.4 GiB).
RUNTIME_HOST_BYTES = 13 * GiB // 2  # torch + CUDA runtime, libraries and compile workers
LOGIT_BUFFERS_GPU = 3  # one eval batch's fp32 logits: the output, its log-softmax, a temporary
GPU_HEADROOM = 0.15  # of the weights: allocator fragmentation, workspaces
CUDA_CONTEXT_BYTES = 3 * GiB // 4  # the context, cuBLAS workspaces and kernels: outside torch's allocator


def gpu_quantize_estimate(size: ModelSize, model: Any, compute_dtype: str) -> Estimate:
    """bf16 weights + candidate (weight layers at the candidate's bytes, embeddings kept bf16; an
    untied lm_head is a weight layer, quantized) + one eval batch's logits x3 + 15% of the weights
    + the CUDA context.
    Host: the runtime, the largest shard (transient while loading) and the reference outputs kept."""
    eval_tokens, batch, seq_len = _eval_shape(model)
    width = output_width(size, model)
    candidate_bytes = dtype_info(compute_dtype).bits / 8
    bf16 = 2 * size.parameters
    candidate = candidate_bytes * (size.parameters - size.embedding_parameters) + 2 * size.embedding_parameters
    activations = batch * seq_len * width * 4 * LOGIT_BUFFERS_GPU + GPU_HEADROOM * (bf16 + candidate)
    gpu = [("bf16 weights", bf16), (f"{compute_dtype} candidate", candidate), ("activations", activations), ("CUDA context", CUDA_CONTEXT_BYTES)]
    host = [("runtime", RUNTIME_HOST_BYTES), ("largest shard", size.largest_shard_bytes), ("reference outputs", eval_tokens * width * 4)]
    return Estimate(int(sum(n for _, n in gpu)), int(sum(n for _, n in host)), _terms(host), _terms(gpu))


# -- CPU pathways: built (and for ONNX pathways exported) on the host from the fp32 model ------------
# Peak RSS (ru_maxrss / the process tree's anonymous RSS) of one cold `qconform run --model DIR
# --pathways P` (benchmarks/cpu.py --runs cold: the export, the build, the reference and every gate)
# on the 2-core 24 GB CPU runner, 2026-12-07; W = fp32 weights (4 B x parameters), 512 eval tokens:
#   Llama-3.2-1B shapes, random bf16 (1.24B params, W 4.60 GiB, vocab 128256: outputs term 1.47 GiB)
#     inc-int8-qdq, default recipe: 18.3 / 17.3 GiB in 507 s (the build 17.8 GiB: INC holds the graph
#       three times while it calibrates; localization 18.3 GiB); 2026-12-08, the calibration session
#       beside INC's saved graph without weights: 16.35 / 14.5 GiB in 480 s (the build 15.1,
#       localization 16.35)
#     inc-fp8-ref with its E5M2 twin (the E4M3-vs-E5M2 check; 2026-12-08): 16.2 / 15.7 GiB in 639 s
#       (localization: the fp32 reference beside the FP8 model and its dequantized weights). Before
#       INC's measured layers were let go after the build, the copies shared the reference's tensors
#       and the E5M2 case ran first and kept only its outputs, the kernel killed it at 23.2 GiB.
#   Gemma-3-270m (268M params, W 1.00 GiB, vocab 262144: outputs 3.0 GiB), inc-int8-qdq with the
#     SmoothQuant recipe: 7.6 / 7.0 GiB in 188 s (its build: export and SmoothQuant), PASS
#   tests/hf_checkpoints.build_llama (0.13M params, vocab 384), inc-int8-qdq: 1.0 GiB (the runtime)
# The factors put the estimate above every point and within 25% of it where the weights dominate:
# INT8 QDQ 1B 19.5 GiB (+7% over 18.3, +20% over 16.35), Gemma 8.1 GiB (+6%); INC FP8 1B 17.7 GiB
# (+10%). An 8B (Llama-3.1-8B, W 29.9 GiB) is estimated at 3.7 x W for INT8 QDQ, 3.3 x W for INC FP8.
# tests/test_memory_estimate.py holds these points. torchao int8 dynamic on the CPU (SmolLM2-135M:
# 2.6 GiB) and the host side of a GPU ONNX pathway take the INT8 QDQ factor (they export the same).
HOST_RUNTIME_CPU = 1.5 * GiB  # torch, onnxruntime, Neural Compressor and the suites, imported
HOST_WEIGHTS_FACTOR = 3.6  # peak / W: the export, INC's calibration (the graph three times), the reference
HOST_WEIGHTS_FACTOR_INC_FP8 = 3.2  # peak / W: the fp32 reference beside INC's FP8 model and its dequantized weights (one format at a time)
LOGIT_COPIES_CPU = 6  # reference and candidate outputs kept, the metrics' log-softmax temporaries (not measured alone)


def host_build_estimate(size: ModelSize, model: Any, on_gpu: bool = False, weights_factor: float = HOST_WEIGHTS_FACTOR) -> Estimate:
    """Host: the imported runtime + fp32 weights x `weights_factor` (the pathway's) + the eval
    logits x LOGIT_COPIES_CPU. On a GPU (an ONNX graph on the CUDA EP or TensorRT): fp32 weights +
    one eval batch's logits x3 + 10%."""
    eval_tokens, batch, seq_len = _eval_shape(model)
    width = output_width(size, model)
    fp32 = 4 * size.parameters
    host = [("runtime", HOST_RUNTIME_CPU), (f"fp32 weights {gib(fp32)} x {weights_factor:g} =", fp32 * weights_factor), ("outputs", eval_tokens * width * 4 * LOGIT_COPIES_CPU)]
    # On a GPU (not measured): an ONNX graph there holds at most its fp32 weights.
    gpu = [("fp32 graph weights", fp32), ("activations", batch * seq_len * width * 4 * LOGIT_BUFFERS_GPU + GPU_HEADROOM * fp32)] if on_gpu else []
    return Estimate(int(sum(n for _, n in gpu)), int(sum(n for _, n in host)), _terms(host), _terms(gpu))
