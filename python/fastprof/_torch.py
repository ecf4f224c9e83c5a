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


def gpm_capable(ordinal: int) -> bool:
    """Whether CUDA device ``ordinal`` may have NVML's GPM counters (an NVIDIA GPU of compute
    capability 9.0 or newer, seen through an initialised CUDA torch); False where torch cannot say."""
    torch = loaded()
    if not cuda_ready(torch) or backend_kind(torch) != "cuda" or not torch.cuda.is_initialized():
        return False
    try:
        return torch.cuda.get_device_capability(ordinal)[0] >= 9
    except Exception:  # noqa: BLE001 - a device torch cannot describe has no GPM figure to protect
        return False


def synchronize(device: Any = None) -> None:
    torch = loaded()
    if cuda_ready(torch) and torch.cuda.is_initialized():
        torch.cuda.synchronize(device)


def free_memory() -> None:
    """Garbage-collect and release the device's cached blocks (not the compile cache).

    A full collection, so that garbage of every generation made since the last call is gone
    (an iteration's objects that lived through a few automatic collections sit in the oldest
    generation). Its cost is the number of objects it scans: after :func:`freeze_long_lived`
    (or in a worker forked from ``fastprof run``'s fork server, whose imported modules are
    frozen) only the objects made since, well under a millisecond for ``generate`` instead of a
    few hundred milliseconds over the whole heap of torch and transformers."""
    import gc

    gc.collect()
    torch = loaded()
    if cuda_ready(torch) and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


#: How many measurements have frozen the heap (:func:`freeze_long_lived`) and not yet thawed it:
#: measurements whose iterations alternate (:func:`fastprof.measure.driver.generate_steps`) overlap.
_frozen = 0


def freeze_long_lived() -> int:
    """Collects, then moves every object alive now to the garbage collector's permanent
    generation (:func:`gc.freeze`): call it once the model is loaded and warmed up, when what is
    alive (modules, the model, its caches) lives as long as the measurement. Frozen objects are
    never scanned, so that :func:`free_memory` before each iteration scans only what the
    iterations made. Reference counting still frees frozen objects; only cyclic garbage among
    them waits for :func:`thaw_long_lived`. Returns the number of frozen objects."""
    import gc

    global _frozen
    gc.collect()
    gc.freeze()
    _frozen += 1
    return gc.get_freeze_count()


def thaw_long_lived(*, force: bool = False) -> None:
    """Undoes :func:`freeze_long_lived` (:func:`gc.unfreeze`) once the last overlapping
    measurement is over (every one of them with ``force``, after a failure), so that a model
    dropped later, cycles and all, is collected; nothing when nothing froze."""
    import gc

    global _frozen
    if _frozen:
        _frozen = 0 if force else _frozen - 1
        if not _frozen:
            gc.unfreeze()
