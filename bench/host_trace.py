"""What the host breakdown costs, and whether its parts add up: fastprof's kernel + host trace
against torch.profiler CPU+CUDA on 1B Llama decode.

Workload: as bench/kernel_trace.py (about 1.2B parameters, random weights, bf16, batch 1, 64
prompt tokens, 64 new tokens, greedy), eager and compiled (static cache + transformers'
torch.compile, mode reduce-overhead, as ``fastprof run --compile on``).

Arms, in rounds with the order shuffled within each round (seeded), each timed end to end
(synchronise, clock, generate, synchronise, clock):

  untraced                 no instrumentation
  untraced (A/A)           the same again under another name: the noise floor
  fastprof kernel+host     KernelTracer(api=True) (kernels, copies, CUDA runtime and driver calls)
                           and HostTracer (module hooks, generate-loop markers), as in fastprof's
                           traced iterations; the analysis runs after the clock stops
  torch.profiler CPU+CUDA  torch.profiler.profile(activities=[CPU, CUDA])

Each arm's cost is the median over rounds of the paired ratio arm / untraced with a seeded
bootstrap 95% CI; "added per token" is the median paired difference divided by the new tokens.
Target: fastprof's added time at most half of torch.profiler CPU+CUDA's on both workloads, and
the host parts (by CUDA API) add up to the traced step within 5%.

If torch.profiler keeps CUPTI after its first use, the fastprof arm reports unavailable from then
on: run ``--arms fastprof`` and ``--arms profiler`` in two processes, each with its own untraced
and A/A arms.

    python bench/host_trace.py                  # GPU: a few minutes
    python bench/host_trace.py --smoke          # tiny model on the CPU: checks the script only

Prints a table last; writes every figure to $OUT/host_trace.json when OUT is set (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from observer_effect import MODEL_1B, MODEL_SMOKE, Workload, paired_ratio  # noqa: E402

ARMS = ("untraced", "untraced (A/A)", "fastprof kernel+host", "torch.profiler CPU+CUDA")
# --arms decompose adds the fastprof arm's pieces: the kernel tracer alone, then with API records.
DECOMPOSE = ("fastprof kernels only", "fastprof kernels+api")


def token_marks() -> Any:
    """A streamer that takes CLOCK_MONOTONIC when each new token reaches the host (the prompt's
    put is skipped): the token marks the host breakdown's steps need, in ``.t``."""
    from transformers.generation.streamers import BaseStreamer

    class Marks(BaseStreamer):
        def __init__(self) -> None:
            self.t: list[int] = []
            self.seen = False

        def put(self, value: Any) -> None:
            if self.seen:
                self.t.append(time.monotonic_ns())
            self.seen = True

        def end(self) -> None:
            pass

    return Marks()


def make_arms(wl: Workload) -> dict[str, Callable[[], dict]]:
    from fastprof.analysis import host as H
    from fastprof.capture.host_trace import HostTracer
    from fastprof.capture.kernel_trace import KernelTracer

    compiled = "compile_config" in wl.kwargs

    def untraced() -> dict:
        return {"wall_ns": wl.timed()}

    def fastprof_traced() -> dict:
        marks = token_marks()
        host = HostTracer(wl.model, modules=not compiled)
        kw = {"streamer": marks, "logits_processor": host.wrap_processors([])}
        wl.sync()
        t0 = time.perf_counter_ns()
        start_ns = time.monotonic_ns()
        tracer = KernelTracer(api=True)
        started = tracer.start()
        with host:
            wl.generate(**kw)
        wl.sync()
        gen = time.perf_counter_ns() - t0
        trace = tracer.stop()
        wall = time.perf_counter_ns() - t0
        out: dict[str, Any] = {"wall_ns": wall, "gen_ns": gen, "available": bool(started), "reason": tracer.reason,
                               "api_mode": tracer.api_mode}
        if started:
            sec = H.section([(start_ns, np.asarray(marks.t, dtype=np.int64))], spans=host.take(),
                            api=trace.api, kernels=trace,
                            thread_candidates=(threading.get_native_id(), threading.get_ident()))
            api = sec.get("api") or {}
            parts = api.get("parts_s") or {}
            # the parts against the step measured by the token marks alone
            out.update(step_s=sec["step_s"]["mean"], parts_s=parts, api_records=len(trace.api),
                       api_reason=api.get("reason"), functions=(api.get("functions") or [])[:6],
                       parts_sum_ratio=(sum(parts.values()) / sec["step_s"]["mean"]) if parts else None,
                       calls_per_step=api.get("calls_per_step"), launch_s=api.get("launch_s"),
                       kernels_per_step=(int((trace.kind == 0).sum()) / max(len(marks.t), 1)),
                       summary=H.summary_line(sec), loop=(sec.get("loop") or {}).get("parts_s"))
        return out

    def tracer_only(api: bool) -> Callable[[], dict]:
        def arm() -> dict:
            kw = {"streamer": token_marks()}
            wl.sync()
            t0 = time.perf_counter_ns()
            tracer = KernelTracer(api=api)
            started = tracer.start()
            wl.generate(**kw)
            wl.sync()
            gen = time.perf_counter_ns() - t0
            tracer.stop()
            return {"wall_ns": time.perf_counter_ns() - t0, "gen_ns": gen, "available": bool(started)}
        return arm

    counted = []

    def profiler() -> dict:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if wl.cuda else [])
        wl.sync()
        t0 = time.perf_counter_ns()
        prof = profile(activities=acts)
        prof.start()
        wl.generate()
        wl.sync()
        gen = time.perf_counter_ns() - t0
        prof.stop()
        out = {"wall_ns": time.perf_counter_ns() - t0, "gen_ns": gen}
        if not counted:  # once per workload, after the clock: did its CUDA side record anything?
            kinds = [str(getattr(e, "device_type", "")) for e in prof.events()]
            out["cuda_events"] = sum(1 for k in kinds if k.endswith("CUDA"))
            out["cpu_events"] = sum(1 for k in kinds if k.endswith("CPU"))
            counted.append(out["cuda_events"])
        return out

    return {"untraced": untraced, "untraced (A/A)": untraced, "fastprof kernel+host": fastprof_traced,
            "torch.profiler CPU+CUDA": profiler, "fastprof kernels only": tracer_only(False),
            "fastprof kernels+api": tracer_only(True)}


def run_workload(wl: Workload, args: argparse.Namespace, deadline: float, log: Callable[[str], None]) -> dict:
    res: dict[str, Any] = {"name": wl.name}
    arms = make_arms(wl)
    for _ in range(args.warmup):
        wl.timed()
    if "fastprof kernel+host" in args.arm_list:  # the hooks' and tracer's first use outside the rounds
        arms["fastprof kernel+host"]()
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
    stats = {}
    for i, name in enumerate(args.arm_list):
        rows = [row for row in rounds if not name.startswith("fastprof") or row[name].get("available")]
        a = [row[name]["wall_ns"] for row in rows]
        b = [row["untraced"]["wall_ns"] for row in rows]
        stats[name] = paired_ratio(a, b, seed=args.seed + i) if a else {"n": 0, "median": None}
        stats[name]["median_wall_s"] = float(np.median(a)) / 1e9 if a else None
        diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        stats[name]["added_s_per_token"] = float(np.median(diff)) / 1e9 / wl.new_tokens if a else None
        # The same up to the generate's end: the cost inside the traced iteration, without the
        # tool's stop (fastprof's flush, torch.profiler's event processing).
        g = [row[name].get("gen_ns", row[name]["wall_ns"]) for row in rows]
        stats[name]["added_in_iteration_s_per_token"] = (
            float(np.median(np.asarray(g, dtype=np.float64) - np.asarray(b, dtype=np.float64))) / 1e9 / wl.new_tokens
            if a else None)
    res["arms"] = stats
    counts = [row["torch.profiler CPU+CUDA"] for row in rounds
              if "cuda_events" in row.get("torch.profiler CPU+CUDA", {})]
    if counts:
        res["profiler_events"] = {"cuda": counts[0]["cuda_events"], "cpu": counts[0]["cpu_events"]}
    fp = [row["fastprof kernel+host"] for row in rounds if row.get("fastprof kernel+host", {}).get("available")]
    res["fastprof_rounds_available"] = len(fp)
    if fp:
        res["parts_sum_ratio"] = [x["parts_sum_ratio"] for x in fp if x.get("parts_sum_ratio") is not None]
        res["example"] = {k: fp[-1].get(k) for k in ("summary", "parts_s", "calls_per_step", "launch_s",
                                                     "kernels_per_step", "step_s", "loop", "api_records",
                                                     "api_mode", "api_reason", "functions")}
    prof = stats.get("torch.profiler CPU+CUDA", {}).get("added_s_per_token")
    mine = stats.get("fastprof kernel+host", {}).get("added_s_per_token")
    res["fastprof_added_over_profiler_added"] = (mine / prof) if mine is not None and prof else None
    prof = stats.get("torch.profiler CPU+CUDA", {}).get("added_in_iteration_s_per_token")
    mine = stats.get("fastprof kernel+host", {}).get("added_in_iteration_s_per_token")
    res["in_iteration_fastprof_over_profiler"] = (mine / prof) if mine is not None and prof else None
    return res


def fmt(s: dict) -> str:
    if not s or s.get("median") is None:
        return "-"
    if s.get("ci95_low") is None:
        return f"{s['median']:.3f}"
    return f"{s['median']:.3f} [{s['ci95_low']:.3f}, {s['ci95_high']:.3f}]"


def workload_arguments(description: str, budget_s: float) -> argparse.ArgumentParser:
    """The options of the benches that time the 1.2B decode in rounds of arms, eager and compiled."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds of all arms (default 10; smoke: 2)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per generate (default 64; smoke: 8)")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 64; smoke: 8)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--skip-compiled", action="store_true")
    ap.add_argument("--skip-eager", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script")
    ap.add_argument("--budget-s", type=float, default=budget_s, help="stop starting rounds (after 3) past this time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output")
    return ap


def parse_workload_arguments(ap: argparse.ArgumentParser) -> argparse.Namespace:
    args = ap.parse_args()
    args.rounds = args.rounds or (2 if args.smoke else 10)
    args.new_tokens = args.new_tokens or (8 if args.smoke else 64)
    args.prompt_len = args.prompt_len or (8 if args.smoke else 64)
    return args


def decode_workloads(args: argparse.Namespace) -> tuple[list[Workload], dict[str, Any]]:
    """The 1.2B Llama (tiny under --smoke), eager and (on a GPU) compiled with a static cache and
    reduce-overhead, and the report's head (arguments, device, torch)."""
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
    head = {"config": vars(args), "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__, "workloads": {}}
    return workloads, head


def main() -> int:
    ap = workload_arguments(__doc__, 240.0)
    ap.add_argument("--arms", choices=("all", "fastprof", "profiler", "decompose"), default="all",
                    help="decompose: all four arms plus the kernel tracer alone and with API records")
    args = parse_workload_arguments(ap)
    args.arm_list = [a for a in ARMS if a.startswith("untraced") or args.arms in ("all", "decompose")
                     or (args.arms == "fastprof") == a.startswith("fastprof")]
    if args.arms == "decompose":
        args.arm_list += list(DECOMPOSE)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    workloads, report = decode_workloads(args)
    deadline = t_start + args.budget_s
    for wl in workloads:
        log(f"workload {wl.name}")
        report["workloads"][wl.name] = run_workload(wl, args, deadline + (args.budget_s / 2 if wl.name == "compiled"
                                                                          else 0), log)
    out = args.output or (os.path.join(os.environ["OUT"], "host_trace.json") if os.environ.get("OUT") else None)
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1, default=str)
    print()
    print(f"host trace cost: {report['device']}, batch 1, prompt {args.prompt_len}, new {args.new_tokens}")
    print(f"{'workload':10} {'arm':24} {'ratio to untraced [95% CI]':30} {'wall':>10} {'added/token':>12} "
          f"{'in iteration':>12}")
    for name, res in report["workloads"].items():
        for arm in args.arm_list:
            s = res["arms"][arm]
            wall = f"{s['median_wall_s'] * 1e3:7.1f} ms" if s.get("median_wall_s") else "-"
            add = f"{s['added_s_per_token'] * 1e3:8.3f} ms" if s.get("added_s_per_token") is not None else "-"
            inner = s.get("added_in_iteration_s_per_token")
            inner = f"{inner * 1e3:8.3f} ms" if inner is not None else "-"
            print(f"{name:10} {arm:24} {fmt(s):30} {wall:>10} {add:>12} {inner:>12}")
        r = res.get("fastprof_added_over_profiler_added")
        print(f"{name:10} fastprof added / torch.profiler CPU+CUDA added: "
              + (f"{r:.2f} (target <= 0.5)" if r is not None else "-"))
        r = res.get("in_iteration_fastprof_over_profiler")
        print(f"{name:10} the same inside the iteration (without stop): " + (f"{r:.2f}" if r is not None else "-"))
        if res.get("profiler_events"):
            print(f"{name:10} torch.profiler recorded {res['profiler_events']['cuda']} CUDA and "
                  f"{res['profiler_events']['cpu']} CPU events in one generate")
        sums = res.get("parts_sum_ratio")
        if sums:
            print(f"{name:10} host parts / traced step: {min(sums):.4f}-{max(sums):.4f} (target within 5%)")
        print(f"{name:10} fastprof arm ran in {res['fastprof_rounds_available']}/{len(res['rounds'])} rounds")
        ex = res.get("example") or {}
        print(f"{name:10} API records: {ex.get('api_mode')}, {ex.get('api_records')} in the last traced generate"
              + (f" ({ex['api_reason']})" if ex.get("api_reason") else ""))
        if ex.get("summary"):
            print(f"{name:10} {ex['summary']}")
        for f in ex.get("functions") or []:
            print(f"{name:10}   {f['name']:36} {f['calls_per_step']:7.1f}/step {f['s_per_call'] * 1e6:7.2f} us each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
