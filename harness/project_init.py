"""`qconform init`: a starting project file for a checkpoint or ONNX file, written from what its
model kind declares (metrics, data keys), every key explained. A command: it reads the model, so it
sits above config.py, which only parses."""

from __future__ import annotations

import json
from pathlib import Path


def init_project(model_path: Path, out: Path) -> str:
    """Write a starting qconform.toml for a checkpoint directory (or .onnx file), every key explained;
    returns the text. Refuses to overwrite an existing file. The metrics and data keys are the model
    kind's (harness/models/kinds.py), detected as a run detects them."""
    from harness.judge.gates import METRICS, threshold_key
    from harness.models.hf import sanitize_id
    from harness.models.kinds import kind_for_config, kind_for_onnx

    model_path, out = Path(model_path).resolve(), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; edit it or remove it first")
    if model_path.is_dir():
        config = model_path / "config.json"
        if not config.is_file():
            raise ValueError(f"{model_path}: not a Hugging Face checkpoint directory (no config.json)")
        try:
            kind = kind_for_config(json.loads(config.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{config}: not valid JSON ({exc})") from None
    elif model_path.suffix == ".onnx":
        if not model_path.is_file():
            raise ValueError(f"{model_path}: no such ONNX file")
        import onnx

        try:
            kind = kind_for_onnx([o.name for o in onnx.load(str(model_path), load_external_data=False).graph.output])
        except Exception as exc:  # onnx's DecodeError and friends
            raise ValueError(f"{model_path}: not a readable ONNX file ({type(exc).__name__})") from None
    else:
        raise ValueError(f"{model_path}: not a checkpoint directory or an .onnx file")
    try:
        source = model_path.relative_to(out.resolve().parent)
    except ValueError:
        source = model_path
    model_id = sanitize_id(model_path.stem if model_path.is_file() else model_path.name)
    metrics = kind.default_metrics

    def gateable(name: str) -> bool:
        try:
            return threshold_key(name) in METRICS
        except KeyError:
            return False

    also = sorted(name for name in kind.measurable_metrics() if name not in metrics and gateable(name))
    data_lines = kind.init_lines()
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
            f"# Gated metrics ({kind.title}); each needs a threshold in the profile.",
            "# Also available: " + (", ".join(also) or "(none)") + ".",
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
