"""Speed: each pathway's candidate against the bf16 baseline on Llama-3.1-8B layer shapes,
timed paired and interleaved in one process (see harness/timing.py), plus the candidate's SQNR
against bf16 on the same workload."""

import copy

import torch

from harness.metrics import sqnr_db
from harness.timing import copies_to_defeat_l2, paired_speedup


def test_speedup(perf_case, gate):
    workload, pathway = perf_case.workload, perf_case.pathway
    copies = copies_to_defeat_l2(workload.weight_count)  # sized for 1-byte weights: both sides rotate as many
    baselines = [workload.build(seed=i) for i in range(copies)]
    candidates = [pathway.quantize_module(copy.deepcopy(b)) for b in baselines]
    inputs = [workload.make_input(seed=i) for i in range(copies)]
    with torch.inference_mode():
        sqnr = sqnr_db(baselines[0](inputs[0]).float().cpu().numpy(), candidates[0](inputs[0]).float().cpu().numpy())

    result = paired_speedup(baselines, candidates, inputs)

    detail = (
        f"{workload.id}: bf16 {result.baseline_ms * 1e3:.1f} us, candidate {result.candidate_ms * 1e3:.1f} us, "
        f"speedup {result.speedup:.3f} (95% CI {result.ci_low:.3f}-{result.ci_high:.3f}, {result.repeats} paired repeats, "
        f"{result.copies} weight copies); compile {result.baseline_compile_s:.1f}s / {result.candidate_compile_s:.1f}s"
    )
    print(detail)
    gate.check(
        perf_case,
        {"min_speedup": result.speedup, "min_sqnr_db": sqnr},
        detail,
        extra={"timing": result.as_dict(), "shape": {"m": workload.m, "k": workload.k, "n": workload.n}},
        judge={"min_speedup": result.ci_high},
    )
