"""Planted pathways, loaded into a child pytest with `-p tests.planted_pathways`:
- planted-slow-dequant: FP8 weights dequantized to bf16 on every call, then a bf16 matmul.
  Numerically fine, never faster: the speedup gate must fail it.
- planted-nondeterministic: the real INT8 QDQ artifact whose runner adds fresh noise each call:
  the determinism property must fail it.
- planted-crash: the real INT8 QDQ artifact whose runtime raises on every run, inside the gate's
  body: qconform could not measure, so the verdict is ERROR, not FAIL.
- planted-slow-fp8-artifact: the real torchao FP8 rowwise artifact, whose runner dequantizes each
  stored FP8 weight to bf16 on every call and then runs a bf16 matmul: the team's own weights,
  the same tokens in its accuracy run and its timed path (TEST01 agrees), but never faster than
  bf16: the own-model speed gates must fail it (GPU; benchmarks/scale.py --pathway).
- planted-load-crash: the real INT8 QDQ artifact whose loading raises (as a backend out of memory
  does), each attempt counted in the file $QCONFORM_TEST_LOADS: every item of the case is an
  ERROR naming the cause, and the artifact is loaded once, not once per item.
- planted-future-leak: the real INT8 QDQ artifact whose runner sees the next token (as an export
  that drops the causal mask does): its perplexity is far better than the reference's, and the
  lower ln PPL ratio bound (min_ppl_ratio_log) must fail it."""

import numpy as np
import torch

from harness.pathways.base import Pathway, register
from harness.pathways.inc_int8_qdq import IncInt8Qdq
from harness.pathways.torchao_fp8 import TorchaoFp8Rowwise, is_fp8_weight


class DequantizeThenMatmul(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        scale = weight.abs().amax(dim=1, keepdim=True).float() / 448.0
        self.register_buffer("qdata", (weight.float() / scale).to(torch.float8_e4m3fn))
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, (self.qdata.float() * self.scale).to(x.dtype))


@register
class SlowDequantPathway(Pathway):
    name = "planted-slow-dequant"
    devices = ("cuda",)
    measures_speed = True
    compute_dtype = "fp8"  # it claims FP8 weights: judged against the FP8 peak

    def quantize_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if isinstance(module, torch.nn.Linear):
            return DequantizeThenMatmul(module)
        for name, child in module.named_children():
            setattr(module, name, self.quantize_module(child))
        return module


def planted_int8(name: str, wrap: type) -> type:
    """Register the real INT8 QDQ pathway as `name`, its runner wrapped in `wrap(runner)`."""

    class Planted(IncInt8Qdq):
        def load(self, artifact, device, model):
            return wrap(super().load(artifact, device, model))

    Planted.name = name
    return register(Planted)


class NoisyRunner:
    def __init__(self, runner):
        self.runner, self.rng = runner, np.random.default_rng()

    def __call__(self, inputs):
        return {k: v + self.rng.normal(0, 1e-3, v.shape).astype(v.dtype) for k, v in self.runner(inputs).items()}

    def layout(self):
        return self.runner.layout()

    def describe(self):
        return "planted: INT8 QDQ plus fresh noise on every call"


NondeterministicPathway = planted_int8("planted-nondeterministic", NoisyRunner)


class HangingRunner(NoisyRunner):
    def __call__(self, inputs):
        import time

        time.sleep(3600)  # a backend that never returns
        return self.runner(inputs)


HangingPathway = planted_int8("planted-hang", HangingRunner)


class CrashingRunner(NoisyRunner):
    def __call__(self, inputs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMulInteger node (planted)")


CrashingPathway = planted_int8("planted-crash", CrashingRunner)


class FutureLeakRunner(NoisyRunner):
    """Each position's logit of the token that really comes next raised by 3 nats: what a model
    that attends to the following token can learn to do."""

    def __call__(self, inputs):
        outputs = self.runner(inputs)
        logits, ids = outputs["logits"].copy(), inputs["input_ids"]
        batch, steps = np.meshgrid(np.arange(ids.shape[0]), np.arange(ids.shape[1] - 1), indexing="ij")
        logits[batch, steps, ids[:, 1:]] += 3.0
        return {**outputs, "logits": logits}


FutureLeakPathway = planted_int8("planted-future-leak", FutureLeakRunner)


@register
class LoadCrashPathway(IncInt8Qdq):
    name = "planted-load-crash"

    def load(self, artifact, device, model):
        import os

        with open(os.environ["QCONFORM_TEST_LOADS"], "a") as attempts:
            attempts.write("load\n")
        super().load(artifact, device, model)
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation (planted, while loading)")


@register
class BrokenKernelPathway(IncInt8Qdq):
    """Installed and importable, but its kernel fails on this machine (as row-wise FP8 GEMMs fail
    with CUBLAS_STATUS_NOT_SUPPORTED on some sm_120 builds): the capability probe must say so."""

    name = "planted-broken-kernel"

    def probe_operation(self, device):
        def kernel(device):
            raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul")

        return "a planted row-wise GEMM", kernel


class DequantizeEachCall(torch.nn.Linear):
    """A Linear holding a torchao Float8Tensor weight that it dequantizes on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight.dequantize(x.dtype), self.bias)


@register
class SlowFp8Artifact(TorchaoFp8Rowwise):
    name = "planted-slow-fp8-artifact"
    reference_pathway = None

    def load(self, artifact, device, model):
        runner = super().load(artifact, device, model)
        for module in runner.module.modules():
            if isinstance(module, torch.nn.Linear) and is_fp8_weight(module.weight):
                module.__class__ = DequantizeEachCall
        return runner

