"""Cost of each NVML query the sampler makes, through pynvml (nvidia-ml-py), on GPU 0.

    python bench/nvml_calls.py [--n 2000]

Times include about 1 us of Python binding overhead per call; they tell which queries are
cheap enough for the fast sampling loop and which belong on the slow cadence.
"""

import argparse
import os
import statistics
import time

import pynvml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    calls = {
        "GetUtilizationRates": lambda: pynvml.nvmlDeviceGetUtilizationRates(h),
        "GetMemoryInfo": lambda: pynvml.nvmlDeviceGetMemoryInfo(h),
        "GetComputeRunningProcesses": lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(h),
        "GetPowerUsage": lambda: pynvml.nvmlDeviceGetPowerUsage(h),
        "GetFieldValues(POWER_INSTANT)": lambda: pynvml.nvmlDeviceGetFieldValues(h, [pynvml.NVML_FI_DEV_POWER_INSTANT]),
        "GetClockInfo(SM)": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
        "GetClockInfo(MEM)": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
        "GetTemperature": lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        "GetCurrentClocksEventReasons": lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(h),
        "GetTotalEnergyConsumption": lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
    }
    print(f"{pynvml.nvmlDeviceGetName(h)}, driver {pynvml.nvmlSystemGetDriverVersion()}, pid {os.getpid()}")
    print(f"{'query':<34}{'wall us p50':>12}{'cpu us p50':>12}")
    for name, fn in calls.items():
        n = args.n if "Energy" not in name else max(20, args.n // 50)
        wall, cpu = [], []
        for _ in range(n):
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            fn()
            cpu.append((time.thread_time_ns() - c0) / 1e3)
            wall.append((time.perf_counter_ns() - w0) / 1e3)
        print(f"{name:<34}{statistics.median(wall):>12.1f}{statistics.median(cpu):>12.1f}")
    pynvml.nvmlShutdown()


if __name__ == "__main__":
    main()
