"""GPU sampler overhead on a real NVIDIA GPU.

1. The native sampler at 1 ms for 10 s: achieved rate, interval jitter |interval - 1 ms| p50/p99,
   and the sampling thread's CPU time as a share of one core (CLOCK_THREAD_CPUTIME_ID).
2. The cost to a fixed torch GPU workload: iteration time with no sampler, with the native
   sampler (1 ms), and with a Python process polling pynvml every 50 ms, in interleaved rounds.

Needs only torch, numpy and nvidia-ml-py.  Run:  python bench/sampler.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import random
import multiprocessing as mp
import time

import numpy as np


def pynvml_poller(index: int, period_s: float, stop, counter) -> None:
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(index)
    n = 0
    next_t = time.monotonic()
    while not stop.is_set():
        pynvml.nvmlDeviceGetUtilizationRates(h)
        pynvml.nvmlDeviceGetMemoryInfo(h)
        pynvml.nvmlDeviceGetPowerUsage(h)
        pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
        pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)
        pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        n += 1
        next_t += period_s
        time.sleep(max(0.0, next_t - time.monotonic()))
    counter.value = n
    pynvml.nvmlShutdown()


def workload(torch, a, iters: int) -> float:
    """Seconds for `iters` fixed iterations (matmul + a small host sync)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        b = a @ a
        b.clamp_(-1, 1)
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()

    import torch

    from fastprof.capture.sampler import Sampler, cuda_visible_to_nvml

    nvml_id = cuda_visible_to_nvml([0])[0]

    # 1. The sampler alone at 1 ms.
    with Sampler(interval_ms=1, devices=[0], backend="nvml", max_samples=1 << 16) as s:
        time.sleep(args.seconds)
    r = s.result
    if not r.ok:
        raise SystemExit(f"sampler failed: {r.reason}")
    gaps_ms = np.diff(r.timestamps_ns) / 1e6
    jitter = np.abs(gaps_ms - 1.0)
    wall_s = (r.stop_ns - r.start_ns) / 1e9
    print(f"device {nvml_id} ({r.devices[0]['name']}), backend {r.backend}, {r.library}")
    print(f"unavailable: {r.unavailable}")
    print()
    print("native sampler, 1 ms interval")
    print(f"  {'samples':<28}{r.n_samples}")
    print(f"  {'achieved rate (Hz)':<28}{r.n_samples / wall_s:.1f}")
    print(f"  {'missed slots':<28}{r.missed_slots}")
    print(f"  {'jitter p50 (us)':<28}{np.percentile(jitter, 50) * 1e3:.1f}")
    print(f"  {'jitter p99 (us)':<28}{np.percentile(jitter, 99) * 1e3:.1f}")
    print(f"  {'sampling thread CPU (%)':<28}{100 * r.thread_cpu_ns / 1e9 / wall_s:.2f}")
    print(f"  {'energy thread CPU (%)':<28}{100 * r.energy_thread_cpu_ns / 1e9 / wall_s:.2f}")
    print(f"  {'energy readings':<28}{r.energy_mj.size}")

    # 1b. Native cost of each field: the sampler at 1 ms reading that field alone.
    from fastprof.capture.sampler import FIELDS

    print()
    print("native CPU per read, one field at a time (sampler at 1 ms, 2 s each; energy off)")
    never = 3_600_000.0
    groups = {"gpu_util_pct": ["gpu_util_pct", "mem_util_pct"], "mem_used_bytes": ["mem_used_bytes", "mem_total_bytes"]}
    for name in ("gpu_util_pct", "mem_used_bytes", "proc_mem_bytes", "power_w", "power_avg_w", "sm_clock_mhz",
                 "mem_clock_mhz", "temperature_c", "throttle_reasons"):
        on = groups.get(name, [name])
        periods = {f: (0.0 if f in on else never) for f in FIELDS}
        with Sampler(interval_ms=1, devices=[0], backend="nvml", field_periods_ms=periods,
                     energy_interval_ms=60_000) as fs:
            time.sleep(2.0)
        fr = fs.result
        print(f"  {name:<28}{fr.thread_cpu_ns / max(1, fr.n_samples) / 1e3:>8.1f} us/sample")

    # 2. Cost to a GPU workload: arms interleaved, order shuffled in every round.
    a = torch.randn(args.size, args.size, device="cuda", dtype=torch.float16)
    workload(torch, a, 20)  # warm-up
    ctx = mp.get_context("spawn")
    index = int(nvml_id) if nvml_id.isdigit() else _nvml_index(nvml_id)
    rng = random.Random(0)

    def run_none():
        return workload(torch, a, args.iters)

    def run_native(ms):
        def run():
            with Sampler(interval_ms=ms, devices=[0], backend="nvml"):
                return workload(torch, a, args.iters)
        return run

    def run_pynvml():
        stop, counter = ctx.Event(), ctx.Value("l", 0)
        p = ctx.Process(target=pynvml_poller, args=(index, 0.05, stop, counter))
        p.start()
        time.sleep(1.0)  # let the poller import and initialise
        try:
            return workload(torch, a, args.iters)
        finally:
            stop.set()
            p.join()

    arms = {"none": run_none, "native 10 ms": run_native(10), "native 1 ms": run_native(1),
            "pynvml 50 ms (process)": run_pynvml}
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(args.rounds):
        order = list(arms)
        rng.shuffle(order)
        for k in order:
            times[k].append(arms[k]())

    base = np.asarray(times["none"])
    print()
    print(f"fixed workload: {args.iters} x ({args.size}x{args.size} fp16 matmul + sync), {args.rounds} rounds, "
          "arms shuffled within each round")
    print(f"  {'setting':<26}{'median (ms)':>12}{'min (ms)':>10}{'paired ratio p50':>18}")
    for k, v in times.items():
        ratio = np.median(np.asarray(v) / base)
        print(f"  {k:<26}{np.median(v) * 1e3:>12.1f}{min(v) * 1e3:>10.1f}{ratio:>18.4f}")


def _nvml_index(uuid: str) -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        return int(pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByUUID(uuid)))
    finally:
        pynvml.nvmlShutdown()


if __name__ == "__main__":
    main()
