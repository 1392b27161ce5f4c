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
        "weight scales are per-tensor, expected per-channel",
    ),
    ProvenDefect("scales-2x", "weight scales off by 2x", "output_agreement", "min_sqnr_db measured"),
    ProvenDefect("zero-point-off-by-one", "weight zero point off by one in a symmetric recipe", "granularity_matches_recipe", "non-zero weight zero points"),
    ProvenDefect("scales-wrong-axis", "per-channel scales applied along the wrong axis", "output_agreement", "min_sqnr_db measured"),
    ProvenDefect("layer-left-float", "a Linear layer silently left unquantized", "every_weight_layer_quantized", "weight layers left unquantized"),
    # Single-layer defects: a layer gate names the layer; the failing output gate names where the error starts.
    ProvenDefect("one-layer-scales-x4", "one layer's weight scales x4 (layers.1.mlp.down_proj)", "layer_weight_sqnr", "worst layer layers.1.mlp.down_proj"),
    ProvenDefect("one-layer-permuted", "one layer's output channels permuted, codes with their scales (layers.0.mlp.up_proj)", "layer_weight_sqnr", "worst layer layers.0.mlp.up_proj"),
    ProvenDefect(
        "one-layer-coarse-codes",
        "one layer requantized with 4x too large scales: right values on a quarter of the int8 codes (outputs barely move)",
        "code_range_use",
        "worst layer layers.0.self_attn.o_proj",
    ),
    # Planted into a real torchao-int8-dynamic artifact (its state dict's Int8Tensor weights) of the outlier decoder.
    ProvenDefect("torchao-int8-per-tensor-scales", "torchao int8: per-tensor weight scales on a model with outlier channels (garbage text)", "task_metric", "min_token_agreement measured"),
    ProvenDefect(
        "torchao-int8-per-tensor-undeclared",
        "torchao int8: per-tensor weight scales while the manifest declares per-channel",
        "granularity_matches_recipe",
        "weight scales are per-tensor, expected per-channel",
    ),
    ProvenDefect("torchao-int8-one-layer-scales-x4", "torchao int8: one layer's weight scales x4 (layers.1.mlp.down_proj)", "layer_weight_sqnr", "worst layer layers.1.mlp.down_proj"),
    # Weight-layout mistakes.
    ProvenDefect("transposed-weights", "square weights stored as W instead of W^T", "layer_weight_sqnr", "min_layer_weight_sqnr_db measured"),
    # Calibration on the wrong data.
    ProvenDefect("calibration-tiny-range", "activation scales calibrated on data with a 16x smaller range", "activation_scales_plausible", "min_activation_scale_log2 measured"),
    # Recipe vs artifact: the manifest claims what the payload is not.
    ProvenDefect("fp32-graph-claiming-int8", "the fp32 graph shipped under an INT8 manifest", "every_weight_layer_quantized", "weight layers left unquantized"),
    ProvenDefect("two-layers-swapped", "two layers' weights of equal shape swapped (layers.0/1.mlp.up_proj)", "artifact_identity", "layer layers.0.mlp.up_proj holds the weights of layer layers.1.mlp.up_proj"),
    ProvenDefect(
        "qdq-axis-out-of-range",
        "a DequantizeLinear on an axis its tensor does not have (INC's GPT-2 bias: axis 1 of a 1-D tensor; ORT's optimizer hides it)",
        "graph_valid",
        "axis 2 of its 2-D input",
    ),
    ProvenDefect("int8-activations-expected-uint8", "activations quantized to int8 where the recipe expects uint8", "granularity_matches_recipe", "activations quantized to int8, expected uint8"),
    ProvenDefect("wrong-model", "the payload of another model (minilm-l6) under a tiny-llama manifest", "artifact loading", "this artifact is not model tiny-llama: graph inputs"),
    # INC FP8 statistics files that do not belong to the model.
    ProvenDefect("fp8-weight-amax-scaled", "FP8 statistics with weight amax 2x the weights' (numbers unchanged: INC uses its stored scales)", "recorded_statistics_match_model", "max_weight_amax_rel_err measured"),
    ProvenDefect("fp8-calibrated-on-other-data", "FP8 input amax 16x too small, scales derived from them", "recorded_statistics_match_model", "max_input_amax_ratio measured"),
    # The golden gate's own proof: the planted thing is the approved record, not the artifact, so
    # no other gate can see it (every artifact defect above is caught without a golden record).
    ProvenDefect("outputs-drifted", "outputs drifted from the approved golden record", "golden", "min_golden_sqnr_db measured"),
    ProvenDefect("future-token-leak", "a candidate that sees the next token (a dropped causal mask): perplexity far better than its reference's", "task_metric", "min_ppl_ratio_log measured"),
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


# Defects whose only catching gate may be golden: the record drifted, the artifact is fine.
GOLDEN_ONLY = {"outputs-drifted"}


def by_gate() -> dict[str, list[ProvenDefect]]:
    gates: dict[str, list[ProvenDefect]] = {}
    for entry in CATALOG:
        gates.setdefault(entry.gate, []).append(entry)
    return gates
