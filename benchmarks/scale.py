"""Scale benchmark (issue 25): a checkpoint of each size gated through one pathway as a team's own
model (`qconform run --model DIR`: accuracy, artifacts, golden, own-model speed; the synthetic 8B
kernel table and model-speed points are left out), cold (empty cache) then warm (reference outputs
and artifacts cached): wall time, peak host RSS of the run, peak GPU memory (nvidia-smi, context
included). Checkpoints are built from configs with seeded random bf16 weights (Llama-3.1-8B,
Llama-3.2-1B and SmolLM2-135M shapes) and any shipped tokenizer whose ids fit the vocabulary.

    python benchmarks/scale.py --tokenizer DIR --sizes 0.1b,1b,8b --out /tmp/scale [--max-gpu-memory 24GiB]
    python benchmarks/scale.py --tokenizer DIR --offload 1b --out /tmp/scale   # accelerate placement proof

The planted slow FP8 artifact (tests/planted_pathways.py) through the own-model speed gates, judged
by torchao FP8's own thresholds (a planted pathway has no table of its own):

    python -m tests.planted_profiles h100 planted-slow-fp8-artifact torchao-fp8-rowwise ckpt-0.1b causal-lm > /tmp/planted.toml
    python benchmarks/scale.py --tokenizer DIR --sizes 0.1b --pathway planted-slow-fp8-artifact --out /tmp/slow --runs cold,warm \
        -- -p tests.planted_pathways -k own_model_speedup --profile /tmp/planted.toml

Not a test: it needs a GPU and minutes; its table is in the README."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LLAMA = dict(rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=131072)
SIZES = {
    "0.1b": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192),
    "1b": dict(LLAMA, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "8b": dict(LLAMA, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model")


def build_checkpoint(size: str, out: Path, tokenizer: Path) -> Path:
    """A LlamaForCausalLM of `size` with seeded random bf16 weights, built on the GPU, saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    config = LlamaConfig(**SIZES[size], architectures=["LlamaForCausalLM"])
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, max_shard_size="5GB")
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, out / name)
    del model
    torch.cuda.empty_cache()
    return out


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    return children


def descendants(root: int) -> list[int]:
    children, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found[1:]


def tree_rss(root: int) -> tuple[int, int]:
    """(anonymous, total) resident bytes of a process and its descendants, from /proc."""
    anon = total = 0
    for pid in [root, *descendants(root)]:
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
            anon += int(status.get("RssAnon", "0 kB").split()[0]) * 1024
            total += int(status.get("VmRSS", "0 kB").split()[0]) * 1024
        except (OSError, ValueError):
            pass
    return anon, total


class GpuPeak(threading.Thread):
    """The largest memory.used nvidia-smi reports, and the process tree's largest anonymous RSS,
    while running (every 0.5 s). Total RSS (ru_maxrss) also counts the checkpoint's file pages the
    loader maps, which the kernel can drop; anonymous memory is what the run itself holds."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mib, self.peak_anon, self.root, self._done = 0, 0, None, threading.Event()

    def run(self):
        while not self._done.is_set():
            try:
                used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10).stdout.split()
                self.peak_mib = max([self.peak_mib, *map(int, used)])
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            if self.root is not None:
                self.peak_anon = max(self.peak_anon, tree_rss(self.root)[0])
            self._done.wait(0.5)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak_mib


def gate(checkpoint: Path, pathway: str, work: Path, label: str, extra: list[str], deadline: float | None = None, cold: bool = False) -> dict:
    """One `qconform run` in a child process, its cache `work`/cache (emptied first when `cold`: no
    artifact, reference outputs, export or compiled kernels from an earlier run): wall time, its peak
    RSS, the GPU peak, the verdict."""
    if cold:
        shutil.rmtree(work / "cache", ignore_errors=True)
    report, golden = work / f"report-{label}", work / "golden"
    command = [sys.executable, "-m", "harness.cli", "run", "--model", str(checkpoint), "--pathways", pathway, "--report-dir", str(report), "--golden-dir", str(golden),
               "-p", "no:cacheprovider", "-k", "not test_speedup and not test_model_speedup", "--durations=15", *extra]
    if not golden.is_dir():
        command.append("--regen-golden")  # the first run records the golden, the next compares with it
    monitor = GpuPeak()
    monitor.start()
    start = time.perf_counter()
    log, usage = work / f"{label}.log", work / f"{label}.rusage.json"
    # A wrapper child reports its own child's peak RSS (RUSAGE_CHILDREN of a fresh process) in a file;
    # the run's output streams to the log as it comes (a run stopped at --deadline keeps it).
    wrapper = "import json,resource,subprocess,sys; rc=subprocess.call(sys.argv[2:]); open(sys.argv[1],'w').write(json.dumps({'rc': rc, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-c", wrapper, str(usage), *command], stdout=out, stderr=subprocess.STDOUT, text=True, cwd=work, env={**os.environ, "QCONFORM_CACHE": str(work / "cache"), "PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"})
        monitor.root = child.pid
        try:
            child.wait(timeout=deadline)
        except subprocess.TimeoutExpired:  # where it is: every thread's stack (faulthandler) into the log
            for pid in descendants(child.pid):
                os.kill(pid, signal.SIGABRT)
            child.wait()
    wall = time.perf_counter() - start
    gpu_mib = monitor.stop()
    measured = json.loads(usage.read_text()) if usage.is_file() else {"rc": "stopped at the deadline", "maxrss_kb": 0}
    summary = json.loads((report / "summary.json").read_text()) if (report / "summary.json").is_file() else {}
    return {"label": label, "wall_s": round(wall, 1), "peak_rss_gib": round(measured["maxrss_kb"] / 2**20, 2), "peak_anon_rss_gib": round(monitor.peak_anon / 2**30, 2), "peak_gpu_gib": round(gpu_mib / 1024, 2), "exit": measured["rc"],
            "verdict": summary.get("verdict"), "counts": summary.get("counts"), "command": " ".join(command)}


def offload_proof(checkpoint: Path, budget: str) -> dict:
    """accelerate's big-model placement on one GPU: with max_memory forcing part of the model onto the
    CPU, the bf16 reference's outputs against the same model wholly on the GPU."""
    import numpy as np
    import torch

    from harness.core import Precision
    from harness.judge.metrics import lm_metrics
    from harness.models.hf import HuggingFaceModel
    from harness.run.memory import parse_size

    model = HuggingFaceModel(checkpoint, eval_tokens=256, seq_len=128, batch_size=2)
    bf16 = Precision("bfloat16", "cuda")
    batches = model.eval_batches()
    whole = model.load_module(bf16)
    full = np.concatenate([model.run_module(whole, b, "cuda")["logits"] for b in batches])
    del whole
    torch.cuda.empty_cache()
    placed = model.load_module(bf16, max_memory={0: parse_size(budget, "--offload-budget"), "cpu": 64 * 2**30})
    where = dict(placed.model.hf_device_map)
    split = np.concatenate([model.run_module(placed, b, "cuda")["logits"] for b in batches])
    metrics = lm_metrics(full, split, model.eval_inputs()["input_ids"])
    return {"gpu_budget": budget, "modules_on_cpu": sorted(k for k, v in where.items() if str(v) == "cpu"), "modules_on_gpu": sum(1 for v in where.values() if str(v) != "cpu"),
            "kl_mean": metrics["kl_mean"], "top1_agreement": metrics["top1_agreement"], "max_abs_logit_diff": float(np.abs(full - split).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True, help="a directory with tokenizer files (its ids must fit the vocabulary)")
    parser.add_argument("--sizes", default="0.1b,1b,8b", help=f"comma-separated of {', '.join(SIZES)}")
    parser.add_argument("--pathway", default="torchao-fp8-rowwise")
    parser.add_argument("--out", type=Path, required=True, help="checkpoints, caches, logs and scale.json go here")
    parser.add_argument("--runs", default="cold,warm", help="cold (empty cache) and/or warm (the cold run's cache)")
    parser.add_argument("--offload", help="a size for the accelerate placement proof instead of gating")
    parser.add_argument("--offload-budget", default="1GiB")
    parser.add_argument("--deadline", type=float, help="seconds a run may take; then every thread's stack goes to its log and it stops")
    parser.add_argument("qconform_args", nargs="*", help="after --: more `qconform run` options (e.g. --max-gpu-memory 24GiB, --profile rtx5090)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "scale.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else []
    if args.offload:
        checkpoint = build_checkpoint(args.offload, args.out / f"ckpt-{args.offload}", args.tokenizer)
        results.append({"size": args.offload, "offload": offload_proof(checkpoint, args.offload_budget)})
        print(json.dumps(results[-1]), flush=True)
    for size in [s for s in args.sizes.split(",") if s and not args.offload]:
        start = time.perf_counter()
        checkpoint = build_checkpoint(size, args.out / f"ckpt-{size}", args.tokenizer)
        print(f"{size}: checkpoint ready in {time.perf_counter() - start:.0f}s", flush=True)
        work = args.out / f"run-{size}"
        work.mkdir(exist_ok=True)
        for run in args.runs.split(","):
            row = {"size": size, "pathway": args.pathway, "run": run, **gate(checkpoint, args.pathway, work, f"{run}-{len(results)}", args.qconform_args, args.deadline, cold=run == "cold")}
            results.append(row)
            results_file.write_text(json.dumps(results, indent=1))
            print(json.dumps(row), flush=True)
    results_file.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
