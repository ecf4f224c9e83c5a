"""Speculative decoding under fastprof's step recorder: step time, tokens per step, acceptance,
draft and verification time, the speed-up against plain decoding, and what the recorder costs
per step.

Workload: a 1.2B target (``--model DIR``, loaded in bf16; default: the built-in architecture at
1.2B parameters with random weights, as bench/observer_effect.py), batch 1, a 64-token prompt made
of a 16-token random n-gram repeated four times (so that prompt lookup finds matches), 64 new
tokens, greedy, eager. There is no compiled workload: transformers' assisted generation (assistant
models and prompt lookup alike) refuses the static KV cache that its torch.compile path needs
("assisted generate is not supported with Static cache classes", transformers 5.17), and
``fastprof run`` refuses ``--compile on`` with speculative decoding for that reason.

Arms, in rounds with the order shuffled within each round (seeded), each one generate timed end
to end (synchronise, clock, generate, synchronise, clock):

  plain                      plain decoding under fastprof's per-token recorder
  plain (no recorder)        plain decoding, no instrumentation
  plain (no recorder, A/A)   the same again under another name: the noise floor
  self k=2/4/8               the target as its own draft (every draft accepted), k draft tokens a step
  self k=4 (no recorder)     the same without instrumentation: the step recorder's cost
  builtin k=2/4/8            fastprof's built-in draft model (random weights: few drafts accepted)
  lookup 3                   prompt lookup decoding, 3-token drafts

The instrumented arms record what ``benchmark_generate`` records (one host mark and one device
event per step, tokens per step, the draft marked before and after by a second recorder): per
arm, the median over rounds of the mean tokens per step, acceptance, decode step time, draft and
verification time per step. Speed-up: the median over rounds of the paired ratio plain / arm (both
instrumented) with a seeded bootstrap 95% CI. Recorder cost per step: the median paired difference
(instrumented - uninstrumented) divided by the steps, for plain decoding and for self k=4, beside
the A/A ratio.

    python bench/speculative.py --model /path/to/1.2B   # GPU: about 3 minutes on an H200
    python bench/speculative.py                         # GPU, the built-in 1.2B architecture
    python bench/speculative.py --smoke                 # tiny model on the CPU: checks the script

Prints a table, then a JSON summary as its last line; writes every figure to
$OUT/speculative.json when OUT is set (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from observer_effect import MODEL_1B, MODEL_SMOKE, paired_ratio  # noqa: E402
from observer_effect import Workload as Target  # noqa: E402 - the target model, its prompt and settings

CONSTANT = {"num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.0}


def make_arm(t: Target, spec: dict[str, Any], recorded: bool) -> Callable[[], dict]:
    """One arm: generate with ``spec`` (generate kwargs of the speculative method, {} for plain),
    under fastprof's recorder (``recorded``) or without instrumentation."""
    from fastprof.analysis import speculative as S
    from fastprof.capture import speculative as C
    from fastprof.capture.hf import make_hooks
    from fastprof.capture.recorder import TokenRecorder
    from fastprof.measure.driver import _step_trace
    from transformers import LogitsProcessorList

    settings = {k: spec[k] for k in C.ASSISTANT_SETTINGS if k in spec}
    gen = {k: v for k, v in spec.items() if k not in settings}
    assistant = gen.get("assistant_model")
    device = "cuda" if t.cuda else None
    cap = t.new_tokens + 1
    if not recorded:
        rec = draft = log = hooks = wrap = None
    elif spec:
        rec, draft = TokenRecorder(cap, device=device), TokenRecorder(2 * cap + 2, device=device)
        log = C.StepLog(cap)
        streamer, processor, wrapper = C.make_step_hooks(rec, draft, log)
        hooks = {"streamer": streamer, "logits_processor": LogitsProcessorList([processor])}
        wrap = wrapper.installed(t.model)
    else:
        rec, draft, log, wrap = TokenRecorder(cap, device=device), None, None, None
        streamer, processor = make_hooks(rec)
        hooks = {"streamer": streamer, "logits_processor": LogitsProcessorList([processor])}
    method = C.method(gen, t.model)

    def arm() -> dict:
        saved = {k: getattr(assistant.generation_config, k) for k in settings} if assistant is not None else {}
        for k, v in settings.items():
            setattr(assistant.generation_config, k, v)
        try:
            if hooks:
                hooks["streamer"].reset()
            t.sync()
            t0 = time.perf_counter_ns()
            if draft is not None:
                draft.begin()
            if rec is not None:
                rec.begin()
            if wrap is not None:
                with wrap:
                    t.generate(**gen, **(hooks or {}))
            else:
                t.generate(**gen, **(hooks or {}))
            trace = rec.end() if rec is not None else None
            dtrace = draft.end() if draft is not None else None
            t.sync()
            wall = time.perf_counter_ns() - t0
        finally:
            for k, v in saved.items():
                setattr(assistant.generation_config, k, v)
        out: dict[str, Any] = {"wall_ns": wall}
        if trace is None:
            return out
        if dtrace is not None:
            trace = _step_trace(trace, dtrace, log, method)
        m = S.step_metrics([trace], "host")
        tokens = m["tokens_per_step"][0]
        out.update(steps=int(tokens.size), tokens_per_step=float(tokens.mean()),
                   acceptance=float(m["acceptance_rate"][0][0]) if len(m["acceptance_rate"][0]) else None,
                   step_s=float(np.mean(m["step_s"][0])) if len(m["step_s"][0]) else None,
                   draft_s=float(np.mean(m["draft_s"][0])) if len(m["draft_s"][0]) else None,
                   verify_s=float(np.mean(m["verify_s"][0])) if len(m["verify_s"][0]) else None)
        if trace.device_marks_ns is not None and trace.device_marks_ns.size == trace.n_marks:
            d = S.step_metrics([trace], "device")
            if d is not None:
                out.update(device_step_s=float(np.mean(d["step_s"][0])) if len(d["step_s"][0]) else None,
                           device_draft_s=float(np.mean(d["draft_s"][0])) if len(d["draft_s"][0]) else None,
                           device_verify_s=float(np.mean(d["verify_s"][0])) if len(d["verify_s"][0]) else None)
        return out

    return arm


def arms_for(t: Target, draft_model: Any, ks: list[int], lookup: int) -> dict[str, Callable[[], dict]]:
    arms = {"plain": make_arm(t, {}, True), "plain (no recorder)": make_arm(t, {}, False)}
    arms["plain (no recorder, A/A)"] = arms["plain (no recorder)"]
    for k in ks:
        arms[f"self k={k}"] = make_arm(t, {"assistant_model": t.model, "num_assistant_tokens": k, **CONSTANT}, True)
    mid = ks[len(ks) // 2]
    arms[f"self k={mid} (no recorder)"] = make_arm(t, {"assistant_model": t.model, "num_assistant_tokens": mid,
                                                       **CONSTANT}, False)
    for k in ks:
        arms[f"builtin k={k}"] = make_arm(t, {"assistant_model": draft_model, "num_assistant_tokens": k, **CONSTANT},
                                          True)
    arms[f"lookup {lookup}"] = make_arm(t, {"prompt_lookup_num_tokens": lookup}, True)
    return arms


def _median(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.median(vals)) if vals else None


def run_workload(t: Target, arms: dict[str, Callable[[], dict]], args: argparse.Namespace, deadline: float,
                 log: Callable[[str], None], mid: int) -> dict:
    res: dict[str, Any] = {"name": t.name}
    for name, arm in arms.items():  # warm-up: every arm before the rounds
        for _ in range(args.warmup):
            arm()
        log(f"{t.name}: warmed up {name}")
    rng = random.Random(args.seed)
    rounds = []
    for r in range(args.rounds):
        if r >= 2 and time.perf_counter() > deadline:
            log(f"{t.name}: time budget reached after {r} rounds")
            break
        order = list(arms)
        rng.shuffle(order)
        rounds.append({name: arms[name]() for name in order})
        log(f"{t.name}: round {r + 1}/{args.rounds}")
    res["rounds"] = rounds
    stats: dict[str, Any] = {}
    plain = [row["plain"]["wall_ns"] for row in rounds]
    for i, name in enumerate(arms):
        rows = [row[name] for row in rounds]
        wall = [x["wall_ns"] for x in rows]
        s: dict[str, Any] = {"median_wall_s": float(np.median(wall)) / 1e9}
        if "no recorder" not in name and name != "plain":
            s["speedup"] = paired_ratio(plain, wall, seed=args.seed + i)  # plain / arm
            s["speedup"].pop("ratios", None)
        for key in ("steps", "tokens_per_step", "acceptance", "step_s", "draft_s", "verify_s", "device_step_s",
                    "device_draft_s", "device_verify_s"):
            s[key] = _median(rows, key)
        stats[name] = s
    aa = paired_ratio([row["plain (no recorder, A/A)"]["wall_ns"] for row in rounds],
                      [row["plain (no recorder)"]["wall_ns"] for row in rounds], seed=args.seed)
    aa.pop("ratios", None)
    cost: dict[str, Any] = {"a_a_ratio": aa}
    for rec_arm, bare in (("plain", "plain (no recorder)"), (f"self k={mid}", f"self k={mid} (no recorder)")):
        diff = [(row[rec_arm]["wall_ns"] - row[bare]["wall_ns"]) / max(row[rec_arm].get("steps") or 1, 1)
                for row in rounds]
        ratio = paired_ratio([row[rec_arm]["wall_ns"] for row in rounds], [row[bare]["wall_ns"] for row in rounds],
                             seed=args.seed + 99)
        ratio.pop("ratios", None)
        cost[rec_arm] = {"added_s_per_step": float(np.median(diff)) / 1e9, "ratio": ratio,
                         "step_s": stats[rec_arm]["step_s"]}
    res["arms"], res["recorder_cost"] = stats, cost
    return res


def load_target(args: argparse.Namespace, cuda: bool) -> Any:
    import torch

    from fastprof.capture.hf import build_default_model

    dtype = torch.bfloat16 if cuda else torch.float32
    device = "cuda" if cuda else "cpu"
    if args.model:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, local_files_only=True).to(device).eval()
    else:
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model = build_default_model(dtype=dtype, device=device, seed=args.seed,
                                            **(MODEL_SMOKE if args.smoke else MODEL_1B))
        finally:
            torch.set_default_dtype(prev)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = 0
    return model


def fmt(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    if s.get("ci95_low") is None:
        return f"{s['median']:.3f}"
    return f"{s['median']:.3f} [{s['ci95_low']:.3f}, {s['ci95_high']:.3f}]"


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", metavar="DIR", help="target model directory (default: the built-in 1.2B architecture)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of all arms (default 8; smoke: 2)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per generate (default 64; smoke: 12)")
    ap.add_argument("--draft-tokens", default=None, help="draft lengths (default 2,4,8; smoke: 2,4)")
    ap.add_argument("--lookup", type=int, default=3, help="prompt lookup draft length")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up calls of every arm")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script")
    ap.add_argument("--budget-s", type=float, default=150.0,
                    help="stop starting rounds (after 2) past this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output")
    args = ap.parse_args()
    args.rounds = args.rounds or (2 if args.smoke else 8)
    args.new_tokens = args.new_tokens or (12 if args.smoke else 64)
    ks = [int(k) for k in (args.draft_tokens or ("2,4" if args.smoke else "2,4,8")).split(",")]
    mid = ks[len(ks) // 2]
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    import torch

    from fastprof.capture.hf import build_default_draft

    cuda = torch.cuda.is_available() and not args.smoke
    model = load_target(args, cuda)
    dtype = torch.bfloat16 if cuda else torch.float32
    device = "cuda" if cuda else "cpu"
    draft = build_default_draft(dtype=dtype, device=device, seed=args.seed, target=model)
    log(f"target {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters, built-in draft "
        f"{sum(p.numel() for p in draft.parameters()) / 1e6:.0f}M")
    g = torch.Generator().manual_seed(args.seed)
    vocab = int(model.config.get_text_config().vocab_size)
    ngram = torch.randint(3, vocab, (1, 4 if args.smoke else 16), generator=g)
    ids = ngram.repeat(1, 4).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    workloads = [Target("eager", model, inputs, args.new_tokens, {}, cuda)]
    report: dict[str, Any] = {"config": {k: v for k, v in vars(args).items()}, "draft_tokens": ks,
                              "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                              "model": args.model or ("built-in smoke" if args.smoke else "built-in 1.2B architecture"),
                              "workloads": {}}
    for t in workloads:
        deadline = t_start + args.budget_s
        log(f"workload {t.name}")
        report["workloads"][t.name] = run_workload(t, arms_for(t, draft, ks, args.lookup), args, deadline, log, mid)
    out = args.output or (os.path.join(os.environ["OUT"], "speculative.json") if os.environ.get("OUT") else None)
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1, default=str)
    print(f"speculative decoding: {report['device']}, {report['model']}, batch 1, prompt {ids.shape[-1]} "
          f"(a repeated n-gram), new {args.new_tokens}")
    print(f"{'workload':9} {'arm':26} {'wall ms':>9} {'tok/step':>8} {'accept':>7} {'step ms':>9} {'draft ms':>9} "
          f"{'verify ms':>9} {'dev step':>9}  speed-up plain/arm [95% CI]")
    summary: dict[str, Any] = {"device": report["device"], "model": report["model"], "workloads": {}}
    for name, res in report["workloads"].items():
        ws: dict[str, Any] = {"rounds": len(res["rounds"]), "arms": {}, "recorder_cost": {}}
        for arm, s in res["arms"].items():
            acc = "-" if s.get("acceptance") is None else f"{s['acceptance']:.0%}"
            tps = "-" if s.get("tokens_per_step") is None else f"{s['tokens_per_step']:.2f}"
            print(f"{name:9} {arm:26} {s['median_wall_s'] * 1e3:9.1f} {tps:>8} {acc:>7} {ms(s.get('step_s')):>9} "
                  f"{ms(s.get('draft_s')):>9} {ms(s.get('verify_s')):>9} {ms(s.get('device_step_s')):>9}  "
                  f"{fmt(s.get('speedup'))}")
            ws["arms"][arm] = {k: s.get(k) for k in ("median_wall_s", "tokens_per_step", "acceptance", "step_s",
                                                      "draft_s", "verify_s", "device_step_s")}
            if s.get("speedup"):
                ws["arms"][arm]["speedup"] = {k: s["speedup"].get(k) for k in ("median", "ci95_low", "ci95_high")}
        cost = res["recorder_cost"]
        print(f"{name:9} A/A (no recorder vs itself): {fmt(cost['a_a_ratio'])}")
        for arm in ("plain", f"self k={mid}"):
            c = cost[arm]
            print(f"{name:9} recorder cost, {arm}: {c['added_s_per_step'] * 1e6:+.1f} us per step "
                  f"(step {ms(c['step_s'])} ms; ratio {fmt(c['ratio'])})")
            ws["recorder_cost"][arm] = {"added_s_per_step": c["added_s_per_step"], "step_s": c["step_s"],
                                        "ratio": {k: c["ratio"].get(k) for k in ("median", "ci95_low", "ci95_high")}}
        ws["recorder_cost"]["a_a_ratio"] = {k: cost["a_a_ratio"].get(k) for k in ("median", "ci95_low", "ci95_high")}
        summary["workloads"][name] = ws
    log("done")
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
