"""Cost of one mark() from Python, against the usual alternatives, in one run.

    python bench/mark_overhead.py [--n 200000]

Arms (median of several repeats of N calls each, ns per call):
  fastprof mark_host()               host timestamp only
  fastprof mark() [device]           host timestamp + GPU event on the current stream
  perf_counter() + list.append       the usual Python streamer
  torch.cuda.Event(...).record()     a timing event per token through torch
Each loop body is one call; the loop's own cost (an empty call) is printed too, not subtracted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import fastprof


def per_call_ns(fn, n: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="calls per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    n, repeats = args.n, args.repeats
    rows = []

    def noop():
        pass

    rows.append(("empty Python call (loop floor)", per_call_ns(noop, n, repeats)))

    rec = fastprof.TokenRecorder(capacity=n, device=None)

    def host_arm():
        rec.begin()
        try:
            return per_call_ns(rec.mark_host, n, 1)
        finally:
            rec.end()

    rows.append(("fastprof mark_host()", statistics.median(host_arm() for _ in range(repeats))))

    stamps: list[float] = []
    pc = time.perf_counter

    def py_arm():
        stamps.append(pc())

    def py_run():
        stamps.clear()
        return per_call_ns(py_arm, n, 1)

    rows.append(("perf_counter() + list.append", statistics.median(py_run() for _ in range(repeats))))

    device = "none"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
        torch.cuda.init()
        # Realistic sizing: a recorder holds one iteration's tokens (here 1024) and is reused.
        m = 1024
        rounds = max(1, n // m)
        grec = fastprof.TokenRecorder(capacity=m, device="cuda")

        def dev_run():
            samples = []
            for _ in range(rounds):
                grec.begin()
                samples.append(per_call_ns(grec.mark, m, 1))
                grec.end()
            return statistics.median(samples)

        dev_run()
        rows.append(("fastprof mark() host + GPU event", statistics.median(dev_run() for _ in range(repeats))))

        events = [torch.cuda.Event(enable_timing=True) for _ in range(m)]
        it = iter(())

        def torch_arm():
            next(it).record()

        def torch_run():
            nonlocal it
            samples = []
            for _ in range(rounds):
                it = iter(events)
                samples.append(per_call_ns(torch_arm, m, 1))
                torch.cuda.synchronize()
            return statistics.median(samples)

        torch_run()
        rows.append(("torch.cuda.Event(...).record() (pre-made)", statistics.median(torch_run() for _ in range(repeats))))

        def torch_new():
            torch.cuda.Event(enable_timing=True).record()

        def torch_new_run():
            samples = []
            for _ in range(rounds):
                samples.append(per_call_ns(torch_new, m, 1))
                torch.cuda.synchronize()
            return statistics.median(samples)

        rows.append(("torch.cuda.Event(enable_timing=True).record()", statistics.median(torch_new_run() for _ in range(repeats))))

    print(f"device: {device}; python {platform.python_version()}; fastprof {fastprof.__version__}; "
          f"torch {getattr(torch, '__version__', None)}; cpu: {platform.processor() or platform.machine()}")
    print(f"{'arm':<50} {'ns/call':>10}")
    for name, v in rows:
        print(f"{name:<50} {v:>10.1f}")


if __name__ == "__main__":
    main()
