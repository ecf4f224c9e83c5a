"""fastprof env: GPU facts through a stand-in pynvml, CPU governors from a sysfs tree, warnings."""

import json
import os
import sys
import types

import pytest

from fastprof import cli
from fastprof.capture import environment as envinfo


class NVMLError(Exception):
    pass


def fake_pynvml(gpus, driver="550.54.15", cuda=12040):
    """A module with pynvml's API over ``gpus`` (dicts); a missing key raises like NotSupported."""
    m = types.ModuleType("pynvml")
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.calls = {"init": 0, "shutdown": 0}

    def get(h, key):
        if key not in gpus[h]:
            raise NVMLError("Not Supported")
        return gpus[h][key]

    m.nvmlInit = lambda: m.calls.__setitem__("init", m.calls["init"] + 1)
    m.nvmlShutdown = lambda: m.calls.__setitem__("shutdown", m.calls["shutdown"] + 1)
    m.nvmlSystemGetDriverVersion = lambda: driver
    m.nvmlSystemGetCudaDriverVersion = lambda: cuda
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: get(h, "name").encode()  # old bindings return bytes
    m.nvmlDeviceGetUUID = lambda h: get(h, "uuid")
    m.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=get(h, "bus"))
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 << 30, used=1 << 30)
    m.nvmlDeviceGetPowerManagementLimit = lambda h: get(h, "limit_mw")
    m.nvmlDeviceGetPowerManagementDefaultLimit = lambda h: get(h, "default_mw")
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: get(h, "limit_mw")
    m.nvmlDeviceGetPersistenceMode = lambda h: get(h, "persistence")
    m.nvmlDeviceGetEccMode = lambda h: get(h, "ecc")
    m.nvmlDeviceGetClockInfo = lambda h, c: get(h, "clocks")[c]
    m.nvmlDeviceGetMaxClockInfo = lambda h, c: get(h, "max_clocks")[c]
    m.nvmlDeviceGetTemperature = lambda h, s: get(h, "temp")
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=p, usedGpuMemory=1 << 20)
                                                        for p in get(h, "pids")]
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return m


H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1234", "bus": "00000000:18:00.0", "limit_mw": 700000,
        "default_mw": 700000, "persistence": 1, "ecc": (1, 1), "clocks": {1: 1980, 2: 2619},
        "max_clocks": {1: 1980, 2: 2619}, "temp": 41, "pids": []}


@pytest.fixture
def sysfs(tmp_path):
    def make(governors):
        for i, g in enumerate(governors):
            d = tmp_path / f"cpu{i}" / "cpufreq"
            d.mkdir(parents=True)
            (d / "scaling_governor").write_text(g + "\n")
            (d / "scaling_cur_freq").write_text("2400000\n")
            (d / "cpuinfo_max_freq").write_text("3500000\n")
        return str(tmp_path)

    return make


def test_gpu_facts_and_no_warnings(monkeypatch, sysfs):
    fake = fake_pynvml([dict(H100)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    info = envinfo.collect(cpu_root=sysfs(["performance", "performance"]))
    assert fake.calls == {"init": 1, "shutdown": 1}
    g = info["gpus"][0]
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["uuid"] == "GPU-1234" and g["pci_bus_id"] == "00000000:18:00.0"
    assert g["power_limit_w"] == 700 and g["power_default_limit_w"] == 700
    assert g["persistence_mode"] is True and g["ecc_enabled"] is True
    assert (g["sm_clock_mhz"], g["sm_clock_max_mhz"], g["mem_clock_mhz"]) == (1980, 1980, 2619)
    assert info["nvidia"]["driver_version"] == "550.54.15" and info["nvidia"]["cuda_driver_version"] == "12.4"
    assert info["cpu"]["governors"] == {"performance": 2}
    assert info["cpu"]["cur_freq_mhz_mean"] == 2400 and info["cpu"]["max_freq_mhz"] == 3500
    assert info["versions"]["fastprof"] and info["python"]
    assert info["warnings"] == []


def test_warnings_that_spoil_measurements(monkeypatch, sysfs):
    capped = dict(H100, limit_mw=400000, pids=[os.getpid(), 4242])
    unsupported = {k: v for k, v in H100.items() if k not in ("limit_mw", "persistence", "ecc", "temp")}
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([capped, unsupported]))
    info = envinfo.collect(cpu_root=sysfs(["powersave", "performance", "powersave"]))
    w = " | ".join(info["warnings"])
    assert "GPU 0 (NVIDIA H100 80GB HBM3) runs 1 other process(es) (pid 4242)" in w  # this process is not "other"
    assert "power limit 400 W is below its default 700 W" in w
    assert "'powersave' on 2 CPU(s)" in w
    assert len(info["warnings"]) == 3
    assert info["gpus"][1]["power_limit_w"] is None and info["gpus"][1]["persistence_mode"] is None


def test_without_pynvml(monkeypatch, sysfs):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    info = envinfo.collect(cpu_root=sysfs(["performance"]))
    assert info["gpus"] == [] and "nvidia-ml-py is not installed" in info["nvidia"]["reason"]


def test_nvml_init_failure(monkeypatch, sysfs):
    fake = fake_pynvml([])

    def fail():
        raise NVMLError("Driver Not Loaded")

    fake.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    info = envinfo.collect(cpu_root=sysfs(["performance"]))
    assert info["gpus"] == [] and "Driver Not Loaded" in info["nvidia"]["reason"]


def test_cli_env_json_and_table(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([dict(H100, pids=[999999])]))
    assert cli.main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["gpus"][0]["uuid"] == "GPU-1234" and any("other process" in w for w in info["warnings"])
    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in out and "GPU-1234" in out and "700.0 / 700.0" in out
    assert "warning:" in out and "pid 999999" in out
    assert "transformers" in out and "torch" in out
