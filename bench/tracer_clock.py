"""What the kernel tracer costs per token, by clock conversion, against torch.profiler CUDA-only;
and whether torch.profiler still sees kernels after fastprof's tracer ran in the same process.

Workload: the 1.2B Llama of bench/kernel_trace.py (random weights, bf16, batch 1, 64 prompt + 64
new tokens, greedy), eager and compiled (static cache, reduce-overhead). Arms, shuffled in every
round (seeded):

  untraced, untraced (A/A)       no instrumentation; the A/A arm is the noise floor
  kernels, timestamp callback    KernelTracer() (CUPTI stamps records with CLOCK_MONOTONIC through
                                 cuptiActivityRegisterTimestampCallback, fastprof's default)
  kernels, measured offset       KernelTracer(timestamp_callback=False) (CUPTI's own clock, moved
                                 onto CLOCK_MONOTONIC by a measured offset)
  torch.profiler CUDA            torch.profiler.profile(activities=[CUDA])

Every arm is timed two ways: the decode's inter-token gap (median gap between the token marks of
a streamer: the cost while tokens are made, without the tracer's start and stop) and end to end
(synchronise, clock, start, generate, stop, synchronise, clock). Figures: the median over rounds
of the paired ratio arm / untraced with a seeded bootstrap 95% interval, and the median added
time per token. The torch.profiler arm also counts the CUDA events it saw in each round, so a
tracer that leaves CUPTI in a state where torch.profiler loses its kernels shows as rounds with
zero events.

    python bench/tracer_clock.py                # GPU: about 3 minutes
    python bench/tracer_clock.py --smoke        # tiny model on the CPU: checks the script only
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
from host_trace import (  # noqa: E402
    decode_workloads,
    fmt,
    parse_workload_arguments,
    token_marks,
    workload_arguments,
)
from observer_effect import Workload, paired_ratio  # noqa: E402

ARMS = ("untraced", "untraced (A/A)", "kernels, timestamp callback", "kernels, measured offset",
        "torch.profiler CUDA")


def make_arms(wl: Workload) -> dict[str, Callable[[], dict]]:
    from fastprof.capture.kernel_trace import KernelTracer

    def timed(enter: Callable[[], Any], leave: Callable[[Any], dict]) -> dict:
        marks = token_marks()
        wl.sync()
        t0 = time.perf_counter_ns()
        handle = enter()
        wl.generate(streamer=marks)
        wl.sync()
        extra = leave(handle)
        wall = time.perf_counter_ns() - t0
        gaps = np.diff(np.asarray(marks.t, dtype=np.int64))
        return {"wall_ns": wall, "itl_ns": float(np.median(gaps)) if gaps.size else None, **extra}

    def untraced() -> dict:
        return timed(lambda: None, lambda _: {})

    def tracer(callback: bool) -> Callable[[], dict]:
        def enter() -> Any:
            t = KernelTracer(timestamp_callback=callback)
            return t, t.start()

        def leave(handle: Any) -> dict:
            t, started = handle
            trace = t.stop()
            return {"available": bool(started), "records": len(trace) if started else 0,
                    "timestamp_method": getattr(t._native, "timestamp_method", None) if started else None}

        return lambda: timed(enter, leave)

    def profiler() -> dict:
        from torch.profiler import ProfilerActivity, profile

        def enter() -> Any:
            p = profile(activities=[ProfilerActivity.CUDA if wl.cuda else ProfilerActivity.CPU])
            p.__enter__()
            return p

        def leave(p: Any) -> dict:
            p.__exit__(None, None, None)
            n = sum(1 for e in p.events() if str(e.device_type).endswith("CUDA"))
            return {"cuda_events": n}

        return timed(enter, leave)

    return {"untraced": untraced, "untraced (A/A)": untraced,
            "kernels, timestamp callback": tracer(True), "kernels, measured offset": tracer(False),
            "torch.profiler CUDA": profiler}


def run_workload(wl: Workload, args: argparse.Namespace, deadline: float, log: Callable[[str], None]) -> dict:
    arms = make_arms(wl)
    for _ in range(args.warmup):
        wl.timed()
    for name in ARMS[2:]:  # first use of each tool, outside the rounds
        arms[name]()
    rng = random.Random(args.seed)
    rounds = []
    for r in range(args.rounds):
        if r >= 3 and time.perf_counter() > deadline:
            log(f"{wl.name}: time budget reached after {r} rounds")
            break
        order = list(ARMS)
        rng.shuffle(order)
        rounds.append({name: arms[name]() for name in order})
        log(f"{wl.name}: round {r + 1}/{args.rounds}")
    stats: dict[str, Any] = {}
    for i, name in enumerate(ARMS):
        rows = [row for row in rounds if row[name].get("available", True)]
        entry: dict[str, Any] = {"rounds": len(rows)}
        for key in ("itl_ns", "wall_ns"):
            a = [row[name][key] for row in rows if row[name].get(key) and row["untraced"].get(key)]
            b = [row["untraced"][key] for row in rows if row[name].get(key) and row["untraced"].get(key)]
            s = paired_ratio(a, b, seed=args.seed + i) if a else {"n": 0, "median": None}
            per = wl.new_tokens if key == "wall_ns" else 1
            s["added_s_per_token"] = (float(np.median(np.subtract(a, b))) / 1e9 / per) if a else None
            s["median_s"] = float(np.median(a)) / 1e9 if a else None
            s.pop("ratios", None)
            entry[key.removesuffix("_ns")] = s
        stats[name] = entry
    prof = [row["torch.profiler CUDA"].get("cuda_events") for row in rounds]
    return {"name": wl.name, "arms": stats, "profiler_cuda_events": prof,
            "timestamp_methods": sorted({str(row[n].get("timestamp_method")) for row in rounds for n in ARMS[2:4]}),
            "rounds": rounds}


def main() -> int:
    args = parse_workload_arguments(workload_arguments(__doc__, 120.0))
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    workloads, report = decode_workloads(args)
    for k, wl in enumerate(workloads):
        log(f"workload {wl.name}")
        deadline = t_start + args.budget_s * (k + 1) / len(workloads)
        report["workloads"][wl.name] = run_workload(wl, args, deadline, log)
    out = args.output or (os.path.join(os.environ["OUT"], "tracer_clock.json") if os.environ.get("OUT") else None)
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1, default=str)
    print()
    print(f"kernel tracer cost: {report['device']}, batch 1, prompt {args.prompt_len}, new {args.new_tokens}")
    print(f"{'workload':9} {'arm':28} {'ITL ratio [95% CI]':26} {'added ITL':>10} {'e2e ratio':>9} {'added/tok':>10}")
    for name, res in report["workloads"].items():
        for arm in ARMS:
            s = res["arms"][arm]
            add = s["itl"].get("added_s_per_token")
            add_e = s["wall"].get("added_s_per_token")
            e2e = s["wall"].get("median")
            print(f"{name:9} {arm:28} {fmt(s['itl']):26} "
                  + (f"{add * 1e3:7.3f} ms" if add is not None else f"{'-':>10}") + " "
                  + (f"{e2e:9.3f}" if e2e is not None else f"{'-':>9}") + " "
                  + (f"{add_e * 1e3:7.3f} ms" if add_e is not None else f"{'-':>10}"))
        print(f"{name:9} torch.profiler CUDA events per round: {res['profiler_cuda_events']}")
        print(f"{name:9} timestamp methods seen: {res['timestamp_methods']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
