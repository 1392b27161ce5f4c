"""Speed: each pathway's candidate against the bf16 baseline on Llama-3.1-8B layer shapes,
timed paired and interleaved in one process (see harness/measure/timing.py), plus the candidate's SQNR
against bf16 on the same workload."""

import copy

import pytest
import torch

from harness.judge.metrics import sqnr_db
from harness.measure import roofline
from harness.measure.timing import compile_cache_counts, copies_to_defeat_l2, paired_host_speedup, paired_speedup, progress, speed_context
from harness.run.session import cases, workloads


@workloads(thresholds=("min_speedup", "min_sqnr_db"))
def test_speedup(perf_case, gate, capsys):
    workload, pathway = perf_case.workload, perf_case.pathway
    progress(capsys, f"{workload.id} on {pathway.name}: compiling and timing")
    copies = copies_to_defeat_l2(workload.weight_count)  # sized for 1-byte weights: both sides rotate as many
    baselines = [workload.build(seed=i) for i in range(copies)]
    candidates = [pathway.quantize_module(copy.deepcopy(b)) for b in baselines]
    inputs = [workload.make_input(seed=i) for i in range(copies)]
    with torch.inference_mode():
        sqnr = sqnr_db(baselines[0](inputs[0]).float().cpu().numpy(), candidates[0](inputs[0]).float().cpu().numpy())

    cache_before = compile_cache_counts()
    result = paired_speedup(baselines, candidates, inputs)
    context = speed_context(pathway, candidates[0], cache_before)
    peak = roofline.session_peak(perf_case.harness.store.cache_dir)
    roof = roofline.achieved(workload.work(pathway.compute_dtype), result.candidate_ms / 1e3, peak, pathway.compute_dtype)
    base_roof = roofline.achieved(workload.work("bf16"), result.baseline_ms / 1e3, peak, "bf16")

    detail = (
        f"{workload.id}: bf16 {result.baseline_ms * 1e3:.1f} us, candidate {result.candidate_ms * 1e3:.1f} us, "
        f"speedup {result.speedup:.3f} (95% CI {result.ci_low:.3f}-{result.ci_high:.3f}, {result.repeats} paired repeats, "
        f"{result.copies} weight copies); roofline bf16 {roofline.describe(base_roof)}, candidate {roofline.describe(roof)}; "
        f"compile {result.baseline_compile_s:.1f}s / {result.candidate_compile_s:.1f}s ({context['compile_cache']}); kernel {context['kernel_path'] or 'n/a'}"
    )
    progress(capsys, detail)
    gate.check(
        perf_case,
        {"min_speedup": result.speedup, "min_sqnr_db": sqnr, **roofline.peak_gate(perf_case, roof)},
        detail,
        extra={"timing": result.as_dict(), "speed_context": context, "shape": {"m": workload.m, "k": workload.k, "n": workload.n}, "roofline": roof, "baseline_roofline": base_roof},
        judge={"min_speedup": result.ci_high},
    )


@pytest.mark.perf
@cases(thresholds=lambda pathway, model, kind: ("min_speedup",) if kind == "cuda" and getattr(pathway, "float_baseline", None) else ())
def test_runner_speedup(case, gate):
    """A whole default model on the pathway's runner against the float model on the same runner."""
    baseline_for = getattr(case.pathway, "float_baseline", None)
    if baseline_for is None:
        pytest.skip(f"{case.pathway.name} has no float baseline on its runner (its speed is gated on the Llama-3.1-8B shapes)")
    if case.device.kind != "cuda":
        pytest.skip("runner speed is gated on GPU runners; CPU timing on shared CI cores is no release signal")
    baseline, inputs = baseline_for(case.model, case.device), case.model.eval_inputs()
    result = paired_host_speedup(lambda: baseline(inputs), lambda: case.runner(inputs))
    detail = (
        f"{case.model.id} on {case.runner.describe()}: float {result.baseline_ms:.3f} ms, quantized {result.candidate_ms:.3f} ms, "
        f"speedup {result.speedup:.3f} (95% CI {result.ci_low:.3f}-{result.ci_high:.3f})"
    )
    print(detail)
    gate.check(case, {"min_speedup": result.speedup}, detail, extra={"timing": result.as_dict()}, judge={"min_speedup": result.ci_high})
