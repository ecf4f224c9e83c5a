#!/usr/bin/env python3
"""The pictures of the documentation, from a real results file, in a headless browser.

    python tools/docs_pictures.py RESULTS.json [--prefix NAME-] [--out docs/images] [--browser PATH]

1. The HTML report (``fastprof report RESULTS.json --html``) is loaded in headless Chromium, the
   browser the report's own test uses (``tests/integration/test_report_browser.py``). A script
   added to a copy of the page writes where each heading and chart landed, the whole page is
   screenshotted once, and the pictures are cut from that screenshot: the top of the report
   (``report-overview.png``) and every chart of the first configuration that ran, each with the
   heading above it (``report-<section>-<n>.png``).
2. The exported trace (``fastprof export RESULTS.json --trace``) is drawn offline as an SVG
   timeline, one row per track and one rectangle per slice, screenshotted in the same browser:
   ``trace-iteration.png`` (the timed iteration with the most slow tokens: iterations, host and
   device token gaps, stall events) and ``trace-traced.png`` (the last traced iteration: the host
   thread's modules and CUDA calls, and the kernels per stream when there is a kernel trace).
   This is fastprof's own sketch of the file Perfetto reads, labelled so on the picture; open the
   file itself in https://ui.perfetto.dev to explore it.

``--prefix`` starts every file name (the docs keep ``cpu-`` pictures of a CPU run beside ``gpu-``
pictures of a GPU run). PNGs are palette-quantised to stay small. Needs Chromium (``apt-get install chromium``), fastprof
and its dependencies (matplotlib brings Pillow). Stale ``PREFIXreport-*.png`` and ``PREFIXtrace-*.png`` in the
output folder are removed first, so each prefix holds exactly one run's pictures.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH = 1280
# The report's body is at most 1100 px wide, centred: the pictures keep that column and a margin.
COLUMN = ((WIDTH - 1100) // 2 - 20, WIDTH - (WIDTH - 1100) // 2 + 20)
MAX_BYTES = 300_000

POSITIONS_SCRIPT = """
<script>
(function () {
  var out = [];
  document.querySelectorAll('h1, h2, h3, img, table').forEach(function (el) {
    var r = el.getBoundingClientRect();
    out.push({tag: el.tagName.toLowerCase(), text: /^(IMG|TABLE)$/.test(el.tagName) ? '' : el.textContent,
              top: r.top + window.scrollY, bottom: r.bottom + window.scrollY});
  });
  var pre = document.createElement('pre');
  pre.id = 'fastprof-positions';
  pre.textContent = JSON.stringify({height: document.documentElement.scrollHeight, elements: out});
  document.body.appendChild(pre);
})();
</script>
"""


def find_browser(explicit: str | None) -> str:
    if explicit:
        return explicit
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("docs_pictures: no Chromium found (apt-get install chromium, or --browser PATH)")


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--hide-scrollbars", *args]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if run.returncode != 0:
        sys.exit(f"docs_pictures: the browser failed ({run.returncode}): {run.stderr[-2000:]}")
    return run


def screenshot(browser: str, profile: Path, page: Path, png: Path, width: int, height: int) -> None:
    headless(browser, profile, f"--screenshot={png}", f"--window-size={width},{height}", page.as_uri())
    if not png.exists():
        sys.exit(f"docs_pictures: the browser wrote no screenshot of {page}")


def save_small(image: Any, path: Path) -> None:
    """Writes ``image`` (a Pillow image) as a palette PNG, halving it until it is under MAX_BYTES."""
    img = image.convert("RGB")
    while True:
        img.quantize(colors=128, dither=0).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or img.width < 400:
            return
        img = img.resize((img.width * 3 // 4, img.height * 3 // 4))


def slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words[:3]) or "section"


# ---- the HTML report -----------------------------------------------------------------------
def report_pictures(results: Path, out: Path, browser: str, work: Path, prefix: str = "") -> list[Path]:
    from PIL import Image

    from fastprof import report
    from fastprof.results.sweep import load

    page = work / "report.html"
    report.write_html(load(str(results)), str(page), source=results.name)
    probe = work / "report-probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", POSITIONS_SCRIPT + "</body>"),
                     encoding="utf-8")
    dom = headless(browser, work / "profile", "--dump-dom", f"--window-size={WIDTH},1000", probe.as_uri()).stdout
    m = re.search(r'<pre id="fastprof-positions">(.*?)</pre>', dom, re.S)
    if not m:
        sys.exit("docs_pictures: the report page did not run its position script")
    layout = json.loads(html.unescape(m.group(1)))
    height = min(int(layout["height"]) + 20, 16000)
    shot = work / "report.png"
    screenshot(browser, work / "profile", page, shot, WIDTH, height)
    full = Image.open(shot)

    elements = layout["elements"]
    configs = [i for i, e in enumerate(elements) if e["tag"] == "h2" and e["text"].startswith("Configuration ")
               and any(x["tag"] == "img" for x in elements[i + 1:_next_h2(elements, i)])]
    written: list[Path] = []
    if not configs:
        sys.exit("docs_pictures: no configuration with charts in the report")
    first = configs[0]
    end = _next_h2(elements, first)
    first_img = next(e for e in elements[first:end] if e["tag"] == "img")
    top = full.crop((COLUMN[0], 0, COLUMN[1], min(int(first_img["top"]) - 8, full.height)))
    path = out / f"{prefix}report-overview.png"
    save_small(top, path)
    written.append(path)

    # Charts are named by the heading above them. The one chart without a heading of its own, the
    # GPU samples over time, comes after the last section's charts and tables: a chart that follows
    # a table which itself follows the section's charts starts the "gpu-samples" group.
    section, heading_top, counts, table_after_charts = "tokens", None, {}, False
    for e in elements[first + 1:end]:
        if e["tag"] == "h3":
            section, heading_top, table_after_charts = slug(e["text"]), e["top"], False
            continue
        if e["tag"] == "table":
            table_after_charts = table_after_charts or bool(counts.get(section))
            continue
        if e["tag"] != "img":
            continue
        if table_after_charts:
            section, heading_top, table_after_charts = "gpu-samples", None, False
        counts[section] = counts.get(section, 0) + 1
        upper = heading_top if heading_top is not None and counts[section] == 1 else e["top"]
        box = (COLUMN[0], max(int(upper) - 8, 0), COLUMN[1], min(int(e["bottom"]) + 8, full.height))
        path = out / f"{prefix}report-{section}-{counts[section]}.png"
        save_small(full.crop(box), path)
        written.append(path)
    return written


def _next_h2(elements: list[dict[str, Any]], i: int) -> int:
    for j in range(i + 1, len(elements)):
        if elements[j]["tag"] in ("h1", "h2"):
            return j
    return len(elements)


# ---- the exported trace --------------------------------------------------------------------
PALETTE = ("#4c72b0", "#55a868", "#8172b2", "#ccb974", "#64b5cd", "#dd8452", "#937860", "#da8bc3")


def _colour(name: str, cat: str) -> str:
    if name.startswith("SLOW"):
        return "#c44e52"
    if "." in name:  # a module: coloured by its kind (self_attn, mlp, input_layernorm, ...)
        key = re.sub(r"\d+", "", name.rsplit(".", 1)[-1])
    else:
        key = cat or name.split(" ")[0]
    return PALETTE[sum(map(ord, key)) % len(PALETTE)]


def _tracks(events: list[dict[str, Any]]) -> tuple[dict[tuple, str], dict[tuple, int], dict[int, str]]:
    names: dict[tuple, str] = {}
    order: dict[tuple, int] = {}
    processes: dict[int, str] = {}
    for e in events:
        if e.get("ph") != "M":
            continue
        if e.get("name") == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
        elif e.get("name") == "thread_sort_index":
            order[(e["pid"], e["tid"])] = e["args"]["sort_index"]
        elif e.get("name") == "process_name":
            processes[e["pid"]] = e["args"]["name"]
    return names, order, processes


def timeline_svg(events: list[dict[str, Any]], lo_us: float, hi_us: float, title: str, width: int = WIDTH) -> str:
    """An SVG of every slice and counter overlapping [lo_us, hi_us], one row per track."""
    names, order, _ = _tracks(events)
    label_w, row_h, plot_w = 230, 16, width - 230 - 20
    scale = plot_w / max(hi_us - lo_us, 1e-9)
    slices: dict[tuple, list[dict[str, Any]]] = {}
    counters: dict[tuple, list[tuple[float, float]]] = {}
    for e in events:
        ph = e.get("ph")
        if ph == "X":
            ts, dur = float(e["ts"]), float(e.get("dur", 0))
            if ts + dur >= lo_us and ts <= hi_us:
                slices.setdefault((e["pid"], e["tid"]), []).append(e)
        elif ph == "C" and lo_us <= float(e["ts"]) <= hi_us:
            for k, v in e.get("args", {}).items():
                if isinstance(v, (int, float)):
                    counters.setdefault((e["pid"], f"{e['name']} {k}" if k != e["name"] else e["name"]), []).append(
                        (float(e["ts"]), float(v)))
    rows: list[str] = []
    y = 44
    keys = sorted(slices, key=lambda k: (k[0], order.get(k, 99), k[1]))
    for key in keys:
        items = sorted(slices[key], key=lambda e: (float(e["ts"]), -float(e.get("dur", 0))))
        ends: list[float] = []  # nesting depth by end times of the open slices
        placed = []
        for e in items:
            ts, end = float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))
            while ends and ends[-1] <= ts + 0.5:  # within 0.5 us: back to back, not nested
                ends.pop()
            placed.append((len(ends), e))
            ends.append(end)
        depth = min(max((d for d, _ in placed), default=0) + 1, 6)
        h = depth * row_h
        rows.append(f'<text x="6" y="{y + 12}" class="track">{html.escape(names.get(key, str(key[1])))}</text>'
                    f'<line x1="0" x2="{width}" y1="{y + h + 2}" y2="{y + h + 2}" class="sep"/>')
        for d, e in placed:
            if d >= depth:
                continue
            ts, dur = float(e["ts"]), float(e.get("dur", 0))
            x0 = label_w + max(ts - lo_us, 0) * scale
            x1 = label_w + min(ts + dur - lo_us, hi_us - lo_us) * scale
            w = max(x1 - x0, 0.6)
            name = str(e.get("name", ""))
            rows.append(f'<rect x="{x0:.1f}" y="{y + d * row_h}" width="{w:.1f}" height="{row_h - 2}" '
                        f'fill="{_colour(name, str(e.get("cat", "")))}"><title>{html.escape(name)}</title></rect>')
            if w > 7 * len(name) * 0.62 + 4:
                rows.append(f'<text x="{x0 + 3:.1f}" y="{y + d * row_h + 11}" class="slice">{html.escape(name)}</text>')
        y += h + 6
    # Counters: those that change in the window, the most telling first, at most six; each drawn
    # between its own minimum and maximum.
    preferred = ("gpu_util_pct", "power_w", "sm_clock_mhz", "dram_bw_util_pct", "sm_active_pct", "mem_used_bytes")
    varying = [(k, sorted(p)) for k, p in counters.items() if len({v for _, v in p}) > 1]
    varying.sort(key=lambda kp: (next((i for i, n in enumerate(preferred) if kp[0][1].startswith(n)), 99), kp[0][1]))
    for key, points in varying[:6]:
        vmin, vmax = min(v for _, v in points), max(v for _, v in points)
        h = 36
        path = " ".join(f"{label_w + (t - lo_us) * scale:.1f},{y + h - (v - vmin) / (vmax - vmin) * (h - 4):.1f}"
                        for t, v in points)
        rows.append(f'<text x="6" y="{y + 14}" class="track">{html.escape(key[1])}</text>'
                    f'<text x="6" y="{y + 28}" class="axis">{vmin:.4g} to {vmax:.4g}</text>'
                    f'<polyline points="{path}" class="counter"/>'
                    f'<line x1="0" x2="{width}" y1="{y + h + 2}" y2="{y + h + 2}" class="sep"/>')
        y += h + 6
    span_ms = (hi_us - lo_us) / 1e3
    ticks = []
    for i in range(6):
        x = label_w + plot_w * i / 5
        ticks.append(f'<text x="{x:.0f}" y="36" class="axis" text-anchor="middle">{span_ms * i / 5:.1f} ms</text>')
    height = y + 30
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            '<style>.track{font:12px sans-serif;fill:#222}.slice{font:10px sans-serif;fill:#fff}'
            '.axis{font:10px sans-serif;fill:#666}.sep{stroke:#e4e4e4}.counter{fill:none;stroke:#dd8452;'
            'stroke-width:1.2}.title{font:13px sans-serif;fill:#222}</style>'
            f'<rect width="{width}" height="{height}" fill="#fff"/>'
            f'<text x="6" y="16" class="title">{html.escape(title)}</text>'
            + "".join(ticks) + "".join(rows)
            + f'<text x="6" y="{height - 10}" class="axis">fastprof\'s offline sketch of the exported Chrome-trace '
            'file (tools/docs_pictures.py), not Perfetto itself: open the file in https://ui.perfetto.dev to '
            'explore it.</text></svg>'), height


def trace_windows(events: list[dict[str, Any]]) -> list[tuple[str, float, float, str]]:
    """The windows to draw: the timed iteration with the most slow tokens, and the traced one."""
    names, _, processes = _tracks(events)
    iterations = [e for e in events if e.get("ph") == "X" and e.get("cat") == "iteration"]
    windows = []
    if iterations:
        pid = iterations[0]["pid"]
        iterations = [e for e in iterations if e["pid"] == pid]
        slow = [e for e in events if e.get("ph") == "X" and str(e.get("name", "")).startswith("SLOW")]

        def n_slow(it: dict[str, Any]) -> int:
            lo, hi = float(it["ts"]), float(it["ts"]) + float(it["dur"])
            return sum(lo <= float(s["ts"]) < hi for s in slow)

        it = max(iterations, key=lambda e: (n_slow(e), -float(e["ts"])))
        lo, hi = float(it["ts"]), float(it["ts"]) + float(it["dur"])
        windows.append(("trace-iteration.png", lo - 0.01 * (hi - lo), hi + 0.01 * (hi - lo),
                        f"{processes.get(pid, '')}: {it['name']} ({n_slow(it)} slow tokens in red), "
                        "tokens on both clocks and the stall events"))
    traced_tids = {k for k, v in names.items() if "traced" in v}
    traced = [e for e in events if e.get("ph") == "X" and (e["pid"], e.get("tid")) in traced_tids]
    if traced:
        lo = min(float(e["ts"]) for e in traced)
        hi = max(float(e["ts"]) + float(e.get("dur", 0)) for e in traced)
        # A few decode steps are readable; the whole traced iteration is not. The steps: the slices
        # named "step ..." where there are (a kernel trace), else the outermost module calls.
        steps = sorted((e for e in traced if str(e.get("name", "")).startswith("step")), key=lambda e: float(e["ts"]))
        if len(steps) < 5:
            track = min((e["pid"], e["tid"]) for e in traced)
            outer, end = [], -1.0
            for e in sorted((e for e in traced if (e["pid"], e["tid"]) == track), key=lambda e: float(e["ts"])):
                if float(e["ts"]) >= end - 0.5:
                    outer.append(e)
                    end = float(e["ts"]) + float(e.get("dur", 0))
            steps = outer
        if len(steps) >= 5:
            lo, hi = float(steps[2]["ts"]), float(steps[4]["ts"]) + float(steps[4].get("dur", 0))
        windows.append(("trace-traced.png", lo, hi, "the traced iteration, a few decode steps: host thread "
                        "(modules, CUDA calls) and GPU streams"))
    return windows


def trace_pictures(results: Path, out: Path, browser: str, work: Path, prefix: str = "") -> list[Path]:
    from PIL import Image

    from fastprof.report.trace_export import write_trace
    from fastprof.results.sweep import load

    trace_file = work / "trace.json"
    write_trace(load(str(results)), str(trace_file))
    events = json.loads(trace_file.read_text(encoding="utf-8"))["traceEvents"]
    written = []
    for name, lo, hi, title in trace_windows(events):
        svg, height = timeline_svg(events, lo, hi, title)
        page = work / f"{name}.html"
        page.write_text(f"<!DOCTYPE html><html><body style='margin:0'>{svg}</body></html>", encoding="utf-8")
        shot = work / f"{name}.raw.png"
        screenshot(browser, work / "profile", page, shot, WIDTH, min(height, 8000))
        path = out / f"{prefix}{name}"
        save_small(Image.open(shot), path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docs_pictures.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a fastprof results file (from a real run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images",
                        help="folder for the PNGs (default: docs/images)")
    parser.add_argument("--prefix", default="", help="start of every file name, e.g. gpu- (default: none)")
    parser.add_argument("--browser", help="Chromium executable (default: found on PATH)")
    args = parser.parse_args(argv)
    browser = find_browser(args.browser)
    args.out.mkdir(parents=True, exist_ok=True)
    if not re.fullmatch(r"[A-Za-z0-9_-]*", args.prefix):
        parser.error("--prefix: letters, digits, '-' and '_' only")
    for old in [*args.out.glob(f"{args.prefix}report-*.png"), *args.out.glob(f"{args.prefix}trace-*.png")]:
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="fastprof-docs-pictures-") as tmp:
        work = Path(tmp)
        written = report_pictures(args.results, args.out, browser, work, args.prefix)
        written += trace_pictures(args.results, args.out, browser, work, args.prefix)
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
