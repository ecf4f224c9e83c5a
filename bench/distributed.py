"""Tensor- and data-parallel decode of a 1B Llama on two GPUs against one GPU, through fastprof run.

Builds the model from a config (hidden 2048, 16 layers, 32 heads, 8 KV heads, vocabulary 128256,
intermediate 8192, bf16, random weights), saves it once, then runs `fastprof run` on one GPU, under
`torchrun --tp` and under `torchrun --dp`, and prints ITL, TTFT, step skew and throughput side by
side. NVLink multicast is kept off in every process.

    python bench/distributed.py --out /tmp/dist [--prompt-len 64 --new 64 --iterations 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def build(path: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (path / "config.json").exists():
        return
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=8192, vocab_size=128256, max_position_embeddings=4096, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/fastprof-dist"))
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more fastprof run options")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    model = a.out / "llama-1b"
    build(model)
    common = ["run", "--model", str(model), "--dtype", "bfloat16", "--attn-implementation", "eager",
              "--prompt-len", str(a.prompt_len), "--max-new-tokens", str(a.new), "--warmup", "3",
              "--iterations", str(a.iterations), "-q", *a.extra]
    runs = {"1 GPU": [sys.executable, "-m", "fastprof", *common, "--processes", "1", "--device", "cuda:0"]}
    for mode in ("tp", "dp"):
        runs[f"torchrun --{mode} x2"] = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc-per-node", "2", "-m", "fastprof", *common, f"--{mode}"]
    rows = []
    for name, cmd in runs.items():
        out = a.out / (name.replace(" ", "_").replace("-", "") + ".json")
        p = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True, env=ENV)
        if p.returncode != 0:
            print(f"{name}: failed ({p.returncode})\n{p.stderr[-2000:]}")
            continue
        d = json.loads(out.read_text())
        r = d["runs"][0]["result"] if d.get("kind") == "sweep" else d
        s = r["summary"]
        dist = r.get("distributed") or {}
        row = {"run": name, "itl_p50_ms": s["itl_s"]["p50"] * 1e3, "itl_p99_ms": s["itl_s"]["p99"] * 1e3,
               "ttft_p50_ms": s["ttft_s"]["p50"] * 1e3,
               "throughput_tok_s": (s.get("total_throughput_tokens_per_s") or s["throughput_tokens_per_s"])["p50"]}
        if dist.get("skew"):
            row["skew_p50_us"] = dist["skew"]["step_skew_s"]["p50"] * 1e6
            row["last_counts"] = dist["skew"]["last_counts"]
        if dist.get("ranks"):
            row["rank_itl_p50_ms"] = [round(x["summary"]["itl_s"]["p50"] * 1e3, 3) for x in dist["ranks"]]
        kernels = r.get("kernels") or {}
        if kernels.get("available"):
            row["kernels"] = {k: kernels.get(k) for k in ("class_share", "idle_share", "kernels_per_token")
                              if k in kernels}
        rows.append(row)
        print(json.dumps(row))
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
