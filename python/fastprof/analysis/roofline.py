"""The roofline of a decode step: what it must move and compute, against what the GPU can do.

Pure functions of plain numbers and dicts (no torch, no NVML): the facts they need are collected
at measurement time (:func:`fastprof.hf.model_facts`, :func:`gpu_facts`).

One decode step (one token per sequence) must read, at least:

- every weight once: ``weight_bytes`` (an explicit figure, such as the bytes the parameters and
  buffers really occupy, so quantised models count their real size; else parameters x bytes per
  element). An input embedding that is not tied to the output layer is a lookup, not a matmul: only
  ``batch`` of its rows are read, so its bytes are left out;
- the KV cache at the step's length: ``2 x layers x kv_heads x head_dim x seq_len x batch x bytes``
  (keys and values). The gap between tokens ``i`` and ``i + 1`` (1-based) is the step whose input
  is token ``i``: it attends to ``prompt_len + i`` positions. A static cache of fixed length may
  read more (masked positions); the figure here is the least any implementation must read.

and compute, per token: ``2 x matmul parameters`` (a multiply and an add per weight; the untied
input embedding left out) plus attention, ``4 x layers x heads x head_dim x seq_len`` (QK^T and
AV).

Peaks:

- memory bandwidth = bus width (bits) / 8 x max memory clock x 2 (double data rate), from NVML
  (``nvmlDeviceGetMemoryBusWidth``, ``nvmlDeviceGetMaxClockInfo(NVML_CLOCK_MEM)``). H100 SXM:
  5120 bits x 2619 MHz x 2 = 3.35 TB/s; A100 40 GB: 5120 x 1215 x 2 = 1.56 TB/s;
  L4: 192 x 6251 x 2 = 300 GB/s;
- dense FP16/BF16 tensor FLOP/s = :data:`TENSOR_FLOPS_PER_SM_PER_CLOCK` (by compute capability)
  x SM count x max SM clock.

Utilisations: MBU (memory-bandwidth utilisation) = bytes per step / step time / peak bandwidth;
MFU (model FLOPs utilisation) = FLOPs per step / step time / peak FLOP/s; both against the whole
step (the mean inter-token latency) and, when a kernel trace says how long the GPU was busy in
each step, against that busy time. The ideal step time is the step's bytes at full bandwidth.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

#: Dense (no sparsity) FP16/BF16 tensor-core FLOPs per SM per clock, by compute capability
#: (major, minor), with the published figure each is derived from (FLOP/s / (SMs x boost clock)):
#:
#: - 7.0 V100 SXM2: 125 TFLOP/s FP16 at 1530 MHz, 80 SMs (Tesla V100 datasheet; no BF16)
#: - 7.5 T4: 65 TFLOP/s FP16 at 1590 MHz, 40 SMs (Tesla T4 datasheet)
#: - 8.0 A100: 312 TFLOP/s BF16 at 1410 MHz, 108 SMs (A100 datasheet and architecture whitepaper)
#: - 8.6 A10: 125 TFLOP/s BF16 at 1695 MHz, 72 SMs (A10 datasheet). GeForce RTX 30 parts run
#:   FP16 with FP32 accumulation at half this rate: there the peak is overstated.
#: - 8.9 L4: 121 TFLOP/s BF16 at 2040 MHz, 58 SMs; L40S: 362 TFLOP/s at 2520 MHz, 142 SMs (L4 and
#:   L40S datasheets). GeForce RTX 40 parts: as for 8.6.
#: - 9.0 H100 SXM: 989.4 TFLOP/s BF16 at 1830 MHz, 132 SMs (H100 datasheet and Hopper whitepaper);
#:   H200 is the same chip. NVML's max SM clock on an H100 SXM is 1980 MHz, so the peak computed
#:   here (1070 TFLOP/s) is 8% above the datasheet's.
#: - 10.0 B200: 2.25 PFLOP/s BF16 (HGX B200 datasheet), 148 SMs: twice Hopper's rate per SM and
#:   clock (fifth-generation tensor cores).
TENSOR_FLOPS_PER_SM_PER_CLOCK: dict[tuple[int, int], int] = {
    (7, 0): 1024,
    (7, 5): 1024,
    (8, 0): 2048,
    (8, 6): 1024,
    (8, 9): 1024,
    (9, 0): 4096,
    (10, 0): 8192,
}


# ---- peaks ----------------------------------------------------------------------------------
def peak_bandwidth(bus_width_bits: float, mem_clock_max_mhz: float) -> float:
    """Peak DRAM bandwidth in bytes/s: bus width / 8 x max memory clock x 2 (double data rate)."""
    if bus_width_bits <= 0 or mem_clock_max_mhz <= 0:
        raise ValueError(f"bus width and memory clock must be positive, got {bus_width_bits} bits, "
                         f"{mem_clock_max_mhz} MHz")
    return bus_width_bits / 8.0 * mem_clock_max_mhz * 1e6 * 2.0


def parse_capability(capability: Any) -> tuple[int, int] | None:
    """(major, minor) from "9.0", (9, 0) or 9.0; None when it cannot be read."""
    if capability is None:
        return None
    if isinstance(capability, (tuple, list)) and len(capability) == 2:
        return int(capability[0]), int(capability[1])
    text = str(capability).strip()
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


def peak_tensor_flops(capability: Any, sm_count: int, sm_clock_max_mhz: float) -> float | None:
    """Peak dense FP16/BF16 tensor FLOP/s, or None for a compute capability not in the table."""
    cc = parse_capability(capability)
    per_clock = TENSOR_FLOPS_PER_SM_PER_CLOCK.get(cc) if cc else None
    if per_clock is None or sm_count <= 0 or sm_clock_max_mhz <= 0:
        return None
    return float(per_clock) * sm_count * sm_clock_max_mhz * 1e6


def gpu_peaks(gpu: Mapping[str, Any]) -> dict[str, Any]:
    """The peaks of one GPU from its facts (:func:`gpu_facts`): ``peak_bandwidth_bytes_per_s`` and
    ``peak_tensor_flops`` (None where a fact is missing; ``reasons`` says which), and the ridge
    point (FLOPs per byte above which a kernel is compute-bound)."""
    reasons = []
    bw = flops = None
    bus, mem = gpu.get("memory_bus_width_bits"), gpu.get("mem_clock_max_mhz")
    if bus and mem:
        bw = peak_bandwidth(float(bus), float(mem))
    else:
        reasons.append("peak memory bandwidth unknown: NVML gave no memory bus width or max memory clock")
    cc, sms, clock = gpu.get("capability"), gpu.get("multiprocessors"), gpu.get("sm_clock_max_mhz")
    if sms and clock:
        flops = peak_tensor_flops(cc, int(sms), float(clock))
        if flops is None:
            reasons.append(f"peak tensor FLOP/s unknown for compute capability {cc}: not in "
                           "fastprof.analysis.roofline.TENSOR_FLOPS_PER_SM_PER_CLOCK")
    else:
        reasons.append("peak tensor FLOP/s unknown: no SM count or max SM clock")
    return {
        "name": gpu.get("name"),
        "capability": None if cc is None else str(cc),
        "multiprocessors": sms,
        "sm_clock_max_mhz": clock,
        "memory_bus_width_bits": bus,
        "mem_clock_max_mhz": mem,
        "peak_bandwidth_bytes_per_s": bw,
        "peak_tensor_flops": flops,
        "ridge_flops_per_byte": flops / bw if flops and bw else None,
        "reasons": reasons,
    }


def gpu_facts(environment: Mapping[str, Any], ordinal: int = 0) -> dict[str, Any]:
    """The facts :func:`gpu_peaks` needs for CUDA device ``ordinal``, from a captured environment
    (:func:`fastprof.capture.environment.capture_environment`): SM count and compute capability as torch
    reports them, bus width and max clocks from NVML (matched by UUID, else by index)."""
    torch_gpus = environment.get("gpus") or []
    nvml_gpus = (environment.get("nvidia") or {}).get("gpus") or []
    tg = next((g for g in torch_gpus if g.get("index") == ordinal), None) or {}

    def norm(uuid: Any) -> str:
        text = str(uuid or "").lower()
        return text[4:] if text.startswith("gpu-") else text

    ng = None
    if tg.get("uuid"):
        ng = next((g for g in nvml_gpus if g.get("uuid") and norm(g["uuid"]) == norm(tg["uuid"])), None)
    if ng is None and (len(nvml_gpus) == 1 or not tg):
        ng = nvml_gpus[0] if len(nvml_gpus) == 1 else next((g for g in nvml_gpus if g.get("index") == ordinal), None)
    ng = ng or {}
    # torch reports ROCm devices with CUDA-like capabilities (gfx90a as 9.0): trust NVML's, else
    # torch's only on a CUDA build.
    hip = (environment.get("versions") or {}).get("torch_hip")
    return {
        "name": ng.get("name") or tg.get("name"),
        "capability": ng.get("capability") or (None if hip else tg.get("capability")),
        "multiprocessors": tg.get("multiprocessors"),
        "sm_clock_max_mhz": ng.get("sm_clock_max_mhz"),
        "mem_clock_max_mhz": ng.get("mem_clock_max_mhz"),
        "memory_bus_width_bits": ng.get("memory_bus_width_bits"),
    }


# ---- the model's work -----------------------------------------------------------------------
def weight_bytes_per_step(model: Mapping[str, Any]) -> float:
    """Weight bytes one decode step reads: ``weight_bytes`` (else ``params x bytes_per_element``),
    less an untied input embedding (a lookup of ``batch`` rows, not a read of the table)."""
    total = model.get("weight_bytes")
    if total is None:
        total = float(model["params"]) * float(model["bytes_per_element"])
    if not model.get("tie_embeddings", False):
        total -= float(model.get("input_embedding_bytes") or 0)
    return float(total)


def kv_cache_bytes(model: Mapping[str, Any], seq_len: float, batch_size: int) -> float:
    """Bytes of keys and values for ``seq_len`` positions: 2 x layers x kv_heads x head_dim x
    seq_len x batch x bytes per element."""
    return (2.0 * model["num_layers"] * model["num_kv_heads"] * model["head_dim"] * seq_len * batch_size
            * float(model["kv_bytes_per_element"]))


def matmul_params(model: Mapping[str, Any]) -> float:
    """Parameters used in matmuls each token: all of them less an untied input embedding."""
    params = float(model["params"])
    if not model.get("tie_embeddings", False):
        params -= float(model.get("input_embedding_params") or 0)
    return params


def flops_per_token(model: Mapping[str, Any], seq_len: float) -> float:
    """FLOPs to produce one token at context length ``seq_len``: 2 x matmul parameters + attention
    (4 x layers x heads x head_dim x seq_len)."""
    attention = 4.0 * model["num_layers"] * model["num_heads"] * model["head_dim"] * seq_len
    return 2.0 * matmul_params(model) + attention


def decode_seq_lens(prompt_len: int, new_tokens: int) -> tuple[float, float, float]:
    """(first, last, mean) context length of the decode steps behind the inter-token gaps: the gap
    after token i (1-based, i = 1 .. N-1) attends to prompt_len + i positions."""
    if new_tokens < 2:
        return float(prompt_len + 1), float(prompt_len + 1), float(prompt_len + 1)
    first, last = prompt_len + 1, prompt_len + new_tokens - 1
    return float(first), float(last), (first + last) / 2.0


def model_facts_from_config(config: Any, *, params: int, weight_bytes: float | None = None,
                            bytes_per_element: float = 2.0, kv_bytes_per_element: float | None = None,
                            tie_embeddings: bool | None = None, input_embedding_params: int | None = None,
                            input_embedding_bytes: float | None = None) -> dict[str, Any]:
    """Model facts from a transformers config (or any object with its attribute names): layers,
    hidden size, heads, KV heads, head dimension, vocabulary, whether the input embedding is tied to
    the output layer; with the parameter count and bytes the caller measured."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config

    def attr(*names: str, default: Any = None) -> Any:
        for n in names:
            v = getattr(text, n, None)
            if v is not None:
                return v
        return default

    layers = attr("num_hidden_layers", "n_layer", "num_layers")
    hidden = attr("hidden_size", "n_embd", "d_model")
    heads = attr("num_attention_heads", "n_head")
    if layers is None or hidden is None or heads is None:
        raise ValueError("the model config has no layer count, hidden size or head count "
                         "(num_hidden_layers, hidden_size, num_attention_heads)")
    kv_heads = attr("num_key_value_heads", "n_kv_heads", "num_kv_heads")
    if kv_heads is None:
        kv_heads = 1 if getattr(text, "multi_query", False) else heads
    head_dim = attr("head_dim") or int(hidden) // int(heads)
    vocab = attr("vocab_size", default=0)
    if tie_embeddings is None:
        tie_embeddings = bool(getattr(config, "tie_word_embeddings", False))
    if input_embedding_params is None:
        input_embedding_params = int(vocab) * int(hidden)
    if input_embedding_bytes is None:
        input_embedding_bytes = input_embedding_params * bytes_per_element
    return {
        "num_layers": int(layers),
        "hidden_size": int(hidden),
        "num_heads": int(heads),
        "num_kv_heads": int(kv_heads),
        "head_dim": int(head_dim),
        "vocab_size": int(vocab),
        "tie_embeddings": bool(tie_embeddings),
        "params": int(params),
        "weight_bytes": None if weight_bytes is None else float(weight_bytes),
        "bytes_per_element": float(bytes_per_element),
        "kv_bytes_per_element": float(kv_bytes_per_element if kv_bytes_per_element is not None else bytes_per_element),
        "input_embedding_params": int(input_embedding_params),
        "input_embedding_bytes": float(input_embedding_bytes),
    }


# ---- the section ----------------------------------------------------------------------------
def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or not math.isfinite(num) or not math.isfinite(den) or den <= 0:
        return None
    return num / den


def busy_per_step_s(itl_s: float | None, kernels: Mapping[str, Any] | None) -> float | None:
    """GPU busy time per decode step from a kernel breakdown summary: its ``busy_s_per_step`` when
    given, else the step time less the idle share (``idle_share``)."""
    if not kernels:
        return None
    busy = kernels.get("busy_s_per_step")
    if busy is not None:
        return float(busy)
    idle = kernels.get("idle_share")
    if idle is None or itl_s is None:
        return None
    return float(itl_s) * (1.0 - float(idle))


def roofline(model: Mapping[str, Any], gpu: Mapping[str, Any], *, batch_size: int, prompt_len: int,
             new_tokens: int, itl_s: float | None, kernels: Mapping[str, Any] | None = None,
             measured_dram_util_pct: float | None = None) -> dict[str, Any]:
    """The ``roofline`` section of a result.

    ``model``: :func:`model_facts_from_config`'s dict; ``gpu``: :func:`gpu_peaks`'s dict;
    ``itl_s``: the mean inter-token latency (the whole decode step); ``kernels``: a kernel breakdown
    summary (``idle_share``, optionally ``busy_s_per_step``) or None; ``measured_dram_util_pct``:
    the GPU's own DRAM bandwidth counter over decode (NVML GPM), shown beside the computed MBU. It
    must come from GPM windows that lie wholly inside decode phases
    (:meth:`fastprof.results.result.BenchmarkResult.gpu_counters`): a window that takes in prefill or
    the idle time between iterations dilutes it. None (or NaN) when there is no such figure.
    """
    if batch_size < 1 or new_tokens < 1:
        raise ValueError(f"batch_size and new_tokens must be >= 1, got {batch_size} and {new_tokens}")
    first, last, mean_len = decode_seq_lens(prompt_len, new_tokens)
    weights = weight_bytes_per_step(model)
    kv_mean = kv_cache_bytes(model, mean_len, batch_size)
    step_bytes = weights + kv_mean
    step_flops = batch_size * flops_per_token(model, mean_len)
    bw = gpu.get("peak_bandwidth_bytes_per_s")
    peak_flops = gpu.get("peak_tensor_flops")
    ideal_mem = _ratio(step_bytes, bw)
    ideal_compute = _ratio(step_flops, peak_flops)
    busy = busy_per_step_s(itl_s, kernels)
    intensity = step_flops / step_bytes if step_bytes > 0 else None
    ridge = gpu.get("ridge_flops_per_byte")
    bound_by = None
    if intensity is not None and ridge:
        bound_by = "compute" if intensity >= ridge else "memory"
    mbu = _ratio(_ratio(step_bytes, itl_s), bw)
    return {
        "available": True,
        "model": dict(model),
        "gpu": dict(gpu),
        "batch_size": int(batch_size),
        "prompt_len": int(prompt_len),
        "new_tokens": int(new_tokens),
        "seq_len_first": first,
        "seq_len_last": last,
        "seq_len_mean": mean_len,
        "weight_bytes_per_step": weights,
        "kv_cache_bytes_first": kv_cache_bytes(model, first, batch_size),
        "kv_cache_bytes_last": kv_cache_bytes(model, last, batch_size),
        "kv_cache_bytes_mean": kv_mean,
        "bytes_per_step": step_bytes,
        "flops_per_token": flops_per_token(model, mean_len),
        "flops_per_step": step_flops,
        "arithmetic_intensity_flops_per_byte": intensity,
        "bound_by": bound_by,
        "itl_s": itl_s,
        "gpu_busy_s_per_step": busy,
        "ideal_step_s": ideal_mem,
        "ideal_compute_step_s": ideal_compute,
        "achieved_bandwidth_bytes_per_s": _ratio(step_bytes, itl_s),
        "achieved_flops": _ratio(step_flops, itl_s),
        "mbu": mbu,
        "mfu": _ratio(_ratio(step_flops, itl_s), peak_flops),
        "mbu_busy": _ratio(_ratio(step_bytes, busy), bw),
        "mfu_busy": _ratio(_ratio(step_flops, busy), peak_flops),
        "measured_dram_util_pct": (float(measured_dram_util_pct) if measured_dram_util_pct is not None
                                   and math.isfinite(float(measured_dram_util_pct)) else None),
        "reasons": list(gpu.get("reasons") or []),
    }


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}
