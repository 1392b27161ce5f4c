"""Refuse up front what cannot fit (issue 25): a checkpoint's size is read from its safetensors
headers alone, the CPU estimate bounds a measured run, a named pathway over the budget is one usage
line before any test runs, an unnamed one is skipped (or not selected) with the numbers, and a budget
that is no size is a usage error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.judge.gates import EXIT_CODES
from harness.measure.memory import ModelSize, checkpoint_size, host_build_estimate, model_size
from harness.pathways.base import get_pathway
from harness.run.memory import parse_size
from tests.hf_checkpoints import DECODER_CONFIG, build_llama

pytest.importorskip("transformers")
SMALL = "eval_tokens = 256\nseq_len = 64\nnew_tokens = 8\ngeneration_prompts = 4\n"


def _save(path: Path, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**{**DECODER_CONFIG, **overrides}))
    model.save_pretrained(str(path))
    return model


@pytest.mark.parametrize("tied", [False, True])
def test_header_size_matches_the_parameter_count(tmp_path, tied):
    model = _save(tmp_path, tie_word_embeddings=tied, num_hidden_layers=3)
    size = checkpoint_size(tmp_path)
    assert size.parameters == sum(p.numel() for p in model.parameters())  # tied: the matrix once
    assert size.checkpoint_bytes == 4 * size.parameters and size.largest_shard_bytes >= size.checkpoint_bytes
    assert size.embedding_parameters == model.model.embed_tokens.weight.numel()
    assert size.lm_head_parameters == (0 if tied else model.lm_head.weight.numel())
    assert size.largest_tensor_bytes == 4 * max(p.numel() for p in model.parameters())
    assert (size.vocab_size, size.hidden_size, size.num_hidden_layers) == (DECODER_CONFIG["vocab_size"], DECODER_CONFIG["hidden_size"], 3)


def test_a_model_without_a_checkpoint_has_no_estimate():
    from harness.models.base import get_model

    assert model_size(get_model("tiny-llama")) is None  # module-level demo: never refused


@pytest.mark.parametrize("text, expected", [("24GiB", 24 << 30), ("32GB", 32 * 10**9), ("1MB", 10**6), ("1048576", 1 << 20), ("1.5 gib", 3 << 29)])
def test_sizes_parse(text, expected):
    assert parse_size(text, "--max-host-memory") == expected


@pytest.mark.parametrize("text", ["lots", "-1GB", "12 parsecs", ""])
def test_a_bad_size_names_the_option(text):
    with pytest.raises(ValueError, match=r"--max-gpu-memory .*not a memory size"):
        parse_size(text, "--max-gpu-memory")


# -- through `qconform run`, as a team runs it ----------------------------------------------------


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    """A team directory whose qconform.toml declares one small Llama checkpoint (my-llama)."""
    root = tmp_path_factory.mktemp("memory")
    checkpoint = build_llama(root / "checkpoints" / "my-llama")
    project = root / "team"
    project.mkdir()
    (project / "qconform.toml").write_text(f'[[models]]\nsource = "{checkpoint}"\nid = "my-llama"\n{SMALL}')
    return project


def qconform(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    summary = cwd / "reports" / "summary.json"
    summary.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-p", "no:cacheprovider", *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    return proc, (json.loads(summary.read_text()) if summary.exists() else {})


def test_the_cpu_estimate_bounds_a_measured_run(team):
    """Peak RSS of a real run (ru_maxrss of a wrapper's children: this run only) under the estimate."""
    wrapper = "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)"
    argv = [sys.executable, "-c", wrapper, sys.executable, "-m", "harness.cli", "run", "--pathways", "inc-int8-qdq", "-p", "no:cacheprovider", "-k", "not speedup"]
    proc = subprocess.run(argv, cwd=team, capture_output=True, text=True, timeout=900)
    kib, rc = (int(v) for v in proc.stdout.rsplit("MAXRSS", 1)[1].split())
    summary = json.loads((team / "reports" / "summary.json").read_text())
    assert rc != EXIT_CODES["USAGE ERROR"] and summary["gates"] > 0, proc.stdout[-3000:] + proc.stderr[-2000:]  # it ran, not refused
    from harness.models.hf import HuggingFaceModel

    model = HuggingFaceModel(team.parent / "checkpoints" / "my-llama", id="my-llama", eval_tokens=256, seq_len=64)
    estimate = get_pathway("inc-int8-qdq").memory_estimate(model_size(model), model, "cpu")
    assert estimate.gpu_bytes == 0 and estimate.host_bytes >= kib * 1024, f"measured {kib * 1024} B, estimated {estimate.host_bytes} B ({estimate.basis})"


def test_a_named_pathway_that_cannot_fit_is_refused_before_any_test(team):
    proc, summary = qconform(team, "--pathways", "inc-int8-qdq", "--max-host-memory", "1MB")
    [line] = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_CODES["USAGE ERROR"], proc.stdout[-2000:]
    assert line.startswith("qconform run: model my-llama on inc-int8-qdq (cpu) needs an estimated ") and " GiB of host memory (runtime " in line, line
    assert line.endswith("this machine allows 1.0 MiB (--max-host-memory): refused before any work; give a larger budget, a smaller model, or a machine with more memory"), line
    assert summary["verdict"] == "USAGE ERROR" and not summary.get("records"), summary
    assert "PASSED" not in proc.stdout and "SKIPPED" not in proc.stdout


def test_the_project_file_sets_the_budget_and_the_option_wins(team, tmp_path):
    project = tmp_path / "team"
    project.mkdir()
    (project / "qconform.toml").write_text('max_host_memory = "1MB"\npathways = ["inc-int8-qdq"]\n' + (team / "qconform.toml").read_text())  # top-level keys first
    proc, _ = qconform(project, "--collect-only")
    assert proc.returncode == EXIT_CODES["USAGE ERROR"] and f"(max_host_memory in {project / 'qconform.toml'}): refused before any work" in proc.stderr, proc.stderr
    proc, _ = qconform(project, "--collect-only", "--max-host-memory", "1TiB")
    assert "needs an estimated" not in proc.stdout + proc.stderr and proc.returncode != EXIT_CODES["USAGE ERROR"], proc.stderr


def test_an_unnamed_pathway_that_cannot_fit_is_skipped_with_the_numbers(team):
    # my-llama cannot fit 1MB, tiny-llama (no checkpoint, no estimate) can: my-llama's cases skip.
    proc, summary = qconform(team, "--models", "tiny-llama,my-llama", "--max-host-memory", "1MB", "-m", "inc_int8_qdq", "-k", "manifest_recipe_agrees")
    assert proc.returncode == EXIT_CODES[summary["verdict"]], proc.stdout[-3000:] + proc.stderr[-2000:]
    skipped = [r for r in summary["records"] if r["model"] == "my-llama" and r["pathway"] == "inc-int8-qdq"]
    assert skipped and all(r["outcome"] == "skipped" for r in skipped), skipped
    assert "model my-llama on inc-int8-qdq (cpu) needs an estimated " in skipped[0]["message"] and "this machine allows 1.0 MiB (--max-host-memory)" in skipped[0]["message"]
    # No model of the run fits: the pathway is not selected (listed as not run, with the numbers), and
    # no case of it runs; with no other pathway left, nothing is gated.
    proc, summary = qconform(team, "--models", "my-llama", "--max-host-memory", "1MB", "-k", "manifest_recipe_agrees")
    assert summary["verdict"] == "NOT GATED" and proc.returncode == EXIT_CODES["NOT GATED"], proc.stdout[-3000:]
    why = summary["not_selected"]["inc-int8-qdq"]
    assert why.startswith("model my-llama on inc-int8-qdq (cpu) needs an estimated ") and "1.0 MiB (--max-host-memory)" in why, why
    assert not [r for r in summary["records"] if r["pathway"] == "inc-int8-qdq"]


def test_a_budget_that_is_no_size_is_a_usage_error(team):
    proc, summary = qconform(team, "--pathways", "inc-int8-qdq", "--max-gpu-memory", "lots")
    [line] = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_CODES["USAGE ERROR"] and line.startswith("qconform run: --max-gpu-memory 'lots': not a memory size"), line
    assert summary["verdict"] == "USAGE ERROR"


def test_the_host_formula_grows_with_the_weights_and_the_logits():
    class Model:
        id, kind, eval_tokens, batch_size, seq_len = "m", "causal-lm", 256, 2, 128

    small = host_build_estimate(ModelSize(10**6, 4 * 10**6, 0, 0, 0, 4 * 10**6, 32000, 64, 2), Model())
    large = host_build_estimate(ModelSize(10**9, 4 * 10**9, 0, 0, 0, 4 * 10**9, 32000, 2048, 16), Model())
    assert large.host_bytes > small.host_bytes and "fp32 weights" in large.host_basis and large.gpu_bytes == 0


def test_a_gpu_budget_holds_torchs_allocator_to_it_less_what_is_outside_torch(monkeypatch):
    """--max-gpu-memory 24GiB on an 80 GiB GPU where the CUDA context holds 0.5 GiB: torch may reserve
    23.5 GiB; without a budget nothing is set."""
    import torch

    from harness.run.memory import MemoryCheck, hold_gpu_to_budget

    set_to = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=0: (80 * 2**30 - 2**29 - 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=0: 2**30)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda fraction, device=0: set_to.append(fraction))
    line = hold_gpu_to_budget(MemoryCheck(("24GiB", "--max-gpu-memory"), None))
    assert set_to == [pytest.approx(23.5 / 80)]
    assert "23.5 GiB" in line and "--max-gpu-memory 24.0 GiB" in line
    assert hold_gpu_to_budget(MemoryCheck(None, None)) is None and len(set_to) == 1


# -- the host memory model against measured release-size runs ---------------------------------------
# Peak RSS of one cold `benchmarks/cpu.py --model DIR --pathways P --runs cold` on the 2-core 24 GB
# CPU runner (2026-12-07; harness/measure/memory.py lists them with their phases). The checkpoint
# sizes are those its safetensors headers give (checkpoint_size).
GiB = 1 << 30
LLAMA_1B = ModelSize(1235814400, 2471628800, 262668288, 0, 525336576, 2471645608, 128256, 2048, 16)  # Llama-3.2-1B shapes
LLAMA_8B = ModelSize(8030261248, 16060522496, 525336576, 525336576, 1050673152, 4976698672, 128256, 4096, 32)  # Llama-3.1-8B shapes
GEMMA_270M = ModelSize(268098176, 1072392704, 167772160, 0, 671088640, 1072419248, 262144, 640, 18)  # Gemma-3-270m
MEASURED_GIB = [
    (LLAMA_1B, "inc-int8-qdq", 16.35),  # default recipe, 480 s (2026-12-08; 18.3 GiB before the calibration ran beside a weightless graph)
    (LLAMA_1B, "inc-fp8-ref", 16.15),  # with its E5M2 twin, 639 s (2026-12-08; killed at 23.2 GiB before)
    (GEMMA_270M, "inc-int8-qdq", 7.63),  # SmoothQuant recipe, 188 s, PASS
]
RUNNER_HOST_GIB = 22  # MemAvailable on the 24 GB runner, what --max-host-memory defaults to


class CausalLM:
    id, kind, eval_tokens, batch_size, seq_len = "m", "causal-lm", 512, 2, 128


def host_gib(size, pathway: str) -> float:
    return get_pathway(pathway).memory_estimate(size, CausalLM(), "cpu").host_bytes / GiB


@pytest.mark.parametrize("size, pathway, peak", MEASURED_GIB, ids=["1b-int8", "1b-fp8", "gemma-int8"])
def test_the_host_estimate_is_above_each_measured_peak_and_within_25_percent(size, pathway, peak):
    assert peak <= host_gib(size, pathway) <= 1.25 * peak


def test_the_1b_inc_cases_fit_the_24gb_runner_and_what_does_not_fit_is_refused():
    assert host_gib(LLAMA_1B, "inc-int8-qdq") < RUNNER_HOST_GIB  # measured 16.35 GiB: it ran there
    assert host_gib(LLAMA_1B, "inc-fp8-ref") < RUNNER_HOST_GIB  # measured 16.2 GiB: it ran there
    assert host_gib(LLAMA_8B, "inc-fp8-ref") > RUNNER_HOST_GIB
    assert host_gib(LLAMA_8B, "inc-int8-qdq") > RUNNER_HOST_GIB
    assert host_gib(LLAMA_8B, "inc-int8-qdq") <= 4 * 4 * LLAMA_8B.parameters / GiB  # the 8B INT8 QDQ estimate: at most 4x its fp32 weights
