"""Model facts for the roofline, collected from a real transformers model; the roofline and verdict
attached to a result (BenchmarkResult.diagnose)."""

import json
from types import SimpleNamespace

import pytest

import fastprof
from fastprof.analysis.roofline import gpu_peaks
from fastprof.measure.driver import model_facts
from fastprof.results.result import BenchmarkResult

H100 = gpu_peaks({"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "multiprocessors": 132,
                  "sm_clock_max_mhz": 1980, "mem_clock_max_mhz": 2619, "memory_bus_width_bits": 5120})


def test_model_facts_of_the_builtin_model(tiny_llama):
    f = model_facts(tiny_llama)
    assert (f["num_layers"], f["hidden_size"], f["num_heads"], f["num_kv_heads"], f["head_dim"]) == (2, 64, 4, 2, 16)
    assert f["vocab_size"] == 256 and f["tie_embeddings"] is False
    params = sum(p.numel() for p in tiny_llama.parameters())
    buffers = sum(b.numel() * b.element_size() for b in tiny_llama.buffers())
    assert f["params"] == params
    assert f["weight_bytes"] == params * 4 + buffers  # float32: the storage, parameters and buffers
    assert f["bytes_per_element"] == 4 and f["kv_bytes_per_element"] == 4
    assert f["input_embedding_params"] == 256 * 64 and f["input_embedding_bytes"] == 256 * 64 * 4
    assert model_facts(tiny_llama, weight_bytes=123.0)["weight_bytes"] == 123.0


def test_model_facts_tied_and_half_precision():
    pytest.importorskip("transformers")
    import torch

    from fastprof.capture.hf import build_default_model

    m = build_default_model(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=1, vocab_size=100, tie_word_embeddings=True, dtype=torch.bfloat16)
    f = model_facts(m)
    assert f["tie_embeddings"] is True and f["bytes_per_element"] == 2 and f["kv_bytes_per_element"] == 2
    assert f["params"] == sum(p.numel() for p in m.parameters())  # the tied matrix once
    # Quantised weights often live in integer buffers: they count; boolean masks do not.
    m.register_buffer("qweight", torch.zeros(1000, dtype=torch.int32))
    m.register_buffer("mask", torch.ones(10**6, dtype=torch.bool))
    assert model_facts(m)["weight_bytes"] == f["weight_bytes"] + 4000


def test_model_facts_of_something_else():
    assert model_facts(SimpleNamespace()) is None
    assert model_facts(lambda: None) is None


def _result(gap_ms=8.0, tokens=16):
    import numpy as np

    from fastprof import Trace

    MS = 1_000_000
    traces = []
    for i in range(5):
        start = 10**12 + i * 10**9
        marks = start + (np.arange(1, tokens + 1) * gap_ms * MS).astype(np.int64)
        traces.append(Trace(start, int(marks[-1] + MS), marks))
    return fastprof.summarize_generation(traces, batch_size=1, prompt_len=64,
                                         config={"model": "x", "max_new_tokens": tokens})


LLAMA_1B = {"num_layers": 16, "hidden_size": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 64,
            "vocab_size": 128256, "tie_embeddings": True, "params": 1_235_814_400, "weight_bytes": 2_471_628_800.0,
            "bytes_per_element": 2.0, "kv_bytes_per_element": 2.0, "input_embedding_params": 128256 * 2048,
            "input_embedding_bytes": 128256 * 2048 * 2.0}


def test_diagnose_attaches_roofline_and_verdict_and_round_trips(tmp_path):
    r = _result(gap_ms=8.0)
    assert r.roofline is None and r.verdict is None
    v = r.diagnose(model=LLAMA_1B, gpu=H100)
    roof = r.roofline
    assert roof["itl_s"] == pytest.approx(8e-3)
    assert roof["mbu"] == pytest.approx(roof["bytes_per_step"] / 8e-3 / H100["peak_bandwidth_bytes_per_s"])
    assert v["verdict"] == "host-overhead-bound" and v["rule"] == "mbu-low"  # 9% MBU, no kernel trace
    # A kernel trace turns the guess into a finding, against GPU busy time.
    v = r.diagnose(kernels={"idle_share": 0.6, "kernels_per_token": 700, "class_share": {"gemm": 0.55}})
    assert v["rule"] == "gpu-idle" and r.roofline["mbu_busy"] == pytest.approx(roof["mbu"] / 0.4)
    back = BenchmarkResult.load(r.save(tmp_path / "r.json"))
    assert back.roofline == json.loads(json.dumps(r.roofline)) and back.verdict["text"] == v["text"]
    from fastprof.results.sweep import validate

    validate(json.loads((tmp_path / "r.json").read_text()))
    text = str(back)
    flat = " ".join(text.split())  # the console wraps long lines
    assert f"MBU {roof['mbu']:.1%} ({roof['mbu'] / 0.4:.1%} of GPU busy time) of 3.35 TB/s" in flat
    assert "ideal step 0.738 ms at full bandwidth vs ITL 8.000 ms" in flat
    assert "verdict: Host-overhead-bound: the GPU is idle 60% of each step: 700 kernels per token, launch-bound" in flat


def test_diagnose_without_model_facts_or_for_a_callable():
    r = _result()
    r.diagnose()
    assert r.roofline == {"available": False, "reason": "no model facts (layers, heads, parameters) were collected"}
    assert r.verdict["verdict"] == "undetermined"
    assert "roofline unavailable" in str(r)


def test_gpu_counters_feed_the_roofline():
    r = _result(gap_ms=2.0)
    r.hardware = {"available": True, "summary": {"dram_bw_util_decode_mean_pct": {"n": 5, "p50": 41.0},
                                                 "tensor_active_mean_pct": {"n": 5, "p50": 3.0}}}
    assert r.gpu_counters() == {"dram_bw_util_pct": 41.0, "tensor_active_pct": 3.0}
    v = r.diagnose(model=LLAMA_1B, gpu=H100)
    assert r.roofline["measured_dram_util_pct"] == 41.0
    assert v["verdict"] == "memory-bound" and "the DRAM counters read 41%" in v["text"]


def test_benchmark_generate_collects_the_facts(tiny_llama, tmp_path):
    from fastprof.capture.hf import random_inputs

    r = fastprof.benchmark_generate(tiny_llama, random_inputs(256, 2, 16), max_new_tokens=8, warmup=0, iterations=2,
                                    sample_interval_ms=None)
    roof = r.roofline
    assert roof["available"] and roof["model"]["num_layers"] == 2 and roof["batch_size"] == 2
    # On the CPU there are no GPU peaks: bytes and FLOPs, but no utilisation.
    assert roof["bytes_per_step"] > roof["weight_bytes_per_step"] > 0
    assert roof["mbu"] is None and roof["reasons"]
    assert r.verdict["verdict"] == "undetermined"
    back = BenchmarkResult.load(r.save(tmp_path / "g.json"))
    assert back.roofline["model"] == roof["model"]
