"""The roofline: bytes and FLOPs of a decode step, GPU peaks, MBU and MFU (pure functions)."""

from types import SimpleNamespace

import pytest

from fastprof.analysis import roofline as R

# Llama 3.2 1B: 16 layers, hidden 2048, 32 heads, 8 KV heads, head_dim 64, vocab 128256, tied embeddings.
LLAMA_1B = SimpleNamespace(num_hidden_layers=16, hidden_size=2048, num_attention_heads=32, num_key_value_heads=8,
                           head_dim=64, vocab_size=128256, tie_word_embeddings=True)
LLAMA_1B_PARAMS = 1_235_814_400

H100 = {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "multiprocessors": 132, "sm_clock_max_mhz": 1980,
        "mem_clock_max_mhz": 2619, "memory_bus_width_bits": 5120}


def test_peak_bandwidth_from_bus_width_and_memory_clock():
    assert R.peak_bandwidth(5120, 2619) == pytest.approx(3.352e12, rel=1e-3)  # H100 SXM: 3.35 TB/s
    assert R.peak_bandwidth(5120, 1215) == pytest.approx(1.555e12, rel=1e-3)  # A100 40 GB
    assert R.peak_bandwidth(192, 6251) == pytest.approx(300e9, rel=1e-2)      # L4 (GDDR6)
    with pytest.raises(ValueError):
        R.peak_bandwidth(0, 2619)


@pytest.mark.parametrize("cc, sms, mhz, datasheet", [
    ("9.0", 132, 1830, 989.4e12),   # H100 SXM dense BF16
    ("8.0", 108, 1410, 312e12),     # A100
    ("8.9", 58, 2040, 121e12),      # L4
    ("8.6", 72, 1695, 125e12),      # A10
    ("7.0", 80, 1530, 125e12),      # V100 FP16
    ((10, 0), 148, 1856, 2.25e15),  # B200
])
def test_peak_tensor_flops_matches_datasheets(cc, sms, mhz, datasheet):
    assert R.peak_tensor_flops(cc, sms, mhz) == pytest.approx(datasheet, rel=0.01)


def test_unknown_capability_has_no_peak():
    assert R.peak_tensor_flops("12.0", 170, 2500) is None
    assert R.peak_tensor_flops(None, 132, 1980) is None
    assert R.parse_capability("9.0") == (9, 0) and R.parse_capability((8, 6)) == (8, 6)
    assert R.parse_capability("x") is None


def test_gpu_peaks_and_ridge():
    p = R.gpu_peaks(H100)
    assert p["peak_bandwidth_bytes_per_s"] == pytest.approx(3.352e12, rel=1e-3)
    assert p["peak_tensor_flops"] == pytest.approx(4096 * 132 * 1980e6)
    assert p["ridge_flops_per_byte"] == pytest.approx(p["peak_tensor_flops"] / p["peak_bandwidth_bytes_per_s"])
    assert p["reasons"] == []
    partial = R.gpu_peaks({"capability": "12.0", "multiprocessors": 170, "sm_clock_max_mhz": 2500})
    assert partial["peak_bandwidth_bytes_per_s"] is None and partial["peak_tensor_flops"] is None
    assert partial["ridge_flops_per_byte"] is None
    assert any("bus width" in r for r in partial["reasons"]) and any("12.0" in r for r in partial["reasons"])


def test_gpu_facts_match_torch_and_nvml_by_uuid():
    env = {
        "gpus": [{"index": 0, "name": "A", "uuid": "bbbb-2", "multiprocessors": 132, "capability": "9.0"},
                 {"index": 1, "name": "B", "uuid": "aaaa-1", "multiprocessors": 108, "capability": "8.0"}],
        "nvidia": {"gpus": [{"index": 0, "uuid": "GPU-aaaa-1", "name": "A100", "sm_clock_max_mhz": 1410,
                             "mem_clock_max_mhz": 1215, "memory_bus_width_bits": 5120},
                            {"index": 1, "uuid": "GPU-bbbb-2", "name": "H100", "sm_clock_max_mhz": 1980,
                             "mem_clock_max_mhz": 2619, "memory_bus_width_bits": 5120}]},
    }
    f0 = R.gpu_facts(env, 0)  # CUDA ordinal 0 is NVML index 1 here
    assert f0["name"] == "H100" and f0["multiprocessors"] == 132 and f0["mem_clock_max_mhz"] == 2619
    f1 = R.gpu_facts(env, 1)
    assert f1["name"] == "A100" and f1["capability"] == "8.0" and f1["sm_clock_max_mhz"] == 1410
    assert R.gpu_facts({}, 0)["memory_bus_width_bits"] is None


def _facts(**kw):
    return R.model_facts_from_config(LLAMA_1B, params=LLAMA_1B_PARAMS, **kw)


def test_model_facts_from_a_config():
    f = _facts()
    shape = (f["num_layers"], f["hidden_size"], f["num_heads"], f["num_kv_heads"], f["head_dim"])
    assert shape == (16, 2048, 32, 8, 64)
    assert f["tie_embeddings"] is True and f["vocab_size"] == 128256
    assert f["input_embedding_params"] == 128256 * 2048
    gpt2 = SimpleNamespace(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, tie_word_embeddings=True)
    g = R.model_facts_from_config(gpt2, params=124_000_000)
    assert (g["num_layers"], g["num_kv_heads"], g["head_dim"]) == (12, 12, 64)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        R.model_facts_from_config(SimpleNamespace(), params=1)


def test_model_facts_from_a_transformers_config():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                                   vocab_size=1000, intermediate_size=1024, tie_word_embeddings=False)
    f = R.model_facts_from_config(cfg, params=10_000_000, bytes_per_element=4)
    assert (f["num_layers"], f["num_kv_heads"], f["head_dim"]) == (4, 2, 64)
    assert f["tie_embeddings"] is False and f["kv_bytes_per_element"] == 4


def test_bytes_of_a_decode_step():
    f = _facts()
    assert R.weight_bytes_per_step(f) == LLAMA_1B_PARAMS * 2  # tied: every weight is read
    # KV cache: 2 x layers x kv_heads x head_dim x seq_len x batch x bytes.
    assert R.kv_cache_bytes(f, 100, 4) == 2 * 16 * 8 * 64 * 100 * 4 * 2
    untied = _facts(tie_embeddings=False)
    assert R.weight_bytes_per_step(untied) == (LLAMA_1B_PARAMS - 128256 * 2048) * 2
    # A quantised model: its real bytes, not parameters x bytes per element.
    q = _facts(weight_bytes=700e6)
    assert R.weight_bytes_per_step(q) == 700e6
    assert R.kv_cache_bytes(_facts(kv_bytes_per_element=1), 10, 1) == R.kv_cache_bytes(f, 10, 1) / 2


def test_flops_per_token():
    f = _facts()
    assert R.flops_per_token(f, 0) == 2 * LLAMA_1B_PARAMS
    assert R.flops_per_token(f, 1000) - R.flops_per_token(f, 0) == 4 * 16 * 32 * 64 * 1000
    untied = _facts(tie_embeddings=False)
    assert R.flops_per_token(untied, 0) == 2 * (LLAMA_1B_PARAMS - 128256 * 2048)


def test_decode_seq_lens():
    assert R.decode_seq_lens(64, 64) == (65, 127, 96)
    assert R.decode_seq_lens(10, 1) == (11, 11, 11)


def test_roofline_section():
    f, g = _facts(), R.gpu_peaks(H100)
    itl = 8e-3
    roof = R.roofline(f, g, batch_size=1, prompt_len=64, new_tokens=64, itl_s=itl)
    kv = 2 * 16 * 8 * 64 * 96 * 1 * 2
    step_bytes = LLAMA_1B_PARAMS * 2 + kv
    bw = g["peak_bandwidth_bytes_per_s"]
    assert roof["available"] and roof["bytes_per_step"] == pytest.approx(step_bytes)
    assert roof["kv_cache_bytes_first"] == 2 * 16 * 8 * 64 * 65 * 2
    assert roof["ideal_step_s"] == pytest.approx(step_bytes / bw)
    assert roof["ideal_step_s"] == pytest.approx(0.74e-3, rel=0.02)  # 2.47 GB at 3.35 TB/s
    assert roof["mbu"] == pytest.approx(step_bytes / itl / bw)
    flops = 2 * LLAMA_1B_PARAMS + 4 * 16 * 32 * 64 * 96
    assert roof["mfu"] == pytest.approx(flops / itl / g["peak_tensor_flops"])
    assert roof["arithmetic_intensity_flops_per_byte"] == pytest.approx(flops / step_bytes)
    assert roof["bound_by"] == "memory"
    assert roof["mbu_busy"] is None and roof["gpu_busy_s_per_step"] is None
    assert roof["measured_dram_util_pct"] is None


def test_roofline_against_gpu_busy_time_and_counters():
    f, g = _facts(), R.gpu_peaks(H100)
    roof = R.roofline(f, g, batch_size=8, prompt_len=128, new_tokens=32, itl_s=10e-3,
                      kernels={"idle_share": 0.6, "kernels_per_token": 700}, measured_dram_util_pct=12.5)
    assert roof["gpu_busy_s_per_step"] == pytest.approx(4e-3)
    assert roof["mbu_busy"] == pytest.approx(roof["mbu"] / 0.4)
    assert roof["mfu_busy"] == pytest.approx(roof["mfu"] / 0.4)
    assert roof["flops_per_step"] == pytest.approx(8 * roof["flops_per_token"])
    assert roof["measured_dram_util_pct"] == 12.5
    # No figure (NaN from an empty measurement) is none, not a number to print beside the MBU.
    nan = R.roofline(f, g, batch_size=8, prompt_len=128, new_tokens=32, itl_s=10e-3,
                     measured_dram_util_pct=float("nan"))
    assert nan["measured_dram_util_pct"] is None
    explicit = R.roofline(f, g, batch_size=1, prompt_len=1, new_tokens=2, itl_s=1e-3,
                          kernels={"busy_s_per_step": 0.5e-3, "idle_share": 0.9})
    assert explicit["gpu_busy_s_per_step"] == 0.5e-3


def test_roofline_without_peaks_or_itl():
    roof = R.roofline(_facts(), R.gpu_peaks({}), batch_size=1, prompt_len=8, new_tokens=8, itl_s=None)
    assert roof["mbu"] is None and roof["mfu"] is None and roof["ideal_step_s"] is None
    assert roof["bytes_per_step"] > 0 and roof["reasons"]
    with pytest.raises(ValueError):
        R.roofline(_facts(), R.gpu_peaks(H100), batch_size=0, prompt_len=8, new_tokens=8, itl_s=1e-3)
