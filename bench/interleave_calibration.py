"""What alternating iterations buys: false alarms and power of comparisons inside one process,
and over processes that each measured every arm, blocked against interleaved.

Each of ``--processes`` fresh processes (forked after the imports; on a GPU each makes its own
CUDA context) loads the built-in model (or ``--model``) and measures several arms of the same
decode with :func:`fastprof.generate_steps`: A, A' (the same again: an A/A control) and one B per
``--slowdowns`` value (A slowed by a host delay per decode step of that share of A's ITL, a logits
processor that sleeps, or with ``--delay spin`` spins). With ``--orders both``, even processes run the arms blocked (all of A's
timed iterations, then A''s, then each B's), odd processes interleaved (by round, in
:func:`fastprof.measure.driver.round_order`: reversed every round, and with three or more arms each
pair of rounds starting one arm further on), each arm warmed up first.

Two readings of the same processes:
- one process: `fastprof compare`'s own tests on ITL per process. Blocked, Welch's over
  iterations (a one-process comparison of two separate runs); interleaved, the paired test by
  round (``compare --by`` on a ``--processes 1`` run).
- ``--side`` processes (default 5): every draw of that many processes of one order (all of them
  where there are few, else ``--draws`` random ones) compared as ``compare --by`` compares a
  ``fastprof run --processes 5`` run of two configurations: per-process median ITL, paired by
  process. This is the issue's "5 processes a side", with each process measuring both sides.

A false alarm: A' called significantly different from A; caught: a B called a significant
regression. Rates over processes (or draws), with the median B/A ratio and detectable change; the
detected share against the true change is the power curve.

    python bench/interleave_calibration.py --processes 20            # CPU: about 6 minutes
    python bench/interleave_calibration.py --device cuda --orders interleaved --slowdowns 0.025,0.05,0.1
    python bench/interleave_calibration.py --smoke                   # the script only

A pool gathered in several calls (one device call each): give every call the same ``--itl-ms``, so
that its B arms sleep as long as the other calls' did, and read the files together with ``--from``:

    python bench/interleave_calibration.py --device cuda --model DIR --itl-ms 12 --output a.json
    python bench/interleave_calibration.py --from a.json b.json

Writes every figure to $OUT/interleave_calibration.json (or --output); prints tables last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

def arm_names(slowdowns: list[float]) -> list[str]:
    """A, A' and one B per slowdown (``B10%``, ...)."""
    return ["A", "A'", *(f"B{100 * x:g}%" for x in slowdowns)]


def measure(args: argparse.Namespace, interleaved: bool, delays_s: list[float] | None) -> dict[str, Any]:
    """In a fresh (forked) process: the arms, blocked or interleaved; their per-iteration ITL and
    the one-process comparison rows. ``delays_s`` None: a probe, A alone, returns its ITL."""
    import numpy as np
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    import fastprof
    from fastprof.analysis.compare import compare_metric
    from fastprof.capture import hf
    from fastprof.measure.driver import round_order, run_steps
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
    if delays_s is None:
        r = fastprof.benchmark_generate(model, inputs, **common)
        return {"itl_s": r.summary["itl_s"]["p50"]}

    class Delay(LogitsProcessor):
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds

        def __call__(self, input_ids, scores):
            if args.delay == "spin":  # the thread stays busy, as host code that costs time would
                end = time.perf_counter() + self.seconds
                while time.perf_counter() < end:
                    pass
            else:
                time.sleep(self.seconds)
            return scores

    arms = arm_names(args.slowdowns)
    kwargs: dict[str, dict[str, Any]] = {"A": {}, "A'": {}}
    for arm, d in zip(arms[2:], delays_s):
        kwargs[arm] = {"logits_processor": LogitsProcessorList([Delay(d)])}
    steps = {arm: fastprof.generate_steps(model, inputs, generate_kwargs=kwargs[arm], config={"arm": arm}, **common)
             for arm in arms}
    results = {}
    if interleaved:
        for arm in arms:
            next(steps[arm])  # warm-up
        for r in range(args.iterations):
            for arm in round_order(arms, r):
                next(steps[arm])
        for arm in arms:
            results[arm] = run_steps(steps[arm])
            results[arm].config["iteration_order"] = {"interleaved_with": len(arms)}
    else:
        for arm in arms:
            results[arm] = run_steps(steps[arm])
    out: dict[str, Any] = {"order": "interleaved" if interleaved else "blocked",
                           "itl_ms": {arm: (unit_values(results[arm], "itl_s") * 1e3).tolist() for arm in arms}}
    for other in arms[1:]:
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


def per_side(rows: list[dict[str, Any]], arms: list[str], side: int, draws: int, seed: int,
             rounds: bool) -> dict[str, Any] | None:
    """``side`` processes of one order at a time, compared as ``compare --by`` compares two
    configurations of a ``--processes side`` run, paired by process: each process's log ratio from
    its two medians (``rounds`` False), or the median over its rounds of B's iteration against A's
    of the same round (``rounds`` True: what compare does where the configurations alternated)."""
    import itertools
    import random

    import numpy as np

    from fastprof.analysis.compare import compare_metric

    if len(rows) < side:
        return None
    combos = list(itertools.combinations(range(len(rows)), side))
    if len(combos) > draws:
        combos = random.Random(seed).sample(combos, draws)
    med = {arm: np.asarray([r["median_itl_ms"][arm] for r in rows]) for arm in arms}
    out: dict[str, Any] = {"side": side, "draws": len(combos), "pool": len(rows), "rounds": rounds}
    for other in arms[1:]:
        within = np.asarray([float(np.median(np.log(np.asarray(r["itl_ms"][other]) / np.asarray(r["itl_ms"]["A"]))))
                             for r in rows])
        sig, reg, ratios, mde = 0, 0, [], []
        for c in combos:
            idx = list(c)
            row = compare_metric(med["A"][idx], med[other][idx], "itl_s", unit="process", paired=True,
                                 min_effect_pct=1.0, log_ratios=within[idx] if rounds else None)
            sig += bool(row.significant)
            reg += row.verdict == "regression"
            ratios.append(row.ratio)
            mde.append(row.detectable_pct)
        out[other] = {"significant_rate": sig / len(combos), "regression_rate": reg / len(combos),
                      "median_ratio": float(np.median(ratios)), "median_detectable_pct": float(np.nanmedian(mde)),
                      "per_process_ratio": [float(x) for x in (np.exp(within) if rounds else med[other] / med["A"])]}
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
    ap.add_argument("--processes", type=int, default=20, help="fresh processes")
    ap.add_argument("--orders", choices=("both", "interleaved", "blocked"), default="both",
                    help="both: processes alternately blocked and interleaved")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--slowdowns", default="0.10", help="comma-separated shares of A's ITL: one B arm each")
    ap.add_argument("--side", type=int, default=5, help="processes a side for the process-paired reading")
    ap.add_argument("--draws", type=int, default=1000, help="at most this many draws of --side processes")
    ap.add_argument("--itl-ms", type=float, default=None,
                    help="A's ITL to take the delays from, instead of probing it (the same delays in several "
                         "calls whose processes are analysed together)")
    ap.add_argument("--delay", choices=("sleep", "spin"), default="sleep",
                    help="how a B arm spends its delay: sleeping (the thread idle: on a VM its vCPU may be "
                         "descheduled, and the wake-up costs more than the delay) or spinning (busy, as slower "
                         "host code would be)")
    ap.add_argument("--budget-s", type=float, default=None, help="start no process past this time")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 4 processes: checks the script")
    ap.add_argument("--from", dest="from_files", nargs="+", metavar="JSON",
                    help="measure nothing: read the processes of earlier runs' JSON files (same arms) and analyse them together")
    ap.add_argument("--output")
    args = ap.parse_args()
    args.slowdowns = [float(x) for x in args.slowdowns.split(",")]
    if args.from_files:
        return analyse_files(args)
    if args.smoke:
        args.processes, args.iterations, args.warmup, args.prompt_len, args.new_tokens = 4, 4, 1, 8, 8
        args.side = 2
    arms = arm_names(args.slowdowns)
    import torch  # noqa: F401 - imported once, before the forks (no CUDA use here)
    import transformers  # noqa: F401

    import fastprof.measure.driver  # noqa: F401
    import fastprof.report.compare  # noqa: F401

    t0 = time.perf_counter()
    probe = {"itl_s": args.itl_ms / 1e3} if args.itl_ms else forked(measure, args, False, None)
    delays_s = [x * probe["itl_s"] for x in args.slowdowns]
    print(f"A's ITL {probe['itl_s'] * 1e3:.2f} ms ({'given' if args.itl_ms else 'probed'}); the B arms {args.delay} "
          + ", ".join(f"{d * 1e3:.2f}" for d in delays_s) + " ms a step", flush=True)
    rows = []
    for p in range(args.processes):
        if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
            print(f"time budget reached after {p} processes", flush=True)
            break
        interleaved = {"both": p % 2 == 1, "interleaved": True, "blocked": False}[args.orders]
        row = forked(measure, args, interleaved, delays_s)
        rows.append(row)
        print(f"[{time.perf_counter() - t0:6.0f} s] process {p + 1} ({row['order']})\n   median ITL (ms): "
              + ", ".join(f"{a} {row['median_itl_ms'][a]:.2f}" for a in arms) + "\n   "
              + ", ".join(f"{a} {row[a]['verdict'].replace('no significant change', 'no change')}"
                          for a in arms[1:]), flush=True)
    return analyse(args, arms, rows, probe["itl_s"], delays_s, time.perf_counter() - t0)


def analyse_files(args: argparse.Namespace) -> int:
    """``--from``: the processes of earlier runs, analysed together (their arms must match)."""
    rows, arms, probes, delays, seconds = [], None, [], [], 0.0
    for f in args.from_files:
        d = json.loads(Path(f).read_text())
        if arms is not None and d["arms"] != arms:
            raise SystemExit(f"{f}: arms {d['arms']} differ from {arms}")
        arms = d["arms"]
        rows += d["processes"]
        probes.append(d["probe_itl_s"])
        delays.append(d["delays_s"])
        seconds += d["seconds"]
        args.iterations = d["config"]["iterations"]
        args.device = d["config"]["device"]
    return analyse(args, arms, rows, probes, delays, seconds)


def analyse(args: argparse.Namespace, arms: list[str], rows: list[dict[str, Any]], probe_itl_s: Any,
            delays_s: Any, seconds: float) -> int:
    import numpy as np

    table, sides = {}, {}
    for order in ("blocked", "interleaved"):
        sel = [r for r in rows if r["order"] == order]
        if not sel:
            continue
        t: dict[str, Any] = {"processes": len(sel), "false_alarm_rate": sum(r["A'"]["significant"] for r in sel) / len(sel)}
        for arm in arms[2:]:
            ratios = sorted(r[arm]["ratio"] for r in sel)
            mde = sorted(r[arm]["detectable_pct"] for r in sel)
            t[arm] = {"power": sum(r[arm]["verdict"] == "regression" for r in sel) / len(sel),
                      "median_ratio": ratios[len(ratios) // 2], "median_detectable_pct": mde[len(mde) // 2]}
        table[order] = t
        for rounds in ((False, True) if order == "interleaved" else (False,)):
            s = per_side(sel, arms, args.side, args.draws, seed=1, rounds=rounds)
            if s is not None:
                sides[f"{order}, {'by round' if rounds else 'medians'}"] = s
    # The change each arm really made: over all interleaved processes, the median of their
    # round-by-round ratios (a host delay costs a step more than its length).
    inter = [r for r in rows if r["order"] == "interleaved"]
    true_ratio = {arm: float(np.exp(np.median([np.median(np.log(np.asarray(r["itl_ms"][arm]) / np.asarray(r["itl_ms"]["A"])))
                                                for r in inter]))) for arm in arms[1:]} if inter else {}
    report = {"config": vars(args), "arms": arms, "probe_itl_s": probe_itl_s, "delays_s": delays_s,
              "processes": rows, "table": table, "per_side": sides, "true_ratio": true_ratio, "seconds": seconds}
    out = args.output or (os.path.join(os.environ["OUT"], "interleave_calibration.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    if true_ratio:
        print("each arm's change (median over interleaved processes, round by round):\n  "
              + ", ".join(f"{a} {v:.3f}" for a, v in true_ratio.items()))
    # One row per order and arm, so that the tables stay within 80 columns whatever the arms.
    print(f"\none process on {args.device}: B = A + a host delay a step; {args.iterations} iterations an arm")
    print(f"{'order':12} {'processes':>9} {'arm':>6} {'caught':>7} {'detectable':>11}  (A/A false alarms)")
    for order, t in table.items():
        for a in arms[2:]:
            print(f"{order:12} {t['processes']:>9} {a:>6} {t[a]['power']:>7.0%} "
                  f"{t[a]['median_detectable_pct']:>10.1f}%  ({t['false_alarm_rate']:.0%})")
    if sides:
        print(f"\n{args.side} processes a side, each measuring every arm, paired by process\n"
              f"(compare --by on a --processes {args.side} run)")
        print(f"{'order, ratio':22} {'draws':>5} {'arm':>6} {'called':>7} {'detectable':>11}")
        for order, t in sides.items():
            for a in arms[1:]:
                called = t[a]["significant_rate"] if a == arms[1] else t[a]["regression_rate"]
                print(f"{order:22} {t['draws']:>5} {a:>6} {called:>7.0%} {t[a]['median_detectable_pct']:>10.1f}%")
        print("called: a false alarm for A', a regression for each B")
    print(f"total {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
