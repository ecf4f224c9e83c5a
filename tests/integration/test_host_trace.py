"""The host breakdown on the CPU (no GPU needed): the built-in model's decode steps split by module
and by generate-loop segment in the traced iterations, hooks kept out of the timed iterations,
a deliberately slow module named as the largest part, and the host path beside each iteration."""

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastprof import benchmark_generate  # noqa: E402
from fastprof.capture import hf  # noqa: E402
from fastprof.capture.host_trace import HostTracer, select_modules  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return hf.build_default_model(num_hidden_layers=4, hidden_size=128, intermediate_size=256,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)


def run(model, **kw):
    inputs = hf.random_inputs(1000, 1, 16, device="cpu", seed=0)
    return benchmark_generate(model, inputs, max_new_tokens=12, warmup=1, iterations=3, stalls=False, **kw)


def test_module_selection_names_the_model_parts(model):
    chosen = [(name, info.kind, info.layer) for name, _, info in select_modules(model)]
    names = {n for n, _, _ in chosen}
    assert ("", "model", None) in chosen and ("model", "model", None) in chosen  # the base model too
    assert "model.embed_tokens" in names and "lm_head" in names and "model.norm" in names
    kinds = {(n, k) for n, k, _ in chosen}
    assert ("model.layers.2", "layer") in kinds
    assert ("model.layers.2.self_attn", "attention") in kinds and ("model.layers.2.mlp", "mlp") in kinds
    assert ("model.layers.2.input_layernorm", "norm") in kinds
    assert "model.layers" not in names  # a ModuleList has no forward of its own
    assert all(layer is not None for n, k, layer in chosen if n.startswith("model.layers."))


def test_cpu_host_section_adds_up_to_the_step(model):
    result = run(model)
    host = result.host
    assert host["available"] and host["iterations"] == 2 and host["decode_steps"] == 2 * 11
    assert host["api"]["available"] is False and "not" in host["api"]["reason"]
    loop, mods = host["loop"], host["modules"]
    assert loop["available"] and mods["available"] and mods["layers"] == 4
    step = host["step_s"]["mean"]
    assert sum(loop["parts_s"].values()) == pytest.approx(step, rel=1e-6)
    assert sum(mods["self_s_by_kind"].values()) == pytest.approx(mods["forward_s"], rel=1e-6)
    # the module times (self times of every hooked module, the model's own code included) plus the
    # generate loop's time outside forward match the measured step
    modules = sum(mods["self_s_by_kind"].values())
    assert modules + loop["outside_forward_s"] == pytest.approx(step, rel=0.10)
    # two independent measures of the forward pass agree: the module marks (the root's enter and
    # exit) and the generate loop's own markers around the call
    assert mods["forward_s"] == pytest.approx(loop["parts_s"]["forward"], rel=0.10)
    assert mods["dropped"] == 0
    # the verdict's host line and the console
    text = str(result)
    assert "host" in text and "decoder layers at" in text and "generate loop" in text
    assert result.host_path["iterations"] and len(result.host_path["iterations"]) == 3
    assert result.host_path["summary"]["python_loop_s"]["p50"] > 0
    # hooks and the loop's wrappers are gone after the run
    assert not any(m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m) for m in model.modules())
    assert "prepare_inputs_for_generation" not in vars(model)
    assert "_update_model_kwargs_for_generation" not in vars(model)


def test_hooks_stay_out_of_the_timed_iterations(model):
    seen = []
    layer = model.model.layers[0]

    class Probe:
        def __call__(self, input_ids, scores):
            seen.append(int("forward" in vars(layer)))
            return scores

    from transformers import LogitsProcessorList

    inputs = hf.random_inputs(1000, 1, 16, device="cpu", seed=0)
    benchmark_generate(model, inputs, max_new_tokens=4, warmup=1, iterations=2, stalls=False,
                       generate_kwargs={"logits_processor": LogitsProcessorList([Probe()])})
    per_iteration = np.asarray(seen).reshape(-1, 4)  # warm-up, 2 timed, 2 traced
    assert per_iteration.shape[0] == 5
    assert (per_iteration[:3] == 0).all() and (per_iteration[3:] == 1).all()


def test_host_trace_off(model):
    result = run(model, host_trace=False, host_path=False)
    assert result.host["available"] is False and "host_trace=False" in result.host["reason"]
    assert result.host_path is None


def test_slow_module_is_named_as_the_largest_part(model):
    slow = model.model.layers[1].mlp
    original = slow.forward

    def sleepy(*args, **kwargs):
        time.sleep(0.02)
        return original(*args, **kwargs)

    slow.forward = sleepy
    try:
        result = run(model)
    finally:
        del slow.forward
    rows = sorted(result.host["modules"]["rows"], key=lambda r: -r["self_s_per_step"])
    assert rows[0]["name"] == "model.layers.1.mlp"
    assert rows[0]["self_s_per_step"] >= 0.02
    assert "model.layers.1.mlp" in str(result)


def test_host_tracer_by_hand(model):
    tracer = HostTracer(model)
    inputs = hf.random_inputs(1000, 1, 8, device="cpu", seed=0)
    with tracer:
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, **tracer.generate_kwargs())
    spans = tracer.take()
    assert len(spans) > 0 and spans.dropped == 0
    assert np.all(np.diff(spans.t_ns) >= 0)
    assert (spans.code == -1).sum() == 3 and (spans.code == -2).sum() == 3  # one per new token
    assert not tracer.attached
