"""Speed of whole causal LMs: each pathway's candidate against the bf16 model, prefill and decode,
paired and interleaved in one process (harness/measure/timing.py), with the roofline of both sides.

The model is built once per (model, pathway) and kept for all of that pair's points; its MLP and
projection blocks are compiled regionally (harness/measure/timing.py compile_regions), so each new shape
compiles one graph per block type, not per layer."""

import copy
import os
import time

import pytest
import torch

from harness.measure import roofline
from harness.measure.timing import (
    TEST01_PROMPTS,
    allow_recompiles,
    compile_cache_counts,
    compile_regions,
    compiled_regions,
    decode_sampler,
    interleaved,
    kernel_table,
    prefill_sampler,
    progress,
    quantize_except_head,
    speed_context,
    speed_result,
    timed_path_check,
)
from harness.models.llama8b_perf import PERF_MODELS, PUBLISHED, WHY_DIFFERENT, decoder_shape, own_points, perf_layers
from harness.run.references import load_beside
from harness.run.session import cases, workloads

REPEATS = int(os.environ.get("QCONFORM_PERF_REPEATS", "") or 15)
_PAIRS: dict[tuple[str, str], tuple] = {}  # one (baseline, candidate, shape) on the GPU at a time
_OWN_BASELINE: dict[str, torch.nn.Module] = {}  # model id -> its bf16 model, for both phases of its cases


def _pair(model_id: str, pathway, capsys) -> tuple:
    key = (model_id, pathway.name)
    if key not in _PAIRS:
        _PAIRS.clear()
        torch.cuda.empty_cache()
        start = time.perf_counter()
        baseline = PERF_MODELS[model_id]()
        shape = decoder_shape(baseline)
        candidate = quantize_except_head(pathway.quantize_module, copy.deepcopy(baseline))
        for model in (baseline, candidate):
            compile_regions(model)
        progress(capsys, f"built {model_id} ({shape.layers} layers) and its {pathway.name} candidate in {time.perf_counter() - start:.1f}s, {torch.cuda.memory_allocated() / 2**30:.1f} GiB on the GPU")
        _PAIRS[key] = (baseline, candidate, shape)
    return _PAIRS[key]


@pytest.fixture(scope="module", autouse=True)
def _free_models():
    yield
    _PAIRS.clear()  # about 24 GiB for the 8B pair: not held through the later suites
    _OWN_BASELINE.clear()
    torch.cuda.empty_cache()


def _time_point(baseline, candidate, workload, shape, pathway, harness):
    """(SpeedResult, roofline of both sides, what could change the number) of one prefill or decode
    point, each side's unit captured in a CUDA graph, paired and interleaved; the point's graphs and
    KV caches are released before it returns."""
    cache_before = compile_cache_counts()
    inputs = workload.prompt(baseline.config.vocab_size)
    if workload.phase == "prefill":
        base_side, cand_side = (prefill_sampler(model, inputs) for model in (baseline, candidate))
    else:
        base_side, cand_side = (decode_sampler(model, inputs, workload.steps) for model in (baseline, candidate))
    base, cand = interleaved(base_side.sample, cand_side.sample, REPEATS)
    result = speed_result(base, cand, baseline_compile_s=base_side.compile_s, candidate_compile_s=cand_side.compile_s)
    peak = roofline.session_peak(harness.store.cache_dir)
    roof = {
        "baseline": roofline.achieved(workload.work(shape, "bf16"), result.baseline_ms / 1e3, peak, "bf16"),
        "candidate": roofline.achieved(workload.work(shape, pathway.compute_dtype), result.candidate_ms / 1e3, peak, pathway.compute_dtype),
    }
    context = speed_context(pathway, candidate, cache_before)
    # Eagerly dispatched (no CUDA graph), a side whose host time exceeds its GPU time is host-bound:
    # its speed would then be the host's, which is why the timed unit is a graph replay.
    context["host_enqueue_ms"] = {"baseline": base_side.enqueue_ms, "candidate": cand_side.enqueue_ms}
    context["host_bound_if_dispatched"] = [side for side, host, gpu in (("baseline", base_side.enqueue_ms, result.baseline_ms), ("candidate", cand_side.enqueue_ms, result.candidate_ms)) if host > gpu]
    del base_side, cand_side
    return result, roof, context


def _context_words(context: dict) -> str:
    """The speed context in one clause for a record's detail line."""
    gpu = context["gpu"]
    clocks = f"SM {gpu['clocks.sm']} of {gpu['clocks.max.sm']}, {gpu['power.draw']} of {gpu['power.limit']}, clock events: {gpu['clock_events']}" if gpu else "GPU clocks unknown"
    host = ", ".join(context["host_bound_if_dispatched"]) or "neither side"
    return f"kernel {context['kernel_path'] or 'n/a'}; compile cache {context['compile_cache']}; {clocks}; host-bound if dispatched without CUDA graphs: {host}"


@pytest.mark.perf
@workloads(model_level=True, thresholds=("min_speedup",))
def test_model_speedup(perf_case, gate, capsys):
    workload, pathway = perf_case.workload, perf_case.pathway
    allow_recompiles()
    baseline, candidate, shape = _pair(workload.model, pathway, capsys)
    progress(capsys, f"{workload.id} on {pathway.name}: compiling and timing")
    result, roof, context = _time_point(baseline, candidate, workload, shape, pathway, perf_case.harness)
    unit = "forward" if workload.phase == "prefill" else "step"
    tokens_per_s = {side: workload.tokens_per_unit() / (ms / 1e3) for side, ms in (("baseline", result.baseline_ms), ("candidate", result.candidate_ms))}
    detail = (
        f"{workload.id} ({shape.layers} layers): bf16 {result.baseline_ms:.2f} ms/{unit} ({tokens_per_s['baseline']:.0f} tok/s), "
        f"candidate {result.candidate_ms:.2f} ms/{unit} ({tokens_per_s['candidate']:.0f} tok/s), speedup {result.speedup:.3f} "
        f"(95% CI {result.ci_low:.3f}-{result.ci_high:.3f}, {result.repeats} paired repeats; torchao publishes {PUBLISHED[workload.phase]}x with vLLM); "
        f"roofline bf16 {roofline.describe(roof['baseline'])}, candidate {roofline.describe(roof['candidate'])}; "
        f"compile {result.baseline_compile_s:.1f}s / {result.candidate_compile_s:.1f}s; {_context_words(context)}"
    )
    progress(capsys, detail)
    gate.check(
        perf_case,
        {"min_speedup": result.speedup, **roofline.peak_gate(perf_case, roof["candidate"])},
        detail,
        extra={
            "timing": result.as_dict(),
            "speed_context": context,
            "roofline": roof["candidate"],
            "baseline_roofline": roof["baseline"],
            "tokens_per_s": tokens_per_s,
            "workload": {"phase": workload.phase, "batch": workload.batch, "tokens": workload.tokens, "decode_steps": workload.steps, "layers": shape.layers, "QCONFORM_PERF_LAYERS": perf_layers()},
            "published": {"speedup": PUBLISHED[workload.phase], "runtime": "vLLM, torchao README, H100", "why_ours_differ": WHY_DIFFERENT},
        },
        judge={"min_speedup": result.ci_high},
    )


# -- the team's own model: its bf16 checkpoint against its candidate artifact ---------------------


def _own_thresholds(pathway, model, kind) -> tuple[str, ...]:
    timed = kind == "cuda" and pathway.measures_speed and getattr(model, "kind", None) == "causal-lm"
    return ("min_prefill_speedup", "min_decode_speedup") if timed else ()


@pytest.mark.perf
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@cases(where=lambda pathway, kind: kind == "cuda" and pathway.measures_speed, thresholds=_own_thresholds)
def test_own_model_speedup(case, phase, gate, capsys):
    """The team's candidate artifact (the one the accuracy suite gated) against the team's bf16 model,
    at the model's prefill and decode points (harness/models/llama8b_perf.own_points), paired and
    interleaved. First, MLPerf's TEST01: the timed path (compiled regions, static KV cache) must
    give the accuracy run's greedy tokens, or the speed belongs to another computation."""
    model = case.model
    if getattr(model, "model_kind", None) is None or model.kind != "causal-lm" or "generated_ids" not in case.outputs:
        pytest.skip(f"model {model.id}: own-model speed times a transformers causal LM checkpoint with greedy generation")
    allow_recompiles()
    candidate = case.runner.module.model  # the transformers model inside the case's runner
    if model.id not in _OWN_BASELINE:
        _OWN_BASELINE.clear()
        torch.cuda.empty_cache()
        _OWN_BASELINE[model.id] = load_beside(candidate, lambda: model.load_module(case.precision).model)  # what quantization left alone, held once
    baseline = _OWN_BASELINE[model.id]
    workload = own_points(model, baseline.config)[phase]
    shape = decoder_shape(baseline)
    test01 = getattr(case, "_qc_test01", None)  # once per case, for both phases
    if test01 is None:
        prompts = model.model_kind.prompt_ids[:TEST01_PROMPTS]
        reference_tokens = case.reference["generated_ids"][: len(prompts)]
        accuracy_top1 = model.model_kind.forced_top1(case.runner, reference_tokens, prompts)  # the accuracy run's own path
    with compiled_regions(baseline), compiled_regions(candidate):
        if test01 is None:
            test01 = case._qc_test01 = timed_path_check(candidate, prompts, case.outputs["generated_ids"][: len(prompts)], "cuda", reference_tokens, accuracy_top1)
        agrees, test01_note = test01
        if not agrees:
            pytest.fail(f"the timed candidate does not compute what the accuracy run computed: {test01_note}", pytrace=False)
        progress(capsys, f"{model.id} {workload.point} on {case.pathway.name}: compiling and timing")
        result, roof, context = _time_point(baseline, candidate, workload, shape, case.pathway, case.harness)
    unit = "forward" if phase == "prefill" else "step"
    detail = (
        f"{model.id} {workload.point} ({shape.layers} layers): bf16 {result.baseline_ms:.2f} ms/{unit}, candidate {result.candidate_ms:.2f} ms/{unit}, "
        f"speedup {result.speedup:.3f} (95% CI {result.ci_low:.3f}-{result.ci_high:.3f}, {result.repeats} paired repeats); "
        f"roofline bf16 {roofline.describe(roof['baseline'])}, candidate {roofline.describe(roof['candidate'])}; {_context_words(context)}; {test01_note}"
    )
    extra = {"timing": result.as_dict(), "speed_context": context, "roofline": roof["candidate"], "baseline_roofline": roof["baseline"], "workload": {"phase": phase, "batch": workload.batch, "tokens": workload.tokens, "decode_steps": workload.steps}}
    if phase == "decode":  # what limits a decode step: its Linear shapes at M = batch, kernel against kernel
        kernels = kernel_table(baseline, candidate, workload.batch)
        extra["kernels"] = kernels
        slow = [f"{k['name']} {k['speedup']:.2f}x" for k in kernels if k["speedup"] < 1.0]
        detail += f"; kernels at M={workload.batch}: " + (", ".join(slow) + " slower than bf16" if slow else "none slower than bf16")
    progress(capsys, detail)
    key = f"min_{phase}_speedup"
    gate.check(case, {key: result.speedup}, detail, extra=extra, judge={key: result.ci_high})
