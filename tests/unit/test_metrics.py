import numpy as np
import pytest

from fastprof import Trace
from fastprof.analysis.metrics import GENERATE_METRICS, generation_metrics

MS = 1_000_000


def make_trace(start, marks_ms, end_ms, device=None):
    marks = np.array([start + int(m * MS) for m in marks_ms], dtype=np.int64)
    dev_marks = dev_end = None
    if device is not None:
        dev_marks = np.array([int(m * MS) for m in device[0]], dtype=np.int64)
        dev_end = int(device[1] * MS)
    return Trace(start, start + int(end_ms * MS), marks, dev_marks, dev_end)


def test_generation_metrics_by_hand():
    # TTFT 10 ms, then gaps of 2, 3, 5 ms; end 1 ms after the last token.
    t = make_trace(1_000 * MS, [10, 12, 15, 20], 21)
    m = generation_metrics([t], batch_size=2, prompt_len=100)
    assert set(m) == set(GENERATE_METRICS)
    assert m["e2e_latency_s"].tolist() == pytest.approx([0.021])
    assert m["ttft_s"].tolist() == pytest.approx([0.010])
    assert m["itl_s"].tolist() == pytest.approx([0.002, 0.003, 0.005])  # N-1 gaps, no gap to the end mark
    assert m["tpot_s"].tolist() == pytest.approx([0.010 / 3])
    assert m["decode_tokens_per_s"].tolist() == pytest.approx([2 * 3 / 0.010])
    assert m["prefill_tokens_per_s"].tolist() == pytest.approx([2 * 100 / 0.010])
    assert m["throughput_tokens_per_s"].tolist() == pytest.approx([2 * 4 / 0.021])


def test_itl_pools_every_gap_of_every_iteration():
    traces = [make_trace(0, [5, 6, 8], 9), make_trace(50 * MS, [4, 7, 8, 12], 13)]
    m = generation_metrics(traces, batch_size=1, prompt_len=8)
    assert m["itl_s"].tolist() == pytest.approx([0.001, 0.002, 0.003, 0.001, 0.004])
    assert m["ttft_s"].tolist() == pytest.approx([0.005, 0.004])


def test_device_clock_and_missing_device_clock():
    t = make_trace(0, [10, 11], 12, device=([9, 10.5], 11.5))
    m = generation_metrics([t], batch_size=1, prompt_len=4, clock="device")
    assert m["ttft_s"].tolist() == pytest.approx([0.009])
    assert m["itl_s"].tolist() == pytest.approx([0.0015])
    assert m["e2e_latency_s"].tolist() == pytest.approx([0.0115])
    assert generation_metrics([make_trace(0, [1, 2], 3)], batch_size=1, prompt_len=1, clock="device") is None


def test_single_token_has_no_gaps():
    m = generation_metrics([make_trace(0, [7], 8)], batch_size=1, prompt_len=3)
    assert m["itl_s"].size == 0 and m["tpot_s"].size == 0
    assert m["ttft_s"].tolist() == pytest.approx([0.007])
