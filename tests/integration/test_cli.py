import json
import subprocess
import sys

import pytest

from fastprof import cli


@pytest.mark.parametrize("argv, message", [
    (["run", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (["run", "--iterations", "-3"], "--iterations: must be at least 1"),
    (["run", "--max-new-tokens", "x"], "--max-new-tokens: expected a positive integer"),
    (["run", "--warmup", "-1"], "--warmup: must be 0 or more"),
    (["run", "--dtype", "int3"], "--dtype: invalid choice"),
    (["run", "--model", "/no/such/model"], "--model: '/no/such/model' is not a directory"),
    (["run", "--device", "tpu"], "--device"),
    (["run", "--bogus"], "unrecognized arguments"),
    (["run", "--sample-interval-ms", "5000"], "--sample-interval-ms: must be 1 to 1000"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastprof: error: ") and message in err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "run" in capsys.readouterr().out


def test_help_exits_0():
    p = subprocess.run([sys.executable, "-m", "fastprof.cli", "run", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--max-new-tokens" in p.stdout and "built-in" in p.stdout


def test_model_dir_that_is_not_a_model(tmp_path, capsys):
    pytest.importorskip("transformers")
    assert cli.main(["run", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("fastprof: error:")]
    assert len(errors) == 1 and "cannot load" in errors[0] and "Traceback" not in err


def test_cli_run_writes_results(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "res.json"
    p = subprocess.run(
        [sys.executable, "-m", "fastprof.cli", "run", "--processes", "1", "--prompt-len", "8", "--max-new-tokens", "4", "--warmup", "1",
         "--iterations", "2", "--output", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert p.returncode == 0, p.stderr
    assert "ttft" in p.stdout
    data = json.loads(out.read_text())
    assert data["config"]["model"] == "fastprof-builtin-llama"
    assert data["config"]["max_new_tokens"] == 4 and data["summary"]["itl_s"]["n"] == 2 * 3


def test_cli_run_local_model_dir(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path / "m")
    out = tmp_path / "r.json"
    assert cli.main(["run", "--processes", "1", "--model", str(tmp_path / "m"), "--prompt-len", "4", "--max-new-tokens", "3",
                     "--warmup", "0", "--iterations", "2", "-o", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["config"]["model"] == str(tmp_path / "m")
