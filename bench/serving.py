"""Serving curve of a 1B Llama under continuous batching on one GPU, through fastprof.benchmark_serving.

Builds the model from a config (hidden 2048, 16 layers, 32 heads, 8 KV heads, vocabulary 128256,
intermediate 8192, bf16, random weights) on the GPU, serves Poisson arrivals at several rates (the
last ones past saturation) with transformers' continuous-batching manager, writes every run to one
results file (a sweep over ``rate``, readable by ``fastprof report`` and ``compare``) and prints the
serving curve, its knee and the rate at which p99 TTFT exceeds 10x its low-load value.

    python bench/serving.py --out /tmp/serving.json [--rates 1,8,64,256,1024 --arrival-seconds 16]

Each rate gets rate x --arrival-seconds requests, at least --min-requests and at most
--max-requests (or exactly --num-requests), so that high rates bring enough requests to build a
queue and low rates do not take minutes.
"""

from __future__ import annotations

import argparse
import sys
import time


def build():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      vocab_size=128256, intermediate_size=8192, max_position_embeddings=4096,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    return model.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="serving-1b.json")
    p.add_argument("--html", default=None, help="also write the HTML report here")
    p.add_argument("--rates", default="1,8,64,256,1024", help="offered loads, requests per second")
    p.add_argument("--num-requests", type=int, default=None, help="requests per rate (else from --arrival-seconds)")
    p.add_argument("--arrival-seconds", type=float, default=16.0)
    p.add_argument("--min-requests", type=int, default=16)
    p.add_argument("--max-requests", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--warmup-requests", type=int, default=4)
    args = p.parse_args()

    import torch

    import fastprof
    from fastprof.capture.environment import capture_environment
    from fastprof.report.serving import curve, knee_text, print_serving
    from fastprof.results.sweep import Sweep

    if not torch.cuda.is_available():
        print("bench/serving.py needs a CUDA GPU", file=sys.stderr)
        return 2
    start = time.perf_counter()
    model = build()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, model.config.vocab_size, (8, args.prompt_len), generator=g).tolist()
    rates = [float(r) for r in args.rates.split(",")]
    sweep = Sweep(environment=capture_environment(), parameters={"model": ["llama-1b-random"], "rate": rates},
                  command=["python", *sys.argv], complete=False)
    for rate in rates:
        t = time.perf_counter()
        n = args.num_requests or int(min(max(round(rate * args.arrival_seconds), args.min_requests), args.max_requests))
        config = {"model": "llama-1b-random", "rate": rate, "prompt_len": args.prompt_len, "max_new_tokens": args.new,
                  "num_requests": n}
        try:
            res = fastprof.benchmark_serving(model, prompts, rate=rate, num_requests=n,
                                             max_new_tokens=args.new, warmup_requests=args.warmup_requests,
                                             slo_ttft_ms=500, slo_itl_ms=50, config=config, seed=0)
        except Exception as exc:  # noqa: BLE001 - recorded, the other rates go on
            sweep.add_failed(config, exc)
            print(f"rate {rate:g}: failed: {exc}", file=sys.stderr)
        else:
            sweep.add_ok(config, res)
            c = res.serving["counts"]
            print(f"rate {rate:g} req/s: {c['finished']}/{c['total']} finished in {time.perf_counter() - t:.1f} s, "
                  f"{res.serving['request_throughput_per_s']:.2f} req/s, "
                  f"kept up {(res.serving.get('served_share') or float('nan')) * 100:.0f}%, "
                  f"{res.serving['output_token_throughput_per_s']:.0f} tok/s, "
                  f"TTFT p99 {res.summary['ttft_s']['p99'] * 1e3:.1f} ms, token clock {res.serving['token_clock']}",
                  flush=True)
        sweep.save(args.out)
    sweep.complete = True
    sweep.save(args.out)
    print_serving(sweep)
    c = curve(sweep)
    print(knee_text(c))
    sat = c["saturation_rate"]
    print(f"p99 TTFT > 10x low-load ({(c['low_load_ttft_p99_s'] or 0) * 1e3:.1f} ms): "
          f"{'from ' + format(sat, 'g') + ' req/s' if sat is not None else 'not reached at these rates'}")
    if args.html:
        from fastprof.report import write_html

        write_html(sweep, args.html, metrics=["queue_s", "ttft_s", "itl_s", "e2e_s"], source=args.out)
    print(f"total {time.perf_counter() - start:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
