"""`qconform import`: wrap an artifact made by your own pipeline in a manifest, and
`qconform hash-weights`: the source-weights identity of a checkpoint.

The recipe is read from the payload itself wherever it says it (an ONNX QDQ graph's weight dtype,
granularity, axis, zero points and activation quantizers; a torchao state dict's quantized tensor
weights; INC FP8 dumps' formats and scales), and the payload is checked against the model first:
a payload of another model is refused with the mismatch named. Each pathway reads its own payload
(`Pathway.read_payload`, in its module; shared refusals and helpers in harness/artifacts/payloads.py)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.artifacts.errors import ArtifactError, ArtifactIdentityError
from harness.artifacts.manifest import load_artifact, write_manifest
from harness.artifacts.payloads import ImportRefused, NoPayloadReader, WrongArtifact
from harness.core import Device
from harness.models.base import ModelSpec
from harness.pathways.base import Pathway, get_pathway
from harness.run.session import find_model

# -- the commands ---------------------------------------------------------------------------------


def _assignments(items: list[str], what: str, parse: bool = True) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ImportRefused(f"{what} {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value) if parse else value
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


def import_artifact(pathway: Pathway, model: ModelSpec, payloads: list[Path], out_root: Path, overrides: dict[str, Any], tools: dict[str, str]) -> Path:
    """Check, copy and hash the payload into OUT/<model>/<pathway>/ with its manifest; returns that directory."""
    for path in payloads:
        if not path.is_file():
            raise ImportRefused(f"{path}: no such file")
    try:
        files, recipe = pathway.read_payload(payloads, model)  # each pathway reads its own payload
    except NoPayloadReader:
        if not overrides:
            raise
        files, recipe = {p.name: p for p in payloads}, {}
    target = out_root / model.id / pathway.name
    if target.exists():
        raise ImportRefused(f"{target}: already exists; remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".import-"))
    try:
        for name, source in files.items():  # the payload and the ONNX external data it references
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / name)
        device = Device.detect()
        write_manifest(
            staging,
            pathway=pathway.name,
            model_id=model.id,
            recipe={**recipe, **overrides},
            source_weights_sha256=model.weights_sha256,  # the identity checks above tie the payload to these weights
            tool_versions={**pathway.tool_versions(), **tools},
            built_on={"kind": device.kind, "name": device.name, "capability": list(device.capability) if device.capability else None},
        )
        load_artifact(staging, pathway=pathway.name, model_id=model.id)  # the contract, before it is published
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


USAGE_ERROR, WRONG_ARTIFACT = 4, 1  # harness.judge.gates.EXIT_CODES: USAGE ERROR, FAIL


def refusal(command: str, exc: BaseException) -> str:
    """One stderr line: `qconform <command>: <why>`."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"qconform {command}: {' '.join(str(text).split())}"


def import_selection(args: argparse.Namespace) -> tuple[str, str]:
    """(pathway name, model id or source) from `--pathways NAME` and `--models ID` / `--model SOURCE`
    (the names of `qconform run` and `build`; import takes exactly one of each)."""
    pathways = [p.strip() for p in (args.pathways or "").split(",") if p.strip()]
    if len(pathways) != 1:
        raise ValueError(f"--pathways: name exactly one pathway for the artifact (got {', '.join(pathways) or 'none'})")
    if args.models and args.model:
        raise ValueError("--models and --model: name the model once (--models ID, or --model SOURCE for a checkpoint)")
    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if args.models is not None and len(models) != 1:
        raise ValueError(f"--models: name exactly one model the payload was made from (got {', '.join(models) or 'none'})")
    if not models and not args.model:
        raise ValueError("name the model the payload was made from: --models ID (a [[models]] id of qconform.toml or a built-in) or --model SOURCE")
    return pathways[0], models[0] if models else args.model


def cmd_import(args: argparse.Namespace) -> int:
    try:
        pathway_name, model_name = import_selection(args)
        pathway, model = get_pathway(pathway_name), find_model(model_name, Path.cwd())
        target = import_artifact(pathway, model, [Path(p) for p in args.payload], Path(args.out), _assignments(args.set, "--set"), _assignments(args.tool_version, "--tool-version", parse=False))
    except (ImportRefused, ArtifactError, KeyError, ValueError, TypeError, OSError, ImportError) as exc:
        print(refusal("import", exc), file=sys.stderr)
        return WRONG_ARTIFACT if isinstance(exc, (WrongArtifact, ArtifactIdentityError)) else USAGE_ERROR
    artifact = load_artifact(target)
    print(f"qconform: imported {pathway.name} for {model.id} -> {target}")
    print(f"  recipe: {json.dumps(artifact.recipe, sort_keys=True)}")
    source = model_name == args.model and (Path(model_name).expanduser().exists() or ":" in model_name)
    named = f"--model {model_name}" if source else f"--models {model.id}"  # a source: --models cannot name it
    print(f"  run it: qconform run --artifacts {args.out} {named} --pathways {pathway.name}")
    return 0


def cmd_hash_weights(args: argparse.Namespace) -> int:
    from harness.artifacts.weights import hash_weights

    try:
        print(hash_weights(Path(args.path)))
    except (ValueError, OSError, ArtifactError) as exc:
        print(refusal("hash-weights", exc), file=sys.stderr)
        return USAGE_ERROR
    return 0


def add_parsers(sub, deprecated: type[argparse.Action]) -> None:
    """The `import` and `hash-weights` subcommands (cli.main dispatches through COMMANDS);
    `deprecated`: cli's action for an old option name kept one release."""
    imp = sub.add_parser("import", help="wrap an artifact made by your own pipeline in a manifest (checked against the model)")
    imp.add_argument("--pathways", metavar="NAME", help="the one pathway that will load it, e.g. inc-int8-qdq")
    imp.add_argument("--pathway", dest="pathways", action=deprecated, new="--pathways", metavar="NAME", help="deprecated: use --pathways")
    imp.add_argument("--models", metavar="ID", help="the model the payload was made from, by id: a [[models]] id of qconform.toml or a built-in")
    imp.add_argument("--model", metavar="SOURCE", help="the model the payload was made from, by source: a Hugging Face checkpoint directory, fp32 .onnx file or module:factory")
    imp.add_argument("payload", nargs="+", help="payload file(s): a QDQ .onnx (+ .engine for tensorrt), a torchao state dict .pt, INC FP8 *_hooks_*.json dumps")
    imp.add_argument("--out", required=True, metavar="DIR", help="artifacts root; writes DIR/<model>/<pathway>/ for `qconform run --artifacts DIR`")
    imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="add or override a recipe entry (VALUE parsed as JSON if it can be)")
    imp.add_argument("--tool-version", action="append", default=[], metavar="DIST=VERSION", help="record the version of a tool that made the payload")
    hw = sub.add_parser("hash-weights", help="print the source-weights sha256 of a checkpoint dir, .safetensors or .onnx (docs/artifacts.md)")
    hw.add_argument("path", help="a checkpoint directory, a .safetensors file or an .onnx file")


COMMANDS = {"import": cmd_import, "hash-weights": cmd_hash_weights}
