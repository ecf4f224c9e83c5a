"""Is a slow host spell tied to the CPU the process runs on? A map of each allowed CPU's speed
over time, and the same decode pinned to the fastest and the slowest CPU, interleaved.

1. For ``--sweeps`` rounds, pin this thread to each allowed CPU in turn and time a fixed Python
   loop there (fastprof.capture.hostpath's calibration loop, median of 5): a CPU x time map.
   If the slow CPUs stay slow from round to round, placement can avoid them; if the slowness
   moves, it cannot, and comparisons must model it instead (the host-path covariate).
2. The 1.2B eager decode of bench/kernel_trace.py (64+64 tokens), pinned in turn to the CPU
   that was fastest and the one that was slowest in the last round, ``--rounds`` pairs in
   shuffled order: ITL and the Python loop on each.

    python bench/cpu_placement.py                 # GPU: about 2 minutes
    python bench/cpu_placement.py --smoke         # CPU, tiny model: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def loop_s(repeats: int = 5) -> float:
    from fastprof.capture.hostpath import _python_loop

    return float(np.median([_python_loop() for _ in range(repeats)])) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweeps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    grid = []
    t0 = time.perf_counter()
    for _ in range(args.sweeps):
        row = {}
        for c in cpus:
            os.sched_setaffinity(0, {c})
            row[c] = loop_s()
        grid.append(row)
    os.sched_setaffinity(0, set(cpus))
    arr = np.array([[r[c] for c in cpus] for r in grid]) * 1e3
    print(f"Python loop (ms) per CPU, {args.sweeps} sweeps over {len(cpus)} CPUs in {time.perf_counter() - t0:.1f} s")
    print("cpu   " + " ".join(f"{c:6d}" for c in cpus))
    for i, r in enumerate(arr):
        print(f"s{i:<4} " + " ".join(f"{v:6.2f}" for v in r))
    # does a CPU's rank persist? correlation of the per-CPU times between consecutive sweeps
    if len(arr) > 1 and arr.shape[1] > 2:
        cors = [float(np.corrcoef(arr[i], arr[i + 1])[0, 1]) for i in range(len(arr) - 1)]
        print("sweep-to-sweep correlation of per-CPU times:", ", ".join(f"{c:+.2f}" for c in cors))
    fast, slow = cpus[int(np.argmin(arr[-1]))], cpus[int(np.argmax(arr[-1]))]
    out = {"cpus": cpus, "python_loop_ms": arr.tolist(), "fast_cpu": fast, "slow_cpu": slow}

    import torch

    from fastprof.capture.hf import build_default_model, random_inputs
    from observer_effect import MODEL_1B, MODEL_SMOKE

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    with torch.device(device):
        model = build_default_model(dtype=torch.bfloat16 if cuda else torch.float32, device=device,
                                    **(MODEL_SMOKE if args.smoke else MODEL_1B))
    n = 8 if args.smoke else 64
    inputs = random_inputs(int(model.config.vocab_size), 1, n, device=device, seed=0)
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    def itl(cpu: int) -> tuple[float, float]:
        os.sched_setaffinity(0, {cpu})
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter_ns()
        with torch.inference_mode():
            model.generate(**inputs, **kw)
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter_ns() - t) / n / 1e6, loop_s() * 1e3

    for c in (fast, slow, fast, slow):
        itl(c)
    rng = random.Random(0)
    runs = {fast: [], slow: []}
    for _ in range(args.rounds):
        order = [fast, slow]
        rng.shuffle(order)
        for c in order:
            runs[c].append(itl(c))
    os.sched_setaffinity(0, set(cpus))
    for label, c in (("fastest", fast), ("slowest", slow)):
        ms = [x[0] for x in runs[c]]
        py = [x[1] for x in runs[c]]
        print(f"pinned to the {label} CPU {c}: ms/token {', '.join(f'{v:.1f}' for v in ms)}; "
              f"Python loop {', '.join(f'{v:.2f}' for v in py)} ms")
    out["decode"] = {str(c): runs[c] for c in runs}
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "cpu_placement.json"), "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
