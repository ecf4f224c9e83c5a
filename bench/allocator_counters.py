"""What it costs the measured thread to see the CUDA caching allocator grow at each token.

To locate allocator growth to the token gap where it happened, something must be read at every
token mark. Candidates, each timed per call (median of --calls calls, after warm-up) on a GPU
that holds a decode's worth of allocations:

  memory_stats            torch.cuda.memory_stats(): the allocator's own counters (a dict of
                          about 150 entries built per call)
  memory_reserved         torch.cuda.memory_reserved(): the reserved-bytes counter (reads
                          memory_stats underneath)
  mem_get_info            torch.cuda.mem_get_info(): the driver's free and total memory
  record_history_per_step torch.cuda.memory._record_memory_history(context=None):
                          the allocator's event trace, per decode step of a 1.2B eager decode
                          (the step's time with the trace on minus off, paired per round)

    python bench/allocator_counters.py           # GPU, under a minute
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def per_call(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    t = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        t[i] = time.perf_counter_ns() - t0
    return float(np.median(t)) / 1e3


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 0
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    keep = [torch.empty(int(n), device="cuda") for n in np.logspace(2, 7, 200)]  # a populated allocator
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "memory_stats_us": per_call(lambda: torch.cuda.memory_stats(), calls),
           "memory_reserved_us": per_call(lambda: torch.cuda.memory_reserved(), calls),
           "mem_get_info_us": per_call(lambda: torch.cuda.mem_get_info(), calls)}
    del keep
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from observer_effect import MODEL_1B

    from fastprof.capture.hf import build_default_model, random_inputs

    with torch.device("cuda"):
        model = build_default_model(dtype=torch.bfloat16, device="cuda", **MODEL_1B)
    inputs = random_inputs(int(model.config.vocab_size), 1, 64, device="cuda", seed=0)
    kw = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)

    def gen() -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter_ns()
        with torch.inference_mode():
            model.generate(**inputs, **kw)
        torch.cuda.synchronize()
        return (time.perf_counter_ns() - t0) / 64 / 1e3

    for _ in range(3):
        gen()
    diffs = []
    for _ in range(8):
        off = gen()
        # context=None: no tracebacks, only the events themselves
        torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", max_entries=1_000_000)
        on = gen()
        torch.cuda.memory._record_memory_history(enabled=None)
        diffs.append(on - off)
    out["record_history_per_step_us"] = float(np.median(diffs))
    out["record_history_diffs_us"] = diffs
    print(json.dumps(out, indent=1))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "allocator_counters.json"), "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
