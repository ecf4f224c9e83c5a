"""fastprof under torchrun on the CPU (gloo): the real command, data parallel, one merged file;
clock offsets measured and corrected; a failing or silent rank never hangs the job."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastprof.analysis.metrics import generation_metrics  # noqa: E402
from fastprof.results.result import _trace_from_record  # noqa: E402
from fastprof.sweep import load  # noqa: E402

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(args, env=None, timeout=240, cwd=None):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp") / "dp.json"
    p = torchrun(["-m", "fastprof", "run", "--dp", "--device", "cpu", "--prompt-len", "6", "--max-new-tokens", "3,4",
                  "--warmup", "0", "--iterations", "3", "-q", "-o", str(out)], env={"FASTPROF_FAIL_RANK": "1:0"})
    return p, out


def test_data_parallel_one_merged_file_and_a_failed_rank(dp_run):
    p, out = dp_run
    assert p.returncode == 1, p.stderr[-3000:]
    sweep = load(out)
    failed, ok = sweep.runs
    assert failed.status == "failed" and "rank 1" in failed.error["message"]
    assert "FASTPROF_FAIL_RANK" in failed.error["message"]
    assert ok.status == "ok"
    dist = ok.result.distributed
    assert dist["mode"] == "dp" and dist["world_size"] == 2 and [r["rank"] for r in dist["ranks"]] == [0, 1]
    # The merged throughput is the sum over ranks, iteration by iteration, of each rank's own.
    per_rank = []
    for r in dist["ranks"]:
        traces = [_trace_from_record(it) for it in r["iterations"]]
        per_rank.append(generation_metrics(traces, batch_size=1, prompt_len=6)["throughput_tokens_per_s"])
    total = np.sum(per_rank, axis=0)
    assert ok.result.summary["total_throughput_tokens_per_s"]["p50"] == pytest.approx(float(np.median(total)))
    # Latencies are the slowest rank's.
    slowest = dist["slowest_rank"]
    itl = [r["summary"]["itl_s"]["p50"] for r in dist["ranks"]]
    assert itl[slowest] == max(itl) and ok.result.summary["itl_s"]["p50"] == max(itl)
    assert dist["clock"]["method"].startswith("shared")


def test_bad_combinations_exit_2_before_anything_runs(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fastprof", "run", "--tp", "--dp"], capture_output=True, text=True)
    assert p.returncode == 2 and "not allowed with argument" in p.stderr
    p = subprocess.run([sys.executable, "-m", "fastprof", "run", "--dp", "--device", "cpu"], capture_output=True,
                       text=True, env={**os.environ, "WORLD_SIZE": "1"})
    assert p.returncode == 2 and "torchrun" in p.stderr and p.stderr.count("\n") == 1
    # The built-in model's 8 heads and 4 key-value heads do not divide by 3 ranks.
    three = [a if a != "2" else "3" for a in TORCHRUN]
    p = subprocess.run([*three, "-m", "fastprof", "run", "--tp", "--device", "cpu", "-q", "-o",
                        str(tmp_path / "x.json")], capture_output=True, text=True, timeout=240,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode != 0, p.stderr[-2000:]  # each rank exits 2; torchrun reports the failure
    assert p.stderr.count("must both divide by 3") == 1  # rank 0 speaks for all
    assert not (tmp_path / "x.json").exists()


def test_tensor_parallel_on_cpu_merges_the_ranks_step_by_step(tmp_path):
    out = tmp_path / "tp.json"
    p = torchrun(["-m", "fastprof", "run", "--tp", "--device", "cpu", "--prompt-len", "6", "--max-new-tokens", "4",
                  "--warmup", "0", "--iterations", "3", "-q", "-o", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = load(out).runs
    dist = run.result.distributed
    assert dist["mode"] == "tp" and len(dist["ranks"]) == 2
    assert sum(dist["skew"]["last_counts"]) == 3 * 4
    # Token i of the job is the latest rank's token i.
    per_rank = [[_trace_from_record(it) for it in r["iterations"]] for r in dist["ranks"]]
    for i, merged in enumerate(run.result.traces()):
        latest = np.max([ranks[i].host_marks_ns for ranks in per_rank], axis=0)
        assert merged.host_marks_ns.tolist() == latest.tolist()


SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    if os.environ["RANK"] == "1" and sys.argv[2] != "0":
        os.environ["FASTPROF_CLOCK_OFFSET_NS"] = sys.argv[2]
    from fastprof.measure import distributed as d
    ctx = d.setup("cpu")
    import torch.distributed as dist
    if sys.argv[3] == "silent" and ctx.rank == 1:
        time.sleep(8)   # never joins the gather
        sys.exit(0)
    try:
        if sys.argv[3] != "silent":
            dist.barrier(group=ctx.group)
        t = d.now_ns()
        got = d.gather(ctx, {"t": t})
        result = {"offsets": ctx.offsets, "t": [g["t"] for g in got]} if ctx.rank == 0 else None
    except RuntimeError as exc:
        result = {"error": str(exc)[:200]}
    if ctx.rank == 0:
        json.dump(result, open(sys.argv[1], "w"))
    os._exit(0)
""")


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "clock.py"
    path.write_text(SCRIPT)
    return path


@pytest.mark.parametrize("injected", [0, 5_000_000_000])
def test_clock_offset_is_estimated_and_corrected(tmp_path, script, injected):
    out = tmp_path / "out.json"
    p = torchrun([str(script), str(out), str(injected), "normal"], timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(out.read_text())
    o = doc["offsets"][1]
    assert o["rtt_ns"] > 0 and o["uncertainty_ns"] == o["rtt_ns"] // 2
    assert abs(o["offset_ns"] - injected) <= o["uncertainty_ns"] + 200_000
    assert o["applied"] is (injected != 0)  # same host: shared clock, not corrected
    corrected = doc["t"][1] - (o["offset_ns"] if o["applied"] else 0)
    assert abs(corrected - doc["t"][0]) < 100_000_000  # both read right after one barrier


def test_a_silent_rank_cannot_hang_the_gather(tmp_path, script):
    out = tmp_path / "out.json"
    p = torchrun([str(script), str(out), "0", "silent"], env={"FASTPROF_DIST_TIMEOUT_S": "3"}, timeout=120)
    doc = json.loads(out.read_text())
    assert "error" in doc, (doc, p.stderr[-2000:])


@pytest.mark.parametrize("rank, run_id, waits", [("1", "job", True), ("0", "job", False), ("2", None, False)])
def test_a_usage_error_on_a_rank_other_than_0_waits_for_rank_0_to_say_it(monkeypatch, capsys, rank, run_id, waits):
    """torchrun stops every rank once one exits: a rank other than 0 that exited at once could stop
    rank 0 before it printed the error that all share. Such a rank waits first (stopped in that wait,
    it says nothing); an error of its own is still said after it. Without torchrun, no wait."""
    import fastprof.cli as cli

    events = []
    monkeypatch.setattr(cli, "RANK_QUIET_S", 0.25)
    monkeypatch.setattr("time.sleep", lambda s: events.append(("sleep", s)))
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "1")
    if run_id is None:
        monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    else:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", run_id)
    assert cli.main(["run", "--dp", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "needs several processes" in err and err.count("\n") == 1
    assert events == ([("sleep", 0.25)] if waits else [])
