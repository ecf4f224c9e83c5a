import json

import numpy as np
import pytest

import fastprof
from fastprof import BenchmarkResult, Trace
from fastprof.results.result import SCHEMA_VERSION, write_atomic

MS = 1_000_000
SUMMARY_KEYS = {"e2e_latency_s", "ttft_s", "itl_s", "tpot_s", "decode_tokens_per_s", "prefill_tokens_per_s",
                "throughput_tokens_per_s"}


def traces(n=12, device=False):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        start = 10**12 + i * 10**9
        gaps = rng.uniform(1.9, 2.1, 8)
        rel = np.cumsum(np.r_[10.0, gaps])
        marks = (start + rel * MS).astype(np.int64)
        end = int(start + (rel[-1] + 0.5) * MS)
        dm = de = None
        if device:
            dm, de = (rel * MS - 20_000).astype(np.int64), int((rel[-1] + 0.4) * MS)
        out.append(Trace(start, end, marks, dm, de))
    return out


def make(device=False, n=12):
    return fastprof.summarize_generation(traces(n, device), batch_size=1, prompt_len=32, config={"model": "x"})


def test_summary_keys_and_json_roundtrip(tmp_path):
    r = make(device=True)
    assert set(r.summary) == SUMMARY_KEYS and set(r.device_summary) == SUMMARY_KEYS
    for stats in r.summary.values():
        assert list(stats) == list(fastprof.STAT_KEYS)
    path = r.save(tmp_path / "out" / "r.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert {"environment", "config", "summary", "device_summary", "iterations", "device_timing", "warnings"} <= set(data)
    assert data["environment"]["python"] and "versions" in data["environment"]
    assert len(data["iterations"]) == 12 and len(data["iterations"][0]["host"]["marks_ns"]) == 9
    back = BenchmarkResult.load(path)
    assert back.summary == r.to_dict()["summary"]
    # The raw data survives: traces rebuilt from JSON give the same metrics.
    t0, b0 = traces(12, True)[0], back.traces()[0]
    assert np.array_equal(t0.host_marks_ns, b0.host_marks_ns) and np.array_equal(t0.device_marks_ns, b0.device_marks_ns)


def test_without_device_clock_reason_is_kept():
    r = make(device=False)
    assert r.device_summary is None
    assert r.device_timing["available"] is False and r.device_timing["reason"]
    with pytest.raises(KeyError, match="no device timing"):
        r.metric("ttft_s", clock="device")
    assert r.metric("ttft_s")["n"] == 12


def test_few_iterations_warn():
    r = make(n=3)
    assert any("only 3 measured iteration" in w for w in r.warnings)
    assert not any("only" in w for w in make(n=12).warnings)


def test_summary_prints_readably():
    text = str(make(device=True))
    assert "ttft" in text and "host clock" in text and "device clock" in text and " ms " in text


def test_nan_becomes_null_and_json_is_strict(tmp_path):
    r = make(n=1)  # one iteration: no std, no CI
    text = r.to_json()
    assert "NaN" not in text
    json.loads(text)


def test_load_refuses_newer_schema_and_junk(tmp_path):
    d = make().to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    p = tmp_path / "new.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="newer than this fastprof"):
        BenchmarkResult.load(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BenchmarkResult.load(p)
    p.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(ValueError, match="missing"):
        BenchmarkResult.load(p)


def test_json_safe_converts_arrays_and_non_finite_values_on_every_path():
    from fastprof.results.io import json_safe

    assert json_safe(np.array([1.5, 2.0])) == [1.5, 2.0]
    assert json_safe(np.array([1.0, np.nan, np.inf])) == [1.0, None, None]
    assert json_safe(np.array([3, 4], dtype=np.int64)) == [3, 4]
    assert all(type(v) is int for v in json_safe(np.array([3, 4], dtype=np.int64)))
    assert json_safe([1, 2.5, float("nan"), (float("-inf"), 1)]) == [1, 2.5, None, [None, 1]]
    assert json_safe((1.0, 2)) == [1.0, 2]
    assert json_safe({"a": [np.float32(1.5), np.int64(2)]}) == {"a": [1.5, 2]}
    assert json_safe([True, 1.0]) == [True, 1.0]


def test_load_can_skip_the_schema_check_for_its_own_files(tmp_path):
    """load(check=False), for files this fastprof has just written, skips the schema check (the
    bulk of a large file's load time); the structural checks still apply."""
    from fastprof.results.sweep import load

    d = make().to_dict()
    d["created"] = 12345  # the schema wants a string; nothing else reads it
    p = tmp_path / "off.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="does not match the fastprof results schema"):
        load(p)
    assert load(p, check=False).runs[0].result.created == 12345
    p.write_text(json.dumps({"schema_version": 1, "kind": "result"}))
    with pytest.raises(ValueError, match="missing"):
        load(p, check=False)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    write_atomic(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        write_atomic(p, "new")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_environment_warnings_cover_gpu_and_cpu_conditions():
    from fastprof.capture.environment import environment_warnings

    env = {"cpu": {"governor": "powersave"},
           "nvidia": {"gpus": [{"index": 0, "name": "G", "power_limit_w": 300.0, "power_default_limit_w": 700.0,
                                "other_processes": [{"pid": 4242}]}]}}
    w = environment_warnings(env)
    assert any("powersave" in x for x in w)
    assert any("4242" in x for x in w)
    assert any("300 W is below its default 700 W" in x for x in w)
    assert environment_warnings({"cpu": {"governor": "performance"}}) == []
