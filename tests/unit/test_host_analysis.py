"""The host breakdown's pure functions (fastprof.analysis.host) on synthetic records: API
categories, nesting, the measured thread, the per-step decomposition by CUDA API and by place,
launch-to-kernel matching, graph launches and the one-line summary."""

from types import SimpleNamespace

import numpy as np
import pytest

from fastprof.analysis import host
from fastprof.capture.host_trace import LOOP_MARKS, HostSpans, ModuleInfo, iter_intervals
from fastprof.capture.kernel_trace import KernelTrace

US = 1000


def api_trace(rows, names):
    """rows: (name, start_ns, end_ns, thread, correlation)."""
    table = list(names)
    return SimpleNamespace(
        names=table,
        name_id=np.array([table.index(r[0]) for r in rows], dtype=np.uint32),
        start_ns=np.array([r[1] for r in rows], dtype=np.int64),
        end_ns=np.array([r[2] for r in rows], dtype=np.int64),
        thread=np.array([r[3] for r in rows], dtype=np.uint32),
        correlation=np.array([r[4] for r in rows], dtype=np.uint32),
        __len__=None,
    )


class Api(SimpleNamespace):
    def __len__(self):
        return int(self.start_ns.size)


def make_api(rows):
    names = sorted({r[0] for r in rows})
    ns = api_trace(rows, names)
    return Api(**{k: v for k, v in vars(ns).items() if k != "__len__"})


@pytest.mark.parametrize("name,part", [
    ("cudaLaunchKernel_v7000", "launch"), ("cudaLaunchKernelExC_v11060", "launch"), ("cuLaunchKernel", "launch"),
    ("cuLaunchKernelEx", "launch"), ("cudaGraphLaunch_v10000", "graph_launch"), ("cuGraphLaunch", "graph_launch"),
    ("cudaStreamSynchronize_v3020", "sync"), ("cudaDeviceSynchronize_v3020", "sync"),
    ("cudaEventSynchronize_v3020", "sync"), ("cuCtxSynchronize", "sync"), ("cudaMemcpy_v3020", "sync"),
    ("cuMemcpyDtoH_v2", "sync"), ("cudaMemcpyAsync_v3020", "copy"), ("cuMemcpyHtoDAsync_v2", "copy"),
    ("cudaMemsetAsync_v3020", "memset"), ("cudaGetDevice_v3020", "other_api"), ("cudaEventRecord_v3020", "other_api"),
])
def test_api_category(name, part):
    assert host.api_category(name) == part


def test_outermost_drops_nested_calls():
    s = np.array([0, 10, 100, 50, 60], dtype=np.int64)
    e = np.array([40, 20, 120, 80, 70], dtype=np.int64)
    kept = sorted(host.outermost(s, e).tolist())
    assert kept == [0, 2, 3]  # (10,20) sits in (0,40); (60,70) in (50,80)


def test_measured_thread_prefers_candidates_then_launches():
    names = ["cudaLaunchKernel_v7000", "cudaGetDevice_v3020"]
    thread = np.array([7, 7, 9, 9, 9], dtype=np.uint32)
    name_id = np.array([0, 0, 1, 1, 1], dtype=np.uint32)
    assert host.measured_thread(thread, names, name_id, ()) == 7  # most launches, not most calls
    assert host.measured_thread(thread, names, name_id, (123, 9)) == 9
    assert host.measured_thread(thread, names, name_id, (7 + (1 << 32),)) == 7  # truncated to 32 bits


def decode_iteration(t0=1_000_000, steps=4, step_ns=1_000 * US):
    """Token marks: prefill ends at t0 + step_ns, then `steps` decode steps of step_ns."""
    return t0, t0 + step_ns * np.arange(1, steps + 2, dtype=np.int64)


def test_api_parts_add_up_to_each_step():
    start, marks = decode_iteration()
    rows = []
    corr = 1
    for k in range(1, marks.size):  # decode step k: (marks[k-1], marks[k]]
        lo = int(marks[k - 1])
        for j in range(10):  # 10 launches of 7 us
            rows.append(("cudaLaunchKernel_v7000", lo + 100 * US + j * 20 * US, lo + 107 * US + j * 20 * US, 5, corr))
            corr += 1
        rows.append(("cudaStreamSynchronize_v3020", lo + 600 * US, lo + 900 * US, 5, corr))
        rows.append(("cuLaunchKernel", lo + 100 * US + 1 * US, lo + 100 * US + 3 * US, 5, 0))  # nested in a launch
        rows.append(("cudaLaunchKernel_v7000", lo + 50 * US, lo + 60 * US, 99, 0))  # another thread
        corr += 1
    api = make_api(rows)
    out = host.api_parts([(start, marks)], api, thread=5)
    assert out["step_ns"].tolist() == [1_000 * US] * 4
    assert np.allclose(out["ns"]["launch"], 70 * US)
    assert np.allclose(out["ns"]["sync"], 300 * US)
    assert np.allclose(out["calls"]["launch"], 10)
    total = sum(out["ns"][p] for p in host.API_PARTS)
    assert np.all(total <= out["step_ns"])


def test_section_parts_sum_to_the_step_and_summary_names_them():
    start, marks = decode_iteration(steps=5)
    rows, kernels, corr = [], [], 1
    for k in range(1, marks.size):
        lo = int(marks[k - 1])
        for j in range(4):
            a = lo + 100 * US + j * 50 * US
            rows.append(("cudaLaunchKernel_v7000", a, a + 10 * US, 5, corr))
            kernels.append(("kernel", f"k{j}", a + 30 * US, a + 40 * US, 0, 7, corr, 0))
            corr += 1
        rows.append(("cudaStreamSynchronize_v3020", lo + 500 * US, lo + 700 * US, 5, corr))
        corr += 1
    api = make_api(rows)
    kt = KernelTrace.from_records(kernels)
    sec = host.section([(start, marks)], api=api, kernels=kt, thread_candidates=(5,), itl_s_untraced=0.0009)
    a = sec["api"]
    assert a["available"] and a["thread"] == 5
    assert sum(a["parts_s"].values()) == pytest.approx(sec["step_s"]["mean"], rel=1e-9)
    assert a["parts_s"]["launch"] == pytest.approx(40e-6)
    assert a["parts_s"]["sync"] == pytest.approx(200e-6)
    assert a["parts_s"]["python_framework"] == pytest.approx(1e-3 - 240e-6)
    assert a["calls_per_step"]["launch"] == pytest.approx(4)
    assert a["launch_s"]["mean"] == pytest.approx(10e-6)
    assert a["matched"] == 20
    assert a["launch_to_kernel_s"]["p50"] == pytest.approx(30e-6)
    # each kernel starts after the previous one on its stream ended: the GPU waited for every launch
    assert a["gpu_waiting_share"] == pytest.approx(1.0)
    assert sec["added_s_per_step"] == pytest.approx(1e-4)
    line = host.summary_line(sec)
    assert "4 kernel launches (10.0 us each)" in line and "0.20 ms waiting for the GPU" in line
    assert "Python and framework" in line
    assert sec["modules"]["available"] is False and sec["loop"]["available"] is False


def test_gpu_ahead_of_host_is_not_waiting():
    """Launches queued while the stream is still busy: the kernel starts after the previous one ends,
    long after its launch returned; the GPU was not waiting for the host."""
    start, marks = decode_iteration(steps=1)
    lo = int(marks[0])
    rows = [("cudaLaunchKernel_v7000", lo + j * 10 * US, lo + j * 10 * US + 5 * US, 1, j + 1) for j in range(5)]
    kernels = [("kernel", "k", lo + 6 * US + j * 100 * US, lo + 6 * US + (j + 1) * 100 * US, 0, 7, j + 1, 0)
               for j in range(5)]
    st = host.launch_stats(make_api(rows), KernelTrace.from_records(kernels), thread=1)
    assert st["matched"] == 5
    assert st["gpu_waiting_share"] == pytest.approx(1 / 5)  # only the first found an idle stream


def test_graph_launch_counts_the_kernels_it_replaced():
    start, marks = decode_iteration(steps=2)
    rows, kernels = [], []
    for k in (1, 2):
        lo = int(marks[k - 1])
        rows.append(("cudaGraphLaunch_v10000", lo + 10 * US, lo + 30 * US, 3, 100 + k))
        kernels += [("kernel", "g", lo + 40 * US + j * US, lo + 40 * US + j * US + 500, 0, 7, 100 + k, 9)
                    for j in range(50)]
    sec = host.section([(start, marks)], api=make_api(rows), kernels=KernelTrace.from_records(kernels),
                       thread_candidates=(3,))
    a = sec["api"]
    assert a["calls_per_step"]["graph_launch"] == pytest.approx(1)
    assert a["kernels_per_graph_launch"] == pytest.approx(50)
    assert "each replacing about 50 kernel launches" in host.summary_line(sec)


def spans_for(iterations, layer_ns=(100 * US, 100 * US), slow_layer=None, extra=0):
    """Module marks of a root model with an embedding, two layers (attention and MLP inside each)
    and an LM head, plus the loop markers, in every decode step of the given iterations."""
    mods = [ModuleInfo("", "model", None, -1), ModuleInfo("model.embed_tokens", "embedding", None, 0),
            ModuleInfo("model.layers.0", "layer", 0, 0), ModuleInfo("model.layers.0.self_attn", "attention", 0, 2),
            ModuleInfo("model.layers.0.mlp", "mlp", 0, 2), ModuleInfo("model.layers.1", "layer", 1, 0),
            ModuleInfo("model.layers.1.self_attn", "attention", 1, 5), ModuleInfo("model.layers.1.mlp", "mlp", 1, 5),
            ModuleInfo("lm_head", "lm_head", None, 0)]
    t, c = [], []

    def mark(time, code):
        t.append(time)
        c.append(code)

    for start, marks in iterations:
        bounds = np.concatenate([[start], marks])
        for k in range(1, bounds.size):
            now = int(bounds[k - 1]) + 50 * US  # prepare: 50 us
            mark(now, 0)
            mark(now, 2), mark(now + 10 * US, 3)  # embedding 10 us
            now += 10 * US
            for li, base in ((0, 2), (1, 5)):
                dur = layer_ns[li] + (extra if li == slow_layer else 0)
                mark(now, 2 * base)
                half = layer_ns[li] // 2
                mark(now, 2 * (base + 1)), mark(now + half, 2 * (base + 1) + 1)  # attention: half the layer
                mark(now + half, 2 * (base + 2)), mark(now + dur - 5 * US, 2 * (base + 2) + 1)  # mlp: the rest
                mark(now + dur, 2 * base + 1)
                now += dur
            mark(now, 16), mark(now + 20 * US, 17)  # lm_head 20 us
            now += 20 * US + 5 * US
            mark(now, 1)  # forward exit (5 us of the root's own code)
            mark(now + 30 * US, LOOP_MARKS["processors_begin"])
            mark(now + 40 * US, LOOP_MARKS["processors_end"])
    return HostSpans(np.array(t, dtype=np.int64), np.array(c, dtype=np.int32), mods, 0)


def test_iter_intervals_match_enters_and_exits():
    spans = HostSpans(np.array([0, 1, 2, 3, 4, 5]), np.array([0, 2, 3, -1, 1, 3]),
                      [ModuleInfo("a", "model", None, -1), ModuleInfo("b", "other", None, 0)], 0)
    assert list(iter_intervals(spans)) == [(1, 1, 2), (0, 0, 4)]  # the stray exit of b is skipped


def test_module_and_loop_parts_add_up_to_the_step():
    its = [decode_iteration(steps=3), decode_iteration(t0=50_000_000, steps=3)]
    spans = spans_for(its)
    sec = host.section(its, spans=spans)
    m, loop = sec["modules"], sec["loop"]
    assert m["available"] and loop["available"]
    step = sec["step_s"]["mean"]
    assert sum(loop["parts_s"].values()) == pytest.approx(step, rel=1e-9)
    assert loop["parts_s"]["prepare"] == pytest.approx(50e-6)
    assert loop["parts_s"]["forward"] == pytest.approx(10e-6 + 200e-6 + 20e-6 + 5e-6)
    assert loop["parts_s"]["after_forward"] == pytest.approx(30e-6)
    assert loop["parts_s"]["processors"] == pytest.approx(10e-6)
    assert loop["outside_forward_s"] == pytest.approx(step - loop["parts_s"]["forward"])
    # self times by kind add up to the forward pass
    assert sum(m["self_s_by_kind"].values()) == pytest.approx(m["forward_s"], rel=1e-9)
    assert m["self_s_by_kind"]["attention"] == pytest.approx(100e-6)
    assert m["self_s_by_kind"]["mlp"] == pytest.approx(90e-6)
    assert m["self_s_by_kind"]["layer"] == pytest.approx(10e-6)
    assert m["layers"] == 2 and m["layer_s_each"] == pytest.approx(100e-6)
    assert "2 decoder layers at 0.10 ms each" in host.summary_line(sec)


def test_slow_module_is_the_largest_part():
    its = [decode_iteration(steps=3, step_ns=6_000 * US)]
    sec = host.section(its, spans=spans_for(its, slow_layer=1, extra=5_000 * US))
    rows = sorted(sec["modules"]["rows"], key=lambda r: -r["self_s_per_step"])
    assert rows[0]["name"] == "model.layers.1.mlp"


def test_no_decode_step_is_unavailable():
    sec = host.section([(0, np.array([10], dtype=np.int64))])
    assert sec["available"] is False and "decode step" in sec["reason"]


def test_host_path_section_summarises_iterations():
    rows = [{"steal_s": 0.0, "steal_share": 0.0, "cpu_mhz": 2000.0,
             "calibration": {"launch_s": 7e-6, "roundtrip_s": 14e-6, "python_loop_s": 1e-3}},
            {"steal_s": 0.02, "steal_share": 0.05, "cpu_mhz": 2000.0,
             "calibration": {"launch_s": 9.5e-6, "roundtrip_s": 20e-6, "python_loop_s": 1.2e-3}}]
    sec = host.host_path_section(rows)
    assert sec["summary"]["launch_s"]["max"] == pytest.approx(9.5e-6)
    assert sec["summary"]["steal_share"]["max"] == pytest.approx(0.05)
    line = host.host_path_line(sec)
    assert "launch 8.2 us (7.0-9.5)" in line and "steal" in line


def test_loop_markers_alone_split_a_compiled_step():
    """No module hooks (a compiled forward pass): the generate loop's own markers still split the step."""
    start, marks = decode_iteration(steps=3)
    t, c = [], []
    for k in range(1, marks.size):
        lo = int(marks[k - 1])
        for dt, code in ((40 * US, LOOP_MARKS["inputs_ready"]), (640 * US, LOOP_MARKS["forward_done"]),
                         (700 * US, LOOP_MARKS["processors_begin"]), (710 * US, LOOP_MARKS["processors_end"])):
            t.append(lo + dt)
            c.append(code)
    spans = HostSpans(np.array(t, dtype=np.int64), np.array(c, dtype=np.int32), [], 0)
    sec = host.section([(start, marks)], spans=spans, modules_reason="the forward pass is compiled")
    assert sec["modules"]["available"] is False and "compiled" in sec["modules"]["reason"]
    loop = sec["loop"]
    assert loop["available"]
    assert loop["parts_s"]["prepare"] == pytest.approx(40e-6)
    assert loop["parts_s"]["forward"] == pytest.approx(600e-6)
    assert loop["parts_s"]["after_forward"] == pytest.approx(60e-6)
    assert loop["parts_s"]["processors"] == pytest.approx(10e-6)
    assert loop["parts_s"]["sample_to_host"] == pytest.approx(290e-6)
    assert sum(loop["parts_s"].values()) == pytest.approx(sec["step_s"]["mean"])


def test_top_functions_rank_the_cuda_calls():
    start, marks = decode_iteration(steps=2)
    rows = []
    for k in (1, 2):
        lo = int(marks[k - 1])
        rows += [("cudaLaunchKernel_v7000", lo + j * 10 * US, lo + j * 10 * US + 5 * US, 1, 0) for j in range(20)]
        rows.append(("cudaStreamSynchronize_v3020", lo + 500 * US, lo + 800 * US, 1, 0))
    sec = host.section([(start, marks)], api=make_api(rows), thread_candidates=(1,), api_mode="selected")
    funcs = sec["api"]["functions"]
    assert sec["api"]["mode"] == "selected"
    assert [f["name"] for f in funcs] == ["cudaStreamSynchronize_v3020", "cudaLaunchKernel_v7000"]
    assert funcs[1]["calls_per_step"] == pytest.approx(20) and funcs[1]["s_per_call"] == pytest.approx(5e-6)
    assert funcs[0]["part"] == "sync" and funcs[0]["s_per_step"] == pytest.approx(300e-6)
