"""Quantization methods of ``fastprof run --quantization``, through transformers' own configs.

Each method is a fastprof name for one transformers quantization config:

================  ============  ==========================================================================
name              backend       transformers config
================  ============  ==========================================================================
none              (none)        the model in ``--dtype``, unquantized
bnb-int8          bitsandbytes  ``BitsAndBytesConfig(load_in_8bit=True)`` (LLM.int8(): int8 weights,
                                outlier columns in float16)
bnb-nf4           bitsandbytes  ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_compute_dtype=<dtype>)``
bnb-fp4           bitsandbytes  as bnb-nf4 with ``bnb_4bit_quant_type="fp4"``
torchao-int8wo    torchao       ``TorchAoConfig(Int8WeightOnlyConfig())``: int8 weights, per-channel scales
torchao-int8dq    torchao       ``TorchAoConfig(Int8DynamicActivationInt8WeightConfig())``: int8 weights
                                and activations quantized per token at run time
torchao-int4wo    torchao       ``TorchAoConfig(Int4WeightOnlyConfig(group_size=128))`` (CUDA)
torchao-float8wo  torchao       ``TorchAoConfig(Float8WeightOnlyConfig())`` (GPUs with float8: sm89+)
================  ============  ==========================================================================

Layers the backend leaves alone (transformers keeps the output layer and the embeddings in
``--dtype``) stay as they are. A quantized model is loaded with ``from_pretrained`` (the built-in
model is saved to a temporary directory first) straight onto the device.

:func:`weight_bytes` counts the bytes the weights really occupy, quantized storage and its scales
included, which is what a decode step reads; the roofline uses it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Callable


class QuantizationUnavailable(RuntimeError):
    """The method's backend is not installed, or the device cannot run the method."""


@dataclass(frozen=True)
class Method:
    name: str
    backend: str | None  # the Python package (and distribution) that provides the kernels
    maps_to: str
    make: Callable[[Any], Any] | None  # torch dtype -> transformers quantization config
    summary: str = ""  # one short line for --help
    cuda_only: bool = False


def _bnb(load: str, quant_type: str | None = None) -> Callable[[Any], Any]:
    def make(dtype: Any) -> Any:
        from transformers import BitsAndBytesConfig

        if load == "8bit":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_compute_dtype=dtype)
    return make


def _torchao(config: str, **kwargs: Any) -> Callable[[Any], Any]:
    def make(dtype: Any) -> Any:
        import torchao.quantization as q
        from transformers import TorchAoConfig

        return TorchAoConfig(getattr(q, config)(**kwargs))
    return make


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("none", None, "unquantized, in --dtype", None, "unquantized, in --dtype (the default)"),
    Method("bnb-int8", "bitsandbytes", "BitsAndBytesConfig(load_in_8bit=True)", _bnb("8bit"),
           "bitsandbytes LLM.int8(): int8 weights, float16 matmuls"),
    Method("bnb-nf4", "bitsandbytes", "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4')",
           _bnb("4bit", "nf4"), "bitsandbytes 4-bit NormalFloat weights"),
    Method("bnb-fp4", "bitsandbytes", "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='fp4')",
           _bnb("4bit", "fp4"), "bitsandbytes 4-bit float weights"),
    Method("torchao-int8wo", "torchao", "TorchAoConfig(Int8WeightOnlyConfig())", _torchao("Int8WeightOnlyConfig"),
           "torchao int8 weights, per-channel scales"),
    Method("torchao-int8dq", "torchao", "TorchAoConfig(Int8DynamicActivationInt8WeightConfig())",
           _torchao("Int8DynamicActivationInt8WeightConfig"), "torchao int8 weights and per-token int8 activations"),
    Method("torchao-int4wo", "torchao", "TorchAoConfig(Int4WeightOnlyConfig(group_size=128))",
           _torchao("Int4WeightOnlyConfig", group_size=128), "torchao int4 weights, groups of 128 (CUDA)",
           cuda_only=True),
    Method("torchao-float8wo", "torchao", "TorchAoConfig(Float8WeightOnlyConfig())",
           _torchao("Float8WeightOnlyConfig"), "torchao float8 weights (CUDA, sm89 and newer)", cuda_only=True),
)}


def method(name: str) -> Method:
    """The method called ``name``; ValueError naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown quantization method {name!r}; known: {', '.join(METHODS)}") from None


def backend_version(name: str) -> str | None:
    """The installed version of the method's backend (None for 'none' or when it is missing)."""
    m = method(name)
    if m.backend is None:
        return None
    try:
        return importlib.metadata.version(m.backend)
    except importlib.metadata.PackageNotFoundError:
        return None


def transformers_config(name: str, dtype: Any, device: str) -> Any:
    """transformers' quantization config for method ``name`` (None for 'none'). Raises
    :class:`QuantizationUnavailable` with a one-line reason when the backend is not installed or
    the method does not run on ``device``."""
    m = method(name)
    if m.make is None:
        return None
    if importlib.util.find_spec(m.backend) is None:
        raise QuantizationUnavailable(f"{name} needs the {m.backend} package, which is not installed: "
                                      "pip install 'fastprof[quant]'")
    if m.cuda_only and not str(device).startswith("cuda"):
        raise QuantizationUnavailable(f"{name} runs on CUDA GPUs only, not on {device}")
    config = m.make(dtype)
    if m.backend == "torchao":
        _preflight_torchao(name, config, dtype, device)
    return config


def _preflight_torchao(name: str, config: Any, dtype: Any, device: str) -> None:
    """Quantizes one small linear layer with the method first and runs it, so that a method this
    machine cannot run (a kernel package missing, an unsupported GPU) fails in one line here
    rather than in a multi-page loading report for every layer of the model."""
    import torch
    from torchao.quantization import quantize_

    dtype = dtype or torch.bfloat16
    try:
        layer = torch.nn.Linear(256, 256, bias=False, dtype=dtype, device=device)
        quantize_(layer, config.quant_type)
        with torch.inference_mode():
            layer(torch.ones(2, 256, dtype=dtype, device=device))
    except Exception as exc:  # noqa: BLE001 - any failure means the method cannot run here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise QuantizationUnavailable(f"{name} cannot run on {device} here: {type(exc).__name__}"
                                      f"{': ' + first if first else ''}") from None


def details(name: str) -> dict[str, Any]:
    """What a result records of its method: name, backend, its version, the transformers config."""
    m = method(name)
    return {"method": m.name, "backend": m.backend, "backend_version": backend_version(name), "maps_to": m.maps_to}


# ---- the bytes the weights occupy -----------------------------------------------------------
def _is_tensor(x: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - callers hold a torch model
        return False
    return isinstance(x, torch.Tensor)


def _storages(t: Any, seen: dict[tuple[str, int], int]) -> None:
    """Adds every storage behind tensor ``t`` to ``seen`` ((device, address) -> bytes): the inner
    tensors of a tensor subclass (torchao's quantized tensors), and the quantization state a
    parameter carries as attributes (bitsandbytes' scales and quant_state)."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = t.__tensor_flatten__()
        for n in names:
            inner = getattr(t, n, None)
            if _is_tensor(inner):
                _storages(inner, seen)
    else:
        try:
            storage = t.untyped_storage()
            key = (str(t.device), int(storage.data_ptr()))
            if key[1] != 0 or storage.nbytes():
                seen[key] = max(seen.get(key, 0), int(storage.nbytes()))
        except (RuntimeError, NotImplementedError):  # no storage (meta, some subclasses)
            seen[(str(t.device), id(t))] = int(t.numel()) * int(t.element_size())
    _attributes(t, seen)


def _attributes(obj: Any, seen: dict[tuple[str, int], int]) -> None:
    """The tensors among ``obj``'s attributes, and those of any bitsandbytes QuantState in them
    (nested states included)."""
    for value in list(getattr(obj, "__dict__", {}).values()):
        if _is_tensor(value):
            _storages(value, seen)
        elif type(value).__name__.endswith("QuantState"):
            _attributes(value, seen)


def weight_bytes(model: Any) -> int:
    """Bytes the model's parameters and non-boolean buffers occupy, each storage once: for a
    quantized model, the packed weights plus their scales and zero points."""
    seen: dict[tuple[str, int], int] = {}
    for p in model.parameters():
        _storages(p, seen)
    for b in model.buffers():
        if str(b.dtype) != "torch.bool":  # masks are not weights
            _storages(b, seen)
    return int(sum(seen.values()))


def logical_numel(p: Any) -> int:
    """Elements of the weight a parameter stands for (bitsandbytes' 4-bit parameters hold two per
    byte, flattened; their quant_state keeps the real shape)."""
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    return int(math.prod(int(s) for s in shape)) if shape is not None else int(p.numel())
