"""fastprof run --serving through the real command and transformers' continuous batching (CPU)."""

import inspect
import json
import time

import fastprof
import numpy as np
import pytest
from fastprof import cli
from fastprof.analysis.serving import arrival_offsets, request_metrics
from fastprof.results.sweep import load, validate

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_dir(tiny_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    tiny_llama.save_pretrained(d)
    return str(d)


def serve(model_dir, out, *extra):
    return cli.main(["run", "--serving", "--model", model_dir, "--prompt-len", "8", "--max-new-tokens", "3",
                     "--warmup-requests", "1", "--no-manager-warmup", "--seed", "3", "-q", "-o", str(out), *extra])


def test_two_rates_every_request_accounted(model_dir, tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert serve(model_dir, out, "--rate", "20,200", "--num-requests", "4", "--slo-ttft-ms", "5000") == 0
    printed = capsys.readouterr().out
    assert "serving curve" in printed and "knee" in printed
    validate(json.loads(out.read_text()))
    sweep = load(str(out))
    assert [r.config["rate"] for r in sweep.runs] == [20.0, 200.0]
    for run in sweep.runs:
        s = run.result.serving
        reqs = s["requests"]
        assert sorted(r["request"] for r in reqs) == [0, 1, 2, 3]
        assert s["counts"]["total"] == 4 and sum(s["counts"][k] for k in ("finished", "running", "queued",
                                                                            "failed")) == 4
        assert all(r["status"] == "finished" and len(r["token_ns"]) == 3 for r in reqs)
        # The seeded schedule: the arrivals are the window start plus the seeded offsets.
        offsets = (np.array([r["arrival_ns"] for r in reqs]) - s["window_start_ns"]) / 1e9
        assert np.allclose(offsets, arrival_offsets(4, rate=s["rate"], seed=3), atol=1e-9)
        for r in reqs:  # the derived figures follow from the raw times
            assert r["ttft_s"] == pytest.approx((r["token_ns"][0] - r["arrival_ns"]) / 1e9)
            assert r["e2e_s"] == pytest.approx((r["token_ns"][-1] - r["arrival_ns"]) / 1e9)
            assert r["queue_s"] == request_metrics(r)["queue_s"]
            assert r["arrival_ns"] <= r["submit_ns"] <= r["token_ns"][0] <= s["window_end_ns"]
        ttfts = [r["ttft_s"] for r in reqs]
        assert run.result.summary["ttft_s"]["p50"] == pytest.approx(float(np.median(ttfts)))
        assert s["request_throughput_per_s"] == pytest.approx(4 / s["window_s"])
    # compare matches the runs by rate
    assert cli.main(["compare", str(out), str(out)]) == 0


def test_seeded_schedule_repeats(tiny_llama):
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    runs = [fastprof.benchmark_serving(tiny_llama, prompts, rate=100, num_requests=3, max_new_tokens=2,
                                       warmup_requests=0, manager_warmup=False, seed=11) for _ in range(2)]
    rel = [np.array([r["arrival_ns"] for r in x.serving["requests"]]) - x.serving["window_start_ns"] for x in runs]
    assert np.array_equal(rel[0], rel[1])
    assert np.allclose(rel[0] / 1e9, arrival_offsets(3, rate=100, seed=11), atol=1e-9)


def test_token_times_are_on_fastprofs_clock(tiny_llama):
    """transformers stamps tokens with time.perf_counter(); on Linux that is CLOCK_MONOTONIC, fastprof's
    clock: the stamps must fall between each request's submission and the call's return."""
    assert abs(time.perf_counter_ns() - fastprof.monotonic_ns()) < 1_000_000
    before = fastprof.monotonic_ns()
    res = fastprof.benchmark_serving(tiny_llama, [[5, 6, 7, 8]], rate=50, num_requests=3, max_new_tokens=3,
                                     warmup_requests=0, manager_warmup=False)
    after = fastprof.monotonic_ns()
    from transformers.generation.continuous_batching import ContinuousBatchingManager

    has_stamps = "record_timestamps" in inspect.signature(ContinuousBatchingManager.add_request).parameters
    assert res.serving["token_clock"] == ("transformers" if has_stamps else "host")
    for r in res.serving["requests"]:
        toks = r["token_ns"]
        assert before <= r["submit_ns"] <= toks[0] and toks == sorted(toks) and toks[-1] <= after


def test_duration_window_counts_unfinished(tiny_llama):
    res = fastprof.benchmark_serving(tiny_llama, [[5, 6, 7, 8]], rate=400, duration=0.05, max_new_tokens=40,
                                     warmup_requests=0, manager_warmup=False, seed=2)
    s = res.serving
    assert s["counts"]["total"] == len(s["requests"]) == int(np.sum(arrival_offsets(200, rate=400, seed=2) < 0.05))
    assert s["counts"]["running"] + s["counts"]["queued"] >= 1  # 40 tokens cannot all be out in 50 ms here
    end = s["window_end_ns"]
    assert all(t <= end for r in s["requests"] for t in r["token_ns"])


def test_unsupported_attention_is_one_line_exit_2(model_dir, tmp_path, capsys):
    assert serve(model_dir, tmp_path / "x.json", "--rate", "5", "--num-requests", "2",
                 "--attn-implementation", "flex_attention") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastprof: error: --serving:"), err


@pytest.mark.parametrize("argv, message", [
    (["run", "--rate", "5"], "--rate: needs --serving"),
    (["run", "--serving"], "--serving needs --rate"),
    (["run", "--serving", "--rate", "0"], "--rate: must be a positive number"),
    (["run", "--serving", "--rate", "1", "--arrival", "burst", "--duration", "2"], "burst needs --num-requests"),
    (["run", "--serving", "--rate", "1", "--prompt-len", "4,8"], "--prompt-len: --serving sweeps rates only"),
])
def test_bad_serving_input(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
