"""Properties of each pathway's quantizers and kernels, driven by hypothesis: round-trip error
bounds, saturation, symmetric ranges, positive finite scales, per-channel independence, row-wise
batch invariance, determinism, odd shapes; zeros, subnormals, outliers and non-finite values.

The bounded `ci` hypothesis profile is the default; `--hypothesis-profile=thorough` digs deeper."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness.core import Device
from harness.measure.properties import (
    FP8_FORMATS,
    check_channels_independent,
    check_deterministic,
    check_fp8_roundtrip,
    check_int_roundtrip,
    check_int_symmetric,
    check_positive_finite_scales,
    check_rows_independent,
    check_saturates,
)
from harness.pathways.base import get_pathway
from harness.run.session import cases


def _needs(pathway_name: str, device: Device, *modules: str):
    """Mark a property with its pathway, and skip it with the pathway's own reason."""
    import importlib.util

    pathway = get_pathway(pathway_name)
    reason = next((f"{pathway_name}: Python package {m!r} is not installed" for m in modules if importlib.util.find_spec(m) is None), None)
    marks = [getattr(pytest.mark, pathway.marker)]
    if device.kind == "cuda":
        marks.append(pytest.mark.gpu)
        detected = Device.detect()
        reason = reason or pathway.unavailable(detected if detected.kind == "cuda" else device)
    return [*marks, pytest.mark.skipif(reason is not None, reason=reason or "")]


CPU, CUDA = Device("cpu", "cpu"), Device("cuda", "absent")

# Values from every regime: exact zeros, subnormals, ordinary values, outliers.
ELEMENTS = st.one_of(
    st.just(0.0),
    st.floats(-float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).tiny), width=32, allow_subnormal=True),  # subnormals
    st.floats(-8.0, 8.0, width=32),
    st.floats(-3e4, 3e4, width=32),
)
ODD_SHAPES = st.tuples(st.integers(1, 9), st.integers(1, 17))  # includes 1x1 and non-multiples of 8/16
MATRICES = ODD_SHAPES.flatmap(lambda shape: arrays(np.float32, shape, elements=ELEMENTS))


# -- inc-int8-qdq: INC's weight quantizer and the ONNX Runtime QDQ kernels it runs on --------


def inc_quantize(x: np.ndarray, axis: int = 1):
    """INC's per-channel symmetric INT8 weight quantizer (MatMul weights: one scale per column)."""
    import onnx
    from onnx_neural_compressor.algorithms.utility import quantize_data_per_channel

    _, _, zero_point, scale, q = quantize_data_per_channel(x, axis, onnx.TensorProto.INT8, True)
    return q, scale.ravel(), zero_point.ravel()


def ort_qdq(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None):
    """Run x through QuantizeLinear -> DequantizeLinear on ONNX Runtime's CPU EP."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    kwargs = {} if axis is None else {"axis": axis}
    qtype = TensorProto.INT8 if zero_point.dtype == np.int8 else TensorProto.UINT8
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **kwargs), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **kwargs)],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("q", qtype, list(x.shape)), helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        [numpy_helper.from_array(np.asarray(scale, np.float32), "s"), numpy_helper.from_array(zero_point, "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    q, y = session.run(None, {"x": x})
    return q, y


INC = _needs("inc-int8-qdq", CPU, "onnx_neural_compressor", "onnxruntime")


@given(x=MATRICES)
def test_inc_int8_weight_quantizer(x):
    q, scale, zero_point = inc_quantize(x)
    check_positive_finite_scales(scale)
    check_int_symmetric(q, zero_point)
    check_int_roundtrip(x, q, scale, zero_point, axis=1, qmin=-127, qmax=127)
    check_deterministic(lambda: inc_quantize(x))


@given(x=MATRICES, data=st.data())
def test_inc_int8_channels_independent(x, data):
    channel = data.draw(st.integers(0, x.shape[1] - 1), label="channel")
    check_channels_independent(lambda a: inc_quantize(a)[:2], x, axis=1, channel=channel)


@given(x=MATRICES)
def test_ort_int8_qdq_kernel(x):
    """The kernel the pathway executes: round-trip within scale/2 in range, saturation outside."""
    _, scale, zero_point = inc_quantize(x)
    zp = zero_point.astype(np.int8)
    q, y = ort_qdq(x, scale, zp, axis=1)
    check_int_roundtrip(x, q, scale, zp, axis=1, qmin=-128, qmax=127)
    _, y_big = ort_qdq(x * np.float32(50.0), scale, zp, axis=1)
    check_saturates(y_big, 127 * scale[None, :], -128 * scale[None, :])


@given(x=MATRICES)
def test_ort_uint8_activation_kernel(x):
    """Asymmetric per-tensor uint8 activations, as INC calibrates them: round trip and saturation."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((high - low) / 255 if high > low else 1.0)
    zero_point = np.uint8(np.clip(np.round(-low / scale), 0, 255))
    q, y = ort_qdq(x, scale, zero_point, axis=None)
    check_int_roundtrip(x, q, scale, zero_point, axis=None, qmin=0, qmax=255)
    _, y_big = ort_qdq(x * np.float32(50.0), scale, zero_point, axis=None)
    check_saturates(y_big, (255 - float(zero_point)) * scale, -float(zero_point) * scale)


def test_ort_int8_non_finite_inputs():
    """inf saturates to the extremes; NaN is *not* propagated by QDQ (ORT maps it to qmin), so
    NaN must be caught on the float side: the accuracy gates score non-finite outputs as failures."""
    x = np.array([[np.inf, -np.inf, np.nan, 0.0]], np.float32)
    _, y = ort_qdq(x, np.float32(0.5), np.int8(0), axis=None)
    assert y.tolist() == [[63.5, -64.0, -64.0, 0.0]]


for _test in (test_inc_int8_weight_quantizer, test_inc_int8_channels_independent, test_ort_int8_qdq_kernel, test_ort_uint8_activation_kernel, test_ort_int8_non_finite_inputs):
    for _mark in INC:
        _mark(_test)


# -- torchao-fp8-rowwise: the rowwise FP8 quantizer (CPU) and the Float8 linear (GPU) --------


def fp8_rowwise(x: np.ndarray, fmt: str, device: str = "cpu"):
    """torchao's rowwise FP8 quantizer, exactly as Float8Tensor.from_hp calls it."""
    import torch
    from torchao.quantization.quant_primitives import _choose_scale_float8, _dequantize_affine_float8, _quantize_affine_float8

    dtype = getattr(torch, fmt)
    t = torch.from_numpy(x).to(device)
    scale = _choose_scale_float8(t, block_size=[1, x.shape[1]], float8_dtype=dtype)
    q = _quantize_affine_float8(t, scale, dtype)
    dq = _dequantize_affine_float8(q, scale, torch.float32)
    return q.float().cpu().numpy(), scale.cpu().numpy(), dq.cpu().numpy()


# Float8 linears need K % 16 == 0, so K is a multiple of 16; the token count M stays odd-shaped.
FP8_SHAPES = st.tuples(st.integers(1, 9), st.sampled_from([16, 32, 48]))
NONZERO_ROWS = FP8_SHAPES.flatmap(lambda shape: arrays(np.float32, shape, elements=ELEMENTS)).filter(lambda a: (np.abs(a).max(axis=1) > 1e-30).all())
FORMATS = pytest.mark.parametrize("fmt", sorted(FP8_FORMATS))


@FORMATS
@given(x=NONZERO_ROWS)
def test_torchao_fp8_rowwise_quantizer(fmt, x):
    q, scale, dq = fp8_rowwise(x, fmt)
    check_positive_finite_scales(scale)
    check_fp8_roundtrip(x, dq, scale, fmt)
    check_deterministic(lambda: fp8_rowwise(x, fmt)[0])


@FORMATS
@given(x=NONZERO_ROWS)
def test_torchao_fp8_saturates_at_format_max(fmt, x):
    import torch
    from torchao.quantization.quant_primitives import _dequantize_affine_float8, _quantize_affine_float8

    _, scale, _ = fp8_rowwise(x, fmt)
    dtype, limit = getattr(torch, fmt), FP8_FORMATS[fmt]["max"]
    q = _quantize_affine_float8(torch.from_numpy(x) * 100, torch.from_numpy(scale), dtype)  # 100x past the calibrated range
    check_saturates(_dequantize_affine_float8(q, torch.from_numpy(scale), torch.float32).numpy(), limit * scale, -limit * scale)


@given(rows=NONZERO_ROWS, data=st.data())
def test_torchao_fp8_rows_independent(rows, data):
    other = data.draw(arrays(np.float32, (data.draw(st.integers(1, 5)), rows.shape[1]), elements=ELEMENTS), label="other rows")
    check_rows_independent(lambda a: np.concatenate([fp8_rowwise(a, "float8_e4m3fn")[0], fp8_rowwise(a, "float8_e4m3fn")[1]], axis=1), rows, other)


@pytest.mark.xfail(strict=True, reason="torchao 0.18 _choose_scale_float8 has no epsilon: an all-zero row gets scale 0 and quantizes to NaN")
def test_torchao_fp8_zero_row_has_positive_scale():
    _, scale, dq = fp8_rowwise(np.zeros((2, 16), np.float32), "float8_e4m3fn")
    check_positive_finite_scales(scale)


for _test in (test_torchao_fp8_rowwise_quantizer, test_torchao_fp8_saturates_at_format_max, test_torchao_fp8_rows_independent, test_torchao_fp8_zero_row_has_positive_scale):
    for _mark in _needs("torchao-fp8-rowwise", CPU, "torchao"):
        _mark(_test)


def _fp8_linear(k: int, n: int, seed: int = 0):
    import torch

    from harness.pathways.torchao_fp8 import quantize_module

    torch.manual_seed(seed)
    return quantize_module(torch.nn.Linear(k, n, bias=False).to(device="cuda", dtype=torch.bfloat16))


@given(m=st.integers(1, 33), extra=st.integers(1, 17), seed=st.integers(0, 2**16))
def test_torchao_fp8_linear_rows_independent_on_gpu(m, extra, seed):
    """The real kernels: a row's output hardly depends on the rows batched with it (dynamic
    per-row activation scales; only accumulation order may differ between kernel choices)."""
    import torch

    linear = _fp8_linear(64, 48)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rows = torch.randn(m, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    other = 30 * torch.randn(extra, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    with torch.inference_mode():
        alone, batched = linear(rows).float(), linear(torch.cat([rows, other]))[:m].float()
    rel = ((alone - batched).norm() / alone.norm().clamp_min(1e-12)).item()
    assert rel < 1e-2, f"row outputs moved by {rel:.3g} (relative) when batched with larger rows"
    check_deterministic(lambda: linear(rows).float().cpu().numpy())


@pytest.mark.xfail(strict=True, reason="torchao 0.18: an all-zero activation row gets scale 0 and turns the output row into NaN")
def test_torchao_fp8_linear_zero_row_is_finite_on_gpu():
    import torch

    linear = _fp8_linear(64, 48)
    x = torch.randn(4, 64, device="cuda", dtype=torch.bfloat16)
    x[2] = 0
    with torch.inference_mode():
        y = linear(x).float()
    assert torch.isfinite(y).all(), f"{int((~torch.isfinite(y)).sum())} non-finite outputs from an all-zero input row"


for _test in (test_torchao_fp8_linear_rows_independent_on_gpu, test_torchao_fp8_linear_zero_row_is_finite_on_gpu):
    for _mark in _needs("torchao-fp8-rowwise", CUDA, "torchao"):
        _mark(_test)


# -- torchao-int8-dynamic: the int8 quantizer (weights per row, activations per token) and its linear --


def torchao_int8_rows(x: np.ndarray, activation: bool = False):
    """torchao's symmetric int8 quantizer with one scale per row, exactly as the int8 dynamic config
    calls it: Int8Tensor.from_hp(PerRow()) for weights (one row per output channel), and the
    activation path the linear takes for its input (one scale per token). Returns (codes, scales,
    zero points, dequantized)."""
    import torch
    from torchao.quantization import Int8Tensor, PerRow
    from torchao.quantization.quantize_.common import _choose_quant_func_and_quantize_tensor
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import QuantizeTensorToInt8Kwargs

    t = torch.from_numpy(x)
    q = _choose_quant_func_and_quantize_tensor(t, QuantizeTensorToInt8Kwargs(PerRow())) if activation else Int8Tensor.from_hp(t, PerRow())
    zero_point = np.zeros(x.shape[0], np.int8) if q.zero_point is None else q.zero_point.numpy().ravel()
    return q.qdata.numpy(), q.scale.numpy().ravel(), zero_point, q.dequantize(torch.float32).numpy()


# torchao's symmetric int8 spans the whole type: scale = max|x| / 127.5, codes in [-128, 127].
INT8_FULL = {"qmin": -128, "qmax": 127}
# Odd shapes with at least 2 columns: torchao 0.18 cannot quantize an (N > 1, 1) matrix per row
# (test_torchao_int8_single_column_rows below).
INT8_MATRICES = st.tuples(st.integers(1, 9), st.integers(2, 17)).flatmap(lambda shape: arrays(np.float32, shape, elements=ELEMENTS))


@pytest.mark.parametrize("activation", [False, True], ids=["weights", "activations"])
@given(x=INT8_MATRICES)
def test_torchao_int8_quantizer(activation, x):
    q, scale, zero_point, dq = torchao_int8_rows(x, activation)
    check_positive_finite_scales(scale)
    check_int_symmetric(q, zero_point, **INT8_FULL)
    check_int_roundtrip(x, q, scale, zero_point, axis=0, **INT8_FULL)
    check_int_roundtrip(x, np.rint(dq / scale[:, None]), scale, zero_point, axis=0, **INT8_FULL)  # what dequantize returns
    check_deterministic(lambda: torchao_int8_rows(x, activation)[:2])


@given(x=INT8_MATRICES, data=st.data())
def test_torchao_int8_weight_channels_independent(x, data):
    channel = data.draw(st.integers(0, x.shape[0] - 1), label="channel")
    check_channels_independent(lambda a: torchao_int8_rows(a)[:2], x, axis=0, channel=channel)


@given(rows=INT8_MATRICES, data=st.data())
def test_torchao_int8_activation_rows_independent(rows, data):
    """Per-token dynamic scales: a token's codes and scale do not depend on the tokens batched with it."""
    other = data.draw(arrays(np.float32, (data.draw(st.integers(1, 5)), rows.shape[1]), elements=ELEMENTS), label="other rows")
    check_rows_independent(lambda a: np.concatenate([torchao_int8_rows(a, activation=True)[0], torchao_int8_rows(a, activation=True)[1][:, None]], axis=1), rows, other)


def test_torchao_int8_zero_row_has_positive_scale():
    """Unlike the FP8 quantizer (xfail above), torchao's int8 scale has an epsilon: an all-zero row
    gets a tiny positive scale and quantizes to zeros."""
    q, scale, _, dq = torchao_int8_rows(np.zeros((2, 16), np.float32), activation=True)
    check_positive_finite_scales(scale)
    assert not q.any() and not dq.any()


@pytest.mark.xfail(strict=True, raises=RuntimeError, reason="torchao 0.18: Int8Tensor.from_hp(PerRow()) of an (N > 1, 1) matrix fails reshaping its scale (shape '[N, 1]' is invalid for input of size 1)")
def test_torchao_int8_single_column_rows():
    q, scale, zero_point, _ = torchao_int8_rows(np.ones((2, 1), np.float32))
    check_positive_finite_scales(scale)


def _int8_linear_rows_independent(device: str, m: int, extra: int, seed: int) -> None:
    """The real linear: a row's output does not depend on the rows batched with it (per-token
    activation scales, int32 accumulation; only the float rescale may round differently)."""
    import torch

    from harness.pathways.torchao_int8 import quantize_module

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    linear = quantize_module(torch.nn.Linear(64, 48, bias=False).to(device=device, dtype=dtype).eval())
    gen = torch.Generator(device=device).manual_seed(seed)
    rows = torch.randn(m, 64, device=device, dtype=dtype, generator=gen)
    other = 30 * torch.randn(extra, 64, device=device, dtype=dtype, generator=gen)
    with torch.inference_mode():
        alone, batched = linear(rows).float(), linear(torch.cat([rows, other]))[:m].float()
    rel = ((alone - batched).norm() / alone.norm().clamp_min(1e-12)).item()
    assert rel < 1e-2, f"row outputs moved by {rel:.3g} (relative) when batched with larger rows"
    check_deterministic(lambda: linear(rows).float().cpu().numpy())


@given(m=st.integers(1, 33), extra=st.integers(1, 17), seed=st.integers(0, 2**16))
def test_torchao_int8_linear_rows_independent(m, extra, seed):
    _int8_linear_rows_independent("cpu", m, extra, seed)


for _test in (test_torchao_int8_quantizer, test_torchao_int8_weight_channels_independent, test_torchao_int8_activation_rows_independent, test_torchao_int8_zero_row_has_positive_scale, test_torchao_int8_single_column_rows, test_torchao_int8_linear_rows_independent):
    for _mark in _needs("torchao-int8-dynamic", CPU, "torchao"):
        _mark(_test)


@given(m=st.integers(1, 33), extra=st.integers(1, 17), seed=st.integers(0, 2**16))
def test_torchao_int8_linear_rows_independent_on_gpu(m, extra, seed):
    _int8_linear_rows_independent("cuda", m, extra, seed)


for _mark in _needs("torchao-int8-dynamic", CUDA, "torchao"):
    _mark(test_torchao_int8_linear_rows_independent_on_gpu)


# -- every pathway: the loaded runner is deterministic on the model's inputs ------------------


@cases()
def test_runner_deterministic(case):
    inputs = case.model.eval_inputs()
    check_deterministic(lambda: case.runner(inputs))
