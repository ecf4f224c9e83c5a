"""Stall recording and the trace export on a real GPU (skipped without one)."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_stalls_on_the_gpu_and_export(torch_cuda, tmp_path):
    import gc

    from transformers import LogitsProcessor, LogitsProcessorList

    import fastprof
    from fastprof import cli
    from fastprof.capture.hf import build_default_model, random_inputs

    torch = torch_cuda
    model = build_default_model(dtype=torch.bfloat16, device="cuda")

    class FullCollection(LogitsProcessor):
        def __init__(self):
            self.step = 0

        def __call__(self, input_ids, scores):
            self.step += 1
            if self.step == 20:
                junk = [[] for _ in range(200_000)]
                for a in junk:
                    a.append(a)
                del junk
                gc.collect()
            return scores

    orig = model.generate

    def generate(*args, **kwargs):
        # Beside fastprof's own processor (it records the GPU event of each step), not instead of it.
        procs = LogitsProcessorList(kwargs.get("logits_processor") or [])
        procs.append(FullCollection())
        kwargs["logits_processor"] = procs
        return orig(*args, **kwargs)

    model.generate = generate
    r = fastprof.benchmark_generate(model, random_inputs(int(model.config.vocab_size), 1, 32, device="cuda"),
                                    max_new_tokens=48, warmup=2, iterations=5, kernel_trace_iterations=0)
    st = r.stalls
    for source in ("gc", "cpu_wait", "allocator", "gpu_throttle"):
        assert st["sources"][source]["available"], (source, st["sources"][source])
    slow = {(t["iteration"], t["token"]): t for t in st["slow_tokens"]}
    hits = [slow.get((i, 19)) for i in range(5)]
    assert sum(1 for h in hits if h and any(c["kind"] == "gc" for c in h["causes"])) >= 4, hits
    starts = [e["start_ns"] for e in st["events"]]
    assert starts == sorted(starts)
    # The device clock: every iteration's device marks are present and increasing.
    assert all(np.all(np.diff(t.device_marks_ns) > 0) for t in r.traces())
    path = r.save(tmp_path / "r.json")
    out = tmp_path / "t.json"
    assert cli.main(["export", str(path), "--trace", str(out)]) == 0
    events = json.loads(out.read_text())["traceEvents"]
    assert any(e["ph"] == "C" and e["name"] == "power_w" for e in events)
    assert sum(1 for e in events if e.get("cat") == "device") == 5 * 48


def test_export_holds_kernel_slices_and_gpu_processes_are_counted(torch_cuda, tmp_path):
    """With a kernel trace, the export holds the traced iteration's kernels, one slice per record
    of the result's timeline, inside that iteration; the sampler counts the GPU's other processes."""
    import fastprof
    from fastprof import cli
    from fastprof.capture.hf import build_default_model, random_inputs

    torch = torch_cuda
    model = build_default_model(dtype=torch.bfloat16, device="cuda")
    r = fastprof.benchmark_generate(model, random_inputs(int(model.config.vocab_size), 1, 32, device="cuda"),
                                    max_new_tokens=32, warmup=2, iterations=3, kernel_trace_iterations=1)
    if not r.kernels.get("available"):
        pytest.skip(f"no kernel trace here: {r.kernels.get('reason')}")
    tl = r.kernels["timeline"]
    assert len(tl["start_ns"]) >= 32 * 10 and tl["truncated"] == 0
    others = np.asarray(r.hardware["samples"]["other_processes"], dtype=float)
    assert np.isfinite(others).any() and np.nanmin(others) >= 0
    assert r.stalls["sources"]["gpu_process"]["available"]
    path = r.save(tmp_path / "r.json")
    out = tmp_path / "t.json"
    assert cli.main(["export", str(path), "--trace", str(out)]) == 0
    events = json.loads(out.read_text())["traceEvents"]
    streams = {e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"
               and e["args"]["name"].startswith("GPU stream")}
    kernels = [e for e in events if e["ph"] == "X" and e["tid"] in streams]
    assert len(kernels) == len(tl["start_ns"])
    lo = tl["origin_ns"] / 1000
    hi = lo + sum(r.kernels["per_step"]["step_s"]) * 1e6
    assert all(lo <= e["ts"] <= hi for e in kernels)
    assert {e["cat"] for e in kernels} & {"gemm", "elementwise"}
