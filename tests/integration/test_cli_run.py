"""fastprof run sweeps: every combination, failures recorded, results kept on Ctrl-C."""

import json
import subprocess
import sys

import fastprof
import fastprof.measure.driver
import pytest
from fastprof import cli
from fastprof.results.sweep import load, validate

FAST = ["--prompt-len", "4", "--max-new-tokens", "3", "--warmup", "0", "--iterations", "2", "--processes", "1", "-q"]


@pytest.fixture(scope="module")
def model_dir(tiny_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    tiny_llama.save_pretrained(d)
    return str(d)


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastprof: error: "), err
    return err


@pytest.mark.parametrize("argv, message", [
    (["run", "--batch-size", ","], "--batch-size: empty list"),
    (["run", "--prompt-len", "8,,16"], "--prompt-len: empty item"),
    (["run", "--max-new-tokens", "4,x"], "--max-new-tokens: expected a positive integer, got 'x'"),
    (["run", "--dtype", "float32,int3"], "--dtype: invalid choice: 'int3'"),
    (["run", "--compile", "maybe"], "--compile: invalid choice: 'maybe'"),
    (["run", "--attn-implementation", "sdpa;rm"], "--attn-implementation: not a valid name"),
])
def test_bad_sweep_values(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in one_error_line(capsys)


def test_sweep_every_combination_and_failures(model_dir, tmp_path, capsys):
    out = tmp_path / "s.json"
    rc = cli.main(["run", "--processes", "1", "--model", model_dir, "--batch-size", "1,2", "--attn-implementation", "eager,bogus",
                   *FAST, "-o", str(out)])
    assert rc == 1  # some configurations failed
    doc = json.loads(out.read_text())
    validate(doc)
    assert doc["kind"] == "sweep" and doc["complete"] is True
    assert doc["parameters"]["batch_size"] == [1, 2]
    assert doc["parameters"]["attn_implementation"] == ["eager", "bogus"]
    runs = doc["runs"]
    assert [(r["config"]["attn_implementation"], r["config"]["batch_size"], r["status"]) for r in runs] == [
        ("eager", 1, "ok"), ("eager", 2, "ok"), ("bogus", 1, "failed"), ("bogus", 2, "failed")]
    assert "bogus" in runs[2]["error"]["message"] and runs[2]["result"] is None
    assert runs[1]["result"]["config"]["batch_size"] == 2
    assert runs[1]["result"]["summary"]["itl_s"]["n"] == 2 * 2
    assert "environment" in doc and "environment" not in runs[0]["result"]
    text = " ".join(capsys.readouterr().out.split())
    assert "failed" in text and "batch_size" in text


def test_any_exception_fails_one_configuration_only(model_dir, tmp_path, monkeypatch):
    real = fastprof.measure.driver.generate_steps
    calls = []

    def flaky(model, inputs, **kwargs):
        calls.append(kwargs["config"]["batch_size"])
        if kwargs["config"]["batch_size"] == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real(model, inputs, **kwargs)

    monkeypatch.setattr(fastprof.measure.driver, "generate_steps", flaky)
    out = tmp_path / "s.json"
    assert cli.main(["run", "--model", model_dir, "--batch-size", "1,2,3", *FAST, "-o", str(out)]) == 1
    sweep = load(out)
    assert calls == [1, 2, 3]
    assert [r.status for r in sweep.runs] == ["ok", "failed", "ok"]
    assert sweep.runs[1].error == {"type": "RuntimeError", "message": "CUDA out of memory. Tried to allocate 80.00 GiB"}


def test_ctrl_c_keeps_finished_configurations(model_dir, tmp_path, monkeypatch, capsys):
    real = fastprof.measure.driver.generate_steps
    seen = []

    def interrupted_on_second(model, inputs, **kwargs):
        seen.append(kwargs["config"]["batch_size"])
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(model, inputs, **kwargs)

    monkeypatch.setattr(fastprof.measure.driver, "generate_steps", interrupted_on_second)
    out = tmp_path / "s.json"
    assert cli.main(["run", "--model", model_dir, "--batch-size", "1,2,3", "--iteration-order", "blocked", *FAST,
                     "-o", str(out)]) == 130
    assert seen == [1, 2]
    doc = json.loads(out.read_text())
    validate(doc)
    assert doc["complete"] is False
    assert [(r["config"]["batch_size"], r["status"]) for r in doc["runs"]] == [(1, "ok")]
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]  # no temporary file left


def test_results_file_is_written_after_each_configuration(model_dir, tmp_path, monkeypatch):
    real = fastprof.measure.driver.generate_steps
    out = tmp_path / "s.json"
    on_disk = []

    def spy(model, inputs, **kwargs):
        on_disk.append(len(json.loads(out.read_text())["runs"]) if out.exists() else None)
        return real(model, inputs, **kwargs)

    monkeypatch.setattr(fastprof.measure.driver, "generate_steps", spy)
    assert cli.main(["run", "--processes", "1", "--model", model_dir, "--max-new-tokens", "2,3", "--prompt-len", "4", "--warmup", "0",
                     "--iterations", "2", "--iteration-order", "blocked", "-q", "-o", str(out)]) == 0
    assert on_disk == [None, 1]
    # Interleaved (the default), the two alternate and finish together: both start before either is written.
    out.unlink()
    on_disk.clear()
    assert cli.main(["run", "--processes", "1", "--model", model_dir, "--max-new-tokens", "2,3", "--prompt-len", "4",
                     "--warmup", "0", "--iterations", "2", "-q", "-o", str(out)]) == 0
    assert on_disk == [None, None] and len(load(out).runs) == 2


def test_compile_on_uses_a_static_cache(model_dir, tmp_path):
    out = tmp_path / "s.json"
    # On the CPU: transformers compiles on GPUs only, and the run must say so.
    assert cli.main(["run", "--model", model_dir, "--compile", "off,on", "--device", "cpu", *FAST,
                     "-o", str(out)]) == 0
    off, on = load(out).runs
    assert off.config["compile"] == "off" and on.config["compile"] == "on"
    assert "cache_implementation" not in off.result.config["generate_kwargs"]
    assert on.result.config["generate_kwargs"]["cache_implementation"] == "static"
    assert any("compiles the forward pass on GPUs only" in w for w in on.result.warnings)  # this is a CPU


def test_attn_implementation_reaches_the_model(model_dir, tmp_path):
    out = tmp_path / "s.json"
    assert cli.main(["run", "--processes", "1", "--model", model_dir, "--attn-implementation", "eager,sdpa", "--dtype", "float32",
                     *FAST, "-o", str(out)]) == 0
    runs = load(out).runs
    assert [r.config["attn_implementation"] for r in runs] == ["eager", "sdpa"]
    assert [r.result.config["attn_implementation"] for r in runs] == ["eager", "sdpa"]


@pytest.mark.parametrize("command, options", [
    ([], ["run", "report", "compare", "export", "env", "monitor", "selftest"]),
    (["run"], ["--batch-size", "--attn-implementation", "--compile", "comma", "Ctrl-C", "--kernel-trace",
               "--kernel-trace-timed", "--processes"]),
    (["report"], ["--html", "--csv", "--markdown", "--metric"]),
    (["compare"], ["--fail-on-regression", "Holm", "--alpha", "--ignore", "--min-effect", "process"]),
    (["export"], ["--trace", "Perfetto"]),
    (["env"], ["--json", "governor"]),
    (["monitor"], ["--interval-ms", "--output", "-- CMD"]),
])
def test_help(command, options):
    p = subprocess.run([sys.executable, "-m", "fastprof.cli", *command, "--help"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for opt in options:
        assert opt in p.stdout, (opt, p.stdout)


def test_selftest_is_a_command_like_the_others(monkeypatch, capsys):
    from fastprof.cli import selftest as selftest_cli

    seen = {}

    def main(args):
        seen["args"] = (args.device, args.sampler_seconds, args.strict)
        return 7

    monkeypatch.setattr(selftest_cli, "main", main)
    assert cli.main(["selftest", "--device", "cpu", "--sampler-seconds", "0.5", "--strict"]) == 7
    assert seen == {"args": ("cpu", 0.5, True)}
    assert cli.main(["selftest", "--nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --nope" in err


def test_kernel_trace_options_reach_benchmark_generate(model_dir, tmp_path, monkeypatch, capsys):
    real = fastprof.measure.driver.generate_steps
    seen = []

    def spy(model, inputs, **kwargs):
        seen.append((kwargs["kernel_trace_iterations"], kwargs["trace_timed"]))
        return real(model, inputs, **kwargs)

    monkeypatch.setattr(fastprof.measure.driver, "generate_steps", spy)
    out = tmp_path / "k.json"
    assert cli.main(["run", "--model", model_dir, *FAST, "--kernel-trace", "3", "--kernel-trace-timed",
                     "-o", str(out)]) == 0
    assert seen == [(3, True)]
    # on the CPU there is no trace, and the result says why
    kernels = json.loads(out.read_text())["kernels"]
    assert kernels["available"] is False and "CUDA GPU" in kernels["reason"]
    assert cli.main(["run", "--model", model_dir, *FAST, "-o", str(out)]) == 0
    assert seen[-1] == (None, False) and "kernels" not in json.loads(out.read_text())
    capsys.readouterr()
    assert cli.main(["run", "--kernel-trace", "-1"]) == 2
    assert "--kernel-trace" in one_error_line(capsys)


def _iteration_order(result_file):
    rows = []
    for run in load(result_file).runs:
        for i, it in enumerate(run.result.iterations):
            rows.append((it["host"]["start_ns"], run.config["batch_size"], i))
    return [r[1:] for r in sorted(rows)]


def test_configurations_of_one_model_alternate_their_timed_iterations(model_dir, tmp_path):
    """--iteration-order interleaved (the default): A B, B A, A B, B A; blocked: A A A A, B B B B."""
    argv = ["run", "--model", model_dir, "--batch-size", "1,2", "--prompt-len", "4", "--max-new-tokens", "3",
            "--warmup", "1", "--iterations", "4", "--processes", "1", "-q"]
    out = tmp_path / "i.json"
    assert cli.main([*argv, "-o", str(out)]) == 0
    assert _iteration_order(out) == [(1, 0), (2, 0), (2, 1), (1, 1), (1, 2), (2, 2), (2, 3), (1, 3)]
    assert all(r.result.config["iteration_order"] == {"interleaved_with": 2} for r in load(out).runs)
    assert cli.main([*argv, "--iteration-order", "blocked", "-o", str(out)]) == 0
    assert _iteration_order(out) == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]
    assert all("iteration_order" not in r.result.config for r in load(out).runs)


def test_round_order_puts_every_arm_at_the_ends_and_in_the_middle():
    from fastprof.measure.driver import round_order

    assert [round_order("AB", r) for r in range(4)] == [list("AB"), list("BA"), list("AB"), list("BA")]
    rounds = [round_order("ABC", r) for r in range(6)]
    assert rounds == [list("ABC"), list("CBA"), list("BCA"), list("ACB"), list("CAB"), list("BAC")]
    # over a whole cycle every arm ran once in each place of a round
    for place in range(3):
        assert sorted(r[place] for r in rounds) == list("AABBCC")
    # reversal alone kept B in the middle for good
    assert all((list("ABC") if r % 2 == 0 else list("CBA"))[1] == "B" for r in range(6))


def test_three_configurations_take_turns_at_the_ends_of_a_round(model_dir, tmp_path):
    argv = ["run", "--model", model_dir, "--batch-size", "1,2,3", "--prompt-len", "4", "--max-new-tokens", "2",
            "--warmup", "0", "--iterations", "4", "--processes", "1", "-q"]
    out = tmp_path / "three.json"
    assert cli.main([*argv, "-o", str(out)]) == 0
    assert [b for b, _ in _iteration_order(out)] == [1, 2, 3, 3, 2, 1, 2, 3, 1, 1, 3, 2]


def test_a_configuration_failing_between_its_iterations_leaves_the_others_whole(model_dir, tmp_path, monkeypatch):
    real = fastprof.measure.driver.generate_steps

    def failing_after_one_timed_iteration(model, inputs, **kwargs):
        steps = real(model, inputs, **kwargs)
        if kwargs["config"]["batch_size"] != 2:
            return steps

        def broken():
            yield next(steps)  # the warm-up
            yield next(steps)  # the first timed iteration
            steps.close()
            raise RuntimeError("device lost")
        return broken()

    monkeypatch.setattr(fastprof.measure.driver, "generate_steps", failing_after_one_timed_iteration)
    out = tmp_path / "f.json"
    assert cli.main(["run", "--model", model_dir, "--batch-size", "1,2,3", "--prompt-len", "4", "--max-new-tokens",
                     "3", "--warmup", "0", "--iterations", "3", "--processes", "1", "-q", "-o", str(out)]) == 1
    runs = load(out).runs
    assert [r.status for r in runs] == ["ok", "failed", "ok"]
    assert runs[1].error == {"type": "RuntimeError", "message": "device lost"}
    assert [len(runs[i].result.iterations) for i in (0, 2)] == [3, 3]


def test_generate_steps_yields_each_step_and_returns_the_result(tiny_llama):
    import torch

    from fastprof.measure.driver import generate_steps

    ids = torch.randint(0, 256, (1, 4))
    steps = generate_steps(tiny_llama, ids, max_new_tokens=3, warmup=2, iterations=3, kernel_trace_iterations=0)
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as done:
            result = done.value
            break
    assert seen == ["warm", "timed", "timed", "timed", "measured"]  # measured: its last iteration has run
    assert len(result.iterations) == 3 and result.summary["itl_s"]["n"] == 6


def test_compare_by_pairs_alternating_iterations_of_one_process(model_dir, tmp_path, capsys, monkeypatch):
    """--processes 1 with two settings of one model: compare --by pairs each iteration of B with
    A's of the same round, and a 20 ms delay per step in B is found."""
    out = tmp_path / "by.json"
    argv = ["run", "--model", model_dir, "--max-new-tokens", "4", "--prompt-len", "4", "--warmup", "1",
            "--iterations", "6", "--processes", "1", "-q"]
    # B differs from A in its token count, and a delay is injected into B alone.
    real = fastprof.measure.driver.generate_steps

    def slow_b(model, inputs, **kwargs):
        if kwargs["max_new_tokens"] == 5:
            import time

            from transformers import LogitsProcessor, LogitsProcessorList

            class Slow(LogitsProcessor):
                def __call__(self, input_ids, scores):
                    time.sleep(0.02)
                    return scores

            kwargs["generate_kwargs"] = {**kwargs["generate_kwargs"], "logits_processor": LogitsProcessorList([Slow()])}
        return real(model, inputs, **kwargs)

    monkeypatch.setattr(fastprof.measure.driver, "generate_steps", slow_b)
    assert cli.main([*argv, "--max-new-tokens", "4,5", "-o", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(out), "--by", "max_new_tokens", "--metric", "itl_s", "--covariate", "none",
                     "--json", str(tmp_path / "c.json")]) == 0
    text = capsys.readouterr().out
    assert "paired by round of alternating iterations" in text, text
    row = json.loads((tmp_path / "c.json").read_text())["comparisons"][0]["rows"][0]
    assert row["paired"] is True and row["unit"] == "iteration" and row["n_a"] == row["n_b"] == 6
    assert row["verdict"] == "regression" and row["ratio"] > 1.5
