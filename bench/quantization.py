"""Quantized decode of a 1B Llama on one GPU: bf16 against each quantization method at several
batch sizes, through ``fastprof run --quantization`` (the comparison the measurement guide is about).

Builds the model from a config (hidden 2048, 16 layers, 32 heads, 8 KV heads, vocabulary 128256,
intermediate 8192, tied embeddings, random weights), saves it with ``save_pretrained`` to a
temporary directory, runs ``fastprof run --model DIR --quantization ... --batch-size ...`` and
prints the per-method table (weights, TTFT, ITL p50/p99, decode throughput, MBU).

    python bench/quantization.py --out /tmp/quant.json \\
        [--methods none,bnb-int8,bnb-nf4,torchao-int8wo --batch-size 1,4,16 --new-tokens 64]

Needs a CUDA GPU and the backends (pip install 'fastprof[quant]').
"""

from __future__ import annotations

import argparse
import sys
import tempfile


def save_model(path: str) -> None:
    """The 1B model of bench/serving.py (the same config and seed), saved to ``path``."""
    import torch

    from serving import build  # bench/serving.py, beside this script

    model = build()
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="results file (a sweep)")
    ap.add_argument("--methods", default="none,bnb-int8,bnb-nf4,torchao-int8wo")
    ap.add_argument("--batch-size", default="1,4,16")
    ap.add_argument("--prompt-len", default="64")
    ap.add_argument("--new-tokens", default="64")
    ap.add_argument("--iterations", default="10")
    ap.add_argument("--warmup", default="3")
    ap.add_argument("--extra", default="", help="more fastprof run arguments, space-separated")
    args = ap.parse_args()

    from fastprof import cli

    with tempfile.TemporaryDirectory(prefix="fastprof-1b-") as d:
        save_model(d)
        argv = ["run", "--processes", "1", "--model", d, "--quantization", args.methods, "--batch-size", args.batch_size,
                "--prompt-len", args.prompt_len, "--max-new-tokens", args.new_tokens, "--dtype", "bfloat16",
                "--iterations", args.iterations, "--warmup", args.warmup, "-q", "-o", args.out,
                *args.extra.split()]
        return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
