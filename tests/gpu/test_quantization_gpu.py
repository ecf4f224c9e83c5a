"""Quantized configurations on a real GPU (skipped without one, or without the backends): the
bytes the weights occupy against the allocator, the roofline on quantized bytes, and the methods
that need CUDA."""

import importlib.util

import pytest

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None or importlib.util.find_spec("torchao") is None,
                    reason="needs bitsandbytes and torchao (pip install 'fastprof[quant]')")
def test_quantized_sweep_on_the_gpu(torch_cuda, tmp_path):
    from fastprof import cli
    from fastprof.results.sweep import load

    out = tmp_path / "q.json"
    cli.main(["run", "--processes", "1", "--quantization", "none,bnb-int8,bnb-nf4,torchao-int8wo,torchao-int4wo", "--batch-size", "1",
              "--prompt-len", "32", "--max-new-tokens", "16", "--warmup", "2", "--iterations", "5", "-q",
              "-o", str(out)])
    sweep = load(out)
    status = {r.config["quantization"]: (r.status, (r.error or {}).get("message")) for r in sweep.runs}
    # torchao's int4 weight-only needs extra kernels (torchao 0.18: the mslk package) that a machine
    # may lack: then it fails with a one-line reason and the others run.
    if status["torchao-int4wo"][0] != "ok":
        assert "\n" not in status["torchao-int4wo"][1] and "torchao-int4wo" in status["torchao-int4wo"][1], status
    assert all(s == "ok" for m, (s, _) in status.items() if m != "torchao-int4wo"), status
    by = {r.config["quantization"]: r.result for r in sweep.runs if r.result is not None}
    base = by["none"].quantization["weight_bytes"]
    for method, result in by.items():
        q = result.quantization
        # What the weights occupy agrees with what the allocator handed out while the model loaded
        # (the allocator rounds every block up and keeps rotary tables and the like).
        assert q["allocated_bytes"] >= 0.95 * q["weight_bytes"], (method, q)
        assert q["allocated_bytes"] <= 1.10 * q["weight_bytes"] + 8 * 2**20, (method, q)
        roof = result.roofline
        assert roof["available"], (method, roof)
        if method != "none":
            assert q["weight_bytes"] < 0.9 * base, (method, q["weight_bytes"], base)
            assert roof["weight_bytes_per_step"] < by["none"].roofline["weight_bytes_per_step"]
        assert result.summary["itl_s"]["n"] > 0
    # 4-bit storage is about half of int8's.
    assert by["bnb-nf4"].quantization["weight_bytes"] < by["bnb-int8"].quantization["weight_bytes"]
