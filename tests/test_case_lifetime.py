"""A case (its runner, its outputs) is resident only while items that read it are left: each case's
items run together, and one that reads another case (cross-pathway checks) keeps that case loaded
until it has run (issue 33: a run held every case of every pathway until its last suite)."""

import itertools
import re

SUITES = ("test_accuracy.py", "test_artifacts.py", "test_cross_pathway.py")


def test_each_cases_items_run_together(run_suites):
    run = run_suites("--models=tiny-llama", "--pathways=inc-int8-qdq,inc-fp8-ref,inc-fp8-ref-e5m2,torchao-int8-dynamic", "--collect-only", "-q", suites=SUITES)
    cases = [m.group(1) for line in run.output.splitlines() if (m := re.search(r"::\w+\[(.+-(?:cpu|cuda)-tiny-llama)\]$", line))]
    blocks = [case for case, _ in itertools.groupby(cases)]
    assert len(cases) > 40 and len(blocks) == len(set(blocks)) == 6, blocks  # INT8 QDQ and torchao on cpu and cuda, the two FP8 references on cpu


def test_a_case_read_by_a_cross_check_stays_loaded_until_it_has_run(run_suites, tmp_path):
    """E4M3 against E5M2 reads the E5M2 case from inside the E4M3 group: the E5M2 case is built and
    evaluated once (one build line, one candidate-outputs line), not again for its own items."""
    run = run_suites("--models=tiny-llama", "--pathways=inc-fp8-ref,inc-fp8-ref-e5m2", "-k", "cpu", f"--qc-cache={tmp_path / 'cache'}", f"--golden-dir={tmp_path / 'golden'}", suites=SUITES)
    assert run.returncode == 0, run.output[-3000:]
    assert run.output.count("candidate outputs of tiny-llama (inc-fp8-ref-e5m2/cpu)") == 1, run.output[-3000:]
    assert run.output.count("loading inc-fp8-ref-e5m2 artifact of tiny-llama (cpu)") == 1, run.output[-3000:]


def test_a_released_inc_fp8_model_is_freed(llama_fp8):
    """INC records every module it patches in a process-wide dict; qconform clears it, so an FP8 case
    released by the run frees its model (it kept 3.4 GiB per Gemma-3-270m case alive)."""
    import gc
    import weakref

    from harness.core import Device
    from harness.models.base import get_model
    from harness.pathways.base import get_pathway

    runner = get_pathway("inc-fp8-ref").load(llama_fp8, Device.detect(), get_model("tiny-llama"))
    alive = weakref.ref(runner.module)
    del runner
    gc.collect()
    assert alive() is None


def test_an_inc_fp8_build_leaves_no_model_behind(tmp_path):
    """INC keeps the Linear layers it measured in a process-wide dict; qconform clears it, so a build
    leaves nothing but its files (a 1B model's build kept 4.0 GiB of fp32 weights)."""
    import gc

    import pytest
    import torch

    from harness.models.base import get_model
    from harness.pathways.base import get_pathway

    model, pathway = get_model("tiny-llama"), get_pathway("inc-fp8-ref")
    if reason := pathway.build_unavailable():
        pytest.skip(reason)
    assert model.reference is not None  # loaded before counting: the reference is the model's, not the build's
    gc.collect()
    before = {id(m) for m in gc.get_objects() if issubclass(type(m), torch.nn.Linear)}
    pathway.build(model, model.calibration_inputs(), tmp_path)
    gc.collect()
    left = [m for m in gc.get_objects() if issubclass(type(m), torch.nn.Linear) and id(m) not in before]
    assert left == [], f"{len(left)} Linear layers of the build are still alive"


def test_an_inc_fp8_build_and_load_leave_the_reference_unchanged(tmp_path):
    """INC's copies share the reference's tensors (measuring: all of them; quantizing: all but the
    Linear weights it replaces): the reference's weights are bit-identical after a build and a load."""
    import pytest

    from harness.artifacts.manifest import load_artifact
    from harness.core import Device
    from harness.models.base import get_model
    from harness.pathways.base import get_pathway

    model, pathway = get_model("tiny-llama"), get_pathway("inc-fp8-ref")
    if reason := pathway.build_unavailable():
        pytest.skip(reason)
    before = {name: tensor.clone() for name, tensor in model.reference.state_dict().items()}
    pathway.build(model, model.calibration_inputs(), tmp_path)
    runner = pathway.load(load_artifact(tmp_path, pathway="inc-fp8-ref", model_id="tiny-llama"), Device.detect(), model)
    shared = {t.data_ptr() for t in runner.module.state_dict().values()} & {t.data_ptr() for t in model.reference.state_dict().values()}
    after = model.reference.state_dict()
    assert all(before[name].equal(after[name]) for name in before)
    assert shared, "the quantized copy shares none of the reference's tensors"
