"""GPU performance counters (NVML GPM) and the roofline's peaks on a real NVIDIA GPU (skipped without one)."""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or torch.version.cuda is None:
        pytest.skip("needs an NVIDIA GPU")
    return torch


@pytest.fixture(scope="module")
def hopper(torch_cuda):
    major, _ = torch_cuda.cuda.get_device_capability(0)
    if major < 9:
        pytest.skip(f"GPM needs Hopper or newer (compute capability {major}.x here)")
    return torch_cuda


def _peaks():
    from fastprof.analysis.roofline import gpu_facts, gpu_peaks
    from fastprof.capture.environment import capture_environment

    return gpu_peaks(gpu_facts(capture_environment(nvml=True), 0))


def test_gpm_fields_present_on_hopper(hopper):
    from fastprof.capture.sampler import GPM_FIELDS, Sampler

    with Sampler(interval_ms=5, devices=[0], backend="nvml") as s:
        time.sleep(0.5)
    r = s.result
    assert r.ok, r.reason
    unavailable = r.unavailable[r.devices[0]["identifier"]]
    for name in ("dram_bw_util_pct", "sm_active_pct", "sm_occupancy_pct", "tensor_active_pct"):
        assert name not in unavailable, f"{name} unavailable on {r.devices[0]['name']}"
        v = r.fields[name][np.isfinite(r.fields[name])]
        assert v.size >= 3, (name, v.size)  # every 100 ms over 0.5 s
        assert np.all((v >= 0) & (v <= 100.5)), name
    gpm_rows = np.isfinite(r.dram_bw_util_pct)
    gaps_ms = np.diff(r.timestamps_ns[gpm_rows]) / 1e6
    assert 85 <= np.median(gaps_ms) <= 140
    print("GPM fields unavailable here:", sorted(set(unavailable) & set(GPM_FIELDS)))


def test_gpm_dram_utilisation_on_a_copy_agrees_with_bytes_over_time(hopper):
    """A device-to-device copy of known size, timed with CUDA events: GPM's DRAM utilisation over
    the windows that lie wholly inside the copy loop agrees with (read + written bytes) / time /
    peak bandwidth within 15%."""
    torch = hopper
    from fastprof.capture.sampler import Sampler

    peak = _peaks()["peak_bandwidth_bytes_per_s"]
    assert peak, "NVML gave no memory bus width or max memory clock"
    n = 1 << 30  # 1 GiB each way
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    with Sampler(interval_ms=5, devices=[0], backend="nvml") as s:
        time.sleep(0.1)
        start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter_ns()
        start_ev.record()
        copies = 0
        while time.perf_counter_ns() - t0 < 1.5e9:
            for _ in range(10):
                dst.copy_(src)
            copies += 10
            torch.cuda.synchronize()
        end_ev.record()
        torch.cuda.synchronize()
        t1 = time.perf_counter_ns()
        time.sleep(0.1)
    r = s.result
    assert r.ok, r.reason
    seconds = start_ev.elapsed_time(end_ev) / 1e3
    expected_pct = 100.0 * (2 * n * copies) / seconds / peak  # every byte read once and written once
    ts = r.timestamps_ns
    rows = np.flatnonzero(np.isfinite(r.dram_bw_util_pct))
    windows = [(ts[a], ts[b], r.dram_bw_util_pct[b]) for a, b in zip(rows[:-1], rows[1:])]
    inside = [v for a, b, v in windows if a >= t0 + 20_000_000 and b <= t1 - 20_000_000]
    assert len(inside) >= 8, len(inside)
    measured = float(np.mean(inside))
    assert measured == pytest.approx(expected_pct, rel=0.15), (measured, expected_pct)


def test_h100_peak_bandwidth(torch_cuda):
    name = torch_cuda.cuda.get_device_name(0)
    if "H100" not in name or "HBM3" not in name:
        pytest.skip(f"an H100 SXM (HBM3) check; this is {name}")
    peaks = _peaks()
    assert peaks["peak_bandwidth_bytes_per_s"] == pytest.approx(3.35e12, rel=0.10)
    assert peaks["peak_tensor_flops"] == pytest.approx(989.4e12, rel=0.10)


def test_roofline_and_verdict_of_a_real_decode(torch_cuda):
    """The built-in model decoding in bf16: the result carries the GPU's peaks, an MBU between 0 and 1
    (a step cannot read its bytes faster than the peak) and a verdict; on Hopper the DRAM counter
    sits beside the MBU."""
    torch = torch_cuda
    import fastprof
    from fastprof.capture.hf import build_default_model, random_inputs

    model = build_default_model(dtype=torch.bfloat16, device="cuda")
    r = fastprof.benchmark_generate(model, random_inputs(32000, 1, 64, device="cuda"), max_new_tokens=64, warmup=2,
                                    iterations=5)
    roof = r.roofline
    assert roof["available"], roof
    assert roof["gpu"]["peak_bandwidth_bytes_per_s"] > 1e11
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert roof["weight_bytes_per_step"] <= weights
    assert 0 < roof["mbu"] < 1.0
    assert roof["ideal_step_s"] < roof["itl_s"]
    assert r.verdict["verdict"] in ("host-overhead-bound", "memory-bound", "compute-bound")
    if torch.cuda.get_device_capability(0)[0] >= 9:
        assert roof["measured_dram_util_pct"] is not None
    print(r.verdict["text"])
