"""torchrun over two GPUs: tensor-parallel and data-parallel runs of the real command, merged by rank 0.

NVLink multicast stays off in every process (NCCL_NVLS_ENABLE=0 and friends), as the shared
machines require."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from fastprof.sweep import load  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                 reason="needs two GPUs")]

ENV = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def torchrun(mode, out):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fastprof",
           "run", f"--{mode}", "--prompt-len", "32", "--max-new-tokens", "16", "--warmup", "2", "--iterations", "5",
           "-q", "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)


@pytest.mark.parametrize("mode", ["tp", "dp"])
def test_two_gpus_one_merged_result(tmp_path, mode):
    out = tmp_path / f"{mode}.json"
    p = torchrun(mode, out)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = load(out).runs
    dist = run.result.distributed
    assert dist["mode"] == mode and dist["world_size"] == 2
    assert sorted(r["device"] for r in dist["ranks"]) == ["cuda:0", "cuda:1"]
    assert run.result.device_timing["available"]
    ranks_itl = [r["summary"]["itl_s"]["p50"] for r in dist["ranks"]]
    if mode == "tp":
        # A step is the slowest rank's: the merged median gap is at least every rank's own.
        assert run.result.summary["itl_s"]["p50"] >= min(ranks_itl) * 0.999
        assert sum(dist["skew"]["last_counts"]) == 5 * 16
        assert dist["skew"]["step_skew_s"]["p50"] >= 0
    else:
        total = run.result.summary["total_throughput_tokens_per_s"]["p50"]
        mine = [r["summary"]["throughput_tokens_per_s"]["p50"] for r in dist["ranks"]]
        assert total == pytest.approx(sum(mine), rel=0.2)
    # Each rank sampled its own GPU only.
    for r in dist["ranks"]:
        hw = r.get("hardware_summary") or {}
        assert hw, r["rank"]
