"""The native CUPTI kernel tracer against the fake CUPTI library (tests/fakes/fake_cupti.c)."""

import ctypes
import gc
import os
import time

import numpy as np
import pytest

from fastprof.analysis import kernels
from fastprof.capture.kernel_trace import ApiTrace, KernelTrace, KernelTracer, cupti_candidates, demangle
from kernel_trace_fixtures import (  # noqa: F401  (fixtures)
    KERNEL,
    MEMCPY,
    MEMSET,
    fake_cupti,
    fake_cupti_no_ts,
    fake_cupti_no_ts_path,
    fake_cupti_path,
)

GEMM = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel"
FILL = ("_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_11FillFunctorIfEENS_6detail5ArrayIPcLi1EEEEEviT0_T1_")


@pytest.fixture(autouse=True)
def _collect():
    yield
    gc.collect()  # one tracer per process may be live: drop the previous test's


def script_decode(fake, t0=1_000_000):
    fake.add(KERNEL, GEMM, t0, t0 + 5000, device=0, stream=7, correlation=11)
    fake.add(KERNEL, "triton_poi_fused_add_mul_0", t0 + 6000, t0 + 7000, correlation=12, graph_id=3)
    fake.add(MEMCPY, None, t0 + 8000, t0 + 9000, correlation=13, nbytes=4096, copy_kind=8)
    fake.add(MEMSET, None, t0 + 9500, t0 + 9700, correlation=14, nbytes=128)


def test_records_of_every_kind_arrive_with_their_fields(fake_cupti):
    script_decode(fake_cupti)
    tracer = KernelTracer()
    assert tracer.start(), tracer.reason
    assert fake_cupti.subscribed() == 1 and fake_cupti.enabled(KERNEL) == 1
    trace = tracer.stop()
    assert trace.available and trace.timestamp_method == "callback" and trace.dropped == 0
    assert trace.library_path == str(fake_cupti.path)
    assert list(trace.kind) == [0, 0, 1, 2]
    assert list(trace.name) == [GEMM, "triton_poi_fused_add_mul_0", "Memcpy DtoD", "Memset"]
    assert list(trace.start_ns) == [1_000_000, 1_006_000, 1_008_000, 1_009_500]
    assert list(trace.duration_ns) == [5000, 1000, 1000, 200]
    assert list(trace.correlation) == [11, 12, 13, 14]
    assert list(trace.graph_id) == [0, 3, 0, 0]
    assert list(trace.stream) == [7, 7, 7, 7]
    assert list(trace.bytes) == [0, 0, 4096, 128]
    # stop released CUPTI: the subscriber and the activity kinds
    assert fake_cupti.subscribed() == 0 and fake_cupti.enabled(KERNEL) == 0
    assert fake_cupti.has_ts_callback() == 1


def test_context_manager_and_demangling(fake_cupti):
    fake_cupti.add(KERNEL, FILL, 10, 20)
    fake_cupti.add(KERNEL, GEMM, 30, 40)
    with KernelTracer() as tracer:
        pass
    assert len(tracer.trace) == 2
    # libstdc++ writes "> >" where libc++ (the manylinux wheel's runtime) writes ">>".
    assert [n.replace("> >", ">>") for n in tracer.trace.demangled()] == [
        "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, "
        "at::detail::Array<char*, 1>>(int, at::native::FillFunctor<float>, at::detail::Array<char*, 1>)", GEMM]
    assert demangle("triton_poi_fused_add_mul_0") == "triton_poi_fused_add_mul_0"


def test_offset_clock_when_no_timestamp_callback(fake_cupti_no_ts):
    fake_cupti_no_ts.set_clock_offset(-123_456_789_000)
    t0 = time.perf_counter_ns()
    fake_cupti_no_ts.add(KERNEL, "k", t0, t0 + 1000)
    tracer = KernelTracer()
    assert tracer.start(), tracer.reason
    trace = tracer.stop()
    assert trace.timestamp_method == "offset"
    # the offset is measured from bracketing reads: good to a few microseconds
    assert abs(int(trace.start_ns[0]) - t0) < 50_000
    assert int(trace.duration_ns[0]) == 1000


def test_timestamp_callback_can_be_declined(fake_cupti):
    tracer = KernelTracer(timestamp_callback=False)
    assert tracer.start()
    assert tracer.stop().timestamp_method == "offset"


def test_another_subscriber_makes_it_unavailable_not_an_error(fake_cupti):
    fake_cupti.other_subscriber(1)
    tracer = KernelTracer()
    assert tracer.start() is False
    assert "another CUPTI subscriber" in tracer.reason
    trace = tracer.stop()
    assert not trace.available and "subscriber" in trace.reason and len(trace) == 0
    assert fake_cupti.enabled(KERNEL) == 0


def test_another_subscriber_from_the_environment(fake_cupti, monkeypatch):
    monkeypatch.setenv("FAKE_CUPTI_OTHER_SUBSCRIBER", "1")
    tracer = KernelTracer()
    assert not tracer.start() and "subscriber" in tracer.reason


def test_enable_failure_is_reported_and_rolled_back(fake_cupti):
    fake_cupti.fail("cuptiActivityEnable", 35)
    tracer = KernelTracer()
    assert not tracer.start()
    assert "cuptiActivityEnable" in tracer.reason and "INSUFFICIENT_PRIVILEGES" in tracer.reason
    assert "administrators" in tracer.reason
    assert fake_cupti.subscribed() == 0  # the subscription taken first was given back


def test_missing_library_is_unavailable_with_the_paths_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTPROF_CUPTI_LIBRARY", str(tmp_path / "nope.so"))
    tracer = KernelTracer()
    assert not tracer.available and "no CUPTI library" in tracer.reason and "nope.so" in tracer.reason
    assert not tracer.start()
    assert not tracer.stop().available


def test_scripted_drops_are_counted(fake_cupti):
    fake_cupti.set_dropped(5)
    script_decode(fake_cupti)
    with KernelTracer() as tracer:
        pass
    assert tracer.trace.dropped == 5 and len(tracer.trace) == 4


def test_pool_exhaustion_drops_and_counts_records(fake_cupti):
    # 1 KiB buffers hold 4 kernel records (216 bytes each); two buffers; hold them all at once
    for i in range(20):
        fake_cupti.add(KERNEL, f"k{i}", 1000 * i, 1000 * i + 500)
    fake_cupti.hold_buffers(1)
    tracer = KernelTracer(buffer_bytes=1024, buffer_count=2)
    assert tracer.start()
    trace = tracer.stop()
    assert len(trace) == 8
    assert trace.dropped == 12 + 1  # CUPTI's count of the 12 unplaced records + the refused request
    assert len(trace) + 12 == 20


def test_pool_buffers_are_reused(fake_cupti):
    tracer = KernelTracer(buffer_bytes=1024, buffer_count=1)
    assert tracer.start()
    for rnd in range(5):
        for i in range(4):
            fake_cupti.add(KERNEL, "k", 10_000 * rnd + i, 10_000 * rnd + i + 1)
        tracer.flush()
    trace = tracer.stop()
    assert len(trace) == 20 and trace.dropped == 0


def test_record_capacity_is_bounded(fake_cupti):
    for i in range(10):
        fake_cupti.add(KERNEL, "k", i * 10, i * 10 + 5)
    tracer = KernelTracer(max_records=6)
    tracer.start()
    trace = tracer.stop()
    assert len(trace) == 6 and trace.dropped == 4


def test_second_tracer_while_one_runs_is_unavailable(fake_cupti):
    first = KernelTracer()
    assert first.start()
    second = KernelTracer()
    assert not second.start() and "running" in second.reason
    first.stop()


def test_restart_after_stop(fake_cupti):
    tracer = KernelTracer()
    for rnd in range(3):
        fake_cupti.add(KERNEL, "k", rnd, rnd + 10)
        assert tracer.start(), tracer.reason
        assert len(tracer.stop()) == 1
    assert fake_cupti.calls("cuptiSubscribe") == 3 and fake_cupti.calls("cuptiUnsubscribe") == 3


def test_candidates_search_wheel_and_toolkit_paths(tmp_path, monkeypatch):
    lib = tmp_path / "nvidia" / "cuda_cupti" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcupti.so.12").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    cands = cupti_candidates()
    assert str(lib / "libcupti.so.12") in cands
    assert cands[-3:] == ["libcupti.so", "libcupti.so.13", "libcupti.so.12"]
    assert cands.index(str(lib / "libcupti.so.12")) < cands.index("libcupti.so")


def test_from_records_and_select():
    t = KernelTrace.from_records([("kernel", "a", 0, 10), ("memcpy", "Memcpy HtoD", 5, 8, 0, 3), ("kernel", "a", 20, 25)])
    assert list(t.name_id) == [0, 1, 0] and t.names == ["a", "Memcpy HtoD"] and list(t.stream) == [0, 3, 0]
    sub = t.select(t.kind == 0)
    assert len(sub) == 2 and list(sub.end_ns) == [10, 25]
    assert np.array_equal(t.duration_ns, [10, 3, 5])


# ---- CUDA runtime and driver API records (api=True) --------------------------------------------

DRIVER, RUNTIME = 1, 2  # CUpti_CallbackDomain
DRIVER_KIND, RUNTIME_KIND = 4, 5  # CUPTI activity kinds


def add_api(fake, domain, cbid, start, end, thread=77, correlation=0):
    fake.lib.fake_cupti_add_api.argtypes = [ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint64,
                                            ctypes.c_uint32, ctypes.c_uint32]
    fake.lib.fake_cupti_add_api(domain, cbid, start, end, thread, correlation)


def set_callback_name(fake, domain, cbid, name):
    fake.lib.fake_cupti_set_callback_name.argtypes = [ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p]
    fake.lib.fake_cupti_set_callback_name(domain, cbid, name.encode() if name else None)


def script_launches(fake, t0=1_000_000):
    """A decode step's host calls and the kernels they launched (correlation ids tie them)."""
    add_api(fake, RUNTIME, 211, t0, t0 + 3000, thread=77, correlation=11)       # cudaLaunchKernel
    add_api(fake, DRIVER, 307, t0 + 500, t0 + 2500, thread=77, correlation=11)  # cuLaunchKernel inside it
    add_api(fake, RUNTIME, 311, t0 + 3500, t0 + 6000, thread=78, correlation=12)  # cudaGraphLaunch
    add_api(fake, RUNTIME, 131, t0 + 6500, t0 + 20_000, thread=77)              # cudaStreamSynchronize
    fake.add(KERNEL, GEMM, t0 + 4000, t0 + 9000, correlation=11)
    fake.add(KERNEL, "triton_poi_fused_add_mul_0", t0 + 9500, t0 + 12_000, correlation=12, graph_id=3)


def test_api_records_arrive_apart_from_the_device_records(fake_cupti):
    script_launches(fake_cupti)
    tracer = KernelTracer(api="all")
    assert tracer.start(), tracer.reason
    assert fake_cupti.enabled(RUNTIME_KIND) == 1 and fake_cupti.enabled(DRIVER_KIND) == 1
    trace = tracer.stop()
    assert fake_cupti.enabled(RUNTIME_KIND) == 0 and fake_cupti.enabled(DRIVER_KIND) == 0  # given back
    # the device columns hold device activity only
    assert list(trace.kind) == [0, 0] and list(trace.correlation) == [11, 12]
    assert list(trace.name) == [GEMM, "triton_poi_fused_add_mul_0"]
    api = trace.api
    assert isinstance(api, ApiTrace) and len(api) == 4 and api.names is trace.names
    assert list(api.name) == ["cudaLaunchKernel_v7000", "cuLaunchKernel", "cudaGraphLaunch_v10000",
                              "cudaStreamSynchronize_v3020"]
    assert list(api.domain) == [RUNTIME, DRIVER, RUNTIME, RUNTIME]
    assert list(api.cbid) == [211, 307, 311, 131]
    assert list(api.thread) == [77, 77, 78, 77]
    assert list(api.correlation) == [11, 11, 12, 0]
    assert list(api.start_ns) == [1_000_000, 1_000_500, 1_003_500, 1_006_500]
    assert list(api.duration_ns) == [3000, 2000, 2500, 13_500]
    assert api.start_ns.dtype == np.int64 and api.thread.dtype == np.uint32 and api.domain.dtype == np.uint8
    # a launch and its kernel share the correlation id
    k = {int(c): int(s) for c, s in zip(trace.correlation, trace.start_ns)}
    assert k[int(api.correlation[0])] - int(api.start_ns[0]) == 4000


def test_selected_api_functions_only_by_default(fake_cupti):
    """api=True records the launch, copy, memset and synchronising functions: the kinds are
    enabled and every other named function is switched off, so a framework's bookkeeping calls
    (cudaGetDevice) made while tracing are not recorded; every switch is back on after the trace."""
    script_launches(fake_cupti)
    tracer = KernelTracer(api=True)
    assert tracer.start(), tracer.reason
    assert tracer.api_mode == "selected"
    assert fake_cupti.enabled(RUNTIME_KIND) == 1 and fake_cupti.enabled(DRIVER_KIND) == 1
    lib = fake_cupti.lib
    lib.fake_cupti_api_enabled.argtypes = [ctypes.c_int, ctypes.c_uint32]
    on = {(d, c): lib.fake_cupti_api_enabled(d, c) for d, c in ((RUNTIME, 211), (RUNTIME, 311), (RUNTIME, 131),
                                                                (RUNTIME, 41), (DRIVER, 307), (DRIVER, 17),
                                                                (RUNTIME, 10))}
    assert on == {(RUNTIME, 211): 1, (RUNTIME, 311): 1, (RUNTIME, 131): 1, (RUNTIME, 41): 1, (DRIVER, 307): 1,
                  (DRIVER, 17): 1, (RUNTIME, 10): 0}
    add_api(fake_cupti, RUNTIME, 10, 1_030_000, 1_030_100)  # cudaGetDevice while tracing: not recorded
    add_api(fake_cupti, RUNTIME, 211, 1_040_000, 1_040_100, correlation=13)
    trace = tracer.stop()
    assert all(lib.fake_cupti_api_enabled(d, c) for d, c in on)  # switched back on
    assert list(trace.api.name) == ["cudaLaunchKernel_v7000", "cuLaunchKernel", "cudaGraphLaunch_v10000",
                                    "cudaStreamSynchronize_v3020", "cudaLaunchKernel_v7000"]


def test_every_api_call_when_cupti_cannot_switch_single_functions(fake_cupti, monkeypatch):
    monkeypatch.setenv("FAKE_CUPTI_FAIL", "cuptiActivityEnableRuntimeApi:1")
    tracer = KernelTracer(api=True)
    assert tracer.start(), tracer.reason
    assert tracer.api_mode == "all" and fake_cupti.enabled(RUNTIME_KIND) == 1
    add_api(fake_cupti, RUNTIME, 10, 100, 200)
    assert list(tracer.stop().api.name) == ["cudaGetDevice_v3020"]
    del tracer  # the active tracer until destroyed
    gc.collect()
    plain = KernelTracer()
    assert plain.start() and plain.api_mode == "off"
    plain.stop()
    with pytest.raises(ValueError, match="api must be"):
        KernelTracer(api="some")


def test_native_take_has_the_api_columns(fake_cupti):
    from fastprof._native import _core

    add_api(fake_cupti, RUNTIME, 211, 100, 200, thread=5, correlation=9)
    fake_cupti.add(KERNEL, "k", 300, 400, correlation=9)
    native = _core.KernelTracer([str(fake_cupti.path)], api=True)
    native.start()
    native.stop()
    d = native.take()
    assert list(d["kind"]) == [3, 0]
    assert list(d["thread"]) == [5, 0] and list(d["cbid"]) == [211, 0] and list(d["domain"]) == [2, 0]
    assert d["thread"].dtype == np.uint32 and d["cbid"].dtype == np.uint32 and d["domain"].dtype == np.uint8
    del native


def test_api_records_are_not_delivered_without_the_option(fake_cupti):
    script_launches(fake_cupti)
    tracer = KernelTracer()
    assert tracer.start()
    assert fake_cupti.enabled(RUNTIME_KIND) == 0 and fake_cupti.enabled(DRIVER_KIND) == 0
    trace = tracer.stop()
    assert len(trace) == 2 and len(trace.api) == 0 and list(trace.kind) == [0, 0]
    assert fake_cupti.calls("cuptiGetCallbackName") == 0


def test_api_names_are_looked_up_once_per_function(fake_cupti):
    for i in range(10):
        add_api(fake_cupti, RUNTIME, 211, 1000 * i, 1000 * i + 100, correlation=i + 1)
    add_api(fake_cupti, DRIVER, 307, 20_000, 20_100)
    tracer = KernelTracer(api="all")
    assert tracer.start()
    trace = tracer.stop()
    assert len(trace.api) == 11 and len(trace) == 0
    assert fake_cupti.calls("cuptiGetCallbackName") == 2
    assert trace.names == ["cudaLaunchKernel_v7000", "cuLaunchKernel"]
    # a second trace by the same tracer keeps the cache and the name table
    add_api(fake_cupti, RUNTIME, 211, 30_000, 30_100)
    assert tracer.start()
    trace = tracer.stop()
    assert list(trace.api.name) == ["cudaLaunchKernel_v7000"] and fake_cupti.calls("cuptiGetCallbackName") == 2


def test_fallback_names_when_cupti_cannot_name_the_function(fake_cupti):
    set_callback_name(fake_cupti, RUNTIME, 211, None)  # unknown to this CUPTI
    add_api(fake_cupti, RUNTIME, 211, 0, 10)
    add_api(fake_cupti, DRIVER, 9999, 20, 30)
    add_api(fake_cupti, RUNTIME, 131, 40, 50)
    with KernelTracer(api="all") as tracer:
        pass
    assert list(tracer.trace.api.name) == ["cuda_runtime_cbid_211", "cuda_driver_cbid_9999",
                                           "cudaStreamSynchronize_v3020"]


def test_fallback_names_when_cuptiGetCallbackName_fails(fake_cupti, monkeypatch):
    monkeypatch.setenv("FAKE_CUPTI_FAIL", "cuptiGetCallbackName:1")
    add_api(fake_cupti, RUNTIME, 211, 0, 10)
    add_api(fake_cupti, DRIVER, 307, 20, 30)
    with KernelTracer(api=True) as tracer:
        pass
    assert tracer.trace.available
    assert list(tracer.trace.api.name) == ["cuda_runtime_cbid_211", "cuda_driver_cbid_307"]


def test_callback_names_can_be_set(fake_cupti):
    set_callback_name(fake_cupti, RUNTIME, 5000, "cudaSomethingNew_v13000")
    add_api(fake_cupti, RUNTIME, 5000, 0, 10)
    with KernelTracer(api="all") as tracer:
        pass
    assert list(tracer.trace.api.name) == ["cudaSomethingNew_v13000"]


def test_api_records_on_the_offset_clock(fake_cupti_no_ts):
    fake_cupti_no_ts.set_clock_offset(-123_456_789_000)
    t0 = time.perf_counter_ns()
    add_api(fake_cupti_no_ts, RUNTIME, 211, t0, t0 + 2000, correlation=1)
    fake_cupti_no_ts.add(KERNEL, "k", t0 + 1000, t0 + 4000, correlation=1)
    tracer = KernelTracer(api=True)
    assert tracer.start(), tracer.reason
    trace = tracer.stop()
    assert trace.timestamp_method == "offset"
    assert abs(int(trace.api.start_ns[0]) - t0) < 50_000 and int(trace.api.duration_ns[0]) == 2000
    # one offset for both kinds of record: their distance is exact
    assert int(trace.start_ns[0]) - int(trace.api.start_ns[0]) == 1000


def test_api_records_count_against_the_record_capacity(fake_cupti):
    for i in range(6):
        add_api(fake_cupti, RUNTIME, 211, 10 * i, 10 * i + 5)
    fake_cupti.add(KERNEL, "k", 100, 200)
    tracer = KernelTracer(max_records=4, api=True)
    tracer.start()
    trace = tracer.stop()
    assert len(trace.api) + len(trace) == 4 and trace.dropped == 3


def test_device_analysis_is_unchanged_by_api_records(fake_cupti):
    def traced(with_api):
        fake_cupti.reset()
        script_launches(fake_cupti)
        fake_cupti.add(MEMCPY, None, 1_013_000, 1_014_000, correlation=13, nbytes=4096, copy_kind=1)
        tracer = KernelTracer(api=with_api)
        assert tracer.start()
        return tracer.stop()

    plain, with_api = traced(False), traced(True)
    assert len(with_api.api) == 4 and len(plain.api) == 0
    bounds = np.array([1_000_000, 1_010_000, 1_030_000], np.int64)
    a, b = kernels.step_breakdown(plain, bounds), kernels.step_breakdown(with_api, bounds)
    assert list(a.busy_ns) == list(b.busy_ns) and list(a.kernels) == list(b.kernels)
    assert list(b.busy_ns) == [5000 + 500, 2000 + 1000]
    assert {k: list(v) for k, v in a.by_class_ns.items()} == {k: list(v) for k, v in b.by_class_ns.items()}
    assert list(kernels.record_classes(with_api)) == list(kernels.record_classes(plain))
    sub = with_api.select(with_api.kind == 0)
    assert len(sub) == 2 and len(sub.api) == 4


def test_empty_api_trace_by_default():
    t = KernelTrace.from_records([("kernel", "a", 0, 10)])
    assert len(t.api) == 0 and list(t.api.name) == [] and t.api.domain.dtype == np.uint8


COPIES = r"""
import ctypes, json, os, sys
from fastprof.capture.kernel_trace import KernelTracer
wanted, other, how = sys.argv[1], sys.argv[2], sys.argv[3]
if how == "torch":
    ctypes.CDLL(other)  # as torch maps its wheel's CUPTI on import
elif how == "fastprof":  # fastprof's own tracer opened the other copy earlier in the process
    os.environ["FASTPROF_CUPTI_LIBRARY"] = other
    assert KernelTracer().library_path == other
os.environ["FASTPROF_CUPTI_LIBRARY"] = wanted
t = KernelTracer()
print(json.dumps({"path": t.library_path, "note": t.note, "env": os.environ.get("FASTPROF_CUPTI_LIBRARY")}))
"""


@pytest.mark.parametrize("how", ["torch", "none", "fastprof"])
def test_the_cupti_the_process_already_uses_wins_over_another_copy(fake_cupti_path, tmp_path, how):
    # Two copies of CUPTI in one process take each other's records (torch.profiler then saw no
    # kernels after a fastprof trace on the H200): a copy something else already mapped is used, and
    # the tracer says so; a copy fastprof opened itself earlier does not count.
    import json
    import shutil
    import subprocess
    import sys

    other = tmp_path / "libcupti.so.13"
    shutil.copy(fake_cupti_path, other)
    p = subprocess.run([sys.executable, "-c", COPIES, str(fake_cupti_path), str(other), how],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["env"] == str(fake_cupti_path)  # the environment is left as it was
    if how == "torch":
        assert os.path.realpath(out["path"]) == os.path.realpath(other)
        assert "FASTPROF_CUPTI_LIBRARY" in out["note"] and str(other) in out["note"]
    else:
        assert os.path.realpath(out["path"]) == os.path.realpath(fake_cupti_path)
        assert out["note"] is None
