"""Several ranks (torchrun) on the console: one line per rank, the step skew, the clocks."""

from __future__ import annotations

from typing import Any

from fastprof.results.sweep import Sweep


def _ms(stats: dict[str, Any] | None, key: str = "p50") -> str:
    v = (stats or {}).get(key)
    return "-" if v is None else f"{v * 1e3:.3f}"


def print_ranks(sweep: Sweep, console: Any) -> None:
    """For every configuration measured over several ranks: each rank's TTFT and ITL medians,
    which rank was slowest, the step skew (tensor parallel) and how the clocks were aligned."""
    from rich.markup import escape
    from rich.table import Table

    for run in sweep.ok_runs:
        dist = getattr(run.result, "distributed", None)
        if not dist or "ranks" not in dist:
            continue
        label = run.label(sweep.varying_keys) if len(sweep.runs) > 1 else ""
        mode = "tensor parallel" if dist["mode"] == "tp" else "data parallel"
        t = Table(title=f"{escape(label)} {mode}, {dist['world_size']} ranks".strip(), title_justify="left")
        for col in ("rank", "device", "ttft p50 [ms]", "itl p50 [ms]", "itl p99 [ms]"):
            t.add_column(col, justify="left" if col in ("rank", "device") else "right", no_wrap=True)
        slowest = dist.get("slowest_rank")
        for r in dist["ranks"]:
            s = r.get("summary") or {}
            name = f"{r['rank']}{' (slowest)' if r['rank'] == slowest else ''}"
            t.add_row(name, str(r.get("device") or "-"), _ms(s.get("ttft_s")), _ms(s.get("itl_s")),
                      _ms(s.get("itl_s"), "p99"))
        console.print(t)
        skew = dist.get("skew")
        if skew:
            st = skew["step_skew_s"]
            counts = ", ".join(f"rank {i}: {n}" for i, n in enumerate(skew["last_counts"]))
            console.print(f"step skew across ranks: p50 {_ms(st)} ms, p99 {_ms(st, 'p99')} ms, max "
                          f"{_ms(st, 'max')} ms; last to finish a step: {counts}", highlight=False)
        total = run.result.summary.get("total_throughput_tokens_per_s")
        if total:
            console.print(f"throughput of all ranks together: {total['p50']:.1f} tok/s (median)", highlight=False)
        clock = dist.get("clock") or {}
        applied = [o for o in clock.get("offsets", []) if o.get("applied")]
        note = "; ".join(f"rank {o['rank']} {o['offset_ns'] / 1e3:+.1f} us +/- {o['uncertainty_ns'] / 1e3:.1f} us"
                         for o in applied)
        console.print(f"clocks: {clock.get('method')}{': ' + note if note else ''}", highlight=False)
