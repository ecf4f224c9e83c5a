"""What the kernel trace costs: fastprof's CUPTI tracer against torch.profiler on 1B Llama decode.

Workload: a Llama-architecture model of about 1.2B parameters (hidden 2048, 16 layers, 32 heads,
8 KV heads, vocabulary 128256; random weights built from a config, bf16), batch 1, 64 prompt
tokens, 64 new tokens, greedy. Twice: eager (dynamic cache) and compiled (static cache + transformers'
torch.compile of the decode forward, mode reduce-overhead, as ``fastprof run --compile on``).

Arms, in rounds with the order shuffled within each round (seeded); each is timed end to end
(synchronise, clock, generate, synchronise, clock):

  untraced            no instrumentation
  untraced (A/A)      the same again under another name: the noise floor
  fastprof-traced     fastprof's KernelTracer started before and stopped after (flush included)
  torch.profiler CUDA torch.profiler.profile(activities=[CUDA])
  torch.profiler CPU+CUDA   activities=[CPU, CUDA]

Each arm's cost is the median over rounds of the paired ratio arm / untraced, with a seeded
bootstrap 95% CI. Before any arm runs, a few pristine rounds of untraced vs A/A are timed; their
median against the later untraced median (CUPTI then loaded and idle in the process) gives
"tracer loaded but idle" (an unpaired ratio: compare it with the A/A band). The analysis time is
that of fastprof.analysis.kernels.section over one traced 128-token generate.

Only one CUPTI subscriber can exist per process. If torch.profiler keeps CUPTI after its first use,
the fastprof arm reports "unavailable" from then on: the table says how many rounds it ran. Then
run the arms in two processes, each against its own untraced and A/A arms, and compare the costs:

    python bench/kernel_trace.py --arms fastprof --output fp.json
    python bench/kernel_trace.py --arms profiler --output prof.json

Targets: a traced generate costs at most half of what torch.profiler CUDA-only adds, on both
workloads; "loaded but idle" inside the A/A band; the analysis of a 128-token trace under 1 s.

    python bench/kernel_trace.py              # H100: about 4-6 minutes
    python bench/kernel_trace.py --smoke      # tiny model on the CPU: checks the script only

Prints a table last; writes every figure to $OUT/kernel_trace.json when OUT is set (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from observer_effect import MODEL_1B, MODEL_SMOKE, Workload, paired_ratio  # noqa: E402

ARMS = ("untraced", "untraced (A/A)", "fastprof-traced", "torch.profiler CUDA", "torch.profiler CPU+CUDA")


def make_arms(wl: Workload) -> dict[str, Callable[[], dict]]:
    from fastprof.capture.kernel_trace import KernelTracer

    def untraced() -> dict:
        return {"wall_ns": wl.timed()}

    def fastprof_traced() -> dict:
        wl.sync()
        t0 = time.perf_counter_ns()
        tracer = KernelTracer()
        started = tracer.start()
        wl.generate()
        wl.sync()
        trace = tracer.stop()
        wall = time.perf_counter_ns() - t0
        return {"wall_ns": wall, "available": bool(started), "reason": tracer.reason, "records": len(trace),
                "dropped": trace.dropped, "timestamp_method": trace.timestamp_method}

    def profiler(cpu: bool) -> Callable[[], dict]:
        def run() -> dict:
            from torch.profiler import ProfilerActivity, profile

            acts = ([ProfilerActivity.CPU] if cpu or not wl.cuda else []) + ([ProfilerActivity.CUDA] if wl.cuda else [])
            wl.sync()
            t0 = time.perf_counter_ns()
            with profile(activities=acts):
                wl.generate()
                wl.sync()
            return {"wall_ns": time.perf_counter_ns() - t0}

        return run

    return {"untraced": untraced, "untraced (A/A)": untraced, "fastprof-traced": fastprof_traced,
            "torch.profiler CUDA": profiler(False), "torch.profiler CPU+CUDA": profiler(True)}


def analysis_time(wl: Workload, new_tokens: int = 128) -> dict[str, Any]:
    """Trace one generate of `new_tokens` tokens and time the breakdown of it."""
    from fastprof.analysis import kernels as K
    from fastprof.capture.kernel_trace import KernelTracer

    extra = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    kw = {**wl.kwargs, **extra}
    import torch

    tracer = KernelTracer()
    if not tracer.start():
        return {"available": False, "reason": tracer.reason}
    host0 = time.perf_counter_ns()
    with torch.inference_mode():
        wl.model.generate(**wl.inputs, **kw)
    wl.sync()
    host1 = time.perf_counter_ns()
    trace = tracer.stop()
    if not len(trace):
        return {"available": False, "reason": "no records"}
    # 128 equal steps over the generate: the cost depends on records and steps, not on exact marks
    marks = np.linspace(0, host1 - host0, new_tokens + 1)[1:].astype(np.int64)
    t = time.perf_counter()
    sec = K.section(trace, [(host0, marks)])
    return {"available": True, "records": len(trace), "seconds": time.perf_counter() - t,
            "kernels_per_token": sec.get("kernels_per_token")}


def run_workload(wl: Workload, args: argparse.Namespace, deadline: float, log: Callable[[str], None]) -> dict:
    res: dict[str, Any] = {"name": wl.name}
    for _ in range(args.warmup):
        wl.timed()
    pristine = [(wl.timed(), wl.timed()) for _ in range(args.pristine_rounds)]
    res["pristine_untraced_ns"] = [a for a, _ in pristine]
    res["pristine_aa"] = paired_ratio([b for _, b in pristine], [a for a, _ in pristine], seed=args.seed)
    arms = make_arms(wl)
    rng = random.Random(args.seed)
    rounds = []
    for r in range(args.rounds):
        if r >= 3 and time.perf_counter() > deadline:
            log(f"{wl.name}: time budget reached after {r} rounds")
            break
        order = list(args.arm_list)
        rng.shuffle(order)
        rounds.append({name: arms[name]() for name in order})
        log(f"{wl.name}: round {r + 1}/{args.rounds}")
    res["rounds"] = rounds
    base = [row["untraced"]["wall_ns"] for row in rounds]
    stats = {}
    for i, name in enumerate(args.arm_list):
        rows = [row for row in rounds if name != "fastprof-traced" or row[name].get("available")]
        a = [row[name]["wall_ns"] for row in rows]
        b = [row["untraced"]["wall_ns"] for row in rows]
        stats[name] = paired_ratio(a, b, seed=args.seed + i) if a else {"n": 0, "median": None}
        stats[name]["median_wall_s"] = float(np.median(a)) / 1e9 if a else None
    res["arms"] = stats
    fp = [row["fastprof-traced"] for row in rounds if "fastprof-traced" in row]
    res["fastprof_rounds_available"] = sum(1 for x in fp if x.get("available"))
    res["fastprof_unavailable_reasons"] = sorted({x.get("reason") for x in fp if not x.get("available")} - {None})
    res["idle_loaded_ratio"] = (float(np.median(base)) / float(np.median(res["pristine_untraced_ns"]))
                                if base and pristine else None)
    cost = {k: (stats[k]["median"] - 1.0) if stats.get(k, {}).get("median") else None
            for k in ("fastprof-traced", "torch.profiler CUDA")}
    res["fastprof_cost_over_profiler_cost"] = (cost["fastprof-traced"] / cost["torch.profiler CUDA"]
                                               if cost["fastprof-traced"] is not None and cost["torch.profiler CUDA"]
                                               else None)
    res["analysis"] = analysis_time(wl) if "fastprof-traced" in args.arm_list else {"available": False,
                                                                                    "reason": "fastprof arm not run"}
    return res


def fmt(s: dict) -> str:
    if not s or s.get("median") is None:
        return "-"
    if s.get("ci95_low") is None:
        return f"{s['median']:.3f}"
    return f"{s['median']:.3f} [{s['ci95_low']:.3f}, {s['ci95_high']:.3f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds of all arms (default 10; smoke: 2)")
    ap.add_argument("--pristine-rounds", type=int, default=None, help="untraced/A-A rounds before any tracing (5)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per generate (default 64; smoke: 8)")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 64; smoke: 8)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--skip-compiled", action="store_true")
    ap.add_argument("--skip-eager", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script")
    ap.add_argument("--budget-s", type=float, default=300.0, help="stop starting rounds (after 3) past this time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output")
    ap.add_argument("--arms", choices=("all", "fastprof", "profiler", "none"), default="all",
                    help="which traced arms run beside untraced and A/A (fastprof, torch.profiler, both, or none: "
                         "the control for 'loaded but idle', whose later-untraced/pristine ratio is drift alone)")
    args = ap.parse_args()
    args.rounds = args.rounds or (2 if args.smoke else 10)
    args.arm_list = [a for a in ARMS if a.startswith("untraced") or args.arms == "all"
                     or (args.arms != "none" and (args.arms == "fastprof") == a.startswith("fastprof"))]
    args.pristine_rounds = args.pristine_rounds or (2 if args.smoke else 5)
    args.new_tokens = args.new_tokens or (8 if args.smoke else 64)
    args.prompt_len = args.prompt_len or (8 if args.smoke else 64)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    import torch
    from transformers import CompileConfig

    from fastprof.capture.hf import build_default_model, random_inputs

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    with torch.device(device):
        model = build_default_model(dtype=dtype, device=device, seed=args.seed,
                                    **(MODEL_SMOKE if args.smoke else MODEL_1B))
    model.generation_config.pad_token_id = 0
    inputs = random_inputs(int(model.config.vocab_size), 1, args.prompt_len, device=device, seed=args.seed)
    workloads = []
    if not args.skip_eager:
        workloads.append(Workload("eager", model, inputs, args.new_tokens, {}, cuda))
    if not args.skip_compiled and cuda:
        workloads.append(Workload("compiled", model, inputs, args.new_tokens,
                                  {"cache_implementation": "static",
                                   "compile_config": CompileConfig(fullgraph=True, mode="reduce-overhead")}, cuda))
    report: dict[str, Any] = {"config": vars(args), "device": torch.cuda.get_device_name() if cuda else "cpu",
                              "workloads": {}}
    deadline = t_start + args.budget_s
    for wl in workloads:
        log(f"workload {wl.name}")
        report["workloads"][wl.name] = run_workload(wl, args, deadline + (args.budget_s / 2 if wl.name == "compiled"
                                                                          else 0), log)
    out = args.output or (os.path.join(os.environ["OUT"], "kernel_trace.json") if os.environ.get("OUT") else None)
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1, default=str)
    print()
    print(f"kernel trace cost: {report['device']}, batch 1, prompt {args.prompt_len}, new {args.new_tokens}")
    print(f"{'workload':10} {'arm':26} {'ratio to untraced [95% CI]':32} {'median wall':>12}")
    for name, res in report["workloads"].items():
        for arm in args.arm_list:
            s = res["arms"][arm]
            wall = f"{s['median_wall_s'] * 1e3:9.1f} ms" if s.get("median_wall_s") else "-"
            print(f"{name:10} {arm:26} {fmt(s):32} {wall:>12}")
        print(f"{name:10} {'pristine A/A':26} {fmt(res['pristine_aa']):32}")
        idle = res["idle_loaded_ratio"]
        print(f"{name:10} {'tracer loaded but idle':26} {idle:.3f} (unpaired: later untraced / pristine)"
              if idle else f"{name:10} tracer loaded but idle: -")
        ratio = res["fastprof_cost_over_profiler_cost"]
        print(f"{name:10} fastprof cost / torch.profiler CUDA cost: {ratio:.2f} (target <= 0.5)" if ratio is not None
              else f"{name:10} fastprof cost / torch.profiler CUDA cost: -")
        print(f"{name:10} fastprof arm ran in {res['fastprof_rounds_available']}/{len(res['rounds'])} rounds"
              + (f"; unavailable: {'; '.join(res['fastprof_unavailable_reasons'])}"
                 if res["fastprof_unavailable_reasons"] else ""))
        a = res["analysis"]
        print(f"{name:10} analysis of a 128-token trace: "
              + (f"{a['seconds'] * 1e3:.1f} ms for {a['records']} records (target < 1 s)" if a.get("available")
                 else f"- ({a.get('reason')})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
