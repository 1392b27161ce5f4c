"""A new user's bad input is refused before any test runs, in one line, with the documented code
(USAGE ERROR, exit 4): checkpoints (pickle-only weights, no tokenizer, an architecture transformers
cannot build), data (missing, empty, shorter than one window, a malformed JSONL line), artifacts
under --artifacts (checksum mismatch, missing ONNX external data) and every subcommand's arguments.
An artifact that loads but is not the model's is a FAIL of the named `artifact_identity` check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.artifacts.manifest import MANIFEST, load_artifact, write_manifest
from harness.cli import main, pytest_plugin_args
from tests.conftest import REPO

pytest.importorskip("transformers")
INT8 = ("--pathways=inc-int8-qdq",)
SMALL = 'seq_len = 32\neval_tokens = 64\ncalibration_tokens = 64\nnew_tokens = 4\ngeneration_prompts = 2\n'


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained Llama checkpoint with its tokenizer: config.json, model.safetensors, tokenizer.json."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.hf_checkpoints import SEED, _decoder_config, build_tokenizer

    out = tmp_path_factory.mktemp("ckpt") / "my-llama"
    out.mkdir()
    build_tokenizer(out)
    torch.manual_seed(SEED)
    LlamaForCausalLM(_decoder_config(LlamaConfig)).save_pretrained(str(out))
    return out


def _copy(checkpoint: Path, tmp_path: Path, name: str = "my-llama") -> Path:
    target = tmp_path / "checkpoints" / name
    shutil.copytree(checkpoint, target)
    return target


def _child(cwd: Path, *args: str, suites: tuple[str, ...] = ("test_accuracy.py",), report_dir: Path | None = None):
    """A user's run: a child pytest over the suites with the plugin; (exit code, stdout, stderr, summary)."""
    report_dir = report_dir or cwd / "reports"
    targets = [str(REPO / "suites" / s) for s in suites]
    cmd = [sys.executable, "-m", "pytest", *targets, *pytest_plugin_args(REPO / "suites"), f"--report-dir={report_dir}", "-p", "no:cacheprovider", f"--rootdir={REPO}", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    path = report_dir / "summary.json"
    return proc.returncode, proc.stdout, proc.stderr, json.loads(path.read_text()) if path.exists() else {}


def _qconform(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def _assert_usage_error(code: int, out: str, err: str, summary: dict, message: str) -> None:
    """Exit 4, summary.json USAGE ERROR with no records, and the message on one line, no traceback."""
    text = out + err
    assert code == 4, text[-3000:]
    assert summary["verdict"] == "USAGE ERROR" and not summary["records"], summary
    assert message in summary["line"], summary["line"]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in text and "INTERNALERROR" not in text, text[-3000:]


# -- checkpoints ----------------------------------------------------------------------------------


def test_pickle_only_checkpoint_is_one_usage_line(checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file

    ckpt = _copy(checkpoint, tmp_path)
    torch.save(load_file(str(ckpt / "model.safetensors")), ckpt / "pytorch_model.bin")
    (ckpt / "model.safetensors").unlink()
    code, out, err, summary = _child(tmp_path, f"--model={ckpt}", *INT8)
    _assert_usage_error(code, out, err, summary, "pytorch_model.bin: pickle-based weights can run code on load")
    assert "--allow-pickle-checkpoint" in summary["line"]


def test_checkpoint_without_tokenizer_names_the_missing_files(checkpoint, tmp_path):
    ckpt = _copy(checkpoint, tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (ckpt / name).unlink(missing_ok=True)
    code, out, err, summary = _child(tmp_path, f"--model={ckpt}", *INT8)
    _assert_usage_error(code, out, err, summary, f"{ckpt}: no tokenizer files: expected tokenizer.json")
    assert "sentencepiece" not in out + err and "tiktoken" not in out + err


def test_unknown_architecture_is_refused_without_loading_weights(checkpoint, tmp_path):
    ckpt = _copy(checkpoint, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config.update(model_type="qconform-unknown-arch", architectures=["QconformUnknownForCausalLM"])
    (ckpt / "config.json").write_text(json.dumps(config))
    code, out, err, summary = _child(tmp_path, f"--model={ckpt}", *INT8)
    _assert_usage_error(code, out, err, summary, f"{ckpt / 'config.json'}: transformers")
    assert "cannot load this architecture" in summary["line"] and "qconform-unknown-arch" in summary["line"]


# -- data (declared in the project file, as a user does) ---------------------------------------------


def _project(tmp_path: Path, checkpoint: Path, extra: str = "") -> Path:
    project = tmp_path / "team"
    project.mkdir(exist_ok=True)
    ckpt = _copy(checkpoint, tmp_path)
    (project / "qconform.toml").write_text(f'pathways = ["inc-int8-qdq"]\n\n[[models]]\nsource = "{ckpt}"\nid = "my-llama"\n{SMALL}{extra}')
    return project


@pytest.mark.parametrize(
    "setup, message",
    [
        (None, "model my-llama: eval_text {data}/eval.txt: no such file"),
        ("", "model my-llama: eval_text {data}/eval.txt: empty"),
        ("A short text.", "{data}/eval.txt: 3 tokens, fewer than one window of 32"),
    ],
    ids=["missing", "empty", "shorter-than-one-window"],
)
def test_bad_evaluation_text_is_refused_before_any_test(checkpoint, tmp_path, setup, message):
    data = tmp_path / "data"
    data.mkdir()
    if setup is not None:
        (data / "eval.txt").write_text(setup)
    project = _project(tmp_path, checkpoint, f'eval_text = "{data / "eval.txt"}"\n')
    if setup == "A short text.":  # the exact token count is the tokenizer's
        from transformers import AutoTokenizer

        count = len(AutoTokenizer.from_pretrained(str(checkpoint))(setup, add_special_tokens=False)["input_ids"])
        message = message.replace("3 tokens", f"{count} tokens")
    run = _qconform(project, "run", "-p", "no:cacheprovider")
    summary = json.loads((project / "reports" / "summary.json").read_text())
    _assert_usage_error(run.returncode, run.stdout, run.stderr, summary, message.format(data=data))
    assert run.stderr.startswith("qconform run: "), run.stderr


def test_malformed_jsonl_line_is_named_file_and_line(checkpoint, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The river"}\n{"prompt": "unterminated\n')
    project = _project(tmp_path, checkpoint, f'eval_prompts = "{prompts}"\n')
    code, out, err, summary = _child(project, *INT8)
    _assert_usage_error(code, out, err, summary, f"model my-llama: {prompts}:2: not JSON")


# -- artifacts under --artifacts ------------------------------------------------------------------------

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama")


def test_checksum_mismatch_under_artifacts_is_a_usage_error(llama_int8, user_artifacts, tmp_path):
    from harness.pathways.inc_int8_qdq import PAYLOAD

    target = user_artifacts(llama_int8)
    data = bytearray((target / PAYLOAD).read_bytes())
    data[-100] ^= 0xFF
    (target / PAYLOAD).write_bytes(bytes(data))
    code, out, err, summary = _child(tmp_path, f"--artifacts={target.parent.parent}", *CASE)
    _assert_usage_error(code, out, err, summary, f"--artifacts: {target / PAYLOAD}: sha256 mismatch")


def test_missing_external_data_under_artifacts_is_a_usage_error(llama_int8, user_artifacts, tmp_path):
    target = user_artifacts(llama_int8)
    [data] = [name for name in llama_int8.manifest["files"] if not name.endswith(".onnx")]  # INC writes model.qdq.onnx_data
    (target / data).unlink()
    manifest = json.loads((target / MANIFEST).read_text())
    write_manifest(target, **{k: manifest[k] for k in ("pathway", "model_id", "recipe", "source_weights_sha256", "tool_versions", "built_on")})
    code, out, err, summary = _child(tmp_path, f"--artifacts={target.parent.parent}", *CASE)
    _assert_usage_error(code, out, err, summary, f"stores its data in {data!r}, which is missing from the artifact")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("source_weights_sha256", "0" * 64, "built from other weights than model tiny-llama"),
        ("model_id", "minilm-l6", "built for model 'minilm-l6', expected 'tiny-llama'"),
    ],
    ids=["other-weights", "another-model"],
)
def test_artifact_not_the_models_fails_the_named_identity_check(llama_int8, user_artifacts, tmp_path, key, value, message):
    target = user_artifacts(llama_int8)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest[key] = value  # the files and their hashes are untouched: the artifact loads
    (target / MANIFEST).write_text(json.dumps(manifest))
    code, out, err, summary = _child(tmp_path, f"--artifacts={target.parent.parent}", *CASE, suites=("test_artifacts.py", "test_accuracy.py"))
    assert code == 1 and summary["verdict"] == "FAIL", (out + err)[-3000:]
    records = [r for r in summary["records"] if r["pathway"] == "inc-int8-qdq" and r["device"] == "cpu"]
    [identity] = [r for r in records if r["check"] == "artifact_identity"]
    assert identity["outcome"] == "failed" and identity["metric"] == "artifact_identity" and message in identity["message"], identity
    others = [r for r in records if r is not identity]
    assert others and all(r["outcome"] == "skipped" and "artifact_identity" in r["message"] for r in others), others
    assert not any(r["outcome"] == "error" for r in summary["records"])


# -- qconform import: ONNX external data -------------------------------------------------------------


@pytest.fixture(scope="module")
def external_qdq(tmp_path_factory) -> Path:
    """A team's ORT QDQ graph of tiny-llama saved with its weights in an .onnx_data file, as every
    ONNX model over 2 GB is."""
    import onnx

    from harness.models.base import get_model
    from tests.test_import import ort_quantize_static

    pytest.importorskip("onnxruntime")
    work = tmp_path_factory.mktemp("external")
    graph = onnx.load(str(ort_quantize_static(get_model("tiny-llama"), work / "ort")))
    out = work / "team"
    out.mkdir()
    onnx.save_model(graph, str(out / "ort.qdq.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location="ort.qdq.onnx_data", size_threshold=0)
    assert (out / "ort.qdq.onnx_data").stat().st_size > (out / "ort.qdq.onnx").stat().st_size
    return out / "ort.qdq.onnx"


def test_import_carries_external_data_and_the_run_loads_it(external_qdq, tmp_path, capsys):
    from harness.artifacts.manifest import sha256_file

    code = main(["import", "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(external_qdq), "--out", str(tmp_path / "arts")])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    artifact = load_artifact(tmp_path / "arts" / "tiny-llama" / "inc-int8-qdq")
    assert artifact.manifest["files"]["ort.qdq.onnx_data"] == sha256_file(external_qdq.parent / "ort.qdq.onnx_data")
    code, out, err, summary = _child(tmp_path, f"--artifacts={tmp_path / 'arts'}", *CASE, "-k", "artifact_identity or every_weight_layer", suites=("test_artifacts.py",))
    assert code == 0 and summary["verdict"] == "PASS", (out + err)[-3000:]
    assert {r["check"] for r in summary["records"] if r["outcome"] == "passed"} == {"artifact_identity", "every_weight_layer_quantized"}


def test_import_refuses_onnx_whose_external_data_is_missing(external_qdq, tmp_path, capsys):
    payload = tmp_path / "ort.qdq.onnx"
    shutil.copy(external_qdq, payload)  # without its .onnx_data
    code = main(["import", "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(payload), "--out", str(tmp_path / "arts")])
    err = capsys.readouterr().err
    assert code == 4, err
    [line] = err.strip().splitlines()
    assert line.startswith("qconform import: ") and "stores its data in 'ort.qdq.onnx_data', which is missing" in line
    assert not (tmp_path / "arts" / "tiny-llama").exists()


def test_missing_external_data_in_an_imported_artifact_is_a_usage_error(external_qdq, tmp_path, capsys):
    assert main(["import", "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(external_qdq), "--out", str(tmp_path / "arts")]) == 0
    target = tmp_path / "arts" / "tiny-llama" / "inc-int8-qdq"
    (target / "ort.qdq.onnx_data").unlink()
    manifest = json.loads((target / MANIFEST).read_text())
    write_manifest(target, **{k: manifest[k] for k in ("pathway", "model_id", "recipe", "source_weights_sha256", "tool_versions", "built_on")})
    code, out, err, summary = _child(tmp_path, f"--artifacts={tmp_path / 'arts'}", *CASE, suites=("test_artifacts.py",))
    _assert_usage_error(code, out, err, summary, "stores its data in 'ort.qdq.onnx_data', which is missing from the artifact")


# -- every subcommand: usage problems are exit 4, one line `qconform <command>: ` -------------------------


def _one_usage_line(capsys, command: str, *args: str) -> str:
    code = main([command, *args])
    captured = capsys.readouterr()
    assert code == 4, captured.out + captured.err
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"qconform {command}: "), line
    return line


def test_init_on_an_existing_file_is_a_usage_error(checkpoint, tmp_path, capsys):
    (tmp_path / "qconform.toml").write_text("# mine\n")
    line = _one_usage_line(capsys, "init", "--model", str(checkpoint), "--out", str(tmp_path / "qconform.toml"))
    assert "qconform.toml exists" in line and (tmp_path / "qconform.toml").read_text() == "# mine\n"
    assert "no config.json" in _one_usage_line(capsys, "init", "--model", str(tmp_path), "--out", str(tmp_path / "new.toml"))


def test_report_and_merge_on_a_missing_file_are_usage_errors(tmp_path, capsys):
    assert "no summary at" in _one_usage_line(capsys, "report", str(tmp_path / "nothing.json"))
    assert "no summary at" in _one_usage_line(capsys, "merge", str(tmp_path / "nothing.json"), "--out", str(tmp_path / "merged"))
    (tmp_path / "bad.json").write_text("{not json")
    assert "not a qconform summary.json" in _one_usage_line(capsys, "report", str(tmp_path / "bad.json"))


def test_bad_arguments_are_one_usage_line(tmp_path, capsys):
    assert "the following arguments are required: --model" in _one_usage_line(capsys, "init")
    assert "unrecognized arguments: --bogus" in _one_usage_line(capsys, "report", str(tmp_path / "s.json"), "--bogus")
    assert "unknown pathway 'inc-int9'" in _one_usage_line(capsys, "import", "--pathway", "inc-int9", "--model", "tiny-llama", str(tmp_path / "x.onnx"), "--out", str(tmp_path))
    assert f"{tmp_path / 'x.onnx'}: no such file" in _one_usage_line(capsys, "import", "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(tmp_path / "x.onnx"), "--out", str(tmp_path))
    assert "unknown model 'nope'" in _one_usage_line(capsys, "build", "--models", "nope", "--cache", str(tmp_path / "cache"))


def test_run_usage_error_is_one_qconform_run_line(tmp_path):
    run = _qconform(tmp_path, "run", "--report-dir", str(tmp_path / "reports"), "--pathways", "bogus", "-p", "no:cacheprovider")
    assert run.returncode == 4, run.stdout + run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("qconform run: unknown pathway 'bogus'"), line


def test_build_accepts_project_models(checkpoint, tmp_path, capsys, monkeypatch):
    project = _project(tmp_path, checkpoint)
    monkeypatch.chdir(project)
    cache = str(tmp_path / "cache")
    code = main(["build", "--models", "my-llama", "--pathways", "inc-int8-qdq", "--cache", cache])
    out = capsys.readouterr().out
    assert code == 0 and re.search(r"^ok +inc-int8-qdq +my-llama ", out, re.M), out
    line = _one_usage_line(capsys, "build", "--models", "other", "--pathways", "inc-int8-qdq", "--cache", cache)
    assert "unknown model 'other'; known: " in line and "[[models]]: my-llama" in line
    code = main(["build", "--model", str(checkpoint), "--pathways", "inc-int8-qdq", "--cache", cache])
    out = capsys.readouterr().out
    assert code == 0 and re.search(r"^ok +inc-int8-qdq +my-llama ", out, re.M), out
