"""Fixtures of the GPU tests (marked ``gpu``; they skip themselves without a GPU)."""

import pytest


@pytest.fixture(scope="module")
def torch_cuda():
    """torch, when it sees a CUDA GPU; else the test is skipped."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    return torch
