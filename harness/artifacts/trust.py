"""Loading an artifact or a model never runs code that came with it.

A release gate loads files from pipelines it does not control, and a manifest's sha256 protects
against corruption, not against someone who rewrites the manifest too. So every loader goes
through this module first, which refuses executable content before any library sees the file,
with one line naming the file:

- `.npz`: plain arrays only (`allow_pickle=False`); an object array is a pickle.
- torch files: `weights_only=True` only.
- Hugging Face checkpoints: safetensors weights, never checkpoint code (`trust_remote_code=False`);
  pickle weights only with an explicit opt-in, and then still through `weights_only=True`.
- ONNX: external data inside the artifact directory, and only operator domains ONNX Runtime
  implements itself (a custom domain needs a custom-op library, i.e. native code).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from harness.artifacts.errors import ArtifactError


class UnsafeContentError(ArtifactError):
    """An artifact or checkpoint holds content that would run code when loaded."""


# --- numpy ----------------------------------------------------------------------------------------


def check_npz(path: Path) -> None:
    """Refuse an .npz whose members are not plain arrays (an object array is unpickled on load)."""
    import numpy as np

    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ArtifactError(f"{path}: not an .npz archive (a bare .npy array)")
        with archive:
            for member in archive.files:
                archive[member]  # reading a member is what unpickles it; with allow_pickle=False it raises
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise ArtifactError(f"{path}: not a readable .npz ({exc})") from exc
        raise UnsafeContentError(f"{path}: holds pickled Python objects (an object array), which can run code on load; qconform reads plain arrays only") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # truncated or not a zip
        raise ArtifactError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from exc


# --- torch ----------------------------------------------------------------------------------------


def load_torch_file(path: Path, map_location: Any = None, mmap: bool = False) -> Any:
    """torch.load with weights_only=True; a file that needs arbitrary unpickling is refused. `mmap`:
    the tensors stay in the file's pages until used (a release-size state dict is not read into host
    memory at once)."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch's message lists the global it refused, e.g. "Unsupported global: GLOBAL posix.system".
        why = str(exc).splitlines()[0] if str(exc) else "unsupported pickle content"
        raise UnsafeContentError(
            f"{path}: needs torch.load(weights_only=False), i.e. unpickling arbitrary objects that can run code; qconform never does ({why})"
        ) from exc
    except Exception as exc:  # truncated or not a torch file at all
        raise ArtifactError(f"{path}: not a loadable torch file ({type(exc).__name__}: {str(exc).strip()[:300]})") from exc


# --- Hugging Face checkpoints -----------------------------------------------------------------------

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
ALLOW_PICKLE_FLAG = "--allow-pickle-checkpoint"

# For AutoConfig / AutoTokenizer.from_pretrained on a checked directory.
HF_COMMON_KWARGS: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
# For AutoModel*.from_pretrained: what check_checkpoint_dir returns for a safetensors checkpoint.
HF_LOAD_KWARGS: dict[str, Any] = {**HF_COMMON_KWARGS, "use_safetensors": True, "weights_only": True}


def check_checkpoint_dir(path: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Check a local Hugging Face checkpoint directory; return the from_pretrained kwargs to load it with.

    Safetensors weights are required unless `allow_pickle` (the CLI's --allow-pickle-checkpoint);
    then every pickle file is first opened here with weights_only=True, and transformers loads
    with weights_only=True too. Checkpoint code (`auto_map`, *.py) is refused: qconform always
    loads with trust_remote_code=False.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ArtifactError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
    code = sorted(str(p.relative_to(path)) for p in path.rglob("*.py"))
    if code:
        raise UnsafeContentError(f"{path / code[0]}: checkpoint ships Python code; qconform never runs checkpoint code (trust_remote_code=False)")
    for config in sorted(path.glob("*.json")):
        try:
            data = json.loads(config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{config}: not valid JSON ({exc})") from exc
        if isinstance(data, dict) and "auto_map" in data:
            raise UnsafeContentError(
                f"{config}: auto_map points to custom model code ({', '.join(sorted(data['auto_map']))}); qconform never runs checkpoint code (trust_remote_code=False)"
            )
    pickles = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    if any(path.glob("*.safetensors")):
        return dict(HF_LOAD_KWARGS)  # use_safetensors=True: any pickle file beside them is never opened
    if not pickles:
        raise ArtifactError(f"{path}: no model weights (*.safetensors) in the checkpoint")
    if not allow_pickle:
        raise UnsafeContentError(
            f"{pickles[0]}: pickle-based weights can run code on load; convert the checkpoint to safetensors, "
            f"or pass {ALLOW_PICKLE_FLAG} to load them with torch.load(weights_only=True)"
        )
    for pickled in pickles:
        load_torch_file(pickled, map_location="meta")  # refuses anything weights_only=True cannot read
    return {**HF_LOAD_KWARGS, "use_safetensors": False}


# --- ONNX -----------------------------------------------------------------------------------------

# Operator domains ONNX Runtime implements natively; any other needs a custom-op library (native
# code), which qconform never registers (no SessionOptions.register_custom_ops_library anywhere).
ORT_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


def _nodes(graph):
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:  # If / Loop / Scan bodies
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _nodes(sub)


def external_locations(model) -> dict[str, str]:
    """Tensor name -> external data location (relative to the .onnx file), over the same walk
    onnx.load makes to read external data (initializers, Constant attributes, subgraphs)."""
    from onnx import external_data_helper

    return {
        tensor.name: external_data_helper.ExternalDataInfo(tensor).location
        for tensor in external_data_helper._get_all_tensors(model)
        if external_data_helper.uses_external_data(tensor)
    }


def onnx_external_data(path: Path) -> dict[str, str]:
    """The external data an ONNX file references (tensor -> location relative to the file), read
    without loading any of it; ArtifactError when the file does not parse."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError etc. for a bad file
        raise ArtifactError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {str(exc).strip()[:300]})") from exc
    return external_locations(model)


def check_onnx(path: Path, artifact_dir: Path | None = None, weights: bool = True):
    """Load an ONNX file safely and return its checked ModelProto.

    External data must resolve inside `artifact_dir` (default: the file's directory), and every node
    must be in a domain ONNX Runtime implements or a function defined in the model itself. A
    truncated or invalid file is an ArtifactError, not a crash. `weights=False`: the tensors stored
    as external data stay references to their files (Graph(model, base_dir).array reads one when
    asked): a runner whose session reads the files itself holds no second copy of the weights.
    """
    import onnx
    from onnx import external_data_helper

    path = Path(path)
    root = Path(artifact_dir or path.parent).resolve()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError etc. for a bad file
        raise ArtifactError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {str(exc).strip()[:300]})") from exc

    external = external_locations(model)
    for tensor, location in external.items():
        if not (path.parent / location).resolve().is_relative_to(root):
            raise UnsafeContentError(f"{path}: tensor {tensor!r} reads external data {location!r} outside the artifact directory {root}")
        if not (path.parent / location).is_file():
            raise ArtifactError(f"{path}: tensor {tensor!r} stores its data in {location!r}, which is missing (expected at {path.parent / location})")

    local_functions = {(f.domain, f.name) for f in model.functions}
    function_nodes = (node for function in model.functions for node in function.node)
    for node in (*_nodes(model.graph), *function_nodes):
        if node.domain not in ORT_DOMAINS and (node.domain, node.op_type) not in local_functions:
            raise UnsafeContentError(
                f"{path}: node {node.name or node.op_type!r} uses custom-op domain {node.domain!r}, "
                "which needs a native custom-op library; qconform never loads one from an artifact"
            )

    try:
        if external:  # by path: a graph with external data may be over protobuf's 2 GB in memory
            onnx.checker.check_model(str(path))
        if weights:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        if not external:
            onnx.checker.check_model(model)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {str(exc).strip()[:300]})") from exc
    return model
