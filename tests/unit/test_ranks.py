"""Merging ranks: tensor-parallel step times, skew, last rank, data-parallel sums, clock shifts."""

import numpy as np
import pytest
from fastprof import Trace
from fastprof.analysis import ranks


def trace(start, marks, end=None, device=None):
    marks = np.asarray(marks, dtype=np.int64)
    return Trace(host_start_ns=start, host_end_ns=end if end is not None else int(marks[-1]) + 10,
                 host_marks_ns=marks, device_marks_ns=None if device is None else np.asarray(device, np.int64),
                 device_end_ns=None if device is None else int(device[-1]) + 5)


def test_tensor_parallel_step_is_the_slowest_rank():
    r0 = [trace(100, [200, 300, 400], device=[90, 190, 290])]
    r1 = [trace(105, [210, 290, 430], device=[95, 185, 300])]
    (m,) = ranks.tensor_parallel_merge([r0, r1])
    assert m.host_start_ns == 100
    assert m.host_marks_ns.tolist() == [210, 300, 430]
    assert m.device_marks_ns.tolist() == [95, 190, 300]
    assert m.host_end_ns == 440


def test_tensor_parallel_merge_refuses_different_token_counts():
    with pytest.raises(ValueError, match="different numbers of tokens"):
        ranks.tensor_parallel_merge([[trace(0, [1, 2])], [trace(0, [1, 2, 3])]])
    with pytest.raises(ValueError, match="different numbers of iterations"):
        ranks.tensor_parallel_merge([[trace(0, [1])], [trace(0, [1]), trace(0, [1])]])


def test_skew_and_last_rank():
    r0 = [trace(0, [10, 20, 30]), trace(0, [10, 20, 30])]
    r1 = [trace(0, [12, 19, 35]), trace(0, [11, 25, 30])]
    s = ranks.step_skew([r0, r1])
    assert s["skew_ns"].tolist() == [2, 1, 5, 1, 5, 0]
    # last per step: r1, r0, r1, r1, r1, tie -> r0 (first)
    assert s["last_counts"].tolist() == [2, 4]


def test_shift_moves_host_times_only():
    t = trace(1_000, [1_100, 1_200], device=[50, 150])
    (s,) = ranks.shift([t], 1_000)
    assert (s.host_start_ns, s.host_marks_ns.tolist(), s.host_end_ns) == (0, [100, 200], 210)
    assert s.device_marks_ns.tolist() == [50, 150]
    assert ranks.shift([t], 0)[0] is t


def test_data_parallel_throughput_adds_up_per_iteration():
    assert ranks.summed_per_iteration([np.array([1.0, 2.0]), np.array([10.0, 20.0])]).tolist() == [11.0, 22.0]
    with pytest.raises(ValueError):
        ranks.summed_per_iteration([np.array([1.0]), np.array([1.0, 2.0])])


def test_merged_tensor_parallel_result_keeps_the_kernel_breakdown():
    from fastprof.capture.environment import capture_environment
    from fastprof.measure.distributed import merge
    from report_fixtures import synthetic_result

    results = [synthetic_result(8.0, seed=0), synthetic_result(9.0, seed=0)]  # rank 1 is the slower one
    for rank, r in enumerate(results):
        r.kernels = {"available": True, "reason": "", "idle_share": 0.5 + 0.1 * rank, "busy_s_per_step": 0.004,
                     "kernels_per_token": 300.0 + rank, "class_share": {"gemm": 0.6}, "decode_steps": 30,
                     "top_decode": [{"name": "gemm_kernel"}]}
    payloads = [{"rank": i, "local_rank": i, "host": "h", "device": f"cuda:{i}", "result": r.to_dict(), "error": None}
                for i, r in enumerate(results)]
    offsets = [{"rank": i, "offset_ns": 0, "uncertainty_ns": 0, "applied": False} for i in range(2)]
    merged = merge(payloads, mode="tp", offsets=offsets, environment=capture_environment(), world_size=2,
                   backend="gloo")
    assert merged.distributed["slowest_rank"] == 1
    assert merged.kernels["rank"] == 1 and merged.kernels["kernels_per_token"] == 301.0
    digests = [r["kernels"] for r in merged.distributed["ranks"]]
    assert [d["idle_share"] for d in digests] == [0.5, 0.6]
    assert "top_decode" not in digests[0]  # the digest is the headline only
    merged.to_json()  # still a valid document
