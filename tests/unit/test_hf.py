"""benchmark_generate through the real transformers generate, with a tiny random Llama on the CPU."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import fastprof  # noqa: E402
from fastprof import OutputLengthError  # noqa: E402
from fastprof.capture.hf import random_inputs  # noqa: E402


def inputs(batch=1, prompt=8):
    return random_inputs(256, batch, prompt, seed=1)


def test_benchmark_generate_counts_every_token(tiny_llama, tmp_path):
    r = fastprof.benchmark_generate(tiny_llama, inputs(batch=2, prompt=8), max_new_tokens=6, warmup=1, iterations=3)
    assert r.kind == "generate"
    assert r.config["batch_size"] == 2 and r.config["prompt_len"] == 8 and r.config["max_new_tokens"] == 6
    assert r.summary["e2e_latency_s"]["n"] == 3
    assert r.summary["itl_s"]["n"] == 3 * 5  # N-1 gaps per iteration
    for it in r.iterations:
        marks = it["host"]["marks_ns"]
        assert len(marks) == 6 and marks == sorted(marks)
        assert 0 < marks[0] and marks[-1] <= it["host"]["end_ns"] - it["host"]["start_ns"]
    # Throughput is batch * tokens / e2e.
    e2e = [(it["host"]["end_ns"] - it["host"]["start_ns"]) * 1e-9 for it in r.iterations]
    assert r.summary["throughput_tokens_per_s"]["p50"] == pytest.approx(float(np.median([12 / x for x in e2e])))
    assert r.device_summary is None and "cpu" in r.device_timing["reason"]
    data = json.loads(r.save(tmp_path / "r.json").read_text())
    assert data["environment"]["versions"]["torch"] == torch.__version__


def test_device_events_come_from_the_logits_processor(tiny_llama, fake_gpu):
    # A CPU model, but device timing forced through the fake driver: proves the hook wiring.
    records = fake_gpu.calls("cuEventRecord")
    r = fastprof.benchmark_generate(tiny_llama, inputs(), max_new_tokens=5, warmup=0, iterations=2, device="cuda:0",
                                    kernel_trace_iterations=0)  # the timed iterations only
    assert r.device_timing["available"], r.device_timing
    assert fake_gpu.calls("cuEventRecord") - records == 2 * (5 + 2)  # tokens + start + end per iteration
    assert r.device_summary["itl_s"]["n"] == 2 * 4
    for it in r.iterations:
        dev = it["device"]["marks_ns"]
        assert len(dev) == 5 and dev == sorted(dev) and dev[-1] <= it["device"]["end_ns"]


def test_user_logits_processors_are_kept(tiny_llama):
    from transformers import LogitsProcessor, LogitsProcessorList

    seen = []

    class Spy(LogitsProcessor):
        def __call__(self, input_ids, scores):
            seen.append(1)
            return scores

    fastprof.benchmark_generate(tiny_llama, inputs(), max_new_tokens=3, warmup=0, iterations=1,
                                generate_kwargs={"logits_processor": LogitsProcessorList([Spy()])})
    assert len(seen) == 3 * (1 + 2)  # kept in the timed iteration and in the 2 traced ones (host trace)


def test_wrong_output_length_raises_and_is_not_recorded(tiny_llama, monkeypatch):
    real = tiny_llama.generate
    state = {"n": 0}

    def short_generate(**kw):
        state["n"] += 1
        out = real(**kw)
        return out[:, :-1] if state["n"] == 2 else out

    monkeypatch.setattr(tiny_llama, "generate", short_generate)
    with pytest.raises(OutputLengthError) as info:
        fastprof.benchmark_generate(tiny_llama, inputs(), max_new_tokens=4, warmup=0, iterations=3)
    assert info.value.expected == 4 and info.value.actual == 3
    assert "expected 4" in str(info.value) and "got 3" in str(info.value)


def test_eos_cannot_shorten_an_iteration():
    # A model whose greedy choice is always token 0, declared as EOS: without min_new_tokens
    # generation would stop after one token.
    from fastprof.capture.hf import build_default_model

    model = build_default_model(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=1, vocab_size=64)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    r = fastprof.benchmark_generate(model, random_inputs(64, 1, 4), max_new_tokens=4, warmup=0, iterations=1,
                                    generate_kwargs={"eos_token_id": 0, "pad_token_id": 0})
    assert len(r.iterations[0]["host"]["marks_ns"]) == 4


def test_streamer_in_generate_kwargs_is_refused(tiny_llama):
    with pytest.raises(ValueError, match="streamer"):
        fastprof.benchmark_generate(tiny_llama, inputs(), max_new_tokens=2, iterations=1,
                                    generate_kwargs={"streamer": object()})


def test_hand_written_decode_loop_gives_the_same_metrics(tiny_llama):
    """The public recorder in a manual greedy loop with a KV cache."""
    rec = fastprof.TokenRecorder(capacity=16, device=None)
    ids = inputs()["input_ids"]
    traces = []
    with torch.inference_mode():
        for _ in range(3):
            rec.begin()
            out = tiny_llama(input_ids=ids, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            rec.mark()
            for _ in range(5):
                out = tiny_llama(input_ids=tok, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                rec.mark()
            traces.append(rec.end())
    r = fastprof.summarize_generation(traces, batch_size=1, prompt_len=8)
    assert r.summary["itl_s"]["n"] == 3 * 5 and r.summary["ttft_s"]["n"] == 3
    assert r.config["max_new_tokens"] == 6


def test_device_mark_processor_answers_signature_inspection_cheaply():
    """LogitsProcessorList calls inspect.signature(processor.__call__) at every token."""
    import inspect

    from fastprof.capture.hf import make_hooks

    rec = fastprof.TokenRecorder(capacity=4, device=None)
    _, processor = make_hooks(rec)
    assert list(inspect.signature(processor.__call__).parameters) == ["input_ids", "scores"]
    scores = object()
    rec.begin()
    assert processor(None, scores) is scores and processor.__call__(None, scores) is scores
    rec.end()

    # The ready-made signature object itself comes back: no per-call signature computation
    # (that computation on a bound method costs ~15 us a token; bench/observer_effect.py times it).
    from fastprof.capture.hf import _TWO_ARGS

    assert inspect.signature(processor.__call__) is _TWO_ARGS
