"""Pathways and runtimes that should agree do agree: the same INT8 QDQ artifact on the ONNX Runtime
CPU EP and CUDA EP (every pathway that runs on both)."""

from harness.metrics import cross_runtime_metrics


def test_cpu_and_cuda_runtimes_agree(cross_key, qc, gate):
    model_id, pathway, _ = cross_key
    cpu, cuda = qc.case(model_id, pathway, "cpu"), qc.case(model_id, pathway, "cuda")
    gate.check(cuda, cross_runtime_metrics(cuda.model, cpu.outputs, cuda.outputs), "CPU EP outputs as the reference")
