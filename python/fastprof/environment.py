"""The hardware and software environment recorded with every result."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

from fastprof import _torch


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


def _nvidia_driver() -> dict[str, Any]:
    """Driver facts through the official NVML binding (nvidia-ml-py), when installed."""
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError and friends
        return {"nvml_error": str(exc)}
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {"driver_version": driver.decode() if isinstance(driver, bytes) else driver}
    except Exception as exc:
        return {"nvml_error": str(exc)}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def capture_environment() -> dict[str, Any]:
    """Everything that can change a measurement: host, CPU, GPUs, driver and library versions.

    Never imports torch itself: GPU facts come from torch only if the caller already uses it.
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
            "fastprof": _version("fastprof"),
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
            from fastprof import _core

            try:
                info = _core.device_info("cuda", 0)
                v = int(info["driver_version"])
                env["cuda_driver_api_version"] = f"{v // 1000}.{(v % 1000) // 10}"
            except Exception as exc:  # the measurement goes on without it
                env["cuda_driver_api_version"] = None
                env["cuda_driver_error"] = str(exc)
            env.update(_nvidia_driver())
    env["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return env


def environment_warnings(env: dict[str, Any]) -> list[str]:
    """Conditions that make measurements noisy or not comparable."""
    warnings = []
    governor = (env.get("cpu") or {}).get("governor")
    if governor and governor != "performance":
        warnings.append(f"CPU frequency governor is '{governor}', not 'performance': host-side timings "
                        "(launch overhead, small-model decode) will be noisier and slower")
    return warnings
