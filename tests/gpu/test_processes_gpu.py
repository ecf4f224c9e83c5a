"""Worker processes on a real GPU (marked gpu; skipped without a GPU): by default they are
prepared together (forked at once from the fork server, each with its own CUDA context, model and
warm-up) and measure one at a time, each handing its turn on once its last iteration has run."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastprof import cli  # noqa: E402
from fastprof.results.sweep import load  # noqa: E402

pytestmark = pytest.mark.gpu


def test_workers_on_a_gpu_prepare_together_by_default_and_measure_one_at_a_time(torch_cuda, tmp_path, monkeypatch):
    monkeypatch.delenv("FASTPROF_WORKER_PREPARE", raising=False)
    monkeypatch.delenv("FASTPROF_WORKER_START", raising=False)
    monkeypatch.delenv("FASTPROF_WORKER_HANDOFF", raising=False)
    out = tmp_path / "gpu.json"
    assert cli.main(["run", "--processes", "3", "--device", "cuda", "--prompt-len", "16", "--max-new-tokens", "16",
                     "--iterations", "3", "--warmup", "2", "--kernel-trace", "1", "-q", "-o", str(out)]) == 0
    result = load(out).runs[0].result
    procs = result.processes
    assert procs["start"] == "fork-server", procs
    assert procs["prepare"] == "together" and procs["prepare_note"] is None, procs
    assert procs["handoff"] == "measured", procs
    rows = procs["per_process"]
    assert len({r["pid"] for r in rows}) == 3 and all(r["ready_s"] > 0 and r["turn_s"] > 0 for r in rows), rows
    spans = []
    for p in range(3):
        its = [it["host"] for it in result.iterations if it["process"] == p]
        assert len(its) == 3 and all(it["device"] is not None for it in result.iterations if it["process"] == p)
        spans.append((min(h["start_ns"] for h in its), max(h["end_ns"] for h in its)))
    for p in (1, 2):
        assert spans[p - 1][1] < spans[p][0], spans  # the timed iterations never overlap
        assert rows[p]["waited_s"] >= (spans[p - 1][1] - spans[p - 1][0]) / 1e9, (rows, spans)
    assert result.kernels is not None and json.dumps(result.kernels)
