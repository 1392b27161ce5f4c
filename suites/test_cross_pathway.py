"""Pathways and runtimes that should agree do agree:
- the same INT8 QDQ artifact on the ONNX Runtime CPU EP and CUDA EP;
- a GPU FP8 pathway and the INC FP8 reference (run here when it can, else its recorded outputs);
- FP8 E4M3 at least as accurate as E5M2 under the same INC recipe."""

import pytest

from harness.judge.metrics import cross_runtime_metrics, cross_runtime_metrics_keys, sqnr_db
from harness.measure.golden import GoldenError, find_golden
from harness.pathways.base import get_pathway
from harness.run.session import cases


def _cross_keys(pathway, model, kind) -> tuple[str, ...]:
    return tuple(cross_runtime_metrics_keys(model))


@cases(where=lambda pathway, kind: kind == "cuda" and "cpu" in pathway.devices, thresholds=_cross_keys, also_uses=lambda model, pathway, kind: [(pathway.name, "cpu")])
def test_cpu_and_cuda_runtimes_agree(case, qc, gate):
    cpu, cuda = qc.case(case.model, case.pathway, "cpu"), case
    gate.check(cuda, cross_runtime_metrics(cuda.model, cpu.outputs, cuda.outputs), "CPU EP outputs as the reference")


def reference_outputs(qc, model, reference: str) -> tuple[dict, str]:
    """The reference pathway's outputs: computed here when it can run, else its recorded golden."""
    pathway = get_pathway(reference)
    reason = qc.case_unavailable(pathway, "cpu", model)  # missing packages, or a model too large for its memory estimate
    if reason is None:
        return qc.case(model, reference, "cpu").outputs, f"{reference} run here"
    try:
        golden = find_golden(qc.golden_root, model.id, pathway, qc.target_device("cpu"), pathway.tool_versions(), model.golden_inputs()).golden
    except GoldenError as exc:
        pytest.skip(f"the reference cannot run here ({reason}) and has no record: {exc}")
    outputs, directory = golden.outputs, golden.path
    if model.primary_output not in outputs:
        pytest.skip(f"the reference cannot run here ({reason}) and its golden in {directory} keeps a digest, not the {model.primary_output!r} output")
    return outputs, f"{reference} outputs recorded in {directory}"


@cases(where=lambda pathway, kind: pathway.reference_pathway is not None, thresholds=_cross_keys, also_uses=lambda model, pathway, kind: [(pathway.reference_pathway, "cpu")])
def test_fp8_pathway_agrees_with_the_reference(case, qc, gate):
    reference, source = reference_outputs(qc, case.model, case.pathway.reference_pathway)
    gate.check(case, cross_runtime_metrics(case.model, reference, case.outputs), f"against {source}")


@cases(where=lambda pathway, kind: pathway.name == "inc-fp8-ref", thresholds=("min_e4m3_over_e5m2_db",), also_uses=lambda model, pathway, kind: [("inc-fp8-ref-e5m2", kind)])
def test_e4m3_at_least_as_accurate_as_e5m2(case, qc, gate):
    if qc.artifacts_dir is not None and (case.model.id, "inc-fp8-ref-e5m2") not in qc.artifact_pairs:
        # The team's own artifacts (--artifacts DIR) hold no E5M2 one to compare with: nothing to judge.
        pytest.skip(f"no inc-fp8-ref-e5m2 artifact of {case.model.id} under {qc.artifacts_dir} to compare E4M3 with")
    e4m3, e5m2 = case, qc.case(case.model, "inc-fp8-ref-e5m2", case.device.kind)
    name, reference = e4m3.model.primary_output, e4m3.reference[e4m3.model.primary_output]
    e4m3_db, e5m2_db = sqnr_db(reference, e4m3.outputs[name]), sqnr_db(reference, e5m2.outputs[name])
    gate.check(e4m3, {"min_e4m3_over_e5m2_db": e4m3_db - e5m2_db}, f"E4M3 {e4m3_db:.2f} dB vs E5M2 {e5m2_db:.2f} dB")
