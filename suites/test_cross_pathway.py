"""Pathways and runtimes that should agree do agree: the same INT8 QDQ artifact on the ONNX Runtime
CPU EP and CUDA EP."""

import pytest

from harness.metrics import cross_runtime_metrics
from harness.models.base import all_models
from harness.pathways.base import get_pathway

pytestmark = [pytest.mark.gpu, pytest.mark.inc_int8_qdq]


@pytest.mark.parametrize("model_id", [m.id for m in all_models()])
def test_ort_cpu_and_cuda_agree(model_id, qc, gate, record_property):
    record_property("qconform_case", {"model": model_id, "pathway": "inc-int8-qdq", "device": "cuda", "check": "cross_cpu_cuda"})
    pathway = get_pathway("inc-int8-qdq")
    reason = pathway.unavailable(qc.target_device("cuda"))
    if reason:
        pytest.skip(reason)
    cpu, cuda = qc.case(model_id, pathway.name, "cpu"), qc.case(model_id, pathway.name, "cuda")
    gate.check(cuda, cross_runtime_metrics(cuda.model, cpu.outputs, cuda.outputs), "CPU EP outputs as the reference")
