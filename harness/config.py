"""The project file: `qconform.toml` (or `[tool.qconform]` in pyproject.toml) declares the team's
models, their evaluation and calibration data, the pathways and the recipe each must have, pre-built
artifacts and the profile. Found in the working directory or a parent; relative paths are relative
to the file. Unknown keys are errors naming the key, so a typo never silently drops a setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

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
    eval_choices: str | None = None
    calibration_text: str | None = None
    metrics: list[str] | None = None
    eval_tokens: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    calibration_tokens: int | None = None
    new_tokens: int | None = None
    generation_prompts: int | None = None
    int8_keep_float: list[str] | None = None
    lm_eval_tasks: list[str] | None = None
    lm_eval_include: str | None = None
    speed_prefill: str | None = None  # own-model speed points, "BATCHxTOKENS"
    speed_decode: str | None = None
    allow_pickle: bool = False

    def options(self) -> dict[str, Any]:
        """Keyword arguments for model_from_source (only the keys the file sets)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source" and getattr(self, f.name) not in (None, False)}


@dataclass
class Project:
    path: Path  # the file it was read from
    models: list[ModelEntry] = field(default_factory=list)
    pathways: list[str] = field(default_factory=list)  # empty: every pathway
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # pathway -> recipe fields the artifact must have
    artifacts: Path | None = None
    profile: str | None = None  # built-in name or a .toml path
    label: str = ""  # how messages name the file ("<path> [tool.qconform]" for a pyproject.toml)
    # Memory budgets ("24GiB", "32GB", bytes) a case's estimated peak must fit; the --max-gpu-memory /
    # --max-host-memory options win (harness/run/memory.py). None: what the machine has.
    max_gpu_memory: str | None = None
    max_host_memory: str | None = None

    def check_pathway_names(self, known: Iterable[str]) -> None:
        """Every pathway the file names (`pathways`, `[recipes.<pathway>]`) is one of `known`; the
        caller gives the registered names (this module only parses)."""
        known = set(known)
        for name in [*self.pathways, *self.recipes]:
            if name not in known:
                raise ConfigError(f"{self.label or self.path}: unknown pathway {name!r}; known: {', '.join(sorted(known))}")


TOP_KEYS = {"models": list, "pathways": list, "recipes": dict, "artifacts": str, "profile": str, "max_gpu_memory": str, "max_host_memory": str}
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
        for key in ("eval_text", "eval_prompts", "eval_pairs", "eval_choices", "calibration_text", "lm_eval_include"):
            setattr(entry, key, resolve(getattr(entry, key)))
        models.append(entry)
    pathways = data.get("pathways", [])
    recipes = data.get("recipes", {})
    artifacts = Path(resolve(data["artifacts"])) if data.get("artifacts") else None
    profile = data.get("profile")
    if profile and profile.endswith(".toml"):
        profile = resolve(profile)
    return Project(path, models, list(pathways), dict(recipes), artifacts, profile, label, data.get("max_gpu_memory"), data.get("max_host_memory"))


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
