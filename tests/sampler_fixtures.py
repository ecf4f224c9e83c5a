"""Fixtures for the sampler tests: the fake NVML, AMD SMI and xpu-smi."""

import ctypes
import os
from pathlib import Path

import pytest

from conftest import FAKES, _build


@pytest.fixture(scope="session")
def fake_nvml_path(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "fake_nvml.c", "libfakenvml.so")


@pytest.fixture(scope="session")
def fake_nvml_no_gpm_path(tmp_path_factory) -> Path:
    """The fake NVML of a driver without the GPM entry points."""
    return _build(tmp_path_factory, "fake_nvml.c", "libfakenvml_nogpm.so", defines=("FAKE_NVML_NO_GPM",))


@pytest.fixture(scope="session")
def fake_amdsmi_path(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "fake_amdsmi.c", "libfakeamdsmi.so")


class FakeNvml:
    """ctypes handle on the fake NVML that fastprof has loaded (dlopen returns the same copy)."""

    def __init__(self, path: Path):
        self.path = path
        lib = self.lib = ctypes.CDLL(str(path))
        lib.fake_nvml_calls.restype = ctypes.c_long
        lib.fake_nvml_calls.argtypes = [ctypes.c_char_p]
        lib.fake_nvml_unsupported.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.fake_nvml_delay_us.argtypes = [ctypes.c_char_p, ctypes.c_long]
        lib.fake_nvml_lose_after.argtypes = [ctypes.c_int, ctypes.c_long]
        lib.fake_nvml_set.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_double]
        lib.fake_nvml_init_calls.restype = ctypes.c_long
        lib.fake_nvml_shutdown_calls.restype = ctypes.c_long
        lib.fake_nvml_gpm_set.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_double]
        lib.fake_nvml_util_reads.restype = ctypes.c_long
        lib.fake_nvml_util_reads.argtypes = [ctypes.c_int]
        for name in ("fake_nvml_gpm_live_samples", "fake_nvml_gpm_bad_pairs", "fake_nvml_gpm_metrics_calls",
                     "fake_nvml_gpm_last_num_metrics"):
            getattr(lib, name).restype = ctypes.c_long

    def reset(self):
        self.lib.fake_nvml_reset()

    def calls(self, name: str) -> int:
        return int(self.lib.fake_nvml_calls(name.encode()))

    def unsupported(self, name: str, device: int = -1):
        self.lib.fake_nvml_unsupported(name.encode(), device)

    def delay_us(self, name: str, us: int):
        self.lib.fake_nvml_delay_us(name.encode(), us)

    def lose_after(self, device: int, reads: int):
        self.lib.fake_nvml_lose_after(device, reads)

    def set(self, device: int, what: str, value: float):
        assert self.lib.fake_nvml_set(device, what.encode(), float(value)) == 0, what

    def util_sequence(self, on: bool = True):
        """Make every utilisation read return the device's read count (1, 2, ...)."""
        self.lib.fake_nvml_util_sequence(int(on))

    def util_reads(self, device: int = 0) -> int:
        return int(self.lib.fake_nvml_util_reads(device))

    def set_device_count(self, n: int):
        self.lib.fake_nvml_set_device_count(n)

    def fail_init(self, code: int):
        self.lib.fake_nvml_fail_init(code)

    def init_calls(self) -> int:
        return int(self.lib.fake_nvml_init_calls())

    def shutdown_calls(self) -> int:
        return int(self.lib.fake_nvml_shutdown_calls())

    # GPM: metric ids are nvml.h's NVML_GPM_METRIC_* values (DRAM_BW_UTIL = 10, SM_UTIL = 2, ...).
    def gpm_set(self, device: int, metric: int, value: float):
        self.lib.fake_nvml_gpm_set(device, metric, float(value))

    def gpm_unsupported(self, device: int, metric: int):
        self.lib.fake_nvml_gpm_unsupported(device, metric)

    def gpm_elapsed(self, device: int, metric: int):
        """The metric reports the length of the window between its two samples, in ms."""
        self.lib.fake_nvml_gpm_elapsed(device, metric)

    def gpm_live_samples(self) -> int:
        return int(self.lib.fake_nvml_gpm_live_samples())

    def gpm_bad_pairs(self) -> int:
        return int(self.lib.fake_nvml_gpm_bad_pairs())

    def gpm_metrics_calls(self) -> int:
        return int(self.lib.fake_nvml_gpm_metrics_calls())

    def gpm_last_num_metrics(self) -> int:
        return int(self.lib.fake_nvml_gpm_last_num_metrics())


@pytest.fixture
def fake_nvml(fake_nvml_path, monkeypatch) -> FakeNvml:
    """The fake NVML selected through FASTPROF_NVML_LIBRARY, reset for each test."""
    monkeypatch.setenv("FASTPROF_NVML_LIBRARY", str(fake_nvml_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml(fake_nvml_path)
    fake.reset()
    yield fake
    fake.reset()


class FakeAmdSmi:
    def __init__(self, path: Path):
        self.path = path
        lib = self.lib = ctypes.CDLL(str(path))
        lib.fake_amdsmi_calls.restype = ctypes.c_long
        lib.fake_amdsmi_calls.argtypes = [ctypes.c_char_p]
        lib.fake_amdsmi_unsupported.argtypes = [ctypes.c_char_p]
        lib.fake_amdsmi_init_calls.restype = ctypes.c_long
        lib.fake_amdsmi_shutdown_calls.restype = ctypes.c_long

    def reset(self):
        self.lib.fake_amdsmi_reset()

    def calls(self, name: str) -> int:
        return int(self.lib.fake_amdsmi_calls(name.encode()))

    def unsupported(self, name: str):
        self.lib.fake_amdsmi_unsupported(name.encode())


@pytest.fixture
def fake_amdsmi(fake_amdsmi_path, monkeypatch) -> FakeAmdSmi:
    monkeypatch.setenv("FASTPROF_AMDSMI_LIBRARY", str(fake_amdsmi_path))
    fake = FakeAmdSmi(fake_amdsmi_path)
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture
def fake_xpu_smi(monkeypatch, tmp_path) -> Path:
    """The fake xpu-smi through FASTPROF_XPU_SMI; it writes its pid and arguments to the returned file."""
    exe = FAKES / "xpu-smi"
    if not os.access(exe, os.X_OK):
        pytest.skip("tests/fakes/xpu-smi is not executable")
    args = tmp_path / "xpu-smi-args.txt"
    monkeypatch.setenv("FASTPROF_XPU_SMI", str(exe))
    monkeypatch.setenv("FAKE_XPU_SMI_ARGS", str(args))
    monkeypatch.setenv("FAKE_XPU_SMI_PERIOD", "0.02")
    return args
