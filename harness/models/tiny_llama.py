"""A seeded, small Llama-architecture decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU)
with planted outlier weight channels.

Real LLM weights have a few output channels whose range is far larger than the rest. Per-channel
weight scales absorb that; a single per-tensor scale is set by the outliers and rounds every other
channel to a few levels, which turns generated text into garbage. The planted outliers reproduce
that weight-range profile without changing what the model computes: a few rows of each Linear
that reads a normalized input get large weights on "dead" hidden channels, channels every RMSNorm
zeroes (gain 0). So the reference is unchanged, and only a quantizer that lets the outliers set
everybody's scale is punished.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from harness.judge.metrics import argmax_agreement
from harness.models.base import ModelSpec, Tensors, register_model


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, max_seq: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.q_proj = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        angles = torch.outer(torch.arange(max_seq).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        mask = torch.full((max_seq, max_seq), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.cos[:seq], self.sin[:seq]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + self.mask[:seq, :seq]
        out = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, hidden: int, max_seq: int):
        super().__init__()
        self.input_layernorm = RMSNorm(dim)
        self.self_attn = Attention(dim, n_heads, n_kv_heads, max_seq)
        self.post_attention_layernorm = RMSNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyLlama(nn.Module):
    def __init__(self, vocab: int, dim: int, n_layers: int, n_heads: int, n_kv_heads: int, hidden: int, max_seq: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, n_heads, n_kv_heads, hidden, max_seq) for _ in range(n_layers))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def plant_outlier_channels(model: TinyLlama, dead_channels: list[int], rows_per_layer: int, ratio: float, seed: int) -> None:
    """Give a few output rows of every Linear that reads a normalized input weights `ratio` times
    the layer's largest normal weight, on hidden channels that every RMSNorm zeroes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.weight[dead_channels] = 0.0
        readers = [model.lm_head]
        for layer in model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            readers += [attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj]
        for linear in readers:
            peak = linear.weight.abs().max()
            rows = torch.randperm(linear.out_features, generator=gen)[:rows_per_layer]
            signs = torch.randint(0, 2, (rows_per_layer, len(dead_channels)), generator=gen) * 2 - 1
            linear.weight[rows[:, None], torch.tensor(dead_channels)] = signs.float() * ratio * peak


class TinyLlamaSpec(ModelSpec):
    id = "tiny-llama"
    description = (
        "seeded 2-layer Llama-architecture decoder (dim 128, GQA 4/2 heads, SwiGLU 256, vocab 256) "
        "with planted outlier weight channels; metric: greedy-token agreement with the fp32 reference"
    )
    input_names = ("input_ids",)
    output_names = ("logits",)
    primary_output = "logits"
    kind = "causal-lm"
    task_metric_names = ("token_agreement",)
    dynamic_axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}

    vocab, dim, n_layers, n_heads, n_kv_heads, hidden, max_seq = 256, 128, 2, 4, 2, 256, 64
    seq_len = 32
    seed = 20261125
    # One outlier row per Linear, 500x the largest normal weight: measured with weight-only
    # fake quantization, per-channel keeps ~95% greedy-token agreement, per-tensor ~0%.
    outlier_rows, outlier_ratio = 1, 500.0

    def build_reference(self) -> torch.nn.Module:
        torch.manual_seed(self.seed)
        model = TinyLlama(self.vocab, self.dim, self.n_layers, self.n_heads, self.n_kv_heads, self.hidden, self.max_seq)
        with torch.no_grad():
            model.embed_tokens.weight.normal_(0.0, 1.0)
        plant_outlier_channels(model, [7, 93], self.outlier_rows, self.outlier_ratio, self.seed)
        return model

    def _tokens(self, seed: int, batch: int) -> Tensors:
        rng = np.random.default_rng(seed)
        return {"input_ids": rng.integers(0, self.vocab, size=(batch, self.seq_len), dtype=np.int64)}

    def calibration_inputs(self) -> list[Tensors]:
        return [self._tokens(self.seed + 1 + i, batch=4) for i in range(8)]

    def eval_inputs(self) -> Tensors:
        return self._tokens(self.seed - 1, batch=16)

    def task_metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        return {"token_agreement": argmax_agreement(reference["logits"], candidate["logits"])}

    def task_metric_samples(self, reference: Tensors) -> dict[str, int]:
        return {"token_agreement": int(np.prod(reference["logits"].shape[:-1]))}  # one per position


SPEC = register_model(TinyLlamaSpec())
