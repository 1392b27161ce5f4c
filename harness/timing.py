"""Paired, interleaved GPU timing: baseline and candidate in one process, same compilation,
CUDA graphs (so launch overhead does not hide the kernels), working sets larger than L2,
median of per-repeat ratios with a bootstrap interval. Compile time is reported separately.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class SpeedResult:
    baseline_ms: float  # median time of one forward
    candidate_ms: float
    speedup: float  # median of per-repeat baseline/candidate ratios
    ci_low: float  # 95% bootstrap interval of that median
    ci_high: float
    repeats: int
    copies: int  # weight copies rotated through to defeat L2 reuse
    baseline_compile_s: float
    candidate_compile_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_median_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(resamples, len(values)), replace=True), axis=1)
    return float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975))


def copies_to_defeat_l2(bytes_per_copy: int, l2_bytes: int | None = None) -> int:
    """How many weight copies to rotate so that each forward reads its weights from HBM."""
    if l2_bytes is None:
        l2_bytes = torch.cuda.get_device_properties(0).L2_cache_size
    return max(1, math.ceil(2 * l2_bytes / max(bytes_per_copy, 1)))


class Rotating(torch.nn.Module):
    """Runs k copies of a module on k inputs back to back: one graph replay reads k weight sets."""

    def __init__(self, copies: list[torch.nn.Module]):
        super().__init__()
        self.copies = torch.nn.ModuleList(copies)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [module(x) for module, x in zip(self.copies, inputs, strict=True)]


def _graphed(fn: Callable, inputs: list[torch.Tensor], warmup: int = 3) -> tuple[torch.cuda.CUDAGraph, float]:
    """Compile-warm `fn`, then capture one call in a CUDA graph. Returns (graph, first-call seconds)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        fn(inputs)  # first call compiles
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - start
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(warmup):
            fn(inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        fn(inputs)
    torch.cuda.synchronize()
    return graph, compile_s


def _replay_ms(graph: torch.cuda.CUDAGraph, replays: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / replays


def paired_speedup(
    baseline: list[torch.nn.Module],
    candidate: list[torch.nn.Module],
    inputs: list[torch.Tensor],
    *,
    compile: bool = True,
    repeats: int = 21,
    min_replay_ms: float = 2.0,
) -> SpeedResult:
    """Time baseline vs candidate (each a list of k weight copies fed the k `inputs`)."""
    # Every workload compiles fresh: Rotating.forward is one code object, and past Dynamo's
    # recompile limit it would silently run eager, timing something else than was asked.
    torch._dynamo.reset()
    sides = []
    for modules in (baseline, candidate):
        fn = Rotating(modules)
        if compile:
            fn = torch.compile(fn, dynamic=False)
        sides.append(_graphed(fn, inputs))
    (base_graph, base_compile), (cand_graph, cand_compile) = sides
    copies = len(inputs)
    # Enough replays per sample that one sample lasts >= min_replay_ms (event resolution, jitter).
    probe = max(_replay_ms(base_graph, 3), _replay_ms(cand_graph, 3), 1e-3)
    replays = max(1, math.ceil(min_replay_ms / probe))
    base_ms, cand_ms = [], []
    for r in range(repeats):
        # Alternate which side goes first so clock and thermal drift hit both equally.
        order = [(base_graph, base_ms), (cand_graph, cand_ms)]
        for graph, sink in order if r % 2 == 0 else reversed(order):
            sink.append(_replay_ms(graph, replays) / copies)
    base, cand = np.array(base_ms), np.array(cand_ms)
    ratios = base / cand
    low, high = bootstrap_median_interval(ratios)
    return SpeedResult(
        baseline_ms=float(np.median(base)),
        candidate_ms=float(np.median(cand)),
        speedup=float(np.median(ratios)),
        ci_low=low,
        ci_high=high,
        repeats=repeats,
        copies=copies,
        baseline_compile_s=base_compile,
        candidate_compile_s=cand_compile,
    )


def paired_host_speedup(baseline: Callable[[], object], candidate: Callable[[], object], *, repeats: int = 21, warmup: int = 3, min_sample_s: float = 0.05) -> SpeedResult:
    """For runtimes that synchronize on return (ONNX Runtime, TensorRT through its own stream
    sync): the same paired, interleaved protocol, timed with the host clock."""
    for _ in range(warmup):
        baseline()
        candidate()
    start = time.perf_counter()
    baseline()
    calls = max(1, math.ceil(min_sample_s / max(time.perf_counter() - start, 1e-6)))

    def sample(fn: Callable[[], object]) -> float:
        begin = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - begin) / calls * 1e3

    base_ms, cand_ms = [], []
    for r in range(repeats):
        order = [(baseline, base_ms), (candidate, cand_ms)]
        for fn, sink in order if r % 2 == 0 else reversed(order):
            sink.append(sample(fn))
    base, cand = np.array(base_ms), np.array(cand_ms)
    low, high = bootstrap_median_interval(base / cand)
    return SpeedResult(float(np.median(base)), float(np.median(cand)), float(np.median(base / cand)), low, high, repeats, 1, 0.0, 0.0)
