"""The project file: `qconform.toml` (or `[tool.qconform]` in pyproject.toml) declares the team's
models, their evaluation and calibration data, the pathways and the recipe each must have, pre-built
artifacts and the profile. Found in the working directory or a parent; relative paths are relative
to the file. Unknown keys are errors naming the key, so a typo never silently drops a setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

FILE = "qconform.toml"


class ConfigError(Exception):
    """The project file is unreadable or holds an unknown key or a wrongly typed value."""


@dataclass
class ModelEntry:
    source: str  # checkpoint directory, fp32 .onnx file, or module:factory
    id: str | None = None
    eval_text: str | None = None
    eval_prompts: str | None = None
    eval_pairs: str | None = None
    calibration_text: str | None = None
    metrics: list[str] | None = None
    eval_tokens: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    calibration_tokens: int | None = None
    new_tokens: int | None = None
    generation_prompts: int | None = None
    int8_keep_float: list[str] | None = None
    allow_pickle: bool = False

    def options(self) -> dict[str, Any]:
        """Keyword arguments for model_from_source (only the keys the file sets)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source" and getattr(self, f.name) not in (None, False)}

    def spec(self):
        from harness.models.hf import model_from_source

        return model_from_source(self.source, **self.options())


@dataclass
class Project:
    path: Path  # the file it was read from
    models: list[ModelEntry] = field(default_factory=list)
    pathways: list[str] = field(default_factory=list)  # empty: every pathway
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # pathway -> recipe fields the artifact must have
    artifacts: Path | None = None
    profile: str | None = None  # built-in name or a .toml path

    def recipe_mismatches(self, pathway: str, recipe: dict[str, Any]) -> list[str]:
        """Where an artifact's manifest recipe differs from what the project expects."""
        expected = self.recipes.get(pathway, {})
        return [f"recipe {key} is {recipe.get(key)!r}, the project expects {value!r}" for key, value in expected.items() if recipe.get(key) != value]


TOP_KEYS = {"models": list, "pathways": list, "recipes": dict, "artifacts": str, "profile": str}
MODEL_KEYS = {f.name: f.type for f in fields(ModelEntry)}
_TYPES = {"str": str, "int": int, "bool": bool, "list[str]": list}


def _type_of(annotation: str) -> type:
    return _TYPES[annotation.replace(" | None", "")]


def _check(label: str, where: str, data: dict[str, Any], known: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{label}: unknown key {where}{key!r}; known: {', '.join(known)}")
        kind = known[key] if isinstance(known[key], type) else _type_of(known[key])
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{label}: {where}{key} must be {kind.__name__}, got {value!r}")


def parse_project(data: dict[str, Any], path: Path, label: str) -> Project:
    _check(label, "", data, TOP_KEYS)
    base = path.parent

    def resolve(value: str | None) -> str | None:
        if value is None:
            return None
        if ":" in value and not (base / value).exists() and not Path(value).is_absolute():
            return value  # module:factory
        return str((base / value).expanduser())

    models = []
    for number, raw in enumerate(data.get("models", []), start=1):
        if not isinstance(raw, dict):
            raise ConfigError(f"{label}: models entry {number} must be a table ([[models]])")
        _check(label, f"[[models]] #{number} ", raw, MODEL_KEYS)
        if "source" not in raw:
            raise ConfigError(f"{label}: [[models]] #{number} has no 'source' (a checkpoint directory, .onnx file or module:factory)")
        entry = ModelEntry(**raw)
        entry.source = resolve(entry.source)
        for key in ("eval_text", "eval_prompts", "eval_pairs", "calibration_text"):
            setattr(entry, key, resolve(getattr(entry, key)))
        models.append(entry)
    pathways = data.get("pathways", [])
    recipes = data.get("recipes", {})
    from harness.pathways.base import all_pathways

    known = {p.name for p in all_pathways()}
    for name in [*pathways, *recipes]:
        if name not in known:
            raise ConfigError(f"{label}: unknown pathway {name!r}; known: {', '.join(sorted(known))}")
    artifacts = Path(resolve(data["artifacts"])) if data.get("artifacts") else None
    profile = data.get("profile")
    if profile and profile.endswith(".toml"):
        profile = resolve(profile)
    return Project(path, models, list(pathways), dict(recipes), artifacts, profile)


def load_project(start: Path) -> Project | None:
    """The project file in `start` or the nearest parent: qconform.toml first, else a
    pyproject.toml with [tool.qconform]; None when there is neither."""
    start = Path(start).resolve()
    for directory in (start, *start.parents):
        for name in (FILE, "pyproject.toml"):
            path = directory / name
            if not path.is_file():
                continue
            try:
                data = tomllib.loads(path.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc})") from None
            if name == "pyproject.toml":
                data = data.get("tool", {}).get("qconform")
                if data is None:
                    continue
                return parse_project(data, path, f"{path} [tool.qconform]")
            return parse_project(data, path, str(path))
    return None


def init_project(model_path: Path, out: Path) -> str:
    """Write a starting qconform.toml for a checkpoint directory (or .onnx file), every key explained;
    returns the text. Refuses to overwrite an existing file."""
    from harness.models.hf import CAUSAL_LM, DEFAULT_METRICS, checkpoint_kind, sanitize_id

    model_path, out = Path(model_path).resolve(), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; edit it or remove it first")
    if model_path.is_dir():
        kind = checkpoint_kind(json.loads((model_path / "config.json").read_text())) if (model_path / "config.json").is_file() else CAUSAL_LM
    elif model_path.suffix == ".onnx":
        kind = "unknown"
    else:
        raise ValueError(f"{model_path}: not a checkpoint directory or an .onnx file")
    try:
        source = model_path.relative_to(out.resolve().parent)
    except ValueError:
        source = model_path
    model_id = sanitize_id(model_path.stem if model_path.is_file() else model_path.name)
    causal = kind != "encoder"
    metrics = DEFAULT_METRICS["causal-lm" if causal else "encoder"]
    data_lines = (
        [
            "# Evaluation text: perplexity and KL divergence over fixed windows of seq_len tokens",
            "# (default: qconform's shipped English text). Keep it apart from the calibration text.",
            '# eval_text = "data/eval.txt"',
            "# Prompts for greedy generation, one JSON object per line: {\"prompt\": \"...\"} (default: shipped).",
            '# eval_prompts = "data/prompts.jsonl"',
            "# Text the quantizer calibrates activation ranges on (default: a different shipped text).",
            '# calibration_text = "data/calibration.txt"',
            "# Evaluation tokens in total, window length, windows per batch.",
            "eval_tokens = 512",
            "seq_len = 128",
            "batch_size = 2",
            "# Calibration tokens (windows of seq_len).",
            "calibration_tokens = 512",
            "# Greedy generation: tokens per prompt and how many prompts.",
            "new_tokens = 16",
            "generation_prompts = 8",
        ]
        if causal
        else [
            '# Labeled sentence pairs, one JSON object per line: {"a": "...", "b": "...", "label": 2}',
            "# (higher label = more similar; default: qconform's shipped 24 pairs).",
            '# eval_pairs = "data/pairs.jsonl"',
            "# Calibration sentences, one per line (default: shipped).",
            '# calibration_text = "data/calibration_sentences.txt"',
            "# Tokens per sentence (padded/truncated) and pairs per batch.",
            "seq_len = 64",
            "batch_size = 2",
        ]
    )
    text = "\n".join(
        [
            f"# qconform project file (written by `qconform init --model {model_path}`).",
            "# `qconform run` and plain `pytest` read it from this directory or a parent. Unknown keys are errors.",
            "",
            "# Threshold profile: a built-in name (cpu, h100, rtx5090, generic-gpu) or a .toml path.",
            "# A new model has no thresholds yet: `qconform calibrate` measures clean runs and writes them.",
            '# profile = "qconform-profile.toml"',
            "",
            "# Pathways to gate (default: all): inc-int8-qdq, inc-fp8-ref, inc-fp8-ref-e5m2, torchao-fp8-rowwise, tensorrt ...",
            'pathways = ["inc-int8-qdq", "inc-fp8-ref"]',
            "",
            "# Pre-built artifacts instead of building them: DIR/<model id>/<pathway>/manifest.json.",
            '# artifacts = "artifacts"',
            "",
            "# What each pathway's artifact recipe must say (checked against its manifest).",
            '[recipes."inc-int8-qdq"]',
            'weight_granularity = "per-channel"',
            "",
            "[[models]]",
            "# A Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer files), an fp32",
            "# .onnx file with its tokenizer beside it, or module:factory returning a ModelSpec.",
            f'source = "{source}"',
            "# The id used in reports, profiles, golden and artifact folders (default: the folder name).",
            f'id = "{model_id}"',
            f"# Gated metrics ({'causal LM' if causal else 'encoder'}); each needs a threshold in the profile.",
            "# Also available: " + ("kl_max, rel_ppl_increase" if causal else "(none)") + ".",
            f"metrics = [{', '.join(json.dumps(m) for m in metrics)}]",
            *data_lines,
            "# Weight layers INT8 keeps in float: regexes over ONNX node names.",
            "int8_keep_float = []",
            "# Load pickle weights (*.bin): they can run code; convert to safetensors instead.",
            "allow_pickle = false",
            "",
        ]
    )
    out.write_text(text)
    return text


def find_model(name_or_source: str, start: Path):
    """A model for commands outside a run (`qconform import`): a checkpoint directory, .onnx file or
    module:factory; else a [[models]] id of the project file found from `start`; else a built-in id."""
    from harness.models.base import get_model
    from harness.models.hf import model_from_source

    if Path(name_or_source).expanduser().exists() or ":" in name_or_source:
        return model_from_source(name_or_source)
    project = load_project(start)
    for entry in project.models if project else []:
        spec = entry.spec()
        if spec.id == name_or_source:
            return spec
    return get_model(name_or_source)
