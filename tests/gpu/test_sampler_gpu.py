"""The sampler on a real NVIDIA GPU, checked against pynvml (skipped without a GPU)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def pynvml():
    nv = pytest.importorskip("pynvml")
    try:
        nv.nvmlInit()
    except Exception as exc:  # no NVIDIA driver: an AMD or Intel machine
        pytest.skip(f"NVML not available: {exc}")
    yield nv
    nv.nvmlShutdown()


def _uuid(nv, handle) -> str:
    u = nv.nvmlDeviceGetUUID(handle)
    return u.decode() if isinstance(u, bytes) else u


def test_readings_agree_with_pynvml(pynvml):
    from fastprof.capture.sampler import Sampler, cuda_visible_to_nvml

    ident = cuda_visible_to_nvml([0])[0]
    handle = pynvml.nvmlDeviceGetHandleByUUID(ident) if ident.startswith("GPU-") else \
        pynvml.nvmlDeviceGetHandleByIndex(int(ident))
    with Sampler(interval_ms=10, devices=[0], backend="nvml") as s:
        time.sleep(0.5)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        sm = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
        memclk = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        time.sleep(0.2)
    r = s.result
    assert r.ok, r.reason
    assert r.devices[0]["uuid"] == _uuid(pynvml, handle)
    total = r.mem_total_bytes[np.isfinite(r.mem_total_bytes)]  # read every 10 ms
    assert total.size >= 5 and np.all(total == mem.total)
    assert abs(np.nanmedian(r.mem_used_bytes) - mem.used) < 256 * 2**20
    assert abs(np.nanmedian(r.mem_clock_mhz) - memclk) <= 0.05 * memclk + 10
    assert abs(np.nanmedian(r.sm_clock_mhz) - sm) <= 0.25 * sm + 100  # idle clocks move
    assert r.energy_mj.size >= 2 and np.all(np.diff(r.energy_mj) >= 0)  # at start and stop at least
    assert np.isfinite(r.power_w).all()


def test_utilisation_and_power_rise_under_load(pynvml):
    torch = pytest.importorskip("torch")
    from fastprof.capture.sampler import Sampler

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    torch.cuda.synchronize()
    time.sleep(0.5)
    with Sampler(interval_ms=10, devices=[0], backend="nvml") as idle:
        time.sleep(1.0)
    with Sampler(interval_ms=10, devices=[0], backend="nvml") as busy:
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
    i, b = idle.result, busy.result
    assert i.ok and b.ok
    n = b.n_samples
    tail = slice(n // 3, None)  # utilisation is averaged by the driver over a window
    assert np.nanmean(b.gpu_util_pct[tail]) > np.nanmean(i.gpu_util_pct) + 30
    assert np.nanmean(b.power_w[tail]) > np.nanmean(i.power_w) * 1.2
    assert b.energy_joules() > 0


def test_mapping_picks_the_right_gpu_under_cuda_visible_devices(pynvml):
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    uuid = _uuid(pynvml, handle)
    code = (
        "import time, torch\n"
        "from fastprof.capture.sampler import Sampler\n"
        "torch.cuda.init()\n"
        "s = Sampler(interval_ms=10, devices=[0], backend='nvml')\n"
        "print(s.devices[0])\n"
        "with s: time.sleep(0.1)\n"
        "print(s.result.devices[0]['uuid'])\n"
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=uuid)
    env.pop("CUDA_DEVICE_ORDER", None)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    mapped, sampled = p.stdout.split()
    assert mapped == uuid and sampled == uuid
