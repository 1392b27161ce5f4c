"""Gate your own model with no Python written: three checkpoints built by transformers from small
configs (Llama, Qwen2 with their own tokenizers; a BERT encoder), `qconform init --model PATH`, then
`qconform run` from the team's directory builds the INC INT8 QDQ and INC FP8 reference artifacts,
gates them on CPU against the policy thresholds for a model with no calibrated table, records the
goldens beside the project file and writes the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core import cpu_class
from tests.hf_checkpoints import BUILDERS

pytest.importorskip("transformers")
# Small evaluation settings keep CI fast; set in the project file as a user would.
SMALL = "eval_tokens = 256\nseq_len = 64\nnew_tokens = 8\ngeneration_prompts = 4\n"


def qconform(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_init_then_run_gates_a_checkpoint_end_to_end(name, tmp_path):
    checkpoint = BUILDERS[name](tmp_path / "checkpoints" / f"my-{name}")
    project = tmp_path / "team"
    project.mkdir()
    init = qconform(project, "init", "--model", str(checkpoint))
    assert init.returncode == 0, init.stderr
    text = (project / "qconform.toml").read_text()
    assert "[[models]]" in text and f"my-{name}" in text
    # The user's edits: small evaluation settings; a random BERT ranks pairs by chance, so no task score.
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("eval_tokens", "seq_len", "new_tokens", "generation_prompts", "metrics")))
    text = text.replace("[[models]]\n", "[[models]]\n" + SMALL + ('metrics = ["row_cosine", "ranking_agreement"]\n' if name == "bert" else ""))
    text = text.replace("pathways = [", 'pathways = ["inc-int8-qdq", "inc-fp8-ref"]\n# pathways = [', 1) if "pathways = [" in text else text + '\npathways = ["inc-int8-qdq", "inc-fp8-ref"]\n'
    (project / "qconform.toml").write_text(text)
    cache = f"--qc-cache={tmp_path / 'cache'}"

    first = qconform(project, "run", "--regen-golden", cache, "-p", "no:cacheprovider", "-k", "not speedup")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert (project / "golden" / f"my-{name}" / "inc-int8-qdq" / cpu_class()).is_dir(), "goldens belong beside the project file, keyed by device class"

    second = qconform(project, "run", cache, "-p", "no:cacheprovider", "-k", "not speedup")
    summary = json.loads((project / "reports" / "summary.json").read_text())
    assert second.returncode == 0 and summary["verdict"] == "PASS", second.stdout[-4000:]
    gated = {(r["pathway"], r["metric"]) for r in summary["records"] if r["outcome"] == "passed" and r.get("metric")}
    assert {("inc-int8-qdq", "min_golden_sqnr_db"), ("inc-fp8-ref", "min_golden_sqnr_db")} <= gated
    if name != "bert":
        assert {("inc-int8-qdq", "max_kl_mean"), ("inc-fp8-ref", "min_top1_agreement")} <= gated
        kl = next(r for r in summary["records"] if r.get("metric") == "max_kl_mean")
        assert "defaults.toml [inc-int8-qdq.default-causal-lm]" in kl["source"] or "defaults.toml [inc-fp8-ref.default-causal-lm]" in kl["source"]
        assert "Greedy generations, reference vs quantized" in (project / "reports" / "conformance.html").read_text()
