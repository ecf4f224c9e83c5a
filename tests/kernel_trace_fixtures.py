"""Fixtures for the kernel tracer tests: the fake CUPTI library."""

import ctypes
from pathlib import Path

import pytest

from conftest import _build

KERNEL, MEMCPY, MEMSET = 10, 1, 2  # CUPTI activity kinds


@pytest.fixture(scope="session")
def fake_cupti_path(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "fake_cupti.c", "libfakecupti.so")


@pytest.fixture(scope="session")
def fake_cupti_no_ts_path(tmp_path_factory) -> Path:
    """The fake CUPTI of a release without cuptiActivityRegisterTimestampCallback."""
    return _build(tmp_path_factory, "fake_cupti.c", "libfakecupti_nots.so", defines=("FAKE_CUPTI_NO_TS_CALLBACK",))


class FakeCupti:
    """ctypes handle on the fake CUPTI that fastprof has loaded (dlopen returns the same copy)."""

    def __init__(self, path: Path):
        self.path = path
        lib = self.lib = ctypes.CDLL(str(path))
        lib.fake_cupti_add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64,
                                       ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                       ctypes.c_uint64, ctypes.c_int]
        lib.fake_cupti_calls.restype = ctypes.c_long
        lib.fake_cupti_calls.argtypes = [ctypes.c_char_p]
        lib.fake_cupti_fail.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.fake_cupti_set_dropped.argtypes = [ctypes.c_long]
        lib.fake_cupti_set_clock_offset.argtypes = [ctypes.c_int64]

    def reset(self):
        self.lib.fake_cupti_reset()

    def add(self, kind, name, start, end, device=0, stream=7, correlation=0, graph_id=0, nbytes=0, copy_kind=0):
        self.lib.fake_cupti_add(kind, name.encode() if name else None, start, end, device, stream, correlation,
                                graph_id, nbytes, copy_kind)

    def calls(self, name: str) -> int:
        return int(self.lib.fake_cupti_calls(name.encode()))

    def fail(self, name: str, code: int):
        self.lib.fake_cupti_fail(name.encode(), code)

    def __getattr__(self, name):
        return getattr(self.lib, "fake_cupti_" + name)


def _fake(path, monkeypatch):
    monkeypatch.setenv("FASTPROF_CUPTI_LIBRARY", str(path))
    fake = FakeCupti(path)
    fake.reset()
    return fake


@pytest.fixture
def fake_cupti(fake_cupti_path, monkeypatch) -> FakeCupti:
    fake = _fake(fake_cupti_path, monkeypatch)
    yield fake
    fake.reset()


@pytest.fixture
def fake_cupti_no_ts(fake_cupti_no_ts_path, monkeypatch) -> FakeCupti:
    fake = _fake(fake_cupti_no_ts_path, monkeypatch)
    yield fake
    fake.reset()
