"""Python frame samples by py-spy in the traced iterations, aligned to the tokens' clock: a slow
pure-Python function in one module is named with its time per step; without py-spy, one line
says why."""

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastprof import benchmark_generate  # noqa: E402
from fastprof.capture import hf  # noqa: E402
from fastprof.capture.pysampler import PySpySampler, PythonSamples, find_pyspy, self_time  # noqa: E402


def test_self_time_from_stack_changes():
    ms = 1_000_000
    s = PythonSamples(events=[(0, 1, "outer", "a.py", 1), (0, 1, "inner", "a.py", 5), (4 * ms, -1, "inner", "a.py", 5),
                              (6 * ms, -1, "outer", "a.py", 1)], available=True)
    t = self_time(s, [(0, 10 * ms)])
    assert t[("inner", "a.py")] == {"self_ns": 4 * ms, "total_ns": 4 * ms}
    assert t[("outer", "a.py")] == {"self_ns": 2 * ms, "total_ns": 6 * ms}
    # only what falls inside the windows counts
    t = self_time(s, [(3 * ms, 5 * ms)])
    assert t[("inner", "a.py")]["self_ns"] == 1 * ms and t[("outer", "a.py")]["self_ns"] == 1 * ms


def test_missing_pyspy_is_one_line(monkeypatch):
    monkeypatch.setenv("FASTPROF_PYSPY", "/nonexistent/py-spy")
    sampler = PySpySampler()
    assert not sampler.available and "not installed" in sampler.reason
    assert sampler.start() is False
    out = sampler.stop()
    assert out.available is False and "not installed" in out.reason


def _slow_python_work(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed")
def test_slow_python_function_is_named_with_its_time_per_step():
    model = hf.build_default_model(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=500)
    mlp = model.model.layers[1].mlp
    original = mlp.forward

    def slowed(*args, **kwargs):
        _slow_python_work(0.008)
        return original(*args, **kwargs)

    mlp.forward = slowed
    try:
        inputs = hf.random_inputs(500, 1, 8, device="cpu", seed=0)
        r = benchmark_generate(model, inputs, max_new_tokens=16, warmup=1, iterations=2, stalls=False,
                               host_path=False, python_samples=True)
    finally:
        del mlp.forward
    py = r.host["python"]
    if not py["available"]:
        assert "py-spy failed" in py["reason"]  # the platform forbids it: said in one line
        pytest.skip(py["reason"])
    top = py["functions"][0]
    assert top["function"] == "_slow_python_work" and top["file"].endswith("test_python_samples.py")
    assert top["self_s_per_step"] == pytest.approx(0.008, rel=0.35)
    assert "Python samples (py-spy)" in str(r) and "_slow_python_work" in str(r)
    assert np.isfinite(py["coverage"]) and 0.3 < py["coverage"] <= 1.05
