"""The machine a measurement runs on, and what would spoil it: one place for both.

:func:`capture_environment` is recorded with every result; :func:`collect` is everything
``fastprof env`` shows; :func:`check` and :func:`environment_warnings` turn either into warnings
(another process on a GPU, a power cap below the default, a CPU governor other than
performance). GPU facts come from the official NVML binding (``import pynvml``, package
nvidia-ml-py); each query is guarded, so a field the GPU does not support is ``None``. The CPU
facts come from /proc/cpuinfo and the cpufreq sysfs tree.
"""

from __future__ import annotations

import glob
import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

import fastprof._torch as _torch
from fastprof._version import __version__


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") or line.startswith("Model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_governor() -> str | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            return f.read().strip()
    except OSError:
        return None


def _gpus(torch: Any) -> list[dict[str, Any]]:
    gpus: list[dict[str, Any]] = []
    if not _torch.cuda_ready(torch):
        return gpus
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpu = {
            "index": i,
            "name": p.name,
            "total_memory_bytes": int(p.total_memory),
            "multiprocessors": int(p.multi_processor_count),
            "capability": f"{p.major}.{p.minor}",
        }
        uuid = getattr(p, "uuid", None)
        if uuid is not None:
            gpu["uuid"] = str(uuid)
        gpus.append(gpu)
    return gpus


def _call(fn: Any, *args: Any) -> Any:
    try:
        value = fn(*args)
    except Exception:  # NVMLError_NotSupported, NoPermission, missing symbol ...
        return None
    return value.decode() if isinstance(value, bytes) else value


def _missing(*_: Any) -> None:
    raise NotImplementedError  # an nvidia-ml-py without this entry point


def _capability(value: Any) -> str | None:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    return None


def nvml_gpus() -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """(one dict per GPU, system facts, reason when NVML cannot be used)."""
    try:
        import pynvml
    except ImportError:
        return [], {}, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return [], {}, f"NVML unavailable: {exc}"
    try:
        system: dict[str, Any] = {"driver_version": _call(pynvml.nvmlSystemGetDriverVersion)}
        cuda = _call(pynvml.nvmlSystemGetCudaDriverVersion)
        system["cuda_driver_version"] = f"{cuda // 1000}.{(cuda % 1000) // 10}" if isinstance(cuda, int) else None
        gpus = []
        count = _call(pynvml.nvmlDeviceGetCount) or 0
        me = os.getpid()
        for i in range(count):
            h = _call(pynvml.nvmlDeviceGetHandleByIndex, i)
            if h is None:
                continue
            mw = lambda v: v / 1000.0 if isinstance(v, (int, float)) else None  # noqa: E731
            procs = []
            for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                for p in _call(getattr(pynvml, fn, lambda h: []), h) or []:
                    pid = getattr(p, "pid", None)
                    if pid is not None and pid not in [q["pid"] for q in procs]:
                        procs.append({"pid": int(pid), "used_memory_bytes": getattr(p, "usedGpuMemory", None)})
            ecc = _call(pynvml.nvmlDeviceGetEccMode, h)
            persistence = _call(pynvml.nvmlDeviceGetPersistenceMode, h)
            mem = _call(pynvml.nvmlDeviceGetMemoryInfo, h)
            clock_sm, clock_mem = getattr(pynvml, "NVML_CLOCK_SM", 1), getattr(pynvml, "NVML_CLOCK_MEM", 2)
            gpus.append({
                "index": i,
                "name": _call(pynvml.nvmlDeviceGetName, h),
                "uuid": _call(pynvml.nvmlDeviceGetUUID, h),
                "pci_bus_id": getattr(_call(pynvml.nvmlDeviceGetPciInfo, h), "busId", None),
                "memory_total_bytes": getattr(mem, "total", None),
                "memory_used_bytes": getattr(mem, "used", None),
                "power_limit_w": mw(_call(pynvml.nvmlDeviceGetPowerManagementLimit, h)),
                "power_default_limit_w": mw(_call(pynvml.nvmlDeviceGetPowerManagementDefaultLimit, h)),
                "power_enforced_limit_w": mw(_call(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)),
                "persistence_mode": None if persistence is None else bool(persistence),
                "ecc_enabled": None if not isinstance(ecc, (list, tuple)) else bool(ecc[0]),
                "sm_clock_mhz": _call(pynvml.nvmlDeviceGetClockInfo, h, clock_sm),
                "mem_clock_mhz": _call(pynvml.nvmlDeviceGetClockInfo, h, clock_mem),
                "sm_clock_max_mhz": _call(pynvml.nvmlDeviceGetMaxClockInfo, h, clock_sm),
                "mem_clock_max_mhz": _call(pynvml.nvmlDeviceGetMaxClockInfo, h, clock_mem),
                # Peak memory bandwidth = bus width / 8 x max memory clock x 2 (see fastprof.analysis.roofline).
                "memory_bus_width_bits": _call(getattr(pynvml, "nvmlDeviceGetMemoryBusWidth", _missing), h),
                "capability": _capability(_call(getattr(pynvml, "nvmlDeviceGetCudaComputeCapability", _missing), h)),
                "temperature_c": _call(pynvml.nvmlDeviceGetTemperature, h, getattr(pynvml, "NVML_TEMPERATURE_GPU", 0)),
                "processes": procs,
                "other_processes": [p for p in procs if p["pid"] != me],
            })
        return gpus, system, None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def capture_environment(nvml: bool | None = None) -> dict[str, Any]:
    """Everything that can change a measurement: host, CPU, GPUs, driver and library versions.

    Never imports torch itself: GPU facts come from torch only if the caller already uses it.
    ``nvml``: also read each NVIDIA GPU's facts through nvidia-ml-py (driver, power limit and
    default, persistence mode, ECC, current and max clocks, processes) under ``nvidia``; None
    (default) does so when torch sees a CUDA GPU. The memory bus width, max clocks, SM count and
    compute capability recorded here give the GPU's peaks (:func:`fastprof.analysis.roofline.gpu_facts`).
    """
    torch = _torch.loaded()
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cpu": {
            "model": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "governor": _cpu_governor(),
        },
        "versions": {
            "fastprof": __version__,
            "numpy": _version("numpy"),
            "scipy": _version("scipy"),
            "torch": getattr(torch, "__version__", None) if torch else _version("torch"),
            "transformers": _version("transformers"),
        },
        "gpus": [],
    }
    if torch is not None:
        env["versions"]["torch_cuda"] = getattr(torch.version, "cuda", None)
        env["versions"]["torch_hip"] = getattr(torch.version, "hip", None)
        env["gpus"] = _gpus(torch)
        if env["gpus"] and _torch.backend_kind(torch) == "cuda":
            from fastprof._native import _core

            try:
                info = _core.device_info("cuda", 0)
                v = int(info["driver_version"])
                env["cuda_driver_api_version"] = f"{v // 1000}.{(v % 1000) // 10}"
            except Exception as exc:  # the measurement goes on without it
                env["cuda_driver_api_version"] = None
                env["cuda_driver_error"] = str(exc)
    if nvml is None:
        nvml = bool(env["gpus"]) and torch is not None and _torch.backend_kind(torch) == "cuda"
    if nvml:
        gpus, system, reason = nvml_gpus()
        env["nvidia"] = {**system, "reason": reason, "gpus": gpus}
        env["driver_version"] = system.get("driver_version")
    env["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return env


def environment_warnings(env: dict[str, Any]) -> list[str]:
    """Conditions that make measurements noisy or not comparable: another process on a GPU, a
    power cap below the default, a CPU governor other than performance (the checks of
    ``fastprof env``, applied to the environment captured with a result)."""
    def part(d: Any, key: str) -> Any:  # a recorded environment may be of any shape: read what fits
        return d.get(key) if isinstance(d, dict) else None

    governor = part(part(env, "cpu"), "governor")
    gpus = part(part(env, "nvidia"), "gpus")
    return check({
        "gpus": [g for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else [],
        "cpu": {"governors": {governor: 1} if isinstance(governor, str) and governor else {}},
    })


CPU_SYSFS = "/sys/devices/system/cpu"


def cpu_info(root: str = CPU_SYSFS) -> dict[str, Any]:
    """Governors of every CPU (``{governor: count}``) and their current and maximum frequency."""
    governors: dict[str, int] = {}
    cur, top = [], []
    for d in sorted(glob.glob(os.path.join(root, "cpu[0-9]*", "cpufreq"))):
        for name, store in (("scaling_governor", None), ("scaling_cur_freq", cur), ("cpuinfo_max_freq", top)):
            try:
                with open(os.path.join(d, name)) as f:
                    text = f.read().strip()
            except OSError:
                continue
            if store is None:
                governors[text] = governors.get(text, 0) + 1
            elif text.isdigit():
                store.append(int(text) / 1000.0)
    return {
        "governors": governors,
        "cur_freq_mhz_mean": sum(cur) / len(cur) if cur else None,
        "max_freq_mhz": max(top) if top else None,
    }


def check(info: dict[str, Any]) -> list[str]:
    """Conditions that spoil measurements: other processes on a GPU, a power cap below the
    default, a CPU governor other than performance."""
    out = []
    for g in info.get("gpus") or []:
        name = f"GPU {g.get('index')} ({g.get('name')})"
        others = g.get("other_processes") or []
        if isinstance(others, list) and others:
            pids = ", ".join(str(p.get("pid") if isinstance(p, dict) else p) for p in others[:8])
            out.append(f"{name} runs {len(others)} other process(es) (pid {pids}): they share the GPU with "
                       "the measurement")
        limit, default = g.get("power_limit_w"), g.get("power_default_limit_w")
        if isinstance(limit, (int, float)) and isinstance(default, (int, float)) and limit < default - 0.5:
            out.append(f"{name} power limit {limit:g} W is below its default {default:g} W: the GPU is capped "
                       "and results are not comparable with uncapped runs")
    governors = (info.get("cpu") or {}).get("governors") or {}
    bad = {g: n for g, n in governors.items() if g != "performance"}
    if bad:
        what = ", ".join(f"'{g}' on {n} CPU(s)" for g, n in bad.items())
        out.append(f"CPU frequency governor {what}, not 'performance': host-side timings (launch overhead, "
                   "small-model decode) will be noisier and slower")
    return out


def collect(cpu_root: str = CPU_SYSFS) -> dict[str, Any]:
    """Everything ``fastprof env`` shows, as one JSON-ready dict."""
    env = capture_environment(nvml=True)
    cpu = dict(env.get("cpu") or {})
    cpu.update(cpu_info(cpu_root))
    nvidia = dict(env.get("nvidia") or {})
    gpus, reason = nvidia.pop("gpus", []), nvidia.pop("reason", None)
    system = nvidia
    info: dict[str, Any] = {
        "hostname": env.get("hostname"),
        "platform": env.get("platform"),
        "python": env.get("python"),
        "versions": env.get("versions"),
        "cpu": cpu,
        "nvidia": {**system, "reason": reason},
        "gpus": gpus,
        "cuda_visible_devices": env.get("cuda_visible_devices"),
    }
    info["warnings"] = check(info)
    return info
