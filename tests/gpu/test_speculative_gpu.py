"""Speculative decoding on a real GPU (marked gpu; skipped without one): self-speculation accepts
its drafts, prompt lookup on a repeated n-gram accepts drafts, plain decoding is one token per
step, every run reaches the requested length, and the device's step marks bracket the host's."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

NEW = 32
CONSTANT = {"num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.0}


@pytest.fixture(scope="module")
def model(torch_cuda):
    from fastprof.capture import hf

    # float32 and eager attention: the draft (one token a forward pass) and the verification (k + 1
    # tokens in one) then compute the same logits closely enough that greedy choices agree.
    return hf.build_default_model(dtype=torch_cuda.float32, device="cuda", attn_implementation="eager")


def run(model, kwargs, *, prompt=None, iterations=3, kernel_trace_iterations=0):
    from fastprof import benchmark_generate
    from fastprof.capture import hf

    inputs = prompt if prompt is not None else hf.random_inputs(int(model.config.vocab_size), 1, 32, device="cuda",
                                                                seed=0)
    return benchmark_generate(model, inputs, max_new_tokens=NEW, warmup=2, iterations=iterations,
                              generate_kwargs=kwargs, kernel_trace_iterations=kernel_trace_iterations)


def steps_of(result):
    return [np.asarray(it["steps"]["tokens"]) for it in result.iterations]


def check_brackets(result, tol_ns=50_000):
    """Each step's device mark (the verification's logits ready on the GPU, anchored at the
    iteration's host start) lies between the previous step's tokens reaching the host and its own;
    the device's mean step time matches the host's."""
    for trace in result.traces():
        tokens = np.asarray(trace.steps["tokens"]) if trace.steps is not None else np.ones(trace.n_marks, int)
        ends = np.cumsum(tokens) - 1
        host = (trace.host_marks_ns - trace.host_start_ns)[ends]
        dev = trace.device_marks_ns[ends]
        assert np.all(dev <= host + tol_ns), (dev - host).max()
        assert np.all(dev[1:] >= host[:-1] - tol_ns), (host[:-1] - dev[1:]).max()
    h, d = result.summary, result.device_summary
    name = "step_s" if "step_s" in h else "itl_s"
    assert d[name]["mean"] == pytest.approx(h[name]["mean"], rel=0.1)


@pytest.mark.parametrize("k", [2, 4])
def test_self_speculation_on_cuda(model, k):
    r = run(model, {"assistant_model": model, "num_assistant_tokens": k, **CONSTANT}, kernel_trace_iterations=2)
    assert r.device_timing["available"], r.device_timing
    # Every draft token accepted, up to the rare greedy tie that the GPU's kernels for one token and
    # for k + 1 tokens break differently.
    assert r.steps["acceptance_rate"] >= 0.98
    for tokens in steps_of(r):
        assert tokens.sum() == NEW
        assert np.mean(tokens[:-1] == k + 1) >= 0.9, tokens
    check_brackets(r)
    dev, host = r.steps["device"], r.steps["host"]
    assert dev["draft_s"] > 0 and dev["verify_s"] > 0
    assert dev["draft_s"] + dev["verify_s"] <= host["step_s"] * 1.05
    split = r.steps["traced"]["kernels"]
    assert split["draft_busy_s_per_step"] > 0 and split["verify_busy_s_per_step"] > 0, split
    # The draft runs k forward passes, the verification one.
    assert split["draft_kernels_per_step"] > split["verify_kernels_per_step"]


def test_prompt_lookup_on_a_repeated_ngram_on_cuda(model, torch_cuda):
    ids = torch_cuda.tensor([[17, 42, 99, 7]], device="cuda").repeat(1, 8)
    r = run(model, {"prompt_lookup_num_tokens": 3}, prompt={"input_ids": ids, "attention_mask": torch_cuda.ones_like(ids)})
    for tokens in steps_of(r):
        assert tokens.sum() == NEW
    assert r.steps["proposed"] > 0 and r.steps["accepted"] > 0
    check_brackets(r)


def test_plain_decoding_one_token_per_step_on_cuda(model):
    r = run(model, {})
    assert r.steps["method"] == "none" and r.steps["tokens_per_step"]["distribution"] == {"1": 3 * NEW}
    check_brackets(r)


def test_builtin_draft_runs_to_length_on_cuda(model, torch_cuda):
    from fastprof.capture import hf

    draft = hf.build_default_draft(dtype=torch_cuda.float32, device="cuda", target=model)
    r = run(model, {"assistant_model": draft, "num_assistant_tokens": 4, **CONSTANT})
    for tokens in steps_of(r):
        assert tokens.sum() == NEW
    assert r.steps["proposed_per_step"] > 3
    check_brackets(r)
