"""Reading a payload made outside qconform (`qconform import`): the refusals, and the helpers each
pathway's payload reader (`Pathway.read_payload`, in the pathway's own module) shares. A reader
checks the payload against the model first and reads the recipe from the payload itself.

Imports no pathway and no command: pathways import it, harness/importer.py calls them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.artifacts.errors import ArtifactError

if TYPE_CHECKING:
    from harness.models.base import ModelSpec

SHOWN = 5  # problems named in one refusal; the rest are counted


class ImportRefused(ValueError):
    """The payload cannot be imported (a missing file, missing ONNX external data, a bad argument):
    a usage error, exit 4. The message says why."""


class WrongArtifact(ImportRefused):
    """The payload is another model's (or another pathway's): the identity finding a run reports as
    the failed `artifact_identity` check, so the same exit code, 1 (FAIL)."""


class NoPayloadReader(ImportRefused):
    """The pathway cannot read its payload's recipe (Pathway.read_payload's default): the recipe
    must then come from `--set KEY=VALUE`."""


# -- identity checks: does the payload belong to the model? ------------------------------------


def same_model(check: Callable, payload_content: Any, model: "ModelSpec", payload: Path) -> None:
    """The shared identity checks (harness/artifacts/identity.py, also run when artifacts load), as a refusal."""
    try:
        check(payload_content, model)
    except ArtifactError as exc:
        raise WrongArtifact(f"{payload}: {exc}") from None


def refuse(problems: list[str], payload: Path, model: "ModelSpec") -> None:
    problems = [p for p in problems if p]
    if problems:
        shown = "; ".join(problems[:SHOWN]) + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")
        raise WrongArtifact(f"{payload}: does not belong to model {model.id}: {shown}")


# -- what the payload says -------------------------------------------------------------------


def single(values: set, what: str, payload: Path) -> Any:
    if len(values) != 1:
        raise ImportRefused(f"{payload}: {what} is not uniform ({sorted(map(str, values))}); give it with --set KEY=VALUE")
    return next(iter(values))


def pick(payloads: list[Path], suffixes: tuple[str, ...], what: str) -> Path:
    found = [p for p in payloads if p.suffix in suffixes]
    if len(found) != 1:
        raise ImportRefused(f"expected exactly one {what} ({'/'.join(suffixes)}) among {[str(p) for p in payloads]}")
    return found[0]


def load_state_dict(payload: Path) -> dict:
    """A torch state dict, through torch.load(weights_only=True) (harness/artifacts/trust.py); the pathway's
    tensor types must already be registered as safe globals (importing torchao does that)."""
    from harness.artifacts.trust import load_torch_file

    try:
        state = load_torch_file(payload, map_location="cpu")
    except ArtifactError as exc:  # not a torch file, or one that needs arbitrary unpickling
        raise ImportRefused(str(exc)) from exc
    if not isinstance(state, dict):
        raise ImportRefused(f"{payload}: holds a {type(state).__name__}, not a state dict (save module.state_dict())")
    return state


def external_data_files(onnx_path: Path, reserved: set[str]) -> dict[str, Path]:
    """The external data files an ONNX graph references (each location relative to the graph, as
    the artifact keeps it beside the graph), already checked to exist inside its directory."""
    from harness.artifacts.manifest import MANIFEST
    from harness.artifacts.trust import onnx_external_data

    files: dict[str, Path] = {}
    for location in sorted(set(onnx_external_data(onnx_path).values())):
        name = Path(location).as_posix()
        if name in reserved or name == MANIFEST:
            raise ImportRefused(f"{onnx_path}: its external data is named {location!r}, a name the artifact reserves; re-save the graph with another location")
        files[name] = onnx_path.parent / location
    return files


def read_quantized_state_dict(payloads: list[Path], model: "ModelSpec", quantized: Callable[[Any], bool], describe: Callable[[Any], dict[str, Any]], missing: str) -> tuple[Path, dict[str, Any]]:
    """A torchao-style checkpoint (module.state_dict() with tensor-subclass weights): the one
    payload, and the recipe its quantized weights state (`describe` per weight, uniform across
    layers) plus the dtype of the rest. Names, shapes and weight values are checked against the
    model; `missing` is the refusal when no weight is `quantized`."""
    import torch

    from harness.artifacts.identity import align_state_dict, check_state_dict_matches, weight_value_mismatch

    payload = pick(payloads, (".pt", ".pth", ".bin"), "torch state dict")
    state = load_state_dict(payload)
    expected = model.skeleton.state_dict()  # names and shapes; weights are read one layer at a time
    state = align_state_dict(state, expected)  # saved from the bare AutoModel: keys without the wrapper's prefix
    same_model(check_state_dict_matches, state, model, payload)  # tensor names and shapes
    found = {key: value for key, value in state.items() if quantized(value)}
    values = [weight_value_mismatch(key.removesuffix(".weight"), value.dequantize(torch.float32).numpy(), model.reference_weight(key.removesuffix(".weight"))) for key, value in found.items()]
    refuse(values, payload, model)
    if not found:
        raise ImportRefused(f"{payload}: {missing}")
    described = [describe(tensor) for tensor in found.values()]
    recipe = {key: single({d[key] for d in described}, key.replace("_", " "), payload) for key in described[0]}
    floats = {str(v.dtype).removeprefix("torch.") for k, v in state.items() if k not in found and v.is_floating_point()}
    if len(floats) == 1:
        recipe["model_dtype"] = floats.pop()
    return payload, recipe
