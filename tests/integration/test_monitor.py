"""fastprof monitor: a command under the sampler (fake NVML), its exit code passed through."""

import json
import sys

import pytest

from fastprof import cli
from sampler_fixtures import fake_nvml, fake_nvml_path  # noqa: F401


@pytest.fixture
def nvml_index_order(monkeypatch):
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def test_monitor_samples_and_passes_the_exit_code(fake_nvml, nvml_index_order, tmp_path, capsys):  # noqa: F811
    fake_nvml.set(0, "power_instant_mw", 123_000)
    fake_nvml.set(0, "util_gpu", 77)
    out = tmp_path / "t.json"
    cmd = [sys.executable, "-c", "import time, sys; time.sleep(0.3); sys.exit(3)"]
    assert cli.main(["monitor", "--interval-ms", "5", "-o", str(out), "--", *cmd]) == 3
    doc = json.loads(out.read_text())
    assert doc["kind"] == "monitor" and doc["command"] == cmd and doc["exit_code"] == 3
    assert doc["available"] and doc["reason"] is None
    ts = doc["sampler"]["timestamps_ns"]
    assert len(ts) >= 10 and ts == sorted(ts)
    assert doc["start_ns"] <= ts[0] + 10**9 and ts[-1] >= doc["start_ns"]
    s = doc["summary"][0]
    assert s["power_w"]["mean"] == pytest.approx(123.0) and s["gpu_util_pct"]["max"] == 77
    assert s["samples"] == len(ts)
    err = capsys.readouterr().err
    assert "exited with 3" in err and "timeline written" in err


def test_monitor_without_a_gpu_library_still_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FASTPROF_NVML_LIBRARY", str(tmp_path / "no-such-libnvidia-ml.so"))
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    out = tmp_path / "t.json"
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('yes')"
    assert cli.main(["monitor", "--backend", "nvml", "-o", str(out), "--", sys.executable, "-c", code]) == 0
    assert marker.read_text() == "yes"
    doc = json.loads(out.read_text())
    assert not doc["available"] and doc["reason"] and doc["summary"] == []
    assert "no GPU samples:" in capsys.readouterr().err


def test_monitor_signal_exit(fake_nvml, nvml_index_order, tmp_path):  # noqa: F811
    cmd = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]
    assert cli.main(["monitor", "-q", "-o", str(tmp_path / "t.json"), "--", *cmd]) == 128 + 15


@pytest.mark.parametrize("argv, message", [
    (["monitor"], "monitor needs a command"),
    (["monitor", "--"], "monitor needs a command"),
    (["monitor", "--interval-ms", "0", "--", "true"], "--interval-ms: must be at least 1"),
    (["monitor", "--interval-ms", "5000", "--", "true"], "--interval-ms: must be 1 to 1000"),
    (["monitor", "--", "/no/such/program"], "cannot run '/no/such/program'"),
])
def test_monitor_bad_input(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("fastprof: error:")]
    assert len(errors) == 1 and message in errors[0], err
