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
