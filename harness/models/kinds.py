"""Model kinds: what a kind of model (causal LM, encoder, ...) brings to a checkpoint, each kind in
one module of harness/models/ (causal_lm.py, encoder.py), found here by name or by its config.json.

HuggingFaceModel (harness/models/hf.py) loads the checkpoint, its tokenizer, refuses what is not
trusted and validates the files; everything else it asks of its kind object, one per model
(`model.model_kind`, bound to it as `self.model`): inputs, evaluation, metrics, golden content, the
export wrapper and the `qconform init` text for the kind's data.

A new kind (an image classifier, say) is one module that subclasses ModelKind, calls
`register_kind(TheKind)` at import (imported by harness/models/__init__.py, or by another package
through the entry point group "qconform.kinds"), plus its data files and profile tables. It sets
`name` (the string ModelSpec.kind keeps: policy tables `[<pathway>.default-<name>]` in defaults.toml,
or a profile table per model, hold its thresholds), `title`, `auto_class` (+ `load_options`),
`output_names` and `dynamic_axes` (+ `input_names`, `uses_tokenizer`), `default_metrics`, `data`
(its data keys: option name, shipped default file, the init comment) and `init_settings`; and it
implements `matches(config)` (is a config.json of this kind: its architectures), `wrap(module)` (the
export wrapper: from input_names to a plain output tensor), `eval_batches()` and
`calibration_inputs()` (from its data files) and `metrics(reference, candidate)` (every number it
measures; each gated one needs an entry in harness/gates.METRICS and profile keys), with
`task_metric_samples(reference)` the items each metric is measured on. `evaluate` (e.g. greedy
generation), `evidence`, `golden_inputs`, `golden_digest`, `golden_metrics`, `check_data` and
`matches_onnx` have defaults here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from harness.core import Tensors, costed, load_entry_points
from harness.models.base import ModelSpec

if TYPE_CHECKING:
    from torch import nn


def default_data(name: str) -> Path:
    """A data file shipped with qconform (harness/data/)."""
    return Path(str(resources.files("harness.data") / name))


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def read_jsonl(path: Path, keys: tuple[str, ...], numeric: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: not a JSON object ({type(row).__name__}); expected keys {', '.join(keys)}")
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{path}:{number}: missing key(s) {', '.join(missing)}")
        for key in numeric:
            if isinstance(row[key], bool) or not isinstance(row[key], (int, float)):
                raise ValueError(f"{path}:{number}: {key} {row[key]!r} is not a number")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


@dataclass(frozen=True)
class DataKey:
    """One data file a kind reads: its option name (a [[models]] key, a HuggingFaceModel keyword),
    the file shipped in harness/data/ used when none is given, and the `qconform init` comment."""

    name: str
    default: str  # a file name in harness/data/, or an absolute path (a kind shipped elsewhere)
    help: tuple[str, ...]
    required_by: str | tuple[str, ...] | None = None  # read only when (one of) these metrics is gated; None: always

    def needed(self, metrics: tuple[str, ...]) -> bool:
        if self.required_by is None:
            return True
        names = (self.required_by,) if isinstance(self.required_by, str) else self.required_by
        return any(name in metrics for name in names)

    def default_path(self) -> Path:
        return Path(self.default) if Path(self.default).is_absolute() else default_data(self.default)


class ModelKind:
    """A kind of model, bound to one model (`self.model`: a HuggingFaceModel or OnnxFileModel, whose
    tokenizer, settings (seq_len, batch_size, ...), `data` files and task_metric_names it reads)."""

    name: str = ""  # ModelSpec.kind; policy tables [<pathway>.default-<name>]
    title: str = ""  # in words, for `qconform init`
    fallback: bool = False  # the kind of a checkpoint no other kind matches (tried last)
    auto_class: str = "AutoModel"  # the transformers Auto class that loads the checkpoint
    load_options: dict[str, Any] = {}  # extra from_pretrained options, dropped for a class that takes none
    uses_tokenizer: bool = True
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    output_names: tuple[str, ...] = ()
    dynamic_axes: dict[str, dict[int, str]] = {}
    default_metrics: tuple[str, ...] = ()
    data: tuple[DataKey, ...] = ()
    init_settings: tuple[str, ...] = ()  # `qconform init` lines for the kind's numeric settings

    def __init__(self, model: Any):
        self.model = model

    # -- which checkpoints -------------------------------------------------------------------------
    @classmethod
    def matches(cls, config: dict[str, Any]) -> bool:
        """Whether a checkpoint's config.json is of this kind."""
        raise NotImplementedError

    @classmethod
    def matches_onnx(cls, outputs: list[str]) -> bool:
        """Whether an fp32 ONNX file with these graph outputs is of this kind."""
        return bool(cls.output_names) and cls.output_names[0] in outputs

    @classmethod
    def measurable_metrics(cls) -> tuple[str, ...]:
        """Every metric name `metrics()` returns (gated or not): for `qconform init`'s list of
        metrics that may be declared. Default: the default metrics."""
        return cls.default_metrics

    @classmethod
    def init_lines(cls) -> list[str]:
        """The `qconform init` text for this kind's data keys and settings."""
        lines = []
        for key in cls.data:
            lines += [*key.help, f'# {key.name} = "data/{Path(key.default).name}"']
        return [*lines, *cls.init_settings]

    # -- the module --------------------------------------------------------------------------------
    def wrap(self, module: "nn.Module") -> "nn.Module":
        """The reference module qconform runs and exports: input_names in, output_names out."""
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------------------
    def data_files(self) -> dict[str, Path]:
        """The data files this model reads, by option name (what validation checks)."""
        return {key.name: self.model.data[key.name] for key in self.data if key.needed(self.model.task_metric_names)}

    def eval_batches(self) -> list[Tensors]:
        raise NotImplementedError

    def floor_metrics(self, fp32: Tensors, reference: Tensors) -> dict[str, float]:
        """The kind's own numbers for the precision floor (beside the output SQNR): none by default."""
        return {}

    def calibration_inputs(self) -> list[Tensors]:
        raise NotImplementedError

    def check_data(self) -> None:
        """Parse every data file (a ValueError names the file and line): by default, build the inputs."""
        self.eval_batches()
        self.calibration_inputs()

    # -- evaluation, metrics, evidence ---------------------------------------------------------------
    def evaluate(self, run: Callable[[Tensors], Tensors], costs: dict[str, Any] | None = None) -> Tensors:
        """Everything the gates compare: each eval batch run on its own, outputs concatenated
        (`costs`: as ModelSpec.evaluate)."""
        outputs = costed(costs, "eval batches", run, lambda counted: [counted(batch) for batch in self.model.eval_batches()])
        return {name: np.concatenate([o[name] for o in outputs]) for name in self.output_names}

    def metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        """Every number this kind measures, gated or not."""
        raise NotImplementedError

    def task_metric_samples(self, reference: Tensors) -> dict[str, int]:
        """Per metric: the items it is measured on (whether that makes it a proportion or a
        correlation is the metric table's: harness/gates.Metric.sample). Empty when not known."""
        return {}

    def evidence(self, reference: Tensors, candidate: Tensors) -> dict[str, Any]:
        return {"statistics": self.metrics(reference, candidate)}

    # -- goldens -------------------------------------------------------------------------------------
    def golden_inputs(self) -> Tensors:
        return self.model.eval_inputs()

    def golden_digest(self, outputs: Tensors) -> Tensors:
        return ModelSpec.golden_digest(self.model, outputs)

    def golden_metrics(self, golden: Tensors, outputs: Tensors) -> dict[str, float]:
        return ModelSpec.golden_metrics(self.model, golden, outputs)


# -- the registry ---------------------------------------------------------------------------------

KINDS: dict[str, type[ModelKind]] = {}


def register_kind(kind: type[ModelKind]) -> type[ModelKind]:
    if not kind.name:
        raise ValueError(f"model kind {kind.__name__} has no name")
    if KINDS.get(kind.name, kind) is not kind:
        raise ValueError(f"model kind {kind.name!r} registered twice")
    KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    KINDS.pop(name, None)


def _load_kinds() -> None:
    # The built-in kinds registered when harness/models/__init__.py ran (before this module: it is
    # the package's). Other packages' kinds: entry points in group "qconform.kinds" (a module, or a ModelKind subclass).
    load_entry_points("qconform.kinds", ModelKind, register_kind, lambda kind: kind.name in KINDS)


def all_kinds() -> list[type[ModelKind]]:
    """Registered kinds, those that match specifically first, fallbacks last."""
    _load_kinds()
    return sorted(KINDS.values(), key=lambda kind: kind.fallback)


def get_kind(name: str) -> type[ModelKind]:
    _load_kinds()
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown model kind {name!r}; known: {', '.join(sorted(KINDS))}") from None


def kind_for_config(config: dict[str, Any]) -> type[ModelKind]:
    """The kind of a checkpoint from its config.json: the first kind that matches, else the fallback."""
    kinds = all_kinds()
    for kind in kinds:
        if kind.fallback or kind.matches(config):
            return kind
    raise ValueError(f"no model kind matches architectures {config.get('architectures')}; known kinds: {', '.join(k.name for k in kinds)}")


def kind_for_onnx(outputs: list[str]) -> type[ModelKind]:
    """The kind of an fp32 ONNX file from its graph outputs: the first kind that matches, else the fallback."""
    kinds = all_kinds()
    for kind in kinds:
        if kind.fallback or kind.matches_onnx(outputs):
            return kind
    raise ValueError(f"no model kind matches ONNX outputs {outputs}; known kinds: {', '.join(k.name for k in kinds)}")
