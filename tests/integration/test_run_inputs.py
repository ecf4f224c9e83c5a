"""`fastprof run` answers bad input up front whatever the hardware, and measures beam search end to end."""

import json

import numpy as np

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import fastprof  # noqa: E402
from fastprof import cli  # noqa: E402
from fastprof.capture.hf import random_inputs  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tiny_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_llama.save_pretrained(d)
    return str(d)


def one_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastprof: error: "), err
    return err


@pytest.mark.parametrize("value, ok", [("0", True), ("1", True), ("1000", True), ("1001", False), ("-1", False),
                                       ("x", False)])
def test_sample_interval_is_checked_by_the_parser(value, ok, capsys):
    from fastprof.cli import build_parser

    if ok:
        assert build_parser().parse_args(["run", "--sample-interval-ms", value]).sample_interval_ms == int(value)
    else:
        assert cli.main(["run", "--sample-interval-ms", value, "--device", "cpu"]) == 2
        assert "--sample-interval-ms" in one_error(capsys)


def test_the_api_checks_the_interval_before_measuring():
    with pytest.raises(ValueError, match="1 to 1000"):
        fastprof.benchmark(lambda: None, iterations=1, sample_interval_ms=0)


def test_prompt_beyond_the_models_positions_exits_2_at_once(model_dir, capsys, tmp_path):
    out = tmp_path / "r.json"
    # The tiny model has 512 positions; the built-in one 4096.
    assert cli.main(["run", "--model", model_dir, "--prompt-len", "500", "--max-new-tokens", "13", "--device", "cpu",
                     "-o", str(out)]) == 2
    assert "513 positions" in one_error(capsys) and not out.exists()
    assert cli.main(["run", "--prompt-len", "100000", "--device", "cpu", "-o", str(out)]) == 2
    assert "max_position_embeddings 4096" in one_error(capsys) and not out.exists()


def test_beam_search_is_measured_end_to_end(tiny_llama):
    inputs = random_inputs(256, 2, 5)
    r = fastprof.benchmark_generate(tiny_llama, inputs, max_new_tokens=4, warmup=0, iterations=2,
                                    generate_kwargs={"num_beams": 3}, sample_interval_ms=None)
    assert set(r.summary) == {"e2e_latency_s", "throughput_tokens_per_s"}
    per_iteration = [2 * 4 / ((t.host_end_ns - t.host_start_ns) / 1e9) for t in r.traces()]
    assert r.summary["throughput_tokens_per_s"]["p50"] == pytest.approx(float(np.median(per_iteration)))
    assert r.config["per_token_marks"] is False
    assert any("beam search" in w for w in r.warnings)


def test_beam_search_through_the_command_and_its_report(model_dir, tmp_path, capsys):
    out = tmp_path / "beam.json"
    assert cli.main(["run", "--processes", "1", "--model", model_dir, "--num-beams", "2", "--prompt-len", "4", "--max-new-tokens", "3",
                     "--warmup", "0", "--iterations", "2", "--device", "cpu", "-q", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["num_beams"] == 2 and "itl_s" not in doc["summary"]
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    assert "e2e_latency" in capsys.readouterr().out
