"""The host breakdown in the reports: the HTML section (summary, chart, tables, reasons for what
was not recorded) and the trace export's host thread and module threads, from a host section
built on synthetic CUDA API records and module marks."""

import html
import json
import re
from types import SimpleNamespace

import numpy as np

from fastprof import report
from fastprof.analysis import host
from fastprof.capture.host_trace import LOOP_MARKS, HostSpans, ModuleInfo
from fastprof.report.trace_export import TIDS, write_trace
from fastprof.results import BenchmarkResult
from fastprof.results.io import json_safe
from fastprof.results.sweep import Sweep, schema
from report_fixtures import synthetic_result

US = 1000
MODULES = [ModuleInfo("", "model", None, -1), ModuleInfo("model.layers.0", "layer", 0, 0),
           ModuleInfo("model.layers.0.self_attn", "attention", 0, 1), ModuleInfo("model.layers.0.mlp", "mlp", 0, 1),
           ModuleInfo("lm_head", "lm_head", None, 0)]


class Api(SimpleNamespace):
    def __len__(self):
        return int(self.start_ns.size)


def make_api(rows):
    """rows: (name, start_ns, end_ns, thread, correlation), as the kernel tracer's ApiTrace holds them."""
    names = sorted({r[0] for r in rows})
    return Api(names=names, name_id=np.array([names.index(r[0]) for r in rows], dtype=np.uint32),
               start_ns=np.array([r[1] for r in rows], dtype=np.int64),
               end_ns=np.array([r[2] for r in rows], dtype=np.int64),
               thread=np.array([r[3] for r in rows], dtype=np.uint32),
               correlation=np.array([r[4] for r in rows], dtype=np.uint32))


def traced_iteration(t0, steps=4, step_ns=1_000 * US):
    """One traced iteration from t0: token marks 1 ms apart, and in each step: 50 us of preparation,
    the forward pass (a layer of attention and MLP, then the LM head) with two kernel launches,
    a stream synchronisation, the logits processors."""
    marks = t0 + step_ns * np.arange(1, steps + 2, dtype=np.int64)
    bounds = np.concatenate([[t0], marks])
    t, c, api = [], [], []
    for k in range(1, bounds.size):
        now = int(bounds[k - 1]) + 50 * US
        for time, code in ((now, 0), (now + 10 * US, 2), (now + 20 * US, 4), (now + 120 * US, 5),
                           (now + 120 * US, 6), (now + 300 * US, 7), (now + 310 * US, 3),
                           (now + 310 * US, 8), (now + 340 * US, 9), (now + 350 * US, 1),
                           (now + 380 * US, LOOP_MARKS["processors_begin"]),
                           (now + 390 * US, LOOP_MARKS["processors_end"])):
            t.append(time)
            c.append(code)
        api.append(("cudaLaunchKernel_v7000", now + 30 * US, now + 37 * US, 5, 2 * k))
        api.append(("cudaLaunchKernel_v7000", now + 130 * US, now + 137 * US, 5, 2 * k + 1))
        api.append(("cudaStreamSynchronize_v3020", now + 400 * US, now + 600 * US, 5, 0))
    spans = HostSpans(np.array(t, dtype=np.int64), np.array(c, dtype=np.int32), MODULES, 0)
    return (t0, marks), spans, api


def result_with_host(**kwargs):
    """A synthetic result and its host section, from a traced iteration after the timed ones."""
    result = synthetic_result(10.0)
    t0 = int(result.traces()[-1].host_end_ns) + 1_000_000
    iteration, spans, api = traced_iteration(t0)
    args = {"spans": spans, "api": make_api(api), "thread_candidates": (5,)}
    args.update(kwargs)
    result.host = host.section([iteration], **args)
    return result, api, spans


def sweep_of(result):
    sweep = Sweep(environment=result.environment)
    sweep.add_ok({"batch_size": 1}, result)
    return sweep


def _images(text):
    return re.findall(r'<img alt="chart" src="data:image/png;base64,[A-Za-z0-9+/=]+">', text)


def test_html_shows_the_host_breakdown():
    result, _, _ = result_with_host()
    assert result.host["api"]["available"] and result.host["modules"]["available"]
    # the section as a file holds it: valid against the schema, read back from JSON
    doc = json.loads(json.dumps(json_safe(result.to_dict())))
    import jsonschema

    jsonschema.Draft202012Validator({"$ref": "#/$defs/host", "$defs": schema()["$defs"]}).validate(doc["host"])
    text = report.html_report(sweep_of(BenchmarkResult.from_dict(doc)))
    assert "Host time per decode step" in text
    line = host.summary_line(result.host)
    assert "2 kernel launches" in line
    assert html.escape(line[1:]) in text  # the sentence, its first letter capitalised
    # the parts table: each part's label with its ms per step and share
    assert "waiting for the GPU</td><td class=\"\">0.200</td><td class=\"\">20.0%" in text
    assert "kernel launches</td><td class=\"\">0.014</td>" in text
    assert "Python and framework" in text
    assert "stopping criteria and the next step&#x27;s inputs" in text  # the loop table
    assert "model.layers.0.self_attn" in text and "lm_head" in text
    assert len(_images(text)) == 3  # token latency, ITL, host time per step


def test_html_says_why_a_part_is_missing():
    result, _, _ = result_with_host(api=None, api_reason="CUPTI not loaded: test")
    text = report.html_report(sweep_of(result))
    assert "CUDA API breakdown unavailable: CUPTI not loaded: test" in text
    assert "model.layers.0.mlp" in text  # the modules are still there
    assert len(_images(text)) == 3  # the chart drawn from the generate-loop segments

    result.host = host.section([(0, np.array([10], dtype=np.int64))])
    text = report.html_report(sweep_of(result))
    assert "host breakdown unavailable: no traced decode step" in text


def test_html_without_a_host_section_renders():
    result = synthetic_result(10.0)
    assert result.host is None
    text = report.html_report(sweep_of(result))
    assert text.rstrip().endswith("</html>") and "Host time per decode step" not in text


def test_trace_export_holds_the_host_timeline(tmp_path):
    result, api, spans = result_with_host()
    out = tmp_path / "t.json"
    write_trace(sweep_of(result), str(out))
    events = json.loads(out.read_text())["traceEvents"]
    threads = {e["args"]["name"]: e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads["host thread (traced iteration)"] == TIDS["host thread (traced iteration)"]
    calls = [e for e in events if e["ph"] == "X" and e["tid"] == threads["host thread (traced iteration)"]]
    assert sorted((e["ts"], e["dur"], e["name"]) for e in calls) == sorted(
        (s / 1000, (e_ - s) / 1000, n) for n, s, e_, _, _ in api)
    assert {e["cat"] for e in calls} == {"cuda_api"}
    assert {e["name"]: e["args"]["part"] for e in calls} == {"cudaLaunchKernel_v7000": "launch",
                                                            "cudaStreamSynchronize_v3020": "sync"}
    mods = [e for e in events if e["ph"] == "X" and e["tid"] == threads["modules (traced iteration)"]]
    assert len(mods) == 5 * 5  # five modules in each of the five steps (prefill included)
    first = [e for e in mods if e["ts"] == mods[0]["ts"]]
    t0 = int(spans.t_ns[0])
    assert first[0]["name"] == "model" and first[0]["ts"] == t0 / 1000 and first[0]["dur"] == 350.0
    attn = [e for e in mods if e["name"] == "model.layers.0.self_attn"]
    assert attn[0]["ts"] == (t0 + 20 * US) / 1000 and attn[0]["dur"] == 100.0
    assert attn[0]["args"]["kind"] == "attention"
