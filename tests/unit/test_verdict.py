"""The verdict: one rule per branch, thresholds at their edges, the supporting paragraph."""

import pytest

from fastprof.analysis import verdict as V
from fastprof.analysis.verdict import (
    DRAM_UTIL_MEMORY_BOUND,
    IDLE_SHARE_HOST_BOUND,
    LAUNCH_BOUND_KERNELS_PER_TOKEN,
    MBU_HOST_SUSPECT,
    MFU_COMPUTE_BOUND,
    TENSOR_ACTIVE_COMPUTE_BOUND,
    verdict,
)


def roof(mbu=0.09, mfu=0.01, intensity=1.0, ridge=300.0, ideal=0.75e-3, itl=8.3e-3, mbu_busy=None, mfu_busy=None,
         dram=None):
    return {"available": True, "mbu": mbu, "mfu": mfu, "mbu_busy": mbu_busy, "mfu_busy": mfu_busy,
            "arithmetic_intensity_flops_per_byte": intensity, "gpu": {"ridge_flops_per_byte": ridge},
            "ideal_step_s": ideal, "itl_s": itl, "measured_dram_util_pct": dram}


KERNELS = {"idle_share": 0.6, "kernels_per_token": 700, "class_share": {"gemm": 0.55, "attention": 0.2,
                                                                         "elementwise": 0.15, "other": 0.1}}


def test_gpu_idle_is_host_overhead_bound_and_launch_bound():
    v = verdict(roof(mbu_busy=0.22), KERNELS, {"dram_bw_util_pct": 11})
    assert v["verdict"] == "host-overhead-bound" and v["rule"] == "gpu-idle" and not v["inferred"]
    assert v["launch_bound"] is True
    t = v["text"]
    assert t.startswith("Host-overhead-bound: the GPU is idle 60% of each step: 700 kernels per token, launch-bound")
    assert "within GPU time gemm 55%, attention 20%, elementwise 15%" in t and "other" not in t
    assert "9.0% of peak memory bandwidth (22% while kernels run)" in t
    assert "at full bandwidth a step would take 0.75 ms against 8.30 ms measured" in t
    assert v["numbers"]["idle_share"] == 0.6 and v["numbers"]["kernels_per_token"] == 700


def test_idle_threshold_edge_and_few_kernels():
    at = verdict(None, {"idle_share": IDLE_SHARE_HOST_BOUND, "kernels_per_token": LAUNCH_BOUND_KERNELS_PER_TOKEN - 1})
    assert at["verdict"] == "host-overhead-bound" and at["launch_bound"] is False
    assert "launch-bound" not in at["text"]
    below = verdict(None, {"idle_share": IDLE_SHARE_HOST_BOUND - 0.01})
    assert below["verdict"] == "undetermined" and below["rule"] is None


def test_above_the_ridge_is_compute_bound():
    v = verdict(roof(intensity=400.0, ridge=300.0, mfu=0.3))
    assert v["verdict"] == "compute-bound" and v["rule"] == "above-ridge"
    assert "400.0 FLOPs per byte against a ridge point of 300" in v["text"]


def test_high_mfu_is_compute_bound():
    assert verdict(roof(mfu=MFU_COMPUTE_BOUND))["rule"] == "mfu-high"
    # Against busy time when a kernel trace gives it.
    v = verdict(roof(mfu=0.3, mfu_busy=MFU_COMPUTE_BOUND + 0.01), {"idle_share": 0.1})
    assert v["verdict"] == "compute-bound" and v["rule"] == "mfu-high"
    assert verdict(roof(mfu=0.6, mfu_busy=0.4), {"idle_share": 0.1})["verdict"] == "memory-bound"


def test_busy_gpu_below_the_ridge_is_memory_bound():
    v = verdict(roof(mbu=0.2, mbu_busy=0.22), {"idle_share": 0.1, "kernels_per_token": 30,
                                                "class_share": {"gemm": 0.8}})
    assert v["verdict"] == "memory-bound" and v["rule"] == "gpu-busy" and v["launch_bound"] is None
    assert "the GPU is idle 10% of each step: 30 kernels per token;" in v["text"]


def test_without_a_trace_mbu_decides():
    high = verdict(roof(mbu=MBU_HOST_SUSPECT, dram=70.0))
    assert high["verdict"] == "memory-bound" and high["rule"] == "mbu-high" and not high["inferred"]
    assert "25% of peak memory bandwidth; the DRAM counters read 70%" in high["text"]
    low = verdict(roof(mbu=MBU_HOST_SUSPECT - 0.01))
    assert low["verdict"] == "host-overhead-bound" and low["rule"] == "mbu-low" and low["inferred"]
    assert "a kernel trace would confirm" in low["text"]


def test_counters_alone():
    d = verdict(None, None, {"dram_bw_util_pct": DRAM_UTIL_MEMORY_BOUND, "tensor_active_pct": 5})
    assert d["verdict"] == "memory-bound" and d["rule"] == "counters-dram" and d["inferred"]
    assert "DRAM bandwidth 50% busy over decode (GPU counters)" in d["text"]
    t = verdict(None, None, {"dram_bw_util_pct": 20, "tensor_active_pct": TENSOR_ACTIVE_COMPUTE_BOUND})
    assert t["verdict"] == "compute-bound" and t["rule"] == "counters-tensor"
    n = verdict(None, None, {"dram_bw_util_pct": 20, "tensor_active_pct": 20})
    assert n["verdict"] == "undetermined"


def test_nothing_known_is_undetermined():
    v = verdict()
    assert v == {"verdict": "undetermined", "rule": None, "inferred": False, "launch_bound": None, "numbers": {},
                 "text": "Undetermined: no roofline (model or GPU peaks unknown) and no kernel trace."}
    assert verdict({"available": False, "reason": "x"})["verdict"] == "undetermined"


def test_every_verdict_is_known():
    for r, k, c in [(roof(), KERNELS, None), (roof(), None, None), (roof(intensity=1e3), None, None),
                    (roof(mbu=0.8), None, None), (None, None, None)]:
        assert verdict(r, k, c)["verdict"] in V.VERDICTS


@pytest.mark.parametrize("value, text", [(0.6, "60%"), (0.09, "9.0%"), (0.0, "0%"), (0.0003, "0.03%")])
def test_percent_format(value, text):
    assert V._pct(value) == text


# ---- the roofline's MBU beside the DRAM counters --------------------------------------------------
def counters(dram, windows=12, covered=1.2, phase_s=3.6, ci=0.5):
    info = {"available": True, "pct": dram, "windows": windows, "covered_s": covered, "phase_s": phase_s,
            "window_s": 0.1, "ci95_pct": ci, "device": 0, "reason": None}
    return {"dram_bw_util_pct": dram, "phase": "decode", "windows": {"dram_bw_util_pct": info}}


def test_counters_that_agree_with_the_roofline_are_printed_without_comment():
    # 19% MBU against 20%: within 25% of the MBU.
    v = verdict(roof(mbu=0.19, dram=20.0), None, counters(20.0))
    t = v["text"]
    assert "19% of peak memory bandwidth; the DRAM counters read 20% over 12 whole GPM windows inside decode" in t
    assert "believe" not in t and "dram_believe" not in v["numbers"]
    assert v["numbers"]["measured_dram_windows"] == 12
    # At the edge: 25% of the MBU (here above the 2-point floor) still agrees.
    edge = verdict(roof(mbu=0.40, dram=40.0 * (1 + V.DRAM_AGREE_REL)), None, counters(50.0, ci=None))
    assert "believe" not in edge["text"]
    # Small figures: within the 2-point floor even when far apart relatively.
    small = verdict(roof(mbu=0.02, dram=3.5), None, counters(3.5, ci=None))
    assert "believe" not in small["text"]


def test_disagreement_says_which_to_believe_and_why():
    # The old, diluted reading of compiled decode: 3% against 19%. With whole windows inside decode
    # the counters measure what DRAM moved: believe them, and say what the gap means.
    low = verdict(roof(mbu=0.19, dram=3.0) | {"bytes_per_step": 2.47e9}, None, counters(3.0, ci=0.2))
    t = low["text"]
    assert "the DRAM counters read 3% over 12 whole GPM windows inside decode (1.20 s of 3.60 s)" not in t
    assert "the DRAM counters read 3% over 12 whole GPM windows inside decode, 16 points from the MBU" in t
    assert "beyond their tolerance (the larger of 25% of the MBU, 2 points and the counters' ±0.2)" in t
    assert "believe the counters for the DRAM traffic" in t and "12 whole windows inside decode (1.20 s of 3.60 s)" in t
    assert "the roofline's 2.47 GB per step is a model of the least a step must read (its time is measured)" in t
    assert "MBU overstates the load on DRAM" in t
    assert low["numbers"]["dram_believe"] == "counters"
    assert low["numbers"]["dram_disagreement_points"] == pytest.approx(-16.0)
    high = verdict(roof(mbu=0.19, dram=40.0), None, counters(40.0))
    assert "decode moves about 2.1x those bytes" in high["text"] and "MBU understates" in high["text"]
    # Too few windows to overrule the roofline, whose time is every step's.
    few = verdict(roof(mbu=0.19, dram=8.0), None, counters(8.0, windows=2, covered=0.2, ci=None))
    assert few["numbers"]["dram_believe"] == "roofline"
    assert ("believe the roofline: its time is every decode step's, measured, while the counters cover only "
            "2 windows (0.20 s of 3.60 s) of decode") in few["text"]
    # A figure of unknown provenance (no windows): the roofline, and why.
    bare = verdict(roof(mbu=0.19, dram=3.0), None, {"dram_bw_util_pct": 3.0})
    assert bare["numbers"]["dram_believe"] == "roofline"
    assert "windows that take in prefill or the time between iterations misstate decode" in bare["text"]


def test_the_counters_confidence_interval_widens_the_tolerance():
    wide = verdict(roof(mbu=0.19, dram=30.0), None, counters(30.0, ci=12.0))
    assert "believe" not in wide["text"]
    narrow = verdict(roof(mbu=0.19, dram=30.0), None, counters(30.0, ci=1.0))
    assert "believe the counters" in narrow["text"]


def test_no_undiluted_counter_figure_says_why():
    reason = ("decode phases of 180 ms hold no whole 100 ms GPM window, and a window that takes in time outside "
              "them would dilute the figure; run longer generations (--max-new-tokens) to measure it")
    c = {"phase": "decode", "windows": {"dram_bw_util_pct": {"available": False, "pct": None, "windows": 0,
                                                              "reason": reason}}}
    v = verdict(roof(mbu=0.19), None, c)
    assert "19% of peak memory bandwidth; no DRAM counter figure: decode phases of 180 ms" in v["text"]
    assert v["numbers"]["measured_dram_reason"] == reason and "measured_dram_util_pct" not in v["numbers"]
