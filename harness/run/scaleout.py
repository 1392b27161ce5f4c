"""Running on many GPUs and many machines: one GPU per xdist worker, perf tests serialized per GPU,
shards across CI machines balanced by the tests' stored durations (pytest-split's least-duration
groups), and the durations file those shards read."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import pytest

GPU_KEY = "qconform_gpu"


class WorkerGpus:
    """xdist controller side: hand each worker one GPU, round-robin (registered only with xdist)."""

    def __init__(self, gpu_count: int):
        self.gpu_count = gpu_count

    def pytest_configure_node(self, node) -> None:
        if self.gpu_count:
            worker = int(node.gateway.id.removeprefix("gw"))
            node.workerinput[GPU_KEY] = str(worker % self.gpu_count)


def visible_gpu_count() -> int:
    # Counted without creating a CUDA context in the controller.
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def pin_worker_gpu(config: pytest.Config) -> None:
    """On an xdist worker, see only the GPU the controller assigned, before anything touches CUDA."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput and GPU_KEY in workerinput:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else None
        index = int(workerinput[GPU_KEY])
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[index] if ids else str(index)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock (flock) on `path` for the length of the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def exclusive_gpu(device_uuid: str):
    """Hold an inter-process lock on one GPU: timings of two perf tests must never overlap."""
    return file_lock(Path(tempfile.gettempdir()) / f"qconform-gpu-{hashlib.sha256(device_uuid.encode()).hexdigest()[:16]}.lock")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard takes K/N with 1 <= K <= N, got {text!r}") from None
    if not 1 <= index <= total:
        raise pytest.UsageError(f"--shard takes K/N with 1 <= K <= N, got {text!r}")
    return index, total


DURATIONS = "durations.json"  # a run's own, in its report directory
PROJECT_DURATIONS = "qconform-durations.json"  # the stored one, beside the team's qconform.toml
PACKAGED_DURATIONS = Path(__file__).resolve().parent.parent / "data" / "durations.json"  # the embedded run's


def duration_key(nodeid: str) -> str:
    """A test's key in a durations file: its id from the suite file's name on, so a run from a
    checkout (`suites/test_x.py::...`) and one from installed suites (a path into site-packages,
    relative to the working directory) share it."""
    path, sep, rest = nodeid.partition("::")
    return path.rsplit("/", 1)[-1] + sep + rest


def durations_path(project, for_writing: bool = False) -> Path:
    """The stored durations: qconform-durations.json beside the team's project file (qconform.toml)
    when it exists, or when `qconform durations` is to write one; else the embedded run's."""
    if project is not None:
        own = Path(project.path).parent / PROJECT_DURATIONS
        if for_writing or own.is_file():
            return own
    return PACKAGED_DURATIONS


def read_durations(path: Path | None) -> dict[str, float]:
    """{key: seconds} of a durations file; none (missing file) is {}: every test then weighs the same."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise pytest.UsageError(f"{path}: not a durations file ({{test id: seconds}}): {exc}") from None


def shard_groups(items: list, total: int, durations: dict[str, float]) -> list:
    """`total` disjoint groups covering `items`, balanced by duration: pytest-split's least-duration
    algorithm (longest first, each to the group with the least time so far). A test without a stored
    duration weighs the mean of the stored ones among `items` (1 s when none is stored). Every machine
    must collect the same items in the same order (same suites, same -m/-k) to agree on the groups."""
    from pytest_split.algorithms import LeastDurationAlgorithm

    by_nodeid = {item.nodeid: durations[duration_key(item.nodeid)] for item in items if duration_key(item.nodeid) in durations}
    return LeastDurationAlgorithm()(total, items, by_nodeid)


def write_run_durations(report_dir: Path, seconds: dict[str, float]) -> Path:
    """<report-dir>/durations.json: this run's setup + call + teardown seconds per test, by key."""
    path = Path(report_dir) / DURATIONS
    _write_durations(path, {duration_key(nodeid): s for nodeid, s in seconds.items()})
    return path


def refresh_durations(sources: Iterable[Path], out: Path) -> tuple[int, int]:
    """Fold runs' durations.json files (each shard's) into the stored file `out`: a test measured
    now takes its new time, the others keep theirs. Returns (tests updated, tests stored)."""
    stored = read_durations(out)
    fresh: dict[str, float] = {}
    for source in sources:
        source = Path(source)
        path = source / DURATIONS if source.is_dir() else source
        if not path.is_file():
            raise pytest.UsageError(f"no durations at {path}: pass a run's report directory or its {DURATIONS}")
        fresh.update(read_durations(path))
    stored.update(fresh)
    _write_durations(Path(out), stored)
    return len(fresh), len(stored)


def _write_durations(path: Path, durations: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps({k: round(v, 3) for k, v in sorted(durations.items())}, indent=1) + "\n")
    temporary.replace(path)
