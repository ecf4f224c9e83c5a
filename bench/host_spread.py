"""Fast and slow iterations of the same decode: which part of the host's step differs.

On shared GPU VMs the same eager decode runs at about 11 ms per token in some iterations and
15-25 ms in others, within and between processes. This study starts ``--processes`` fresh
processes one after the other (forked from the study's process after its imports and before any
CUDA use, so each has its own CUDA context; ``--fresh`` starts new interpreters instead); each builds the 1.2B Llama of bench/kernel_trace.py (random
weights, bf16, batch 1, 64+64 tokens, eager), warms up, then runs ``--iterations`` rounds of:

1. the host-path calibration (fastprof.capture.hostpath.calibrate: driver launch, launch plus
   synchronise, a torch op, a Python loop) and the steal / CPU clock watch around the round;
2. one untraced generate (its ITL: the speed the user sees);
3. one traced generate (kernel trace with CUDA API records, module hooks, loop markers) and its
   host breakdown (fastprof.analysis.host.section).

The parent splits the iterations at the median untraced ITL (and at --slow-ms when given) and
prints, for fast and slow, the mean of every part: ITL, the traced step's parts by CUDA API and
by place, launch cost per call, calibration figures, steal. Writes everything to
$OUT/host_spread.json (or --output).

    python bench/host_spread.py --processes 12 --iterations 6      # GPU: about 5 minutes
    python bench/host_spread.py --smoke                            # CPU: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from fastprof.analysis import host as H
    from fastprof.capture import hostpath
    from fastprof.capture.hf import build_default_model, random_inputs
    from fastprof.capture.host_trace import HostTracer
    from fastprof.capture.kernel_trace import KernelTracer
    from host_trace import token_marks
    from observer_effect import MODEL_1B, MODEL_SMOKE

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    t_import = time.perf_counter()
    before_model = hostpath.calibrate(device_ordinal=0 if cuda else None) if cuda else hostpath.calibrate()
    with torch.device(device):
        model = build_default_model(dtype=torch.bfloat16 if cuda else torch.float32, device=device, seed=0,
                                    **(MODEL_SMOKE if args.smoke else MODEL_1B))
    model.generation_config.pad_token_id = 0
    inputs = random_inputs(int(model.config.vocab_size), 1, args.prompt_len, device=device, seed=0)
    n = args.new_tokens
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def generate(**extra: Any) -> tuple[int, np.ndarray]:
        marks = token_marks()
        sync()
        t0 = time.monotonic_ns()
        with torch.inference_mode():
            model.generate(**inputs, **kw, streamer=marks, **extra)
        sync()
        return t0, np.asarray(marks.t, dtype=np.int64)

    for _ in range(args.warmup):
        generate()
    watch = hostpath.HostPathWatch()
    rows = []
    for _ in range(args.iterations):
        watch.begin()
        cal = hostpath.calibrate(device_ordinal=0 if cuda else None)
        t0, marks = generate()
        itl = float(np.diff(marks).mean()) / 1e9
        host = HostTracer(model)
        tracer = KernelTracer(api=True) if cuda else None
        if tracer is not None:
            tracer.start()
        with host:
            ts, tm = generate(logits_processor=host.wrap_processors([]))
        trace = tracer.stop() if tracer is not None else None
        sec = H.section([(ts, tm)], spans=host.take(), api=trace.api if trace is not None else None, kernels=trace,
                        thread_candidates=(threading.get_native_id(), threading.get_ident()))
        env = watch.end()
        api = sec.get("api") or {}
        rows.append({"itl_s": itl, "traced_step_s": sec["step_s"]["mean"], "api_parts_s": api.get("parts_s"),
                     "calls_per_step": api.get("calls_per_step"), "launch_s": (api.get("launch_s") or {}).get("mean"),
                     "gpu_waiting_share": api.get("gpu_waiting_share"),
                     "loop_s": (sec.get("loop") or {}).get("parts_s"),
                     "layer_s_each": (sec.get("modules") or {}).get("layer_s_each"),
                     "by_kind_s": (sec.get("modules") or {}).get("self_s_by_kind"),
                     "calibration": cal, "steal_s": env.get("steal_s"), "steal_share": env.get("steal_share"),
                     "cpu": env.get("cpu"), "cpu_mhz": env.get("cpu_mhz")})
    return {"pid": os.getpid(), "before_model": before_model, "startup_s": time.perf_counter() - t_import,
            "iterations": rows}


def flat(row: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                    out[f"{k}.{k2}"] = float(v2)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "cpu":
            out[k] = float(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--slow-ms", type=float, default=None, help="also split at this untraced ITL (ms)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no process past this time")
    ap.add_argument("--output")
    ap.add_argument("--fresh", dest="fork", action="store_false",
                    help="start every process as a fresh interpreter (default: forked from this one after the "
                         "imports, before any CUDA use: fresh CUDA contexts, a shared import)")
    args = ap.parse_args()
    if args.smoke:
        args.processes, args.iterations, args.new_tokens, args.prompt_len = 2, 2, 8, 8
    if args.worker:
        with open(args.worker, "w") as f:
            json.dump(worker(args), f, default=str)
        return 0
    t0 = time.perf_counter()
    procs = []
    out = args.output or (os.path.join(os.environ["OUT"], "host_spread.json") if os.environ.get("OUT") else None)
    if args.fork:  # import once; every process is forked before it touches CUDA
        import torch  # noqa: F401
        import transformers  # noqa: F401

        import fastprof.analysis.host  # noqa: F401
        import fastprof.capture.host_trace  # noqa: F401
        import fastprof.capture.kernel_trace  # noqa: F401
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(args.processes):
            if time.perf_counter() - t0 > args.budget_s:
                print(f"time budget reached after {p} processes", flush=True)
                break
            path = os.path.join(tmp, f"{p}.json")
            if args.fork:
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        with open(path, "w") as f:
                            json.dump(worker(args), f, default=str)
                        code = 0
                    finally:
                        os._exit(code)
                _, status = os.waitpid(pid, 0)
                ok, err = os.waitstatus_to_exitcode(status) == 0, ""
            else:
                cmd = [sys.executable, __file__, "--worker", path, "--iterations", str(args.iterations),
                       "--warmup", str(args.warmup), "--new-tokens", str(args.new_tokens),
                       "--prompt-len", str(args.prompt_len), *(["--smoke"] if args.smoke else [])]
                r = subprocess.run(cmd, capture_output=True, text=True)
                ok, err = r.returncode == 0, (r.stderr or "")
            if not ok or not os.path.exists(path):
                print(f"process {p} failed: {err.strip().splitlines()[-3:]}", flush=True)
                continue
            with open(path) as f:
                procs.append(json.load(f))
            print(f"[{time.perf_counter() - t0:6.1f} s] process {p + 1}: ITL "
                  + ", ".join(f"{x['itl_s'] * 1e3:.1f}" for x in procs[-1]["iterations"]) + " ms", flush=True)
            if out:  # what was measured so far survives a time limit
                with open(out, "w") as f:
                    json.dump({"config": vars(args), "processes": procs}, f, indent=1, default=str)
    rows = [(i, flat(x)) for i, pr in enumerate(procs) for x in pr["iterations"]]
    report: dict[str, Any] = {"config": vars(args), "processes": procs}
    if rows:
        itl = np.array([r["itl_s"] for _, r in rows])
        splits = {"median": float(np.median(itl))}
        if args.slow_ms:
            splits["slow_ms"] = args.slow_ms / 1e3
        report["splits"] = {}
        keys = sorted({k for _, r in rows for k in r})
        for name, cut in splits.items():
            fast = [r for _, r in rows if r["itl_s"] < cut]
            slow = [r for _, r in rows if r["itl_s"] >= cut]
            table = {}
            for k in keys:
                f = [r[k] for r in fast if k in r]
                s = [r[k] for r in slow if k in r]
                table[k] = {"fast": float(np.mean(f)) if f else None, "slow": float(np.mean(s)) if s else None}
            report["splits"][name] = {"cut_s": cut, "n_fast": len(fast), "n_slow": len(slow), "means": table}
            print(f"\nsplit at {name} = {cut * 1e3:.2f} ms: {len(fast)} fast, {len(slow)} slow iterations")
            print(f"{'figure':44} {'fast':>12} {'slow':>12} {'slow/fast':>10}")
            for k in keys:
                a, b = table[k]["fast"], table[k]["slow"]
                if a is None or b is None:
                    continue
                ratio = f"{b / a:10.2f}" if a else f"{'-':>10}"
                print(f"{k:44} {a:12.6g} {b:12.6g} {ratio}")
        # the correlation of untraced ITL with each figure, over all iterations
        corr = {}
        for k in keys:
            pairs = [(r["itl_s"], r[k]) for _, r in rows if k in r and k != "itl_s"]
            if len(pairs) >= 4:
                x, y = np.array(pairs).T
                if x.std() > 0 and y.std() > 0:
                    corr[k] = float(np.corrcoef(x, y)[0, 1])
        report["correlation_with_itl"] = corr
        print("\nstrongest correlations with the untraced ITL:")
        for k, v in sorted(corr.items(), key=lambda kv: -abs(kv[1]))[:12]:
            print(f"  {k:44} {v:+.2f}")
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
