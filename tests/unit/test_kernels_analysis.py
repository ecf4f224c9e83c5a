"""Kernel classification (name by name) and the per-step breakdown."""

import numpy as np
import pytest

from fastprof.analysis import kernels as K
from fastprof.capture.kernel_trace import KernelTrace

NAMES = [
    # gemm
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel",
     "gemm"),
    ("ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_stages_64x4_tn", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x1_tn_align8>(Params)", "gemm"),
    ("nvjet_hsh_64x8_64x16_4x1_v_bz_splitK_TNN", "gemm"),
    ("void gemv2T_kernel_val<int, int, __nv_bfloat16, __nv_bfloat16, float, 128, 16, 4, 4, false>", "gemm"),
    ("sm80_xmma_gemm_f16f16_f16f32_f32_nn_n_tilesize96x64x32_stage3_warpsize2x2x1_tensor16x8x16_kernel", "gemm"),
    ("triton_tem_fused_mm_0", "gemm"),
    # attention
    ("void flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, cutlass::bfloat16_t>>",
     "attention"),
    ("flash_fwd_kernel", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80", "attention"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>(Flash_fwd_params)", "attention"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float>", "reduction"),
    ("paged_attention_v1_kernel<__nv_bfloat16, 128, 16, 128>", "attention"),
    # elementwise / norm / activation
    ("triton_poi_fused_add_mul_0", "elementwise"),
    ("triton_poi_fused__to_copy_cat_1", "elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::BinaryFunctor<c10::BFloat16>>", "elementwise"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda>", "copy"),
    ("void vllm::rms_norm_kernel<c10::BFloat16>(c10::BFloat16*, c10::BFloat16 const*, float, int, int)",
     "elementwise"),
    ("RMSNormKernel", "elementwise"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>", "elementwise"),
    ("void vllm::act_and_mul_kernel<c10::BFloat16, &vllm::silu_kernel>", "elementwise"),
    ("triton_per_fused_add_mean_mul_pow_rsqrt_2", "elementwise"),
    ("void at::native::index_elementwise_kernel<128, 4>", "elementwise"),
    ("void rotary_embedding_kernel<c10::BFloat16, true>", "elementwise"),
    # reduction / sampling
    ("triton_red_fused_argmax_3", "reduction"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>>>",
     "reduction"),
    ("void at::native::reduce_kernel<128, 4, at::native::ReduceOp<float, at::native::func_wrapper_t<float>>>",
     "reduction"),
    ("void at::native::sampleMultinomialOnce<float, float>", "reduction"),
    ("void at_cuda_detail::cub::DeviceRadixSortOnesweepKernel<Policy900, true>", "reduction"),
    ("void at::native::bitonicSortKVInPlace<2, -1, 16, 16, float, long>", "reduction"),
    ("triton_per_fused_max_sum_4", "reduction"),
    # copy / memset
    ("Memcpy DtoD", "copy"),
    ("Memcpy HtoD", "copy"),
    ("Memset", "copy"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<c10::BFloat16, unsigned int, 3, 128, 1>", "copy"),
    # communication
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "communication"),
    ("ncclKernel_AllGather_RING_LL_Sum_int8_t", "communication"),
    ("void vllm::cross_device_reduce_1stage<__nv_bfloat16, 2>", "communication"),
    # other
    ("fastprof_spin", "other"),
    ("void (anonymous namespace)::elementwise_kernel_with_index<int, at::native::arange_cuda_out>", "elementwise"),
    ("some_custom_kernel_xyz", "other"),
]


@pytest.mark.parametrize("name,cls", NAMES, ids=[n[:40] for n, _ in NAMES])
def test_classification_name_by_name(name, cls):
    assert K.classify(name) == cls


def test_every_class_is_exercised():
    assert {cls for _, cls in NAMES} == set(K.CLASSES)


def test_user_rules_win_and_bad_class_is_refused(monkeypatch):
    monkeypatch.setattr(K, "RULES", list(K.RULES))
    K.classify.cache_clear()
    assert K.classify("my_fused_moe_kernel") == "other"
    K.add_rule("gemm", r"fused_moe")
    assert K.classify("my_fused_moe_kernel") == "gemm"
    with pytest.raises(ValueError, match="unknown kernel class 'gemmm'"):
        K.add_rule("gemmm", "x")
    monkeypatch.undo()
    K.classify.cache_clear()
    assert K.classify("my_fused_moe_kernel") == "other"


def test_union_merges_overlaps_and_clips():
    s = np.array([0, 5, 20, 22, 40])
    e = np.array([10, 12, 25, 23, 50])
    assert K.union_ns(s, e) == 12 + 5 + 10
    assert K.union_ns(s, e, 6, 45) == 6 + 5 + 5
    assert K.union_ns([], []) == 0


def test_union_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 1000, 200)
    e = s + rng.integers(1, 60, 200)
    cover = np.zeros(1100, bool)
    for a, b in zip(s, e):
        cover[a:b] = True
    assert K.union_ns(s, e) == int(cover.sum())
    assert K.union_ns(s, e, 100, 700) == int(cover[100:700].sum())


def _trace():
    return KernelTrace.from_records([
        ("kernel", "ampere_bf16_s16816gemm_bf16_128x64", 0, 400),       # prefill
        ("kernel", "flash_fwd_kernel", 400, 600),
        ("kernel", "ampere_bf16_s16816gemm_bf16_128x64", 1000, 1300),   # step 1
        ("kernel", "triton_poi_fused_add_mul_0", 1250, 1400),            # overlaps the gemm
        ("memcpy", "Memcpy DtoD", 1500, 1600),
        ("kernel", "ampere_bf16_s16816gemm_bf16_128x64", 2000, 2300),   # step 2
        ("kernel", "triton_red_fused_argmax_3", 2900, 3100),             # crosses into step 3
    ])


def test_step_breakdown_busy_idle_classes():
    br = K.step_breakdown(_trace(), np.array([0, 1000, 2000, 3000, 4000]))
    assert list(br.busy_ns) == [600, 500, 400, 100]
    assert list(br.idle_ns) == [400, 500, 600, 900]
    assert list(br.kernels) == [2, 2, 2, 0]
    assert list(br.by_class_ns["gemm"]) == [400, 300, 300, 0]
    assert list(br.by_class_ns["elementwise"]) == [0, 150, 0, 0]
    assert list(br.by_class_ns["copy"]) == [0, 100, 0, 0]
    assert list(br.by_class_ns["reduction"]) == [0, 0, 100, 100]
    assert np.all(br.busy_ns <= br.step_ns)
    assert br.idle_share[1] == pytest.approx(0.5)


def test_step_breakdown_refuses_bad_boundaries():
    with pytest.raises(ValueError, match="at least two"):
        K.step_breakdown(_trace(), np.array([0]))
    with pytest.raises(ValueError, match="must not decrease"):
        K.step_breakdown(_trace(), np.array([0, 10, 5]))


def test_top_kernels_and_summary():
    top = K.top_kernels(_trace(), 1000, 4000)
    assert top[0]["name"] == "ampere_bf16_s16816gemm_bf16_128x64" and top[0]["count"] == 2
    assert top[0]["total_ns"] == 600 and top[0]["mean_ns"] == 300
    assert top[0]["share"] == pytest.approx(600 / 1050)
    assert {t["class"] for t in top} == {"gemm", "elementwise", "copy", "reduction"}
    s = K.summarize(_trace(), np.array([0, 1000, 2000, 3000, 4000]))
    assert s["prefill_steps"] == 1 and s["steps"] == 4
    assert s["decode"]["kernels_per_token"] == 2.0
    assert s["decode"]["busy_ns_median"] == 400
    assert s["top_prefill"][0]["name"] == "ampere_bf16_s16816gemm_bf16_128x64"
    assert s["top_prefill"][0]["total_ns"] == 400
    assert s["decode"]["class_ns"]["gemm"] == 600
    assert sum(s["decode"]["class_share"].values()) == pytest.approx(1.0)


def test_breakdown_of_a_large_trace_is_fast():
    import time

    rng = np.random.default_rng(1)
    n_steps, per_step = 128, 700
    steps = np.arange(n_steps + 1, dtype=np.int64) * 1_000_000
    starts = np.sort(rng.integers(0, steps[-1], n_steps * per_step))
    names = ["ampere_bf16_s16816gemm", "flash_fwd_kernel", "triton_poi_fused_0", "Memcpy DtoD"]
    recs = [("kernel", names[i % 4], int(s), int(s) + 900) for i, s in enumerate(starts)]
    trace = KernelTrace.from_records(recs)
    t0 = time.perf_counter()
    K.summarize(trace, steps)
    assert time.perf_counter() - t0 < 5.0


def test_section_over_two_iterations():
    trace = _trace()
    # two iterations: the same records, the second shifted by 10 us
    shifted = KernelTrace.from_records(
        [(("kernel", "memcpy", "memset")[k], trace.names[n], int(s), int(e)) for k, n, s, e in
         zip(trace.kind, trace.name_id, trace.start_ns, trace.end_ns)]
        + [(("kernel", "memcpy", "memset")[k], trace.names[n], int(s) + 10_000, int(e) + 10_000) for k, n, s, e in
           zip(trace.kind, trace.name_id, trace.start_ns, trace.end_ns)],
        timestamp_method="callback")
    marks = np.array([1000, 2000, 3000, 4000])  # after the start; the first is the first token
    sec = K.section(shifted, [(0, marks), (10_000, marks)], itl_s_traced=2e-6, itl_s_untraced=1e-6)
    assert sec["available"] and sec["iterations"] == 2 and sec["decode_steps"] == 6
    assert sec["kernels_per_token"] == 2.0
    assert sec["busy_s_per_step"] == pytest.approx(400e-9)
    assert sec["idle_share"] == pytest.approx(0.6)
    assert sec["trace_overhead_ratio"] == pytest.approx(2.0)
    assert sec["top_prefill"][0]["count"] == 2 and sec["top_prefill"][0]["total_ns"] == 800
    assert sec["class_s"]["gemm"] == pytest.approx(600e-9)
    assert sec["per_step"]["busy_s"] == pytest.approx([600e-9, 500e-9, 400e-9, 100e-9])


def test_section_without_trace_or_iterations():
    un = KernelTrace.unavailable("another CUPTI subscriber")
    sec = K.section(un, [(0, np.array([10]))])
    assert not sec["available"] and sec["reason"] == "another CUPTI subscriber"
    sec = K.section(_trace(), [])
    assert not sec["available"] and "no traced iteration" in sec["reason"]


def test_step_boundaries_anchor_on_the_host_start():
    b = K.step_boundaries(1_000_000, np.array([500, 900, 1400]))
    assert list(b) == [1_000_000, 1_000_500, 1_000_900, 1_001_400]


def test_timeline_keeps_the_last_traced_iteration():
    trace = _trace()
    shifted = KernelTrace.from_records(
        [(("kernel", "memcpy", "memset")[k], trace.names[n], int(s) + off, int(e) + off)
         for off in (0, 10_000) for k, n, s, e in zip(trace.kind, trace.name_id, trace.start_ns, trace.end_ns)],
        timestamp_method="callback")
    marks = np.array([1000, 2000, 3000, 4000])
    sec = K.section(shifted, [(0, marks), (10_000, marks)])
    tl = sec["timeline"]
    # the second iteration only, every record of it, from its start
    assert tl["origin_ns"] == 10_000 and len(tl["start_ns"]) == len(trace) and tl["truncated"] == 0
    assert sorted(tl["start_ns"]) == sorted(int(s) for s in trace.start_ns)
    assert sorted(tl["dur_ns"]) == sorted(int(d) for d in trace.end_ns - trace.start_ns)
    assert {tl["names"][i] for i in tl["name"]} == set(trace.names)
    assert tl["classes"][tl["class"][tl["start_ns"].index(min(tl["start_ns"]))]] in K.CLASSES
    capped = K.timeline(shifted, 10_000, 14_000, max_records=2)
    assert len(capped["start_ns"]) == 2 and capped["truncated"] == len(trace) - 2
