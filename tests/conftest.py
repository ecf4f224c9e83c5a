import ctypes
import os
from pathlib import Path

import pytest

from fake_libs import FAKES, PREBUILT_ENV, build, default_compiler, prebuilt


def fake_library(tmp_path_factory, name: str) -> Path:
    """The fake library `name` of fake_libs.LIBRARIES: the prebuilt copy in $FASTPROF_TEST_FAKES_DIR when
    that is set (checked against its source), else compiled now with the C compiler."""
    directory = os.environ.get(PREBUILT_ENV)
    if directory:
        try:
            return prebuilt(name, Path(directory))
        except ValueError as e:
            pytest.fail(str(e), pytrace=False)
    cc = default_compiler()
    if cc is None:
        pytest.skip(f"no C compiler to build the fake GPU libraries (set {PREBUILT_ENV} to prebuilt ones)")
    return build(name, tmp_path_factory.mktemp("fakes"), cc)


def _build(tmp_path_factory, source: str, name: str, defines: tuple[str, ...] = ()) -> Path:
    from fake_libs import LIBRARIES

    assert LIBRARIES[name] == (source, tuple(f"-D{d}" for d in defines)), (name, source, defines)
    return fake_library(tmp_path_factory, name)


@pytest.fixture(scope="session")
def fake_gpu_path(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "fake_gpu.c", "libfakegpu.so")


class FakeGpu:
    """ctypes handle on the fake driver that fastprof has loaded (dlopen returns the same copy)."""

    def __init__(self, path: Path):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self.lib.fake_gpu_calls.restype = ctypes.c_long
        self.lib.fake_gpu_calls.argtypes = [ctypes.c_char_p]
        self.lib.fake_gpu_fail.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]

    def reset(self):
        self.lib.fake_gpu_reset()

    def calls(self, name: str) -> int:
        return int(self.lib.fake_gpu_calls(name.encode()))

    def fail(self, name: str, nth: int, code: int):
        self.lib.fake_gpu_fail(name.encode(), nth, code)

    def script(self, timestamps_ns):
        arr = (ctypes.c_int64 * len(timestamps_ns))(*timestamps_ns)
        self.lib.fake_gpu_script_timestamps(arr, len(timestamps_ns))

    def set_device_count(self, n: int):
        self.lib.fake_gpu_set_device_count(n)

    def live_events(self) -> int:
        return int(self.lib.fake_gpu_live_events())


@pytest.fixture
def fake_gpu(fake_gpu_path, monkeypatch) -> FakeGpu:
    """The fake CUDA driver / HIP runtime, selected through FASTPROF_CUDA_LIBRARY and
    FASTPROF_HIP_LIBRARY, reset for each test."""
    monkeypatch.setenv("FASTPROF_CUDA_LIBRARY", str(fake_gpu_path))
    monkeypatch.setenv("FASTPROF_HIP_LIBRARY", str(fake_gpu_path))
    fake = FakeGpu(fake_gpu_path)
    fake.reset()
    yield fake
    fake.reset()


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a GPU (torch sees none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llama():
    """A tiny random Llama (2 layers, hidden 64) on the CPU, through the real generate."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fastprof.capture.hf import build_default_model

    return build_default_model(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=256, max_position_embeddings=512)


@pytest.fixture(scope="module")
def torch_cuda():
    """torch, when it sees a CUDA GPU (for the GPU tests, marked ``gpu``); else the test is skipped."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    return torch
