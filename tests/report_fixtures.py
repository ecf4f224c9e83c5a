"""Results for the report, compare and browser tests: a sweep measured on the fake GPU (with GPU
samples), and synthetic results with chosen inter-token gaps."""

import copy

import numpy as np
import pytest

import fastprof
from fastprof import Trace
from fastprof.results.sweep import Sweep
from sampler_fixtures import fake_nvml_path  # noqa: F401

MS = 1_000_000


@pytest.fixture(scope="session")
def gpu_sweep_doc(tiny_llama, fake_gpu_path, fake_nvml_path):  # noqa: F811
    """Batch size 1, 2 x prompt 8, 16 measured on the fake GPU (samples every 2 ms), and one failed
    configuration; built once, as a document."""
    from conftest import FakeGpu
    from fastprof.capture.environment import capture_environment
    from fastprof.capture.hf import random_inputs
    from sampler_fixtures import FakeNvml

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTPROF_CUDA_LIBRARY", str(fake_gpu_path))
        mp.setenv("FASTPROF_HIP_LIBRARY", str(fake_gpu_path))
        mp.setenv("FASTPROF_NVML_LIBRARY", str(fake_nvml_path))
        mp.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        mp.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA ordinal n is NVML index n
        gpu, nvml = FakeGpu(fake_gpu_path), FakeNvml(fake_nvml_path)
        gpu.reset()
        nvml.reset()
        try:
            nvml.set(0, "power_instant_mw", 180_000)
            nvml.set(0, "util_gpu", 93)
            sweep = Sweep(environment=capture_environment(), parameters={"batch_size": [1, 2], "prompt_len": [8, 16]},
                          command=["fastprof", "run", "--batch-size", "1,2", "--prompt-len", "8,16"])
            for bs in (1, 2):
                for pl in (8, 16):
                    config = {"model": "tiny", "batch_size": bs, "prompt_len": pl, "max_new_tokens": 8}
                    r = fastprof.benchmark_generate(tiny_llama, random_inputs(256, bs, pl), max_new_tokens=8,
                                                    warmup=0, iterations=3, device="cuda:0", sample_interval_ms=2,
                                                    config=config)
                    assert r.hardware["available"], r.hardware
                    sweep.add_ok(config, r)
        finally:
            gpu.reset()
            nvml.reset()
    sweep.add_failed({"model": "tiny", "batch_size": 4, "prompt_len": 8, "max_new_tokens": 8},
                     RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    return sweep.to_dict()


@pytest.fixture
def gpu_sweep(gpu_sweep_doc):
    """A fresh Sweep of :func:`gpu_sweep_doc` for each test."""
    return Sweep.from_dict(copy.deepcopy(gpu_sweep_doc))


def synthetic_result(gap_ms, *, iterations=12, tokens=16, jitter=0.02, seed=0, batch_size=1, prompt_len=8,
                     ttft_ms=20.0, config=None):
    """A generate result whose inter-token gaps are gap_ms (with relative jitter) and whose time to
    first token is ttft_ms, built from hand-made traces."""
    rng = np.random.default_rng(seed)
    traces = []
    start = 10**12
    for _ in range(iterations):
        first = ttft_ms * (1 + jitter * rng.standard_normal())
        gaps = gap_ms * (1 + jitter * rng.standard_normal(tokens - 1))
        marks = start + (np.concatenate([[first], first + np.cumsum(gaps)]) * MS).astype(np.int64)
        end = int(marks[-1] + MS)
        traces.append(Trace(start, end, marks))
        start = end + 5 * MS
    cfg = {"model": "synthetic", "batch_size": batch_size, "prompt_len": prompt_len, "max_new_tokens": tokens}
    cfg.update(config or {})
    return fastprof.summarize_generation(traces, batch_size=batch_size, prompt_len=prompt_len, config=cfg)


def synthetic_sweep(gap_ms_by_batch, **kwargs):
    from fastprof.capture.environment import capture_environment

    seed = kwargs.pop("seed", 0)
    sweep = Sweep(environment=capture_environment(), parameters={"batch_size": sorted(gap_ms_by_batch)})
    for i, (bs, gap) in enumerate(sorted(gap_ms_by_batch.items())):
        r = synthetic_result(gap, batch_size=bs, seed=seed + i, **kwargs)
        sweep.add_ok({k: r.config[k] for k in ("model", "batch_size", "prompt_len", "max_new_tokens")}, r)
    return sweep
