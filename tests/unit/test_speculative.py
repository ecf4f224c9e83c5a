"""Speculative decoding through the real transformers generate, with a tiny random Llama on the CPU:
steps that emit several tokens, acceptance, the draft and the verification apart."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import fastprof  # noqa: E402
from fastprof.analysis import speculative as spec  # noqa: E402
from fastprof.capture.hf import random_inputs  # noqa: E402

NEW = 24
#: A constant draft length: transformers' default also stops a draft early when the draft model's
#: confidence is low (always, with random weights), which would hide the draft length.
CONSTANT = {"num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.0}


def inputs(prompt=8, seed=1):
    return random_inputs(256, 1, prompt, seed=seed)


def run(model, kwargs, *, new=NEW, prompt=None, iterations=2, **extra):
    return fastprof.benchmark_generate(model, prompt if prompt is not None else inputs(), max_new_tokens=new,
                                       warmup=1, iterations=iterations, generate_kwargs=kwargs,
                                       sample_interval_ms=None, kernel_trace_iterations=0, **extra)


def step_tokens(result):
    return [np.asarray(it["steps"]["tokens"]) for it in result.iterations]


@pytest.mark.parametrize("k", [2, 4])
def test_self_speculation_accepts_every_draft(tiny_llama, k):
    r = run(tiny_llama, {"assistant_model": tiny_llama, "num_assistant_tokens": k, **CONSTANT})
    assert r.steps["method"] == "assistant" and r.steps["speculative"]
    assert r.steps["acceptance_rate"] == 1.0
    for tokens in step_tokens(r):
        assert tokens.sum() == NEW
        # Every step emits the draft plus the target's own token, until the end shortens the draft.
        full = np.flatnonzero(tokens != k + 1)
        assert full.size <= 1 and (full.size == 0 or full[0] == tokens.size - 1), tokens
    assert r.summary["acceptance_rate"]["p50"] == 1.0
    assert r.summary["tokens_per_step"]["mean"] == pytest.approx(NEW / np.mean([t.size for t in step_tokens(r)]))
    # Per token, the counts of plain decoding: N marks, N - 1 gaps, a step's tokens at one time.
    assert r.summary["itl_s"]["n"] == 2 * (NEW - 1)
    for it, tokens in zip(r.iterations, step_tokens(r)):
        marks = np.asarray(it["host"]["marks_ns"])
        assert marks.size == NEW
        ends = np.cumsum(tokens) - 1
        starts = np.concatenate([[0], ends[:-1] + 1])
        for a, b in zip(starts, ends):
            assert np.all(marks[a:b + 1] == marks[b])
    # The draft and the verification inside each step.
    h = r.steps["host"]
    assert h["draft_s"] > 0 and h["verify_s"] > 0
    assert h["draft_s"] + h["verify_s"] <= h["step_s"] * 1.0001
    assert r.config["draft"]["assistant_model"] == "self" and r.config["draft"]["num_assistant_tokens"] == k


def test_assistant_settings_are_put_back(tiny_llama):
    before = tiny_llama.generation_config.num_assistant_tokens
    run(tiny_llama, {"assistant_model": tiny_llama, "num_assistant_tokens": 3, **CONSTANT}, iterations=1, new=6)
    assert tiny_llama.generation_config.num_assistant_tokens == before
    assert "_get_candidate_generator" not in tiny_llama.__dict__


def test_prompt_lookup_accepts_drafts_on_a_repeated_ngram(tiny_llama):
    ngram = torch.tensor([[17, 42, 99, 7]])
    ids = ngram.repeat(1, 6)
    prompt = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    r = run(tiny_llama, {"prompt_lookup_num_tokens": 3}, prompt=prompt)
    assert r.steps["method"] == "prompt_lookup"
    for tokens in step_tokens(r):
        assert tokens.sum() == NEW
    assert r.steps["accepted"] > 0 and r.steps["acceptance_rate"] > 0
    assert r.steps["tokens_per_step"]["mean"] > 1
    assert r.config["draft"]["prompt_lookup_num_tokens"] == 3


def test_plain_decoding_is_one_token_per_step(tiny_llama):
    r = run(tiny_llama, {})
    assert r.steps["method"] == "none" and not r.steps["speculative"]
    assert r.steps["tokens_per_step"] == {"mean": 1.0, "distribution": {"1": 2 * NEW}}
    assert r.steps["acceptance_rate"] is None
    assert r.steps["host"]["step_s"] == pytest.approx(r.summary["itl_s"]["mean"])
    # No step metrics in a plain result's summary: comparisons of plain runs test what they did.
    assert "step_s" not in r.summary and "steps" not in r.iterations[0]


def test_device_marks_one_per_step_behind_the_verification(tiny_llama, fake_gpu):
    records = fake_gpu.calls("cuEventRecord")
    r = run(tiny_llama, {"assistant_model": tiny_llama, "num_assistant_tokens": 3, **CONSTANT}, device="cuda:0")
    assert r.device_timing["available"], r.device_timing
    steps = sum(t.size for t in step_tokens(r))
    # Per iteration: start and end of each recorder, a mark per step, two draft marks per step.
    assert fake_gpu.calls("cuEventRecord") - records == 3 * 4 + 3 * steps * 3 // 2
    for it, tokens in zip(r.iterations, step_tokens(r)):
        assert len(it["device"]["marks_ns"]) == NEW
        assert len(it["steps"]["draft_device_ns"]) == 2 * tokens.size
    assert "step_s" in r.device_summary and "draft_s" in r.device_summary


def test_steps_survive_the_results_file(tiny_llama, tmp_path):
    from fastprof.results.sweep import load

    r = run(tiny_llama, {"assistant_model": tiny_llama, "num_assistant_tokens": 2, **CONSTANT}, new=8)
    path = r.save(tmp_path / "r.json")
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == fastprof.SCHEMA_VERSION == 5
    loaded = load(path).runs[0].result
    assert loaded.steps["acceptance_rate"] == 1.0
    again = spec.section(loaded.traces())
    assert again["tokens_per_step"] == r.steps["tokens_per_step"]
    assert again["host"]["draft_s"] == pytest.approx(r.steps["host"]["draft_s"])


def test_expand_gives_each_token_its_step_time():
    from fastprof.capture.speculative import expand

    host, dev = expand(np.array([10, 20, 30]), np.array([1, 2, 3]), np.array([1, 3, 2]))
    assert host.tolist() == [10, 20, 20, 20, 30, 30] and dev.tolist() == [1, 2, 2, 2, 3, 3]
    # Device marks that are not one per step stay as they are (device timing is then unavailable).
    assert expand(np.array([10, 20]), np.array([1]), np.array([2, 1]))[1].tolist() == [1]


def test_output_length_error_names_both_counts():
    err = fastprof.OutputLengthError(24, 12, "the streamer saw a different number of tokens")
    assert "expected 24" in str(err) and "got 12" in str(err)


def test_speedup_iterations_and_processes():
    base = {"e2e_latency_s": np.array([2.0, 2.1, 1.9, 2.0]), "tpot_s": np.array([0.2, 0.21, 0.19, 0.2])}
    fast = {"e2e_latency_s": np.array([1.0, 1.05, 0.95, 1.0]), "tpot_s": np.array([0.1, 0.1, 0.1, 0.1])}
    s = spec.speedup(base, fast)
    assert s["e2e_latency_s"]["ratio"] == pytest.approx(2.0) and s["e2e_latency_s"]["unit"] == "iteration"
    assert s["e2e_latency_s"]["ci95_low"] <= 2.0 <= s["e2e_latency_s"]["ci95_high"]
    p = np.array([0, 0, 1, 1])
    s = spec.speedup(base, fast, base_process=p, spec_process=p)
    assert s["e2e_latency_s"]["unit"] == "process" and s["e2e_latency_s"]["n"] == 2
    assert s["e2e_latency_s"]["ratio"] == pytest.approx(2.0, rel=0.01)


@pytest.fixture(scope="module")
def model_dir(tiny_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    tiny_llama.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def spec_file(model_dir, tmp_path_factory):
    from fastprof import cli

    out = tmp_path_factory.mktemp("spec") / "s.json"
    rc = cli.main(["run", "--model", model_dir, "--assistant-model", "builtin,self", "--num-assistant-tokens", "2",
                   "--prompt-lookup", "2", "--prompt-len", "8", "--max-new-tokens", "8", "--warmup", "1",
                   "--iterations", "3", "--processes", "1", "--kernel-trace", "0", "-q", "-o", str(out)])
    assert rc == 0
    return out


def test_run_sweeps_speculative_axes_beside_plain_decoding(spec_file):
    from fastprof.results.sweep import load, validate

    validate(json.loads(spec_file.read_text()))
    sweep = load(spec_file)
    assert [r.config["speculative"] for r in sweep.runs] == ["none", "draft=builtin k=2", "draft=self k=2", "lookup=2"]
    plain, builtin, self_, lookup = (r.result for r in sweep.runs)
    assert plain.steps["method"] == "none" and "speedup" not in plain.steps
    assert builtin.steps["method"] == "assistant" and self_.steps["acceptance_rate"] == 1.0
    assert lookup.steps["method"] == "prompt_lookup"
    for r in (builtin, self_, lookup):
        assert r.steps["speedup"]["baseline"] == "speculative=none"
        assert r.steps["speedup"]["e2e_latency_s"]["ratio"] > 0
    assert any("random weights" in w for w in builtin.warnings)
    assert not any("random weights" in w for w in self_.warnings)


def test_reports_show_steps_acceptance_and_speedup(spec_file):
    from rich.console import Console

    from fastprof.report import html_report, print_console
    from fastprof.results.sweep import load

    sweep = load(spec_file)
    console = Console(width=160, record=True, file=open("/dev/null", "w"))
    print_console(sweep, console=console)
    text = console.export_text()
    assert "speculative decoding" in text and "tokens/step" in text and "draft=self k=2" in text and "100%" in text
    one = Console(width=160, record=True, file=open("/dev/null", "w"))
    one.print(sweep.runs[2].result)
    text = one.export_text()
    assert "tokens per step" in text and "acceptance 100%" in text and "speed-up against plain decoding" in text
    html = html_report(sweep)
    assert "<h2>Speculative decoding</h2>" in html
    assert "against the draft length" in html and "Speed-up against plain decoding" in html


def test_compare_tests_step_metrics(spec_file):
    from fastprof.report.compare import compare_sweeps
    from fastprof.results.sweep import load

    a = load(spec_file)
    c = compare_sweeps(a, load(spec_file))
    metrics = {(r.config, r.metric): r for r in c.rows}
    self_rows = {m: r for (cfg, m), r in metrics.items() if "self" in cfg}
    for m in ("step_s", "tokens_per_step", "acceptance_rate", "draft_s", "verify_s", "itl_s"):
        assert m in self_rows and self_rows[m].n_a == 3, m
    assert self_rows["tokens_per_step"].ratio == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--num-assistant-tokens", "4"], "--num-assistant-tokens: needs --assistant-model"),
    (["--assistant-model", "builtin", "--batch-size", "1,2"], "batch size 1 only"),
    (["--assistant-model", "/no/such/dir"], "is not a directory"),
    (["--assistant-model", "self", "--num-assistant-tokens", "0"], "must be at least 1"),
    (["--prompt-lookup", "x"], "--prompt-lookup: expected a positive integer"),
    (["--prompt-lookup", "3", "--compile", "off,on"], "does not combine with --compile on"),
])
def test_bad_speculative_options(argv, message, capsys):
    from fastprof import cli

    assert cli.main(["run", "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err
