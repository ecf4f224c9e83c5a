"""The bytes a quantized model's weights occupy (fastprof.capture.quantization.weight_bytes), which the
roofline counts as what a decode step reads; and the method table."""

import importlib.util

import pytest

torch = pytest.importorskip("torch")

from fastprof.analysis.roofline import gpu_peaks, roofline  # noqa: E402
from fastprof.capture import quantization as quant  # noqa: E402
from fastprof.measure.driver import model_facts  # noqa: E402

H100 = gpu_peaks({"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "multiprocessors": 132,
                  "sm_clock_max_mhz": 1980, "mem_clock_max_mhz": 2619, "memory_bus_width_bits": 5120})


class FakeQuantState:  # bitsandbytes keeps 4-bit scales on the parameter, in a QuantState
    def __init__(self, absmax, shape, nested=None):
        self.absmax = absmax
        self.shape = torch.Size(shape)
        self.state2 = nested
        self.blocksize = 64


class Packed:
    """A tensor subclass in the torchao manner: its data lives in inner tensors it names."""

    def __init__(self, qdata, scale):
        self.qdata, self.scale = qdata, scale

    def __tensor_flatten__(self):
        return ["qdata", "scale"], None


def _bytes(*tensors):
    seen = {}
    for t in tensors:
        quant._storages(t, seen)
    return sum(seen.values())


def test_each_storage_counts_once():
    w = torch.zeros(64, 32)  # 8192 bytes
    assert _bytes(w) == 64 * 32 * 4
    assert _bytes(w, w[:10], w.t()) == 64 * 32 * 4  # views of one storage
    assert _bytes(w, torch.zeros(8, dtype=torch.int8)) == 64 * 32 * 4 + 8


def test_inner_tensors_of_a_subclass_are_counted_not_its_logical_size():
    packed = Packed(torch.zeros(128, 64, dtype=torch.int8), torch.zeros(128, 1))
    assert _bytes(packed) == 128 * 64 + 128 * 4


def test_bitsandbytes_style_state_on_a_parameter():
    p = torch.nn.Parameter(torch.zeros(64 * 32 // 2, 1, dtype=torch.uint8), requires_grad=False)  # two per byte
    nested = FakeQuantState(torch.zeros(4, dtype=torch.float32), (64,))
    p.quant_state = FakeQuantState(torch.zeros(64 * 32 // 64, dtype=torch.uint8), (64, 32), nested)
    p.SCB = torch.zeros(64, dtype=torch.float32)  # int8 row scales ride on the parameter too
    assert _bytes(p) == 1024 + 32 + 16 + 256
    assert quant.logical_numel(p) == 64 * 32  # the weight it stands for, not the packed bytes


def test_model_facts_use_the_real_bytes(tiny_llama):
    """An unquantized float32 model: every storage once, the same as elements x 4 plus buffers."""
    f = model_facts(tiny_llama)
    assert f["weight_bytes"] == quant.weight_bytes(tiny_llama)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_int8_weights_halve_what_a_bf16_decode_step_reads(tiny_llama, tmp_path):
    """A torchao int8 model: linear layers take one byte per weight plus per-row scales, and the
    roofline's bytes per step fall accordingly (the embeddings and output layer stay bf16)."""
    from transformers import AutoModelForCausalLM

    import copy

    copy.deepcopy(tiny_llama).to(torch.bfloat16).save_pretrained(tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    linear = sum(m.weight.numel() for n, m in plain.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    rows = sum(m.weight.shape[0] for n, m in plain.named_modules()
               if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    q = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16,
                                             quantization_config=quant.transformers_config("torchao-int8wo",
                                                                                           torch.bfloat16, "cpu"),
                                             device_map="cpu")
    saved = quant.weight_bytes(plain) - quant.weight_bytes(q)
    # bf16 -> int8 saves one byte per linear weight, less at most 16 bytes of scales per row.
    assert linear - 16 * rows <= saved <= linear, (saved, linear)
    fq, fp = model_facts(q), model_facts(plain)
    assert fq["params"] == fp["params"]  # same model: the FLOPs do not change
    args = dict(batch_size=1, prompt_len=16, new_tokens=8, itl_s=1e-3)
    rq, rp = roofline(fq, H100, **args), roofline(fp, H100, **args)
    assert rp["weight_bytes_per_step"] - rq["weight_bytes_per_step"] == pytest.approx(saved)


def test_method_table():
    assert list(quant.METHODS)[0] == "none"
    for name, m in quant.METHODS.items():
        assert (m.backend is None) == (name == "none")
        assert name.split("-")[0] in ("none", "bnb", "torchao")
    assert quant.details("none") == {"method": "none", "backend": None, "backend_version": None,
                                     "maps_to": "unquantized, in --dtype"}
    with pytest.raises(ValueError, match="known: none, bnb-int8"):
        quant.method("int3")
    assert quant.transformers_config("none", torch.float32, "cpu") is None


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_a_torchao_method_this_machine_cannot_run_fails_in_one_line(monkeypatch):
    """torchao 0.18's int4 weight-only needs the mslk kernels (seen on an H200 without them): the
    layer-by-layer loading report is replaced by one line naming the cause."""
    import torchao.quantization

    def missing(*a, **k):
        raise ImportError("Requires mslk >= 1.0.0\n(and more lines)")

    monkeypatch.setattr(torchao.quantization, "quantize_", missing)
    with pytest.raises(quant.QuantizationUnavailable) as info:
        quant.transformers_config("torchao-int8wo", torch.float32, "cpu")
    assert str(info.value) == "torchao-int8wo cannot run on cpu here: ImportError: Requires mslk >= 1.0.0"
