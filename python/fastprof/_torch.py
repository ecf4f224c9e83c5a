"""Optional torch helpers. fastprof never needs torch; when the caller uses it, these
find the device, stream and synchronisation that match the caller's work."""

from __future__ import annotations

import sys
from typing import Any


def loaded() -> Any:
    """The torch module if it has been imported (never imports it), else None."""
    return sys.modules.get("torch")


def cuda_ready(torch: Any) -> bool:
    return torch is not None and torch.cuda.is_available()


def backend_kind(torch: Any) -> str:
    """'hip' on ROCm builds of torch (which still say 'cuda'), else 'cuda'."""
    return "hip" if getattr(torch.version, "hip", None) else "cuda"


def synchronize(device: Any = None) -> None:
    torch = loaded()
    if cuda_ready(torch) and torch.cuda.is_initialized():
        torch.cuda.synchronize(device)


def free_memory() -> None:
    """Garbage-collect and release the device's cached blocks (not the compile cache)."""
    import gc

    gc.collect()
    torch = loaded()
    if cuda_ready(torch) and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
