"""Why did one artifact's prefill speedup swing between runs (1.187x cold, 0.790x warm on the H100;
1.066x / 0.709x on the H200)? Each process builds the Llama-3.1-8B-shaped bf16 model and its
torchao FP8 rowwise candidate, compiles the regions as the suite does, and times prefill BxT three
ways, paired and interleaved:

- dispatched: forwards issued from Python one after another (the suite's method before this fix),
  with the host's enqueue time per forward beside the GPU time;
- graphed: one forward captured in a CUDA graph and replayed (no host in the timed loop);
- the candidate's FP8 GEMM kernels by name (torch profiler), and the MSLK / torch._scaled_mm choice.

Run it as `python benchmarks/speed_swing.py --out DIR --runs cold,warm,cold` on a GPU machine: every
run is a fresh process; "cold" starts from an empty Inductor cache, "warm" reuses the previous run's.
It also times torchao's two rowwise kernels (KernelPreference.TORCH: torch._scaled_mm; MSLK when
the mslk package imports) at the decode shapes, `--kernels`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gpu_state() -> dict:
    fields = "clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu,clocks_throttle_reasons.active"
    try:
        text = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    return dict(zip(fields.split(","), [v.strip() for v in text.split(",")], strict=False))


def one_run(args) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    from torchao.quantization.quantize_.common.kernel_preference import KernelPreference

    from harness.measure.timing import allow_recompiles, compile_regions, device_ms, interleaved, prefill_sampler, quantize_except_head, speed_result
    from harness.models.llama8b_perf import build_causal_lm, llama_config

    allow_recompiles()
    record = {"run": args.label, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "state_before": gpu_state()}
    start = time.perf_counter()
    baseline = build_causal_lm(llama_config(args.layers))
    import copy

    preference = KernelPreference[args.kernel]
    candidate = quantize_except_head(lambda m: quantize_(m, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), kernel_preference=preference)) or m, copy.deepcopy(baseline))
    import torch._inductor.config as inductor_config

    record["inductor_config_after_quantize"] = {k: getattr(inductor_config, k) for k in ("coordinate_descent_tuning", "coordinate_descent_check_all_directions", "fx_graph_cache")}
    for model in (baseline, candidate):
        compile_regions(model)
    record["build_s"] = time.perf_counter() - start
    results = {}
    for point in args.points.split(","):
        batch, tokens = (int(x) for x in point.split("x"))
        gen = torch.Generator(device="cuda").manual_seed(0)
        ids = torch.randint(0, baseline.config.vocab_size, (batch, tokens), device="cuda", generator=gen)
        t0 = time.perf_counter()
        def dispatched_sampler(model, ids=ids):  # the suite's method before the fix: forwards issued from Python
            def forward():
                with torch.inference_mode():
                    model(ids, use_cache=False, logits_to_keep=1)

            forward()
            return lambda: device_ms(forward, 1)

        dispatched_base = dispatched_sampler(baseline)
        base, cand = interleaved(dispatched_base, dispatched_sampler(candidate), args.repeats)
        dispatched = speed_result(base, cand).as_dict()

        try:
            sides = [prefill_sampler(m, ids) for m in (baseline, candidate)]  # the suite's method: CUDA-graphed
            compile_s = [side.compile_s for side in sides]
            base_g, cand_g = interleaved(sides[0].sample, sides[1].sample, args.repeats)
            graph_result = speed_result(base_g, cand_g).as_dict()
            host = {"baseline": sides[0].enqueue_ms, "candidate": sides[1].enqueue_ms}
            # The bf16 model dispatched against the same model graphed, interleaved: does capture
            # itself change the baseline's GPU time?
            same = speed_result(*interleaved(dispatched_base, sides[0].sample, args.repeats)).as_dict()
            graph_result["bf16_graphed_over_dispatched_ms_ratio"] = 1 / same["speedup"]
            del sides
        except Exception as exc:  # what blocks capture is itself a finding
            graph_result, compile_s, host = {"error": f"{type(exc).__name__}: {exc}"[:500]}, None, None
        kernels = {}
        try:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.inference_mode():
                candidate(ids, use_cache=False, logits_to_keep=1)
                torch.cuda.synchronize()
            for event in prof.key_averages():
                if event.device_type.name == "CUDA" or "cuda" in str(event.device_type).lower():
                    kernels[event.key[:90]] = round(event.device_time_total / 1e3, 3) if hasattr(event, "device_time_total") else None
            kernels = dict(sorted(kernels.items(), key=lambda kv: -(kv[1] or 0))[:12])
        except Exception as exc:
            kernels = {"error": str(exc)[:300]}
        results[point] = {"dispatched": dispatched, "host_enqueue_ms": host, "graphed": graph_result, "compile_s": compile_s, "top_candidate_kernels_ms": kernels, "wall_s": time.perf_counter() - t0}
        print(json.dumps({point: {"dispatched": round(dispatched["speedup"], 3), "ci": [round(dispatched["ci_low"], 3), round(dispatched["ci_high"], 3)], "graphed": graph_result.get("speedup"), "graphed_ci": [graph_result.get("ci_low"), graph_result.get("ci_high")], "host": host, "ms": [dispatched["baseline_ms"], dispatched["candidate_ms"]], "graph_ms": [graph_result.get("baseline_ms"), graph_result.get("candidate_ms")], "bf16_graph_over_dispatched": graph_result.get("bf16_graphed_over_dispatched_ms_ratio")}}), flush=True)
    record["points"] = results
    record["state_after"] = gpu_state()
    from torch._dynamo.utils import counters

    record["dynamo_counters"] = {k: dict(v) for k, v in counters.items() if k in ("stats", "inductor", "aot_autograd")}
    return record


def kernels(args) -> dict:
    """torch._scaled_mm (KernelPreference.TORCH) against MSLK (AUTO with mslk importable) and bf16,
    on the Llama-3.1-8B Linear shapes at decode and prefill token counts."""
    import copy

    import torch

    sys.path.insert(0, str(REPO))
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    from torchao.quantization.quantize_.common.kernel_preference import KernelPreference

    from harness.measure.timing import copies_to_defeat_l2, paired_speedup
    from harness.models.llama8b_perf import LINEAR_SHAPES

    try:
        import mslk  # noqa: F401

        mslk_state = f"mslk {getattr(mslk, '__version__', '?')} imports"
    except Exception as exc:
        mslk_state = f"mslk does not import: {type(exc).__name__}: {exc}"[:300]
    rows = []
    for name, (k, n) in LINEAR_SHAPES.items():
        for m in (1, 8):
            copies = copies_to_defeat_l2(k * n)
            base = [torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            sides = {}
            for pref in ("TORCH", "AUTO"):
                mods = [copy.deepcopy(b) for b in base]
                for mod in mods:
                    quantize_(mod, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), kernel_preference=KernelPreference[pref]))
                sides[pref] = mods
            inputs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            row = {"name": name, "m": m, "k": k, "n": n, "copies": copies}
            for label, (a, b) in {"torch_vs_bf16": (base, sides["TORCH"]), "auto_vs_bf16": (base, sides["AUTO"]), "auto_vs_torch": (sides["TORCH"], sides["AUTO"])}.items():
                try:
                    r = paired_speedup(a, b, inputs, repeats=11)
                    row[label] = [round(r.speedup, 3), round(r.ci_low, 3), round(r.ci_high, 3)]
                except Exception as exc:
                    row[label] = f"{type(exc).__name__}: {exc}"[:200]
            print(json.dumps(row), flush=True)
            rows.append(row)
            del base, sides, inputs
            torch.cuda.empty_cache()
    return {"mslk": mslk_state, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", default="cold,warm,cold")
    parser.add_argument("--points", default="1x2048")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--kernel", default="AUTO", help="torchao KernelPreference of the candidate")
    parser.add_argument("--kernels", action="store_true", help="time torch._scaled_mm against MSLK at the Linear shapes")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: its label
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        args.label = args.one
        result = kernels(args) if args.one == "kernels" else one_run(args)
        (args.out / f"{args.one}.json").write_text(json.dumps(result, indent=1, default=str))
        return
    cache = Path(tempfile.mkdtemp(prefix="inductor-"))
    labels = [*(f"{i}-{r}" for i, r in enumerate(args.runs.split(",")) if r)] + (["kernels"] if args.kernels else [])
    for label in labels:
        if label.endswith("-cold"):
            cache = Path(tempfile.mkdtemp(prefix="inductor-"))
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": str(cache / "triton"), "TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, __file__, "--out", str(args.out), "--one", label, "--points", args.points, "--repeats", str(args.repeats), "--kernel", args.kernel]
        if args.layers:
            command += ["--layers", str(args.layers)]
        begin = time.perf_counter()
        print(f"== {label} ({cache})", flush=True)
        code = subprocess.run(command, env=env).returncode
        print(f"== {label}: exit {code} in {time.perf_counter() - begin:.1f}s", flush=True)


if __name__ == "__main__":
    main()
