"""``fastprof run``: benchmark generate over a sweep of configurations, write the results file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# The method table (fastprof.capture.quantization imports nothing heavy at module level).
from fastprof.capture.quantization import METHODS as _METHODS
from fastprof.cli._common import (
    Formatter,
    UsageError,
    choice,
    comma_list,
    name,
    non_negative_int,
    positive_int,
)
from fastprof.measure import workers

DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANT_METHODS = tuple(_METHODS)
QUANT_TABLE = "\n".join(f"  {m.name:<17} {m.summary}" for m in _METHODS.values())
ARRIVALS = ("poisson", "burst", "fixed")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
COMPILE_MODES = ("off", "on")


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="benchmark model.generate per token over a sweep of configurations (a built-in small model by default)",
        description=(
            "Benchmark transformers' generate with per-token timing: time to first token, inter-token latency\n"
            "distribution, throughput, with confidence intervals. Without --model, a small Llama-architecture\n"
            "model with random weights is built from a config (nothing is downloaded). Runs on the GPU when\n"
            "there is one, else on the CPU. Each configuration also gets a roofline (the bytes and FLOPs of a\n"
            "decode step against the GPU's peak bandwidth and tensor FLOP/s: MBU, MFU, the ideal step time;\n"
            "on Hopper and newer beside the GPU's own DRAM bandwidth counter) and a verdict: host-overhead-,\n"
            "memory- or compute-bound. 2 extra iterations after the timed ones are traced (--kernel-trace):\n"
            "where the host's time goes in each decode step (modules, the generate loop, and on CUDA GPUs the\n"
            "CUDA API calls: launches, waiting for the GPU, Python and framework) and, on CUDA GPUs, the\n"
            "CUPTI kernel trace: GPU idle share per step, kernels per token, time by class.\n\n"
            "Sweeps: --batch-size, --prompt-len, --max-new-tokens, --dtype, --quantization,\n"
            "--attn-implementation and --compile take comma lists; every combination is one configuration.\n"
            "A configuration that fails (out of memory, an unsupported attention implementation, a missing\n"
            "quantization backend, any error) is recorded as failed with its reason and the sweep goes on.\n"
            "The results file holds every configuration and is rewritten after each one, so Ctrl-C keeps\n"
            "the finished ones. Exit code: 0 when every configuration ran, 1 when any\n"
            "failed, 2 for bad input, 130 when interrupted.\n\n"
            "Quantization methods (--quantization; pip install 'fastprof[quant]' for the backends; the\n"
            "transformers config each one maps to is in docs/how-to/quantization.md and in every result):\n"
            + QUANT_TABLE + "\n"
            "A method whose backend is missing or which the device cannot run fails its configurations.\n\n"
            "examples:\n"
            "  fastprof run --batch-size 1,4,16 --prompt-len 128,1024 --attn-implementation eager,sdpa\n"
            "  fastprof run --model DIR --quantization none,bnb-int8,bnb-nf4,torchao-int8wo --batch-size 1,4,16\n"
            "  fastprof run --model DIR --prompts prompts.txt --time-tokenization\n"
            "  fastprof run --model DIR --assistant-model builtin,self --num-assistant-tokens 2,4,8 --prompt-lookup 3"
        ),
        formatter_class=Formatter,
    )
    run.add_argument("--model", metavar="DIR", help="local model directory (from save_pretrained); default: built-in")
    run.add_argument("--batch-size", type=comma_list(positive_int), default=[1], metavar="N[,N...]",
                     help="sequences per generate call")
    run.add_argument("--prompt-len", type=comma_list(positive_int), default=None, metavar="N[,N...]",
                     help="prompt tokens per sequence, random ids (default: 128; not with --prompt/--prompts)")
    run.add_argument("--max-new-tokens", type=comma_list(positive_int), default=[64], metavar="N[,N...]",
                     help="tokens generated per sequence")
    run.add_argument("--dtype", type=comma_list(choice(DTYPES)), default=["auto"], metavar="DTYPE[,...]",
                     help=f"weights dtype, of {', '.join(DTYPES)}; auto: bfloat16 on GPU, float32 on CPU")
    run.add_argument("--quantization", type=comma_list(choice(QUANT_METHODS)), default=["none"], metavar="METHOD[,...]",
                     help=f"weight quantization through transformers' configs, of {', '.join(QUANT_METHODS)} "
                          "(the table in 'fastprof run --help'; needs pip install 'fastprof[quant]')")
    run.add_argument("--attn-implementation", type=comma_list(name), default=["auto"], metavar="NAME[,...]",
                     help="attention implementation passed to the model (eager, sdpa, flash_attention_2, ...); "
                          "auto: the model's default")
    run.add_argument("--compile", type=comma_list(choice(COMPILE_MODES)), default=["off"], metavar="off,on",
                     help="on: static KV cache and transformers' torch.compile of the forward pass "
                          "(mode reduce-overhead, fullgraph); transformers compiles on GPUs only")
    text = run.add_argument_group(
        "real prompts",
        "--prompt or --prompts replace the random prompt ids with text, tokenized by the model's tokenizer\n"
        "(--model DIR holding one, or --tokenizer DIR); the prompt length is then the tokenized length, and\n"
        "a batch takes the prompts in turn. Tokenization and detokenization run outside the timed region\n"
        "(their cost is reported beside it) unless --time-tokenization puts them inside, for end-to-end\n"
        "user latency.")
    given = text.add_mutually_exclusive_group()
    given.add_argument("--prompt", metavar="TEXT", help="one prompt, used for every sequence of the batch")
    given.add_argument("--prompts", metavar="FILE", help="a text file of prompts, one per line")
    text.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (default: --model)")
    text.add_argument("--time-tokenization", action="store_true",
                      help="tokenize and detokenize inside every timed iteration (TTFT and latency include them)")
    run.add_argument("--warmup", type=non_negative_int, default=5,
                     help="untimed iterations first, per configuration and process")
    run.add_argument("--iterations", type=positive_int, default=10,
                     help="measured iterations per configuration and process (default: 10; with the default 5 "
                          "processes, 50 in all)")
    run.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    run.add_argument("--sample-interval-ms", type=_interval_ms, default=10, metavar="MS",
                     help="GPU sampling interval, 1 to 1000 (utilisation, power, energy ...); 0 turns sampling off")
    run.add_argument("--num-beams", type=positive_int, default=1, metavar="N",
                     help="beam search with N beams: measured end to end (latency, throughput) without per-token "
                          "marks, since the tokens are chosen only at the end")
    run.add_argument("--kernel-trace", type=non_negative_int, default=None, metavar="N",
                     help="after the timed iterations, run N more traced: the host breakdown of each decode step "
                          "(modules, the generate loop and, on CUDA GPUs, the CUDA API calls) and, on CUDA GPUs, the "
                          "CUPTI kernel trace: GPU busy/idle per decode step, time by kernel class, top kernels "
                          "(default: 2; 0: off)")
    run.add_argument("--python-samples", action="store_true",
                     help="in the traced iterations, also sample the measuring thread's Python frames with py-spy "
                          "(pip install py-spy), from outside the process: where the Python and framework time "
                          "goes, function by function (off by default; says why when the platform forbids it)")
    run.add_argument("--kernel-trace-timed", action="store_true",
                     help="trace the timed iterations themselves (their timings then include the tracer's cost)")
    run.add_argument("--processes", type=positive_int, default=None, metavar="N",
                     help=f"measure every configuration in N worker processes, each with its own model load, "
                          f"warm-up and iterations, measuring one after the other; on Linux they are forked from a "
                          f"fork server that imported torch and transformers once (FASTPROF_WORKER_START=fresh: a "
                          f"fresh interpreter each); on a CUDA GPU all are forked at once and load their models and "
                          f"warm up side by side where every model fits in the GPU's free memory at once, then "
                          f"measure alone, in turn (FASTPROF_WORKER_PREPARE=serial: one after the other) "
                          f"(default: {workers.DEFAULT_PROCESSES}; 1 with "
                          f"--serving and under torchrun); the result keeps every process and reports their "
                          f"spread, and 'fastprof compare' tests over processes, which covers run-to-run drift. "
                          f"{workers.DEFAULT_PROCESSES} a side kept 'fastprof compare' false alarms at or under 1%% "
                          f"(bench/RESULTS.md). --processes 1 is quicker for a first "
                          f"look, but two such runs cannot be compared reliably. With several configurations, "
                          f"each process starts at another one, so that they alternate over the run")
    run.add_argument("--iteration-order", choices=("interleaved", "blocked"), default="interleaved",
                     help="configurations that share a model load (compile off and on, several batch sizes, "
                          "prompt lengths or token counts): 'interleaved' (the default) warms each up, then "
                          "alternates their timed iterations (A B, B A, A B, ...; three or more also take turns at "
                          "the ends of a round) so that the machine's drift "
                          "from one iteration to the next falls on all of them alike, and traces each after all "
                          "the timed iterations; 'blocked' runs each configuration whole before the next. "
                          "Speculative configurations and torchrun runs always run blocked")
    # A worker's place in that alternation (set by the parent for each worker process).
    run.add_argument("--order-shift", type=non_negative_int, default=0, help=argparse.SUPPRESS)
    run.add_argument("--seed", type=non_negative_int, default=0, help="seed of weights, prompts and bootstrap")
    run.add_argument("--output", "-o", default="fastprof-results.json", metavar="FILE", help="results JSON file")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    srv = run.add_argument_group(
        "serving (continuous batching under load)",
        "--serving serves requests through transformers' continuous-batching manager instead of timing\n"
        "static generate calls: requests arrive at --rate per second (one configuration per rate), each\n"
        "request's arrival and every token are recorded; the report shows queueing delay, TTFT, ITL and\n"
        "end-to-end latency per request, throughput, goodput and the serving curve with its knee.\n"
        "--batch-size, --warmup, --iterations and --compile do not apply; the first --prompt-len,\n"
        "--max-new-tokens, --dtype and --attn-implementation values are used.\n"
        "example: fastprof run --serving --rate 1,4,16 --num-requests 64 --slo-ttft-ms 200")
    srv.add_argument("--serving", action="store_true", help="measure serving under load (continuous batching)")
    srv.add_argument("--rate", type=comma_list(positive_float), metavar="R[,R...]",
                     help="offered load in requests per second, one configuration per rate (--serving)")
    srv.add_argument("--arrival", type=choice(ARRIVALS), default="poisson", metavar="|".join(ARRIVALS),
                     help="arrival schedule: poisson (seeded by --seed), burst (all at once), fixed (every 1/R s)")
    window = srv.add_mutually_exclusive_group()
    window.add_argument("--num-requests", type=positive_int, metavar="N",
                        help="measured requests per rate; the window closes when all are done (default 32)")
    window.add_argument("--duration", type=positive_float, metavar="S",
                        help="seconds of arrivals per rate; requests in flight at the end count as running")
    srv.add_argument("--slo-ttft-ms", type=positive_float, metavar="MS", help="TTFT limit for goodput")
    srv.add_argument("--slo-itl-ms", type=positive_float, metavar="MS", help="limit on every ITL gap for goodput")
    srv.add_argument("--warmup-requests", type=non_negative_int, default=2, metavar="N",
                     help="requests served and discarded before each rate's window")
    srv.add_argument("--manager-warmup", action=argparse.BooleanOptionalAction, default=True,
                     help="run the continuous-batching manager's own warm-up (CUDA graph capture) first")
    spec = run.add_argument_group(
        "speculative decoding",
        "Each option adds configurations beside plain decoding ('none', always measured in the same\n"
        "run as their baseline): a decode step then emits several tokens. Reported per step: step time,\n"
        "tokens per step, acceptance rate (accepted draft tokens / proposed), the draft's and the\n"
        "verification's time, and the speed-up against plain decoding. Batch size 1 only (transformers'\n"
        "assisted generation). Random weights (the built-in models) accept few drafts: acceptance\n"
        "needs real weights and prompts; 'self' accepts every draft whatever the weights.\n"
        "example: fastprof run --assistant-model builtin,self --num-assistant-tokens 2,4,8 --prompt-lookup 3")
    spec.add_argument("--assistant-model", type=comma_list(_assistant), default=None, metavar="DIR[,...]",
                      help="draft models: a local model directory, 'builtin' (a small sibling of the built-in "
                           "model, sized to the target's vocabulary), 'self' (the target drafts for itself) or "
                           "'none' (plain decoding only)")
    spec.add_argument("--num-assistant-tokens", type=comma_list(_draft_tokens), default=None, metavar="N[,...]",
                      help="draft tokens per step, for every --assistant-model: N (constant), 'dynamic' "
                           "(transformers' default: up to 20, a draft stops when the draft model's confidence "
                           "falls) or 'heuristic' (longer after a fully accepted draft, shorter otherwise) "
                           "(default: dynamic)")
    spec.add_argument("--prompt-lookup", type=comma_list(_lookup), default=None, metavar="N[,...]",
                      help="prompt lookup decoding: drafts of N tokens copied from where the last n-gram "
                           "appeared earlier in the prompt or the output (transformers' prompt_lookup_num_tokens); "
                           "'none': plain decoding only")
    par = run.add_mutually_exclusive_group()
    par.add_argument("--tp", action="store_true",
                     help="under torchrun: tensor parallel, the model sharded across the ranks with transformers' "
                          "tp_plan='auto'; a step takes its slowest rank's time")
    par.add_argument("--dp", action="store_true",
                     help="under torchrun: data parallel, every rank its own copy and its own prompts; throughput "
                          "adds up across ranks (the default under torchrun)")


def _assistant(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("empty assistant model")
    return text


def _draft_tokens(text: str) -> str:
    from fastprof.measure.runner import SCHEDULES

    if text in SCHEDULES:
        return text
    return str(positive_int(text))


def _lookup(text: str) -> str:
    return text if text == "none" else str(positive_int(text))


def _speculative_axis(args: argparse.Namespace) -> None:
    """``args.speculative``: the sweep's speculative axis from --assistant-model,
    --num-assistant-tokens and --prompt-lookup (None without them); bad combinations refused."""
    from fastprof.measure.runner import BUILTIN_DRAFT, SELF_DRAFT, speculative_values

    assistants = getattr(args, "assistant_model", None)
    tokens = getattr(args, "num_assistant_tokens", None)
    lookups = getattr(args, "prompt_lookup", None)
    args.speculative = None
    if tokens is not None and not [a for a in assistants or [] if a != "none"]:
        raise UsageError("argument --num-assistant-tokens: needs --assistant-model")
    if assistants is None and lookups is None:
        return
    for name in assistants or []:
        if name not in ("none", BUILTIN_DRAFT, SELF_DRAFT) and not Path(name).is_dir():
            raise UsageError(f"argument --assistant-model: {name!r} is not a directory (nor builtin, self or none)")
    values = speculative_values(assistants, tokens, lookups)
    if values == ["none"]:
        return
    if max(args.batch_size) > 1:
        raise UsageError("speculative decoding (--assistant-model, --prompt-lookup) runs at batch size 1 only "
                         "(transformers' assisted generation); give --batch-size 1")
    if (args.num_beams or 1) > 1:
        raise UsageError("speculative decoding does not combine with --num-beams")
    if args.serving or args.tp or args.dp:
        raise UsageError("speculative decoding is measured with static generate calls in one process: "
                         "--serving, --tp and --dp do not apply")
    if "on" in (args.compile or []):
        raise UsageError("speculative decoding does not combine with --compile on: transformers' assisted "
                         "generation refuses the static KV cache that compiling needs; give --compile off")
    args.speculative = values


def _interval_ms(text: str) -> int:
    value = non_negative_int(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"must be 1 to 1000 (or 0 for off), got {value}")
    return value


def _model_config(args: argparse.Namespace) -> Any:
    """The config of ``--model`` (or of the built-in model), read without loading any weights.
    Raises OSError or ValueError when the directory holds no readable config."""
    if args.model is None:
        from fastprof.capture import hf

        return hf.default_model_config()
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(args.model, local_files_only=True)


def _check_positions(args: argparse.Namespace) -> str | None:
    """Prompt plus new tokens against the model's position limit, before anything is loaded:
    a UsageError when a configuration would exceed it (a warning, returned, when the model
    scales its positions with rope_scaling and may allow more)."""
    try:
        cfg = _model_config(args)
    except (OSError, ValueError):
        return None  # the model's own loading reports it, per configuration
    limit = getattr(cfg, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    need = max(args.prompt_len) + max(args.max_new_tokens)
    if need <= limit:
        return None
    what = (f"--prompt-len {max(args.prompt_len)} + --max-new-tokens {max(args.max_new_tokens)} = {need} "
            f"positions, more than the model's max_position_embeddings {limit}")
    rope = getattr(cfg, "rope_scaling", None) or getattr(cfg, "rope_parameters", None)
    if isinstance(rope, dict) and rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        return f"{what}; the model scales its positions ({rope.get('rope_type', rope.get('type'))} rope), so it may allow more"
    raise UsageError(what)


def _prepare_prompts(args: argparse.Namespace) -> None:
    """Reads --prompt/--prompts and loads the tokenizer, refusing bad input before anything runs;
    sets ``args.prompt_texts`` (None for random ids), ``prompt_source``, ``tokenizer_path``,
    ``tokenizer_obj`` and, for random ids, the default --prompt-len."""
    args.prompt_texts = None
    if args.prompt is None and args.prompts is None:
        for flag, given in (("--tokenizer", args.tokenizer is not None), ("--time-tokenization", args.time_tokenization)):
            if given:
                raise UsageError(f"argument {flag}: needs --prompt TEXT or --prompts FILE")
        args.prompt_len = args.prompt_len or [128]
        return
    from fastprof.capture import hf

    if args.prompt_len is not None:
        raise UsageError("argument --prompt-len: does not apply with --prompt/--prompts (the tokenized text sets it)")
    if args.prompt is not None:
        if not args.prompt.strip():
            raise UsageError("argument --prompt: the prompt is empty")
        texts, args.prompt_source = [args.prompt], "text"
    else:
        try:
            texts = hf.read_prompts(args.prompts)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"argument --prompts: {getattr(exc, 'strerror', None) or exc}: {args.prompts}"
                             if isinstance(exc, OSError) else f"argument --prompts: {exc}") from None
        args.prompt_source = "file"
    where = args.tokenizer or args.model
    if where is None:
        raise UsageError("--prompt/--prompts need a tokenizer: --model DIR that holds one, or --tokenizer DIR")
    try:
        tokenizer = hf.load_tokenizer(where)
    except (OSError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        flag = "--tokenizer" if args.tokenizer else "--model"
        raise UsageError(f"argument {flag}: cannot load a tokenizer from {where!r}: {first}") from None
    ids = [tokenizer(t)["input_ids"] for t in texts]
    lengths = [len(i) for i in ids]
    if min(lengths) == 0:
        raise UsageError("a prompt tokenizes to no tokens")
    try:
        vocab = int(getattr(_model_config(args), "vocab_size", 0) or 0)
    except (OSError, ValueError):
        vocab = 0
    biggest = max(max(i) for i in ids)
    if vocab and biggest >= vocab:
        raise UsageError(f"the tokenizer in {where!r} gives token id {biggest}, beyond the model's vocabulary of "
                         f"{vocab}: the tokenizer does not belong to this model")
    args.prompt_texts, args.tokenizer_path, args.tokenizer_obj = texts, where, tokenizer
    args.prompt_len = [max(lengths)]  # for the position check; the configurations use the real lengths


def _check_device(text: str) -> None:
    """The spelling of --device, checked before torch is imported (bad input is an error even without torch)."""
    kind, _, index = text.partition(":")
    if text != "auto" and (kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index)):
        raise UsageError(f"argument --device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}")


def _resolve_device(text: str, torch: Any) -> str:
    _check_device(text)
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = text.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("argument --device: CUDA was asked for but torch sees no GPU")
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(f"argument --device: {text} does not exist ({torch.cuda.device_count()} GPU(s))")
    return text


def main(args: argparse.Namespace) -> int:
    argv = getattr(args, "argv", None)
    if args.model is not None and not Path(args.model).is_dir():
        raise UsageError(f"argument --model: {args.model!r} is not a directory")
    _check_device(args.device)
    # Worker processes come from a fork server that imports torch and transformers first: started
    # now, its imports run while this process checks the arguments (which imports them too).
    server = workers.prestart() if _uses_workers(args) else None
    try:
        return _main(args, argv, server)
    finally:
        if server is not None:
            server.close()


def _uses_workers(args: argparse.Namespace) -> bool:
    """Whether this run will start worker processes (what :func:`_main` decides): not a serving
    or torchrun run, and ``--processes`` above 1 or not given."""
    from fastprof.measure import runner

    if args.serving or args.rate is not None or runner.distributed_mode(args) is not None:
        return False
    return workers.default_processes(args.processes) > 1


def _main(args: argparse.Namespace, argv: Any, server: Any) -> int:
    from fastprof.measure import runner

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"'fastprof run' needs torch and transformers ({exc.name} is missing): "
                         "pip install 'fastprof[hf]'") from None
    import torch

    device = _resolve_device(args.device, torch)
    _speculative_axis(args)
    _prepare_prompts(args)
    note = _check_positions(args)
    if note:
        print(f"fastprof: warning: {note}", file=sys.stderr)
    if args.serving or args.rate is not None:
        if (args.processes or 1) > 1:
            raise UsageError("--processes does not apply to --serving (one process serves every rate)")
        args.processes = workers.default_processes(args.processes, serving=True)
        return _serving_main(args, device, argv)
    mode = runner.distributed_mode(args)
    if mode == "tp" and args.quantization != ["none"]:
        raise UsageError("--quantization does not combine with --tp (a quantized model is loaded on one device)")
    if mode is not None and (args.processes or 1) > 1:
        raise UsageError(f"--processes does not apply to --{mode}: torchrun starts the processes")
    args.processes = workers.default_processes(args.processes, mode)
    if args.processes > 1:
        try:
            outcome = workers.run_processes(args, argv if argv is not None else sys.argv[1:],
                                            command=["fastprof", *(argv if argv is not None else sys.argv[1:])],
                                            server=server, device=device)
        except workers.WorkerInputError as exc:
            raise UsageError(str(exc)) from None
        except RuntimeError as exc:
            print(f"fastprof: {exc}", file=sys.stderr)
            return 1
        if args.speculative and outcome.sweep.attach_speedups(seed=args.seed):
            # The speed-ups over the merged processes, each process's pair of runs a unit.
            sweep = outcome.sweep
            if len(sweep.runs) == 1 and sweep.runs[0].result is not None:
                sweep.runs[0].result.save(args.output)
            else:
                sweep.save(args.output)
        _print_outcome(outcome, args)
        return outcome.exit_code
    if mode is not None:
        device = _distributed_checks(args, mode, device, torch)
    try:
        outcome = runner.run_sweep(args, device=device,
                                   command=["fastprof", *(argv if argv is not None else sys.argv[1:])])
    except runner.ModelLoadError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if mode is not None:
            from fastprof.measure import distributed

            distributed.teardown()
    if outcome.rank != 0:
        # Rank 0 reports for the job: an early non-zero exit here would make torchrun stop rank 0
        # before it has written the results.
        return 0
    _print_outcome(outcome, args)
    return outcome.exit_code


def _serving_main(args: argparse.Namespace, device: str, argv: Any) -> int:
    """``fastprof run --serving``: one configuration per rate, the serving curve on the console."""
    from fastprof.measure import serving

    if not args.serving:
        raise UsageError("argument --rate: needs --serving")
    if args.rate is None and args.arrival != "burst":
        raise UsageError("--serving needs --rate R[,R...] (requests per second), or --arrival burst")
    if args.tp or args.dp:
        raise UsageError("--serving runs in one process; --tp and --dp do not apply")
    if args.arrival == "burst" and args.duration is not None:
        raise UsageError("--arrival burst needs --num-requests (all requests arrive at once), not --duration")
    if args.prompt_texts:
        raise UsageError("--serving sends random prompt ids; --prompt and --prompts do not apply")
    for flag, values in (("--prompt-len", args.prompt_len), ("--max-new-tokens", args.max_new_tokens),
                         ("--dtype", args.dtype), ("--quantization", args.quantization),
                         ("--attn-implementation", args.attn_implementation)):
        if len(values) > 1:
            raise UsageError(f"argument {flag}: --serving sweeps rates only; give one value")
    try:
        outcome = serving.run_rates(args, device=device,
                                    command=["fastprof", *(argv if argv is not None else sys.argv[1:])])
    except serving.UnsupportedServingError as exc:
        raise UsageError(f"--serving: {exc}") from None
    except runner_model_error() as exc:
        raise UsageError(str(exc)) from None
    from fastprof.report.serving import print_serving

    _print_outcome(outcome, args, view=print_serving, what="rate(s)")
    return outcome.exit_code


def runner_model_error() -> type:
    from fastprof.measure.runner import ModelLoadError

    return ModelLoadError


def _distributed_checks(args: argparse.Namespace, mode: str, device: str, torch: Any) -> str:
    """Under torchrun: the rank's device, and bad combinations refused before anything runs
    (every rank checks; only rank 0 prints)."""
    from fastprof.measure import distributed

    rank, world, local_rank = distributed.env_world()
    if world < 2:
        raise UsageError(f"--{mode} needs several processes: launch with "
                         f"'torchrun --nproc-per-node N -m fastprof run --{mode} ...'")
    if device.startswith("cuda"):
        if torch.cuda.device_count() <= local_rank:
            raise UsageError(f"rank {rank}: local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if mode == "tp":
        try:
            cfg = _model_config(args)
        except (OSError, ValueError) as exc:
            raise UsageError(f"argument --model: cannot read the config of {args.model!r}: {exc}") from None
        heads = int(getattr(cfg, "num_attention_heads", 0) or 0)
        kv = int(getattr(cfg, "num_key_value_heads", heads) or heads)
        if heads % world or kv % world:
            raise UsageError(f"--tp over {world} ranks: the model's {heads} attention heads and {kv} key-value "
                             f"heads must both divide by {world}")
    return device


def _print_outcome(outcome: Any, args: argparse.Namespace, *, view: Any = None,
                   what: str = "configuration(s)") -> None:
    """The finished sweep on stdout (one result's own tables, or ``view`` of the sweep: the report
    table by default), then where it was written and what failed."""
    from rich.console import Console
    from rich.markup import escape

    from fastprof.report import print_console
    from fastprof.report.distributed import print_ranks

    sweep = outcome.sweep
    if outcome.exit_code == 130:
        return
    out_console = Console()
    if len(sweep.runs) == 1 and sweep.runs[0].result is not None:
        out_console.print(sweep.runs[0].result)
        print_ranks(sweep, out_console)
    else:
        (view or print_console)(sweep, console=out_console)
    console = Console(stderr=True, quiet=args.quiet, soft_wrap=True)
    console.print(escape(f"results written to {args.output}"))
    if outcome.failed:
        console.print(f"[red]{outcome.failed} of {outcome.total} {what} failed[/red]")
