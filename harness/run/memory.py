"""The machine's memory budget and the up-front memory check of each case (issue 25): before any
test runs, a case whose estimated peak (harness/measure/memory.py, through the pathway's
memory_estimate) exceeds this machine's GPU or host memory is refused in one line when its pathway
was named, and skipped with the numbers when it was not. The session calls `skip_reason` and
`refusal`; everything else is here."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.measure.memory import Estimate, ModelSize, gib, model_size

if TYPE_CHECKING:
    from harness.run.session import Harness

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
ADVICE = "refused before any work; give a larger budget, a smaller model, or a machine with more memory"


def parse_size(text: str, where: str) -> int:
    """A memory size: bytes, or a number with a unit (24GiB, 32GB, 512MiB; B, KB, MB, GB, TB and the
    binary KiB ... TiB)."""
    match = SIZE.fullmatch(str(text).strip().lower())
    if match is None or match.group(2) not in UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"{where} {text!r}: not a memory size (e.g. 24GiB, 32GB or a number of bytes; units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def host_available() -> int:
    """What this process may still grow to: /proc/meminfo's MemAvailable + its own resident set
    (the run's peak is this process's); without /proc (not Linux), the physical memory."""
    fields = {}
    try:
        for name in ("/proc/meminfo", "/proc/self/status"):
            for line in Path(name).read_text().splitlines():
                key, _, value = line.partition(":")
                fields[key] = int(value.split()[0]) * 1024 if value.strip().endswith("kB") else 0
    except OSError:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return fields.get("MemAvailable", 0) + fields.get("VmRSS", 0)


def gpu_total() -> int | None:
    """GPU 0's total memory, None without a GPU."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.mem_get_info(0)[1] if torch.cuda.is_available() else None


@dataclass(frozen=True)
class Limit:
    bytes: int
    source: str  # where it came from, for the refusal line


class MemoryCheck:
    """One session's budget (option, else project file, else what the machine has) and model sizes."""

    def __init__(self, gpu: tuple[str, str] | None, host: tuple[str, str] | None):
        """`gpu`, `host`: (value, where it was set) when given, else what the machine has."""
        self._gpu = Limit(parse_size(*gpu), gpu[1]) if gpu else None
        self._host = Limit(parse_size(*host), host[1]) if host else None
        self._sizes: dict[str, ModelSize | None] = {}

    @classmethod
    def of(cls, harness: "Harness") -> "MemoryCheck":
        """The session's check, made once: --max-gpu-memory / --max-host-memory over the project
        file's max_gpu_memory / max_host_memory (a bad value: ValueError, a usage line)."""
        config = harness.config
        if CHECK not in config.stash:
            project = harness.project

            def chosen(kind: str) -> tuple[str, str] | None:
                option = config.getoption(f"max_{kind}_memory")
                if option:
                    return option, f"--max-{kind}-memory"
                value = getattr(project, f"max_{kind}_memory", None) if project else None
                return (value, f"max_{kind}_memory in {project.label or project.path}") if value else None

            config.stash[CHECK] = cls(chosen("gpu"), chosen("host"))
        return config.stash[CHECK]

    @functools.cached_property
    def gpu(self) -> Limit | None:
        if self._gpu is not None:
            return self._gpu
        total = gpu_total()
        return Limit(total, "GPU 0's total memory; set --max-gpu-memory") if total else None

    @functools.cached_property
    def host(self) -> Limit:
        return self._host or Limit(host_available(), "MemAvailable + this process's RSS; set --max-host-memory")

    def estimate(self, model: Any, pathway: Any, kind: str) -> Estimate | None:
        if model.id not in self._sizes:  # the headers are read once per model
            self._sizes[model.id] = model_size(model)
        size = self._sizes[model.id]
        return None if size is None else pathway.memory_estimate(size, model, kind)

    def over(self, model: Any, pathway: Any, kind: str) -> str | None:
        """Why the case cannot fit, with the numbers, or None (it fits, or there is no estimate)."""
        estimate = self.estimate(model, pathway, kind)
        if estimate is None:
            return None
        needs = []
        if kind == "cuda" and self.gpu is not None and estimate.gpu_bytes > self.gpu.bytes:
            needs.append(f"{gib(estimate.gpu_bytes)} of GPU memory ({estimate.gpu_basis}), this machine allows {gib(self.gpu.bytes)} ({self.gpu.source})")
        if estimate.host_bytes > self.host.bytes:
            needs.append(f"{gib(estimate.host_bytes)} of host memory ({estimate.host_basis}), this machine allows {gib(self.host.bytes)} ({self.host.source})")
        return f"model {model.id} on {pathway.name} ({kind}) needs an estimated {' and '.join(needs)}" if needs else None


CHECK = pytest.StashKey[MemoryCheck]()


def _present(harness: "Harness", kind: str) -> bool:
    """Only cases whose device is on this machine are estimated (the others skip already)."""
    return kind == "cpu" or kind == harness.device.kind


def skip_reason(harness: "Harness", pathway: Any, kind: str, model: Any = None) -> str | None:
    """A pathway the user did not name: why its case cannot fit here, or None. Without a model (the
    default pathway selection): only when no model of the run fits."""
    if pathway.name in harness.required or not _present(harness, kind):
        return None
    check = MemoryCheck.of(harness)
    reasons = [check.over(m, pathway, kind) for m in ([model] if model is not None else harness.models)]
    return reasons[0] if all(reasons) else None


def hold_gpu_to_budget(check: "MemoryCheck") -> str | None:
    """With a GPU budget given (--max-gpu-memory, or the project file's), torch's allocator keeps to
    it (set_per_process_memory_fraction, less what the CUDA context and other processes already
    hold): before it would grow past the budget it gives its cached blocks back and retries, so a
    phase's freed weights (a build's, a reference's) never sit beside the next phase's, and a case
    whose live tensors do not fit fails with CUDA out of memory rather than passing on a GPU bigger
    than the runner's. Measured before: an 8B build then load peaked at 30.5 GiB (nvidia-smi) on an
    H200 under a 29.8 GiB budget, the caching allocator holding the build's freed blocks. Returns
    what it set, for the log; None without a budget or a GPU."""
    if check._gpu is None:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    outside = total - free - torch.cuda.memory_reserved(0)  # the CUDA context, other processes
    fraction = max(0.0, min(1.0, (check._gpu.bytes - outside) / total))
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    return f"qconform: GPU memory held to {gib(fraction * total)} for torch ({check._gpu.source} {gib(check._gpu.bytes)} less {gib(outside)} outside torch)"


def refusal(harness: "Harness") -> str | None:
    """The one usage line for the named pathways' cases that cannot fit here (or for a budget that
    is no size), or None."""
    try:
        check = MemoryCheck.of(harness)
    except ValueError as exc:
        return str(exc)
    found = [
        check.over(model, pathway, kind)
        for model, pathway, kind in harness.selected()
        if pathway.name in harness.required and _present(harness, kind) and harness.case_unavailable(pathway, kind, model) is None
    ]
    found = [line for line in found if line]
    if not found:
        return None
    more = f" (and {len(found) - 1} more case(s))" if len(found) > 1 else ""
    return f"{found[0]}{more}: {ADVICE}"

