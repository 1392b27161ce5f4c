"""Running on many GPUs and many machines: one GPU per xdist worker, perf tests serialized per GPU,
deterministic sharding across CI machines, and merging the shards' summary.json files."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

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


def in_shard(nodeid: str, index: int, total: int) -> bool:
    """Stable across machines and runs: a test's shard depends on its id alone."""
    return int(hashlib.sha256(nodeid.encode()).hexdigest(), 16) % total == index - 1
