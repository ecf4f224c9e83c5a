"""Does a kernel trace slow down what runs after it in the same process?

In bench/host_spread.py's 12 processes (bench/RESULTS.md), the first untraced generate of every
process, the only one before any trace, was the fastest (15.4 ms against 22 ms a token after). This
study separates the trace from the passing of time: ``--processes`` fresh processes (forked after
the imports, before any CUDA use, each with its own CUDA context), alternately of two kinds:

  trace    untraced generates (``--before``), ONE traced generate (fastprof's traced iteration:
           kernel tracer with CUDA API records and the host marks), untraced generates (``--after``)
  control  the same, with an untraced generate in the traced one's place

Per process: the median ITL of the generates before and after, and their ratio after / before,
with the host-path calibration (fastprof.capture.hostpath.calibrate) before and after. The effect
of the trace is the trace processes' ratio against the control processes' ratio (a ratio of the
median ratios, with a bootstrap 95% interval over processes); time alone moves both kinds alike.

    python bench/trace_aftereffect.py --processes 12          # GPU: about 4 minutes
    python bench/trace_aftereffect.py --smoke                 # CPU: checks the script only

Writes every figure to $OUT/trace_aftereffect.json (or --output); prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def worker(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    import torch

    from fastprof.capture import hostpath
    from fastprof.capture.hf import build_default_model, random_inputs
    from fastprof.capture.host_trace import HostTracer
    from fastprof.capture.kernel_trace import KernelTracer
    from host_trace import token_marks
    from observer_effect import MODEL_1B, MODEL_SMOKE

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    with torch.device(device):
        model = build_default_model(dtype=torch.bfloat16 if cuda else torch.float32, device=device, seed=0,
                                    **(MODEL_SMOKE if args.smoke else MODEL_1B))
    model.generation_config.pad_token_id = 0
    inputs = random_inputs(int(model.config.vocab_size), 1, args.prompt_len, device=device, seed=0)
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def generate(**extra: Any) -> float:
        marks = token_marks()
        sync()
        with torch.inference_mode():
            model.generate(**inputs, **kw, streamer=marks, **extra)
        sync()
        return float(np.median(np.diff(np.asarray(marks.t, dtype=np.int64)))) / 1e9

    ordinal = 0 if cuda else None
    for _ in range(args.warmup):
        generate()
    cal_before = hostpath.calibrate(device_ordinal=ordinal)
    before = [generate() for _ in range(args.before)]
    middle: dict[str, Any] = {}
    if kind == "trace":
        tracer = KernelTracer(api=True)
        started = tracer.start()
        host = HostTracer(model)
        with host:
            middle["itl_s"] = generate(logits_processor=host.wrap_processors([]))
        sync()
        trace = tracer.stop()
        middle.update(available=bool(started), records=len(trace) if started else 0, note=tracer.note,
                      library=tracer.library_path)
    else:
        middle["itl_s"] = generate()
    after = [generate() for _ in range(args.after)]
    cal_after = hostpath.calibrate(device_ordinal=ordinal)
    return {"kind": kind, "pid": os.getpid(), "cpu": _cpu(), "before_s": before,
            "middle": middle, "after_s": after, "calibration_before": cal_before, "calibration_after": cal_after}


def _cpu() -> int | None:
    try:
        with open("/proc/self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def run_forked(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its own CUDA context
        os.close(r)
        try:
            out = json.dumps(worker(args, kind), default=str).encode()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = json.dumps({"kind": kind, "error": f"{type(exc).__name__}: {exc}"}).encode()
        with os.fdopen(w, "wb") as f:
            f.write(out)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data or b'{"error": "no output"}')


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, seed: int, n: int = 10_000) -> tuple[float, float, float]:
    """median(a) / median(b) with a percentile bootstrap 95% interval (resampling each group)."""
    rng = np.random.default_rng(seed)
    est = float(np.median(a) / np.median(b))
    ra = np.median(rng.choice(a, (n, a.size)), axis=1)
    rb = np.median(rng.choice(b, (n, b.size)), axis=1)
    lo, hi = np.percentile(ra / rb, [2.5, 97.5])
    return est, float(lo), float(hi)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=None, help="processes, alternately trace and control "
                                                                "(default 12; smoke: 2)")
    ap.add_argument("--before", type=int, default=3)
    ap.add_argument("--after", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=None, help="default 64; smoke: 8")
    ap.add_argument("--prompt-len", type=int, default=None, help="default 64; smoke: 8")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no process past this time")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output")
    args = ap.parse_args()
    args.processes = args.processes or (2 if args.smoke else 12)
    args.new_tokens = args.new_tokens or (8 if args.smoke else 64)
    args.prompt_len = args.prompt_len or (8 if args.smoke else 64)
    import torch  # noqa: F401 - imported once, before the forks (no CUDA use here)
    import transformers  # noqa: F401

    t0 = time.perf_counter()
    rows = []
    for p in range(args.processes):
        if p >= 2 and time.perf_counter() - t0 > args.budget_s:
            print(f"time budget reached after {p} processes", flush=True)
            break
        kind = "trace" if p % 2 == 0 else "control"
        row = run_forked(args, kind)
        rows.append(row)
        if "error" in row:
            print(f"[{time.perf_counter() - t0:6.1f} s] process {p + 1} ({kind}): {row['error']}", flush=True)
            continue
        row["ratio"] = float(np.median(row["after_s"]) / np.median(row["before_s"]))
        print(f"[{time.perf_counter() - t0:6.1f} s] process {p + 1} ({kind}): ITL before "
              f"{', '.join(f'{x * 1e3:.1f}' for x in row['before_s'])} | {row['middle']['itl_s'] * 1e3:.1f} | after "
              f"{', '.join(f'{x * 1e3:.1f}' for x in row['after_s'])} ms; after/before {row['ratio']:.3f}", flush=True)
    ok = [r for r in rows if "ratio" in r]
    trace = np.asarray([r["ratio"] for r in ok if r["kind"] == "trace"])
    control = np.asarray([r["ratio"] for r in ok if r["kind"] == "control"])
    report: dict[str, Any] = {"config": vars(args), "processes": rows}
    if trace.size and control.size:
        est, lo, hi = bootstrap_ratio(trace, control, args.seed)
        report["effect"] = {"trace_ratio_median": float(np.median(trace)),
                            "control_ratio_median": float(np.median(control)),
                            "trace_over_control": est, "ci95": [lo, hi], "n_trace": int(trace.size),
                            "n_control": int(control.size)}

        def loop(kind: str, when: str) -> float:
            return float(np.median([r[f"calibration_{when}"]["python_loop_s"] for r in ok if r["kind"] == kind]))

        report["python_loop_s"] = {k: {w: loop(k, w) for w in ("before", "after")} for k in ("trace", "control")}
    out = args.output or (os.path.join(os.environ["OUT"], "trace_aftereffect.json") if os.environ.get("OUT") else None)
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1, default=str)
    print()
    eff = report.get("effect")
    if eff:
        print(f"ITL after / before, median over processes: trace {eff['trace_ratio_median']:.3f} "
              f"({eff['n_trace']} processes), control {eff['control_ratio_median']:.3f} ({eff['n_control']})")
        print(f"trace / control: {eff['trace_over_control']:.3f} [{eff['ci95'][0]:.3f}, {eff['ci95'][1]:.3f}]")
        for k, v in report["python_loop_s"].items():
            print(f"Python loop calibration, {k}: before {v['before'] * 1e3:.2f} ms, after {v['after'] * 1e3:.2f} ms")
    else:
        print("no effect estimate: a kind of process is missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
