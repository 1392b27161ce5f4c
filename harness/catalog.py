"""What each gate is proven to catch: every entry is planted by a test in tests/ that asserts the
named gate fails with the named cause (tests/test_planted_defects.py keeps this list and the
tests identical). The report prints it, so a reader knows what a green gate rules out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProvenDefect:
    id: str
    defect: str
    gate: str  # the check (suite test name without test_) that fails
    cause: str  # text the failure message must contain


CATALOG: list[ProvenDefect] = [
    # Planted into a real inc-int8-qdq artifact of the outlier decoder, run through the suites.
    ProvenDefect("per-tensor-scales", "per-tensor weight scales on a model with outlier channels (garbage text)", "task_metric", "min_token_agreement measured"),
    ProvenDefect(
        "per-tensor-undeclared",
        "per-tensor weight scales while the manifest declares per-channel",
        "granularity_matches_recipe",
        "weight scales are per-tensor, recipe declares per-channel",
    ),
    ProvenDefect("scales-2x", "weight scales off by 2x", "output_agreement", "min_sqnr_db measured"),
    ProvenDefect("zero-point-off-by-one", "weight zero point off by one in a symmetric recipe", "scales_valid", "non-zero weight zero points"),
    ProvenDefect("scales-wrong-axis", "per-channel scales applied along the wrong axis", "output_agreement", "min_sqnr_db measured"),
    ProvenDefect("layer-left-float", "a Linear layer silently left unquantized", "every_weight_layer_quantized", "weight layers left unquantized"),
    ProvenDefect("outputs-drifted", "outputs drifted from the approved golden record", "golden", "min_golden_sqnr_db measured"),
    ProvenDefect("nondeterministic-runner", "a runner whose output changes between identical calls", "runner_deterministic", "property 'deterministic' violated"),
    # Planted quantizers driven through the property checks.
    ProvenDefect("missing-clamp", "FP8 cast without clamp (overflow to inf/NaN)", "properties", "property 'saturation instead of overflow' violated"),
    ProvenDefect("e5m2-declared-e4m3", "E5M2 data where E4M3 was declared", "properties", "float8_e4m3fn relative error bounded by its mantissa"),
    ProvenDefect("floor-rounding", "INT8 quantizer that truncates instead of rounding", "properties", "int round-trip within scale/2"),
    ProvenDefect("shared-scale", "one scale shared by all channels where per-channel was promised", "properties", "per-channel scales independent across channels"),
    ProvenDefect("batch-dependent-rows", "activation scale computed over the batch instead of per row", "properties", "row-wise quantization batch-invariant"),
    ProvenDefect("asymmetric-weights", "non-zero zero points or code -128 in symmetric INT8", "properties", "symmetric int8"),
    ProvenDefect("zero-scale", "a zero or non-finite scale", "properties", "positive finite scales"),
    # Bad artifacts: rejected before any number is produced.
    ProvenDefect("truncated-onnx", "a truncated ONNX file", "artifact loading", "not a valid ONNX model"),
    ProvenDefect("hash-mismatch", "a payload that does not match its manifest hash", "artifact loading", "sha256 mismatch"),
    # One runtime computing something else than another on the same artifact (CPU EP vs CUDA EP).
    ProvenDefect("runtimes-disagree", "two runtimes disagreeing on the same artifact", "cpu_and_cuda_runtimes_agree", "min_cross_sqnr_db"),
    # An INC FP8 artifact holding E5M2 while its manifest declares E4M3.
    ProvenDefect(
        "e5m2-artifact-declared-e4m3",
        "an FP8 artifact holding E5M2 stats where the manifest declares E4M3",
        "e4m3_at_least_as_accurate_as_e5m2",
        "e4m3_at_least_as_accurate_as_e5m2 gate failed",
    ),
    # GPU only (tests/test_speed_gate.py).
    ProvenDefect("slow-kernel", "a slow candidate kernel (dequantize to bf16, then matmul)", "speedup", "min_speedup measured"),
]


def by_gate() -> dict[str, list[ProvenDefect]]:
    gates: dict[str, list[ProvenDefect]] = {}
    for entry in CATALOG:
        gates.setdefault(entry.gate, []).append(entry)
    return gates
