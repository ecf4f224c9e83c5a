"""Why decode is slow, in one word and one paragraph: host-overhead-bound, memory-bound or
compute-bound.

:func:`verdict` is a pure function of the roofline section (:func:`fastprof.analysis.roofline.roofline`),
an optional kernel breakdown summary (from a kernel trace: ``idle_share``, the share of each decode
step in which the GPU ran no kernel; ``kernels_per_token``; ``class_share``, each kernel class's
share of GPU busy time such as ``{"gemm": 0.55, "attention": 0.2}``; optionally
``busy_s_per_step``) and optional GPU performance counters over decode (``dram_bw_util_pct``,
``tensor_active_pct``, ``sm_active_pct``, in %). The first rule that holds decides:

===================  =========================================================  ===================
rule                 condition (the first that holds decides)                   verdict
===================  =========================================================  ===================
``gpu-idle``         kernel breakdown: the GPU is idle at least                 host-overhead-bound
                     ``IDLE_SHARE_HOST_BOUND`` (30%) of each step
``above-ridge``      roofline: the step's arithmetic intensity (FLOPs per       compute-bound
                     byte) is at or above the GPU's ridge point (peak FLOP/s
                     / peak bandwidth)
``mfu-high``         roofline: MFU (over GPU busy time when known, else over    compute-bound
                     the step) at least ``MFU_COMPUTE_BOUND`` (50%)
``gpu-busy``         roofline and kernel breakdown: below the ridge and the     memory-bound
                     GPU busy (idle below ``IDLE_SHARE_HOST_BOUND``)
``mbu-high``         roofline, no kernel breakdown: MBU over the step at        memory-bound
                     least ``MBU_HOST_SUSPECT`` (25%)
``mbu-low``          roofline, no kernel breakdown: MBU over the step below     host-overhead-bound
                     ``MBU_HOST_SUSPECT``: neither bandwidth nor compute is
                     near its peak (inferred)
``counters-dram``    no roofline: the DRAM bandwidth counter over decode at     memory-bound
                     least ``DRAM_UTIL_MEMORY_BOUND`` (50%)
``counters-tensor``  no roofline: the tensor-pipe counter over decode at        compute-bound
                     least ``TENSOR_ACTIVE_COMPUTE_BOUND`` (50%)
(none)               nothing above applies                                      undetermined
===================  =========================================================  ===================

A host-overhead-bound verdict is also called launch-bound when there are at least
``LAUNCH_BOUND_KERNELS_PER_TOKEN`` (100) kernels per token: the host spends the step launching them.
``inferred`` is true when the verdict rests on the absence of a kernel trace (``mbu-low``) or on
counters alone.
"""

from __future__ import annotations

from typing import Any, Mapping

#: Idle share of each step at or above which the host, not the GPU, sets the pace.
IDLE_SHARE_HOST_BOUND = 0.30
#: Kernels per token at or above which host-overhead is called launch-bound.
LAUNCH_BOUND_KERNELS_PER_TOKEN = 100
#: MFU at or above which a step is compute-bound.
MFU_COMPUTE_BOUND = 0.50
#: Without a kernel trace: MBU over the whole step below which the GPU is presumed to wait on the host.
MBU_HOST_SUSPECT = 0.25
#: Without a roofline: GPM DRAM bandwidth utilisation (%) at or above which decode is memory-bound.
DRAM_UTIL_MEMORY_BOUND = 50.0
#: Without a roofline: GPM tensor-pipe activity (%) at or above which decode is compute-bound.
TENSOR_ACTIVE_COMPUTE_BOUND = 50.0

#: The roofline's MBU and the GPU's DRAM counter (NVML GPM over decode) disagree when they differ by
#: more than ``DRAM_AGREE_REL`` of the MBU, more than ``DRAM_AGREE_POINTS`` percentage points and more
#: than the counters' own 95% confidence half-width: then the text says which to believe and why.
DRAM_AGREE_REL = 0.25
DRAM_AGREE_POINTS = 2.0
#: Whole GPM windows inside decode below which the counters cover too little of decode to overrule
#: the roofline (whose time is every decode step's).
DRAM_MIN_WINDOWS = 3

VERDICTS = ("host-overhead-bound", "memory-bound", "compute-bound", "undetermined")


def _num(d: Mapping[str, Any] | None, key: str) -> float | None:
    if not d:
        return None
    v = d.get(key)
    return None if v is None else float(v)


def _pct(x: float) -> str:
    if x >= 0.095 or x == 0:
        return f"{x:.0%}"
    return f"{x:.1%}" if x >= 0.0095 else f"{x:.2%}"


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"


def _bytes(b: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= k:
            return f"{b / k:.2f} {unit}"
    return f"{b:.0f} B"


def _dram_counters(roof: Mapping[str, Any], mbu: float | None, dram: float,
                   counters: Mapping[str, Any] | None, numbers: dict[str, Any]) -> str:
    """The measured-DRAM clause beside the MBU: the counters' figure, how many whole windows inside
    decode it rests on and, when it and the MBU disagree (``DRAM_AGREE_REL``, ``DRAM_AGREE_POINTS``,
    the counters' confidence interval), which to believe and why."""
    info = ((counters or {}).get("windows") or {}).get("dram_bw_util_pct")
    info = info if info and info.get("available") else None
    phase = (counters or {}).get("phase") or "decode"
    where = "decode" if phase == "decode" else "the iterations"
    text = f"; the DRAM counters read {dram:.0f}%"
    n = int(info["windows"]) if info and info.get("windows") is not None else None
    if n is not None:
        numbers["measured_dram_windows"] = n
        text += f" over {n} whole GPM window{'' if n == 1 else 's'} inside {where}"
    if mbu is None or mbu <= 0:
        return text
    mbu_pct = 100.0 * mbu
    ci = float(info["ci95_pct"]) if info and info.get("ci95_pct") is not None else 0.0
    tolerance = max(DRAM_AGREE_REL * mbu_pct, DRAM_AGREE_POINTS, ci)
    if abs(dram - mbu_pct) <= tolerance:
        return text
    numbers["dram_disagreement_points"] = dram - mbu_pct
    text += (f", {abs(dram - mbu_pct):.0f} points from the MBU, beyond their tolerance "
             f"(the larger of {DRAM_AGREE_REL:.0%} of the MBU, {DRAM_AGREE_POINTS:g} points"
             + (f" and the counters' ±{ci:.1f}" if ci else "") + ")")
    step = _num(roof, "bytes_per_step")
    model = (f"the roofline's {_bytes(step)} per step is a model of the least a step must read"
             if step else "the roofline's bytes are a model of the least a step must read")
    if info is None:
        numbers["dram_believe"] = "roofline"
        return text + (": believe the roofline: its time is the measured step time and its bytes what each step "
                       "must read, while the counters' figure does not say which windows it covers, and windows "
                       "that take in prefill or the time between iterations misstate decode")
    covered, total = info.get("covered_s"), info.get("phase_s")
    cover = f" ({covered:.2f} s of {total:.2f} s)" if covered is not None and total else ""
    if n is not None and n < DRAM_MIN_WINDOWS:
        numbers["dram_believe"] = "roofline"
        return text + (f": believe the roofline: its time is every decode step's, measured, while the counters cover "
                       f"only {n} window{'' if n == 1 else 's'}{cover} of {where}")
    numbers["dram_believe"] = "counters"
    ratio = dram / mbu_pct
    head = (f": believe the counters for the DRAM traffic: they measure every byte DRAM moved over {n} whole windows "
            f"inside {where}{cover}, while {model} (its time is measured)")
    if ratio > 1:
        return text + head + (f"; decode moves about {ratio:.1f}x those bytes (reads beyond the least: a static "
                              "cache's masked positions, activations, unfused intermediates), so the MBU understates "
                              "how close decode is to the bandwidth limit")
    return text + head + (f"; DRAM moves about {ratio:.2f}x those bytes (part of them served from the L2 cache, or the "
                          "model overcounts what a step reads), so the MBU overstates the load on DRAM")


def decide(roofline: Mapping[str, Any] | None = None, kernels: Mapping[str, Any] | None = None,
           counters: Mapping[str, Any] | None = None) -> tuple[str, str | None, bool]:
    """(verdict, rule, inferred) by the rules of this module's table."""
    roof = roofline if roofline and roofline.get("available", True) else None
    idle = _num(kernels, "idle_share")
    if idle is not None and idle >= IDLE_SHARE_HOST_BOUND:
        return "host-overhead-bound", "gpu-idle", False
    if roof is not None:
        intensity = _num(roof, "arithmetic_intensity_flops_per_byte")
        ridge = _num(roof.get("gpu"), "ridge_flops_per_byte")
        if intensity is not None and ridge is not None and intensity >= ridge:
            return "compute-bound", "above-ridge", False
        mfu = _num(roof, "mfu_busy") if _num(roof, "mfu_busy") is not None else _num(roof, "mfu")
        if mfu is not None and mfu >= MFU_COMPUTE_BOUND:
            return "compute-bound", "mfu-high", False
        mbu = _num(roof, "mbu")
        if idle is not None:
            return "memory-bound", "gpu-busy", False
        if mbu is not None:
            if mbu >= MBU_HOST_SUSPECT:
                return "memory-bound", "mbu-high", False
            return "host-overhead-bound", "mbu-low", True
    dram = _num(counters, "dram_bw_util_pct")
    tensor = _num(counters, "tensor_active_pct")
    if roof is None and dram is not None and dram >= DRAM_UTIL_MEMORY_BOUND:
        return "memory-bound", "counters-dram", True
    if roof is None and tensor is not None and tensor >= TENSOR_ACTIVE_COMPUTE_BOUND:
        return "compute-bound", "counters-tensor", True
    return "undetermined", None, False


def verdict(roofline: Mapping[str, Any] | None = None, kernels: Mapping[str, Any] | None = None,
            counters: Mapping[str, Any] | None = None, host: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``verdict`` section: ``verdict``, the ``rule`` that decided it, ``inferred``,
    ``launch_bound``, the supporting ``numbers`` and a one-paragraph ``text``. With a ``host``
    section (:func:`fastprof.analysis.host.section`), a host-overhead-bound verdict also says
    where the host's time goes (:func:`fastprof.analysis.host.summary_line`)."""
    from fastprof.analysis.host import summary_line

    name, rule, inferred = decide(roofline, kernels, counters)
    roof = roofline if roofline and roofline.get("available", True) else None
    numbers: dict[str, Any] = {}
    parts: list[str] = []

    idle = _num(kernels, "idle_share")
    kpt = _num(kernels, "kernels_per_token")
    launch_bound = None
    if name == "host-overhead-bound" and kpt is not None:
        launch_bound = kpt >= LAUNCH_BOUND_KERNELS_PER_TOKEN
    if idle is not None:
        numbers["idle_share"] = idle
        text = f"the GPU is idle {_pct(idle)} of each step"
        if kpt is not None:
            numbers["kernels_per_token"] = kpt
            text += f": {kpt:.0f} kernels per token"
            if launch_bound:
                text += ", launch-bound"
        parts.append(text)
    elif kpt is not None:
        numbers["kernels_per_token"] = kpt
        parts.append(f"{kpt:.0f} kernels per token")
    host_line = summary_line(dict(host)) if host and name == "host-overhead-bound" else None
    if host_line:
        api = (host or {}).get("api") or {}
        numbers["host_step_s"] = (host.get("step_s") or {}).get("mean")
        if api.get("available"):
            numbers["host_parts_s"] = dict(api.get("parts_s") or {})
        parts.append(host_line)
    shares = (kernels or {}).get("class_share") or {}
    top = sorted(((k, float(v)) for k, v in shares.items() if v is not None), key=lambda kv: -kv[1])[:3]
    if top:
        numbers["class_share"] = dict(top)
        parts.append("within GPU time " + ", ".join(f"{k} {_pct(v)}" for k, v in top))

    if roof is not None:
        mbu, mbu_busy = _num(roof, "mbu"), _num(roof, "mbu_busy")
        mfu, mfu_busy = _num(roof, "mfu"), _num(roof, "mfu_busy")
        dram = _num(roof, "measured_dram_util_pct")
        if mbu is not None:
            numbers["mbu"] = mbu
            text = f"{_pct(mbu)} of peak memory bandwidth"
            if mbu_busy is not None:
                numbers["mbu_busy"] = mbu_busy
                text += f" ({_pct(mbu_busy)} while kernels run)"
            if dram is not None:
                numbers["measured_dram_util_pct"] = dram
                text += _dram_counters(roof, mbu, dram, counters, numbers)
            else:
                # Sampled, but no figure without dilution: say why.
                missing = ((counters or {}).get("windows") or {}).get("dram_bw_util_pct") or {}
                if missing.get("available") is False and missing.get("reason"):
                    numbers["measured_dram_reason"] = missing["reason"]
                    text += f"; no DRAM counter figure: {missing['reason']}"
            parts.append(text)
        if mfu is not None:
            numbers["mfu"] = mfu
            text = f"{_pct(mfu)} of peak tensor FLOP/s"
            if mfu_busy is not None:
                numbers["mfu_busy"] = mfu_busy
                text += f" ({_pct(mfu_busy)} while kernels run)"
            parts.append(text)
        intensity = _num(roof, "arithmetic_intensity_flops_per_byte")
        ridge = _num(roof.get("gpu"), "ridge_flops_per_byte")
        if intensity is not None and ridge is not None:
            numbers["arithmetic_intensity_flops_per_byte"] = intensity
            numbers["ridge_flops_per_byte"] = ridge
            parts.append(f"{intensity:.1f} FLOPs per byte against a ridge point of {ridge:.0f}")
        ideal, itl = _num(roof, "ideal_step_s"), _num(roof, "itl_s")
        if ideal is not None:
            numbers["ideal_step_s"] = ideal
            text = f"at full bandwidth a step would take {_ms(ideal)}"
            if itl is not None:
                numbers["itl_s"] = itl
                text += f" against {_ms(itl)} measured"
            parts.append(text)
    else:
        for key, label in (("dram_bw_util_pct", "DRAM bandwidth"), ("tensor_active_pct", "tensor pipes"),
                           ("sm_active_pct", "SMs")):
            v = _num(counters, key)
            if v is not None:
                numbers[key] = v
                parts.append(f"{label} {v:.0f}% busy over decode (GPU counters)")

    if name == "undetermined":
        lead = "Undetermined: no roofline (model or GPU peaks unknown) and no kernel trace"
    else:
        lead = name[0].upper() + name[1:]
        if inferred and rule == "mbu-low":
            lead += " (inferred: neither bandwidth nor compute is near its peak; a kernel trace would confirm)"
        elif inferred:
            lead += " (from the GPU counters alone)"
    text = lead + (": " + "; ".join(parts) if parts else "") + "."
    return {"verdict": name, "rule": rule, "inferred": inferred, "launch_bound": launch_bound, "numbers": numbers,
            "text": text}
