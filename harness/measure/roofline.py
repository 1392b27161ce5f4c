"""Roofline: what a perf workload achieved against what the GPU can do.

Every perf workload states its work (FLOPs and bytes that must move between HBM and the chip);
divided by the measured time that gives TFLOP/s and GB/s, and each as a fraction of the device's
peak. The workload's arithmetic intensity (FLOPs per byte) against the device's ridge point says
which limit applies ("compute" or "memory" bound), and `peak_fraction` is the fraction of that
limit reached. A 1.5x speedup over a slow baseline is then visible as, say, 30 % of peak.

Peaks come from the spec table below (dense, no sparsity; FP8 with FP32 accumulation), matched by
GPU name; an unknown GPU is measured once with a calibration GEMM and a device copy, and the
result is cached on disk (keyed like the compile caches, see harness/measure/timing.py compile_cache_key).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.core import dtype_info


@dataclass(frozen=True)
class Peak:
    name: str  # what was matched or measured
    tflops: dict[str, float]  # compute dtype -> dense TFLOP/s ("bf16", "fp8")
    gbps: float  # HBM bandwidth, GB/s (1e9 bytes/s)
    source: str  # "spec" or "measured"


# Data-sheet peaks, dense. Matched by substring of the lower-cased CUDA device name, first match
# wins (so the more specific names come first). Our H100 SXM measured 770-800 TFLOP/s on an
# 8192^3 bf16 GEMM (GPU-NOTES.md): a well-fed GEMM reaches about 80 % of the data-sheet peak.
SPECS: list[tuple[str, Peak]] = [
    ("h100 nvl", Peak("H100 NVL", {"bf16": 835.0, "fp8": 1671.0}, 3900.0, "spec")),
    ("h100 pcie", Peak("H100 PCIe", {"bf16": 756.0, "fp8": 1513.0}, 2000.0, "spec")),
    ("h100", Peak("H100 SXM", {"bf16": 989.0, "fp8": 1979.0}, 3350.0, "spec")),
    ("h200 nvl", Peak("H200 NVL", {"bf16": 835.0, "fp8": 1671.0}, 4800.0, "spec")),
    ("h200", Peak("H200 SXM", {"bf16": 989.0, "fp8": 1979.0}, 4800.0, "spec")),
    ("rtx 5090", Peak("RTX 5090", {"bf16": 209.5, "fp8": 419.0}, 1790.0, "spec")),
    ("l40s", Peak("L40S", {"bf16": 362.0, "fp8": 733.0}, 864.0, "spec")),
    ("a100-sxm4-80gb", Peak("A100 SXM 80GB", {"bf16": 312.0}, 2039.0, "spec")),  # no FP8 units
]


def spec_for(gpu_name: str) -> Peak | None:
    name = gpu_name.lower()
    return next((peak for key, peak in SPECS if key in name), None)


@dataclass(frozen=True)
class Work:
    """What one timed call must do: FLOPs, and bytes that must cross HBM at least once."""

    flops: float
    bytes: float

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.bytes + other.bytes)

    def scaled(self, factor: float) -> "Work":
        return Work(self.flops * factor, self.bytes * factor)


def linear_work(m: int, k: int, n: int, weight_dtype: str, act_bytes: int = 2) -> Work:
    """y = x @ W^T, x: (M, K) bf16, W: (N, K): 2MKN FLOPs; weights once, input and output once.
    Quantized (rowwise FP8, int8) weights add one fp32 scale per output row. Bytes per element
    come from harness/core.py DTYPES."""
    dtype = dtype_info(weight_dtype)
    weight = k * n * dtype.bytes + (4 * n if dtype.quantized else 0)
    return Work(2.0 * m * k * n, float(weight + act_bytes * (m * k + m * n)))


@dataclass(frozen=True)
class DecoderShape:
    """The counts a decoder's work follows from (read off a built model: harness/models/llama8b_perf.py)."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    layer_linear_params: int  # weights of every Linear in the decoder layers (all layers)
    lm_head_params: int  # hidden x vocab; stays bf16 (torchao and vLLM exclude it)


def decoder_work(shape: DecoderShape, *, batch: int, query: int, context: int, weight_dtype: str, logits_tokens: int = 1, kv_bytes: int = 2) -> Work:
    """One forward of `batch` sequences of `query` new tokens attending to `context` positions.

    FLOPs: 2 x layer weights x tokens, lm_head on `logits_tokens` per sequence, and attention
    (QK^T and PV, 4 x heads x head_dim per query-key pair): for prefill (query == context) only the
    causal half is counted, decode attends to all `context` positions (a static cache is read whole).
    Bytes: each weight read once, embedding rows and the KV cache read (decode) or written (prefill).
    """
    tokens = batch * query
    pairs = batch * (query * (query + 1) / 2 if query == context else query * context)
    flops = 2.0 * shape.layer_linear_params * tokens + 2.0 * shape.lm_head_params * batch * logits_tokens + 4.0 * shape.layers * shape.heads * shape.head_dim * pairs
    dtype = dtype_info(weight_dtype)
    weights = shape.layer_linear_params * dtype.bytes + shape.lm_head_params * 2
    if dtype.quantized:  # one fp32 scale per output row: negligible, but counted
        weights += 4 * shape.layer_linear_params / shape.hidden
    kv = 2 * shape.layers * batch * context * shape.kv_heads * shape.head_dim * kv_bytes
    embeddings = tokens * shape.hidden * 2
    return Work(flops, float(weights + kv + embeddings))


def achieved(work: Work, seconds: float, peak: Peak, compute_dtype: str) -> dict:
    """The Record's "roofline" entry for `work` done in `seconds` by a kernel computing in `compute_dtype`."""
    tflops, gbps = work.flops / seconds / 1e12, work.bytes / seconds / 1e9
    peak_tflops = peak.tflops.get(compute_dtype) or peak.tflops["bf16"]  # no FP8 units: FP8 runs no faster than bf16
    ridge = peak_tflops * 1e12 / (peak.gbps * 1e9)  # FLOPs per byte where both limits meet
    intensity = work.flops / work.bytes
    bound = "compute" if intensity >= ridge else "memory"
    compute_fraction, bandwidth_fraction = tflops / peak_tflops, gbps / peak.gbps
    return {
        "tflops": tflops,
        "gbps": gbps,
        "peak_tflops": peak_tflops,
        "peak_gbps": peak.gbps,
        "compute_fraction": compute_fraction,
        "bandwidth_fraction": bandwidth_fraction,
        "bound": bound,
        "peak_fraction": compute_fraction if bound == "compute" else bandwidth_fraction,
        "intensity": intensity,
        "ridge": ridge,
        "peak_source": f"{peak.source}: {peak.name}",
    }


def describe(roof: dict) -> str:
    return f"{roof['tflops']:.0f} TFLOP/s, {roof['gbps']:.0f} GB/s = {roof['peak_fraction']:.0%} of the {roof['bound']} peak ({roof['peak_source']})"


# -- unknown GPUs: measure once ---------------------------------------------------------------


def measure_peak(gpu_name: str) -> Peak:
    """Calibrate an unknown GPU: best of 10 bf16 8192^3 GEMMs (and FP8 rowwise `_scaled_mm` where
    the GPU has FP8), and a 1 GiB device-to-device clone (read + write). Takes about a second."""
    import torch

    def best_s(fn, calls: int = 10) -> float:
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(calls):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return min(times)

    n = 8192
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    tflops = {"bf16": 2 * n**3 / best_s(lambda: a @ b) / 1e12}
    if torch.cuda.get_device_capability(0) >= (8, 9):
        try:
            a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t()
            sa, sb = torch.ones(n, 1, device="cuda"), torch.ones(1, n, device="cuda")
            tflops["fp8"] = 2 * n**3 / best_s(lambda: torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)) / 1e12
        except RuntimeError:  # rowwise scaled_mm unsupported in this build (RTX 5090 + some torch builds)
            pass
    big = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    gbps = 2 * big.numel() / best_s(lambda: big.clone()) / 1e9
    return Peak(gpu_name, tflops, gbps, "measured")


@functools.cache
def session_peak(cache_dir: Path) -> Peak:
    """This process's GPU (device 0): its spec, or its measurement cached under `cache_dir`."""
    import torch

    from harness.measure.timing import compile_cache_key

    name = torch.cuda.get_device_name(0)
    return device_peak(name, Path(cache_dir) / "roofline" / f"{compile_cache_key(name)}.json")


def device_peak(gpu_name: str, cache_file: Path | None = None) -> Peak:
    """The spec peak for a known GPU; else the measured one, cached in `cache_file`."""
    peak = spec_for(gpu_name)
    if peak is not None:
        return peak
    if cache_file is not None and cache_file.is_file():
        data = json.loads(cache_file.read_text())
        if data.get("name") == gpu_name:
            return Peak(**data)
    peak = measure_peak(gpu_name)
    if cache_file is not None and all(math.isfinite(v) for v in peak.tflops.values()):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(asdict(peak)))
    return peak


def peak_gate(case, roof: dict) -> dict[str, float]:
    """{"min_peak_fraction": ...} when the case's profile gates it (the key is optional in a
    profile: a table without it gates speed against bf16 only), else {}."""
    from harness.judge.thresholds import ProfileError

    try:
        case.threshold("min_peak_fraction")
    except ProfileError:
        return {}
    return {"min_peak_fraction": roof["peak_fraction"]}
