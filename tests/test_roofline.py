"""The CPU-checkable parts of the roofline and the model-level perf workloads: spec lookup, the
work arithmetic (checked against torch's FLOP counter on a tiny Llama), compile-cache keying, the
workload tables and the skip on machines without a GPU."""

import json

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.utils.flop_counter import FlopCounterMode

from harness.judge.thresholds import load_profile
from harness.measure import roofline
from harness.measure.timing import GreedyDecoder, allow_recompiles, compile_cache_key, compile_regions, configure_compile_caches, quantize_except_head
from harness.models import llama8b_perf as perf

TINY = {"hidden_size": 64, "intermediate_size": 160, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500}


@pytest.fixture(scope="module")
def tiny_llama():
    return perf.build_causal_lm(perf.llama_config(2, attn_implementation="eager", **TINY), device="cpu")


@pytest.mark.parametrize(
    "name, spec, bf16, fp8, gbps",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989, 1979, 3350),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756, 1513, 2000),
        ("NVIDIA H100 NVL", "H100 NVL", 835, 1671, 3900),
        ("NVIDIA H200", "H200 SXM", 989, 1979, 4800),
        ("NVIDIA GeForce RTX 5090", "RTX 5090", 209.5, 419, 1790),
    ],
)
def test_spec_table_matches_gpu_names(name, spec, bf16, fp8, gbps):
    peak = roofline.spec_for(name)
    assert (peak.name, peak.tflops["bf16"], peak.tflops["fp8"], peak.gbps) == (spec, bf16, fp8, gbps)


def test_unknown_gpu_uses_its_cached_measurement(tmp_path):
    assert roofline.spec_for("Tesla T4") is None
    cache = tmp_path / "peak.json"
    cache.write_text(json.dumps({"name": "Tesla T4", "tflops": {"bf16": 60.0}, "gbps": 300.0, "source": "measured"}))
    assert roofline.device_peak("Tesla T4", cache) == roofline.Peak("Tesla T4", {"bf16": 60.0}, 300.0, "measured")
    assert roofline.device_peak("NVIDIA H100 80GB HBM3", cache).source == "spec"  # a known GPU never reads it


def test_linear_roofline_arithmetic():
    h100 = roofline.spec_for("NVIDIA H100 80GB HBM3")
    big = roofline.linear_work(4096, 4096, 14336, "fp8")
    assert big.flops == 2 * 4096 * 4096 * 14336
    assert big.bytes == 4096 * 14336 + 4 * 14336 + 2 * (4096 * 4096 + 4096 * 14336)
    roof = roofline.achieved(big, big.flops / 1000e12, h100, "fp8")  # 1000 TFLOP/s
    assert roof["bound"] == "compute" and roof["peak_tflops"] == 1979
    assert roof["compute_fraction"] == pytest.approx(1000 / 1979) == roof["peak_fraction"]
    one = roofline.linear_work(1, 4096, 14336, "bf16")  # decode: reads 117 MB of weights for 117 MFLOP
    roof = roofline.achieved(one, one.bytes / 2000e9, h100, "bf16")
    assert roof["bound"] == "memory" and roof["peak_fraction"] == pytest.approx(2000 / 3350)
    assert roofline.achieved(one, 1e-3, roofline.spec_for("A100-SXM4-80GB"), "fp8")["peak_tflops"] == 312  # no FP8 units


def test_mlp_block_work_counts_three_linears_and_the_block_io():
    block = perf.PerfWorkload("llama8b-mlp", "block", 16, 4096, 14336)
    work = block.work("bf16")
    assert work.flops == 2 * 16 * 3 * 4096 * 14336
    assert work.bytes == 3 * 4096 * 14336 * 2 + 2 * 2 * 16 * 4096


def test_decoder_work_matches_torch_flop_counter(tiny_llama):
    shape = perf.decoder_shape(tiny_llama)
    assert shape == roofline.DecoderShape(layers=2, heads=4, kv_heads=2, head_dim=16, hidden=64, layer_linear_params=2 * (64 * (64 + 2 * 32 + 64) + 3 * 64 * 160), lm_head_params=64 * 500)
    prefill = perf.ModelPerfWorkload("tiny", "prefill", 2, 12)
    ids = prefill.prompt(500, device="cpu")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        tiny_llama(ids, use_cache=False, logits_to_keep=1)
    # Eager attention multiplies the whole 12 x 12 square; we count the causal half (what a causal kernel must do).
    masked_half = 4 * shape.layers * shape.heads * shape.head_dim * 2 * (12 * 12 - 12 * 13 // 2)
    assert counter.get_total_flops() == prefill.work(shape, "bf16").flops + masked_half

    decode = perf.ModelPerfWorkload("tiny", "decode", 2, 12, steps=4)
    decoder = GreedyDecoder(tiny_llama, ids, decode.max_cache_len)
    with FlopCounterMode(display=False) as counter:
        decoder.step()
    assert counter.get_total_flops() == decode.work(shape, "bf16").flops


def test_decoder_bytes_are_weights_once_plus_kv_cache():
    shape = roofline.DecoderShape(layers=32, heads=32, kv_heads=8, head_dim=128, hidden=4096, layer_linear_params=6_979_321_856, lm_head_params=4096 * 128256)
    bf16 = roofline.decoder_work(shape, batch=8, query=1, context=576, weight_dtype="bf16")
    fp8 = roofline.decoder_work(shape, batch=8, query=1, context=576, weight_dtype="fp8")
    kv = 2 * 32 * 8 * 576 * 8 * 128 * 2
    assert bf16.bytes == 6_979_321_856 * 2 + 4096 * 128256 * 2 + kv + 8 * 4096 * 2
    assert bf16.bytes - fp8.bytes == pytest.approx(6_979_321_856 - 4 * 6_979_321_856 / 4096)
    assert roofline.achieved(fp8, 5e-3, roofline.spec_for("H100 80GB HBM3"), "fp8")["bound"] == "memory"


@pytest.mark.parametrize("attention", ["eager", "sdpa"])  # sdpa: what the GPU run uses
def test_greedy_decoder_reproduces_full_forward_and_rewinds(attention):
    tiny_llama = perf.build_causal_lm(perf.llama_config(2, attn_implementation=attention, **TINY), device="cpu")
    prompt = perf.ModelPerfWorkload("tiny", "decode", 2, 10, 5).prompt(500, device="cpu")
    decoder = GreedyDecoder(tiny_llama, prompt, 15)
    tokens = [decoder.token.clone()]
    for _ in range(4):
        decoder.step()
        tokens.append(decoder.token.clone())
    with torch.inference_mode():
        logits = tiny_llama(torch.cat([prompt, *tokens], 1), use_cache=False).logits
    assert torch.equal(torch.cat(tokens, 1), logits[:, 9:-1].argmax(-1))
    decoder.rewind()
    decoder.step()
    assert torch.equal(decoder.token, tokens[1])  # every timed sample decodes the same tokens


class _Wrapped(torch.nn.Module):
    """What a quantizer puts in a Linear's place (here it computes the same)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.inner = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_regional_compilation_and_head_exclusion(tiny_llama):
    import copy

    model = quantize_except_head(lambda m: _replace_linears(m, _Wrapped), copy.deepcopy(tiny_llama))
    assert type(model.lm_head) is torch.nn.Linear and isinstance(model.model.layers[0].mlp.up_proj, _Wrapped)
    fresh = copy.deepcopy(tiny_llama)
    counter = CompileCounter()
    assert compile_regions(fresh, backend=counter) == 2 * (1 + 4)  # per layer: the MLP and q, k, v, o; never lm_head
    assert fresh.lm_head._compiled_call_impl is None and type(fresh.lm_head) is torch.nn.Linear
    torch._dynamo.reset()
    allow_recompiles()
    ids = perf.ModelPerfWorkload("tiny", "prefill", 1, 8).prompt(500, device="cpu")
    with torch.inference_mode():
        fresh(ids, use_cache=False, logits_to_keep=1)
    assert counter.frame_count == 3  # MLP, 64->64 (q, o), 64->32 (k, v): both layers reuse them
    decoder = GreedyDecoder(fresh, ids, 12)  # the prompt runs eager: nothing compiled for its shape
    assert counter.frame_count == 3
    decoder.step()
    assert counter.frame_count == 6  # one token: the same three blocks, once more; no per-layer graphs


def _replace_linears(module, wrap):
    for name, child in module.named_children():
        setattr(module, name, wrap(child) if isinstance(child, torch.nn.Linear) else _replace_linears(child, wrap))
    return module


def test_compile_cache_is_keyed_by_gpu_torch_cuda_and_driver(tmp_path, monkeypatch):
    assert compile_cache_key("NVIDIA H100 80GB HBM3") != compile_cache_key("NVIDIA H200")
    key = compile_cache_key("NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert compile_cache_key("NVIDIA H100 80GB HBM3") != key
    monkeypatch.undo()
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    path = configure_compile_caches(tmp_path, "NVIDIA H100 80GB HBM3")
    assert path.is_dir() and path.parent == tmp_path / "inductor" / compile_cache_key("NVIDIA H100 80GB HBM3")
    import os

    assert os.environ["TRITON_CACHE_DIR"] == str(path.parent / "triton")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert configure_compile_caches(tmp_path, "x") == tmp_path / "mine"  # the user's setting wins


def test_workload_tables_and_profile_thresholds(monkeypatch):
    monkeypatch.delenv("QCONFORM_PERF_FULL", raising=False)
    assert sorted({w.m for w in perf.kernel_workloads() if w.family == "llama8b-linear"}) == [1, 128, 4096]
    assert len(perf.kernel_workloads(full=True)) == len(perf.WORKLOADS)
    h100 = load_profile("h100")
    for workload in perf.kernel_workloads(full=True) + perf.model_workloads():
        assert h100.threshold("min_speedup", *workload.table("torchao-fp8-rowwise")).value > 0
    assert [w.id for w in perf.model_workloads()] == [f"llama-3.1-8b-{p}" for p in ("prefill-1x2048", "prefill-8x2048", "decode-1x512", "decode-8x512")]
    monkeypatch.setenv("QCONFORM_PERF_PREFILL", "4x1024")
    monkeypatch.setenv("QCONFORM_PERF_DECODE", "16x256")
    monkeypatch.setenv("QCONFORM_PERF_DECODE_STEPS", "32")
    assert [(w.phase, w.batch, w.tokens, w.steps) for w in perf.model_workloads()] == [("prefill", 4, 1024, 0), ("decode", 16, 256, 32)]
    assert perf.get_workload("llama-3.1-8b-decode-16x256").table("p") == ("p", "llama-3.1-8b", "decode-16x256")
    monkeypatch.setenv("QCONFORM_PERF_LAYERS", "4")
    assert perf.llama_config(perf.perf_layers()).num_hidden_layers == 4 and perf.llama_config().hidden_size == 4096


def test_registered_model_gets_the_same_points(monkeypatch):
    monkeypatch.setattr(perf, "PERF_MODELS", dict(perf.PERF_MODELS))
    perf.register_perf_model("my-lm", lambda: None)
    assert [w.id for w in perf.model_workloads() if w.model == "my-lm"] == ["my-lm-prefill-1x2048", "my-lm-prefill-8x2048", "my-lm-decode-1x512", "my-lm-decode-8x512"]
    with pytest.raises(ValueError, match="twice"):
        perf.register_perf_model("my-lm", lambda: None)


def test_model_ids_with_dots_stay_one_toml_key():
    import tomllib

    from harness.judge.thresholds import toml_table

    table = toml_table(("torchao-fp8-rowwise", "llama-3.1-8b", "decode-8x512"))
    assert tomllib.loads(f"[{table}]\nmin_speedup = 1.0\n")["torchao-fp8-rowwise"]["llama-3.1-8b"]["decode-8x512"] == {"min_speedup": 1.0}


def test_model_speed_suite_skips_without_gpu(run_suites):
    if torch.cuda.is_available():
        pytest.skip("checks the skip on machines without a GPU")
    run = run_suites("--pathways=torchao-fp8-rowwise", suites=("test_model_speed.py",))
    # Named and skipped: nothing was gated, which is NOT GATED (exit 6), never a pass.
    assert run.returncode == 6 and run.summary["verdict"] == "NOT GATED", run.output
    assert "8 skipped" in run.output and "needs a CUDA GPU" in run.output, run.output  # synthetic 8B: 4 points; own models: 2 x 2
