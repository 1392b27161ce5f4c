"""The performance workload: Llama-3.1-8B layer shapes with seeded random bf16 weights (speed and
per-layer accuracy only; no task). Linear K x N at several token counts M, and a whole MLP block."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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


def get_workload(workload_id: str) -> PerfWorkload:
    for workload in WORKLOADS:
        if workload.id == workload_id:
            return workload
    raise KeyError(f"unknown perf workload {workload_id!r}")
