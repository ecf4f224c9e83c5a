"""The observer effect: how much fastprof slows down the generation it measures, against other observers.

Workload: a Llama-architecture model of about 1.2B parameters (hidden 2048, 16 layers, 32 heads,
8 KV heads, vocabulary 128256, intermediate 8192; random weights, bf16), batch 1, 128 prompt
tokens, 128 new tokens, greedy. Twice: eager (dynamic cache), and compiled (static cache, with
transformers' own torch.compile of the decode forward, mode reduce-overhead), warmed up first.

Arms, run in rounds with the order shuffled within each round (seeded); each arm is timed end to
end the same way (synchronise, clock, generate, synchronise, clock):

  none            no instrumentation
  none (A/A)      the same arm again under another name: the noise floor
  fastprof 10 ms  fastprof's streamer + logits processor on a TokenRecorder with GPU events, and
                  the native GPU sampler at 10 ms (started before the timed region, stopped after)
  fastprof 1 ms   the same with the sampler at 1 ms
  fastprof+stalls fastprof 10 ms plus stall recording (gc callbacks, the native /proc scheduler
                  watch at 1 ms, compile callbacks), as benchmark_generate records them
  hf-style        a BaseStreamer appending time.perf_counter() per token, plus a pynvml monitor
                  in a spawned process polling utilisation and memory every 50 ms
  torch.profiler  torch.profiler.profile with CPU and CUDA activities around generate

Each arm's slowdown is the median over rounds of the paired ratio arm / none (same round), with a
seeded bootstrap 95% CI, next to the A/A ratio and its CI.

The direct measure: the host time fastprof adds per token inside generate (streamer.put + one more
logits processor in the list, whose call records the GPU event, + the mark), timed in isolation
over many calls with and without a GPU event, divided by the workload's median inter-token
latency; and the sampler thread's CPU time over the wall time it ran.

Targets: fastprof's full instrumentation adds <= 0.5% per token on the compiled workload and
<= 0.2% on the eager one (direct measure), and no fastprof arm's slowdown lies above the A/A band.

    python bench/observer_effect.py                 # H100: about 5-8 minutes
    python bench/observer_effect.py --smoke         # tiny model on the CPU, 2 rounds

Prints a compact table last; writes every figure to $OUT/observer_effect.json when OUT is set
(or to --output).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np

ARMS = ("none", "none (A/A)", "fastprof 10 ms", "fastprof 1 ms", "fastprof+stalls", "hf-style", "torch.profiler")
FASTPROF_ARMS = ("fastprof 10 ms", "fastprof 1 ms", "fastprof+stalls")
TARGETS = {"compiled": 0.005, "eager": 0.002}  # per-token host cost / median ITL

MODEL_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                vocab_size=128256, intermediate_size=8192, max_position_embeddings=4096,
                bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
MODEL_SMOKE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   vocab_size=256, intermediate_size=128, max_position_embeddings=512)


# ---- the pynvml monitor of the hf-style arm (top level: spawned processes import this module) ----

def pynvml_monitor(index: int, period_s: float, ready, stop, result) -> None:
    """Polls utilisation and memory every period_s until `stop` is set; counts polls in result."""
    polls = errors = 0
    handle = None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # no NVML (CPU smoke run): the process still runs and sleeps like the real one
        handle = None
    ready.set()
    next_t = time.monotonic()
    while not stop.is_set():
        if handle is not None:
            try:
                pynvml.nvmlDeviceGetUtilizationRates(handle)
                pynvml.nvmlDeviceGetMemoryInfo(handle)
                polls += 1
            except Exception:
                errors += 1
        next_t += period_s
        stop.wait(max(0.0, next_t - time.monotonic()))
    result[0], result[1], result[2] = polls, errors, 1 if handle is not None else 0
    if handle is not None:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


class Monitor:
    """The spawned pynvml monitor: started (and ready) before the timed region, stopped after."""

    def __init__(self, ctx, index: int, period_s: float = 0.05) -> None:
        self.ready, self.stop_event = ctx.Event(), ctx.Event()
        self.result = ctx.Array("l", 3)
        self.proc = ctx.Process(target=pynvml_monitor, args=(index, period_s, self.ready, self.stop_event, self.result),
                                daemon=True)

    def start(self) -> None:
        self.proc.start()
        if not self.ready.wait(60):
            raise RuntimeError("the pynvml monitor process did not start within 60 s")

    def stop(self) -> dict[str, int]:
        self.stop_event.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
        return {"polls": int(self.result[0]), "errors": int(self.result[1]), "nvml": bool(self.result[2])}


# ---- statistics ----------------------------------------------------------------------------

def paired_ratio(arm: list[float], base: list[float], seed: int, resamples: int = 10_000) -> dict[str, Any]:
    """Median of the per-round ratios arm/base, with a seeded percentile-bootstrap 95% CI."""
    r = np.asarray(arm, dtype=np.float64) / np.asarray(base, dtype=np.float64)
    out: dict[str, Any] = {"n": int(r.size), "ratios": r.tolist(), "median": float(np.median(r)) if r.size else None,
                           "ci95_low": None, "ci95_high": None}
    if r.size >= 2:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, r.size, size=(resamples, r.size))
        meds = np.median(r[idx], axis=1)
        out["ci95_low"], out["ci95_high"] = (float(v) for v in np.percentile(meds, [2.5, 97.5]))
    return out


# ---- the workload --------------------------------------------------------------------------

class Workload:
    def __init__(self, name: str, model: Any, inputs: dict, new_tokens: int, gen_kwargs: dict, cuda: bool) -> None:
        self.name, self.model, self.inputs, self.new_tokens = name, model, inputs, new_tokens
        self.kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        self.kwargs.update(gen_kwargs)
        self.cuda = cuda
        self.prompt_len = int(inputs["input_ids"].shape[-1])

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def generate(self, **extra: Any) -> Any:
        import torch

        with torch.inference_mode():
            out = self.model.generate(**self.inputs, **self.kwargs, **extra)
        produced = int(out.shape[-1]) - self.prompt_len
        if produced != self.new_tokens:
            raise RuntimeError(f"{self.name}: generate produced {produced} tokens, expected {self.new_tokens}")
        return out

    def timed(self, **extra: Any) -> int:
        """ns of one generate, synchronised on both sides."""
        self.sync()
        t0 = time.perf_counter_ns()
        self.generate(**extra)
        self.sync()
        return time.perf_counter_ns() - t0


def make_arms(wl: Workload, args: argparse.Namespace, mp_ctx, nvml_index: int) -> dict[str, Callable[[], dict]]:
    import torch
    from transformers import LogitsProcessorList
    from transformers.generation.streamers import BaseStreamer

    import fastprof
    from fastprof.capture.hf import make_hooks

    rec = fastprof.TokenRecorder(capacity=wl.new_tokens + 1, device="cuda" if wl.cuda else None)
    streamer, processor = make_hooks(rec)
    processors = LogitsProcessorList([processor])

    def arm_none() -> dict:
        return {"wall_ns": wl.timed()}

    def arm_fastprof(interval_ms: float, stalls: bool = False) -> Callable[[], dict]:
        def run() -> dict:
            sampler, reason = None, None
            stall_rec = None
            if stalls:
                from fastprof.capture.stalls import StallRecorder

                stall_rec = StallRecorder(cuda_device=torch.cuda.current_device() if wl.cuda else None).start()
            if wl.cuda:
                from fastprof.capture.sampler import Sampler

                try:
                    sampler = Sampler(interval_ms=interval_ms, devices=[torch.cuda.current_device()], backend="nvml")
                    sampler.start()
                except Exception as exc:  # no NVML: the arm still runs, without the sampler
                    sampler, reason = None, f"{type(exc).__name__}: {exc}"
            streamer.reset()
            wl.sync()
            t0 = time.perf_counter_ns()
            rec.begin()
            try:
                wl.generate(streamer=streamer, logits_processor=processors)
            finally:
                trace = rec.end()
            wl.sync()
            wall = time.perf_counter_ns() - t0
            out: dict[str, Any] = {"wall_ns": wall}
            if stall_rec is not None:
                events = stall_rec.stop()
                out["stalls"] = {"events": len(events), **stall_rec.cost}
            if trace.n_marks != wl.new_tokens:
                raise RuntimeError(f"the streamer saw {trace.n_marks} tokens, expected {wl.new_tokens}")
            out["itl_host_ns"] = np.diff(trace.host_marks_ns).tolist()
            if trace.device_marks_ns is not None and trace.device_marks_ns.size == trace.n_marks:
                out["itl_device_ns"] = np.diff(trace.device_marks_ns).tolist()
            if sampler is not None:
                r = sampler.stop()
                span = max(1, r.stop_ns - r.start_ns)
                out["sampler"] = {"samples": r.n_samples, "thread_cpu_ns": r.thread_cpu_ns,
                                  "energy_thread_cpu_ns": r.energy_thread_cpu_ns, "wall_ns": span,
                                  "cpu_fraction": r.thread_cpu_ns / span, "reason": r.reason,
                                  "missed_slots": r.missed_slots}
            else:
                out["sampler"] = {"reason": reason or "no GPU"}
            return out
        return run

    class PerfCounterStreamer(BaseStreamer):
        """What transformers' benchmarks do: a timestamp per put()."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    def arm_hf_style() -> dict:
        s = PerfCounterStreamer()
        mon = Monitor(mp_ctx, nvml_index)
        mon.start()
        try:
            wall = wl.timed(streamer=s)
        finally:
            polled = mon.stop()
        return {"wall_ns": wall, "monitor": polled, "puts": len(s.times)}

    def arm_profiler() -> dict:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if wl.cuda else [])
        prof = profile(activities=acts)
        prof.__enter__()
        try:
            wall = wl.timed()
        finally:
            t = time.perf_counter()
            prof.__exit__(None, None, None)
            post = time.perf_counter() - t
        return {"wall_ns": wall, "profiler_exit_s": post}

    return {"none": arm_none, "none (A/A)": arm_none, "fastprof 10 ms": arm_fastprof(10),
            "fastprof 1 ms": arm_fastprof(1), "fastprof+stalls": arm_fastprof(10, stalls=True),
            "hf-style": arm_hf_style, "torch.profiler": arm_profiler}


class _PresignedProcessor:
    """Wraps a logits processor so that inspect.signature(obj.__call__) finds a ready Signature
    (an instance attribute with __signature__); the call itself still goes through the class."""

    def __init__(self, inner: Any) -> None:
        import inspect

        def call(input_ids, scores):  # noqa: ARG001 - only its signature is read
            return scores

        call.__signature__ = inspect.signature(call)
        self.__call__ = call
        self._inner = inner

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return self._inner(input_ids, scores)


def direct_cost(wl: Workload, calls: int, repeats: int = 5) -> dict[str, Any]:
    """Host ns per token that fastprof's hooks add inside generate, timed in isolation: streamer.put
    of a CPU token + a LogitsProcessorList holding fastprof's processor, less the same list empty."""
    import torch
    from transformers import LogitsProcessorList

    import fastprof
    from fastprof.capture.hf import make_hooks

    dev = wl.inputs["input_ids"].device
    vocab = int(wl.model.config.vocab_size)
    ids = torch.zeros((1, wl.prompt_len + 1), dtype=torch.long, device=dev)
    scores = torch.zeros((1, vocab), dtype=torch.float32, device=dev)
    token = torch.zeros((1,), dtype=torch.long)
    out: dict[str, Any] = {"calls": calls, "repeats": repeats}
    modes = [("host only", None)] + ([("with GPU event", "cuda")] if wl.cuda else [])
    clock = time.perf_counter_ns
    for label, device in modes:
        rec = fastprof.TokenRecorder(capacity=calls, device=device)
        streamer, processor = make_hooks(rec)
        with_proc, empty = LogitsProcessorList([processor]), LogitsProcessorList()
        put = streamer.put
        full, base, put_only, proc_only = [], [], [], []
        for _ in range(repeats):
            streamer.reset()
            put(token)  # the prompt
            rec.begin()
            t0 = clock()
            for _ in range(calls):
                put(token)
                with_proc(ids, scores)
            t1 = clock()
            rec.end()
            t2 = clock()
            for _ in range(calls):
                empty(ids, scores)
            t3 = clock()
            rec.begin()
            t4 = clock()
            for _ in range(calls):
                put(token)
            t5 = clock()
            rec.end()
            rec.begin()
            t6 = clock()
            for _ in range(calls):
                processor(ids, scores)
            t7 = clock()
            rec.end()
            full.append((t1 - t0) / calls)
            base.append((t3 - t2) / calls)
            put_only.append((t5 - t4) / calls)
            proc_only.append((t7 - t6) / calls)
        added = [f - b for f, b in zip(full, base)]
        # The same processor behind a precomputed signature: LogitsProcessorList calls
        # inspect.signature(processor.__call__) on every call, which dominates the cost above.
        fast = LogitsProcessorList([_PresignedProcessor(processor)])
        presigned = []
        for _ in range(repeats):
            rec.begin()
            t0 = clock()
            for _ in range(calls):
                fast(ids, scores)
            presigned.append((clock() - t0) / calls - statistics.median(base))
            rec.end()
        # begin() + end() once per generate call, spread over its tokens
        be = []
        for _ in range(repeats):
            t0 = clock()
            rec.begin()
            rec.end()
            be.append(clock() - t0)
        out[label] = {"added_per_token_ns": statistics.median(added), "put_ns": statistics.median(put_only),
                      "processor_call_ns": statistics.median(proc_only),
                      "list_with_fastprof_ns": statistics.median(full), "empty_list_ns": statistics.median(base),
                      "begin_end_ns": statistics.median(be),
                      "hf_dispatch_ns": statistics.median(added) - statistics.median(proc_only),
                      "list_presigned_processor_ns": statistics.median(presigned),
                      "per_token_total_ns": statistics.median(added) + statistics.median(be) / wl.new_tokens,
                      "samples_added_ns": added}
    return out


def _compiled_frames() -> int:
    """Frames torch.compile has compiled so far in this process."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["frames"]["ok"])
    except Exception:
        return -1


def run_workload(wl: Workload, args: argparse.Namespace, mp_ctx, nvml_index: int, deadline: float,
                 log: Callable[[str], None]) -> dict[str, Any]:
    res: dict[str, Any] = {"name": wl.name, "generate_kwargs": {k: v for k, v in wl.kwargs.items()
                                                                if isinstance(v, (int, float, str, bool))}}
    frames0 = _compiled_frames()
    t = time.perf_counter()
    for i in range(args.warmup):
        wl.timed()
        log(f"{wl.name}: warm-up {i + 1}/{args.warmup} done at {time.perf_counter() - t:.1f} s")
    res["warmup_s"] = time.perf_counter() - t
    res["compiled_frames_in_warmup"] = _compiled_frames() - frames0
    res["compiled_call"] = bool(wl.kwargs.get("cache_implementation") == "static"
                                and getattr(wl.model, "_compiled_call", None) is not None
                                and res["compiled_frames_in_warmup"] > 0)
    arms = make_arms(wl, args, mp_ctx, nvml_index)
    for name, fn in arms.items():  # each arm once, untimed
        if name == "hf-style":
            continue  # nothing to warm; its process start is outside the timed region anyway
        fn()
    rng = random.Random(args.seed)
    rounds: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    t = time.perf_counter()
    for r in range(args.rounds):
        if r >= 3 and time.perf_counter() > deadline:
            log(f"{wl.name}: time budget reached after {r} rounds")
            break
        order = list(ARMS)
        rng.shuffle(order)
        row: dict[str, Any] = {"order": order, "arms": {}}
        for name in order:
            if name in failed:
                continue
            try:
                row["arms"][name] = arms[name]()
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
                log(f"{wl.name}: arm {name} failed: {failed[name]}")
                if os.environ.get("FASTPROF_DEBUG"):
                    traceback.print_exc()
        rounds.append(row)
        none_ms = row["arms"].get("none", {}).get("wall_ns", float("nan")) / 1e6
        log(f"{wl.name}: round {r + 1}/{args.rounds} done at {time.perf_counter() - t:.1f} s (none {none_ms:.1f} ms)")
    res["rounds_s"] = time.perf_counter() - t
    res["rounds"] = rounds
    res["failed_arms"] = failed

    complete = [row for row in rounds if "none" in row["arms"]]
    base = [row["arms"]["none"]["wall_ns"] for row in complete]
    stats: dict[str, Any] = {}
    for i, name in enumerate(ARMS):
        pairs = [(row["arms"][name]["wall_ns"], row["arms"]["none"]["wall_ns"]) for row in complete
                 if name in row["arms"]]
        if not pairs:
            stats[name] = {"n": 0}
            continue
        a, b = zip(*pairs)
        s = paired_ratio(list(a), list(b), seed=args.seed + i)
        s["median_wall_s"] = float(np.median(a)) / 1e9
        stats[name] = s
    res["arms"] = stats
    res["none_median_s"] = float(np.median(base)) / 1e9 if base else None

    itl = [x for row in rounds for x in row["arms"].get("fastprof 10 ms", {}).get("itl_host_ns", [])]
    itl_dev = [x for row in rounds for x in row["arms"].get("fastprof 10 ms", {}).get("itl_device_ns", [])]
    res["itl_host_p50_ns"] = float(np.median(itl)) if itl else None
    res["itl_device_p50_ns"] = float(np.median(itl_dev)) if itl_dev else None
    for name in FASTPROF_ARMS:
        fr = [row["arms"][name]["sampler"]["cpu_fraction"] for row in rounds
              if name in row["arms"] and "cpu_fraction" in row["arms"][name].get("sampler", {})]
        res.setdefault("sampler_cpu_fraction", {})[name] = float(np.median(fr)) if fr else None

    res["new_tokens"] = wl.new_tokens
    st = [row["arms"]["fastprof+stalls"]["stalls"] for row in rounds if "fastprof+stalls" in row["arms"]]
    if st:
        res["stalls_cost"] = {
            "watch_cpu_s_per_generate": float(np.median([x.get("sched_watch_cpu_s", 0.0) for x in st])),
            "watch_reads_per_generate": float(np.median([x.get("sched_reads", 0) for x in st])),
            "stop_s": float(np.median([x.get("stop_s", 0.0) for x in st])),
            "events_per_generate": float(np.median([x["events"] for x in st])),
        }
    res["direct"] = direct_cost(wl, args.direct_calls)
    itl_ns = res["itl_host_p50_ns"]
    worst = max(v["per_token_total_ns"] for k, v in res["direct"].items() if isinstance(v, dict))
    res["direct_fraction"] = worst / itl_ns if itl_ns else None
    aa = stats.get("none (A/A)", {})
    band_high = aa.get("ci95_high")
    verdicts = {}
    for name in FASTPROF_ARMS:
        s = stats.get(name, {})
        if s.get("median") is None or band_high is None:
            verdicts[name] = None
        else:
            verdicts[name] = bool(s["median"] <= band_high)
    res["within_aa_band"] = verdicts
    target = TARGETS.get(wl.name)
    res["direct_target"] = target
    res["direct_ok"] = (res["direct_fraction"] <= target) if (target and res["direct_fraction"] is not None) else None
    return res


def build_model(args: argparse.Namespace, cuda: bool):
    import torch

    from fastprof.capture.hf import build_default_model

    overrides = dict(MODEL_SMOKE if args.smoke else MODEL_1B)
    dtype = torch.bfloat16 if cuda else torch.float32
    device = "cuda" if cuda else "cpu"
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # initialise the weights where they will live
            model = build_default_model(dtype=dtype, device=device, seed=args.seed, **overrides)
    finally:
        torch.set_default_dtype(prev)
    model.generation_config.pad_token_id = 0
    return model


def _fmt_ratio(s: dict) -> str:
    if not s or s.get("median") is None:
        return "-"
    if s.get("ci95_low") is None:
        return f"{s['median']:.4f}"
    return f"{s['median']:.4f} [{s['ci95_low']:.4f}, {s['ci95_high']:.4f}]"


def print_summary(report: dict) -> None:
    print()
    print("=" * 100)
    cfg = report["config"]
    print(f"observer effect: {cfg['model']}, batch 1, prompt {cfg['prompt_len']}, new {cfg['new_tokens']}, "
          f"rounds {cfg['rounds']}, device {report['environment'].get('gpu') or 'cpu'}")
    for name, wl in report["workloads"].items():
        if "error" in wl:
            print(f"\n[{name}] FAILED: {wl['error']}")
            continue
        itl = wl.get("itl_host_p50_ns")
        itl_s = f"{itl / 1e6:.3f} ms" if itl else "-"
        print(f"\n[{name}] none p50 {wl['none_median_s']:.4f} s/generate, ITL p50 {itl_s} (host)"
              + (f", {wl['itl_device_p50_ns'] / 1e6:.3f} ms (device)" if wl.get("itl_device_p50_ns") else "")
              + f"; compiled decode: {wl['compiled_call']} ({wl['compiled_frames_in_warmup']} frames compiled in "
              f"warm-up {wl['warmup_s']:.0f} s); rounds {len(wl['rounds'])}")
        aa = wl["arms"].get("none (A/A)", {})
        print(f"  {'arm':<16}{'median s':>10}  {'paired ratio p50 [95% CI]':<32}{'vs A/A band':<12}")
        for arm in ARMS:
            s = wl["arms"].get(arm, {})
            if not s.get("n"):
                why = wl["failed_arms"].get(arm, "no data")
                print(f"  {arm:<16}{'-':>10}  failed: {why[:70]}")
                continue
            band = ""
            if arm not in ("none", "none (A/A)") and aa.get("ci95_high") is not None:
                band = "within" if s["median"] <= aa["ci95_high"] else "ABOVE"
            print(f"  {arm:<16}{s['median_wall_s']:>10.4f}  {_fmt_ratio(s):<32}{band:<12}")
        d = wl["direct"]
        for label in ("host only", "with GPU event"):
            if label in d:
                v = d[label]
                frac = v["per_token_total_ns"] / itl if itl else float("nan")
                print(f"  direct, {label:<15}: {v['per_token_total_ns'] / 1e3:.2f} us/token "
                      f"= {frac:.3%} of ITL [put {v['put_ns'] / 1e3:.2f}, processor {v['processor_call_ns'] / 1e3:.2f}, "
                      f"HF list dispatch {v['hf_dispatch_ns'] / 1e3:.2f} (presigned: list+processor "
                      f"{v['list_presigned_processor_ns'] / 1e3:.2f}), begin+end {v['begin_end_ns'] / 1e3:.1f}/generate]")
        sc = wl.get("sampler_cpu_fraction", {})
        print("  sampler thread CPU: " + ", ".join(f"{k} {v:.3%}" if v is not None else f"{k} -"
                                                    for k, v in sc.items()))
        stc = wl.get("stalls_cost")
        if stc:
            tokens = wl.get("new_tokens") or 0
            per_tok = stc["watch_cpu_s_per_generate"] / tokens * 1e6 if tokens else float("nan")
            print(f"  stall recording: scheduler watch {stc['watch_cpu_s_per_generate'] * 1e3:.2f} ms CPU per generate "
                  f"({per_tok:.2f} us/token, on its own thread), {stc['watch_reads_per_generate']:.0f} reads, "
                  f"{stc['events_per_generate']:.0f} events, stop {stc['stop_s'] * 1e3:.2f} ms (after the clock)")
        t = wl.get("direct_target")
        ok = wl.get("direct_ok")
        frac = wl.get("direct_fraction")
        print(f"  TARGET direct <= {t:.1%} per token: {frac:.3%} -> {'PASS' if ok else 'FAIL'}"
              if t is not None and frac is not None else "  TARGET direct: -")
        w = wl.get("within_aa_band", {})
        print("  TARGET fastprof arms within the A/A band: "
              + ", ".join(f"{k}: {'PASS' if v else ('FAIL' if v is False else '-')}" for k, v in w.items()))
    print(f"\ntotal {report['total_s']:.0f} s" + (f"; wrote {report['output']}" if report.get("output") else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds of all arms (default 10; smoke: 2)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per generate (default 128; smoke: 16)")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 128; smoke: 16)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed generate calls per workload first")
    ap.add_argument("--skip-compiled", action="store_true", help="the eager workload only")
    ap.add_argument("--skip-eager", action="store_true", help="the compiled workload only")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 2 rounds: checks the script")
    ap.add_argument("--direct-calls", type=int, default=20_000, help="calls per repeat of the direct measure")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="stop starting new rounds (after at least 3) once this much time has passed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", help="JSON file (default: $OUT/observer_effect.json when OUT is set)")
    args = ap.parse_args()
    args.rounds = args.rounds or (2 if args.smoke else 10)
    args.new_tokens = args.new_tokens or (16 if args.smoke else 128)
    args.prompt_len = args.prompt_len or (16 if args.smoke else 128)
    if args.smoke:
        args.warmup = min(args.warmup, 1)
        args.direct_calls = min(args.direct_calls, 2_000)

    t_start = time.perf_counter()
    deadline = t_start + args.budget_s

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    import torch
    import transformers
    from transformers import CompileConfig

    import fastprof
    from fastprof.capture.hf import random_inputs

    cuda = torch.cuda.is_available() and not args.smoke
    mp_ctx = mp.get_context("spawn")
    nvml_index = 0
    if cuda:
        try:
            from fastprof.capture.sampler import cuda_visible_to_nvml

            ident = cuda_visible_to_nvml([torch.cuda.current_device()])[0]
            if ident.isdigit():
                nvml_index = int(ident)
            else:
                import pynvml

                pynvml.nvmlInit()
                handle = (pynvml.nvmlDeviceGetHandleByUUID(ident) if ident.startswith(("GPU-", "MIG-"))
                          else pynvml.nvmlDeviceGetHandleByPciBusId(ident))
                nvml_index = int(pynvml.nvmlDeviceGetIndex(handle))
                pynvml.nvmlShutdown()
        except Exception as exc:
            log(f"NVML index of the device unknown ({exc}); the pynvml monitor polls index 0")

    model = build_model(args, cuda)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model built: {n_params / 1e9:.3f} B parameters, {model.dtype}, on {'cuda' if cuda else 'cpu'}")
    device = "cuda" if cuda else "cpu"
    inputs = random_inputs(model.config.vocab_size, 1, args.prompt_len, device=device, seed=args.seed)

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "fastprof": fastprof.__version__, "host": platform.node(), "cpu_count": os.cpu_count(),
           "gpu": torch.cuda.get_device_name() if cuda else None,
           "cuda": torch.version.cuda if cuda else None}
    report: dict[str, Any] = {
        "kind": "observer_effect",
        "config": {"model": "smoke tiny Llama" if args.smoke else "Llama ~1.2B (random, bf16)",
                   "model_config": MODEL_SMOKE if args.smoke else MODEL_1B, "parameters": n_params,
                   "batch_size": 1, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                   "rounds": args.rounds, "warmup": args.warmup, "seed": args.seed, "arms": list(ARMS),
                   "direct_calls": args.direct_calls, "smoke": args.smoke},
        "environment": env, "targets": TARGETS, "workloads": {}}

    plan = []
    if not args.skip_compiled:
        if args.smoke:  # exercise the static cache + compiled decode path without inductor's build time
            cc = CompileConfig(backend="eager", mode=None)
            cc._compile_all_devices = True
        else:
            cc = CompileConfig()  # inductor, reduce-overhead (CUDA graphs), as transformers does by default
        plan.append(("compiled", {"cache_implementation": "static", "compile_config": cc}))
    if not args.skip_eager:
        plan.append(("eager", {"disable_compile": True}))
    for name, kw in plan:
        wl = Workload(name, model, inputs, args.new_tokens, kw, cuda)
        try:
            report["workloads"][name] = run_workload(wl, args, mp_ctx, nvml_index, deadline, log)
        except Exception as exc:
            traceback.print_exc()
            report["workloads"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        if cuda:
            torch.cuda.empty_cache()
    report["total_s"] = time.perf_counter() - t_start

    output = args.output or (os.path.join(os.environ["OUT"], "observer_effect.json") if os.environ.get("OUT") else None)
    if output:
        from fastprof.results.result import write_atomic

        report["output"] = output
        write_atomic(output, json.dumps(report, indent=1, default=str) + "\n")
    print_summary(report)
    return 0 if all("error" not in w for w in report["workloads"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
