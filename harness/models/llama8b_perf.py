"""The performance workloads (speed and per-layer accuracy only; no task): Llama-3.1-8B layer
shapes with seeded random bf16 weights (Linear K x N at several token counts M, and a whole MLP
block), and whole causal LMs (the Llama-3.1-8B architecture from its config, or a registered
model) timed at prefill and decode points."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from harness.measure.roofline import DecoderShape, Work, decoder_work, linear_work
from harness.models.tiny_llama import MLP as LlamaMLP  # the same SwiGLU block, at 8B sizes

HIDDEN, INTERMEDIATE, KV = 4096, 14336, 1024
LINEAR_SHAPES = {  # name -> (K, N) of y = x @ W^T, x: (M, K)
    "qkv": (HIDDEN, HIDDEN + 2 * KV),  # 4096 x 6144
    "o_proj": (HIDDEN, HIDDEN),  # 4096 x 4096
    "gate_up": (HIDDEN, INTERMEDIATE),  # 4096 x 14336
    "down": (INTERMEDIATE, HIDDEN),  # 14336 x 4096
}
LINEAR_TOKENS = (1, 16, 128, 1024, 4096, 8192)
MLP_TOKENS = (1, 4096)


@dataclass(frozen=True)
class PerfWorkload:
    family: str  # "llama8b-linear" or "llama8b-mlp": the profile table
    name: str
    m: int
    k: int
    n: int

    @property
    def id(self) -> str:
        return f"{self.family}-{self.name}-m{self.m}"

    def table(self, pathway: str) -> tuple[str, ...]:
        """Where this workload's thresholds live in a profile."""
        return (pathway, self.family, self.name, f"m{self.m}")

    @property
    def weight_count(self) -> int:
        return self.k * self.n * (3 if self.family == "llama8b-mlp" else 1)

    def work(self, weight_dtype: str) -> Work:
        """One forward: a Linear, or the MLP block's three (input and output of the block only)."""
        if self.family == "llama8b-mlp":
            weights = 2 * linear_work(0, self.k, self.n, weight_dtype).bytes + linear_work(0, self.n, self.k, weight_dtype).bytes
            return Work(2.0 * self.m * 3 * self.k * self.n, weights + 2 * 2 * self.m * self.k)
        return linear_work(self.m, self.k, self.n, weight_dtype)

    def build(self, seed: int = 0) -> nn.Module:
        """bf16 CUDA module with seeded weights scaled like a trained layer (std 1/sqrt(K))."""
        torch.manual_seed(seed)
        module = LlamaMLP(self.k, self.n) if self.family == "llama8b-mlp" else nn.Linear(self.k, self.n, bias=False)
        return module.to(device="cuda", dtype=torch.bfloat16).eval()

    def make_input(self, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        return torch.randn(self.m, self.k, device="cuda", dtype=torch.bfloat16, generator=gen)


WORKLOADS = [PerfWorkload("llama8b-linear", name, m, k, n) for name, (k, n) in LINEAR_SHAPES.items() for m in LINEAR_TOKENS] + [
    PerfWorkload("llama8b-mlp", "block", m, HIDDEN, INTERMEDIATE) for m in MLP_TOKENS
]


# -- kernel table selection -------------------------------------------------------------------

# The default GPU run times M = 1 (decode), 128 and 4096 (prefill) of each shape, which fits the
# CI budget; QCONFORM_PERF_FULL=1 or --perf-full times the whole table (two 10-minute calls on the
# H100 cold). The profiles keep a threshold for every M, so either selection is gated.
DEFAULT_LINEAR_TOKENS = (1, 128, 4096)


def kernel_workloads(full: bool = False) -> list[PerfWorkload]:
    full = full or os.environ.get("QCONFORM_PERF_FULL", "") not in ("", "0")
    return [w for w in WORKLOADS if full or w.family != "llama8b-linear" or w.m in DEFAULT_LINEAR_TOKENS]


# -- model level: a whole causal LM, prefill and decode ---------------------------------------

# Llama-3.1-8B's architecture (meta-llama/Llama-3.1-8B config.json): built from its config with
# seeded random bf16 weights, 15.0 GiB, directly on the GPU in 2.5 s (measured on the H100).
LLAMA_31_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rope_theta": 500000.0,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
LLAMA_8B_ID = "llama-3.1-8b"

# torchao's published Llama-3.1-8B FP8 rowwise speedups on the H100 (torchao README, served by
# vLLM: 4096-token prompts for prefill, 2048-token generations for decode).
PUBLISHED = {"prefill": 1.464, "decode": 1.214}
WHY_DIFFERENT = (
    "ours: HF transformers eager glue with regionally compiled MLP/projection blocks (attention core eager), "
    "CUDA-graphed decode, our batch x length points; torchao's: vLLM's fused kernels, paged attention and its batching"
)


def perf_layers() -> int | None:
    """QCONFORM_PERF_LAYERS=N builds only N decoder layers (quick runs); the record says how many."""
    value = os.environ.get("QCONFORM_PERF_LAYERS", "").strip()
    return int(value) if value else None


def llama_config(layers: int | None = None, **overrides):
    from transformers import LlamaConfig

    sizes = {**LLAMA_31_8B, **overrides}
    if layers is not None:
        sizes["num_hidden_layers"] = layers
    return LlamaConfig(**sizes)


def build_causal_lm(config, device: str = "cuda", seed: int = 0) -> nn.Module:
    """A transformers causal LM from `config` with seeded random bf16 weights, built on `device`
    (on the GPU directly: the 8B model never touches host memory)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


# Model id -> factory of a bf16 CUDA causal LM (a transformers model: it takes input_ids,
# use_cache, logits_to_keep and a KV cache, and has .config). Own models register here too.
PERF_MODELS: dict[str, Callable[[], nn.Module]] = {LLAMA_8B_ID: lambda: build_causal_lm(llama_config(perf_layers()))}


def register_perf_model(model_id: str, factory: Callable[[], nn.Module]) -> None:
    if model_id in PERF_MODELS:
        raise ValueError(f"perf model {model_id!r} registered twice")
    PERF_MODELS[model_id] = factory


def decoder_shape(model: nn.Module) -> DecoderShape:
    """The counts the roofline needs, read off a built (not yet quantized) causal LM."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    head = model.get_output_embeddings()
    heads = config.num_attention_heads
    return DecoderShape(
        layers=config.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        hidden=config.hidden_size,
        layer_linear_params=sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m is not head),
        lm_head_params=head.weight.numel(),
    )


def _points(env: str, default: str) -> list[tuple[int, int]]:
    text = os.environ.get(env, "").strip() or default
    return [parse_point(item) for item in text.split(",")]


@dataclass(frozen=True)
class ModelPerfWorkload:
    """One timed point of a whole causal LM: a prefill of batch x tokens, or `steps` decode steps
    of batch sequences after a `tokens`-long prompt."""

    model: str
    phase: str  # "prefill" or "decode"
    batch: int
    tokens: int
    steps: int = 0

    @property
    def point(self) -> str:
        return f"{self.phase}-{self.batch}x{self.tokens}"

    @property
    def id(self) -> str:
        return f"{self.model}-{self.point}"

    def table(self, pathway: str) -> tuple[str, ...]:
        return (pathway, self.model, self.point)

    @property
    def max_cache_len(self) -> int:
        return self.tokens + self.steps

    def work(self, shape: DecoderShape, weight_dtype: str) -> Work:
        """Work of one timed unit: one prefill forward, or one decode step (a static cache is read whole)."""
        if self.phase == "prefill":
            return decoder_work(shape, batch=self.batch, query=self.tokens, context=self.tokens, weight_dtype=weight_dtype)
        return decoder_work(shape, batch=self.batch, query=1, context=self.max_cache_len, weight_dtype=weight_dtype)

    def tokens_per_unit(self) -> int:
        return self.batch * (self.tokens if self.phase == "prefill" else 1)

    def prompt(self, vocab: int, device: str = "cuda", seed: int = 0) -> torch.Tensor:
        gen = torch.Generator(device=device).manual_seed(seed)
        return torch.randint(0, vocab, (self.batch, self.tokens), device=device, generator=gen)


def model_workloads(model_ids: list[str] | None = None) -> list[ModelPerfWorkload]:
    """Defaults: prefill 1x2048 and 8x2048; decode at batch 1 and 8 after a 512-token prompt,
    64 steps timed. Env: QCONFORM_PERF_PREFILL="1x2048,8x2048", QCONFORM_PERF_DECODE="1x512,8x512",
    QCONFORM_PERF_DECODE_STEPS=64."""
    steps = int(os.environ.get("QCONFORM_PERF_DECODE_STEPS", "") or 64)
    out = []
    for model in model_ids or list(PERF_MODELS):
        out += [ModelPerfWorkload(model, "prefill", b, t) for b, t in _points("QCONFORM_PERF_PREFILL", "1x2048,8x2048")]
        out += [ModelPerfWorkload(model, "decode", b, t, steps) for b, t in _points("QCONFORM_PERF_DECODE", "1x512,8x512")]
    return out


# The team's own model's points when its project entry names none (speed_prefill / speed_decode =
# "BxT"): batch 8 below 3B parameters, batch 1 from 3B up (an 8B bf16 model and its candidate then
# fit a 32 GB GPU with the activations of the point); 2048-token prompts, decode after 512 tokens.
LARGE_MODEL_PARAMETERS = 3e9
OWN_PREFILL_TOKENS, OWN_DECODE_CONTEXT = 2048, 512


def own_points(model, config) -> dict[str, ModelPerfWorkload]:
    """The prefill and decode points a team's model is timed at: its project entry's
    `speed_prefill` / `speed_decode` ("BxT"), else defaults from its size, within its context length."""
    steps = int(os.environ.get("QCONFORM_PERF_DECODE_STEPS", "") or 64)
    batch = 1 if model.parameter_count >= LARGE_MODEL_PARAMETERS else 8
    longest = getattr(config, "max_position_embeddings", None) or OWN_PREFILL_TOKENS + steps
    chosen = {}
    for phase, setting, tokens in (("prefill", getattr(model, "speed_prefill", None), OWN_PREFILL_TOKENS), ("decode", getattr(model, "speed_decode", None), OWN_DECODE_CONTEXT)):
        b, t = parse_point(setting) if setting else (batch, min(tokens, longest - steps))
        chosen[phase] = ModelPerfWorkload(model.id, phase, b, t, steps if phase == "decode" else 0)
    return chosen


def parse_point(text: str) -> tuple[int, int]:
    """ "8x2048" -> (8, 2048): batch x tokens."""
    batch, sep, tokens = text.strip().lower().partition("x")
    if not sep or not batch.isdigit() or not tokens.isdigit() or int(batch) < 1 or int(tokens) < 1:
        raise ValueError(f"speed point {text!r}: expected BATCHxTOKENS, e.g. 8x2048")
    return int(batch), int(tokens)


def get_workload(workload_id: str) -> PerfWorkload | ModelPerfWorkload:
    """A kernel-table or model-level workload by id (the test id and the record's "model" label)."""
    for workload in [*WORKLOADS, *model_workloads()]:
        if workload.id == workload_id:
            return workload
    raise KeyError(f"unknown perf workload {workload_id!r}")
