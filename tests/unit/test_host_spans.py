"""The native host span recorder (_core.HostSpans): marks of module enter/exit codes on CLOCK_MONOTONIC."""

import time

import numpy as np
import pytest

from fastprof import _core


def test_marks_keep_order_codes_and_the_clock():
    spans = _core.HostSpans(16)
    assert spans.capacity == 16 and spans.size == 0 and spans.dropped == 0
    before = time.monotonic_ns()
    for code in (3, -1, 0, 2**31 - 1, -(2**31), 3):
        spans.mark(code)
    after = time.monotonic_ns()
    assert spans.size == 6
    d = spans.take()
    assert set(d) == {"t_ns", "code", "dropped"}
    assert d["t_ns"].dtype == np.int64 and d["code"].dtype == np.int32
    assert list(d["code"]) == [3, -1, 0, 2**31 - 1, -(2**31), 3]
    t = d["t_ns"]
    assert np.all(np.diff(t) >= 0)
    assert before <= int(t[0]) and int(t[-1]) <= after
    assert d["dropped"] == 0


def test_the_clock_is_fastprofs():
    spans = _core.HostSpans(1)
    a = _core.monotonic_ns()
    spans.mark(1)
    b = _core.monotonic_ns()
    assert a <= int(spans.take()["t_ns"][0]) <= b


def test_marks_past_the_capacity_are_dropped_and_counted_exactly():
    spans = _core.HostSpans(5)
    for i in range(12):
        spans.mark(i)
    assert spans.size == 5 and spans.dropped == 7
    d = spans.take()
    assert list(d["code"]) == [0, 1, 2, 3, 4] and d["dropped"] == 7


def test_take_clears_and_clear_forgets():
    spans = _core.HostSpans(3)
    for i in range(4):
        spans.mark(i)
    spans.take()
    assert spans.size == 0 and spans.dropped == 0
    d = spans.take()
    assert d["t_ns"].size == 0 and d["code"].size == 0 and d["dropped"] == 0
    spans.mark(9)
    assert list(spans.take()["code"]) == [9]  # the storage is reused from the start
    spans.mark(1)
    spans.mark(2)
    spans.mark(3)
    spans.mark(4)
    spans.clear()
    assert spans.size == 0 and spans.dropped == 0 and spans.take()["code"].size == 0


def test_take_returns_copies():
    spans = _core.HostSpans(2)
    spans.mark(1)
    first = spans.take()
    spans.mark(2)
    assert list(first["code"]) == [1]


@pytest.mark.parametrize("capacity", [0, -1])
def test_bad_capacity_is_a_value_error(capacity):
    with pytest.raises(ValueError, match="capacity"):
        _core.HostSpans(capacity)


def test_bad_codes_are_refused_without_a_mark():
    spans = _core.HostSpans(4)
    with pytest.raises(OverflowError):
        spans.mark(2**31)
    with pytest.raises(OverflowError):
        spans.mark(-(2**31) - 1)
    with pytest.raises(OverflowError):
        spans.mark(2**70)
    with pytest.raises(TypeError):
        spans.mark("3")
    with pytest.raises(TypeError):
        spans.mark()
    with pytest.raises(TypeError):
        spans.mark(1, 2)
    assert spans.size == 0 and spans.dropped == 0
    spans.mark(True)  # an int subclass
    assert list(spans.take()["code"]) == [1]


def test_mark_is_a_method_of_the_class():
    spans = _core.HostSpans(4)
    mark = spans.mark  # hooks keep the bound method
    mark(5)
    _core.HostSpans.mark(spans, 6)
    assert list(spans.take()["code"]) == [5, 6]
    with pytest.raises(TypeError):
        _core.HostSpans.mark(object(), 1)
    assert "mark" in _core.HostSpans.mark.__doc__

