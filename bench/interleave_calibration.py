"""What alternating iterations buys inside one process: false alarms and power of a one-process
comparison, blocked against interleaved.

Each of ``--processes`` fresh processes (forked after the imports; on a GPU each makes its own
CUDA context) loads the built-in model (or ``--model``) and measures three arms of the same decode
with :func:`fastprof.generate_steps`: A, A' (the same again: an A/A control) and B (A slowed by a
host delay per decode step of ``--slowdown`` of A's ITL, a logits processor that sleeps). Even
processes run the arms blocked (all of A's timed iterations, then A''s, then B's), odd processes
interleaved (A A' B, B A' A, ... by round), each arm warmed up first. Per process, `fastprof
compare`'s own tests on ITL: blocked, Welch's over iterations (what a one-process comparison of two
separate runs does); interleaved, the paired test by round (``compare --by`` on a one-process run).
A false alarm: A' called significantly different from A; caught: B called a significant
regression. Rates over processes, with the median B/A ratio and detectable change.

    python bench/interleave_calibration.py --processes 20            # CPU: about 6 minutes
    python bench/interleave_calibration.py --device cuda --processes 20
    python bench/interleave_calibration.py --smoke                   # the script only

Writes every figure to $OUT/interleave_calibration.json (or --output); prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ARMS = ("A", "A'", "B")


def measure(args: argparse.Namespace, interleaved: bool, delay_s: float | None) -> dict[str, Any]:
    """In a fresh (forked) process: the three arms, blocked or interleaved; their per-iteration
    ITL and the comparison rows. ``delay_s`` None: a probe, A alone, returns its ITL."""
    import numpy as np
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    import fastprof
    from fastprof.analysis.compare import compare_metric
    from fastprof.capture import hf
    from fastprof.measure.driver import run_steps
    from fastprof.report.compare import paired_round_values, unit_values

    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if args.model:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, local_files_only=True).to(device).eval()
    else:
        model = hf.build_default_model(dtype=dtype, device=device, seed=0, **({} if not args.smoke else dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=256)))
    model.generation_config.pad_token_id = 0
    inputs = hf.random_inputs(int(model.config.vocab_size), 1, args.prompt_len, device=device, seed=0)
    common = dict(max_new_tokens=args.new_tokens, warmup=args.warmup, iterations=args.iterations,
                  kernel_trace_iterations=0, sample_interval_ms=None, stalls=False, host_trace=False)
    if delay_s is None:
        r = fastprof.benchmark_generate(model, inputs, **common)
        return {"itl_s": r.summary["itl_s"]["p50"]}

    class Delay(LogitsProcessor):
        def __call__(self, input_ids, scores):
            time.sleep(delay_s)
            return scores

    kwargs = {"A": {}, "A'": {}, "B": {"logits_processor": LogitsProcessorList([Delay()])}}
    steps = {arm: fastprof.generate_steps(model, inputs, generate_kwargs=kwargs[arm], config={"arm": arm}, **common)
             for arm in ARMS}
    results = {}
    if interleaved:
        for arm in ARMS:
            next(steps[arm])  # warm-up
        for r in range(args.iterations):
            for arm in (ARMS if r % 2 == 0 else ARMS[::-1]):
                next(steps[arm])
        for arm in ARMS:
            results[arm] = run_steps(steps[arm])
            results[arm].config["iteration_order"] = {"interleaved_with": len(ARMS)}
    else:
        for arm in ARMS:
            results[arm] = run_steps(steps[arm])
    out: dict[str, Any] = {"order": "interleaved" if interleaved else "blocked",
                           "itl_ms": {arm: (unit_values(results[arm], "itl_s") * 1e3).tolist() for arm in ARMS}}
    for other in ("A'", "B"):
        pair = paired_round_values(results["A"], results[other], "itl_s") if interleaved else None
        if pair is not None:
            row = compare_metric(pair[0], pair[1], "itl_s", paired=True, min_effect_pct=1.0)
        else:
            row = compare_metric(unit_values(results["A"], "itl_s"), unit_values(results[other], "itl_s"), "itl_s",
                                 min_effect_pct=1.0)
        out[other] = {"ratio": row.ratio, "p": row.p_value, "significant": bool(row.significant),
                      "verdict": row.verdict, "detectable_pct": row.detectable_pct, "paired": row.paired}
    out["median_itl_ms"] = {arm: float(np.median(v)) for arm, v in out["itl_ms"].items()}
    return out


def forked(fn, *a) -> Any:
    """``fn(*a)`` in a forked child; its JSON result through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            data = json.dumps(fn(*a)).encode()
            with os.fdopen(w, "wb") as f:
                f.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        raise RuntimeError(f"a measuring process failed (exit {os.waitstatus_to_exitcode(status)})")
    return json.loads(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", help="a model directory (default: the built-in model)")
    ap.add_argument("--processes", type=int, default=20, help="fresh processes, alternately blocked and interleaved")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--slowdown", type=float, default=0.10)
    ap.add_argument("--budget-s", type=float, default=None, help="start no process past this time")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 2 processes: checks the script")
    ap.add_argument("--output")
    args = ap.parse_args()
    if args.smoke:
        args.processes, args.iterations, args.warmup, args.prompt_len, args.new_tokens = 2, 4, 1, 8, 8
    import torch  # noqa: F401 - imported once, before the forks (no CUDA use here)
    import transformers  # noqa: F401

    import fastprof.measure.driver  # noqa: F401
    import fastprof.report.compare  # noqa: F401

    t0 = time.perf_counter()
    probe = forked(measure, args, False, None)
    delay_s = args.slowdown * probe["itl_s"]
    print(f"A's ITL {probe['itl_s'] * 1e3:.2f} ms; B sleeps {delay_s * 1e3:.2f} ms a step", flush=True)
    rows = []
    for p in range(args.processes):
        if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
            print(f"time budget reached after {p} processes", flush=True)
            break
        row = forked(measure, args, p % 2 == 1, delay_s)
        rows.append(row)
        print(f"[{time.perf_counter() - t0:6.0f} s] process {p + 1} ({row['order']}): median ITL "
              + ", ".join(f"{a} {row['median_itl_ms'][a]:.2f}" for a in ARMS)
              + f" ms; A' {row[ARMS[1]]['verdict']}, B {row['B']['verdict']}",
              flush=True)
    table = {}
    for order in ("blocked", "interleaved"):
        sel = [r for r in rows if r["order"] == order]
        if not sel:
            continue
        aa = [r["A'"]["significant"] for r in sel]
        caught = [r["B"]["verdict"] == "regression" for r in sel]
        ratios = sorted(r["B"]["ratio"] for r in sel)
        mde = sorted(r["B"]["detectable_pct"] for r in sel)
        table[order] = {"processes": len(sel), "false_alarm_rate": sum(aa) / len(sel),
                        "power": sum(caught) / len(sel), "median_b_ratio": ratios[len(ratios) // 2],
                        "median_detectable_pct": mde[len(mde) // 2]}
    report = {"config": vars(args), "probe_itl_s": probe["itl_s"], "delay_s": delay_s, "processes": rows,
              "table": table, "seconds": time.perf_counter() - t0}
    out = args.output or (os.path.join(os.environ["OUT"], "interleave_calibration.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    print(f"\none-process comparisons on {args.device}: B = A + {args.slowdown:.0%} host delay per step; "
          f"{args.iterations} iterations per arm")
    print(f"{'order':12} {'processes':>9} {'A/A false alarms':>17} {'B caught':>9} {'B/A median':>11} {'detectable':>11}")
    for order, t in table.items():
        print(f"{order:12} {t['processes']:>9} {t['false_alarm_rate']:>17.0%} {t['power']:>9.0%} "
              f"{t['median_b_ratio']:>11.3f} {t['median_detectable_pct']:>10.1f}%")
    print(f"total {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
