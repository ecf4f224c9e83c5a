"""How often `fastprof compare --fail-on-regression 5` fires on A/A, and how often it catches a 20% slowdown.

Collects a pool of independent single-process runs of the built-in model (`fastprof run
--processes 1`, each a fresh process with its own model load, warm-up and iterations), arm A
unchanged and arm B slowed by a fixed host delay per decode step (FASTPROF_STEP_DELAY_MS) sized
to 20% of A's median inter-token latency, in a shuffled order. Then, for each number of processes
per side N, draws many comparisons from the pool: A/A (2N distinct A runs, split in two) and A/B
(N A runs against N B runs); each side is merged as `fastprof run --processes N` merges it, and
compared as `fastprof compare --fail-on-regression 5` does (every metric, Holm, alpha 0.05).
Reports the false-alarm rate (A/A comparisons that fail the gate) and the power (A/B comparisons
that fail it) per N.

Comparisons drawn from one pool share runs, so they are not independent: the rates are
estimates whose precision is set by the pool size (printed), not by the number of draws.

    python bench/compare_calibration.py --pool-a 16 --pool-b 8          # CPU: about 5 minutes
    python bench/compare_calibration.py --device cuda --pool-a 16 --pool-b 8
    python bench/compare_calibration.py --smoke                         # the script only

On a GPU machine, collect only and analyse elsewhere (the analysis is CPU work):

    python bench/compare_calibration.py --device cuda --pool-dir $OUT/pool --collect-only
    python bench/compare_calibration.py --pool-dir pool --analyse-only

Writes every figure to --output (or $OUT/compare_calibration.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(out: Path, args: argparse.Namespace, delay_ms: float | None) -> None:
    """One single-process run into ``out``: a fresh interpreter, or (``--fork``) a child forked
    from this process after its imports, as `fastprof run`'s fork server starts its workers (this
    process never touches CUDA, so each child makes its own CUDA context)."""
    argv = ["run", "--processes", "1", "--quiet", "--device", args.device,
            "--prompt-len", str(args.prompt_len), "--max-new-tokens", str(args.new_tokens),
            "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--kernel-trace", str(args.kernel_trace),
            "--sample-interval-ms", "0", "-o", str(out)] + (["--model", args.model] if args.model else [])
    env = dict(os.environ)
    env.pop("FASTPROF_STEP_DELAY_MS", None)
    if delay_ms:
        env["FASTPROF_STEP_DELAY_MS"] = f"{delay_ms:.4f}"
    if not args.fork:
        subprocess.run([sys.executable, "-m", "fastprof", *argv], check=True, stdout=subprocess.DEVNULL, env=env)
        return
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.clear()
            os.environ.update(env)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            from fastprof import cli

            code = cli.main(argv)
        finally:
            os._exit(code if isinstance(code, int) else 1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"pool run {out.name} failed (exit {os.waitstatus_to_exitcode(status)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", help="a model directory (default: the built-in model)")
    ap.add_argument("--pool-a", type=int, default=16, help="single-process runs of arm A")
    ap.add_argument("--pool-b", type=int, default=8, help="single-process runs of arm B (slowed)")
    ap.add_argument("--processes", default="1,2,3,5", help="processes per side to evaluate")
    ap.add_argument("--draws", type=int, default=300, help="comparisons drawn per N and arm")
    ap.add_argument("--slowdown", type=float, default=0.20)
    ap.add_argument("--threshold", type=float, default=5.0, help="--fail-on-regression PCT")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output")
    ap.add_argument("--smoke", action="store_true", help="tiny pool and few draws: checks the script")
    ap.add_argument("--pool-dir", help="keep the pool's results files here (default: a temporary directory)")
    ap.add_argument("--collect-only", action="store_true", help="collect the pool into --pool-dir and stop")
    ap.add_argument("--analyse-only", action="store_true", help="analyse the pool already in --pool-dir")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop collecting after this long (the order is shuffled, so the arms stay in proportion)")
    ap.add_argument("--use-iterations", default=None,
                    help="comma list: also evaluate with only the first K timed iterations of every run "
                         "(what --iterations K per process would give, from the same pool)")
    ap.add_argument("--covariates", default="auto",
                    help="comma list of compare's --covariate settings to evaluate side by side "
                         "(none: unadjusted; auto: the host-path calibration where the runs carry it)")
    ap.add_argument("--kernel-trace", type=int, default=0,
                    help="traced iterations per run (0: none); with them the GPU-busy row is evaluated too")
    ap.add_argument("--fork", action=argparse.BooleanOptionalAction, default=sys.platform.startswith("linux"),
                    help="fork each pool run from this process after the imports (default on Linux) "
                         "instead of starting a fresh interpreter")
    ap.add_argument("--trims", default=None,
                    help="comma list of trimmed shares to evaluate side by side (default: compare's own)")
    args = ap.parse_args()
    if args.smoke:
        args.pool_a, args.pool_b, args.draws, args.processes = 4, 2, 20, "1,2"
        args.prompt_len, args.new_tokens, args.iterations, args.warmup = 8, 8, 4, 1

    if args.fork and not args.analyse_only:
        import torch  # noqa: F401 - imported once, before the forks (no CUDA use here)
        import transformers  # noqa: F401

        import fastprof.cli  # noqa: F401
        import fastprof.measure.runner  # noqa: F401
    from fastprof.report.compare import compare_sweeps, regressions
    from fastprof.results.processes import merge_processes
    from fastprof.results.sweep import Sweep, load

    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    if (args.collect_only or args.analyse_only) and not args.pool_dir:
        ap.error("--collect-only and --analyse-only need --pool-dir")
    tmp = None if args.pool_dir else tempfile.TemporaryDirectory(prefix="fastprof-calibration-")
    d = Path(args.pool_dir or tmp.name)
    d.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        if (d / "delay.json").exists():  # adding to a pool: keep its delay
            delay = json.loads((d / "delay.json").read_text())["delay_ms"]
        else:
            worker(d / "probe.json", args, None)  # sizes the delay: 20% of A's median ITL
            itl_ms = load(d / "probe.json").runs[0].result.summary["itl_s"]["p50"] * 1e3
            delay = args.slowdown * itl_ms
            (d / "delay.json").write_text(json.dumps({"itl_ms": itl_ms, "delay_ms": delay, "device": args.device}))
        order = ["a"] * args.pool_a + ["b"] * args.pool_b
        rng.shuffle(order)
        for i, arm in enumerate(order):
            if args.max_seconds is not None and time.perf_counter() - t0 > args.max_seconds:
                print(f"stopping after {i} runs: --max-seconds {args.max_seconds:g} reached", flush=True)
                break
            worker(d / f"{arm}-{args.seed}-{i}.json", args, delay if arm == "b" else None)
            print(f"[{time.perf_counter() - t0:6.0f} s] run {i + 1}/{len(order)} ({arm})", flush=True)
        if args.collect_only:
            print(f"pool in {d}; total {time.perf_counter() - t0:.0f} s")
            return 0
    meta = json.loads((d / "delay.json").read_text())
    itl_ms, delay, args.device = meta["itl_ms"], meta["delay_ms"], meta.get("device", args.device)
    args.slowdown = delay / itl_ms  # the pool's own, whatever --slowdown says now
    pools: dict[str, list] = {arm: [load(p).runs[0].result for p in sorted(d.glob(f"{arm}-*.json"))]
                              for arm in ("a", "b")}
    if tmp is not None:
        tmp.cleanup()

    def sweep_of(results):
        merged = merge_processes(results) if len(results) > 1 else results[0]
        s = Sweep(environment={}, parameters={})
        s.add_ok(dict(merged.config), merged)
        return s

    def fires(a, b, cov="auto") -> tuple[bool, float | None, float | None, bool, float | None]:
        """Whether the gate fires; ITL's change and detectable change; whether GPU busy per step
        was flagged as a significant change, and its detectable change (None without a kernel trace)."""
        c = compare_sweeps(sweep_of(a), sweep_of(b), alpha=0.05, covariate=None if cov == "none" else cov)
        itl = next((r for r in c.rows if r.metric == "itl_s"), None)
        busy = next((r for r in c.rows if r.metric == "gpu_busy_s_per_step"), None)
        return (bool(regressions([c], args.threshold)), (itl.change_pct if itl else None),
                (itl.detectable_pct if itl else None), bool(busy is not None and busy.significant),
                (busy.detectable_pct if busy is not None else None))

    def median(values):
        values = sorted(v for v in values if v is not None and not math.isnan(v))
        return values[len(values) // 2] if values else None

    import fastprof.analysis.compare as _cmp

    trims = [float(t) for t in args.trims.split(",")] if args.trims else [_cmp.TRIM]
    import dataclasses

    full_pools = pools
    uses = [int(k) for k in args.use_iterations.split(",")] if args.use_iterations else [None]
    table = []
    covs = args.covariates.split(",")
    for use, trim, cov, n in ((u, t, c, int(x)) for u in uses for t in trims for c in covs
                              for x in args.processes.split(",")):
        _cmp.TRIM = trim
        pools = full_pools if use is None else {
            arm: [dataclasses.replace(r, iterations=r.iterations[:use]) for r in rs] for arm, rs in full_pools.items()}
        row = {"processes": n, "trim": trim, "iterations": use or args.iterations, "covariate": cov}
        if 2 * n <= len(pools["a"]):
            alarms, busy_alarms, busy_mde = 0, 0, []
            for _ in range(args.draws):
                pick = rng.sample(pools["a"], 2 * n)
                hit, _, _, busy_hit, mde = fires(pick[:n], pick[n:], cov)
                alarms += hit
                busy_alarms += busy_hit
                busy_mde.append(mde)
            row["false_alarm_rate"] = alarms / args.draws
            if any(m is not None for m in busy_mde):
                # GPU busy per step between two A sides: how often it is called changed, and the
                # smallest change compare estimates it would catch.
                row["gpu_busy_false_alarm_rate"] = busy_alarms / args.draws
                row["median_gpu_busy_detectable_pct"] = median(busy_mde)
        if n <= len(pools["a"]) and n <= len(pools["b"]):
            caught, changes, detectable = 0, [], []
            for _ in range(args.draws):
                hit, change, mde, _, _ = fires(rng.sample(pools["a"], n), rng.sample(pools["b"], n), cov)
                caught += hit
                changes.append(change)
                detectable.append(mde)
            row["power"] = caught / args.draws
            row["median_itl_change_pct"] = median(changes)
            # What compare itself estimates it can catch (analysis.compare.detectable_change_pct):
            # set beside the measured power, it shows whether compare's "too little data" note is right.
            row["median_itl_detectable_pct"] = median(detectable)
        table.append(row)
    report = {"device": args.device, "config": vars(args), "itl_ms": itl_ms, "delay_ms": delay,
              "pool": {k: len(v) for k, v in full_pools.items()}, "rows": table,
              "seconds": time.perf_counter() - t0}
    out = args.output or (os.path.join(os.environ["OUT"], "compare_calibration.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    print(f"\ncompare calibration on {args.device}: A ITL {itl_ms:.2f} ms, B +{delay:.2f} ms per step "
          f"({args.slowdown:.0%}); pool {len(full_pools['a'])} A + {len(full_pools['b'])} B single-process runs of "
          f"{args.iterations} iterations; {args.draws} draws per cell; gate --fail-on-regression {args.threshold:g}")
    print(f"{'iters':>5} {'trim':>5} {'covariate':>10} {'processes/side':>15} {'A/A false alarms':>17} {'A/B caught':>11} "
          f"{'ITL change':>11} {'ITL detectable':>15}")
    for row in table:
        fa = f"{row['false_alarm_rate']:.1%}" if "false_alarm_rate" in row else "-"
        pw = f"{row['power']:.1%}" if "power" in row else "-"
        ch = f"{row['median_itl_change_pct']:+.1f}%" if row.get("median_itl_change_pct") is not None else "-"
        md = row.get("median_itl_detectable_pct")
        md = f"{md:.1f}%" if md is not None else "-"
        busy = ""
        if row.get("median_gpu_busy_detectable_pct") is not None:
            busy = (f"   GPU busy: A/A flagged {row['gpu_busy_false_alarm_rate']:.1%}, "
                    f"detectable {row['median_gpu_busy_detectable_pct']:.2f}%")
        print(f"{row['iterations']:>5} {row['trim']:>5g} {row['covariate']:>10} {row['processes']:>15} {fa:>17} {pw:>11} {ch:>11} {md:>15}{busy}")
    print(f"total {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
