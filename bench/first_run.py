"""How long the first `fastprof run` keeps its user waiting: the default run (five worker
processes) against `--processes 1`, and where one worker's time goes.

Rounds of the commands, in an order that changes every round (:func:`round_order`), each timed end
to end as a user would (`fastprof run -o FILE`, a fresh interpreter, built-in model, every other
option at its default): ``--arms`` of :data:`ARMS`: the default run, `--processes 1` (always),
``together`` / ``serial`` (``FASTPROF_WORKER_PREPARE``), ``exit`` (the default with
``FASTPROF_WORKER_HANDOFF=exit``: each worker hands its turn on only once it has exited) and
``trace1`` (the default with one traced iteration per worker); the ratio of each to `--processes
1` per round, and its median, each run's ITL p50 (waiting workers must not change what is
measured), the first timed iteration against the rest, and each worker's turn.
Then, in one more fresh process, the phases of one worker: CUDA context, building the model,
each warm-up generate and each timed generate of the default configuration (prompt 128 + 64 new
tokens), so the fixed cost of a worker is visible next to what it measures.

    python bench/first_run.py --rounds 2          # GPU: about 5 minutes
    python bench/first_run.py --rounds 2 --together
    python bench/first_run.py --rounds 2 --arms default,exit,one --no-phases
    python bench/first_run.py --smoke             # CPU, small: checks the script

Writes every figure to $OUT/first_run.json (or --output); prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, transformers
from fastprof.capture import hf
t_import = time.perf_counter()
device = sys.argv[1]
prompt, new, warm, timed = (int(v) for v in sys.argv[2:6])
if device == "cuda":
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t_ctx = time.perf_counter()
model = hf.build_default_model(dtype=torch.bfloat16 if device == "cuda" else torch.float32, device=device, seed=0)
model.generation_config.pad_token_id = 0
inputs = hf.random_inputs(int(model.config.vocab_size), 1, prompt, device=device, seed=0)
t_model = time.perf_counter()
gens = []
for i in range(warm + timed):
    if device == "cuda": torch.cuda.synchronize()
    a = time.perf_counter()
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    if device == "cuda": torch.cuda.synchronize()
    gens.append(time.perf_counter() - a)
print(json.dumps({"import_s": t_import - t0, "cuda_context_s": t_ctx - t_import, "model_s": t_model - t_ctx,
                  "generate_s": gens}))
"""


#: The commands timed: (processes, extra environment, extra options) by name.
ARMS = {"default": (None, {}, []), "one": (1, {}, []),
        "together": (None, {"FASTPROF_WORKER_PREPARE": "together"}, []),
        "serial": (None, {"FASTPROF_WORKER_PREPARE": "serial"}, []),
        "exit": (None, {"FASTPROF_WORKER_HANDOFF": "exit"}, []),
        "trace1": (None, {}, ["--kernel-trace", "1"])}


def first_iteration_ratio(doc: dict) -> float | None:
    """The median over processes of (the first timed iteration's median ITL / the median of the
    process's other iterations'): above 1 where the warm-up left the first timed iteration slow."""
    import numpy as np

    by_process: dict[int, list[float]] = {}
    for it in doc.get("iterations") or []:
        marks = np.asarray((it.get("host") or {}).get("marks_ns") or [], dtype=np.int64)
        if marks.size > 2:
            by_process.setdefault(int(it.get("process") or 0), []).append(float(np.median(np.diff(marks))))
    ratios = [v[0] / float(np.median(v[1:])) for v in by_process.values() if len(v) > 2]
    return float(np.median(ratios)) if ratios else None


def timed_run(args: argparse.Namespace, arm: str, out: Path) -> dict:
    processes, env, options = ARMS[arm]
    cmd = [sys.executable, "-m", "fastprof", "run", "-o", str(out), "--device", args.device]
    if processes is not None:
        cmd += ["--processes", str(processes)]
    cmd += args.extra + options
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, **env))
    wall = time.perf_counter() - t0
    workers = [float(x) for x in re.findall(r"done in ([0-9.]+) s", proc.stderr)]
    server = re.search(r"imported once, in ([0-9.]+) s", proc.stderr)
    itl = ready = turns = first = None
    if proc.returncode == 0 and out.exists():
        doc = json.loads(out.read_text())
        itl = doc["summary"]["itl_s"]["p50"]
        rows = (doc.get("processes") or {}).get("per_process") or []
        ready = [r.get("ready_s") for r in rows]
        turns = [r.get("turn_s") for r in rows]
        first = first_iteration_ratio(doc)
    return {"arm": arm, "processes": processes or "default", "wall_s": wall, "rc": proc.returncode,
            "workers_s": workers, "server_ready_s": float(server.group(1)) if server else None,
            "itl_p50_s": itl, "ready_s": ready, "turn_s": turns, "first_iteration_ratio": first,
            "stderr_tail": proc.stderr.strip().splitlines()[-3:] if proc.returncode else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default=None, help="default: cuda where torch sees a GPU, else cpu")
    ap.add_argument("--together", action="store_true",
                    help="also time the default run with FASTPROF_WORKER_PREPARE=together")
    ap.add_argument("--arms", default=None,
                    help=f"comma-separated commands to time, of {', '.join(ARMS)} (default: default,one, "
                         "and together with --together)")
    ap.add_argument("--no-phases", action="store_true", help="skip the phases of one worker")
    ap.add_argument("--smoke", action="store_true", help="tiny run on the CPU: checks the script")
    ap.add_argument("--output")
    args = ap.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    args.extra = (["--prompt-len", "8", "--max-new-tokens", "8", "--iterations", "3", "--warmup", "1",
                   ] if args.smoke else [])
    from fastprof.measure.driver import round_order

    arms = (args.arms.split(",") if args.arms else ["default", "one"] + (["together"] if args.together else []))
    if "one" not in arms or any(a not in ARMS for a in arms):
        ap.error(f"--arms: 'one' and any of {', '.join(ARMS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastprof-first-run-") as tmp:
        for r in range(args.rounds):
            pair = {}
            for arm in round_order(arms, r):
                row = timed_run(args, arm, Path(tmp) / f"r{r}-{arm}.json")
                pair[arm] = row
                print(f"round {r + 1}: {arm}: {row['wall_s']:.1f} s (exit {row['rc']})"
                      + (f", ITL p50 {row['itl_p50_s'] * 1e3:.2f} ms" if row["itl_p50_s"] else "")
                      + (f", first timed / rest {row['first_iteration_ratio']:.3f}"
                         if row["first_iteration_ratio"] else "")
                      + ("\n   workers " + ", ".join(f"{w:.1f}" for w in row["workers_s"]) + " s"
                         if row["workers_s"] else "")
                      + ("; turns " + ", ".join(f"{t:.1f}" for t in row["turn_s"] if t is not None) + " s"
                         if any(t is not None for t in row["turn_s"] or []) else ""), flush=True)
            pair["ratios"] = {a: pair[a]["wall_s"] / pair["one"]["wall_s"] for a in arms if a != "one"}
            rows.append(pair)
    prompt, new, warm, timed = ("8", "8", "1", "3") if args.smoke else ("128", "64", "5", "10")
    if args.no_phases:
        phases = {"error": "not measured (--no-phases)"}
    else:
        proc = subprocess.run([sys.executable, "-c", PHASES, args.device, prompt, new, warm, timed],
                              capture_output=True, text=True)
        phases = (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0
                  else {"error": proc.stderr[-500:]})
    medians = {}
    for a in arms:
        if a != "one":
            r = sorted(p["ratios"][a] for p in rows)
            medians[a] = r[len(r) // 2]
    report = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
              "rounds": rows, "median_ratios": medians, "worker_phases": phases}
    out = args.output or (os.path.join(os.environ["OUT"], "first_run.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    print(f"\nfirst run on {report['device']}: against --processes 1, per round:")
    for p in rows:
        print(f"  --processes 1 {p['one']['wall_s']:.1f} s; " + "; ".join(
            f"{a} {p[a]['wall_s']:.1f} s = {r:.2f}" for a, r in p["ratios"].items()))
    print("median ratio (target at most 2): " + "; ".join(f"{a} {r:.2f}" for a, r in medians.items()))
    if "generate_s" in phases:
        g = phases["generate_s"]
        w = int(warm)
        print(f"one worker's phases: import {phases['import_s']:.1f} s, CUDA context {phases['cuda_context_s']:.2f} s, "
              f"model {phases['model_s']:.2f} s,\n  warm-up generates " + ", ".join(f"{x:.2f}" for x in g[:w])
              + f" s, timed generates median {sorted(g[w:])[len(g[w:]) // 2]:.2f} s")
    elif not args.no_phases:
        print(f"worker phases failed: {phases.get('error')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
